//! The training loop: span → progressive validation → incremental training → gate → publish.
//!
//! One [`Trainer`] owns one model. Each cycle takes the next ready span after the watermark (in
//! name order), lets the current model predict all of it first (progressive validation), trains a
//! copy of the model on the span minus a held-out slice, evaluates candidate and current model on
//! that slice, and publishes the candidate as a new registry version if the gate passes.
//!
//! # Exactly once
//! The watermark (name of the last consumed span) is committed with the model it produced:
//! - published cycle: the watermark is inside the new version's manifest, and the version
//!   directory appears atomically (rename); that rename is the commit;
//! - rejected, held-back or empty cycle: the model does not change and the watermark is
//!   committed by atomically replacing `trainer-state.json`.
//!
//! On start the trainer takes the larger of the two watermarks, so a crash anywhere neither skips
//! a span (its effects were not committed, it is redone from scratch) nor trains one twice (its
//! effects were committed, it is not redone). Lineage is written before the state commit and is
//! idempotent per (model, span); versions missing from lineage are re-recorded from their
//! manifests at start.
//!
//! With `data.window_records`, a span is consumed in windows (`<span>.partNNNNN`), each a cycle
//! committed the same way but with the span's source positions (records read per shard, and the
//! pipeline's round-robin turn) instead of a new watermark; the last window moves the watermark.
//! A restart resumes the span's read from the committed positions.

pub mod alerts;
mod backfill;
pub mod drift;
mod failpoint;
mod state;
pub mod tensorboard;
pub mod trace;

pub use evergreen_data::{ReplayError, ReplayStore};

pub use backfill::{BackfillEvent, BackfillOptions, BackfillReport, PublishMode};

pub use failpoint::failpoint;
pub use state::{STATE_FILE, TrainerState};

use evergreen_config::Config;
use evergreen_core::{FeatureVector, Transformer};
use evergreen_data::pipeline::{Item, Pipeline, Rejected, ResumePoint};
use evergreen_data::{Quarantine, SpanDir, SpanFile, SpanPattern, reason};
use evergreen_eval::{GateResult, Metrics as EvalMetrics, Summary, evaluate_gate};
use evergreen_lineage::{CycleRecord, GateRecord, LineageStore, MetricsRecord, SpanRef};
use evergreen_metrics::{Metrics, ReasonLabels};
use evergreen_model::{Deep, Ffm, Fm, Forest, Ftrl, Model, ModelKind};
use evergreen_registry::{
    MANIFEST_FORMAT_VERSION, Manifest, PartialSpan, Registry, SourcePosition,
};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Trainer errors; each names the file or store involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading spans or writing quarantine failed.
    #[error(transparent)]
    Data(#[from] evergreen_data::DataError),
    /// Registry failure.
    #[error(transparent)]
    Registry(#[from] evergreen_registry::RegistryError),
    /// Lineage store failure.
    #[error(transparent)]
    Lineage(#[from] evergreen_lineage::LineageError),
    /// The feature spec is unusable.
    #[error("feature spec: {0}")]
    Spec(#[from] evergreen_core::SpecError),
    /// State file unreadable or unwritable.
    #[error("{path}: {message}")]
    State {
        /// State file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The replay store could not be read or written.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The configured spec or model differs from the one of the version to warm-start from.
    #[error("{0}")]
    Incompatible(String),
    /// A span could not be read to its end (IO error part way); it will be retried.
    #[error("span {span}: read failed part way: {detail}")]
    SpanRead {
        /// Span name.
        span: String,
        /// The error.
        detail: String,
    },
}

/// What happened to a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Gate passed; a new version was published.
    Published,
    /// Gate failed; the model did not change.
    Rejected,
    /// Too many bad records; the span was not trained.
    HeldBack,
    /// No good record.
    Empty,
}

impl Outcome {
    /// Metric label / log word.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Published => "published",
            Outcome::Rejected => "rejected",
            Outcome::HeldBack => "held_back",
            Outcome::Empty => "empty",
        }
    }
}

/// The result of one cycle.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    /// Span name.
    pub span: String,
    /// What happened.
    pub outcome: Outcome,
    /// Good records read.
    pub records: u64,
    /// Records quarantined, by reason.
    pub bad: std::collections::BTreeMap<String, u64>,
    /// Examples trained on (records minus the held-out slice, plus replayed ones, times epochs).
    pub trained: u64,
    /// Past examples replayed into the window (each learned once per epoch).
    pub replayed: u64,
    /// Current model on the whole span before training.
    pub progressive: Option<Summary>,
    /// Online progressive validation: the candidate's first-epoch predictions, each made before
    /// its mini-batch was learned (training slice only).
    pub online: Option<Summary>,
    /// Candidate on the held-out slice.
    pub evaluation: Option<Summary>,
    /// Serving model on the held-out slice.
    pub baseline: Option<Summary>,
    /// Gate decision.
    pub gate: Option<GateResult>,
    /// Version the cycle started from.
    pub parent_version: Option<u64>,
    /// Version published, if any.
    pub version: Option<u64>,
    /// The version serving after the cycle (latest published).
    pub serving_version: Option<u64>,
    /// Wall time of the cycle in seconds.
    pub seconds: f64,
    /// Human-readable note (why held back, gate summary).
    pub note: String,
    /// Records read per shard (the source positions committed with the cycle).
    pub positions: Vec<SourcePosition>,
    /// Where the cycle's time went, stage by stage, in order (see [`StageTime`]).
    pub stages: Vec<StageTime>,
    /// What the drift detectors saw in this window (none when it was not trained).
    pub drift: Option<drift::DriftReport>,
    /// CPU time the input pipeline's threads spent reading the window, per stage.
    pub read_cpu: ReadCpu,
    /// When the cycle started (stage start times are relative to it).
    #[serde(skip)]
    origin: Option<Instant>,
}

impl CycleReport {
    /// The report of a window of `records` good records on `span` that has not trained yet.
    fn started(span: &str, records: u64, parent_version: Option<u64>) -> Self {
        Self {
            span: span.to_string(),
            outcome: Outcome::Empty,
            records,
            bad: Default::default(),
            trained: 0,
            replayed: 0,
            progressive: None,
            online: None,
            evaluation: None,
            baseline: None,
            gate: None,
            parent_version,
            version: None,
            serving_version: parent_version,
            seconds: 0.0,
            note: String::new(),
            positions: Vec::new(),
            stages: Vec::new(),
            drift: None,
            read_cpu: ReadCpu::default(),
            origin: Some(Instant::now()),
        }
    }

    /// Records that stage `stage` ran from `since` until now.
    fn stage(&mut self, stage: &'static str, since: Instant) {
        let origin = *self.origin.get_or_insert(since);
        self.stages.push(StageTime {
            stage,
            start_seconds: since.saturating_duration_since(origin).as_secs_f64(),
            seconds: since.elapsed().as_secs_f64(),
        });
    }

    /// Seconds spent in `stage` (0 when it did not run).
    pub fn stage_seconds(&self, stage: &str) -> f64 {
        self.stages
            .iter()
            .filter(|s| s.stage == stage)
            .map(|s| s.seconds)
            .sum()
    }

    /// The share of the cycle spent training (the learner busy): low values mean the loop
    /// waits on something else, usually reading.
    pub fn utilization(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| (self.stage_seconds("train") / self.seconds).min(1.0))
    }
}

/// The stages of a cycle, in order: `read` (reading the window: the pipeline's reading,
/// decoding and transforming, fused in its fast paths), `progressive` (the current model
/// predicts the window), `train`, `evaluate` (candidate and serving model on the held-out
/// slice, and the gate), `publish` (the version directory), `commit` (lineage and state file).
pub const STAGES: [&str; 6] = [
    "read",
    "progressive",
    "train",
    "evaluate",
    "publish",
    "commit",
];

/// CPU seconds the input pipeline's threads spent on a window, per stage (summed over threads,
/// time blocked handing work on excluded). Where the pipeline fuses decoding and transforming
/// (CSV cells go straight into features; every format without transform threads), the time is
/// `decode_transform`; otherwise records are decoded on reader threads (`decode`) and
/// transformed on transform threads (`transform`). Example files (`.evgx`) need neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ReadCpu {
    /// Reading and decoding records handed to transform threads.
    pub decode_seconds: f64,
    /// Transforming them.
    pub transform_seconds: f64,
    /// Reading, decoding and transforming in one pass.
    pub decode_transform_seconds: f64,
}

impl From<evergreen_data::pipeline::StageCpuSeconds> for ReadCpu {
    fn from(c: evergreen_data::pipeline::StageCpuSeconds) -> Self {
        Self {
            decode_seconds: c.decode,
            transform_seconds: c.transform,
            decode_transform_seconds: c.decode_transform,
        }
    }
}

/// Time spent in one stage of a cycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageTime {
    /// One of [`STAGES`].
    pub stage: &'static str,
    /// Start, seconds after the cycle started.
    pub start_seconds: f64,
    /// Duration in seconds.
    pub seconds: f64,
}

/// One span to consume: a single file (directory mode) or the shards of one span number
/// (pattern mode).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Identifier: the file name in directory mode, `span-<zero-padded number>` in pattern
    /// mode. Identifiers sort in consumption order; the watermark is one of them.
    pub id: String,
    /// Where it lives (the file, or the directory holding its shards).
    pub uri: PathBuf,
    /// Its files, read in this order.
    pub shards: Vec<SpanFile>,
}

/// What a `run` cycle commits.
#[derive(Debug, Clone, PartialEq)]
struct Commit {
    /// The span.
    span: String,
    /// What was consumed: the span, or a window of it (`<span>.partNNNNN`).
    id: String,
    /// `Some` for a window that does not finish its span (the watermark stays).
    partial: Option<PartialSpan>,
    /// Where the span's shards stop.
    positions: Vec<SourcePosition>,
    /// Spans before `span` trained in the same cycle (adaptive cadence), in order.
    merged: Vec<String>,
}

