//! `evergreen data inspect PATH`: schema, counts, label balance, per-feature missing rate and
//! bad-record reasons of any supported span file (or every ready span of a directory).
//! `evergreen data cache --config C --out F.evgx PATH...`: transform inputs once into an example
//! file (hashed features and labels) that training reads without parsing or hashing.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use evergreen_core::RawValue;
use evergreen_data::{Format, SpanDir, SpanFile, open_span};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Arguments of `data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Print schema, counts, label balance, missing rates and bad-record reasons.
    Inspect(InspectArgs),
    /// Transform inputs once with a config's feature spec into an example file (`.evgx`):
    /// training then reads hashed features directly (like Vowpal Wabbit's cache files).
    Cache(CacheArgs),
}

/// Arguments of `data cache`.
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Config whose `[features]` spec transforms the inputs (the file is tied to that spec).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Override a config key (repeatable), as for `evergreen train`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Output file (`.evgx`; uncompressed: reading it is the point); written atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Inputs, in order (files, or directories whose files are taken in name order).
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
}

/// Arguments of `data inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A span file, or a directory whose ready spans are all inspected.
    pub path: PathBuf,
    /// Format, when the extension does not say (csv, jsonl, tfrecord, vw, libsvm, libffm,
    /// parquet).
    #[arg(long)]
    pub format: Option<String>,
    /// Label column for the balance (default: the first of `label`, `class`, `target`, `y`
    /// present in the data).
    #[arg(long)]
    pub label: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Distinct values tracked per feature before counting stops.
const DISTINCT_CAP: usize = 100_000;

#[derive(Default, Serialize)]
struct FeatureStats {
    present: u64,
    kinds: BTreeMap<&'static str, u64>,
    min: Option<f64>,
    max: Option<f64>,
    sum: f64,
    numeric: u64,
    #[serde(skip)]
    distinct_set: HashSet<Vec<u8>>,
    distinct: usize,
    distinct_capped: bool,
    max_list_len: usize,
}

#[derive(Default, Serialize)]
struct Report {
    files: Vec<String>,
    records: u64,
    bad_records: u64,
    bad_reasons: BTreeMap<String, u64>,
    label_column: Option<String>,
    label_balance: BTreeMap<String, u64>,
    features: BTreeMap<String, FeatureStats>,
}

fn kind(v: &RawValue) -> &'static str {
    match v {
        RawValue::Missing => "missing",
        RawValue::Num(_) => "float",
        RawValue::Int(_) => "int64",
        RawValue::Str(_) => "string",
        RawValue::Bytes(_) => "bytes",
        RawValue::List(_) => "list",
        RawValue::Weighted(_) => "weighted",
    }
}

fn is_missing(v: &RawValue) -> bool {
    match v {
        RawValue::Missing => true,
        RawValue::Str(s) => s.trim().is_empty(),
        RawValue::List(l) => l.is_empty(),
        RawValue::Weighted(w) => w.is_empty(),
        _ => false,
    }
}

