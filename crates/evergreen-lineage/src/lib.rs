//! Embedded lineage store: every training cycle, published model version and admin action,
//! recorded in a SQLite file that uses ML Metadata's (MLMD) exact SQLite schema, version 10.
//!
//! Because the tables, columns, indexes, the `MLMDEnv` row and MLMD's nine built-in "simple
//! types" are exactly what MLMD itself writes, the Python `ml-metadata` client (1.17.x) can open
//! the file (`connection_mode` READONLY or READWRITE) and walk the lineage graph with its usual
//! API; `tests/interop/mlmd_read.py` does exactly that.
//!
//! # Mapping to MLMD
//!
//! Types (all with `version` NULL, as MLMD stores unversioned types). Each of ours has a
//! `ParentType` row pointing at the matching simple type, so MLMD reports it as its `base_type`:
//!
//! | kind | name | declared properties | base type |
//! |------|------|---------------------|-----------|
//! | artifact | `evergreen.DataSpan` | `span` STRING (span name), `records` INT, `bad_records` INT | `mlmd.Dataset` |
//! | artifact | `evergreen.Model` | `model_name` STRING, `version` INT | `mlmd.Model` |
//! | artifact | `evergreen.Metrics` | `examples` INT, `logloss`, `auc`, `accuracy`, `calibration` DOUBLE | `mlmd.Metrics` |
//! | execution | `evergreen.Train` | `hyperparameters` STRING (JSON), `code_version` STRING, `span` STRING | `mlmd.Train` |
//! | execution | `evergreen.Evaluate` | `passed` BOOLEAN, `checks` STRING (JSON), `summary` STRING | `mlmd.Evaluate` |
//! | execution | `evergreen.Publish` | `model_name` STRING, `version` INT | `mlmd.Deploy` |
//! | execution | `evergreen.AdminAction` | `action`, `actor`, `reason`, `details` (JSON) STRING | `mlmd.Process` |
//! | context | `evergreen.Pipeline` | `model_name` STRING | — |
//!
//! One recorded cycle (`<m>` = model name, `<s>` = span name) becomes:
//!
//! * a `evergreen.DataSpan` artifact named by the span **uri** (shared by every model that reads
//!   the span), uri = span uri, state LIVE;
//! * a `evergreen.Metrics` artifact `<m>/progressive/<s>` (base model on the span before training)
//!   and one `<m>/evaluation/<s>` (candidate on the held-out slice). A NaN metric has no property
//!   row at all (MLMD rejects a property row with every value column NULL) and reads back as NaN;
//!   infinities are stored as SQLite REAL infinities, which MLMD reads fine;
//! * if published as version `v`: a `evergreen.Model` artifact `<m>/<v>`, uri = the version
//!   directory, state LIVE, `create_time_since_epoch` = the cycle's finish time;
//! * a `evergreen.Train` execution `<m>/train/<s>` (state COMPLETE, create/update time = cycle
//!   start/finish) with custom properties `model_name`, `parent_version` (INT, absent for a cold
//!   start) and `published_version` (INT, absent if rejected). Events: INPUT from the span (path
//!   key `span`) and from the parent model artifact `<m>/<parent>` if that artifact exists (key
//!   `parent_model`); OUTPUT to the progressive metrics (key `progressive_metrics`) and to the
//!   model artifact if published (key `model`);
//! * a `evergreen.Evaluate` execution `<m>/evaluate/<s>` holding the gate result, state COMPLETE
//!   when the gate passed and FAILED when it rejected the candidate. Events: INPUT from the span
//!   (key `span`) and from the model artifact if published (key `candidate`); OUTPUT to the
//!   evaluation metrics (key `metrics`);
//! * if published: a `evergreen.Publish` execution `<m>/publish/<v>` (COMPLETE) with INPUT events
//!   from the model artifact (key `model`) and the evaluation metrics (key `gate_metrics`);
//! * one `evergreen.Pipeline` context named `<m>`; every artifact above is attributed to it and
//!   every execution associated with it.
//!
//! Model names must be non-empty and must not contain `/`, which keeps the node names above
//! unambiguous. Event timestamps: INPUT events carry the cycle's start, OUTPUT events its finish.
//!
//! An admin action becomes a `evergreen.AdminAction` execution (COMPLETE, create time = `at_ms`)
//! named `<m>/admin/<action>/<at_ms>` (with `#2`, `#3`, … appended when a *different* action of
//! the same kind was recorded at the same millisecond), custom property `model_name`, associated
//! with the model's pipeline context. It has no events.
//!
//! # Idempotency
//!
//! Every node is upserted by its `(type, name)` unique key and keeps its id, properties are
//! replaced, and an execution's events are synchronised to exactly the set described above (stale
//! ones removed, existing ones kept). So recording the same `(model_name, span.name)` again — a
//! cycle retried after a crash — updates in place and never duplicates. If a re-recorded cycle no
//! longer publishes the model version it published before, that orphaned model artifact is marked
//! ABANDONED. Recording an identical admin action twice is also a no-op.
//!
//! # Concurrency
//!
//! The database runs in WAL mode with a busy timeout, and every write is one short `BEGIN
//! IMMEDIATE` transaction, so several processes (trainer, CLI, a Python notebook) may share the
//! file; SQLite allows one writer at a time.

