//! The versioned TOML config: parsed (unknown keys and bad types rejected with the key and file
//! named), then validated (cross-field rules), then relative paths resolved against the file's
//! directory. `EXAMPLE` is the commented example printed by `evergreen config example`.

use evergreen_core::FeatureSpec;
use evergreen_data::Format;
pub use evergreen_data::ReplayConfig;
use evergreen_eval::GateConfig;
use evergreen_model::{DeepParams, FfmParams, FmParams, ForestParams, FtrlParams, ModelKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The config format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// The commented example config (`evergreen config example`).
pub const EXAMPLE: &str = include_str!("example.toml");

/// A config that cannot be used. Every message names the file, and the key or line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// Config file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type (the message gives line, column and key).
    #[error("{path}: {message}")]
    Parse {
        /// Config file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value breaks a rule.
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        /// Config file.
        path: PathBuf,
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Config format version; must be 1.
    pub version: u32,
    /// The model to train.
    pub model: ModelSection,
    /// Where spans arrive.
    pub data: DataSection,
    /// The feature spec (saved inside every model version).
    pub features: FeatureSpec,
    /// Input pipeline (parallel reading and transform).
    #[serde(default)]
    pub pipeline: PipelineSection,
    /// Training settings.
    #[serde(default)]
    pub training: TrainingSection,
    /// Evaluation gate.
    #[serde(default)]
    pub gate: GateConfig,
    /// Model registry.
    pub registry: RegistrySection,
    /// Trainer state and lineage store.
    #[serde(default)]
    pub state: StateSection,
    /// Optional REST server run beside the trainer by `evergreen run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeSection>,
    /// The alert rules evaluated by the trainer itself, and their actions.
    #[serde(default)]
    pub alerts: AlertsSection,
    /// Adaptive training cadence (off by default: a cycle per span as soon as it is ready).
    #[serde(default)]
    pub cadence: CadenceSection,
}

/// `[cadence]`: train less often while the data is stable, more often (down to a floor) when
/// drift is detected. With `max_interval_s > 0`, after a cycle without drift the wait before
/// the next one grows (× `growth`, from `min_interval_s` or 1 s, up to `max_interval_s`); a
/// cycle that detects drift brings it back to `min_interval_s`. Spans that become ready while
/// waiting are trained together in one cycle (at most `max_spans_per_cycle`; reaching that
/// many ends the wait), so a stable stream costs fewer cycles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CadenceSection {
    /// The floor: the wait after a cycle that detected drift, in seconds.
    #[serde(default)]
    pub min_interval_s: f64,
    /// The ceiling of the wait while stable, in seconds; 0 turns the adaptive cadence off.
    #[serde(default)]
    pub max_interval_s: f64,
    /// Factor by which the wait grows after each cycle without drift.
    #[serde(default = "default_growth")]
    pub growth: f64,
    /// Spans trained together in one cycle at most.
    #[serde(default = "default_max_spans")]
    pub max_spans_per_cycle: usize,
}

fn default_growth() -> f64 {
    2.0
}
fn default_max_spans() -> usize {
    16
}

impl Default for CadenceSection {
    fn default() -> Self {
        Self {
            min_interval_s: 0.0,
            max_interval_s: 0.0,
            growth: default_growth(),
            max_spans_per_cycle: default_max_spans(),
        }
    }
}

impl CadenceSection {
    /// Whether the cadence adapts (`max_interval_s > 0`).
    pub fn adaptive(&self) -> bool {
        self.max_interval_s > 0.0
    }
}

/// The alerts the trainer evaluates after every cycle (the rules of
/// `deploy/prometheus/alerts.yml` that concern training, counted in cycles instead of minutes).
pub const ALERT_NAMES: [&str; 8] = [
    "EvergreenValidationAccuracyDropping",
    "EvergreenGradientVanishing",
    "EvergreenTrainerUnderutilized",
    "EvergreenDataLag",
    "EvergreenHighQuarantineRate",
    "EvergreenGateRejectionsInARow",
    "EvergreenConceptDrift",
    "EvergreenFeatureDrift",
];

