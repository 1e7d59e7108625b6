//! `evergreen models`: the served model's versions, labels and traffic policy, and the admin
//! actions (promote, rollback, split, pin, unpin, shadow) straight on the registry, recorded in
//! lineage like the admin API's. A running server picks the change up at its next poll.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use evergreen_config::Config;
use evergreen_lineage::{AdminActionRecord, LineageStore};
use evergreen_registry::{AdminChange, Registry, Shadow, SplitRequest};
use std::path::PathBuf;

/// Arguments of `models`.
#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// The config whose model, registry and lineage store to use.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    command: ModelsCommand,
}

/// Who and why, recorded in lineage.
#[derive(Args, Debug)]
struct Why {
    /// Why (recorded in lineage).
    #[arg(long, default_value = "")]
    reason: String,
    /// Who (recorded in lineage; default: $USER).
    #[arg(long)]
    actor: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// Versions on disk, labels and traffic policy.
    List,
    /// One version's model: kind, hyperparameters, size; for a forest its trees (size,
    /// depth, accuracy), depth distribution, drift/replacement events and feature importances.
    Show {
        /// Version (default: the newest).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Make a version (default: the canary) the stable one.
    Promote {
        /// Version to promote (default: the `canary` label).
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        why: Why,
    },
    /// Withdraw a live canary, or move stable back to the previous good version.
    Rollback {
        #[command(flatten)]
        why: Why,
    },
    /// Send a share of request keys to a canary version, optionally on a ramp.
    Split {
        /// Canary version.
        #[arg(long)]
        canary: u64,
        /// Share of keys in percent.
        #[arg(long, default_value_t = 0.0)]
        percent: f64,
        /// Ramp steps in percent, e.g. 10,50,100 (one per --ramp-interval seconds).
        #[arg(long, value_delimiter = ',')]
        ramp: Vec<f64>,
        /// Seconds per ramp step.
        #[arg(long, default_value_t = 0)]
        ramp_interval: u64,
        /// Request header holding the sticky key.
        #[arg(long)]
        key_header: Option<String>,
        /// Feature of the first instance holding the sticky key (e.g. a user id).
        #[arg(long)]
        key_feature: Option<String>,
        #[command(flatten)]
        why: Why,
    },
    /// Route every unversioned request to one version.
    Pin {
        /// Version to pin.
        version: u64,
        #[command(flatten)]
        why: Why,
    },
    /// Remove the pin.
    Unpin {
        #[command(flatten)]
        why: Why,
    },
    /// Pause publication: the trainer starts no cycle (new spans wait) until `resume`. The
    /// reason (`--reason`) is shown in its log.
    Pause {
        #[command(flatten)]
        why: Why,
    },
    /// Resume publication.
    Resume {
        #[command(flatten)]
        why: Why,
    },
    /// Mirror a share of requests to a version (its predictions are compared, never served).
    Shadow {
        /// Shadow version (omit to stop mirroring).
        #[arg(long)]
        version: Option<u64>,
        /// Share of requests mirrored, in percent.
        #[arg(long, default_value_t = 100.0)]
        percent: f64,
        #[command(flatten)]
        why: Why,
    },
}

/// Runs `models`.
pub fn run(a: ModelsArgs) -> Result<()> {
    let cfg = Config::load(&a.config)?;
    let registry = Registry::open_existing(cfg.model_dir(), &cfg.model.name)
        .with_context(|| format!("opening the registry of model {:?}", cfg.model.name))?;
    let now = evergreen_train::now_ms();
    let (change, why): (AdminChange, &Why) = match &a.command {
        ModelsCommand::List => return list(&registry, a.json),
        ModelsCommand::Show { version } => return show(&registry, *version, a.json),
        ModelsCommand::Promote { version, why } => (registry.promote(*version)?, why),
        ModelsCommand::Rollback { why } => (registry.rollback()?, why),
        ModelsCommand::Split {
            canary,
            percent,
            ramp,
            ramp_interval,
            key_header,
            key_feature,
            why,
        } => (
            registry.split(
                &SplitRequest {
                    canary: *canary,
                    percent: *percent,
                    ramp: ramp.clone(),
                    ramp_interval_s: *ramp_interval,
                    key_header: key_header.clone(),
                    key_feature: key_feature.clone(),
                },
                now,
            )?,
            why,
        ),
        ModelsCommand::Pin { version, why } => (registry.pin(Some(*version))?, why),
        ModelsCommand::Unpin { why } => (registry.pin(None)?, why),
        ModelsCommand::Pause { why } => (registry.pause_publication(&why.reason)?, why),
        ModelsCommand::Resume { why } => (registry.resume_publication()?, why),
        ModelsCommand::Shadow {
            version,
            percent,
            why,
        } => (
            registry.shadow(version.map(|version| Shadow {
                version,
                percent: *percent,
            }))?,
            why,
        ),
    };
    let actor = why
        .actor
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into());
    let record = AdminActionRecord {
        model_name: cfg.model.name.clone(),
        action: change.action.to_string(),
        actor,
        reason: why.reason.clone(),
        details_json: serde_json::to_string(&change)?,
        at_ms: now,
    };
    let lineage = cfg.lineage_path();
    if let Some(parent) = lineage.parent() {
        std::fs::create_dir_all(parent)?;
    }
    LineageStore::open(&lineage)
        .and_then(|mut s| s.record_admin_action(&record))
        .with_context(|| {
            format!(
                "the {} was applied but could not be recorded in {}",
                change.action,
                lineage.display()
            )
        })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&change)?);
    } else {
        println!("{}: {}", change.action, change.summary);
    }
    Ok(())
}

