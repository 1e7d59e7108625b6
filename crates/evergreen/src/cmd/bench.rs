//! `evergreen bench data`: input-pipeline throughput on real files (examples/s and MB/s) for
//! parse only, parse + feature transform, and the full pipeline into batches; medians of
//! repeated runs, and peak memory. `bench/tfdata_compare.py` runs it beside tf.data.
//! `evergreen bench predict`: per-example latency of a published version as the server runs it
//! (loaded the server's way, the version's own transform, then the model), one example at a
//! time.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use evergreen_config::Config;
use evergreen_core::{
    CategoricalColumn, FeatureSpec, LabelSpec, NumericColumn, RawValue, Transformer,
};
use evergreen_data::pipeline::{Item, Pipeline, PipelineOptions};
use evergreen_data::{Format, SpanDir, SpanFile, open_span};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Input pipeline throughput on span files (all shards of the given paths).
    Data(DataBenchArgs),
    /// Latency of one prediction from a published version (transform + predict, and predict
    /// alone), one example at a time, over the records of the given files.
    Predict(PredictBenchArgs),
}

/// Arguments of `bench predict`.
#[derive(Args, Debug)]
pub struct PredictBenchArgs {
    /// Config naming the model and registry.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Version (default: the newest).
    #[arg(long)]
    pub version: Option<u64>,
    /// Shard files or directories whose records are predicted.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Records used (the first ones read).
    #[arg(long, default_value_t = 20_000)]
    pub examples: usize,
    /// Passes over the records; the per-example latencies of every pass are pooled.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `bench data`.
#[derive(Args, Debug)]
pub struct DataBenchArgs {
    /// Shard files or directories of shards.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Take the feature spec from this config (default: inferred from the first record: floats
    /// numeric, everything else categorical).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Label column when the spec is inferred.
    #[arg(long, default_value = "label")]
    pub label: String,
    /// Runs per mode (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Shards read in parallel (0 = auto: the cores, at most 8).
    #[arg(long, default_value_t = 0)]
    pub cycle_length: usize,
    /// Transform workers (default: auto; 0 transforms on the reader threads).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Examples per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Modes to run (parse, transform, pipeline).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "parse,transform,pipeline"
    )]
    pub modes: Vec<String>,
}

#[derive(Serialize)]
struct ModeResult {
    mode: String,
    examples: u64,
    bad: u64,
    bytes: u64,
    runs: usize,
    median_seconds: f64,
    examples_per_s: f64,
    mb_per_s: f64,
}

fn shards_of(paths: &[PathBuf]) -> Result<Vec<SpanFile>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(SpanDir::new(p, false, None).list()?);
        } else {
            let format =
                Format::from_path(p).with_context(|| format!("{}: unknown format", p.display()))?;
            out.push(SpanFile {
                name: p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                path: p.clone(),
                format,
                size: std::fs::metadata(p)
                    .with_context(|| p.display().to_string())?
                    .len(),
            });
        }
    }
    if out.is_empty() {
        bail!("no shard found");
    }
    Ok(out)
}

fn infer_spec(first: &SpanFile, label: &str) -> Result<FeatureSpec> {
    let rec = open_span(first)?
        .find_map(|r| r.ok())
        .with_context(|| format!("{}: no readable record", first.path.display()))?
        .record;
    if rec.get(label).is_none() {
        bail!("label column {label:?} not in the data (use --label)");
    }
    let mut spec = FeatureSpec {
        hash_bits: 20,
        label: LabelSpec {
            column: label.to_string(),
            positive: vec![],
            negative: vec![],
        },
        bias: true,
        categorical: vec![],
        numeric: vec![],
        cross: vec![],
        sparse: vec![],
        representation: Default::default(),
    };
    for (name, v) in rec.fields() {
        if &**name == label {
            continue;
        }
        let numeric = matches!(v, RawValue::Num(_))
            || matches!(v, RawValue::List(l) if matches!(l.first(), Some(RawValue::Num(_))));
        if numeric {
            spec.numeric.push(NumericColumn {
                name: name.to_string(),
                log: false,
                standardize: None,
                buckets: None,
                default: None,
            });
        } else {
            spec.categorical.push(CategoricalColumn {
                name: name.to_string(),
            });
        }
    }
    Ok(spec)
}

