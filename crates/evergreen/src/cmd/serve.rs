//! `evergreen serve`: TensorFlow-Serving-compatible REST over an existing registry, no training.
//! Flag names follow `tensorflow_model_server`.

use super::{Stop, init_logging, runtime};
use anyhow::{Context, Result, bail};
use clap::Args;
use evergreen_lineage::{AdminActionRecord, LineageStore};
use evergreen_metrics::Metrics;
use evergreen_serve::{
    AdminAction, AdminAudit, AdminOptions, ModelMapping, ModelSource, ServeOptions,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `serve` (TensorFlow Serving's flag names).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// REST port (0 picks a free one; the address is printed).
    #[arg(long = "rest_api_port", default_value_t = 8501)]
    pub rest_api_port: u16,
    /// gRPC port (TensorFlow Serving's PredictionService and ModelService; 0 picks a free
    /// one). Without it no gRPC server runs.
    #[arg(long = "port")]
    pub port: Option<u16>,
    /// Address the REST server binds.
    #[arg(long = "rest_api_host", default_value = "127.0.0.1")]
    pub rest_api_host: String,
    /// Name the model is served under.
    #[arg(long = "model_name", required_unless_present = "model_config_file")]
    pub model_name: Option<String>,
    /// Directory holding the numbered version directories.
    #[arg(
        long = "model_base_path",
        required_unless_present = "model_config_file"
    )]
    pub model_base_path: Option<PathBuf>,
    /// TensorFlow Serving's model server config (text-format `ModelServerConfig`): several
    /// models, each with its base path, version policy and labels. Read at start, and again
    /// every `--model_config_file_poll_wait_seconds` when that is set.
    #[arg(long = "model_config_file", conflicts_with_all = ["model_name", "model_base_path"])]
    pub model_config_file: Option<PathBuf>,
    /// Re-read `--model_config_file` this often, in seconds, and apply what changed (models
    /// added, removed, or with another base path, version policy or labels), as TF Serving
    /// does; 0 (default) reads it once. A file that no longer parses is reported and the
    /// models served stay as they are.
    #[arg(long = "model_config_file_poll_wait_seconds", default_value_t = 0)]
    pub model_config_file_poll_wait_seconds: u64,
    /// How often the base path is checked for new versions, in seconds (TF Serving's default is
    /// 1; evergreen's 0.2 keeps publish-to-serve under a second).
    #[arg(long = "file_system_poll_wait_seconds", default_value_t = 0.2)]
    pub file_system_poll_wait_seconds: f64,
    /// Version policy "latest N": serve the newest N versions.
    #[arg(long = "num_versions", default_value_t = 1)]
    pub num_versions: usize,
    /// Largest accepted request body in bytes.
    #[arg(long = "max_body_bytes", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// File holding the admin API's bearer token (else `EVERGREEN_ADMIN_TOKEN`; with neither,
    /// the admin API is off).
    #[arg(long = "admin_token_file")]
    pub admin_token_file: Option<PathBuf>,
    /// Lineage store (SQLite) admin actions are recorded in; required with an admin token.
    #[arg(long = "lineage_db")]
    pub lineage_db: Option<PathBuf>,
    /// Longest a REST request may take, in milliseconds (TF Serving's
    /// `--rest_api_timeout_in_ms`); slower ones get 408.
    #[arg(long = "rest_api_timeout_in_ms", default_value_t = 30_000)]
    pub rest_api_timeout_in_ms: u64,
    /// Server-side request batching: requests arriving close together are scored as one batch
    /// (TF Serving's flag; see `--batching_parameters_file`).
    #[arg(long = "enable_batching", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_batching: bool,
    /// Text-format `BatchingParameters` (max_batch_size, batch_timeout_micros,
    /// max_enqueued_batches, num_batch_threads); without it, TF Serving's defaults.
    #[arg(long = "batching_parameters_file")]
    pub batching_parameters_file: Option<PathBuf>,
    /// Batch only the versions whose directory has a `batching_params.pbtxt`, with the
    /// parameters in it (TF Serving's flag; needs --enable_batching).
    #[arg(long = "enable_per_model_batching_parameters", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_per_model_batching_parameters: bool,
    /// Serve FTRL models mapped from a private copy of their file instead of decoded into
    /// memory: only the pages requests touch are resident, and a hot swap does not hold two
    /// decoded models (other kinds are always read into memory).
    #[arg(long = "map_models", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub map_models: bool,
    /// Where the private copies of mapped models are made (unnamed files, gone when the
    /// version is unloaded); default: the version's own directory.
    #[arg(long = "map_models_dir")]
    pub map_models_dir: Option<PathBuf>,
    /// Online feedback: answers carry a prediction id, labels sent back to
    /// `/admin/v1/models/<m>:feedback` (admin token) give live metrics per version.
    #[arg(long = "enable_feedback", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_feedback: bool,
    /// How long a prediction waits for its label.
    #[arg(long = "feedback_window_seconds", default_value_t = 600)]
    pub feedback_window_seconds: u64,
    /// Judge a canary that gets traffic by its live logloss against stable's: roll it back
    /// when worse by more than --canary_max_logloss_increase, promote it when at least as good
    /// (needs --enable_feedback).
    #[arg(long = "canary_verdicts", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub canary_verdicts: bool,
    /// Labelled predictions each of canary and stable needs before a verdict.
    #[arg(long = "canary_min_examples", default_value_t = 500)]
    pub canary_min_examples: usize,
    /// Tolerance of the canary's live logloss over stable's before it is rolled back.
    #[arg(long = "canary_max_logloss_increase", default_value_t = 0.01)]
    pub canary_max_logloss_increase: f64,
    /// Promote a canary at least as good as stable (else only rollbacks are automatic).
    #[arg(long = "canary_auto_promote", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub canary_auto_promote: bool,
}

