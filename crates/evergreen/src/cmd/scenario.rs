//! `evergreen demo --scenario drift`: the autopilot on a scripted stream. Ten spans of a
//! synthetic Elec2-shaped stream: the label follows `nswprice` for spans 1-4, then the concept
//! changes abruptly (it follows `nswdemand` from span 5 on), span 8 is poisoned (its labels
//! flipped), and spans 9-10 are normal again. The trainer runs with drift detection, the
//! adaptive cadence, its alert rules and TensorBoard on; a server with online feedback and
//! canary verdicts serves the versions. After the stream an old version (trained on the old
//! concept) is forced live as a 50% canary, live traffic is labelled by the new concept, and
//! the canary verdict must roll it back. Every step is printed, the expectations checked at the
//! end (exit status 1 if one fails), and the TensorBoard run directory holds all of it.

use super::run::cycle_line;
use super::runtime;
use crate::CODE_VERSION;
use anyhow::{Context, Result, bail};
use evergreen_config::Config;
use evergreen_metrics::Metrics;
use evergreen_serve::{ModelSource, ServeOptions};
use evergreen_train::{CycleReport, Outcome, Trainer};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SPANS: usize = 10;
const ROWS: usize = 1000;
/// The concept changes at this span (1-based).
const CHANGE: usize = 5;
/// This span's labels are flipped.
const POISONED: usize = 8;
const HEADER: &str = "period,nswprice,nswdemand,vicprice,vicdemand,transfer,class";

/// A deterministic uniform [0, 1) source.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A row of span `span` (1-based): the label of the concept in force, flipped when poisoned.
fn row(span: usize, r: &mut Lcg) -> (String, bool) {
    let f: Vec<f64> = (0..6).map(|_| r.next()).collect();
    let noise = r.next() < 0.05;
    let mut y = if span < CHANGE {
        f[1] > 0.5
    } else {
        f[2] > 0.5
    } ^ noise;
    if span == POISONED {
        y = !y;
    }
    let line = format!(
        "{},{},{},{},{},{},{}",
        f[0],
        f[1],
        f[2],
        f[3],
        f[4],
        f[5],
        u8::from(y)
    );
    (line, y)
}

const CONFIG: &str = r#"version = 1
[model]
name = "drift"
kind = "ftrl"
[model.ftrl]
alpha = 0.5
[data]
dir = "data/incoming"
[features]
hash_bits = 16
label = { column = "class" }
[[features.numeric]]
name = "period"
[[features.numeric]]
name = "nswprice"
buckets = [0.25, 0.5, 0.75]
[[features.numeric]]
name = "nswdemand"
buckets = [0.25, 0.5, 0.75]
[[features.numeric]]
name = "vicprice"
[[features.numeric]]
name = "vicdemand"
[[features.numeric]]
name = "transfer"
[training]
epochs = 1
holdout_fraction = 0.2
[gate]
min_auc = 0.6
max_auc_drop = 0.05
max_logloss_increase = 0.05
min_examples = 50
min_baseline_auc = 0.3
[registry]
base_path = "models"
keep_versions = 20
[state]
dir = "state"
tensorboard_dir = "tensorboard"
trace_dir = "traces"
[cadence]
min_interval_s = 0
max_interval_s = 3600
max_spans_per_cycle = 1
[alerts]
actions = { EvergreenConceptDrift = "raise_frequency" }
"#;

/// What the scenario observed, checked at the end.
#[derive(Default)]
struct Observed {
    /// The last version trained on the old concept.
    old_version: Option<u64>,
    drift_at: Vec<usize>,
    poisoned: Option<Outcome>,
    cadence: Vec<f64>,
    rollback: Option<Value>,
}

