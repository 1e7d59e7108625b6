//! Writing lineage: upserts of MLMD nodes, properties, events, attributions and associations.
//! Every function here runs inside the caller's transaction.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Fault;
use crate::props::{Node, Val, set_prop, to_i64};
use crate::schema::TypeIds;
use crate::{AdminActionRecord, CycleRecord, MetricsRecord};

/// `Artifact.state` LIVE.
pub(crate) const LIVE: i64 = 2;
/// `Artifact.state` ABANDONED.
pub(crate) const ABANDONED: i64 = 5;
/// `Execution.last_known_state` COMPLETE.
pub(crate) const COMPLETE: i64 = 3;
/// `Execution.last_known_state` FAILED.
pub(crate) const FAILED: i64 = 4;
/// `Event.type` INPUT.
pub(crate) const INPUT: i64 = 3;
/// `Event.type` OUTPUT.
pub(crate) const OUTPUT: i64 = 4;

/// Name of the Train execution of a cycle.
pub(crate) fn train_name(model: &str, span: &str) -> String {
    format!("{model}/train/{span}")
}

/// Name of the Evaluate execution of a cycle.
pub(crate) fn evaluate_name(model: &str, span: &str) -> String {
    format!("{model}/evaluate/{span}")
}

/// Name of a model version's artifact.
pub(crate) fn model_artifact_name(model: &str, version: u64) -> String {
    format!("{model}/{version}")
}

/// Id of the artifact of the given type and name, if any.
pub(crate) fn find_artifact(
    conn: &Connection,
    type_id: i64,
    name: &str,
) -> Result<Option<i64>, Fault> {
    Ok(conn
        .prepare_cached("SELECT `id` FROM `Artifact` WHERE `type_id` = ?1 AND `name` = ?2")?
        .query_row(params![type_id, name], |r| r.get(0))
        .optional()?)
}

/// Id of the execution of the given type and name, if any.
pub(crate) fn find_execution(
    conn: &Connection,
    type_id: i64,
    name: &str,
) -> Result<Option<i64>, Fault> {
    Ok(conn
        .prepare_cached("SELECT `id` FROM `Execution` WHERE `type_id` = ?1 AND `name` = ?2")?
        .query_row(params![type_id, name], |r| r.get(0))
        .optional()?)
}

struct ArtifactRow<'a> {
    type_id: i64,
    name: &'a str,
    uri: Option<&'a str>,
    state: i64,
    time_ms: i64,
    /// Keep the first recording's create time (shared artifacts such as spans).
    keep_create_time: bool,
}

fn upsert_artifact(conn: &Connection, a: &ArtifactRow<'_>) -> Result<i64, Fault> {
    let create = if a.keep_create_time {
        ""
    } else {
        ", `create_time_since_epoch` = excluded.`create_time_since_epoch`"
    };
    let sql = format!(
        "INSERT INTO `Artifact`(`type_id`, `uri`, `state`, `name`, `create_time_since_epoch`, \
         `last_update_time_since_epoch`) VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
         ON CONFLICT(`type_id`, `name`) DO UPDATE SET `uri` = excluded.`uri`, \
         `state` = excluded.`state`, \
         `last_update_time_since_epoch` = excluded.`last_update_time_since_epoch`{create} \
         RETURNING `id`"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![a.type_id, a.uri, a.state, a.name, a.time_ms], |r| {
            r.get(0)
        })?)
}

fn upsert_execution(
    conn: &Connection,
    type_id: i64,
    name: &str,
    state: i64,
    create_ms: i64,
    update_ms: i64,
) -> Result<i64, Fault> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO `Execution`(`type_id`, `last_known_state`, `name`, \
             `create_time_since_epoch`, `last_update_time_since_epoch`) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(`type_id`, `name`) DO UPDATE SET \
             `last_known_state` = excluded.`last_known_state`, \
             `create_time_since_epoch` = excluded.`create_time_since_epoch`, \
             `last_update_time_since_epoch` = excluded.`last_update_time_since_epoch` \
             RETURNING `id`",
        )?
        .query_row(params![type_id, state, name, create_ms, update_ms], |r| r.get(0))?)
}