impl Commit {
    /// The state's commit id once this is committed (names the replay store).
    fn key(&self) -> String {
        match &self.partial {
            Some(p) => p.id(),
            None => self.span.clone(),
        }
    }

    /// Applies it to a state.
    fn apply(&self, state: &mut TrainerState, version: Option<u64>) {
        match &self.partial {
            Some(p) => state.commit_part(p.clone(), self.positions.clone(), version),
            None => state.commit_span(&self.span, version),
        }
    }
}

/// How a window of examples is handled after training.
#[derive(Debug, Clone, Copy, PartialEq)]
enum WindowMode<'a> {
    /// A `run` cycle: gate, then publish and commit this.
    Cycle(&'a Commit),
    /// A backfill window: gate, and keep the candidate in memory (publication comes at the end).
    Backfill {
        /// Reject windows that fail the gate (as `run` does); false keeps every candidate.
        enforce_gate: bool,
    },
}

/// Accumulators of predictions across the windows of a backfill.
#[derive(Debug, Default)]
struct Sinks {
    progressive: EvalMetrics,
    online: EvalMetrics,
}

/// A span being read: examples are pulled as the pipeline delivers them, bad records go to the
/// span's quarantine file as they come.
struct SpanStream {
    span: Span,
    qw: evergreen_data::QuarantineWriter,
    /// Windows of the span consumed before this one (`data.window_records`).
    parts: u32,
    pipeline: Pipeline,
    header_error: Option<String>,
    positions: Vec<SourcePosition>,
    /// Records quarantined so far.
    bad_seen: u64,
    done: bool,
    /// The pipeline's CPU times when the last window was cut (windows report their share).
    cpu_seen: evergreen_data::pipeline::StageCpuSeconds,
}

impl SpanStream {
    fn shard_prefix(&self, i: usize) -> String {
        if self.span.shards.len() > 1 {
            format!("shard {}: ", self.span.shards[i].name)
        } else {
            String::new()
        }
    }

    fn shard_of(&self, name: &str) -> usize {
        self.span
            .shards
            .iter()
            .position(|s| s.name == name)
            .unwrap_or(0)
    }

    /// Bytes read from the span's files so far.
    fn bytes_read(&self) -> u64 {
        self.pipeline.bytes_read()
    }

    /// Reads until `out` holds at least `want` examples or the span ends (or cannot be read
    /// further: see `header_error`); returns false once the span is exhausted.
    fn fill(
        &mut self,
        out: &mut Vec<(u64, FeatureVector, f32)>,
        want: usize,
    ) -> Result<bool, TrainError> {
        while out.len() < want {
            let Some(item) = self.pipeline.next() else {
                self.done = true;
                return Ok(false);
            };
            self.take(item, out)?;
        }
        Ok(!self.done)
    }

    /// Takes what the pipeline has already buffered (without reading further), so that the
    /// examples delivered end where [`Pipeline::resume_point`] says.
    fn cut(&mut self, out: &mut Vec<(u64, FeatureVector, f32)>) -> Result<ResumePoint, TrainError> {
        while let Some(item) = self.pipeline.next_buffered() {
            self.take(item, out)?;
        }
        Ok(self.pipeline.resume_point())
    }

    /// Handles one pipeline item: examples into `out`, bad records into the quarantine file.
    fn take(
        &mut self,
        item: Item,
        out: &mut Vec<(u64, FeatureVector, f32)>,
    ) -> Result<(), TrainError> {
        {
            match item {
                Item::Batch(batch) => {
                    out.extend(
                        batch
                            .into_iter()
                            .map(|e| (((e.shard as u64) << 40) | e.position, e.features, e.label)),
                    );
                    // With a span larger than one batch, this is in the middle of a shard.
                    failpoint("mid_read");
                }
                Item::Rejected(Rejected::Parse(bad))
                    if [
                        reason::BAD_LENGTH,
                        reason::TRUNCATED_RECORD,
                        reason::CORRUPT_GZIP,
                        reason::CORRUPT_ROW_GROUP,
                    ]
                    .contains(&bad.reason) =>
                {
                    // The rest of this shard (TFRecord) or of this Parquet row group cannot be
                    // decoded: its records can be neither trained nor accounted for one by one,
                    // so the span is held back.
                    let shard = self.shard_of(&bad.span);
                    self.qw.add_bad(&bad)?;
                    self.bad_seen += 1;
                    let lost = if bad.reason == reason::CORRUPT_ROW_GROUP {
                        "the rest of its row group cannot be read"
                    } else {
                        "the rest of the shard cannot be read"
                    };
                    self.header_error = Some(format!(
                        "corrupt shard {}: record {}: {} ({}); {lost}",
                        self.span.shards[shard].name, bad.line, bad.reason, bad.detail
                    ));
                }
                Item::Rejected(Rejected::Parse(bad)) if self.span.shards.len() > 1 => {
                    let prefix = self.shard_prefix(self.shard_of(&bad.span));
                    self.qw.add(
                        bad.line,
                        bad.reason,
                        &format!("{prefix}{}", bad.detail),
                        &bad.raw,
                    )?;
                    self.bad_seen += 1;
                }
                Item::Rejected(Rejected::Parse(bad)) => {
                    self.qw.add_bad(&bad)?;
                    self.bad_seen += 1;
                }
                Item::Rejected(Rejected::Transform {
                    shard,
                    position,
                    error,
                    raw,
                }) => {
                    let prefix = self.shard_prefix(shard);
                    self.qw
                        .add(position, error.reason(), &format!("{prefix}{error}"), &raw)?;
                    self.bad_seen += 1;
                }
                Item::ShardDone { shard, records } => self.positions.push(SourcePosition {
                    span: self.span.id.clone(),
                    shard: self.span.shards[shard].path.display().to_string(),
                    records,
                    finished: true,
                }),
                Item::Failed {
                    shard,
                    error,
                    bad_input: true,
                } => {
                    // An unusable header is bad input, not a transient failure: the span is held
                    // back (consumed, not trained) so that it does not block the spans behind it.
                    let prefix = self.shard_prefix(shard);
                    self.qw
                        .add(1, "bad_header", &format!("{prefix}{error}"), "")?;
                    self.bad_seen += 1;
                    self.header_error = Some(error);
                }
                Item::Failed { error, .. } => {
                    return Err(TrainError::SpanRead {
                        span: self.span.id.clone(),
                        detail: error,
                    });
                }
            }
        }
        Ok(())
    }

    /// Closes the quarantine file and returns what the span produced, `examples` included.
    fn finish(self, examples: Vec<(u64, FeatureVector, f32)>) -> Result<SpanRead, TrainError> {
        let bad = self.qw.finish()?;
        let cpu = self.pipeline.stage_cpu().since(&self.cpu_seen);
        Ok(SpanRead {
            examples,
            bad,
            positions: self.positions,
            header_error: self.header_error,
            cpu,
        })
    }
}

/// What reading a span produced.
struct SpanRead {
    /// Good examples: (position key, features, label).
    examples: Vec<(u64, FeatureVector, f32)>,
    /// Quarantined records by reason.
    bad: std::collections::BTreeMap<String, u64>,
    /// Records read per shard.
    positions: Vec<SourcePosition>,
    /// Why the span cannot be trained at all (unframeable shard, unusable header).
    header_error: Option<String>,
    /// CPU time the input pipeline spent on it, per stage.
    cpu: evergreen_data::pipeline::StageCpuSeconds,
}

/// Where spans come from: a flat directory (each file a span) or a TFX-style pattern.
#[derive(Debug)]
enum SpanSource {
    Dir(SpanDir),
    Pattern {
        pattern: SpanPattern,
        ready_marker: bool,
        format: Option<evergreen_data::Format>,
    },
}

impl SpanSource {
    fn list(&self) -> Result<Vec<Span>, TrainError> {
        Ok(match self {
            SpanSource::Dir(d) => d
                .list()?
                .into_iter()
                .map(|f| Span {
                    id: f.name.clone(),
                    uri: f.path.clone(),
                    shards: vec![f],
                })
                .collect(),
            SpanSource::Pattern {
                pattern,
                ready_marker,
                format,
            } => pattern
                .discover(*ready_marker, *format)?
                .into_iter()
                .map(|s| Span {
                    id: s.id(),
                    uri: s.uri(),
                    shards: s.shards,
                })
                .collect(),
        })
    }