mod error;
mod props;
mod read;
mod schema;
mod serde_nan;
mod store;
mod write;

pub use error::LineageError;
pub use schema::SCHEMA_VERSION;
pub use store::LineageStore;

use serde::{Deserialize, Serialize};

/// A data span as the lineage store sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanRef {
    /// Span name (e.g. `span-000042`).
    pub name: String,
    /// Where the span's data lives; the span artifact's unique MLMD name.
    pub uri: String,
    /// Records read from the span.
    pub records: u64,
    /// Records quarantined as malformed.
    pub bad_records: u64,
}

/// Model quality metrics. Any field may be NaN (e.g. AUC with a single class); NaN survives a
/// round trip through the store and through JSON (as `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    /// Examples the metrics were computed on.
    pub examples: u64,
    /// Mean log loss.
    #[serde(with = "serde_nan")]
    pub logloss: f64,
    /// Area under the ROC curve.
    #[serde(with = "serde_nan")]
    pub auc: f64,
    /// Accuracy at threshold 0.5.
    #[serde(with = "serde_nan")]
    pub accuracy: f64,
    /// Calibration (mean prediction / mean label).
    #[serde(with = "serde_nan")]
    pub calibration: f64,
}

/// Outcome of the quality gate for one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// Whether the candidate was allowed to be published.
    pub passed: bool,
    /// The individual checks, as JSON.
    pub checks_json: String,
    /// One-line human summary.
    pub summary: String,
}

/// Everything known about one training cycle (one model, one span).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleRecord {
    /// Model name (non-empty, no `/`).
    pub model_name: String,
    /// The span trained on.
    pub span: SpanRef,
    /// The model version this cycle warm-started from.
    pub parent_version: Option<u64>,
    /// `Some(v)` if the candidate passed the gate and was published as version `v`.
    pub published_version: Option<u64>,
    /// Directory of the published version.
    pub model_uri: Option<String>,
    /// Hyperparameters, as JSON.
    pub hyperparameters_json: String,
    /// Version of the training code.
    pub code_version: String,
    /// Base model predicting the span before training (progressive validation).
    pub progressive: MetricsRecord,
    /// Candidate on the held-out slice.
    pub evaluation: MetricsRecord,
    /// Gate result.
    pub gate: GateRecord,
    /// Cycle start, ms since the Unix epoch.
    pub started_ms: i64,
    /// Cycle end, ms since the Unix epoch.
    pub finished_ms: i64,
}

/// An operator action (rollback, pin, manual publish, …) worth keeping in the lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminActionRecord {
    /// Model the action applies to (non-empty, no `/`).
    pub model_name: String,
    /// What was done, e.g. `rollback`.
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Action-specific details, as JSON.
    pub details_json: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// How one published model version came to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelLineage {
    /// Model name.
    pub model_name: String,
    /// Published version.
    pub version: u64,
    /// Directory of the version (empty if none was recorded).
    pub uri: String,
    /// Version it was warm-started from.
    pub parent_version: Option<u64>,
    /// Spans the producing training run read directly (ancestors' spans are reached by
    /// following `parent_version`).
    pub spans: Vec<SpanRef>,
    /// Hyperparameters, as JSON.
    pub hyperparameters_json: String,
    /// Version of the training code.
    pub code_version: String,
    /// Progressive metrics of the parent on the span.
    pub progressive: MetricsRecord,
    /// Candidate metrics on the held-out slice.
    pub evaluation: MetricsRecord,
    /// Gate result.
    pub gate: GateRecord,
    /// When the version was recorded as created (the cycle's finish), ms since the epoch.
    pub created_ms: i64,
}

/// One training cycle that read a given span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanConsumer {
    /// Model trained.
    pub model_name: String,
    /// The span, as recorded.
    pub span: SpanRef,
    /// Version published by that cycle, if any.
    pub published_version: Option<u64>,
    /// Whether the gate passed.
    pub gate_passed: bool,
    /// Cycle end, ms since the epoch.
    pub finished_ms: i64,
}

/// One training cycle of a model, as listed by [`LineageStore::cycles`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleSummary {
    /// The span trained on.
    pub span: SpanRef,
    /// Version warm-started from.
    pub parent_version: Option<u64>,
    /// Version published, if any.
    pub published_version: Option<u64>,
    /// Whether the gate passed.
    pub gate_passed: bool,
    /// Progressive metrics of the base model on the span.
    pub progressive: MetricsRecord,
    /// Cycle end, ms since the epoch.
    pub finished_ms: i64,
}
