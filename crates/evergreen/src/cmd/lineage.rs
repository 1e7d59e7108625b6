//! `evergreen lineage`: which spans, parent, hyperparameters, code and gate produced a version;
//! which versions consumed a span; the cycles of a model.

use super::fmt_metric;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use evergreen_config::Config;
use evergreen_lineage::{LineageStore, MetricsRecord};
use std::path::PathBuf;

/// Arguments of `lineage`.
#[derive(Args, Debug)]
pub struct LineageArgs {
    /// A demo work directory (lineage store at DIR/state/lineage.sqlite).
    #[arg(long, conflicts_with_all = ["config", "db"])]
    pub workdir: Option<PathBuf>,
    /// A config file (its lineage store).
    #[arg(long, short, conflicts_with = "db")]
    pub config: Option<PathBuf>,
    /// The lineage store itself (SQLite, ML Metadata schema).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    command: LineageCommand,
}

#[derive(Subcommand, Debug)]
enum LineageCommand {
    /// What produced a model version.
    Model {
        /// Model name.
        name: String,
        /// Version number.
        version: u64,
    },
    /// Which model versions consumed a span (file name or path).
    Span {
        /// Span file name or path.
        file: String,
    },
    /// Every cycle of a model, in order.
    Cycles {
        /// Model name.
        name: String,
    },
}

fn db_path(a: &LineageArgs) -> Result<PathBuf> {
    if let Some(db) = &a.db {
        return Ok(db.clone());
    }
    if let Some(dir) = &a.workdir {
        return Ok(dir.join("state").join("lineage.sqlite"));
    }
    if let Some(c) = &a.config {
        return Ok(Config::load(c)?.lineage_path());
    }
    bail!("say where the lineage store is: --workdir DIR, --config FILE or --db FILE")
}

fn metrics_line(m: &MetricsRecord) -> String {
    format!(
        "examples {} logloss {} auc {} accuracy {} calibration {}",
        m.examples,
        fmt_metric(Some(m.logloss)),
        fmt_metric(Some(m.auc)),
        fmt_metric(Some(m.accuracy)),
        fmt_metric(Some(m.calibration))
    )
}

/// Runs `lineage`.
pub fn run(a: LineageArgs) -> Result<()> {
    let path = db_path(&a)?;
    if !path.is_file() {
        bail!("lineage store {} does not exist", path.display());
    }
    let store = LineageStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
    match &a.command {
        LineageCommand::Model { name, version } => {
            let Some(l) = store.model_lineage(name, *version)? else {
                bail!(
                    "no lineage for model {name:?} version {version} in {}",
                    path.display()
                );
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&l)?);
                return Ok(());
            }
            println!("model {} version {}", l.model_name, l.version);
            println!("  uri:             {}", l.uri);
            println!(
                "  parent version:  {}",
                l.parent_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "none (trained from scratch)".into())
            );
            for s in &l.spans {
                println!(
                    "  trained on span: {} ({} records, {} bad) {}",
                    s.name, s.records, s.bad_records, s.uri
                );
            }
            println!("  code version:    {}", l.code_version);
            println!("  hyperparameters: {}", l.hyperparameters_json);
            println!("  progressive:     {}", metrics_line(&l.progressive));
            println!("  held-out eval:   {}", metrics_line(&l.evaluation));
            println!(
                "  gate:            {} {}",
                if l.gate.passed { "passed" } else { "failed" },
                l.gate.summary
            );
        }
        LineageCommand::Span { file } => {
            let consumers = store.span_consumers(file)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&consumers)?);
                return Ok(());
            }
            if consumers.is_empty() {
                println!("span {file}: not consumed by any model");
            }
            for c in consumers {
                let outcome = match c.published_version {
                    Some(v) => format!("published as version {v}"),
                    None if c.gate_passed => "not published".into(),
                    None => "not published (gate failed or span held back)".into(),
                };
                println!(
                    "span {} ({} records, {} bad): consumed by model {}: {}",
                    c.span.name, c.span.records, c.span.bad_records, c.model_name, outcome
                );
            }
        }
        LineageCommand::Cycles { name } => {
            let cycles = store.cycles(name)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&cycles)?);
                return Ok(());
            }
            for c in cycles {
                println!(
                    "{}  parent {}  published {}  gate {}  progressive {}",
                    c.span.name,
                    c.parent_version.map_or("-".into(), |v| v.to_string()),
                    c.published_version.map_or("-".into(), |v| v.to_string()),
                    if c.gate_passed { "pass" } else { "fail" },
                    metrics_line(&c.progressive)
                );
            }
        }
    }
    Ok(())
}
