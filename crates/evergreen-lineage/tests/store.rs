//! Integration tests of the lineage store through its public API, checked against the raw MLMD
//! tables where the API alone cannot show it (row counts, events, value columns).

mod common;

use common::{cycle, history, row_counts, scalar, span};
use evergreen_lineage::{AdminActionRecord, LineageError, LineageStore, SCHEMA_VERSION};
use rusqlite::Connection;
use std::path::{Path, PathBuf};

fn fresh() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("lineage.sqlite");
    (dir, db)
}

fn open(db: &Path) -> LineageStore {
    LineageStore::open(db).expect("open lineage store")
}

fn record_all(store: &mut LineageStore, cycles: &[evergreen_lineage::CycleRecord]) {
    for c in cycles {
        store.record_cycle(c).expect("record cycle");
    }
}

fn columns(conn: &Connection, table: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info(`{table}`)"))
        .expect("table_info");
    stmt.query_map([], |r| r.get::<_, String>(1))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn store_can_move_between_threads() {
    fn is_send<T: Send>() {}
    is_send::<LineageStore>();
    is_send::<LineageError>();
}

#[test]
fn schema_is_mlmd_v10_with_one_env_row() {
    let (_dir, db) = fresh();
    let store = open(&db);
    assert_eq!(store.path(), db.as_path());
    assert_eq!(SCHEMA_VERSION, 10);
    drop(store);

    let conn = Connection::open(&db).expect("open");
    let env: Vec<i64> = conn
        .prepare("SELECT schema_version FROM MLMDEnv")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(env, vec![10]);

    let expected: &[(&str, &[&str])] = &[
        (
            "Type",
            &[
                "id",
                "name",
                "version",
                "type_kind",
                "description",
                "input_type",
                "output_type",
                "external_id",
            ],
        ),
        ("ParentType", &["type_id", "parent_type_id"]),
        ("TypeProperty", &["type_id", "name", "data_type"]),
        (
            "Artifact",
            &[
                "id",
                "type_id",
                "uri",
                "state",
                "name",
                "external_id",
                "create_time_since_epoch",
                "last_update_time_since_epoch",
            ],
        ),
        (
            "ArtifactProperty",
            &[
                "artifact_id",
                "name",
                "is_custom_property",
                "int_value",
                "double_value",
                "string_value",
                "byte_value",
                "proto_value",
                "bool_value",
            ],
        ),
        (
            "Execution",
            &[
                "id",
                "type_id",
                "last_known_state",
                "name",
                "external_id",
                "create_time_since_epoch",
                "last_update_time_since_epoch",
            ],
        ),
        (
            "ExecutionProperty",
            &[
                "execution_id",
                "name",
                "is_custom_property",
                "int_value",
                "double_value",
                "string_value",
                "byte_value",
                "proto_value",
                "bool_value",
            ],
        ),
        (
            "Context",
            &[
                "id",
                "type_id",
                "name",
                "external_id",
                "create_time_since_epoch",
                "last_update_time_since_epoch",
            ],
        ),
        (
            "ContextProperty",
            &[
                "context_id",
                "name",
                "is_custom_property",
                "int_value",
                "double_value",
                "string_value",
                "byte_value",
                "proto_value",
                "bool_value",
            ],
        ),
        ("ParentContext", &["context_id", "parent_context_id"]),
        (
            "Event",
            &[
                "id",
                "artifact_id",
                "execution_id",
                "type",
                "milliseconds_since_epoch",
            ],
        ),
        (
            "EventPath",
            &["event_id", "is_index_step", "step_index", "step_key"],
        ),
        ("Association", &["id", "context_id", "execution_id"]),
        ("Attribution", &["id", "context_id", "artifact_id"]),
        ("MLMDEnv", &["schema_version"]),
    ];
    for (table, cols) in expected {
        assert_eq!(columns(&conn, table), *cols, "columns of {table}");
    }
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(tables, 15, "exactly MLMD's tables");

    for idx in [
        "idx_artifact_uri",
        "idx_event_execution_id",
        "idx_type_name",
        "idx_eventpath_event_id",
    ] {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type='index' AND name=?1",
                [idx],
                |r| r.get(0),
            )
            .expect("index");
        assert_eq!(n, 1, "index {idx}");
    }

    // MLMD's simple types, unversioned, with the right kinds.
    for (name, kind) in [
        ("mlmd.Dataset", 1),
        ("mlmd.Model", 1),
        ("mlmd.Metrics", 1),
        ("mlmd.Statistics", 1),
        ("mlmd.Train", 0),
        ("mlmd.Transform", 0),
        ("mlmd.Process", 0),
        ("mlmd.Evaluate", 0),
        ("mlmd.Deploy", 0),
        ("evergreen.DataSpan", 1),
        ("evergreen.Model", 1),
        ("evergreen.Metrics", 1),
        ("evergreen.Train", 0),
        ("evergreen.Evaluate", 0),
        ("evergreen.Publish", 0),
        ("evergreen.AdminAction", 0),
        ("evergreen.Pipeline", 2),
    ] {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM Type WHERE name=?1 AND type_kind=?2 AND version IS NULL",
                rusqlite::params![name, kind],
                |r| r.get(0),
            )
            .expect("type");
        assert_eq!(n, 1, "type {name}");
    }
    // Declared properties with MLMD data types; base types through ParentType.
    let dt: i64 = conn
        .query_row(
            "SELECT p.data_type FROM TypeProperty p JOIN Type t ON t.id=p.type_id \
             WHERE t.name='evergreen.Evaluate' AND p.name='passed'",
            [],
            |r| r.get(0),
        )
        .expect("passed");
    assert_eq!(dt, 6, "passed is BOOLEAN");
    let parent: String = conn
        .query_row(
            "SELECT pt.name FROM ParentType x JOIN Type t ON t.id=x.type_id \
             JOIN Type pt ON pt.id=x.parent_type_id WHERE t.name='evergreen.DataSpan'",
            [],
            |r| r.get(0),
        )
        .expect("parent");
    assert_eq!(parent, "mlmd.Dataset");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
}