/// What the trainer does when one of its alerts fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    /// Roll the serving version back (as `models rollback`; once per firing).
    Rollback,
    /// Pause publication: no further cycle until an operator resumes it (`models resume`).
    PausePublication,
    /// Raise the training frequency: the adaptive cadence's wait goes back to its floor.
    RaiseFrequency,
}

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// Evaluate the alert rules after every cycle (logged, exported as
    /// `evergreen_alerts_firing`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Actions by alert name (one of [`ALERT_NAMES`]), taken when the alert starts firing.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub actions: std::collections::BTreeMap<String, AlertAction>,
}

fn yes() -> bool {
    true
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            actions: Default::default(),
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model name (registry directory and serving name).
    pub name: String,
    /// Model kind.
    #[serde(default = "default_kind")]
    pub kind: ModelKind,
    /// FTRL hyperparameters (`kind = "ftrl"`).
    #[serde(default)]
    pub ftrl: FtrlParams,
    /// Factorization machine hyperparameters (`kind = "fm"`).
    #[serde(default)]
    pub fm: FmParams,
    /// Field-aware factorization machine hyperparameters (`kind = "ffm"`).
    #[serde(default)]
    pub ffm: FfmParams,
    /// Deep CTR model hyperparameters (`kind = "deep"`: Wide&Deep, DeepFM or DCN-v2).
    #[serde(default)]
    pub deep: DeepParams,
    /// Adaptive random forest hyperparameters (`kind = "forest"`; needs
    /// `features.representation = "raw"`).
    #[serde(default)]
    pub forest: ForestParams,
}

impl ModelSection {
    /// This section with every learning rate (FTRL `alpha`, FM/FFM `lr`, deep `lr`,
    /// `embedding_lr` and wide `alpha`) multiplied by `factor` (the per-epoch schedule).
    pub fn with_learning_rate_scaled(&self, factor: f64) -> ModelSection {
        let mut m = self.clone();
        m.ftrl.alpha *= factor;
        m.fm.lr *= factor;
        m.ffm.lr *= factor;
        m.deep.lr *= factor;
        m.deep.embedding_lr *= factor;
        m.deep.wide.alpha *= factor;
        m
    }

    /// The hyperparameters of the configured kind, as recorded in manifests and lineage.
    pub fn params_json(&self) -> serde_json::Value {
        let v = match self.kind {
            ModelKind::Ftrl => serde_json::to_value(self.ftrl),
            ModelKind::Fm => serde_json::to_value(self.fm),
            ModelKind::Ffm => serde_json::to_value(self.ffm),
            ModelKind::Deep => serde_json::to_value(&self.deep),
            ModelKind::Forest => serde_json::to_value(self.forest),
        };
        v.expect("params serialize")
    }
}

fn default_kind() -> ModelKind {
    ModelKind::Ftrl
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Directory watched for spans.
    pub dir: PathBuf,
    /// Force a format instead of inferring it from the extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// TFX-style span pattern relative to `dir` (`{SPAN}`, `{VERSION}`, `{YYYY}{MM}{DD}`, `*`,
    /// `?`; e.g. `span-{SPAN}/v{VERSION}/*.tfrecord.gz`). Without it every file of `dir` is a
    /// span, taken in name order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Take a span only once `<span>.ready` exists.
    #[serde(default)]
    pub ready_marker: bool,
    /// Check the CRC32C of every TFRecord length and payload (recommended; off trades
    /// corruption detection for speed).
    #[serde(default = "default_true")]
    pub verify_checksums: bool,
    /// A span with a larger fraction of bad records is held back (not trained).
    #[serde(default = "default_bad_fraction")]
    pub max_bad_fraction: f64,
    /// Where bad records go (default: `<state.dir>/quarantine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_dir: Option<PathBuf>,
    /// How often the directory is listed when idle.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// 0: a span is one cycle. Otherwise a span is cut into windows of about this many records
    /// (good and bad; a window ends at the end of a pipeline chunk), each trained, gated and
    /// committed with its source positions, so a restart resumes inside the span.
    #[serde(default)]
    pub window_records: u64,
}

