//! Reading lineage back: cycles, model versions, span consumers and admin actions.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Fault;
use crate::props::{Node, Props, get_props};
use crate::schema::TypeIds;
use crate::write::{INPUT, OUTPUT, evaluate_name, find_execution};
use crate::{AdminActionRecord, GateRecord, MetricsRecord, SpanRef};

/// A recorded cycle, rebuilt from the graph around its Train execution.
#[derive(Debug, Clone)]
pub(crate) struct Cycle {
    pub model_name: String,
    /// Every DataSpan the Train execution read, in event order (at least one).
    pub spans: Vec<SpanRef>,
    pub parent_version: Option<u64>,
    pub published_version: Option<u64>,
    pub hyperparameters_json: String,
    pub code_version: String,
    pub progressive: MetricsRecord,
    pub evaluation: MetricsRecord,
    pub gate: GateRecord,
    pub finished_ms: i64,
}

impl Cycle {
    /// The span trained on (the first one).
    pub(crate) fn span(&self) -> SpanRef {
        // `load_cycle` guarantees at least one span.
        self.spans.first().cloned().unwrap_or_else(|| SpanRef {
            name: String::new(),
            uri: String::new(),
            records: 0,
            bad_records: 0,
        })
    }
}

/// Last path component of a uri (ignoring trailing separators).
pub(crate) fn file_name(uri: &str) -> &str {
    let trimmed = uri.trim_end_matches(['/', '\\']);
    trimmed.rsplit(['/', '\\']).next().unwrap_or(trimmed)
}

fn load_span(conn: &Connection, id: i64, uri: Option<String>) -> Result<SpanRef, Fault> {
    let p = get_props(conn, Node::Artifact, id)?;
    let uri = uri.unwrap_or_default();
    Ok(SpanRef {
        name: p
            .string("span")
            .unwrap_or_else(|| file_name(&uri).to_string()),
        records: p.u64("records")?.unwrap_or(0),
        bad_records: p.u64("bad_records")?.unwrap_or(0),
        uri,
    })
}

fn load_metrics(conn: &Connection, id: i64) -> Result<MetricsRecord, Fault> {
    let p = get_props(conn, Node::Artifact, id)?;
    Ok(MetricsRecord {
        examples: p.u64("examples")?.unwrap_or(0),
        logloss: p.f64("logloss"),
        auc: p.f64("auc"),
        accuracy: p.f64("accuracy"),
        calibration: p.f64("calibration"),
    })
}

/// One event of an execution, joined with its artifact.
struct EventRow {
    /// `Event.type` (INPUT / OUTPUT).
    kind: i64,
    artifact: i64,
    artifact_type: i64,
    uri: Option<String>,
}