/// Reads every shard on `threads` threads; `f` is applied to each good record.
fn parallel_read(
    shards: &[SpanFile],
    threads: usize,
    f: &(dyn Fn(&evergreen_core::RawRecord) -> bool + Sync),
) -> (u64, u64) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let good = std::sync::atomic::AtomicU64::new(0);
    let bad = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(shard) = shards.get(i) else { break };
                    let Ok(reader) = open_span(shard) else {
                        bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    };
                    let (mut g, mut b) = (0, 0);
                    for r in reader {
                        match r {
                            Ok(rec) if f(&rec.record) => g += 1,
                            _ => b += 1,
                        }
                    }
                    good.fetch_add(g, std::sync::atomic::Ordering::Relaxed);
                    bad.fetch_add(b, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    (good.into_inner(), bad.into_inner())
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs `bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    match a.command {
        BenchCommand::Data(d) => data(d),
        BenchCommand::Predict(p) => predict(p),
    }
}

fn data(a: DataBenchArgs) -> Result<()> {
    let shards = shards_of(&a.paths)?;
    let bytes: u64 = shards.iter().map(|s| s.size).sum();
    let spec = match &a.config {
        Some(c) => Config::load(c)?.features,
        None => infer_spec(&shards[0], &a.label)?,
    };
    let transformer = Arc::new(Transformer::new(spec)?);
    let defaults = PipelineOptions::default();
    let opts = PipelineOptions {
        cycle_length: if a.cycle_length == 0 {
            defaults.cycle_length
        } else {
            a.cycle_length
        },
        workers: a.workers.unwrap_or(defaults.workers),
        batch_size: a.batch_size,
        ..defaults
    };
    eprintln!(
        "{} shards, {:.1} MB; cycle_length {}, workers {}, batch {}",
        shards.len(),
        bytes as f64 / 1e6,
        opts.cycle_length,
        opts.workers,
        opts.batch_size
    );
    for mode in &a.modes {
        let mut times = Vec::new();
        let (mut examples, mut bad) = (0, 0);
        for _ in 0..a.repeat.max(1) {
            let start = Instant::now();
            (examples, bad) = match mode.as_str() {
                "parse" => parallel_read(&shards, opts.cycle_length, &|_| true),
                "transform" => {
                    let t = transformer.clone();
                    parallel_read(&shards, opts.cycle_length, &move |r| t.example(r).is_ok())
                }
                "pipeline" => {
                    let (mut g, mut b) = (0, 0);
                    for item in Pipeline::start(shards.clone(), transformer.clone(), opts) {
                        match item {
                            Item::Batch(batch) => g += batch.len() as u64,
                            Item::Rejected(_) | Item::Failed { .. } => b += 1,
                            Item::ShardDone { .. } => {}
                        }
                    }
                    (g, b)
                }
                other => bail!("unknown mode {other:?} (parse, transform, pipeline)"),
            };
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let r = ModeResult {
            mode: mode.clone(),
            examples,
            bad,
            bytes,
            runs: times.len(),
            median_seconds: median,
            examples_per_s: examples as f64 / median,
            mb_per_s: bytes as f64 / 1e6 / median,
        };
        println!("{}", serde_json::to_string(&r)?);
    }
    if let Some(kib) = peak_rss_kib() {
        println!(
            "{}",
            serde_json::json!({"peak_rss_mib": kib as f64 / 1024.0})
        );
    }
    Ok(())
}

/// Median, p99 and mean of nanosecond timings.
fn latency_summary(mut ns: Vec<u64>) -> serde_json::Value {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1000.0;
    serde_json::json!({"median_us": at(0.5), "p99_us": at(0.99), "mean_us": mean})
}

fn predict(a: PredictBenchArgs) -> Result<()> {
    let cfg = Config::load(&a.config)?;
    let registry = evergreen_registry::Registry::open_existing(cfg.model_dir(), &cfg.model.name)?;
    let version = match a.version {
        Some(v) => v,
        None => registry.latest()?.context("the model has no version")?,
    };
    let dir = registry.version_dir(version);
    // As the server loads it (mapped beside the version where the kind supports it).
    let loaded = registry.load_with(version, Some(&dir))?;
    let shards = shards_of(&a.paths)?;
    let mut records = Vec::with_capacity(a.examples);
    'read: for shard in &shards {
        for r in open_span(shard)?.flatten() {
            records.push(r.record);
            if records.len() >= a.examples {
                break 'read;
            }
        }
    }
    if records.is_empty() {
        bail!("no record read");
    }
    let t = &loaded.transformer;
    let model = loaded.model.as_ref();
    let features: Vec<_> = records.iter().filter_map(|r| t.features(r).ok()).collect();
    let mut whole = Vec::with_capacity(records.len() * a.repeat);
    let mut model_only = Vec::with_capacity(features.len() * a.repeat);
    let mut sink = 0.0;
    for _ in 0..a.repeat.max(1) {
        for r in &records {
            let start = Instant::now();
            if let Ok(x) = t.features(r) {
                sink += model.predict(&x);
            }
            whole.push(start.elapsed().as_nanos() as u64);
        }
        for x in &features {
            let start = Instant::now();
            sink += model.predict(x);
            model_only.push(start.elapsed().as_nanos() as u64);
        }
    }
    let out = serde_json::json!({
        "model": cfg.model.name,
        "version": version,
        "kind": model.kind(),
        "mapped": loaded.mapped,
        "examples": records.len(),
        "repeat": a.repeat,
        "transform_and_predict": latency_summary(whole),
        "predict": latency_summary(model_only),
        "checksum": sink,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} v{version} ({}): transform + predict median {:.2} us, p99 {:.2} us; predict median {:.2} us, p99 {:.2} us ({} examples x {})",
            cfg.model.name,
            model.kind().name(),
            out["transform_and_predict"]["median_us"]
                .as_f64()
                .unwrap_or(0.0),
            out["transform_and_predict"]["p99_us"]
                .as_f64()
                .unwrap_or(0.0),
            out["predict"]["median_us"].as_f64().unwrap_or(0.0),
            out["predict"]["p99_us"].as_f64().unwrap_or(0.0),
            records.len(),
            a.repeat
        );
    }
    Ok(())
}
