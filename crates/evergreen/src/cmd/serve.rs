//! `evergreen serve`: TensorFlow-Serving-compatible REST over an existing registry, no training.
//! Flag names follow `tensorflow_model_server`.

use super::{Stop, init_logging, runtime};
use anyhow::{Context, Result, bail};
use clap::Args;
use evergreen_metrics::Metrics;
use evergreen_serve::{ModelSource, ServeOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `serve` (TensorFlow Serving's flag names).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// REST port (0 picks a free one; the address is printed).
    #[arg(long = "rest_api_port", default_value_t = 8501)]
    pub rest_api_port: u16,
    /// Address the REST server binds.
    #[arg(long = "rest_api_host", default_value = "127.0.0.1")]
    pub rest_api_host: String,
    /// Name the model is served under.
    #[arg(long = "model_name")]
    pub model_name: String,
    /// Directory holding the numbered version directories.
    #[arg(long = "model_base_path")]
    pub model_base_path: PathBuf,
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
    if !a.model_base_path.is_dir() {
        bail!(
            "--model_base_path {} is not a directory",
            a.model_base_path.display()
        );
    }
    let rt = runtime()?;
    let stop = Stop::install(&rt);
    let opts = ServeOptions {
        models: vec![ModelSource {
            name: a.model_name.clone(),
            base_path: a.model_base_path.clone(),
        }],
        poll_interval: Duration::from_secs_f64(a.file_system_poll_wait_seconds),
        max_body_bytes: a.max_body_bytes,
        num_versions: a.num_versions,
    };
    let addr: std::net::SocketAddr = format!("{}:{}", a.rest_api_host, a.rest_api_port)
        .parse()
        .with_context(|| format!("--rest_api_host {:?} is not an IP address", a.rest_api_host))?;
    let handle = rt
        .block_on(evergreen_serve::spawn(opts, Arc::new(Metrics::new()), addr))
        .with_context(|| format!("binding {addr}"))?;
    println!(
        "serving model {} from {} on http://{}",
        a.model_name,
        a.model_base_path.display(),
        handle.addr
    );
    rt.block_on(stop.future());
    rt.block_on(handle.shutdown());
    Ok(())
}