/// The feedback settings of `serve`'s flags (`None`: off).
fn feedback_options(a: &ServeArgs) -> Result<Option<evergreen_serve::feedback::FeedbackOptions>> {
    if !a.enable_feedback {
        if a.canary_verdicts {
            bail!("--canary_verdicts needs --enable_feedback");
        }
        return Ok(None);
    }
    if !(a.canary_max_logloss_increase >= 0.0 && a.canary_max_logloss_increase.is_finite()) {
        bail!("--canary_max_logloss_increase must be a finite number >= 0");
    }
    Ok(Some(evergreen_serve::feedback::FeedbackOptions {
        window: Duration::from_secs(a.feedback_window_seconds.max(1)),
        canary: a
            .canary_verdicts
            .then_some(evergreen_serve::feedback::CanaryPolicy {
                min_examples: a.canary_min_examples.max(1),
                max_logloss_increase: a.canary_max_logloss_increase,
                promote: a.canary_auto_promote,
            }),
        ..Default::default()
    }))
}

/// The batching settings of `serve`'s flags (`None`: batching off).
fn batching(a: &ServeArgs) -> Result<Option<evergreen_serve::Batching>> {
    if !a.enable_batching {
        if a.batching_parameters_file.is_some() || a.enable_per_model_batching_parameters {
            bail!(
                "--batching_parameters_file and --enable_per_model_batching_parameters need --enable_batching"
            );
        }
        return Ok(None);
    }
    let params = match &a.batching_parameters_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading --batching_parameters_file {}", f.display()))?;
            evergreen_serve::parse_batching_parameters(&text)
                .map_err(|e| anyhow::anyhow!("--batching_parameters_file {}: {e}", f.display()))?
        }
        None => evergreen_serve::BatchingParameters::default(),
    };
    Ok(Some(evergreen_serve::Batching {
        params,
        per_model: a.enable_per_model_batching_parameters,
    }))
}

/// Environment variable holding the admin token when no token file is given.
pub const ADMIN_TOKEN_ENV: &str = "EVERGREEN_ADMIN_TOKEN";

/// The admin API settings: the token from `token_file` or [`ADMIN_TOKEN_ENV`] (none: the API is
/// off), recorded in `lineage`.
pub fn admin_options(
    token_file: Option<&Path>,
    lineage: Option<PathBuf>,
) -> Result<Option<AdminOptions>> {
    let token = match token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the admin token file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_string()),
    };
    let Some(token) = token else {
        return Ok(None);
    };
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "the admin token must be at least 16 characters without whitespace ({})",
            token_file.map_or(ADMIN_TOKEN_ENV.to_string(), |p| p.display().to_string())
        );
    }
    let Some(lineage) = lineage else {
        bail!("an admin token needs a lineage store to record admin actions in: give --lineage_db");
    };
    if let Some(parent) = lineage.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(Some(AdminOptions {
        token,
        audit: Arc::new(LineageAudit(lineage)),
    }))
}

/// Records admin actions in the lineage store (opened per action: actions are rare).
struct LineageAudit(PathBuf);

impl AdminAudit for LineageAudit {
    fn record(&self, a: &AdminAction) -> Result<(), String> {
        let record = AdminActionRecord {
            model_name: a.model.clone(),
            action: a.action.clone(),
            actor: a.actor.clone(),
            reason: a.reason.clone(),
            details_json: a.details_json.clone(),
            at_ms: a.at_ms,
        };
        LineageStore::open(&self.0)
            .and_then(|mut s| s.record_admin_action(&record))
            .map_err(|e| format!("lineage store {}: {e}", self.0.display()))
    }
}