fn show(registry: &Registry, version: Option<u64>, json: bool) -> Result<()> {
    let version = match version {
        Some(v) => v,
        None => registry.latest()?.with_context(|| {
            format!(
                "model {:?} has no version under {}",
                registry.model_name(),
                registry.base().display()
            )
        })?,
    };
    let loaded = registry
        .load(version)
        .with_context(|| format!("loading version {version}"))?;
    let model = loaded.model.as_ref();
    let spec = loaded.transformer.spec();
    let names = spec.field_names();
    let forest = model
        .as_any()
        .downcast_ref::<evergreen_model::Forest>()
        .map(|f| f.summary());
    let importance: Vec<(String, f64)> = forest
        .as_ref()
        .map(|s| {
            let mut v: Vec<(String, f64)> = s
                .importance
                .iter()
                .enumerate()
                .filter(|(_, w)| **w > 0.0)
                .map(|(i, w)| {
                    (
                        names
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| format!("field_{i}")),
                        *w,
                    )
                })
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v
        })
        .unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": registry.model_name(),
                "version": version,
                "kind": model.kind(),
                "examples_seen": model.examples_seen(),
                "training": loaded.manifest.training,
                "forest": forest,
                "importance": importance,
            }))?
        );
        return Ok(());
    }
    println!(
        "model {} v{version}: kind {}, {} examples learned",
        registry.model_name(),
        model.kind().name(),
        model.examples_seen()
    );
    println!("training settings {}", loaded.manifest.training);
    let Some(s) = forest else {
        return Ok(());
    };
    println!(
        "forest: {} trees, {} background, {:.1} KiB, {} warnings, {} replacements",
        s.trees.len(),
        s.background_trees,
        s.bytes as f64 / 1024.0,
        s.warnings,
        s.replacements
    );
    println!("  tree  nodes  leaves  active  depth      KiB  since  accuracy  warn  repl  bg");
    for (i, t) in s.trees.iter().enumerate() {
        println!(
            "  {i:>4}  {:>5}  {:>6}  {:>6}  {:>5}  {:>7.1}  {:>5}  {:>8.4}  {:>4}  {:>4}  {}",
            t.nodes,
            t.leaves,
            t.active_leaves,
            t.depth,
            t.bytes as f64 / 1024.0,
            t.created_at,
            t.accuracy,
            t.warnings,
            t.replacements,
            if t.background { "yes" } else { "-" }
        );
    }
    let depths: Vec<String> = s
        .depths
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(d, n)| format!("{d}:{n}"))
        .collect();
    println!("leaves by depth: {}", depths.join(" "));
    println!("feature importance (share of split merit):");
    for (name, w) in &importance {
        println!("  {name:<32} {w:.4}");
    }
    let recent: Vec<String> = s
        .events
        .iter()
        .rev()
        .take(20)
        .map(|e| format!("{:?}@{}(tree {})", e.kind, e.example, e.tree))
        .collect();
    println!(
        "recent detector events (newest first, {} kept): {}",
        s.events.len(),
        recent.join(" ")
    );
    Ok(())
}

fn list(registry: &Registry, json: bool) -> Result<()> {
    let versions = registry.versions()?;
    let labels = registry.labels()?;
    let traffic = registry.traffic()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": registry.model_name(),
                "versions": versions,
                "labels": labels,
                "traffic": traffic,
            }))?
        );
        return Ok(());
    }
    if versions.is_empty() {
        bail!(
            "model {:?} has no version under {}",
            registry.model_name(),
            registry.base().display()
        );
    }
    println!("model {}", registry.model_name());
    for v in versions.iter().rev() {
        let names: Vec<&str> = labels
            .iter()
            .filter(|(_, l)| **l == *v)
            .map(|(n, _)| n.as_str())
            .collect();
        let m = registry.manifest(*v)?;
        let eval = m
            .evaluation
            .map(|e| format!("holdout logloss {:.4} auc {:.4}", e.logloss, e.auc))
            .unwrap_or_default();
        println!(
            "  v{v:<6} {:<16} {} {eval}",
            names.join(","),
            m.spans.join(",")
        );
    }
    let now = evergreen_train::now_ms();
    let unversioned = match (traffic.pinned, labels.get(evergreen_registry::STABLE)) {
        (Some(p), _) => format!("pinned to v{p}"),
        (None, Some(s)) => format!("stable v{s}"),
        (None, None) => format!("newest (v{})", versions.last().copied().unwrap_or(0)),
    };
    println!("unversioned requests: {unversioned}");
    if let Some(c) = labels.get(evergreen_registry::CANARY) {
        println!(
            "canary v{c}: {}% of keys now (key: header {}{})",
            traffic.canary_percent_at(now),
            traffic.key_header(),
            traffic
                .key_feature
                .as_deref()
                .map(|f| format!(", else feature {f}"))
                .unwrap_or_default()
        );
    }
    if let Some(s) = &traffic.shadow {
        println!("shadow v{}: {}% of requests mirrored", s.version, s.percent);
    }
    Ok(())
}