/// Upserts the model's pipeline context and returns its id.
fn upsert_pipeline(
    conn: &Connection,
    t: &TypeIds,
    model: &str,
    time_ms: i64,
) -> Result<i64, Fault> {
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO `Context`(`type_id`, `name`, `create_time_since_epoch`, \
             `last_update_time_since_epoch`) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT(`type_id`, `name`) DO UPDATE SET `last_update_time_since_epoch` = \
             max(`last_update_time_since_epoch`, excluded.`last_update_time_since_epoch`) \
             RETURNING `id`",
        )?
        .query_row(params![t.pipeline, model, time_ms], |r| r.get(0))?;
    set_prop(
        conn,
        Node::Context,
        id,
        "model_name",
        false,
        Some(Val::str(model)),
    )?;
    Ok(id)
}

fn attribute(conn: &Connection, context: i64, artifact: i64) -> Result<(), Fault> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO `Attribution`(`context_id`, `artifact_id`) VALUES (?1, ?2)",
    )?
    .execute(params![context, artifact])?;
    Ok(())
}

fn associate(conn: &Connection, context: i64, execution: i64) -> Result<(), Fault> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO `Association`(`context_id`, `execution_id`) VALUES (?1, ?2)",
    )?
    .execute(params![context, execution])?;
    Ok(())
}

/// One wanted event of an execution.
struct EventSpec {
    artifact: i64,
    kind: i64,
    time_ms: i64,
    key: &'static str,
}