impl FeatureStats {
    fn observe_scalar(&mut self, v: &RawValue) {
        let x = match v {
            RawValue::Num(x) => Some(*x),
            RawValue::Int(i) => Some(*i as f64),
            RawValue::Str(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        if let Some(x) = x.filter(|x| x.is_finite()) {
            self.min = Some(self.min.map_or(x, |m| m.min(x)));
            self.max = Some(self.max.map_or(x, |m| m.max(x)));
            self.sum += x;
            self.numeric += 1;
        }
        if let Some(b) = v.canonical_bytes() {
            if self.distinct_set.len() < DISTINCT_CAP {
                self.distinct_set.insert(b.into_owned());
            } else if !self.distinct_set.contains(b.as_ref()) {
                self.distinct_capped = true;
            }
        }
    }

    fn observe(&mut self, v: &RawValue) {
        *self.kinds.entry(kind(v)).or_default() += 1;
        if is_missing(v) {
            return;
        }
        self.present += 1;
        match v {
            RawValue::List(items) => {
                self.max_list_len = self.max_list_len.max(items.len());
                for i in items {
                    self.observe_scalar(i);
                }
            }
            RawValue::Weighted(pairs) => {
                self.max_list_len = self.max_list_len.max(pairs.len());
                for (name, _) in pairs {
                    self.observe_scalar(&RawValue::Str(name.clone()));
                }
            }
            scalar => self.observe_scalar(scalar),
        }
    }
}

fn cache(a: CacheArgs) -> Result<()> {
    use evergreen_data::examples::{ExamplesHeader, ExamplesWriter};
    use evergreen_data::pipeline::{Item, Pipeline, Rejected};
    use std::io::Write;
    let cfg = evergreen_config::Config::load_with_overrides(&a.config, &a.overrides)?;
    let transformer = std::sync::Arc::new(evergreen_core::Transformer::new(cfg.features.clone())?);
    let mut files = Vec::new();
    for p in &a.inputs {
        files.extend(files_of(p, cfg.data.format)?);
    }
    if let Some(f) = files.iter().find(|f| f.format == Format::Examples) {
        bail!("{}: already an example file", f.path.display());
    }
    let header = ExamplesHeader {
        spec_fingerprint: cfg.features.fingerprint(),
        hash_bits: cfg.features.index_bits(),
        fields: u16::try_from(cfg.features.field_count())?,
    };
    let name = a
        .out
        .file_name()
        .with_context(|| format!("{}: not a file name", a.out.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = a.out.with_file_name(format!(".{name}.partial"));
    let file = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let mut w = ExamplesWriter::new(file, header)?;
    let mut bad: BTreeMap<String, u64> = BTreeMap::new();
    let mut options = cfg.pipeline.options();
    options.read.verify_crc = cfg.data.verify_checksums;
    options.ordered = true;
    // One pipeline per input keeps the inputs' order (a pipeline interleaves its shards).
    for f in &files {
        for item in Pipeline::start(vec![f.clone()], transformer.clone(), options) {
            match item {
                Item::Batch(batch) => {
                    for e in batch {
                        w.write(&e.features, e.label)?;
                    }
                }
                Item::Rejected(Rejected::Parse(b)) => {
                    *bad.entry(b.reason.to_string()).or_default() += 1
                }
                Item::Rejected(Rejected::Transform { error, .. }) => {
                    *bad.entry(error.reason().to_string()).or_default() += 1
                }
                Item::ShardDone { .. } => {}
                Item::Failed { error, .. } => bail!("{}: {error}", f.path.display()),
            }
        }
    }
    let written = w.written();
    let mut sink = w.into_inner();
    sink.flush()?;
    drop(sink);
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &a.out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), a.out.display()))?;
    println!(
        "wrote {} examples to {} (spec fingerprint {:016x}); {} bad records skipped{}",
        written,
        a.out.display(),
        header.spec_fingerprint,
        bad.values().sum::<u64>(),
        if bad.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                bad.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    Ok(())
}

fn files_of(path: &Path, format: Option<Format>) -> Result<Vec<SpanFile>> {
    if path.is_dir() {
        let files = SpanDir::new(path, false, format).list()?;
        if files.is_empty() {
            bail!("{}: no ready span of a supported format", path.display());
        }
        return Ok(files);
    }
    let format = format
        .or_else(|| Format::from_path(path))
        .with_context(|| {
            format!(
                "{}: unknown format; pass --format (csv, jsonl, tfrecord, vw, libsvm, libffm, parquet)",
                path.display()
            )
        })?;
    Ok(vec![
        SpanFile::at(path, format).with_context(|| format!("{}", path.display()))?,
    ])
}

fn parse_format(s: &str) -> Result<Format> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "csv" => Format::Csv,
        "jsonl" | "json" | "ndjson" => Format::Jsonl,
        "tfrecord" => Format::Tfrecord,
        "vw" => Format::Vw,
        "libsvm" | "svm" => Format::Libsvm,
        "libffm" | "ffm" => Format::Libffm,
        "examples" | "evgx" => Format::Examples,
        "parquet" | "parq" => Format::Parquet,
        other => bail!(
            "unknown format {other:?} (csv, jsonl, tfrecord, vw, libsvm, libffm, parquet, examples)"
        ),
    })
}

