//! Shared fixtures for the integration tests: cycle records and raw SQL helpers.
#![allow(dead_code)]

use evergreen_lineage::{CycleRecord, GateRecord, MetricsRecord, SpanRef};
use rusqlite::Connection;
use std::path::Path;

/// A span named `span-<i>` stored at `/data/<model-agnostic>/span-<i>.csv`.
pub fn span(i: u64) -> SpanRef {
    SpanRef {
        name: format!("span-{i}"),
        uri: format!("/data/spans/span-{i}.csv"),
        records: 1000 + i,
        bad_records: i % 3,
    }
}

/// Metrics whose values depend on `seed`.
pub fn metrics(seed: u64) -> MetricsRecord {
    MetricsRecord {
        examples: 100 + seed,
        logloss: 0.5 - seed as f64 / 100.0,
        auc: 0.7 + seed as f64 / 100.0,
        accuracy: 0.8,
        calibration: 1.0 + seed as f64 / 1000.0,
    }
}

/// Cycle `i` of `model`: trained on `span(i)`, warm-started from `parent`, published as
/// `published` (rejected by the gate when `None`).
pub fn cycle(model: &str, i: u64, parent: Option<u64>, published: Option<u64>) -> CycleRecord {
    CycleRecord {
        model_name: model.to_string(),
        span: span(i),
        parent_version: parent,
        published_version: published,
        model_uri: published.map(|v| format!("/models/{model}/{v:06}")),
        hyperparameters_json: format!(r#"{{"alpha":0.{i},"l1":1.0}}"#),
        code_version: format!("git-{i:04x}"),
        progressive: metrics(i),
        evaluation: metrics(i + 50),
        gate: GateRecord {
            passed: published.is_some(),
            checks_json: format!(r#"[{{"check":"auc","ok":{}}}]"#, published.is_some()),
            summary: if published.is_some() {
                "all checks passed".to_string()
            } else {
                "auc regressed".to_string()
            },
        },
        started_ms: 1_700_000_000_000 + i as i64 * 60_000,
        finished_ms: 1_700_000_000_000 + i as i64 * 60_000 + 30_000,
    }
}

/// The standard history used by several tests: five cycles of `model`, two rejected.
/// Published versions: span-1 → v1, span-2 → v2, span-4 → v3.
pub fn history(model: &str) -> Vec<CycleRecord> {
    vec![
        cycle(model, 1, None, Some(1)),
        cycle(model, 2, Some(1), Some(2)),
        cycle(model, 3, Some(2), None),
        cycle(model, 4, Some(2), Some(3)),
        cycle(model, 5, Some(3), None),
    ]
}

/// Row count of every MLMD table, by name.
pub fn row_counts(db: &Path) -> Vec<(String, i64)> {
    let conn = Connection::open(db).expect("open db");
    [
        "Type",
        "ParentType",
        "TypeProperty",
        "Artifact",
        "ArtifactProperty",
        "Execution",
        "ExecutionProperty",
        "Context",
        "ContextProperty",
        "ParentContext",
        "Event",
        "EventPath",
        "Association",
        "Attribution",
        "MLMDEnv",
    ]
    .iter()
    .map(|t| {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM `{t}`"), [], |r| r.get(0))
            .expect("count");
        (t.to_string(), n)
    })
    .collect()
}

/// Runs one scalar query against the database.
pub fn scalar<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> T {
    let conn = Connection::open(db).expect("open db");
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}
