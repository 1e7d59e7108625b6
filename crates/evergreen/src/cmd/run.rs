//! `evergreen run --config FILE [--once]`: the continuous-training loop, plus the REST server
//! when the config has a `[serve]` section.

use super::{Stop, fmt_metric, init_logging, require_holdout, runtime};
use crate::CODE_VERSION;
use anyhow::{Context, Result};
use clap::Args;
use evergreen_config::{Config, ServeSection};
use evergreen_metrics::Metrics;
use evergreen_serve::{ModelSource, ServeOptions, ServerHandle};
use evergreen_train::{CycleReport, Trainer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Config file (see `evergreen config example`).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Exit once every ready span has been consumed instead of watching for more.
    #[arg(long)]
    pub once: bool,
}

/// Runs `run`.
pub fn run(a: RunArgs) -> Result<()> {
    init_logging("info");
    let cfg = Config::load(&a.config)?;
    require_holdout(&cfg, "run", "")?;
    let metrics = Arc::new(Metrics::new());
    let rt = runtime()?;
    let stop = Stop::install(&rt);
    let serve = cfg.serve.clone();
    // The trainer first: it creates the registry directory the server watches.
    let mut trainer = Trainer::open(cfg, metrics.clone(), CODE_VERSION)?;
    let server = match serve {
        Some(s) => Some(start_server(&rt, trainer.config(), &s, metrics)?),
        None => None,
    };
    let result = run_loop(&mut trainer, a.once, &stop, |r| {
        println!("{}", cycle_line(r))
    });
    if let Some(h) = server {
        rt.block_on(h.shutdown());
    }
    result
}

/// Starts the REST server for the config's model on `rt`.
pub fn start_server(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    s: &ServeSection,
    metrics: Arc<Metrics>,
) -> Result<ServerHandle> {
    let opts = ServeOptions {
        models: vec![ModelSource {
            name: cfg.model.name.clone(),
            base_path: cfg.model_dir(),
            ..ModelSource::default()
        }],
        max_body_bytes: s.max_body_bytes,
        admin: super::serve::admin_options(
            s.admin_token_file.as_deref(),
            Some(cfg.lineage_path()),
        )?,
        ..ServeOptions::default()
    };
    let addr = s
        .socket_addr()
        .with_context(|| format!("serve.host {:?} is not an IP address", s.host))?;
    let grpc = s.grpc_port.map(|p| std::net::SocketAddr::new(addr.ip(), p));
    let handle = rt
        .block_on(evergreen_serve::spawn_with_grpc(opts, metrics, addr, grpc))
        .with_context(|| format!("binding the REST server to {addr} (gRPC: {grpc:?})"))?;
    if let Some(g) = handle.grpc_addr {
        println!(
            "serving model {} on grpc://{g} (gRPC, TensorFlow Serving's PredictionService)",
            cfg.model.name
        );
    }
    println!(
        "serving model {} on http://{} (REST, TensorFlow Serving v1 API)",
        cfg.model.name, handle.addr
    );
    Ok(handle)
}

/// Runs cycles until stopped (or, with `once`, until no span is pending). A failed cycle is
/// logged and retried after the poll interval (it committed nothing).
pub fn run_loop(
    trainer: &mut Trainer,
    once: bool,
    stop: &Stop,
    mut on_report: impl FnMut(&CycleReport),
) -> Result<()> {
    let poll = Duration::from_millis(trainer.config().data.poll_interval_ms);
    loop {
        if stop.is_set() {
            return Ok(());
        }
        match trainer.run_once() {
            Ok(Some(r)) => on_report(&r),
            Ok(None) => {
                if once || stop.wait(poll) {
                    return Ok(());
                }
            }
            Err(e) => {
                if once {
                    return Err(e.into());
                }
                tracing::error!("cycle failed (will retry): {e}");
                if stop.wait(poll) {
                    return Ok(());
                }
            }
        }
    }
}

/// One line per cycle: span, progressive metrics, gate decision, versions.
pub fn cycle_line(r: &CycleReport) -> String {
    let bad: u64 = r.bad.values().sum();
    let p = r.progressive.as_ref();
    let gate = match (&r.gate, r.outcome) {
        (Some(g), _) if g.passed => "PASS".to_string(),
        (Some(g), _) => {
            let failed: Vec<&str> = g
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect();
            format!("FAIL({})", failed.join(","))
        }
        (None, o) => o.as_str().to_uppercase(),
    };
    let published = r
        .version
        .map(|v| format!("published v{v}"))
        .unwrap_or_else(|| "not published".into());
    let serving = r
        .serving_version
        .map(|v| format!("v{v}"))
        .unwrap_or_else(|| "none".into());
    format!(
        "span {}  records {}  bad {}  progressive logloss {} auc {}  gate {}  {}  serving {}",
        r.span,
        r.records,
        bad,
        fmt_metric(p.map(|p| p.logloss)),
        fmt_metric(p.map(|p| p.auc)),
        gate,
        published,
        serving
    )
}