fn default_bad_fraction() -> f64 {
    0.1
}
fn default_poll_ms() -> u64 {
    500
}

/// `[pipeline]`: how spans are read (see `evergreen_data::pipeline`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Shards read in parallel (tf.data's `cycle_length`); 0 = auto (the cores, at most 8).
    #[serde(default)]
    pub cycle_length: usize,
    /// Extra transform threads; 0 = auto (none up to 8 cores: readers transform their own
    /// chunks, and threads left idle by a span with fewer shards than readers transform).
    #[serde(default)]
    pub workers: usize,
    /// Records per chunk handed between threads.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    /// Chunks buffered between stages (prefetch depth).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Deliver examples in a deterministic order (a retried span trains identically). Turning
    /// it off delivers examples as soon as they are ready.
    #[serde(default = "default_true")]
    pub ordered: bool,
}

fn default_chunk() -> usize {
    256
}
fn default_queue() -> usize {
    8
}
fn default_true() -> bool {
    true
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            cycle_length: 0,
            workers: 0,
            chunk: default_chunk(),
            queue: default_queue(),
            ordered: true,
        }
    }
}

impl PipelineSection {
    /// The pipeline options these settings give on this machine.
    pub fn options(&self) -> evergreen_data::pipeline::PipelineOptions {
        let d = evergreen_data::pipeline::PipelineOptions::default();
        evergreen_data::pipeline::PipelineOptions {
            cycle_length: if self.cycle_length == 0 {
                d.cycle_length
            } else {
                self.cycle_length
            },
            workers: if self.workers == 0 {
                d.workers
            } else {
                self.workers
            },
            batch_size: d.batch_size,
            chunk: self.chunk,
            queue: self.queue,
            ordered: self.ordered,
            read: evergreen_data::ReadOptions::default(),
        }
    }
}

/// `[training]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSection {
    /// Passes over each span.
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    /// Fraction of each span held out for the gate (chosen by a hash of the record position).
    #[serde(default = "default_holdout")]
    pub holdout_fraction: f64,
    /// Seed of the holdout split.
    #[serde(default)]
    pub seed: u64,
    /// Mini-batch size: examples predicted (online progressive validation) and then learned
    /// together. Models without dense parts (FTRL, FM, FFM) learn example by example within a
    /// batch, so for them it only sets the granularity of the online metrics.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Training threads: with more than 1, FTRL and FM learn each epoch of a window
    /// Hogwild-style (lock-free shared updates, the window cut into one contiguous shard per
    /// thread; not deterministic), and deep models split each mini-batch into one part per
    /// thread (data-parallel; deterministic for a given count), and a forest's trees are
    /// split among the threads (deterministic whatever the count). 1 (default) is
    /// deterministic. FFM takes only 1.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// L2 pull towards the serving model's weights while a window trains (FTRL only): each
    /// touched coordinate's gradient gains `l2_to_previous · (w − w_previous)`, keeping the
    /// candidate close to what already worked (a regularizer against forgetting). 0 = off.
    #[serde(default)]
    pub l2_to_previous: f64,
    /// Learning-rate schedule within a window: epoch `e` (from 0) trains with every learning
    /// rate of the model multiplied by `epoch_lr_decay^e` (1 = constant).
    #[serde(default = "default_decay")]
    pub epoch_lr_decay: f64,
    /// Replay of past examples against forgetting (off unless `capacity > 0`).
    #[serde(default)]
    pub replay: ReplayConfig,
}

fn default_threads() -> usize {
    1
}

fn default_decay() -> f64 {
    1.0
}