/// Runs `data`.
pub fn run(a: DataArgs) -> Result<()> {
    match a.command {
        DataCommand::Inspect(i) => inspect(i),
        DataCommand::Cache(c) => cache(c),
    }
}

fn inspect(a: InspectArgs) -> Result<()> {
    let format = a.format.as_deref().map(parse_format).transpose()?;
    let files = files_of(&a.path, format)?;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total_bytes),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {msg} [{elapsed_precise}]",
        )
        .expect("valid template"),
    );
    let mut report = Report::default();
    let mut label_candidates: Option<Vec<String>> = a.label.clone().map(|l| vec![l]);
    for f in &files {
        report.files.push(f.path.display().to_string());
        bar.set_message(f.name.clone());
        for item in open_span(f)? {
            match item {
                Ok(rec) => {
                    report.records += 1;
                    let candidates = label_candidates.get_or_insert_with(|| {
                        ["label", "class", "target", "y"]
                            .iter()
                            .filter(|c| rec.record.get(c).is_some())
                            .map(|c| c.to_string())
                            .take(1)
                            .collect()
                    });
                    for (name, v) in rec.record.fields() {
                        report
                            .features
                            .entry(name.to_string())
                            .or_default()
                            .observe(v);
                    }
                    if let Some(label) = candidates.first() {
                        let text = match rec.record.get(label) {
                            Some(v) if !is_missing(v) => v
                                .canonical_text()
                                .map(|t| t.into_owned())
                                .unwrap_or_else(|| v.to_string()),
                            _ => "<missing>".into(),
                        };
                        if report.label_balance.len() < 50
                            || report.label_balance.contains_key(&text)
                        {
                            *report.label_balance.entry(text).or_default() += 1;
                        }
                    }
                }
                Err(bad) => {
                    report.bad_records += 1;
                    *report
                        .bad_reasons
                        .entry(bad.reason.to_string())
                        .or_default() += 1;
                }
            }
        }
        bar.inc(f.size);
    }
    bar.finish_and_clear();
    report.label_column = label_candidates.and_then(|c| c.into_iter().next());
    for s in report.features.values_mut() {
        s.distinct = s.distinct_set.len();
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_text(&report);
    Ok(())
}

fn print_text(r: &Report) {
    println!("files:   {}", r.files.join(", "));
    println!("records: {} good, {} bad", r.records, r.bad_records);
    for (reason, n) in &r.bad_reasons {
        println!("  bad {reason}: {n}");
    }
    match &r.label_column {
        Some(l) => {
            let parts: Vec<String> = r
                .label_balance
                .iter()
                .map(|(k, n)| {
                    format!(
                        "{k}: {n} ({:.1}%)",
                        100.0 * *n as f64 / r.records.max(1) as f64
                    )
                })
                .collect();
            println!("label {l:?}: {}", parts.join(", "));
        }
        None => println!("label: none found (use --label COLUMN)"),
    }
    println!(
        "{:<24} {:>8} {:<22} {:>12} {:>12} {:>12} {:>9}",
        "feature", "missing", "kinds", "min", "max", "mean", "distinct"
    );
    for (name, s) in &r.features {
        let missing = 1.0 - s.present as f64 / r.records.max(1) as f64;
        let kinds: Vec<String> = s.kinds.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        let num = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
        let mean = (s.numeric > 0).then(|| s.sum / s.numeric as f64);
        let distinct = if s.distinct_capped {
            format!(">={}", s.distinct)
        } else {
            s.distinct.to_string()
        };
        println!(
            "{:<24} {:>7.1}% {:<22} {:>12} {:>12} {:>12} {:>9}",
            name,
            missing * 100.0,
            kinds.join(","),
            num(s.min),
            num(s.max),
            num(mean),
            distinct
        );
    }
}