/// Makes the execution's events exactly `wanted`: removes the others (and their paths), keeps
/// matching ones (same id), adds missing ones; every kept event gets a one-step key path.
fn sync_events(conn: &Connection, execution: i64, wanted: &[EventSpec]) -> Result<(), Fault> {
    let existing: Vec<(i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT `id`, `artifact_id`, `type` FROM `Event` WHERE `execution_id` = ?1",
        )?
        .query_map(params![execution], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    for (id, artifact, kind) in existing {
        if !wanted
            .iter()
            .any(|w| w.artifact == artifact && w.kind == kind)
        {
            conn.prepare_cached("DELETE FROM `EventPath` WHERE `event_id` = ?1")?
                .execute(params![id])?;
            conn.prepare_cached("DELETE FROM `Event` WHERE `id` = ?1")?
                .execute(params![id])?;
        }
    }
    for w in wanted {
        let id: i64 = conn
            .prepare_cached(
                "INSERT INTO `Event`(`artifact_id`, `execution_id`, `type`, \
                 `milliseconds_since_epoch`) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(`artifact_id`, `execution_id`, `type`) DO UPDATE SET \
                 `milliseconds_since_epoch` = excluded.`milliseconds_since_epoch` RETURNING `id`",
            )?
            .query_row(params![w.artifact, execution, w.kind, w.time_ms], |r| {
                r.get(0)
            })?;
        conn.prepare_cached("DELETE FROM `EventPath` WHERE `event_id` = ?1")?
            .execute(params![id])?;
        conn.prepare_cached(
            "INSERT INTO `EventPath`(`event_id`, `is_index_step`, `step_index`, `step_key`) \
             VALUES (?1, 0, NULL, ?2)",
        )?
        .execute(params![id, w.key])?;
    }
    Ok(())
}

fn write_metrics(conn: &Connection, id: i64, m: &MetricsRecord) -> Result<(), Fault> {
    let a = Node::Artifact;
    set_prop(
        conn,
        a,
        id,
        "examples",
        false,
        Some(Val::Int(to_i64("examples", m.examples)?)),
    )?;
    for (name, v) in [
        ("logloss", m.logloss),
        ("auc", m.auc),
        ("accuracy", m.accuracy),
        ("calibration", m.calibration),
    ] {
        // NaN → no row (set_prop drops it), read back as NaN.
        set_prop(conn, a, id, name, false, Some(Val::Double(v)))?;
    }
    Ok(())
}

/// Records (or re-records, in place) one cycle.
pub(crate) fn record_cycle(conn: &Connection, t: &TypeIds, c: &CycleRecord) -> Result<(), Fault> {
    let m = c.model_name.as_str();
    let s = c.span.name.as_str();
    let (start, end) = (c.started_ms, c.finished_ms);
    let ctx = upsert_pipeline(conn, t, m, end)?;

    // The span (shared by every model that reads it).
    let span = upsert_artifact(
        conn,
        &ArtifactRow {
            type_id: t.data_span,
            name: &c.span.uri,
            uri: Some(&c.span.uri),
            state: LIVE,
            time_ms: end,
            keep_create_time: true,
        },
    )?;
    let a = Node::Artifact;
    set_prop(conn, a, span, "span", false, Some(Val::str(s)))?;
    set_prop(
        conn,
        a,
        span,
        "records",
        false,
        Some(Val::Int(to_i64("span.records", c.span.records)?)),
    )?;
    set_prop(
        conn,
        a,
        span,
        "bad_records",
        false,
        Some(Val::Int(to_i64("span.bad_records", c.span.bad_records)?)),
    )?;
    attribute(conn, ctx, span)?;

    let metrics_artifact = |name: String, metrics: &MetricsRecord| -> Result<i64, Fault> {
        let id = upsert_artifact(
            conn,
            &ArtifactRow {
                type_id: t.metrics,
                name: &name,
                uri: None,
                state: LIVE,
                time_ms: end,
                keep_create_time: false,
            },
        )?;
        write_metrics(conn, id, metrics)?;
        attribute(conn, ctx, id)?;
        Ok(id)
    };
    let progressive = metrics_artifact(format!("{m}/progressive/{s}"), &c.progressive)?;
    let evaluation = metrics_artifact(format!("{m}/evaluation/{s}"), &c.evaluation)?;

    // The published model version, if any.
    let model = match c.published_version {
        Some(v) => {
            let id = upsert_artifact(
                conn,
                &ArtifactRow {
                    type_id: t.model,
                    name: &model_artifact_name(m, v),
                    uri: c.model_uri.as_deref(),
                    state: LIVE,
                    time_ms: end,
                    keep_create_time: false,
                },
            )?;
            set_prop(conn, a, id, "model_name", false, Some(Val::str(m)))?;
            set_prop(
                conn,
                a,
                id,
                "version",
                false,
                Some(Val::Int(to_i64("published_version", v)?)),
            )?;
            attribute(conn, ctx, id)?;
            Some(id)
        }
        None => None,
    };
    let parent = match c.parent_version {
        Some(pv) => find_artifact(conn, t.model, &model_artifact_name(m, pv))?,
        None => None,
    };

    // Train.
    let train = upsert_execution(conn, t.train, &train_name(m, s), COMPLETE, start, end)?;
    let x = Node::Execution;
    set_prop(
        conn,
        x,
        train,
        "hyperparameters",
        false,
        Some(Val::str(&c.hyperparameters_json)),
    )?;
    set_prop(
        conn,
        x,
        train,
        "code_version",
        false,
        Some(Val::str(&c.code_version)),
    )?;
    set_prop(conn, x, train, "span", false, Some(Val::str(s)))?;
    set_prop(conn, x, train, "model_name", true, Some(Val::str(m)))?;
    let pv = c
        .parent_version
        .map(|v| to_i64("parent_version", v))
        .transpose()?;
    set_prop(conn, x, train, "parent_version", true, pv.map(Val::Int))?;
    let pubv = c
        .published_version
        .map(|v| to_i64("published_version", v))
        .transpose()?;
    set_prop(
        conn,
        x,
        train,
        "published_version",
        true,
        pubv.map(Val::Int),
    )?;
    // A re-record that no longer publishes what it published before orphans that version.
    let previous_models: Vec<i64> = conn
        .prepare_cached(
            "SELECT e.`artifact_id` FROM `Event` AS e JOIN `Artifact` AS a ON a.`id` = e.`artifact_id` \
             WHERE e.`execution_id` = ?1 AND e.`type` = ?2 AND a.`type_id` = ?3",
        )?
        .query_map(params![train, OUTPUT, t.model], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for old in previous_models
        .into_iter()
        .filter(|old| Some(*old) != model)
    {
        conn.prepare_cached(
            "UPDATE `Artifact` SET `state` = ?2, `last_update_time_since_epoch` = ?3 WHERE `id` = ?1",
        )?
        .execute(params![old, ABANDONED, end])?;
    }
    let mut events = vec![EventSpec {
        artifact: span,
        kind: INPUT,
        time_ms: start,
        key: "span",
    }];
    if let Some(p) = parent {
        events.push(EventSpec {
            artifact: p,
            kind: INPUT,
            time_ms: start,
            key: "parent_model",
        });
    }
    events.push(EventSpec {
        artifact: progressive,
        kind: OUTPUT,
        time_ms: end,
        key: "progressive_metrics",
    });
    if let Some(id) = model {
        events.push(EventSpec {
            artifact: id,
            kind: OUTPUT,
            time_ms: end,
            key: "model",
        });
    }
    sync_events(conn, train, &events)?;
    associate(conn, ctx, train)?;

    // Evaluate (the gate).
    let state = if c.gate.passed { COMPLETE } else { FAILED };
    let eval = upsert_execution(conn, t.evaluate, &evaluate_name(m, s), state, start, end)?;
    set_prop(
        conn,
        x,
        eval,
        "passed",
        false,
        Some(Val::Bool(c.gate.passed)),
    )?;
    set_prop(
        conn,
        x,
        eval,
        "checks",
        false,
        Some(Val::str(&c.gate.checks_json)),
    )?;
    set_prop(
        conn,
        x,
        eval,
        "summary",
        false,
        Some(Val::str(&c.gate.summary)),
    )?;
    set_prop(conn, x, eval, "model_name", true, Some(Val::str(m)))?;
    let mut events = vec![EventSpec {
        artifact: span,
        kind: INPUT,
        time_ms: start,
        key: "span",
    }];
    if let Some(id) = model {
        events.push(EventSpec {
            artifact: id,
            kind: INPUT,
            time_ms: start,
            key: "candidate",
        });
    }
    events.push(EventSpec {
        artifact: evaluation,
        kind: OUTPUT,
        time_ms: end,
        key: "metrics",
    });
    sync_events(conn, eval, &events)?;
    associate(conn, ctx, eval)?;

    // Publish.
    if let (Some(v), Some(model)) = (c.published_version, model) {
        let publish = upsert_execution(
            conn,
            t.publish,
            &format!("{m}/publish/{v}"),
            COMPLETE,
            end,
            end,
        )?;
        set_prop(conn, x, publish, "model_name", false, Some(Val::str(m)))?;
        set_prop(
            conn,
            x,
            publish,
            "version",
            false,
            Some(Val::Int(to_i64("published_version", v)?)),
        )?;
        set_prop(conn, x, publish, "span", true, Some(Val::str(s)))?;
        let events = [
            EventSpec {
                artifact: model,
                kind: INPUT,
                time_ms: end,
                key: "model",
            },
            EventSpec {
                artifact: evaluation,
                kind: INPUT,
                time_ms: end,
                key: "gate_metrics",
            },
        ];
        sync_events(conn, publish, &events)?;
        associate(conn, ctx, publish)?;
    }
    Ok(())
}

/// Records one admin action; recording an identical one again is a no-op.
pub(crate) fn record_admin_action(
    conn: &Connection,
    t: &TypeIds,
    a: &AdminActionRecord,
) -> Result<(), Fault> {
    let m = a.model_name.as_str();
    let ctx = upsert_pipeline(conn, t, m, a.at_ms)?;
    let base = format!("{m}/admin/{}/{}", a.action, a.at_ms);
    for n in 1..=10_000u32 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}#{n}")
        };
        if let Some(id) = find_execution(conn, t.admin, &name)? {
            let p = crate::props::get_props(conn, Node::Execution, id)?;
            let same = p.string("actor").as_deref() == Some(a.actor.as_str())
                && p.string("reason").as_deref() == Some(a.reason.as_str())
                && p.string("details").as_deref() == Some(a.details_json.as_str());
            if same {
                associate(conn, ctx, id)?;
                return Ok(());
            }
            continue;
        }
        let id = upsert_execution(conn, t.admin, &name, COMPLETE, a.at_ms, a.at_ms)?;
        let x = Node::Execution;
        set_prop(conn, x, id, "action", false, Some(Val::str(&a.action)))?;
        set_prop(conn, x, id, "actor", false, Some(Val::str(&a.actor)))?;
        set_prop(conn, x, id, "reason", false, Some(Val::str(&a.reason)))?;
        set_prop(
            conn,
            x,
            id,
            "details",
            false,
            Some(Val::str(&a.details_json)),
        )?;
        set_prop(conn, x, id, "model_name", true, Some(Val::str(m)))?;
        associate(conn, ctx, id)?;
        return Ok(());
    }
    Err(Fault::Inconsistent(format!(
        "more than 10000 distinct admin actions named {base}"
    )))
}