    fn dir(&self) -> &std::path::Path {
        match self {
            SpanSource::Dir(d) => d.dir(),
            SpanSource::Pattern { pattern, .. } => pattern.base(),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn metrics_record(s: Option<&Summary>) -> MetricsRecord {
    match s {
        Some(s) => MetricsRecord {
            examples: s.examples,
            logloss: s.logloss,
            auc: s.auc,
            accuracy: s.accuracy,
            calibration: s.calibration,
        },
        None => MetricsRecord {
            examples: 0,
            logloss: f64::NAN,
            auc: f64::NAN,
            accuracy: f64::NAN,
            calibration: f64::NAN,
        },
    }
}

/// The continuous trainer of one model.
pub struct Trainer {
    cfg: Config,
    registry: Registry,
    lineage: LineageStore,
    spans: SpanSource,
    quarantine: Quarantine,
    metrics: Arc<Metrics>,
    transformer: Arc<Transformer>,
    state: TrainerState,
    model: Box<dyn Model>,
    code_version: String,
    /// Lineage records of committed cycles whose recording failed; retried before each cycle.
    lineage_backlog: Vec<CycleRecord>,
    /// Span names at or before the watermark already seen (consumed, or reported as late).
    known_before_watermark: std::collections::HashSet<String>,
    /// False until the first listing: spans present at start are not "late".
    late_check_armed: bool,
    /// Sample of past examples replayed into each window (committed with the watermark).
    replay: ReplayStore,
    /// The replay store of the cycle in progress, written before its commit.
    staged_replay: Option<ReplayStore>,
    /// The span being read in windows (`data.window_records`), after its last committed window.
    active: Option<SpanStream>,
    /// TensorBoard event file (`state.tensorboard_dir`): `None` until the first cycle opens
    /// it, `Some(None)` when off or it could not be created.
    tensorboard: Option<Option<tensorboard::EventWriter>>,
    /// The last cycle's training loss per step (`TRAIN_LOSS_EVERY` examples): the model's
    /// examples seen after the step, and the mean logloss of the step's pre-update predictions.
    step_losses: Vec<(u64, f64)>,
    /// Performance trace file (`state.trace_dir`), as `tensorboard`.
    trace: Option<Option<trace::TraceWriter>>,
    /// Candidates rejected since the last accepted one (this process).
    rejections_in_a_row: i64,
    /// Cycles in a row whose held-out accuracy fell more than 5% below the previous one's, and
    /// the previous one's.
    accuracy_drops_in_a_row: i64,
    last_accuracy: Option<f64>,
    /// Drift detectors across the windows of this process.
    drift: drift::DriftMonitor,
    /// Publication pause last seen (to log its changes once).
    paused_seen: Option<String>,
    /// The alert rules' state across cycles.
    alerts: alerts::AlertState,
    /// Adaptive cadence: the wait after the last cycle, when it ended, and whether the wait
    /// was logged.
    cadence_wait: Duration,
    last_cycle_end: Option<Instant>,
    cadence_logged: bool,
}

/// Examples per point of the per-step training loss.
const TRAIN_LOSS_EVERY: usize = 1024;

/// Mean logloss of pre-update predictions, a point per [`TRAIN_LOSS_EVERY`] examples.
struct StepLoss {
    sum: f64,
    count: usize,
}

impl StepLoss {
    fn new() -> Self {
        Self { sum: 0.0, count: 0 }
    }
    /// Adds a batch; `seen` is the model's examples seen after it (the step of the point).
    fn add(&mut self, preds: &[f64], ys: &[f32], seen: u64, out: &mut Vec<(u64, f64)>) {
        for (&p, &y) in preds.iter().zip(ys) {
            self.sum += evergreen_model::logloss(p, y);
        }
        self.count += preds.len().min(ys.len());
        if self.count >= TRAIN_LOSS_EVERY {
            self.flush(seen, out);
        }
    }
    fn flush(&mut self, seen: u64, out: &mut Vec<(u64, f64)>) {
        if self.count > 0 {
            out.push((seen, self.sum / self.count as f64));
        }
        *self = Self::new();
    }
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.cfg.model.name)
            .field("state", &self.state)
            .finish()
    }
}

impl Trainer {
    /// Opens the trainer: recovers the watermark, the model to warm-start from, and lineage.
    pub fn open(
        cfg: Config,
        metrics: Arc<Metrics>,
        code_version: &str,
    ) -> Result<Self, TrainError> {
        std::fs::create_dir_all(&cfg.state.dir).map_err(|e| TrainError::State {
            path: cfg.state.dir.clone(),
            message: e.to_string(),
        })?;
        let registry = Registry::open(cfg.model_dir(), &cfg.model.name)?;
        registry.remove_stale_temporaries()?;
        let lineage_path = cfg.lineage_path();
        if let Some(parent) = lineage_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| TrainError::State {
                path: parent.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        let mut lineage = LineageStore::open(&lineage_path)?;
        let transformer = Arc::new(Transformer::new(cfg.features.clone())?);
        let fields = cfg.features.field_names();
        let cfg_min_interval = cfg.cadence.min_interval_s;
        let spans = match &cfg.data.pattern {
            Some(p) => SpanSource::Pattern {
                pattern: SpanPattern::parse(p, &cfg.data.dir)?,
                ready_marker: cfg.data.ready_marker,
                format: cfg.data.format,
            },
            None => SpanSource::Dir(SpanDir::new(
                &cfg.data.dir,
                cfg.data.ready_marker,
                cfg.data.format,
            )),
        };
        let quarantine = Quarantine::new(cfg.quarantine_dir());
        let state_path = cfg.state.dir.join(STATE_FILE);
        let mut state = TrainerState::load(&state_path, &cfg.model.name)?;

        // Recover: the newest version's manifest may be ahead of the state file (crash after
        // publish, before the state commit).
        let latest = registry.latest()?;
        let model: Box<dyn Model> = match latest {
            Some(v) => {
                let loaded = registry.load(v)?;
                if loaded.manifest.feature_spec != cfg.features {
                    return Err(TrainError::Incompatible(format!(
                        "the feature spec in the config differs from the one stored in version {v} \
                         under {}: a model cannot be warm-started with another spec; use a new \
                         model name (or restore the spec)",
                        registry.base().display()
                    )));
                }
                if loaded.manifest.model_kind != cfg.model.kind {
                    return Err(TrainError::Incompatible(format!(
                        "model.kind is {} but version {v} is {}",
                        cfg.model.kind.name(),
                        loaded.manifest.model_kind.name()
                    )));
                }
                if state.adopt_version(&loaded.manifest) {
                    tracing::info!(
                        version = v,
                        watermark = ?state.watermark,
                        "recovered watermark from the newest version"
                    );
                    state.save(&state_path)?;
                }
                let mut model = loaded.model;
                apply_params(&cfg, &mut model)?;
                model
            }
            None => fresh_model(&cfg)?,
        };
        // Lineage for every retained version (idempotent): covers a crash after publish.
        for v in registry.versions()? {
            let m = registry.manifest(v)?;
            if lineage.model_lineage(&cfg.model.name, v)?.is_none() {
                lineage.record_cycle(&cycle_record_from_manifest(
                    &m,
                    &registry,
                    &spans,
                    &quarantine,
                ))?;
            }
        }
        let replay = ReplayStore::open(
            &cfg.state.dir,
            state.commit_id().as_deref(),
            cfg.training.replay,
        )?;
        let name = cfg.model.name.clone();
        if let Some(v) = latest {
            metrics
                .published_version
                .get_or_create(&Metrics::model(&name))
                .set(v as i64);
        }
        Ok(Self {
            cfg,
            registry,
            lineage,
            spans,
            quarantine,
            metrics,
            transformer,
            state,
            model,
            code_version: code_version.to_string(),
            lineage_backlog: Vec::new(),
            known_before_watermark: Default::default(),
            late_check_armed: false,
            replay,
            staged_replay: None,
            active: None,
            tensorboard: None,
            step_losses: Vec::new(),
            trace: None,
            rejections_in_a_row: 0,
            accuracy_drops_in_a_row: 0,
            last_accuracy: None,
            drift: drift::DriftMonitor::new(fields),
            paused_seen: None,
            alerts: alerts::AlertState::default(),
            cadence_wait: Duration::from_secs_f64(cfg_min_interval),
            last_cycle_end: None,
            cadence_logged: false,
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The committed state.
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// The registry this trainer publishes to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The rolling window of the last `k` ready spans of the data source, up to and including
    /// span `until` (default: the newest), in span order: what `evergreen train --last-spans`
    /// replays on demand. The watermark plays no part.
    pub fn rolling_window(&self, k: usize, until: Option<&str>) -> Result<Vec<Span>, TrainError> {
        let mut spans = self.spans.list()?;
        if let Some(u) = until {
            spans.retain(|s| s.id.as_str() <= u);
        }
        let skip = spans.len().saturating_sub(k);
        Ok(spans.split_off(skip))
    }

    /// Ready spans not yet consumed (the span consumed in part first).
    pub fn pending(&self) -> Result<Vec<Span>, TrainError> {
        let mut spans = self.spans.list()?;
        spans.retain(|s| !self.is_behind(&s.id));
        Ok(spans)
    }

    /// Whether span `id` sorts at or before what is consumed: the watermark, or before the
    /// span consumed in part.
    fn is_behind(&self, id: &str) -> bool {
        self.state.watermark.as_deref().is_some_and(|w| id <= w)
            || self
                .state
                .partial
                .as_ref()
                .is_some_and(|p| id < p.span.as_str())
    }

    /// Spans are taken in name order, so a span whose name sorts at or before the watermark when
    /// it appears is never trained. Such late arrivals are reported once each (log and
    /// `evergreen_data_late_spans_total`) instead of being skipped silently.
    fn report_late_spans(&mut self) -> Result<(), TrainError> {
        let Some(watermark) = self
            .state
            .partial
            .as_ref()
            .map(|p| p.span.clone())
            .or_else(|| self.state.watermark.clone())
        else {
            return Ok(());
        };
        for s in self.spans.list()? {
            if !self.is_behind(&s.id) {
                break;
            }
            if self.known_before_watermark.insert(s.id.clone()) && self.late_check_armed {
                tracing::warn!(
                    span = %s.id,
                    watermark = %watermark,
                    "span arrived after the watermark and will not be trained: spans are taken \
                     in name order; rename it so that it sorts after the watermark"
                );
                self.metrics
                    .late_spans
                    .get_or_create(&Metrics::model(&self.cfg.model.name))
                    .inc();
            }
        }
        self.late_check_armed = true;
        Ok(())
    }

    /// Runs one cycle on the next pending span; `None` when there is none.
    pub fn run_once(&mut self) -> Result<Option<CycleReport>, TrainError> {
        while let Some(rec) = self.lineage_backlog.first() {
            self.lineage.record_cycle(rec)?;
            self.lineage_backlog.remove(0);
        }
        self.report_late_spans()?;
        let pending = self.pending()?;
        let name = self.cfg.model.name.clone();
        self.metrics
            .pending_spans
            .get_or_create(&Metrics::model(&name))
            .set(pending.len() as i64);
        // Publication paused (admin API, `models pause`, an alert): no cycle starts; the spans
        // wait, nothing is lost.
        let paused = self.registry.traffic()?.publication_paused;
        self.metrics
            .publication_paused
            .get_or_create(&Metrics::model(&name))
            .set(i64::from(paused.is_some()));
        if paused != self.paused_seen {
            match &paused {
                Some(why) => tracing::warn!(
                    pending = pending.len(),
                    "publication paused ({why}): no cycle until it is resumed"
                ),
                None => tracing::info!("publication resumed"),
            }
            self.paused_seen = paused.clone();
        }
        if paused.is_some() {
            return Ok(None);
        }
        // Adaptive cadence: while the data is stable, wait before the next cycle and train the
        // spans that became ready meanwhile together.
        let cadence = self.cfg.cadence.clone();
        let adaptive =
            cadence.adaptive() && self.cfg.data.window_records == 0 && self.state.partial.is_none();
        if adaptive
            && !pending.is_empty()
            && pending.len() < cadence.max_spans_per_cycle
            && let Some(end) = self.last_cycle_end
            && end.elapsed() < self.cadence_wait
        {
            if !self.cadence_logged {
                tracing::info!(
                    pending = pending.len(),
                    wait_s = (self.cadence_wait - end.elapsed()).as_secs_f64(),
                    "data stable: next cycle after the wait, with the spans ready by then"
                );
                self.cadence_logged = true;
            }
            return Ok(None);
        }
        let take = if adaptive {
            cadence.max_spans_per_cycle
        } else {
            1
        };
        let group: Vec<Span> = pending.into_iter().take(take).collect();
        if group.is_empty() {
            return Ok(None);
        }
        let report = match self.cycle_of(&group) {
            Ok(r) => r,
            Err(e) => {
                self.metrics
                    .cycles
                    .get_or_create(&Metrics::outcome(&name, "failed"))
                    .inc();
                return Err(e);
            }
        };
        if adaptive {
            self.adapt_cadence(&report);
        }
        let left = self.pending()?.len();
        self.metrics
            .pending_spans
            .get_or_create(&Metrics::model(&name))
            .set(left as i64);
        Ok(Some(report))
    }

    /// After a cycle: the wait before the next one goes back to the floor when the cycle
    /// detected drift, and grows (up to the ceiling) when it did not.
    fn adapt_cadence(&mut self, report: &CycleReport) {
        let c = &self.cfg.cadence;
        let floor = Duration::from_secs_f64(c.min_interval_s);
        let ceiling = Duration::from_secs_f64(c.max_interval_s);
        let drifted = report.drift.as_ref().is_some_and(|d| d.drifted());
        let before = self.cadence_wait;
        self.cadence_wait = if drifted {
            floor
        } else {
            before
                .max(floor)
                .max(Duration::from_secs(1))
                .mul_f64(c.growth)
                .min(ceiling)
        };
        if drifted && before > floor {
            tracing::warn!(
                wait_s = self.cadence_wait.as_secs_f64(),
                "drift detected: training cadence back to its floor"
            );
        } else if self.cadence_wait != before {
            tracing::info!(
                wait_s = self.cadence_wait.as_secs_f64(),
                "data stable: training cadence slowed"
            );
        }
        self.metrics
            .cadence_seconds
            .get_or_create(&Metrics::model(&self.cfg.model.name))
            .set(self.cadence_wait.as_secs_f64());
        self.last_cycle_end = Some(Instant::now());
        self.cadence_logged = false;
    }

    /// Reads the spans of `group` in order as one window (adaptive cadence), stopping before
    /// the first one that could not be trained with the others (an unusable header, too many
    /// bad records: it gets a cycle of its own). `None` when that is the first one.
    fn read_group(
        &mut self,
        group: &[Span],
    ) -> Result<Option<(SpanRead, Commit, usize)>, TrainError> {
        let mut out = SpanRead {
            examples: Vec::new(),
            bad: Default::default(),
            positions: Vec::new(),
            header_error: None,
            cpu: Default::default(),
        };
        let mut ids: Vec<String> = Vec::new();
        for (k, span) in group.iter().enumerate() {
            let read = self.read_span(span)?;
            let bad: u64 = read.bad.values().sum();
            let total = read.examples.len() as u64 + bad;
            let too_bad = total > 0 && bad as f64 / total as f64 > self.cfg.data.max_bad_fraction;
            if read.header_error.is_some() || too_bad {
                if k == 0 {
                    return Ok(None);
                }
                break;
            }
            // Position keys stay distinct across spans (they pick the held-out rows).
            let salt = xxhash_rust::xxh3::xxh3_64(span.id.as_bytes());
            out.examples.extend(
                read.examples
                    .into_iter()
                    .map(|(line, x, y)| (line ^ salt, x, y)),
            );
            for (reason, n) in read.bad {
                *out.bad.entry(reason).or_default() += n;
            }
            out.positions.extend(read.positions);
            out.cpu.decode += read.cpu.decode;
            out.cpu.transform += read.cpu.transform;
            out.cpu.decode_transform += read.cpu.decode_transform;
            ids.push(span.id.clone());
        }
        let n = ids.len();
        let last = ids.pop().expect("at least one span read");
        let commit = Commit {
            span: last.clone(),
            id: last,
            partial: None,
            positions: out.positions.clone(),
            merged: ids,
        };
        Ok(Some((out, commit, n)))
    }

    /// One cycle over `group` (one span, or several ready spans trained together by the
    /// adaptive cadence; they commit together).
    fn cycle_of(&mut self, group: &[Span]) -> Result<CycleReport, TrainError> {
        let mut span = &group[0];
        let mut grouped = None;
        if group.len() > 1 {
            grouped = self.read_group(group)?;
            if let Some((_, _, n)) = &grouped {
                span = &group[*n - 1];
            }
        }
        let started = Instant::now();
        let started_ms = now_ms();
        let model_name = self.cfg.model.name.clone();
        let ml = Metrics::model(&model_name);
        tracing::info!(span = %span.id, shards = span.shards.len(), "cycle started");
        // A replay store staged by an earlier, failed attempt at this span is not committed.
        self.staged_replay = None;

        // The stream of a span read in windows is kept between cycles, and put back only once
        // this window is committed: after an error the next attempt resumes from the commit.
        // A span already consumed in part is read on in windows even if `data.window_records`
        // was set to 0 since (its first windows must not be trained again).
        let in_part = self
            .state
            .partial
            .as_ref()
            .is_some_and(|p| p.span == span.id);
        let (read, commit, stream) = if let Some((read, commit, _)) = grouped {
            (read, commit, None)
        } else if self.cfg.data.window_records > 0 || in_part {
            self.read_window(span)?
        } else {
            let read = self.read_span(span)?;
            let commit = Commit {
                span: span.id.clone(),
                id: span.id.clone(),
                partial: None,
                positions: read.positions.clone(),
                merged: Vec::new(),
            };
            (read, commit, None)
        };
        failpoint("after_read");
        let SpanRead {
            examples,
            bad,
            positions: _,
            header_error,
            cpu,
        } = read;
        let bad_total: u64 = bad.values().sum();
        for (reason, n) in &bad {
            self.metrics
                .quarantined
                .get_or_create(&ReasonLabels {
                    model: model_name.clone(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        let records = examples.len() as u64;
        self.metrics.records_read.get_or_create(&ml).inc_by(records);
        let parent_version = self.state.last_version;
        let mut report = CycleReport::started(&commit.id, records, parent_version);
        report.origin = Some(started);
        report.stage("read", started);
        report.read_cpu = cpu.into();
        report.bad = bad.clone();
        report.positions = commit.positions.clone();

        let total = records + bad_total;
        let bad_fraction = if total == 0 {
            0.0
        } else {
            bad_total as f64 / total as f64
        };
        if let Some(e) = header_error {
            report.outcome = Outcome::HeldBack;
            report.note = format!("held back: {e}");
            tracing::error!(span = %commit.id, "{}", report.note);
        } else if bad_fraction > self.cfg.data.max_bad_fraction {
            report.outcome = Outcome::HeldBack;
            report.note = format!(
                "held back: {bad_total} of {total} records bad ({:.1}% > max_bad_fraction {:.1}%); \
                 see {}",
                bad_fraction * 100.0,
                self.cfg.data.max_bad_fraction * 100.0,
                self.quarantine.path_for(&commit.id).display()
            );
            tracing::error!(span = %commit.id, "{}", report.note);
        } else if records == 0 {
            report.note = if commit.id != span.id && commit.partial.is_none() && total == 0 {
                "end of span".into()
            } else {
                "no good record".into()
            };
            tracing::warn!(span = %commit.id, "{}", report.note);
        } else {
            let recycle = self.active.as_ref().map(|s| s.pipeline.recycler());
            self.train_and_gate(
                span,
                examples,
                &mut report,
                WindowMode::Cycle(&commit),
                None,
                recycle.as_ref(),
            )?;
        }

        if commit.partial.is_none() {
            self.known_before_watermark.insert(span.id.clone());
            self.known_before_watermark
                .extend(commit.merged.iter().cloned());
        }
        let state_path = self.cfg.state.dir.join(STATE_FILE);
        let named = Span {
            id: commit.id.clone(),
            uri: PathBuf::from(window_uri(&span.uri, &span.id, &commit.id)),
            shards: Vec::new(),
        };
        let record = self.cycle_record(&named, &report, started_ms, now_ms());
        let committing = Instant::now();
        if let Some(version) = report.version {
            // Already committed by the publish (the manifest carries the watermark, and the
            // in-memory state moved with it): what follows must not fail the cycle, or the span
            // would be retried and trained twice. Failures are logged and repaired: lineage is
            // retried before the next cycle (and re-recorded from manifests at start), the state
            // file is rewritten at the next commit.
            if let Err(e) = self.lineage.record_cycle(&record) {
                tracing::error!(span = %commit.id, "lineage not recorded (will retry): {e}");
                self.lineage_backlog.push(record);
            }
            failpoint("after_lineage");
            if let Err(e) = self.state.save(&state_path) {
                tracing::error!(
                    "state file not written (the manifest of v{version} carries the watermark): {e}"
                );
            }
            failpoint("after_state");
            self.commit_replay(&commit.key());
            match self
                .registry
                .apply_retention(self.cfg.registry.keep_versions, &[version])
            {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(?removed, "retention removed old versions")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("retention failed (will run again after the next publish): {e}")
                }
            }
        } else {
            // Not committed yet: lineage (idempotent per span) and then the state file, which is
            // the commit. An error here commits nothing; the span is redone from scratch.
            if self.staged_replay.is_none() {
                self.stage_replay(&commit.key(), self.replay.clone())?;
            }
            self.lineage.record_cycle(&record)?;
            failpoint("after_lineage");
            let mut next = self.state.clone();
            commit.apply(&mut next, None);
            next.save(&state_path)?;
            self.state = next;
            failpoint("after_state");
            self.commit_replay(&commit.key());
        }
        self.active = stream;
        report.stage("commit", committing);
        report.seconds = started.elapsed().as_secs_f64();
        self.metrics
            .cycles
            .get_or_create(&Metrics::outcome(&model_name, report.outcome.as_str()))
            .inc();
        self.metrics
            .cycle_duration
            .get_or_create(&ml)
            .observe(report.seconds);
        let pending = self.pending().ok().map(|p| p.len());
        self.observe(self.state.cycles, &report, pending);
        Ok(report)
    }

    /// After a cycle (or a backfill window) at `step` (the cycles committed so far; in a
    /// backfill, its window number after them): the metrics of its stages, trainer
    /// utilisation, held-out accuracy and the streaks the alert rules watch, the gradients of
    /// the model's layers, and the TensorBoard and trace files. A failure to write a file is
    /// logged, never fails the cycle: these are observers.
    pub(crate) fn observe(&mut self, step: u64, report: &CycleReport, pending: Option<usize>) {
        let model_name = self.cfg.model.name.clone();
        let ml = Metrics::model(&model_name);
        let m = &self.metrics;
        for (stage, seconds) in [
            ("decode", report.read_cpu.decode_seconds),
            ("transform", report.read_cpu.transform_seconds),
            ("decode_transform", report.read_cpu.decode_transform_seconds),
        ] {
            if seconds > 0.0 {
                m.pipeline_cpu_seconds
                    .get_or_create(&evergreen_metrics::StageLabels {
                        model: model_name.clone(),
                        stage: stage.into(),
                    })
                    .inc_by(seconds);
            }
        }
        for s in &report.stages {
            m.stage_seconds
                .get_or_create(&evergreen_metrics::StageLabels {
                    model: model_name.clone(),
                    stage: s.stage.to_string(),
                })
                .inc_by(s.seconds);
        }
        if let Some(u) = report.utilization() {
            m.utilization.get_or_create(&ml).set(u);
        }
        if let Some(e) = &report.evaluation {
            m.evaluation_accuracy.get_or_create(&ml).set(e.accuracy);
            let dropped = self
                .last_accuracy
                .is_some_and(|prev| e.accuracy < 0.95 * prev);
            self.accuracy_drops_in_a_row = if dropped {
                self.accuracy_drops_in_a_row + 1
            } else {
                0
            };
            self.last_accuracy = Some(e.accuracy);
            m.accuracy_drops_in_a_row
                .get_or_create(&ml)
                .set(self.accuracy_drops_in_a_row);
        }
        match report.outcome {
            Outcome::Rejected => self.rejections_in_a_row += 1,
            Outcome::Published => self.rejections_in_a_row = 0,
            _ => {}
        }
        m.gate_rejections_in_a_row
            .get_or_create(&ml)
            .set(self.rejections_in_a_row);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        m.last_cycle_timestamp.get_or_create(&ml).set(now);
        if let Some(d) = &report.drift {
            for (feature, psi) in &d.psi {
                m.feature_psi
                    .get_or_create(&evergreen_metrics::FeatureLabels {
                        model: model_name.clone(),
                        feature: feature.clone(),
                    })
                    .set(*psi);
            }
            for (fired, detector) in [
                (d.loss_change, "loss"),
                (!d.drifted_fields.is_empty(), "feature"),
            ] {
                if fired {
                    m.drift_detections
                        .get_or_create(&evergreen_metrics::DetectorLabels {
                            model: model_name.clone(),
                            detector: detector.into(),
                        })
                        .inc();
                }
            }
        }
        // Only the gradient groups (the deep models have them): cheap, every cycle.
        let mut min_gradient: Option<f64> = None;
        if report.trained > 0 {
            self.model.inspect_gradients(&mut |tag, values| {
                if let Some(group) = tag.strip_prefix("gradients/")
                    && !values.is_empty()
                {
                    let mean = values.iter().map(|g| f64::from(g.abs())).sum::<f64>()
                        / values.len() as f64;
                    min_gradient = Some(min_gradient.map_or(mean, |m| m.min(mean)));
                    m.gradient_mean_abs
                        .get_or_create(&evergreen_metrics::GroupLabels {
                            model: model_name.clone(),
                            group: group.to_string(),
                        })
                        .set(mean);
                }
            });
        }
        self.model.gauges(&mut |stat, value| {
            m.model_stat
                .get_or_create(&evergreen_metrics::StatLabels {
                    model: model_name.clone(),
                    stat: stat.to_string(),
                })
                .set(value);
        });
        let bad: u64 = report.bad.values().sum();
        let facts = alerts::Facts {
            accuracy_drops_in_a_row: self.accuracy_drops_in_a_row,
            rejections_in_a_row: self.rejections_in_a_row,
            utilization: report.utilization(),
            min_gradient,
            pending_spans: pending,
            quarantine_fraction: if report.records + bad == 0 {
                0.0
            } else {
                bad as f64 / (report.records + bad) as f64
            },
            loss_drift: report.drift.as_ref().is_some_and(|d| d.loss_change),
            drifted_fields: report
                .drift
                .as_ref()
                .map(|d| d.drifted_fields.clone())
                .unwrap_or_default(),
        };
        if self.cfg.alerts.enabled {
            self.evaluate_alerts(&facts, step);
        }
        self.log_to_trace(step, report);
        self.log_to_tensorboard(step, report);
    }

    /// Evaluates the alert rules on `facts` (after cycle `step`): logs what starts or stops
    /// firing, exports the set firing, and takes the action configured for an alert that
    /// starts firing. An action that fails is logged; it never fails the cycle.
    fn evaluate_alerts(&mut self, facts: &alerts::Facts, step: u64) {
        let model_name = self.cfg.model.name.clone();
        for t in self.alerts.evaluate(facts) {
            let (alert, firing) = match &t {
                alerts::Transition::Firing(a, why) => {
                    tracing::warn!(alert = %a, "alert firing: {why}");
                    (*a, true)
                }
                alerts::Transition::Resolved(a) => {
                    tracing::info!(alert = %a, "alert resolved");
                    (*a, false)
                }
            };
            self.metrics
                .alerts_firing
                .get_or_create(&evergreen_metrics::AlertLabels {
                    model: model_name.clone(),
                    alertname: alert.to_string(),
                })
                .set(i64::from(firing));
            let alerts::Transition::Firing(_, why) = t else {
                continue;
            };
            let Some(action) = self.cfg.alerts.actions.get(alert).copied() else {
                continue;
            };
            let reason = format!("alert {alert} firing: {why}");
            let done = match action {
                evergreen_config::AlertAction::RaiseFrequency => {
                    self.cadence_wait = Duration::from_secs_f64(self.cfg.cadence.min_interval_s);
                    tracing::warn!(alert = %alert, "alert acted on: training cadence back to its floor");
                    continue;
                }
                evergreen_config::AlertAction::Rollback => self
                    .registry
                    .rollback_for_alert(&format!("evergreen:{alert}@cycle-{step}")),
                evergreen_config::AlertAction::PausePublication => {
                    self.registry.pause_publication(&reason).map(Some)
                }
            };
            match done {
                Ok(Some(change)) => {
                    tracing::warn!(alert = %alert, action = change.action, summary = %change.summary, "alert acted on");
                    let record = evergreen_lineage::AdminActionRecord {
                        model_name: model_name.clone(),
                        action: change.action.to_string(),
                        actor: "evergreen-alerts".into(),
                        reason,
                        details_json: serde_json::to_string(&change).unwrap_or_default(),
                        at_ms: now_ms(),
                    };
                    if let Err(e) = self.lineage.record_admin_action(&record) {
                        tracing::error!(alert = %alert, "alert action applied but not recorded in lineage: {e}");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!(alert = %alert, "alert action {action:?} failed: {e}"),
            }
        }
    }

    /// Appends `report` to the performance trace (`state.trace_dir`).
    fn log_to_trace(&mut self, step: u64, report: &CycleReport) {
        let (dir, model) = (&self.cfg.state.trace_dir, &self.cfg.model.name);
        let writer = self.trace.get_or_insert_with(|| {
            let dir = dir.as_ref()?;
            trace::TraceWriter::create(dir, model)
                .inspect_err(|e| {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot create a trace file; not written");
                })
                .ok()
        });
        if let Some(w) = writer
            && let Err(e) = w.write_cycle(step, report)
        {
            tracing::warn!(file = %w.path().display(), error = %e, "cannot write to the trace file");
        }
    }

    /// Writes `report` to the TensorBoard event file (`state.tensorboard_dir`) at `step`.
    fn log_to_tensorboard(&mut self, step: u64, report: &CycleReport) {
        let dir = &self.cfg.state.tensorboard_dir;
        let writer = self.tensorboard.get_or_insert_with(|| {
            let dir = dir.as_ref()?;
            tensorboard::EventWriter::create(dir)
                .inspect_err(|e| {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot create a TensorBoard event file; not written");
                })
                .ok()
        });
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let model = self.model.as_ref();
        let steps = std::mem::take(&mut self.step_losses);
        if let Some(w) = writer
            && let Err(e) = tensorboard::write_cycle(w, step, report, &steps, model)
        {
            tracing::warn!(file = %w.path().display(), error = %e, "cannot write to the TensorBoard event file");
        }
    }

    /// Reads the next window of `span` (`data.window_records`): continues the stream kept from
    /// the previous window, or resumes from the committed source positions, or starts the span.
    /// Returns the window, what committing it means, and the stream to keep if the span goes on.
    fn read_window(
        &mut self,
        span: &Span,
    ) -> Result<(SpanRead, Commit, Option<SpanStream>), TrainError> {
        let window = match self.cfg.data.window_records {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let kept = self
            .active
            .take()
            .filter(|s| s.span.id == span.id && s.span.shards == span.shards);
        let mut stream = match kept {
            Some(s) => s,
            None => match self.resume_point(span) {
                Ok((parts, at)) => {
                    let id = PartialSpan::part_id(&span.id, parts + 1);
                    self.stream_span_at(span, &id, parts, at)?
                }
                Err(why) => {
                    // The span is not the one whose windows were committed: the rest of it
                    // cannot be told apart from what was trained, so it is held back.
                    let parts = self.state.partial.as_ref().map_or(0, |p| p.parts);
                    let id = PartialSpan::part_id(&span.id, parts + 1);
                    let read = SpanRead {
                        examples: Vec::new(),
                        bad: Default::default(),
                        positions: Vec::new(),
                        header_error: Some(why),
                        cpu: Default::default(),
                    };
                    let commit = Commit {
                        span: span.id.clone(),
                        id,
                        partial: None,
                        positions: Vec::new(),
                        merged: Vec::new(),
                    };
                    return Ok((read, commit, None));
                }
            },
        };
        let part = stream.parts + 1;
        let id = PartialSpan::part_id(&span.id, part);
        let mut examples = Vec::new();
        // About `window` records, good and bad, then up to the end of the pipeline's chunk.
        let bad_before = stream.bad_seen;
        loop {
            let taken = examples.len() as u64 + (stream.bad_seen - bad_before);
            let need = (window as u64).saturating_sub(taken);
            let want = examples.len() + need as usize;
            if need == 0 || !stream.fill(&mut examples, want)? {
                break;
            }
        }
        let at = stream.cut(&mut examples)?;
        let more = !stream.done;
        failpoint("mid_window");
        let positions: Vec<SourcePosition> = span
            .shards
            .iter()
            .enumerate()
            .map(|(i, f)| SourcePosition {
                span: span.id.clone(),
                shard: f.path.display().to_string(),
                records: at.records[i],
                finished: at.finished[i],
            })
            .collect();
        // This window's quarantine file is complete; the next window gets its own.
        let next_qw = self
            .quarantine
            .begin(&PartialSpan::part_id(&span.id, part + 1))?;
        let bad = std::mem::replace(&mut stream.qw, next_qw).finish()?;
        // A framing error holds back the window it happened in; later windows read on (the rest
        // of that shard is quarantined as unreadable, other shards are fine).
        let header_error = stream.header_error.take();
        stream.parts = part;
        let now = stream.pipeline.stage_cpu();
        let cpu = now.since(&stream.cpu_seen);
        stream.cpu_seen = now;
        let read = SpanRead {
            examples,
            bad,
            positions: positions.clone(),
            header_error,
            cpu,
        };
        let commit = Commit {
            span: span.id.clone(),
            id,
            partial: more.then(|| PartialSpan {
                span: span.id.clone(),
                parts: part,
                next_reader: at.next_reader,
            }),
            positions,
            merged: Vec::new(),
        };
        Ok((read, commit, more.then_some(stream)))
    }

    /// Where to resume `span` from: the committed windows and source positions when the state
    /// has some for it; an error when they do not fit its shards.
    fn resume_point(&self, span: &Span) -> Result<(u32, ResumePoint), String> {
        let Some(p) = self.state.partial.as_ref().filter(|p| p.span == span.id) else {
            return Ok((0, ResumePoint::default()));
        };
        let n = span.shards.len();
        let mut at = ResumePoint {
            records: vec![0; n],
            finished: vec![false; n],
            next_reader: p.next_reader,
        };
        let mut matched = 0;
        for pos in &self.state.positions {
            let Some(i) = span
                .shards
                .iter()
                .position(|f| f.path.display().to_string() == pos.shard)
            else {
                return Err(format!(
                    "windows 1-{} of span {} were committed with shard {}, which is no longer \
                     part of it: the span changed after they were trained",
                    p.parts, span.id, pos.shard
                ));
            };
            at.records[i] = pos.records;
            at.finished[i] = pos.finished;
            matched += 1;
        }
        if matched != n {
            return Err(format!(
                "windows 1-{} of span {} were committed with {matched} shards, it now has {n}: \
                 the span changed after they were trained",
                p.parts, span.id
            ));
        }
        tracing::info!(span = %span.id, windows = p.parts, "resuming inside the span");
        Ok((p.parts, at))
    }

    /// Reads and transforms every shard of a span through the parallel pipeline; bad records go
    /// to the span's quarantine file. The position of an example is (shard index, record
    /// number), kept for the holdout split.
    fn read_span(&self, span: &Span) -> Result<SpanRead, TrainError> {
        let mut stream = self.stream_span(span)?;
        let mut examples = Vec::new();
        stream.fill(&mut examples, usize::MAX)?;
        stream.finish(examples)
    }

    /// Starts reading a span through the parallel pipeline, which reads the shards, decodes and
    /// transforms on worker threads, and delivers examples in a deterministic order (so a retried
    /// span trains identically).
    fn stream_span(&self, span: &Span) -> Result<SpanStream, TrainError> {
        self.stream_span_at(span, &span.id, 0, ResumePoint::default())
    }

    /// Like [`Trainer::stream_span`], resuming at `at` after `parts` windows, quarantining into
    /// `quarantine_id`'s file.
    fn stream_span_at(
        &self,
        span: &Span,
        quarantine_id: &str,
        parts: u32,
        at: ResumePoint,
    ) -> Result<SpanStream, TrainError> {
        let mut options = self.cfg.pipeline.options();
        options.read.verify_crc = self.cfg.data.verify_checksums;
        Ok(SpanStream {
            span: span.clone(),
            qw: self.quarantine.begin(quarantine_id)?,
            parts,
            pipeline: Pipeline::start_at(
                span.shards.clone(),
                self.transformer.clone(),
                options,
                at,
            ),
            header_error: None,
            positions: Vec::new(),
            bad_seen: 0,
            done: false,
            cpu_seen: Default::default(),
        })
    }

    fn train_and_gate(
        &mut self,
        span: &Span,
        examples: Vec<(u64, FeatureVector, f32)>,
        report: &mut CycleReport,
        mode: WindowMode,
        mut sinks: Option<&mut Sinks>,
        recycle: Option<&evergreen_data::pipeline::Recycler>,
    ) -> Result<(), TrainError> {
        let model_name = self.cfg.model.name.clone();
        let ml = Metrics::model(&model_name);
        // Split by a hash of the record's line: deterministic, so a retried span splits alike.
        // Columns, split once (moves, no copies): training rows in span order, and the holdout.
        let seed = self.cfg.training.seed;
        let cut = (self.cfg.training.holdout_fraction * u64::MAX as f64) as u64;
        let is_holdout =
            |line: u64| xxhash_rust::xxh3::xxh3_64_with_seed(&line.to_le_bytes(), seed) < cut;
        let mut train_x = Vec::with_capacity(examples.len());
        let mut train_y = Vec::with_capacity(examples.len());
        let (mut holdout_x, mut holdout_y) = (Vec::new(), Vec::new());
        for (line, x, y) in examples {
            if is_holdout(line) {
                holdout_x.push(x);
                holdout_y.push(y);
            } else {
                train_x.push(x);
                train_y.push(y);
            }
        }

        // 2. Progressive validation: the current model predicts the whole span first (in
        //    batches; the metrics do not depend on the order).
        let mut since = Instant::now();
        let mut progressive = EvalMetrics::with_capacity(train_x.len() + holdout_x.len());
        let mut preds: Vec<f64> = Vec::with_capacity(train_x.len().max(holdout_x.len()));
        let mut losses = Vec::with_capacity(train_x.len() + holdout_x.len());
        for (xs, ys) in [(&train_x, &train_y), (&holdout_x, &holdout_y)] {
            preds.clear();
            self.model.predict_batch(xs, &mut preds);
            for (&p, &y) in preds.iter().zip(ys.iter()) {
                progressive.add(p, y);
                losses.push(evergreen_model::logloss(p, y));
            }
        }
        let drift = self
            .drift
            .observe(train_x.iter().chain(&holdout_x), losses.into_iter());
        if drift.drifted() {
            tracing::warn!(
                span = %span.id,
                loss_change = drift.loss_change,
                loss_level = drift.loss_level,
                drifted_fields = ?drift.drifted_fields,
                "drift detected"
            );
        }
        report.drift = Some(drift);
        if let Some(s) = sinks.as_deref_mut() {
            s.progressive.merge(&progressive);
        }
        let progressive = progressive.summary();
        self.metrics
            .progressive_logloss
            .get_or_create(&ml)
            .set(progressive.logloss);
        self.metrics
            .progressive_auc
            .get_or_create(&ml)
            .set(progressive.auc);
        report.progressive = Some(progressive);
        report.stage("progressive", since);
        since = Instant::now();

        // 3. Train a copy (warm start from the current model, optimizer state included) in
        //    mini-batches. The first epoch's predictions are made before each batch is learned:
        //    online progressive validation at batch granularity.
        let mut trained = 0u64;
        let batch = self.cfg.training.batch_size.max(1);
        let mut online = EvalMetrics::with_capacity(train_x.len());
        // Replay: past examples spread evenly among the new ones.
        let replayed = self.replay.draw(train_x.len());
        report.replayed = replayed.len() as u64;
        let (train_x, train_y, is_new) = interleave(train_x, train_y, replayed);
        // An offline evaluation without holdout keeps every candidate and compares it with
        // nothing: the model trains in place (no copy of a possibly large model per window).
        let mu = self.cfg.training.l2_to_previous;
        let in_place =
            mode == (WindowMode::Backfill {
                enforce_gate: false,
            }) && holdout_x.is_empty()
                && mu == 0.0;
        let mut copy = (!in_place).then(|| self.model.clone());
        // The pull towards the previous version needs both models: the serving one (the
        // anchor) and the candidate (then always a copy).
        let (candidate, anchor): (&mut dyn Model, Option<&Ftrl>) = match &mut copy {
            Some(c) => (
                c.as_mut(),
                (mu > 0.0)
                    .then(|| self.model.as_any().downcast_ref::<Ftrl>())
                    .flatten(),
            ),
            None => (self.model.as_mut(), None),
        };
        let decay = self.cfg.training.epoch_lr_decay;
        self.step_losses.clear();
        let mut step_loss = StepLoss::new();
        for epoch in 0..self.cfg.training.epochs {
            if decay != 1.0 {
                let scaled = self
                    .cfg
                    .model
                    .with_learning_rate_scaled(decay.powi(epoch as i32));
                set_model_params(&scaled, candidate)?;
            }
            let threads = self.cfg.training.threads;
            // Hogwild (FTRL, FM): one call per epoch over the whole window, the window cut into
            // one contiguous shard per thread; deep: data-parallel mini-batches.
            preds.clear();
            if threads > 1
                && learn_parallel(candidate, &train_x, &train_y, batch, threads, &mut preds)
            {
                if epoch == 0 {
                    add_online(&mut online, &preds, &train_y, &is_new);
                }
                // One call for the whole epoch: its points share the epoch's last step.
                let seen = candidate.examples_seen();
                for (p, y) in preds
                    .chunks(TRAIN_LOSS_EVERY)
                    .zip(train_y.chunks(TRAIN_LOSS_EVERY))
                {
                    step_loss.add(p, y, seen, &mut self.step_losses);
                }
                step_loss.flush(seen, &mut self.step_losses);
                trained += train_x.len() as u64;
                continue;
            }
            for ((xs, ys), new) in train_x
                .chunks(batch)
                .zip(train_y.chunks(batch))
                .zip(is_new.chunks(batch))
            {
                preds.clear();
                if let Some(prev) = anchor
                    && let Some(ftrl) = candidate.as_any_mut().downcast_mut::<Ftrl>()
                {
                    for (x, y) in xs.iter().zip(ys) {
                        preds.push(ftrl.learn_anchored(x, *y, prev, mu));
                    }
                } else {
                    candidate.learn_batch(xs, ys, &mut preds);
                }
                if epoch == 0 {
                    add_online(&mut online, &preds, ys, new);
                }
                step_loss.add(&preds, ys, candidate.examples_seen(), &mut self.step_losses);
                trained += xs.len() as u64;
            }
            step_loss.flush(candidate.examples_seen(), &mut self.step_losses);
        }
        if decay != 1.0 {
            set_model_params(&self.cfg.model, candidate)?;
        }
        candidate.end_window();
        report.stage("train", since);
        since = Instant::now();
        // The window's new training examples join the replay sample, committed with the cycle.
        let next_replay = if self.cfg.training.replay.capacity > 0 {
            let mut next = self.replay.clone();
            next.offer_window(
                train_x
                    .iter()
                    .zip(&train_y)
                    .zip(&is_new)
                    .filter(|(_, n)| **n)
                    .map(|((x, y), _)| (x, *y)),
            );
            Some(next)
        } else {
            None
        };
        // The window's feature vectors go back to the readers (when it was read through a
        // pipeline still running) to hold the examples to come.
        if let Some(r) = recycle {
            r.recycle(train_x);
        }
        report.trained = trained;
        if let Some(s) = sinks {
            s.online.merge(&online);
        }
        if !online.is_empty() {
            let o = online.summary();
            self.metrics
                .online_logloss
                .get_or_create(&ml)
                .set(o.logloss);
            self.metrics.online_auc.get_or_create(&ml).set(o.auc);
            report.online = Some(o);
        }
        self.metrics
            .replayed
            .get_or_create(&ml)
            .inc_by(report.replayed);
        self.metrics
            .examples_trained
            .get_or_create(&ml)
            .inc_by(trained);
        let Some(candidate) = copy else {
            if let Some(next) = next_replay {
                self.replay = next;
            }
            report.outcome = Outcome::Published;
            report.note = "trained in place (offline evaluation without holdout: no gate)".into();
            return Ok(());
        };

        // 4. Evaluate candidate and current (serving) model on the held-out slice.
        let mut eval = EvalMetrics::with_capacity(holdout_x.len());
        let mut base = EvalMetrics::with_capacity(holdout_x.len());
        for (model, metrics) in [
            (candidate.as_ref(), &mut eval),
            (self.model.as_ref(), &mut base),
        ] {
            preds.clear();
            model.predict_batch(&holdout_x, &mut preds);
            for (&p, &y) in preds.iter().zip(&holdout_y) {
                metrics.add(p, y);
            }
        }
        let evaluation = eval.summary();
        let baseline = self.state.last_version.map(|_| base.summary());
        let gate = evaluate_gate(
            &self.cfg.gate,
            &evaluation,
            baseline.as_ref(),
            candidate.is_finite(),
        );
        report.evaluation = Some(evaluation);
        report.baseline = baseline;
        report.note = gate.summary();
        tracing::info!(span = %span.id, gate = %report.note, "gate decision");

        if let Some(next) = next_replay {
            match mode {
                WindowMode::Cycle(commit) => self.stage_replay(&commit.key(), next)?,
                WindowMode::Backfill { .. } => self.replay = next,
            }
        }
        report.stage("evaluate", since);
        since = Instant::now();
        if let WindowMode::Backfill { enforce_gate } = mode {
            // Backfill: nothing is published per window; an accepted candidate becomes the model
            // (with `enforce_gate = false` every candidate is accepted).
            if gate.passed || !enforce_gate {
                self.model = candidate;
                report.outcome = Outcome::Published;
            } else {
                report.outcome = Outcome::Rejected;
            }
            report.gate = Some(gate);
            return Ok(());
        }
        let WindowMode::Cycle(commit) = mode else {
            unreachable!("backfill returned above");
        };
        if gate.passed {
            // 5. Publish: the version directory (with the watermark in its manifest) is the commit.
            let watermark = match &commit.partial {
                Some(_) => self.state.watermark.clone(),
                None => Some(commit.span.clone()),
            };
            let version = self.publish_version(
                candidate.as_ref(),
                commit
                    .merged
                    .iter()
                    .cloned()
                    .chain([commit.id.clone()])
                    .collect(),
                watermark,
                commit.partial.clone(),
                report,
                &gate,
            )?;
            self.model = candidate;
            commit.apply(&mut self.state, Some(version));
            report.outcome = Outcome::Published;
            report.version = Some(version);
            report.serving_version = Some(version);
            report.stage("publish", since);
            self.metrics
                .published_version
                .get_or_create(&ml)
                .set(version as i64);
        } else {
            report.outcome = Outcome::Rejected;
        }
        report.gate = Some(gate);
        Ok(())
    }

    /// Writes the replay store of the cycle on `span` (before the cycle's commit).
    fn stage_replay(&mut self, span: &str, next: ReplayStore) -> Result<(), TrainError> {
        if self.cfg.training.replay.capacity > 0 {
            let path = ReplayStore::path_for(&self.cfg.state.dir, Some(span));
            evergreen_registry::write_atomic(&path, &next.encode()).map_err(|e| {
                TrainError::State {
                    path: path.clone(),
                    message: format!("writing the replay store: {e}"),
                }
            })?;
        }
        self.staged_replay = Some(next);
        Ok(())
    }

    /// After the commit of the cycle on `span`: its replay store becomes current, older ones go.
    fn commit_replay(&mut self, span: &str) {
        if let Some(next) = self.staged_replay.take() {
            self.replay = next;
        }
        let keep = ReplayStore::path_for(&self.cfg.state.dir, Some(span));
        ReplayStore::remove_others(&self.cfg.state.dir, Some(&keep));
    }

    /// Writes `model` as the next version (the atomic rename is the commit) with a manifest built
    /// from `report`; returns the version number. Does not touch the in-memory state.
    fn publish_version(
        &self,
        model: &dyn Model,
        spans: Vec<String>,
        watermark: Option<String>,
        partial: Option<PartialSpan>,
        report: &CycleReport,
        gate: &GateResult,
    ) -> Result<u64, TrainError> {
        let version = self
            .registry
            .latest()?
            .unwrap_or(0)
            .max(self.state.last_version.unwrap_or(0))
            + 1;
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            model_name: self.cfg.model.name.clone(),
            version,
            parent_version: self.state.last_version,
            created_ms: now_ms(),
            model_kind: self.cfg.model.kind,
            feature_spec: self.cfg.features.clone(),
            training: self.hyperparameters(),
            spans,
            watermark,
            progressive: report.progressive,
            evaluation: report.evaluation,
            baseline: report.baseline,
            gate: Some(gate.clone()),
            code_version: self.code_version.clone(),
            files: Default::default(),
            positions: report.positions.clone(),
            partial,
        };
        let bytes = evergreen_model::save(model, self.cfg.features.fingerprint());
        let dir = self.registry.publish(manifest, &bytes)?;
        failpoint("after_publish");
        tracing::info!(version, dir = %dir.display(), "published");
        Ok(version)
    }

    /// Hyperparameters recorded in manifests and lineage.
    pub fn hyperparameters(&self) -> serde_json::Value {
        serde_json::json!({
            "model_kind": self.cfg.model.kind.name(),
            self.cfg.model.kind.name(): self.cfg.model.params_json(),
            "training": self.cfg.training,
            "gate": self.cfg.gate,
        })
    }

    fn cycle_record(
        &self,
        span: &Span,
        report: &CycleReport,
        started_ms: i64,
        finished_ms: i64,
    ) -> CycleRecord {
        let gate = match &report.gate {
            Some(g) => GateRecord {
                passed: g.passed,
                checks_json: serde_json::to_string(&g.checks).expect("checks serialize"),
                summary: report.note.clone(),
            },
            None => GateRecord {
                passed: false,
                checks_json: "[]".into(),
                summary: format!("{}: {}", report.outcome.as_str(), report.note),
            },
        };
        CycleRecord {
            model_name: self.cfg.model.name.clone(),
            span: SpanRef {
                name: span.id.clone(),
                uri: span.uri.display().to_string(),
                records: report.records,
                bad_records: report.bad.values().sum(),
            },
            parent_version: report.parent_version,
            published_version: report.version,
            model_uri: report
                .version
                .map(|v| self.registry.version_dir(v).display().to_string()),
            hyperparameters_json: self.hyperparameters().to_string(),
            code_version: self.code_version.clone(),
            progressive: metrics_record(report.progressive.as_ref()),
            evaluation: metrics_record(report.evaluation.as_ref()),
            gate,
            started_ms,
            finished_ms,
        }
    }
}

/// The lineage URI of what a cycle consumed: the span's, with `#partNNNNN` for a window of it.
fn window_uri(span_uri: &std::path::Path, span: &str, id: &str) -> String {
    match id.strip_prefix(span).and_then(|t| t.strip_prefix('.')) {
        Some(part) if !part.is_empty() => format!("{}#{part}", span_uri.display()),
        _ => span_uri.display().to_string(),
    }
}

/// Records the pre-update predictions of the new (not replayed) examples in the online metrics.
fn add_online(online: &mut EvalMetrics, preds: &[f64], ys: &[f32], new: &[bool]) {
    for ((p, y), _) in preds.iter().zip(ys).zip(new).filter(|(_, n)| **n) {
        online.add(*p, *y);
    }
}

/// Spreads `replayed` evenly among the new examples; returns the mixed columns and which rows are
/// new.
fn interleave(
    xs: Vec<FeatureVector>,
    ys: Vec<f32>,
    replayed: Vec<(FeatureVector, f32)>,
) -> (Vec<FeatureVector>, Vec<f32>, Vec<bool>) {
    if replayed.is_empty() {
        let n = xs.len();
        return (xs, ys, vec![true; n]);
    }
    let (n, r) = (xs.len(), replayed.len());
    let mut out_x = Vec::with_capacity(n + r);
    let mut out_y = Vec::with_capacity(n + r);
    let mut new = Vec::with_capacity(n + r);
    let mut rep = replayed.into_iter().enumerate().peekable();
    for (i, (x, y)) in xs.into_iter().zip(ys).enumerate() {
        // Replayed item j goes before new item floor((j + 0.5) * n / r).
        while let Some((j, _)) = rep.peek() {
            if ((*j as f64 + 0.5) * n as f64 / r as f64) as usize > i {
                break;
            }
            let (_, (rx, ry)) = rep.next().expect("peeked");
            out_x.push(rx);
            out_y.push(ry);
            new.push(false);
        }
        out_x.push(x);
        out_y.push(y);
        new.push(true);
    }
    for (_, (rx, ry)) in rep {
        out_x.push(rx);
        out_y.push(ry);
        new.push(false);
    }
    (out_x, out_y, new)
}

/// A new model of the configured kind, sized by the feature spec (hash buckets, fields).
fn fresh_model(cfg: &Config) -> Result<Box<dyn Model>, TrainError> {
    let (dim, fields) = (cfg.features.dim(), cfg.features.field_count());
    let shape = |e: evergreen_model::ShapeError| {
        TrainError::Incompatible(format!("model.{}: {e}", cfg.model.kind.name()))
    };
    Ok(match cfg.model.kind {
        ModelKind::Ftrl => Box::new(Ftrl::new(cfg.model.ftrl, dim)),
        ModelKind::Fm => Box::new(Fm::try_new(cfg.model.fm, dim, fields).map_err(shape)?),
        ModelKind::Ffm => Box::new(Ffm::try_new(cfg.model.ffm, dim, fields).map_err(shape)?),
        ModelKind::Deep => Box::new(Deep::new(cfg.model.deep.clone(), dim, fields)),
        ModelKind::Forest => Box::new(
            Forest::try_new(cfg.model.forest, cfg.features.field_kinds(), dim).map_err(shape)?,
        ),
    })
}

/// Applies the configured hyperparameters (learning rates, regularization) to a loaded model;
/// a change of shape (factors, layers, variant) is refused.
fn apply_params(cfg: &Config, model: &mut Box<dyn Model>) -> Result<(), TrainError> {
    set_model_params(&cfg.model, model.as_mut())
}

/// Learns a whole window Hogwild-style on `threads` threads when the model has a parallel path
/// (`Ftrl::learn_parallel`, `Fm::learn_parallel`), appending the pre-update predictions to
/// `preds`; false (nothing learned) for the other kinds.
fn learn_parallel(
    model: &mut dyn Model,
    xs: &[FeatureVector],
    ys: &[f32],
    batch: usize,
    threads: usize,
    preds: &mut Vec<f64>,
) -> bool {
    let any = model.as_any_mut();
    if let Some(m) = any.downcast_mut::<Ftrl>() {
        m.learn_parallel(xs, ys, threads, preds);
    } else if let Some(m) = any.downcast_mut::<Fm>() {
        m.learn_parallel(xs, ys, threads, preds);
    } else if let Some(m) = any.downcast_mut::<Deep>() {
        m.learn_parallel(xs, ys, batch, threads, preds);
    } else if let Some(m) = any.downcast_mut::<Forest>() {
        m.learn_parallel(xs, ys, threads, preds);
    } else {
        return false;
    }
    true
}

/// Sets the hyperparameters of `section` on a model of its kind.
fn set_model_params(
    section: &evergreen_config::ModelSection,
    model: &mut dyn Model,
) -> Result<(), TrainError> {
    let any = model.as_any_mut();
    let kind = section.kind.name();
    let result = if let Some(m) = any.downcast_mut::<Ftrl>() {
        m.set_params(section.ftrl);
        Ok(())
    } else if let Some(m) = any.downcast_mut::<Fm>() {
        m.set_params(section.fm)
    } else if let Some(m) = any.downcast_mut::<Ffm>() {
        m.set_params(section.ffm)
    } else if let Some(m) = any.downcast_mut::<Deep>() {
        m.set_params(section.deep.clone())
    } else if let Some(m) = any.downcast_mut::<Forest>() {
        m.set_params(section.forest).map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    result.map_err(|e| {
        TrainError::Incompatible(format!(
            "model.{kind}: {e}; the model to warm-start from was built with other settings \
             (use a new model name to start over)"
        ))
    })
}

/// Rebuilds the lineage record of a published cycle from its manifest (used when the process
/// died between publish and lineage). The span's path and bad-record count come from the data
/// directory and the quarantine file, as in a normal cycle.
fn cycle_record_from_manifest(
    m: &Manifest,
    registry: &Registry,
    spans: &SpanSource,
    quarantine: &Quarantine,
) -> CycleRecord {
    let span = m.spans.first().cloned().unwrap_or_default();
    let bad_records = std::fs::read_to_string(quarantine.path_for(&span))
        .map(|t| t.lines().count() as u64)
        .unwrap_or(0);
    let whole = match &m.partial {
        Some(p) => p.span.clone(),
        None => span
            .rsplit_once(".part")
            .filter(|(_, n)| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
            .map_or(span.clone(), |(s, _)| s.to_string()),
    };
    let uri = window_uri(&spans.dir().join(&whole), &whole, &span);
    CycleRecord {
        model_name: m.model_name.clone(),
        span: SpanRef {
            name: span.clone(),
            uri,
            records: m.progressive.map(|p| p.examples).unwrap_or(0),
            bad_records,
        },
        parent_version: m.parent_version,
        published_version: Some(m.version),
        model_uri: Some(registry.version_dir(m.version).display().to_string()),
        hyperparameters_json: m.training.to_string(),
        code_version: m.code_version.clone(),
        progressive: metrics_record(m.progressive.as_ref()),
        evaluation: metrics_record(m.evaluation.as_ref()),
        gate: GateRecord {
            passed: true,
            checks_json: m
                .gate
                .as_ref()
                .map(|g| serde_json::to_string(&g.checks).expect("checks serialize"))
                .unwrap_or_else(|| "[]".into()),
            summary: m.gate.as_ref().map(|g| g.summary()).unwrap_or_default(),
        },
        started_ms: m.created_ms,
        finished_ms: m.created_ms,
    }
}

#[cfg(test)]
mod tests;
