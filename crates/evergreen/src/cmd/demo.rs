//! `evergreen demo`: streams the shipped Elec2 data set span by span into a data directory and
//! runs the whole loop on it (progressive validation, training, gate, publish, hot reload into
//! the REST server, lineage, metrics), printing one line per cycle and a summary.

use super::run::{cycle_line, run_loop, start_server};
use super::{Stop, fmt_metric, init_logging, runtime};
use crate::CODE_VERSION;
use anyhow::{Context, Result, bail};
use clap::Args;
use evergreen_config::{Config, EXAMPLE};
use evergreen_metrics::Metrics;
use evergreen_train::{CycleReport, Outcome, Trainer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Elec2 stream (see assets/SOURCE.md).
const ELEC2: &str = include_str!("../../assets/elec2.csv");
const MODEL: &str = "elec2";

/// Arguments of `demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Exit when the stream ends (otherwise keep watching and serving until Ctrl-C).
    #[arg(long)]
    pub once: bool,
    /// Keep everything under DIR (config.toml, data/incoming, models/elec2, state/lineage.sqlite,
    /// state/quarantine, demo.log); default: a temporary directory removed at exit.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Records per span.
    #[arg(long, default_value_t = 2000)]
    pub span_rows: usize,
    /// Stop after this many spans.
    #[arg(long)]
    pub max_spans: Option<usize>,
    /// REST port of the demo's server (0 picks a free one).
    #[arg(long = "rest_api_port", default_value_t = 0)]
    pub rest_api_port: u16,
    /// A scripted scenario instead of the Elec2 stream: `drift` (a concept change, a poisoned
    /// span and a bad version forced live; see `evergreen demo --scenario drift --help`).
    #[arg(long, value_parser = ["drift"])]
    pub scenario: Option<String>,
}

struct Totals {
    cycles: u64,
    published: u64,
    rejected: u64,
    other: u64,
    records: u64,
    logloss_sum: f64,
    auc_sum: f64,
    weighted: u64,
}