#[test]
fn records_cycles_and_answers_model_lineage() {
    let (_dir, db) = fresh();
    let mut store = open(&db);
    record_all(&mut store, &history("ctr"));

    let v2 = store
        .model_lineage("ctr", 2)
        .expect("lineage")
        .expect("v2 exists");
    let c2 = cycle("ctr", 2, Some(1), Some(2));
    assert_eq!(v2.model_name, "ctr");
    assert_eq!(v2.version, 2);
    assert_eq!(v2.uri, "/models/ctr/000002");
    assert_eq!(v2.parent_version, Some(1));
    assert_eq!(v2.spans, vec![span(2)]);
    assert_eq!(v2.hyperparameters_json, c2.hyperparameters_json);
    assert_eq!(v2.code_version, "git-0002");
    assert_eq!(v2.progressive, c2.progressive);
    assert_eq!(v2.evaluation, c2.evaluation);
    assert_eq!(v2.gate, c2.gate);
    assert!(v2.gate.passed);
    assert_eq!(v2.created_ms, c2.finished_ms);

    let v3 = store
        .model_lineage("ctr", 3)
        .expect("lineage")
        .expect("v3 exists");
    assert_eq!(v3.parent_version, Some(2));
    assert_eq!(v3.spans, vec![span(4)]);
    let v1 = store
        .model_lineage("ctr", 1)
        .expect("lineage")
        .expect("v1 exists");
    assert_eq!(v1.parent_version, None);

    // Rejected cycles publish nothing; unknown versions and models are None, not errors.
    assert_eq!(store.model_lineage("ctr", 4).expect("lineage"), None);
    assert_eq!(store.model_lineage("nope", 1).expect("lineage"), None);

    let cycles = store.cycles("ctr").expect("cycles");
    let got: Vec<_> = cycles
        .iter()
        .map(|c| {
            (
                c.span.name.as_str(),
                c.parent_version,
                c.published_version,
                c.gate_passed,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("span-1", None, Some(1), true),
            ("span-2", Some(1), Some(2), true),
            ("span-3", Some(2), None, false),
            ("span-4", Some(2), Some(3), true),
            ("span-5", Some(3), None, false),
        ]
    );
    assert_eq!(cycles[2].progressive, common::metrics(3));
    assert_eq!(
        cycles[4].finished_ms,
        cycle("ctr", 5, None, None).finished_ms
    );
    assert!(store.cycles("other").expect("cycles").is_empty());

    // The MLMD graph: v2's Train read span-2 and model v1, wrote metrics and model v2.
    let events: Vec<(String, i64, String)> = {
        let conn = Connection::open(&db).expect("open");
        let mut stmt = conn
            .prepare(
                "SELECT a.name, e.type, p.step_key FROM Event e JOIN Execution x ON x.id=e.execution_id \
                 JOIN Artifact a ON a.id=e.artifact_id JOIN EventPath p ON p.event_id=e.id \
                 WHERE x.name='ctr/train/span-2' ORDER BY e.type, a.name",
            )
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(
        events,
        vec![
            ("/data/spans/span-2.csv".to_string(), 3, "span".to_string()),
            ("ctr/1".to_string(), 3, "parent_model".to_string()),
            ("ctr/2".to_string(), 4, "model".to_string()),
            (
                "ctr/progressive/span-2".to_string(),
                4,
                "progressive_metrics".to_string()
            ),
        ]
    );
    // Rejected gate → Evaluate FAILED; passed → COMPLETE. Model artifacts LIVE.
    let failed: i64 = scalar(
        &db,
        "SELECT last_known_state FROM Execution WHERE name='ctr/evaluate/span-3'",
    );
    let complete: i64 = scalar(
        &db,
        "SELECT last_known_state FROM Execution WHERE name='ctr/evaluate/span-2'",
    );
    assert_eq!((failed, complete), (4, 3));
    let live: i64 = scalar(
        &db,
        "SELECT count(*) FROM Artifact a JOIN Type t ON t.id=a.type_id WHERE t.name='evergreen.Model' AND a.state=2",
    );
    assert_eq!(live, 3);
    // Everything belongs to the pipeline context.
    let unattributed: i64 = scalar(
        &db,
        "SELECT count(*) FROM Artifact WHERE id NOT IN (SELECT artifact_id FROM Attribution)",
    );
    let unassociated: i64 = scalar(
        &db,
        "SELECT count(*) FROM Execution WHERE id NOT IN (SELECT execution_id FROM Association)",
    );
    assert_eq!((unattributed, unassociated), (0, 0));
}

#[test]
fn parent_event_is_skipped_when_parent_artifact_is_unknown() {
    let (_dir, db) = fresh();
    let mut store = open(&db);
    // Warm-started from v7, which was published before lineage existed.
    store
        .record_cycle(&cycle("ctr", 8, Some(7), Some(8)))
        .expect("record");
    let l = store.model_lineage("ctr", 8).expect("lineage").expect("v8");
    assert_eq!(l.parent_version, Some(7));
    let inputs: i64 = scalar(
        &db,
        "SELECT count(*) FROM Event e JOIN Execution x ON x.id=e.execution_id WHERE x.name='ctr/train/span-8' AND e.type=3",
    );
    assert_eq!(inputs, 1, "only the span");
}

#[test]
fn span_consumers_match_uri_file_name_and_span_name() {
    let (_dir, db) = fresh();
    let mut store = open(&db);
    record_all(&mut store, &history("ctr"));
    // A second model reads span-2 too and is rejected.
    store
        .record_cycle(&cycle("cvr", 2, None, None))
        .expect("record");

    let by_uri = store
        .span_consumers("/data/spans/span-2.csv")
        .expect("by uri");
    let by_file = store.span_consumers("span-2.csv").expect("by file name");
    let by_name = store.span_consumers("span-2").expect("by span name");
    assert_eq!(by_uri, by_file);
    assert_eq!(by_uri, by_name);
    let got: Vec<_> = by_uri
        .iter()
        .map(|c| (c.model_name.as_str(), c.published_version, c.gate_passed))
        .collect();
    assert_eq!(got, vec![("ctr", Some(2), true), ("cvr", None, false)]);
    assert_eq!(by_uri[0].span, span(2));
    assert_eq!(
        by_uri[0].finished_ms,
        cycle("ctr", 2, None, None).finished_ms
    );

    // No substring matches: only whole names, uris and file names.
    assert!(store.span_consumers("n-2.csv").expect("suffix").is_empty());
    assert!(store.span_consumers("spans").expect("dir").is_empty());
    assert!(
        store
            .span_consumers("span-9.csv")
            .expect("unknown")
            .is_empty()
    );
    assert!(store.span_consumers("").expect("empty").is_empty());
    let rejected = store.span_consumers("span-3.csv").expect("span-3");
    assert_eq!(rejected.len(), 1);
    assert!(!rejected[0].gate_passed);
    assert_eq!(rejected[0].published_version, None);
}

#[test]
fn rerecording_updates_in_place_and_never_duplicates() {
    let (_dir, db) = fresh();
    let mut store = open(&db);
    let hist = history("ctr");
    record_all(&mut store, &hist);
    store
        .record_admin_action(&admin("rollback", 1))
        .expect("admin");
    let before = row_counts(&db);

    // The trainer crashed and re-records everything (same keys, later clock, new metrics).
    let mut again = hist.clone();
    for c in &mut again {
        c.finished_ms += 5;
        c.progressive.logloss = 0.123;
    }
    record_all(&mut store, &again);
    record_all(&mut store, &again);
    store
        .record_admin_action(&admin("rollback", 1))
        .expect("admin again");
    assert_eq!(row_counts(&db), before, "row counts unchanged");

    let cycles = store.cycles("ctr").expect("cycles");
    assert_eq!(cycles.len(), 5);
    assert!(cycles.iter().all(|c| c.progressive.logloss == 0.123));
    assert_eq!(cycles[0].finished_ms, again[0].finished_ms);
    let names: Vec<_> = cycles.iter().map(|c| c.span.name.clone()).collect();
    assert_eq!(names, ["span-1", "span-2", "span-3", "span-4", "span-5"]);
    assert_eq!(store.span_consumers("span-2").expect("consumers").len(), 1);
    assert_eq!(store.admin_actions("ctr").expect("admin").len(), 1);
}

#[test]
fn crash_after_publish_rerecord_and_changed_outcome() {
    let (_dir, db) = fresh();
    let mut store = open(&db);
    record_all(&mut store, &history("ctr")[..2]);
    // First record of span-3 says rejected; a retry of the same cycle then publishes v3.
    store
        .record_cycle(&cycle("ctr", 3, Some(2), None))
        .expect("rejected");
    assert_eq!(store.model_lineage("ctr", 3).expect("lineage"), None);
    store
        .record_cycle(&cycle("ctr", 3, Some(2), Some(3)))
        .expect("published");
    let l = store.model_lineage("ctr", 3).expect("lineage").expect("v3");
    assert!(l.gate.passed);
    assert_eq!(store.cycles("ctr").expect("cycles").len(), 3);
    let trains: i64 = scalar(
        &db,
        "SELECT count(*) FROM Execution WHERE name='ctr/train/span-3'",
    );
    assert_eq!(trains, 1);

    // Re-recorded once more as published under another number: v3 is orphaned → ABANDONED.
    store
        .record_cycle(&cycle("ctr", 3, Some(2), Some(4)))
        .expect("renumbered");
    assert_eq!(store.model_lineage("ctr", 3).expect("lineage"), None);
    assert!(store.model_lineage("ctr", 4).expect("lineage").is_some());
    let state: i64 = scalar(&db, "SELECT state FROM Artifact WHERE name='ctr/3'");
    assert_eq!(state, 5);
    let c = store.cycles("ctr").expect("cycles");
    assert_eq!(c[2].published_version, Some(4));
}

#[test]
fn reopening_an_existing_db_keeps_everything() {
    let (_dir, db) = fresh();
    {
        let mut store = open(&db);
        record_all(&mut store, &history("ctr"));
    }
    let counts = row_counts(&db);
    let store = open(&db);
    assert_eq!(row_counts(&db), counts, "opening writes nothing new");
    assert_eq!(store.cycles("ctr").expect("cycles").len(), 5);
    assert!(store.model_lineage("ctr", 3).expect("lineage").is_some());
    // Two handles on one file see each other's writes.
    let mut other = open(&db);
    other
        .record_cycle(&cycle("ctr", 6, Some(3), Some(4)))
        .expect("record");
    assert_eq!(store.cycles("ctr").expect("cycles").len(), 6);
}

#[test]
fn accepts_a_database_created_by_ml_metadata() {
    let (_dir, db) = fresh();
    let fixture = include_str!("fixtures/mlmd_1_17_created.sql");
    Connection::open(&db)
        .expect("open")
        .execute_batch(fixture)
        .expect("load fixture");
    let mut store = open(&db);
    record_all(&mut store, &history("ctr"));
    assert_eq!(store.cycles("ctr").expect("cycles").len(), 5);
    // MLMD's own rows are untouched; simple types were reused, not duplicated.
    let examples: String = scalar(&db, "SELECT uri FROM Artifact WHERE name='examples-1'");
    assert_eq!(examples, "/pipelines/x/examples/1");
    let types: i64 = scalar(&db, "SELECT count(*) FROM Type");
    assert_eq!(types, 10 + 8);
    let dataset: i64 = scalar(&db, "SELECT count(*) FROM Type WHERE name='mlmd.Dataset'");
    assert_eq!(dataset, 1);
}

#[test]
fn nan_and_infinite_metrics_round_trip() {
    let (_dir, db) = fresh();
    let mut store = open(&db);
    let mut c = cycle("ctr", 1, None, Some(1));
    c.progressive.auc = f64::NAN;
    c.progressive.calibration = f64::NAN;
    c.evaluation.logloss = f64::INFINITY;
    c.evaluation.accuracy = f64::NAN;
    store.record_cycle(&c).expect("record");

    let l = store.model_lineage("ctr", 1).expect("lineage").expect("v1");
    assert!(l.progressive.auc.is_nan());
    assert!(l.progressive.calibration.is_nan());
    assert_eq!(l.progressive.logloss, c.progressive.logloss);
    assert_eq!(l.evaluation.logloss, f64::INFINITY);
    assert!(l.evaluation.accuracy.is_nan());
    assert_eq!(l.evaluation.auc, c.evaluation.auc);
    let s = &store.cycles("ctr").expect("cycles")[0];
    assert!(s.progressive.auc.is_nan());

    // Every property row fills exactly one value column (MLMD rejects all-NULL rows).
    for table in ["ArtifactProperty", "ExecutionProperty", "ContextProperty"] {
        let bad: i64 = scalar(
            &db,
            &format!(
                "SELECT count(*) FROM {table} WHERE (int_value IS NOT NULL) + (double_value IS NOT NULL) \
                 + (string_value IS NOT NULL) + (byte_value IS NOT NULL) + (proto_value IS NOT NULL) \
                 + (bool_value IS NOT NULL) != 1"
            ),
        );
        assert_eq!(bad, 0, "{table}");
    }
    // Declared properties are is_custom_property 0, the rest 1.
    let wrong: i64 = scalar(
        &db,
        "SELECT count(*) FROM ExecutionProperty p JOIN Execution x ON x.id=p.execution_id \
         WHERE p.is_custom_property != (NOT EXISTS (SELECT 1 FROM TypeProperty tp \
           WHERE tp.type_id=x.type_id AND tp.name=p.name))",
    );
    assert_eq!(wrong, 0);
    let custom: i64 = scalar(
        &db,
        "SELECT count(*) FROM ExecutionProperty WHERE is_custom_property=1 AND name='parent_version'",
    );
    assert_eq!(custom, 0, "cold start has no parent_version row");

    // JSON too: NaN → null → NaN.
    let json = serde_json::to_string(&c).expect("to json");
    let back: evergreen_lineage::CycleRecord = serde_json::from_str(&json).expect("from json");
    assert!(back.progressive.auc.is_nan());
    assert_eq!(back.evaluation.logloss, f64::INFINITY);
    assert_eq!(back.span, c.span);
}

#[test]
fn other_schema_versions_and_foreign_files_are_rejected() {
    let (dir, db) = fresh();
    {
        let conn = Connection::open(&db).expect("open");
        conn.execute_batch(
            "CREATE TABLE `MLMDEnv` (`schema_version` INTEGER PRIMARY KEY); \
             INSERT INTO MLMDEnv VALUES (9); CREATE TABLE `Type` (id INTEGER);",
        )
        .expect("v9");
    }
    let err = LineageStore::open(&db).expect_err("v9 rejected");
    assert!(
        matches!(
            err,
            LineageError::SchemaVersion {
                found: 9,
                expected: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("lineage.sqlite") && msg.contains("version 9"),
        "{msg}"
    );

    let two = dir.path().join("two-rows.sqlite");
    Connection::open(&two)
        .expect("open")
        .execute_batch("CREATE TABLE MLMDEnv (schema_version INTEGER PRIMARY KEY); INSERT INTO MLMDEnv VALUES (10), (11);")
        .expect("two rows");
    assert!(matches!(
        LineageStore::open(&two),
        Err(LineageError::BadEnv { rows: 2, .. })
    ));

    let foreign = dir.path().join("foreign.sqlite");
    Connection::open(&foreign)
        .expect("open")
        .execute_batch("CREATE TABLE users (id INTEGER);")
        .expect("foreign");
    let err = LineageStore::open(&foreign).expect_err("not mlmd");
    assert!(matches!(err, LineageError::NotMlmd { .. }));
    assert!(err.to_string().contains("users"));

    let missing = dir.path().join("missing.sqlite");
    Connection::open(&missing)
        .expect("open")
        .execute_batch("CREATE TABLE MLMDEnv (schema_version INTEGER PRIMARY KEY); INSERT INTO MLMDEnv VALUES (10);")
        .expect("env only");
    assert!(matches!(
        LineageStore::open(&missing),
        Err(LineageError::MissingTable { ref table, .. }) if table == "Type"
    ));

    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "this is not a database, just a long enough line of text..........",
    )
    .expect("write");
    let err = LineageStore::open(&text).expect_err("not sqlite");
    assert!(err.to_string().contains("notes.txt"), "{err}");

    let nowhere = dir.path().join("no/such/dir/lineage.sqlite");
    let err = LineageStore::open(&nowhere).expect_err("missing parent");
    assert!(matches!(err, LineageError::MissingParentDir { .. }));
    assert!(
        !dir.path().join("no").exists(),
        "directories are not created"
    );
}

#[test]
fn invalid_input_is_rejected_without_writing() {
    let (_dir, db) = fresh();
    let mut store = open(&db);
    let before = row_counts(&db);
    let err = store
        .record_cycle(&cycle("a/b", 1, None, Some(1)))
        .expect_err("slash");
    assert!(matches!(err, LineageError::InvalidInput { .. }));
    assert!(err.to_string().contains("a/b"));
    assert!(store.record_cycle(&cycle("", 1, None, None)).is_err());
    let mut c = cycle("ctr", 1, None, None);
    c.span.uri.clear();
    assert!(store.record_cycle(&c).is_err());
    let mut c = cycle("ctr", 1, None, None);
    c.span.records = u64::MAX;
    let err = store.record_cycle(&c).expect_err("too big");
    assert!(matches!(err, LineageError::OutOfRange { .. }), "{err:?}");
    assert!(err.to_string().contains("span.records"));
    assert_eq!(row_counts(&db), before, "failed writes roll back");
}

fn admin(action: &str, at: i64) -> AdminActionRecord {
    AdminActionRecord {
        model_name: "ctr".to_string(),
        action: action.to_string(),
        actor: "alice".to_string(),
        reason: "bad calibration".to_string(),
        details_json: r#"{"to_version":1}"#.to_string(),
        at_ms: at,
    }
}

#[test]
fn admin_actions_are_recorded_and_listed() {
    let (_dir, db) = fresh();
    let mut store = open(&db);
    store
        .record_admin_action(&admin("rollback", 20))
        .expect("a");
    store.record_admin_action(&admin("pin", 10)).expect("b");
    store
        .record_admin_action(&admin("rollback", 20))
        .expect("same again");
    let mut other = admin("rollback", 20);
    other.reason = "second rollback in the same ms".to_string();
    store
        .record_admin_action(&other)
        .expect("distinct, same ms");

    let got = store.admin_actions("ctr").expect("list");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], admin("pin", 10));
    assert_eq!(got[1], admin("rollback", 20));
    assert_eq!(got[2], other);
    let names: i64 = scalar(
        &db,
        "SELECT count(*) FROM Execution WHERE name LIKE 'ctr/admin/rollback/20%'",
    );
    assert_eq!(names, 2);
    assert!(store.admin_actions("cvr").expect("none").is_empty());
    assert!(store.cycles("ctr").expect("no cycles").is_empty());
}

#[test]
fn concurrent_writers_on_one_file() {
    let (_dir, db) = fresh();
    drop(open(&db));
    let handles: Vec<_> = (0..4u64)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut store = LineageStore::open(&db).expect("open");
                for i in 0..10u64 {
                    let model = format!("m{w}");
                    store
                        .record_cycle(&cycle(&model, i, i.checked_sub(1), Some(i)))
                        .expect("record");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread");
    }
    let store = open(&db);
    for w in 0..4 {
        assert_eq!(store.cycles(&format!("m{w}")).expect("cycles").len(), 10);
    }
    // All four models read the same ten spans.
    assert_eq!(store.span_consumers("span-3").expect("consumers").len(), 4);
    let spans: i64 = scalar(
        &db,
        "SELECT count(*) FROM Artifact a JOIN Type t ON t.id=a.type_id WHERE t.name='evergreen.DataSpan'",
    );
    assert_eq!(spans, 10);
}

#[test]
fn concurrent_first_open_creates_the_schema_once() {
    let (_dir, db) = fresh();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || LineageStore::open(&db).map(|_| ()))
        })
        .collect();
    for h in handles {
        h.join().expect("opener thread").expect("open");
    }
    let env: i64 = scalar(&db, "SELECT count(*) FROM MLMDEnv");
    let types: i64 = scalar(&db, "SELECT count(*) FROM Type");
    let props: i64 = scalar(&db, "SELECT count(*) FROM TypeProperty");
    let parents: i64 = scalar(&db, "SELECT count(*) FROM ParentType");
    assert_eq!((env, types, props, parents), (1, 17, 23, 7));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Any sequence of (re-)recordings leaves exactly one cycle per span, listed in order of
        /// first recording, with the last recorded outcome, and the same rows as recording each
        /// distinct cycle once.
        #[test]
        fn rerecording_sequences_are_idempotent(ops in proptest::collection::vec((0u64..5, any::<bool>()), 1..15)) {
            let (_dir, db) = fresh();
            let mut store = open(&db);
            let mut first_seen: Vec<u64> = Vec::new();
            let mut last: std::collections::HashMap<u64, bool> = Default::default();
            for (i, publish) in &ops {
                store.record_cycle(&cycle("m", *i, None, publish.then_some(*i + 1))).expect("record");
                if !first_seen.contains(i) {
                    first_seen.push(*i);
                }
                last.insert(*i, *publish);
            }
            let cycles = store.cycles("m").expect("cycles");
            let order: Vec<String> = cycles.iter().map(|c| c.span.name.clone()).collect();
            let expected: Vec<String> = first_seen.iter().map(|i| format!("span-{i}")).collect();
            prop_assert_eq!(order, expected);
            for (c, i) in cycles.iter().zip(&first_seen) {
                prop_assert_eq!(c.gate_passed, last[i]);
                prop_assert_eq!(c.published_version, last[i].then_some(*i + 1));
            }
            let trains: i64 = scalar(&db, "SELECT count(*) FROM Execution x JOIN Type t ON t.id=x.type_id WHERE t.name='evergreen.Train'");
            prop_assert_eq!(trains as usize, first_seen.len());
            let events_per_train: i64 = scalar(&db, "SELECT max(n) FROM (SELECT count(*) AS n FROM Event GROUP BY execution_id, artifact_id, type)");
            prop_assert_eq!(events_per_train, 1);
        }
    }
}
