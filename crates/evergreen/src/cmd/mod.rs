//! One module per subcommand, plus shared helpers.

pub mod bench;
pub mod config;
pub mod data;
pub mod demo;
pub mod lineage;
pub mod models;
pub mod run;
pub mod scenario;
pub mod serve;
pub mod status;
pub mod train;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Sets up logging to stderr; `RUST_LOG` overrides `default`.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A multi-threaded tokio runtime for the server (the trainer runs on plain threads).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("evergreen-serve")
        .build()?)
}

/// Stop signal: set by SIGINT/SIGTERM (or `trigger`); sync code waits on it with a timeout,
/// async code awaits it.
#[derive(Clone)]
pub struct Stop {
    flag: std::sync::Arc<AtomicBool>,
    tx: mpsc::SyncSender<()>,
    rx: std::sync::Arc<std::sync::Mutex<mpsc::Receiver<()>>>,
    watch: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Stop {
    /// A stop signal wired to SIGINT and SIGTERM on `rt`.
    pub fn install(rt: &tokio::runtime::Runtime) -> Self {
        let (tx, rx) = mpsc::sync_channel(1);
        let stop = Self {
            flag: Default::default(),
            tx,
            rx: std::sync::Arc::new(std::sync::Mutex::new(rx)),
            watch: std::sync::Arc::new(tokio::sync::watch::Sender::new(false)),
        };
        let s = stop.clone();
        rt.spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {},
                        _ = term.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
            s.trigger();
        });
        stop
    }

    /// Fires the signal.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(());
        self.watch.send_replace(true);
    }

    /// True once fired.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Waits up to `d`; returns true when stopped.
    pub fn wait(&self, d: Duration) -> bool {
        if self.is_set() {
            return true;
        }
        if let Ok(rx) = self.rx.lock() {
            let _ = rx.recv_timeout(d);
        }
        self.is_set()
    }

    /// A future resolving when stopped (for graceful server shutdown).
    pub fn future(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.watch.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

/// Refuses to start a command that publishes when the config holds no example out: the gate
/// judges each candidate on held-out examples, so without them no version could ever pass.
/// `other_way` names another way out than a holdout (empty when there is none).
pub fn require_holdout(
    cfg: &evergreen_config::Config,
    command: &str,
    other_way: &str,
) -> anyhow::Result<()> {
    if cfg.training.holdout_fraction <= 0.0 {
        anyhow::bail!(
            "{command} publishes through the gate, which judges each candidate on held-out \
             examples, but training.holdout_fraction is 0: set it above 0 (e.g. --set \
             training.holdout_fraction=0.1){other_way}"
        );
    }
    Ok(())
}

/// Formats an f64 metric for a log line (`-` when undefined).
pub fn fmt_metric(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "-".to_string(),
    }
}