/// Runs `demo`.
pub fn run(a: DemoArgs) -> Result<()> {
    init_logging("warn");
    if a.span_rows < 100 {
        bail!("--span-rows must be at least 100 (the gate needs a held-out slice)");
    }
    let temp;
    let workdir = match &a.workdir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.canonicalize()?
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    if a.scenario.as_deref() == Some("drift") {
        return super::scenario::run(&workdir);
    }
    let config_path = workdir.join("config.toml");
    let text = EXAMPLE.replace(
        "rest_api_port = 8501",
        &format!("rest_api_port = {}", a.rest_api_port),
    );
    std::fs::write(&config_path, text)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let cfg = Config::load(&config_path)?;
    std::fs::create_dir_all(&cfg.data.dir)?;
    let metrics = Arc::new(Metrics::new());
    let rt = runtime()?;
    let stop = Stop::install(&rt);
    let serve = cfg.serve.clone().expect("the example config serves");
    let mut trainer = Trainer::open(cfg, metrics.clone(), CODE_VERSION)?;
    let server = start_server(&rt, trainer.config(), &serve, metrics)?;
    let base_url = format!("http://{}", server.addr);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(workdir.join("demo.log"))?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    let (header, body) = ELEC2
        .split_once('\n')
        .context("embedded stream has a header")?;
    let rows: Vec<&str> = body.lines().filter(|l| !l.is_empty()).collect();
    let spans: Vec<&[&str]> = rows.chunks(a.span_rows).collect();
    let limit = a.max_spans.unwrap_or(spans.len()).min(spans.len());
    println!(
        "evergreen demo: Elec2 stream, {} records in {} spans of {} rows; work dir {}",
        rows.len(),
        limit,
        a.span_rows,
        workdir.display()
    );
    let mut totals = Totals {
        cycles: 0,
        published: 0,
        rejected: 0,
        other: 0,
        records: 0,
        logloss_sum: 0.0,
        auc_sum: 0.0,
        weighted: 0,
    };
    let started = Instant::now();
    for (i, chunk) in spans.iter().take(limit).enumerate() {
        if stop.is_set() {
            break;
        }
        let name = format!("elec2-{:05}.csv", i + 1);
        if trainer.state().watermark.as_deref() >= Some(name.as_str()) {
            continue; // a re-run in the same work dir resumes after the watermark
        }
        write_span(&trainer.config().data.dir, &name, header, chunk)?;
        let Some(report) = trainer.run_once()? else {
            bail!("span {name} was written but the trainer did not find it");
        };
        let mut line = cycle_line(&report);
        if let Some(v) = report.serving_version {
            let (answered, p) = predict(&client, &base_url, v, header, chunk[0])?;
            line.push_str(&format!("  REST v{answered} p(up)={p:.3}"));
        }
        println!("{line}");
        writeln!(log, "{line}")?;
        totals.add(&report);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let serving = trainer.state().last_version;
    let summary = format!(
        "summary: {} cycles ({} published, {} rejected by the gate, {} held back or empty), {} records in {:.1} s; \
         progressive (each span predicted before it was learned): mean logloss {} mean auc {}; serving {} v{}",
        totals.cycles,
        totals.published,
        totals.rejected,
        totals.other,
        totals.records,
        elapsed,
        fmt_metric((totals.weighted > 0).then(|| totals.logloss_sum / totals.weighted as f64)),
        fmt_metric((totals.weighted > 0).then(|| totals.auc_sum / totals.weighted as f64)),
        MODEL,
        serving.map_or("-".into(), |v| v.to_string())
    );
    println!("{summary}");
    writeln!(log, "{summary}")?;
    if a.workdir.is_some() {
        println!(
            "inspect: evergreen serve --rest_api_port=8501 --model_name={MODEL} --model_base_path={}\n         evergreen lineage --workdir {} model {MODEL} {}",
            workdir.join("models").join(MODEL).display(),
            workdir.display(),
            serving.unwrap_or(1)
        );
    }
    if !a.once && !stop.is_set() {
        println!(
            "stream finished; still watching {} and serving on {base_url} (Ctrl-C to stop)",
            trainer.config().data.dir.display()
        );
        run_loop(&mut trainer, false, &stop, |r| {
            println!("{}", cycle_line(r))
        })?;
    }
    rt.block_on(server.shutdown());
    Ok(())
}

impl Totals {
    fn add(&mut self, r: &CycleReport) {
        self.cycles += 1;
        self.records += r.records;
        match r.outcome {
            Outcome::Published => self.published += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::HeldBack | Outcome::Empty => self.other += 1,
        }
        if let Some(p) = r.progressive
            && p.logloss.is_finite()
            && p.auc.is_finite()
        {
            self.logloss_sum += p.logloss * p.examples as f64;
            self.auc_sum += p.auc * p.examples as f64;
            self.weighted += p.examples;
        }
    }
}

/// Writes a span the way producers must: to a hidden temp name, then rename into place.
fn write_span(dir: &Path, name: &str, header: &str, rows: &[&str]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut text = String::with_capacity(rows.len() * 64);
    text.push_str(header);
    text.push('\n');
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

/// Waits until the server serves `version`, then predicts one record over REST; returns the
/// answering version (from the `x-evergreen-model-version` header) and the probability.
fn predict(
    client: &reqwest::blocking::Client,
    base: &str,
    version: u64,
    header: &str,
    row: &str,
) -> Result<(u64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let status_url = format!("{base}/v1/models/{MODEL}/versions/{version}");
    loop {
        if client.get(&status_url).send()?.status().is_success() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the server did not load version {version} within 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut instance = serde_json::Map::new();
    for (k, v) in header.split(',').zip(row.split(',')) {
        if k != "class" {
            let x: f64 = v.parse().unwrap_or(f64::NAN);
            instance.insert(k.to_string(), serde_json::json!(x));
        }
    }
    let resp = client
        .post(format!("{base}/v1/models/{MODEL}:predict"))
        .json(&serde_json::json!({ "instances": [instance] }))
        .send()?;
    let answered = resp
        .headers()
        .get("x-evergreen-model-version")
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let status = resp.status();
    let body: serde_json::Value = resp.json()?;
    if !status.is_success() {
        bail!("predict failed with {status}: {body}");
    }
    let p = body["predictions"][0].as_f64().context("predictions[0]")?;
    Ok((answered, p))
}