/// The events of an execution, oldest first.
fn events_of(conn: &Connection, execution: i64) -> Result<Vec<EventRow>, Fault> {
    Ok(conn
        .prepare_cached(
            "SELECT e.`type`, a.`id`, a.`type_id`, a.`uri` FROM `Event` AS e \
             JOIN `Artifact` AS a ON a.`id` = e.`artifact_id` \
             WHERE e.`execution_id` = ?1 ORDER BY e.`id`",
        )?
        .query_map(params![execution], |r| {
            Ok(EventRow {
                kind: r.get(0)?,
                artifact: r.get(1)?,
                artifact_type: r.get(2)?,
                uri: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?)
}

/// Rebuilds the cycle whose Train execution is `train`.
pub(crate) fn load_cycle(conn: &Connection, t: &TypeIds, train: i64) -> Result<Cycle, Fault> {
    let (name, finished_ms): (Option<String>, i64) = conn
        .prepare_cached(
            "SELECT `name`, `last_update_time_since_epoch` FROM `Execution` WHERE `id` = ?1",
        )?
        .query_row(params![train], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let name = name.unwrap_or_else(|| format!("#{train}"));
    let bad = |what: &str| Fault::Inconsistent(format!("execution {name} {what}"));
    let p = get_props(conn, Node::Execution, train)?;
    let model_name = p
        .string("model_name")
        .or_else(|| name.split_once("/train/").map(|(m, _)| m.to_string()))
        .ok_or_else(|| bad("has no model_name"))?;
    let span_name = p
        .string("span")
        .ok_or_else(|| bad("has no span property"))?;

    let mut spans = Vec::new();
    let mut progressive = None;
    let mut model_version = None;
    for e in events_of(conn, train)? {
        if e.kind == INPUT && e.artifact_type == t.data_span {
            spans.push(load_span(conn, e.artifact, e.uri)?);
        } else if e.kind == OUTPUT && e.artifact_type == t.metrics && progressive.is_none() {
            progressive = Some(load_metrics(conn, e.artifact)?);
        } else if e.kind == OUTPUT && e.artifact_type == t.model && model_version.is_none() {
            let mp = get_props(conn, Node::Artifact, e.artifact)?;
            model_version = Some(
                mp.u64("version")?
                    .ok_or_else(|| bad("outputs a model artifact without a version"))?,
            );
        }
    }
    if spans.is_empty() {
        return Err(bad("has no INPUT event from an evergreen.DataSpan"));
    }
    let progressive = progressive.ok_or_else(|| bad("has no OUTPUT evergreen.Metrics"))?;

    let eval_name = evaluate_name(&model_name, &span_name);
    let eval = find_execution(conn, t.evaluate, &eval_name)?
        .ok_or_else(|| bad(&format!("has no matching evaluate execution {eval_name}")))?;
    let ep = get_props(conn, Node::Execution, eval)?;
    let mut evaluation = None;
    for e in events_of(conn, eval)? {
        if e.kind == OUTPUT && e.artifact_type == t.metrics {
            evaluation = Some(load_metrics(conn, e.artifact)?);
            break;
        }
    }
    let evaluation = evaluation.ok_or_else(|| {
        Fault::Inconsistent(format!(
            "execution {eval_name} has no OUTPUT evergreen.Metrics"
        ))
    })?;

    Ok(Cycle {
        spans,
        parent_version: p.u64("parent_version")?,
        published_version: match model_version {
            Some(v) => Some(v),
            None => p.u64("published_version")?,
        },
        hyperparameters_json: p.string_or_empty("hyperparameters"),
        code_version: p.string_or_empty("code_version"),
        progressive,
        evaluation,
        gate: gate_of(&ep),
        finished_ms,
        model_name,
    })
}

fn gate_of(p: &Props) -> GateRecord {
    GateRecord {
        passed: p.bool("passed").unwrap_or(false),
        checks_json: p.string_or_empty("checks"),
        summary: p.string_or_empty("summary"),
    }
}

/// Ids of the executions of `type_id` associated with the model's pipeline, in recording order.
pub(crate) fn pipeline_executions(
    conn: &Connection,
    t: &TypeIds,
    model: &str,
    type_id: i64,
) -> Result<Vec<i64>, Fault> {
    Ok(conn
        .prepare_cached(
            "SELECT x.`id` FROM `Execution` AS x \
             JOIN `Association` AS s ON s.`execution_id` = x.`id` \
             JOIN `Context` AS c ON c.`id` = s.`context_id` \
             WHERE c.`type_id` = ?1 AND c.`name` = ?2 AND x.`type_id` = ?3 ORDER BY x.`id`",
        )?
        .query_map(params![t.pipeline, model, type_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// The model artifact `(id, uri, create time)` of `name`, if any.
pub(crate) fn model_artifact(
    conn: &Connection,
    t: &TypeIds,
    name: &str,
) -> Result<Option<(i64, Option<String>, i64)>, Fault> {
    Ok(conn
        .prepare_cached(
            "SELECT `id`, `uri`, `create_time_since_epoch` FROM `Artifact` \
             WHERE `type_id` = ?1 AND `name` = ?2",
        )?
        .query_row(params![t.model, name], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?)
}

/// The Train execution that output artifact `artifact` (latest if several), if any.
pub(crate) fn producing_train(
    conn: &Connection,
    t: &TypeIds,
    artifact: i64,
) -> Result<Option<i64>, Fault> {
    Ok(conn
        .prepare_cached(
            "SELECT e.`execution_id` FROM `Event` AS e JOIN `Execution` AS x ON x.`id` = e.`execution_id` \
             WHERE e.`artifact_id` = ?1 AND e.`type` = ?2 AND x.`type_id` = ?3 \
             ORDER BY e.`id` DESC LIMIT 1",
        )?
        .query_row(params![artifact, OUTPUT, t.train], |r| r.get(0))
        .optional()?)
}

/// Train executions (in recording order) that read a span matching `query` by artifact name,
/// uri, span name or file name of the uri.
pub(crate) fn trains_reading_span(
    conn: &Connection,
    t: &TypeIds,
    query: &str,
) -> Result<Vec<i64>, Fault> {
    let q = Some(query);
    let mut spans: Vec<i64> = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT a.`id`, a.`name`, a.`uri`, \
           (SELECT p.`string_value` FROM `ArtifactProperty` AS p \
             WHERE p.`artifact_id` = a.`id` AND p.`name` = 'span' LIMIT 1) \
         FROM `Artifact` AS a WHERE a.`type_id` = ?1 AND ( \
           a.`name` = ?2 OR a.`uri` = ?2 \
           OR a.`id` IN (SELECT `artifact_id` FROM `ArtifactProperty` \
                          WHERE `name` = 'span' AND `string_value` = ?2) \
           OR instr(a.`uri`, ?2) > 0)",
    )?;
    let rows = stmt.query_map(params![t.data_span, query], |r| {
        let name: Option<String> = r.get(1)?;
        let uri: Option<String> = r.get(2)?;
        let span: Option<String> = r.get(3)?;
        // The SQL pre-filter also lets substrings of the uri through; keep whole matches only.
        let matched = name.as_deref() == q
            || uri.as_deref() == q
            || span.as_deref() == q
            || uri.as_deref().map(file_name) == q;
        Ok((r.get::<_, i64>(0)?, matched))
    })?;
    for row in rows {
        let (id, matched) = row?;
        if matched {
            spans.push(id);
        }
    }
    let mut trains = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT e.`execution_id` FROM `Event` AS e \
         JOIN `Execution` AS x ON x.`id` = e.`execution_id` \
         WHERE e.`artifact_id` = ?1 AND e.`type` = ?2 AND x.`type_id` = ?3",
    )?;
    for span in spans {
        for id in stmt.query_map(params![span, INPUT, t.train], |r| r.get::<_, i64>(0))? {
            trains.push(id?);
        }
    }
    trains.sort_unstable();
    trains.dedup();
    Ok(trains)
}

/// Admin actions of a model, oldest first.
pub(crate) fn admin_actions(
    conn: &Connection,
    t: &TypeIds,
    model: &str,
) -> Result<Vec<AdminActionRecord>, Fault> {
    let mut out = Vec::new();
    let mut ids: Vec<(i64, i64)> = Vec::new();
    for id in pipeline_executions(conn, t, model, t.admin)? {
        let at: i64 = conn
            .prepare_cached("SELECT `create_time_since_epoch` FROM `Execution` WHERE `id` = ?1")?
            .query_row(params![id], |r| r.get(0))?;
        ids.push((at, id));
    }
    ids.sort_unstable();
    for (at_ms, id) in ids {
        let p = get_props(conn, Node::Execution, id)?;
        out.push(AdminActionRecord {
            model_name: model.to_string(),
            action: p.string_or_empty("action"),
            actor: p.string_or_empty("actor"),
            reason: p.string_or_empty("reason"),
            details_json: p.string_or_empty("details"),
            at_ms,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn file_name_is_the_last_path_component() {
        assert_eq!(file_name("/data/spans/span-2.csv"), "span-2.csv");
        assert_eq!(file_name("file:///data/span-2/"), "span-2");
        assert_eq!(file_name(r"C:\data\span-2.csv"), "span-2.csv");
        assert_eq!(file_name("span-2.csv"), "span-2.csv");
        assert_eq!(file_name(""), "");
        assert_eq!(file_name("/"), "");
    }
}