fn default_batch() -> usize {
    32
}

fn default_epochs() -> u32 {
    1
}
fn default_holdout() -> f64 {
    0.2
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            holdout_fraction: default_holdout(),
            seed: 0,
            batch_size: default_batch(),
            epoch_lr_decay: default_decay(),
            l2_to_previous: 0.0,
            threads: default_threads(),
            replay: ReplayConfig::default(),
        }
    }
}

/// `[registry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// Base path; versions go to `<base_path>/<model.name>/<version>/`.
    pub base_path: PathBuf,
    /// Retention after each publish keeps the newest N versions, plus the versions the trainer
    /// protects (the one it has just published) and every version named in `labels.json`;
    /// every other version is removed.
    #[serde(default = "default_keep")]
    pub keep_versions: usize,
}

fn default_keep() -> usize {
    5
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// Trainer state directory (watermark, quarantine).
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// Lineage store (SQLite, ML Metadata schema); default `<state.dir>/lineage.sqlite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<PathBuf>,
    /// TensorBoard run directory: each training process writes an event file there with every
    /// cycle's metrics and gate decision (`tensorboard --logdir` it); none: not written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensorboard_dir: Option<PathBuf>,
    /// Performance trace directory: each training process writes a Chrome/Perfetto trace
    /// (JSON) there with every cycle's stages; none: not written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_dir: Option<PathBuf>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

impl Default for StateSection {
    fn default() -> Self {
        Self {
            dir: default_state_dir(),
            lineage: None,
            tensorboard_dir: None,
            trace_dir: None,
        }
    }
}

/// `[serve]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// REST port (TensorFlow Serving's `--rest_api_port`); 0 picks a free port.
    pub rest_api_port: u16,
    /// Address to bind: an IP address literal (IPv4 or IPv6, without brackets or port),
    /// checked by validation.
    #[serde(default = "default_host")]
    pub host: String,
    /// Largest accepted request body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// gRPC port (TensorFlow Serving's `--port`: PredictionService and ModelService); none: no
    /// gRPC server. 0 picks a free port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_port: Option<u16>,
    /// File holding the admin API's bearer token (else the `EVERGREEN_ADMIN_TOKEN` environment
    /// variable; with neither, the admin API is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}

impl ServeSection {
    /// The socket address to bind, `host` and `rest_api_port`. Built from the parsed IP address
    /// rather than from the text `host:port`, so that an IPv6 host such as `::1` works too.
    /// Fails only for a `host` that validation would have rejected.
    pub fn socket_addr(&self) -> Result<std::net::SocketAddr, std::net::AddrParseError> {
        let ip: std::net::IpAddr = self.host.parse()?;
        Ok(std::net::SocketAddr::new(ip, self.rest_api_port))
    }
}
fn default_max_body() -> usize {
    4 << 20
}

/// Applies one `a.b.c=value` override to a parsed TOML document.
fn apply_override(doc: &mut toml::Table, o: &str) -> Result<(), (String, String)> {
    let Some((key, value)) = o.split_once('=') else {
        return Err((o.to_string(), "override must be key=value".into()));
    };
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err((key.to_string(), "empty key segment".into()));
    }
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let (last, path) = parts.split_last().expect("split yields one part");
    let mut table = doc;
    for (i, p) in path.iter().enumerate() {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err((
                    parts[..=i].join("."),
                    "is not a table, cannot set a key under it".into(),
                ));
            }
        };
    }
    table.insert(last.to_string(), parsed);
    Ok(())
}