/// Runs the drift scenario in `workdir`; returns an error when an expectation fails.
pub fn run(workdir: &Path) -> Result<()> {
    let config_path = workdir.join("config.toml");
    std::fs::write(&config_path, CONFIG)?;
    let cfg = Config::load(&config_path)?;
    std::fs::create_dir_all(&cfg.data.dir)?;
    let metrics = Arc::new(Metrics::new());
    let mut trainer = Trainer::open(cfg.clone(), metrics.clone(), CODE_VERSION)?;
    println!(
        "evergreen demo --scenario drift: {SPANS} spans of {ROWS} rows; the concept changes at span \
         {CHANGE}, span {POISONED} is poisoned (labels flipped); work dir {}",
        workdir.display()
    );
    let mut r = Lcg(2026);
    let mut seen = Observed::default();
    for span in 1..=SPANS {
        let rows: Vec<String> = (0..ROWS).map(|_| row(span, &mut r).0).collect();
        let name = format!("span-{span:03}.csv");
        let dir = &trainer.config().data.dir;
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, format!("{HEADER}\n{}\n", rows.join("\n")))?;
        std::fs::rename(&tmp, dir.join(&name))?;
        let Some(report) = trainer.run_once()? else {
            bail!("span {name} was written but no cycle ran");
        };
        observe(span, &report, &metrics, &mut seen);
    }

    // A server with feedback and canary verdicts; an old version forced live as a canary.
    let token = format!("{:032x}", rand_token());
    let token_file = workdir.join("admin-token");
    std::fs::write(&token_file, &token)?;
    let opts = ServeOptions {
        models: vec![ModelSource {
            name: cfg.model.name.clone(),
            base_path: cfg.model_dir(),
            ..ModelSource::default()
        }],
        admin: super::serve::admin_options(Some(&token_file), Some(cfg.lineage_path()))?,
        feedback: Some(evergreen_serve::feedback::FeedbackOptions {
            canary: Some(evergreen_serve::feedback::CanaryPolicy {
                min_examples: 200,
                max_logloss_increase: 0.01,
                promote: true,
            }),
            ..Default::default()
        }),
        ..ServeOptions::default()
    };
    let rt = runtime()?;
    let server = rt.block_on(evergreen_serve::spawn(
        opts,
        metrics.clone(),
        "127.0.0.1:0".parse()?,
    ))?;
    let base = format!("http://{}", server.addr);
    let registry = trainer.registry();
    let newest = registry
        .latest()?
        .context("the stream published versions")?;
    let old = seen
        .old_version
        .context("a version was published on the old concept")?;
    registry.promote(Some(newest))?;
    registry.split(
        &evergreen_registry::SplitRequest {
            canary: old,
            percent: 50.0,
            ..Default::default()
        },
        evergreen_train::now_ms(),
    )?;
    server.server().reload_now();
    println!(
        "forced live: v{old} (trained on the old concept) as a 50% canary beside stable \
         v{newest}; live traffic is labelled by the new concept"
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut feedback = Vec::new();
    let mut by_version = std::collections::BTreeMap::<u64, usize>::new();
    for i in 0..800 {
        let (line, y) = row(SPANS, &mut r);
        let values: Vec<f64> = line
            .split(',')
            .take(6)
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        let instance: serde_json::Map<String, Value> = HEADER
            .split(',')
            .zip(&values)
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let resp = client
            .post(format!("{base}/v1/models/drift:predict"))
            .header("x-evergreen-key", format!("user-{i}"))
            .json(&json!({ "instances": [instance] }))
            .send()?;
        if !resp.status().is_success() {
            bail!("predict failed: {}", resp.status());
        }
        let version: u64 = resp.headers()["x-evergreen-model-version"]
            .to_str()?
            .parse()?;
        *by_version.entry(version).or_default() += 1;
        let id = resp.headers()["x-evergreen-prediction-id"]
            .to_str()?
            .to_string();
        feedback.push(json!({"prediction_id": id, "label": u8::from(y)}));
    }
    println!("live traffic: 800 requests answered by {by_version:?}; labels sent back");
    let verdict: Value = client
        .post(format!("{base}/admin/v1/models/drift:feedback"))
        .bearer_auth(&token)
        .json(&json!({ "feedback": feedback }))
        .send()?
        .json()?;
    println!(
        "live metrics: {}\ncanary verdict: {}",
        verdict["live"], verdict["canary"]
    );
    if verdict["canary"]["verdict"] == "rollback" {
        seen.rollback = Some(verdict["canary"].clone());
    }
    let labels = registry.labels()?;
    // The canary's rollback, told to TensorBoard too (beside the trainer's event file).
    if let Some(dir) = &trainer.config().state.tensorboard_dir {
        let mut w = evergreen_train::tensorboard::EventWriter::create(dir)?;
        let text = format!(
            "canary v{old} {}: {}",
            verdict["canary"]["verdict"].as_str().unwrap_or("?"),
            verdict["canary"]["reason"].as_str().unwrap_or("")
        );
        w.text(
            "serving/canary_verdict",
            trainer.state().cycles as i64,
            &text,
        )?;
        w.flush()?;
    }
    rt.block_on(server.shutdown());

    // The expectations.
    let mut failed = Vec::new();
    let mut check = |ok: bool, what: String| {
        println!("{} {what}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failed.push(what);
        }
    };
    let first = seen.drift_at.iter().copied().find(|&s| s >= CHANGE);
    check(
        first.is_some_and(|s| s <= CHANGE + 1) && seen.drift_at.iter().all(|&s| s >= CHANGE),
        format!(
            "concept drift detected at span {first:?} (change at {CHANGE}; bound: 1 span late), \
             none before (drift at {:?})",
            seen.drift_at
        ),
    );
    let floor_after_drift = first.is_some_and(|s| seen.cadence.get(s - 1) == Some(&0.0));
    check(
        floor_after_drift && seen.cadence.get(CHANGE - 2).is_some_and(|w| *w > 1.0),
        format!(
            "cadence raised on drift (wait before the change {:?} s, after it {:?} s)",
            seen.cadence.get(CHANGE - 2),
            first.and_then(|s| seen.cadence.get(s - 1))
        ),
    );
    check(
        seen.poisoned == Some(Outcome::Rejected),
        format!(
            "poisoned span {POISONED} rejected by the gate ({:?})",
            seen.poisoned
        ),
    );
    check(
        seen.rollback.is_some() && !labels.contains_key("canary"),
        format!(
            "forced-live v{old} rolled back by its live metrics (labels now {labels:?}; v{newest} \
             newest)"
        ),
    );
    if let Some(dir) = &trainer.config().state.tensorboard_dir {
        println!("TensorBoard: tensorboard --logdir {}", dir.display());
    }
    if !failed.is_empty() {
        bail!(
            "{} expectation(s) not met: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

fn observe(span: usize, report: &CycleReport, metrics: &Metrics, seen: &mut Observed) {
    let drift = report.drift.clone().unwrap_or_default();
    let cadence = metrics
        .cadence_seconds
        .get_or_create(&Metrics::model("drift"))
        .get();
    let firing: Vec<String> = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("evergreen_alerts_firing{") && l.ends_with(" 1"))
        .filter_map(|l| {
            l.split("alertname=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect();
    println!(
        "{}  | drift: loss {} fields {:?}  cadence wait {cadence:.0} s  alerts {:?}",
        cycle_line(report),
        if drift.loss_change { "UP" } else { "steady" },
        drift.drifted_fields,
        firing
    );
    if drift.drifted() {
        seen.drift_at.push(span);
    }
    if span == POISONED {
        seen.poisoned = Some(report.outcome);
    }
    if span < CHANGE && report.version.is_some() {
        seen.old_version = report.version;
    }
    seen.cadence.push(cadence);
}

/// A token for the scenario's admin API (it never leaves the process and its work dir): 16
/// bytes of the kernel's randomness, or the clock where there is none.
fn rand_token() -> u128 {
    use std::io::Read;
    let mut b = [0u8; 16];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u128::from_le_bytes(b),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                ^ (u128::from(std::process::id()) << 64)
        }
    }
}