/// Runs `serve` until SIGINT/SIGTERM.
pub fn run(a: ServeArgs) -> Result<()> {
    init_logging("info");
    if !(a.file_system_poll_wait_seconds > 0.0 && a.file_system_poll_wait_seconds <= 3600.0) {
        bail!("--file_system_poll_wait_seconds must be in (0, 3600]");
    }
    if a.num_versions == 0 {
        bail!("--num_versions must be >= 1");
    }
    if a.model_config_file_poll_wait_seconds > 0 && a.model_config_file.is_none() {
        bail!("--model_config_file_poll_wait_seconds needs --model_config_file");
    }
    let models = match (&a.model_config_file, &a.model_name, &a.model_base_path) {
        (Some(file), _, _) => read_model_config(file)?,
        (None, Some(name), Some(base)) => {
            if !base.is_dir() {
                bail!("--model_base_path {} is not a directory", base.display());
            }
            vec![ModelSource {
                name: name.clone(),
                base_path: base.clone(),
                ..ModelSource::default()
            }]
        }
        _ => bail!("give --model_name and --model_base_path, or --model_config_file"),
    };
    let rt = runtime()?;
    let stop = Stop::install(&rt);
    let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    let opts = ServeOptions {
        models,
        poll_interval: Duration::from_secs_f64(a.file_system_poll_wait_seconds),
        max_body_bytes: a.max_body_bytes,
        num_versions: a.num_versions,
        admin: admin_options(a.admin_token_file.as_deref(), a.lineage_db.clone())?,
        request_timeout: Duration::from_millis(a.rest_api_timeout_in_ms.max(1)),
        batching: batching(&a)?,
        feedback: feedback_options(&a)?,
        model_mapping: match (a.map_models, a.map_models_dir.clone()) {
            (false, Some(_)) => bail!("--map_models_dir needs --map_models=true"),
            (false, None) => ModelMapping::Off,
            (true, None) => ModelMapping::BesideVersion,
            (true, Some(d)) => ModelMapping::In(d),
        },
    };
    let addr: std::net::SocketAddr = format!("{}:{}", a.rest_api_host, a.rest_api_port)
        .parse()
        .with_context(|| format!("--rest_api_host {:?} is not an IP address", a.rest_api_host))?;
    let grpc = a.port.map(|p| std::net::SocketAddr::new(addr.ip(), p));
    let handle = rt
        .block_on(evergreen_serve::spawn_with_grpc(
            opts,
            Arc::new(Metrics::new()),
            addr,
            grpc,
        ))
        .with_context(|| format!("binding {addr} (and the gRPC port {grpc:?})"))?;
    if let Some(g) = handle.grpc_addr {
        println!("serving gRPC (TensorFlow Serving's PredictionService, ModelService) on {g}");
    }
    println!(
        "serving model{} {} on http://{}",
        if names.len() > 1 { "s" } else { "" },
        names.join(", "),
        handle.addr
    );
    if let (Some(file), secs @ 1..) = (&a.model_config_file, a.model_config_file_poll_wait_seconds)
    {
        let (server, file) = (handle.server().clone(), file.clone());
        rt.spawn(poll_model_config(server, file, Duration::from_secs(secs)));
    }
    rt.block_on(stop.future());
    rt.block_on(handle.shutdown());
    Ok(())
}

/// Reads and parses a model config file (relative base paths are relative to its directory).
fn read_model_config(file: &Path) -> Result<Vec<ModelSource>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading --model_config_file {}", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    evergreen_serve::parse_model_config(&text, dir)
        .map_err(|e| anyhow::anyhow!("--model_config_file {}: {e}", file.display()))
}

/// Re-reads the model config file every `period` and applies what changed (off the async
/// threads: loading new models reads their files). A file that cannot be read or parsed is
/// reported once per distinct error, and what is served stays as it is.
async fn poll_model_config(server: evergreen_serve::Server, file: PathBuf, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first tick is immediate: the file was just read
    let mut last_error: Option<String> = None;
    loop {
        interval.tick().await;
        let (srv, f) = (server.clone(), file.clone());
        let applied = tokio::task::spawn_blocking(move || {
            read_model_config(&f).map(|sources| srv.reconfigure(&sources))
        })
        .await;
        match applied {
            Ok(Ok(change)) => {
                last_error = None;
                if !change.is_empty() {
                    tracing::info!(
                        file = %file.display(),
                        added = ?change.added,
                        removed = ?change.removed,
                        changed = ?change.changed,
                        "model config applied"
                    );
                }
            }
            Ok(Err(e)) => {
                let message = format!("{e:#}");
                if last_error.as_deref() != Some(message.as_str()) {
                    tracing::error!(error = %message, "model config not applied; serving as before");
                    last_error = Some(message);
                }
            }
            Err(e) => tracing::warn!(error = %e, "model config poll failed"),
        }
    }
}