impl Config {
    /// Reads, parses, validates and resolves a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// Like [`Config::load`], with `key=value` overrides applied to the file's TOML before it
    /// is validated (`model.kind=fm`, `training.epochs=1`, `features.hash_bits=20`). The value is
    /// read as a TOML value (`1`, `0.5`, `true`, `"text"`, `[1, 2]`) and, when it is not one,
    /// as a string; tables along the key are created as needed.
    pub fn load_with_overrides(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut doc: toml::Table =
            toml::from_str(&text).map_err(|e| parse_err(e.to_string().trim_end().to_string()))?;
        for o in overrides {
            apply_override(&mut doc, o).map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            })?;
        }
        let mut cfg: Config = doc
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string().trim_end().to_string()))?;
        cfg.validate(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let c = &self.cadence;
        if !(c.min_interval_s >= 0.0 && c.min_interval_s.is_finite()) {
            return Err(invalid(
                "cadence.min_interval_s",
                "must be a finite number of seconds >= 0".into(),
            ));
        }
        if !(c.max_interval_s >= 0.0 && c.max_interval_s.is_finite())
            || (c.adaptive() && c.max_interval_s < c.min_interval_s)
        {
            return Err(invalid(
                "cadence.max_interval_s",
                "must be a finite number of seconds, 0 (off) or >= min_interval_s".into(),
            ));
        }
        if !(c.growth >= 1.0 && c.growth.is_finite()) {
            return Err(invalid("cadence.growth", "must be >= 1".into()));
        }
        if c.max_spans_per_cycle == 0 || c.max_spans_per_cycle > 1024 {
            return Err(invalid(
                "cadence.max_spans_per_cycle",
                "must be between 1 and 1024".into(),
            ));
        }
        for name in self.alerts.actions.keys() {
            if !ALERT_NAMES.contains(&name.as_str()) {
                return Err(invalid(
                    "alerts.actions",
                    format!("unknown alert {name:?}; known: {}", ALERT_NAMES.join(", ")),
                ));
            }
        }
        if self.version != CONFIG_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "this build reads config version {CONFIG_VERSION}, the file says {}",
                    self.version
                ),
            ));
        }
        let name = &self.model.name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            || name.starts_with('.')
        {
            return Err(invalid(
                "model.name",
                format!("{name:?} must be non-empty and use only letters, digits, '_', '-', '.'"),
            ));
        }
        if let Err((k, m)) = self.model.ftrl.validate() {
            return Err(invalid(&format!("model.ftrl.{k}"), m));
        }
        if let Err((k, m)) = self.model.fm.validate() {
            return Err(invalid(&format!("model.fm.{k}"), m));
        }
        if let Err((k, m)) = self.model.ffm.validate() {
            return Err(invalid(&format!("model.ffm.{k}"), m));
        }
        if let Err((k, m)) = self.model.deep.validate() {
            return Err(invalid(&format!("model.deep.{k}"), m));
        }
        if let Err(evergreen_model::ShapeError::Param(k, m)) = self.model.forest.validate() {
            return Err(invalid(&format!("model.forest.{k}"), m));
        }
        let raw = self.features.representation == evergreen_core::Representation::Raw;
        if raw != (self.model.kind == ModelKind::Forest) {
            return Err(invalid(
                "features.representation",
                if raw {
                    format!(
                        "\"raw\" features are for kind \"forest\"; kind {:?} consumes hashed \
                         features (remove the key)",
                        self.model.kind.name()
                    )
                } else {
                    "kind \"forest\" consumes raw features: set features.representation = \
                     \"raw\" (numeric values and category ids, no crosses or buckets)"
                        .into()
                },
            ));
        }
        self.features
            .validate("features")
            .map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: e.key,
                message: e.message,
            })?;
        if !(0.0..=1.0).contains(&self.data.max_bad_fraction) {
            return Err(invalid(
                "data.max_bad_fraction",
                format!(
                    "must be between 0 and 1 (got {})",
                    self.data.max_bad_fraction
                ),
            ));
        }
        if self.data.window_records > 0 && !self.pipeline.ordered {
            return Err(invalid(
                "data.window_records",
                "windows inside a span need pipeline.ordered = true (a resumed read must know \
                 which records came before)"
                    .into(),
            ));
        }
        if let Some(p) = &self.data.pattern
            && let Err(e) = evergreen_data::SpanPattern::parse(p, Path::new("."))
        {
            return Err(invalid("data.pattern", e.to_string()));
        }
        for (key, v, max) in [
            ("pipeline.cycle_length", self.pipeline.cycle_length, 64),
            ("pipeline.workers", self.pipeline.workers, 256),
        ] {
            if v > max {
                return Err(invalid(
                    key,
                    format!("must be at most {max} (got {v}; 0 = auto)"),
                ));
            }
        }
        for (key, v) in [
            ("pipeline.chunk", self.pipeline.chunk),
            ("pipeline.queue", self.pipeline.queue),
        ] {
            if v == 0 || v > 1 << 20 {
                return Err(invalid(
                    key,
                    format!("must be between 1 and {} (got {v})", 1 << 20),
                ));
            }
        }
        if self.data.poll_interval_ms == 0 {
            return Err(invalid("data.poll_interval_ms", "must be > 0".into()));
        }
        if self.training.epochs == 0 || self.training.epochs > 1000 {
            return Err(invalid(
                "training.epochs",
                "must be between 1 and 1000".into(),
            ));
        }
        if self.training.threads == 0 || self.training.threads > 64 {
            return Err(invalid(
                "training.threads",
                format!("must be between 1 and 64 (got {})", self.training.threads),
            ));
        }
        if self.training.threads > 1
            && !matches!(
                self.model.kind,
                ModelKind::Ftrl | ModelKind::Fm | ModelKind::Deep | ModelKind::Forest
            )
        {
            return Err(invalid(
                "training.threads",
                format!(
                    "parallel training is implemented for kinds \"ftrl\", \"fm\", \"deep\" \
                     and \"forest\" only (kind is {:?})",
                    self.model.kind.name()
                ),
            ));
        }
        let mu = self.training.l2_to_previous;
        if !(mu.is_finite() && mu >= 0.0) {
            return Err(invalid(
                "training.l2_to_previous",
                format!("must be >= 0 (got {mu})"),
            ));
        }
        if mu > 0.0 && self.training.threads > 1 {
            return Err(invalid(
                "training.l2_to_previous",
                "cannot be combined with training.threads > 1 (parallel training has no pull)"
                    .into(),
            ));
        }
        if mu > 0.0 && self.model.kind != ModelKind::Ftrl {
            return Err(invalid(
                "training.l2_to_previous",
                format!(
                    "the pull towards the previous version is implemented for kind \"ftrl\" only \
                     (kind is {:?})",
                    self.model.kind.name()
                ),
            ));
        }
        let d = self.training.epoch_lr_decay;
        if !(d.is_finite() && d > 0.0 && d <= 1.0) {
            return Err(invalid(
                "training.epoch_lr_decay",
                format!("must be > 0 and <= 1 (got {d})"),
            ));
        }
        if let Err((k, m)) = self.training.replay.validate() {
            return Err(invalid(&format!("training.replay.{k}"), m));
        }
        if self.training.batch_size == 0 || self.training.batch_size > 1 << 16 {
            return Err(invalid(
                "training.batch_size",
                format!(
                    "must be between 1 and 65536 (got {})",
                    self.training.batch_size
                ),
            ));
        }
        let h = self.training.holdout_fraction;
        if !(0.0..1.0).contains(&h) {
            return Err(invalid(
                "training.holdout_fraction",
                format!("must be >= 0 and < 1 (got {h}; 0 leaves the gate no examples)"),
            ));
        }
        if let Err((k, m)) = self.gate.validate() {
            return Err(invalid(&format!("gate.{k}"), m));
        }
        if self.registry.keep_versions == 0 {
            return Err(invalid("registry.keep_versions", "must be >= 1".into()));
        }
        if let Some(s) = &self.serve {
            if s.host.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    "serve.host",
                    format!(
                        "{:?} is not an IP address: expected an IP address literal such as \
                         \"127.0.0.1\", \"0.0.0.0\" or \"::1\" (not a host name)",
                        s.host
                    ),
                ));
            }
            if s.max_body_bytes < 1024 {
                return Err(invalid("serve.max_body_bytes", "must be >= 1024".into()));
            }
        }
        Ok(())
    }

    /// Makes every relative path relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data.dir);
        if let Some(q) = &mut self.data.quarantine_dir {
            fix(q);
        }
        fix(&mut self.registry.base_path);
        fix(&mut self.state.dir);
        for p in [
            &mut self.state.lineage,
            &mut self.state.tensorboard_dir,
            &mut self.state.trace_dir,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }

    /// Directory of this model's versions.
    pub fn model_dir(&self) -> PathBuf {
        self.registry.base_path.join(&self.model.name)
    }

    /// Lineage store path.
    pub fn lineage_path(&self) -> PathBuf {
        self.state
            .lineage
            .clone()
            .unwrap_or_else(|| self.state.dir.join("lineage.sqlite"))
    }

    /// Quarantine directory.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.data
            .quarantine_dir
            .clone()
            .unwrap_or_else(|| self.state.dir.join("quarantine"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("conf/evergreen.toml"))
    }

    #[test]
    fn example_parses_and_validates() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.model.name, "elec2");
        assert_eq!(c.features.label.column, "class");
    }

    #[test]
    fn unknown_key_is_named_with_file() {
        let text = EXAMPLE.replace("epochs = 3", "epochs = 3\nepochz = 2");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("conf/evergreen.toml"), "{e}");
        assert!(e.contains("epochz"), "{e}");
    }

    #[test]
    fn bad_type_is_named() {
        let text = EXAMPLE.replace("epochs = 3", "epochs = \"one\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("epochs"), "{e}");
        assert!(e.contains("conf/evergreen.toml"), "{e}");
    }

    #[test]
    fn missing_label_column_is_named() {
        let text = EXAMPLE.replace("label = { column = \"class\" }", "");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("label"), "{e}");
        let text = EXAMPLE.replace("column = \"class\"", "column = \"\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("features.label.column"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        for (from, to, key) in [
            (
                "holdout_fraction = 0.2",
                "holdout_fraction = 1.5",
                "training.holdout_fraction",
            ),
            ("version = 1", "version = 7", "version"),
            ("name = \"elec2\"", "name = \"../x\"", "model.name"),
            ("alpha = 1.0", "alpha = -1.0", "model.ftrl.alpha"),
            ("epochs = 3", "epochs = 3\nthreads = 0", "training.threads"),
            (
                "epochs = 3",
                "epochs = 3\nepoch_lr_decay = 1.5",
                "training.epoch_lr_decay",
            ),
            (
                "epochs = 3",
                "epochs = 3\nbatch_size = 0",
                "training.batch_size",
            ),
            (
                "max_auc_drop = 0.01",
                "max_auc_drop = -0.5",
                "gate.max_auc_drop",
            ),
        ] {
            assert!(EXAMPLE.contains(from), "example lacks {from}");
            let e = parse(&EXAMPLE.replace(from, to)).unwrap_err();
            match e {
                ConfigError::Invalid { key: k, .. } => assert_eq!(k, key),
                other => panic!("{from}: expected Invalid, got {other}"),
            }
        }
        // The forest takes raw features, and only it does.
        let forest = EXAMPLE.replace("kind = \"ftrl\"", "kind = \"forest\"");
        for (text, needle) in [
            (forest.clone(), "consumes raw features"),
            (
                EXAMPLE.replace("[features]", "[features]\nrepresentation = \"raw\""),
                "are for kind \"forest\"",
            ),
        ] {
            match parse(&text).unwrap_err() {
                ConfigError::Invalid { key, message, .. } => {
                    assert_eq!(key, "features.representation");
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("expected Invalid, got {other}"),
            }
        }
        // Parallel training exists for FTRL, FM and deep models only.
        let threads2 = EXAMPLE.replace("epochs = 3", "epochs = 3\nthreads = 2");
        assert!(parse(&threads2).is_ok());
        assert!(parse(&threads2.replace("kind = \"ftrl\"", "kind = \"fm\"")).is_ok());
        assert!(parse(&threads2.replace("kind = \"ftrl\"", "kind = \"deep\"")).is_ok());
        assert!(parse(&EXAMPLE.replace("kind = \"ftrl\"", "kind = \"ffm\"")).is_ok());
        match parse(&threads2.replace("kind = \"ftrl\"", "kind = \"ffm\"")).unwrap_err() {
            ConfigError::Invalid { key, message, .. } => {
                assert_eq!(key, "training.threads");
                assert!(message.contains("\"deep\" and \"forest\""), "{message}");
            }
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn serve_host_must_be_an_ip_address() {
        for bad in ["localhost", "", "127.0.0.1:8501", "[::1]", "256.0.0.1"] {
            let text = EXAMPLE.replace("host = \"127.0.0.1\"", &format!("host = {bad:?}"));
            match parse(&text).unwrap_err() {
                ConfigError::Invalid { key, message, .. } => {
                    assert_eq!(key, "serve.host", "{bad}");
                    assert!(message.contains(&format!("{bad:?}")), "{message}");
                    assert!(message.contains("IP address"), "{message}");
                }
                other => panic!("{bad}: expected Invalid, got {other}"),
            }
        }
        for good in ["0.0.0.0", "::1", "::"] {
            let text = EXAMPLE.replace("host = \"127.0.0.1\"", &format!("host = {good:?}"));
            let c = parse(&text).unwrap();
            let addr = c.serve.unwrap().socket_addr().unwrap();
            assert_eq!(addr.ip().to_string(), good);
            assert_eq!(addr.port(), 8501);
        }
    }

    #[test]
    fn gate_defaults_apply_inside_a_gate_table() {
        let text = EXAMPLE
            .replace("max_auc_drop = 0.01", "")
            .replace("max_logloss_increase = 0.01", "");
        let c = parse(&text).unwrap();
        assert_eq!(c.gate.max_auc_drop, Some(0.01));
        assert_eq!(c.gate.max_logloss_increase, Some(0.01));
        assert_eq!(c.gate.min_auc, Some(0.55));
    }

    #[test]
    fn label_negative_without_positive_is_named() {
        let text = EXAMPLE.replace(
            "label = { column = \"class\" }",
            "label = { column = \"class\", negative = [\"DOWN\"] }",
        );
        match parse(&text).unwrap_err() {
            ConfigError::Invalid { key, .. } => assert_eq!(key, "features.label.negative"),
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, EXAMPLE).unwrap();
        let c = Config::load(&p).unwrap();
        assert!(c.data.dir.starts_with(d.path()));
        assert!(c.model_dir().starts_with(d.path()));
    }

    #[test]
    fn overrides_apply_before_validation() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let c = Config::load_with_overrides(
            &path,
            &[
                "training.epochs=2".into(),
                "model.ftrl.alpha = 0.25".into(),
                "registry.base_path=/tmp/x y".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.training.epochs, 2);
        assert_eq!(c.model.ftrl.alpha, 0.25);
        assert_eq!(c.registry.base_path, PathBuf::from("/tmp/x y"));
        for (o, key) in [
            ("training.epochs=0", "training.epochs"),
            ("model.name.x=1", "model.name"),
            ("nokey", "nokey"),
        ] {
            match Config::load_with_overrides(&path, &[o.into()]) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{o}"),
                other => panic!("{o}: {other:?}"),
            }
        }
        assert!(matches!(
            Config::load_with_overrides(&path, &["training.bogus=1".into()]),
            Err(ConfigError::Parse { .. })
        ));
        assert_eq!(c.lineage_path(), c.state.dir.join("lineage.sqlite"));
    }
}
