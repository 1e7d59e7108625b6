//! `evergreen train --config C --data PATH...`: offline / backfill training over given files with
//! the same window code as `run` (progressive validation, mini-batch training, gate), a progress
//! bar, and one published version at the end.

use super::{fmt_metric, init_logging, require_holdout};
use crate::CODE_VERSION;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use evergreen_config::Config;
use evergreen_metrics::Metrics;
use evergreen_train::{BackfillEvent, BackfillOptions, BackfillReport, PublishMode, Trainer};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

/// What to publish at the end.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Publish {
    /// Nothing (offline evaluation: every window's candidate is kept, the gate is only
    /// reported, the registry is untouched).
    None,
    /// Windows failing the gate are discarded as in `run`; the final model is published as one
    /// version.
    Last,
}

/// Arguments of `train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Config file (model, features, training, gate, registry).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Input files, or directories (their files in name order); trained in the order given.
    #[arg(long, num_args = 1.., required_unless_present = "last_spans")]
    pub data: Vec<PathBuf>,
    /// Instead of --data: replay the last K spans of the config's data source (its directory
    /// or span pattern; ready spans only), in span order: a rolling window on demand.
    #[arg(long, value_name = "K", conflicts_with = "data")]
    pub last_spans: Option<usize>,
    /// With --last-spans: the window ends at this span (its id: a file name, or
    /// `span-<number>` in pattern mode) instead of the newest.
    #[arg(long, value_name = "SPAN", requires = "last_spans")]
    pub until: Option<String>,
    /// Cut each file into windows of this many records (default: one window per file).
    #[arg(long)]
    pub window_rows: Option<usize>,
    /// What to publish at the end.
    #[arg(long, value_enum, default_value = "last")]
    pub publish: Publish,
    /// Override a config key (repeatable): `--set model.kind=fm --set training.epochs=1`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Write the full report (per-window metrics included) as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar and no per-window lines (the summary is still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `train`.
pub fn run(a: TrainArgs) -> Result<()> {
    init_logging(if a.quiet {
        "warn"
    } else {
        "warn,evergreen=info"
    });
    let cfg = Config::load_with_overrides(&a.config, &a.overrides)?;
    if matches!(a.publish, Publish::Last) {
        require_holdout(&cfg, "train --publish last", ", or pass --publish none")?;
    }
    let mut trainer = Trainer::open(cfg, Arc::new(Metrics::new()), CODE_VERSION)?;
    let mut a = a;
    if let Some(k) = a.last_spans {
        let spans = trainer.rolling_window(k, a.until.as_deref())?;
        if spans.is_empty() {
            anyhow::bail!("no ready span in the config's data source to replay");
        }
        if !a.quiet {
            let ids: Vec<&str> = spans.iter().map(|s| s.id.as_str()).collect();
            eprintln!("replaying {} spans: {}", ids.len(), ids.join(", "));
        }
        a.data = spans
            .iter()
            .flat_map(|s| s.shards.iter().map(|f| f.path.clone()))
            .collect();
    }
    let opts = BackfillOptions {
        window_rows: a.window_rows,
        publish: match a.publish {
            Publish::None => PublishMode::None,
            Publish::Last => PublishMode::Last,
        },
    };
    let total: u64 = a
        .data
        .iter()
        .map(|p| dir_or_file_size(p))
        .sum::<u64>()
        .max(1);
    let show = !a.quiet && std::io::stderr().is_terminal();
    let bar = if show {
        indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {wide_bar} {msg} [{elapsed_precise}, eta {eta}]",
        )
        .expect("valid template"),
    );
    let mut base = 0u64;
    let mut file_bytes = 0u64;
    let mut windows = 0u64;
    let quiet = a.quiet;
    let report = trainer.backfill(&a.data, &opts, &mut |e| match e {
        BackfillEvent::FileStarted { file, bytes } => {
            base += file_bytes;
            file_bytes = bytes;
            bar.set_position(base);
            bar.set_message(format!("{}", file.display()));
        }
        BackfillEvent::Window {
            bytes_done, report, ..
        } => {
            windows += 1;
            bar.set_position(base + bytes_done);
            let p = report.progressive.as_ref();
            bar.set_message(format!(
                "window {windows}: logloss {} auc {}",
                fmt_metric(p.map(|s| s.logloss)),
                fmt_metric(p.map(|s| s.auc)),
            ));
            if !quiet && !show {
                println!(
                    "window {}  records {}  progressive logloss {} auc {}  {}",
                    report.span,
                    report.records,
                    fmt_metric(p.map(|s| s.logloss)),
                    fmt_metric(p.map(|s| s.auc)),
                    report.outcome.as_str()
                );
            }
        }
    })?;
    bar.finish_and_clear();
    println!("{}", summary(&report));
    if let Some(path) = &a.report {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn dir_or_file_size(p: &std::path::Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// The summary printed at the end.
fn summary(r: &BackfillReport) -> String {
    let p = r.progressive.as_ref();
    let o = r.online.as_ref();
    let mut s = format!(
        "trained {} windows from {} files: {} examples ({} bad), {:.0} examples/s\n\
         progressive (model before each window): logloss {} auc {} accuracy {}\n\
         online (before each mini-batch):        logloss {} auc {} accuracy {}\n",
        r.windows,
        r.files,
        r.examples,
        r.bad,
        r.examples_per_second,
        fmt_metric(p.map(|s| s.logloss)),
        fmt_metric(p.map(|s| s.auc)),
        fmt_metric(p.map(|s| s.accuracy)),
        fmt_metric(o.map(|s| s.logloss)),
        fmt_metric(o.map(|s| s.auc)),
        fmt_metric(o.map(|s| s.accuracy)),
    );
    if r.windows > r.accepted_windows {
        s.push_str(&format!(
            "{} of {} windows rejected by the gate (their training was discarded)\n",
            r.windows - r.accepted_windows,
            r.windows
        ));
    }
    for h in &r.held_back {
        s.push_str(&format!("held back: {h}\n"));
    }
    match r.version {
        Some(v) => s.push_str(&format!("published v{v}")),
        None => s.push_str("nothing published"),
    }
    s
}
