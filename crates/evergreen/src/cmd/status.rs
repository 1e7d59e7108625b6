//! `evergreen status`: where a model stands. From its files: the versions on disk, labels,
//! traffic split, pin, shadow and publication pause (registry), the trainer's watermark and
//! cycle count (state file), the last cycles with their metrics and gate decisions (lineage).
//! From the running instance (`--url`, default the config's `[serve]` address): the versions it
//! serves, the alerts firing, the drift state and the spans waiting (its `/metrics`).

use anyhow::{Context, Result};
use clap::Args;
use evergreen_config::Config;
use evergreen_lineage::LineageStore;
use evergreen_registry::Registry;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// `evergreen status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Config file of the model.
    #[arg(short, long)]
    pub config: PathBuf,
    /// Base URL of the running instance's REST API (default: the config's `[serve]` address).
    #[arg(long)]
    pub url: Option<String>,
    /// How many recent cycles to show.
    #[arg(long, default_value_t = 5)]
    pub cycles: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `status`.
pub fn run(a: StatusArgs) -> Result<()> {
    let cfg = Config::load(&a.config)?;
    let name = cfg.model.name.clone();
    let status = gather(&cfg, &a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_text(&name, &status);
    }
    Ok(())
}

fn gather(cfg: &Config, a: &StatusArgs) -> Result<Value> {
    let name = &cfg.model.name;
    let registry = match Registry::open_existing(cfg.model_dir(), name) {
        Ok(r) => {
            let traffic = r.traffic()?;
            json!({
                "versions": r.versions()?,
                "labels": r.labels()?,
                "canary_percent": traffic.canary_percent_at(evergreen_train::now_ms()),
                "pinned": traffic.pinned,
                "shadow": traffic.shadow,
                "publication_paused": traffic.publication_paused,
            })
        }
        Err(e) => json!({"error": e.to_string()}),
    };
    let state_path = cfg.state.dir.join(evergreen_train::STATE_FILE);
    let trainer = match std::fs::read(&state_path) {
        Ok(bytes) => {
            let s: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", state_path.display()))?;
            json!({"watermark": s["watermark"], "cycles": s["cycles"], "last_version": s["last_version"]})
        }
        Err(e) => json!({"error": format!("{}: {e}", state_path.display())}),
    };
    let cycles: Vec<Value> = match LineageStore::open(&cfg.lineage_path()) {
        Ok(store) => {
            let all = store.cycles(name)?;
            all.iter()
                .rev()
                .take(a.cycles)
                .map(|c| {
                    json!({
                        "span": c.span.name,
                        "parent_version": c.parent_version,
                        "published_version": c.published_version,
                        "gate_passed": c.gate_passed,
                        "progressive_logloss": c.progressive.logloss,
                        "progressive_auc": c.progressive.auc,
                        "finished_ms": c.finished_ms,
                    })
                })
                .collect()
        }
        Err(e) => vec![json!({"error": e.to_string()})],
    };
    let url = a.url.clone().or_else(|| {
        let s = cfg.serve.as_ref()?;
        (s.rest_api_port != 0).then(|| format!("http://{}:{}", s.host, s.rest_api_port))
    });
    let instance = match url {
        Some(url) => instance(&url, name),
        None => json!({"error": "no address: give --url (the config has no [serve] port)"}),
    };
    Ok(json!({
        "model": name,
        "registry": registry,
        "trainer": trainer,
        "recent_cycles": cycles,
        "instance": instance,
    }))
}

/// What the running instance at `url` says: served versions, alerts, drift, pending spans.
fn instance(url: &str, name: &str) -> Value {
    let client = match reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => return json!({"url": url, "error": e.to_string()}),
    };
    let get = |path: &str| -> Result<String, String> {
        let r = client
            .get(format!("{url}{path}"))
            .send()
            .map_err(|e| format!("{url}{path}: {e}"))?;
        let code = r.status();
        let text = r.text().map_err(|e| e.to_string())?;
        if code.is_success() {
            Ok(text)
        } else {
            Err(format!("{url}{path}: {code} {text}"))
        }
    };
    let served: Value = match get(&format!("/v1/models/{name}")) {
        Ok(text) => serde_json::from_str::<Value>(&text)
            .map(|v| v["model_version_status"].clone())
            .unwrap_or(Value::Null),
        Err(e) => return json!({"url": url, "error": e}),
    };
    let metrics = match get("/metrics") {
        Ok(t) => t,
        Err(e) => return json!({"url": url, "served": served, "error": e}),
    };
    let mut alerts = Vec::new();
    let mut psi = serde_json::Map::new();
    let mut detections = serde_json::Map::new();
    let (mut pending, mut paused) = (Value::Null, Value::Null);
    for (metric, labels, value) in samples(&metrics) {
        if labels.get("model").map(String::as_str) != Some(name) {
            continue;
        }
        match metric {
            "evergreen_alerts_firing" if value > 0.0 => {
                alerts.push(json!(labels.get("alertname")));
            }
            "evergreen_data_feature_psi" => {
                if let Some(f) = labels.get("feature") {
                    psi.insert(f.clone(), json!(value));
                }
            }
            "evergreen_training_drift_detections_total" => {
                if let Some(d) = labels.get("detector") {
                    detections.insert(d.clone(), json!(value));
                }
            }
            "evergreen_data_pending_spans" => pending = json!(value),
            "evergreen_training_publication_paused" => paused = json!(value > 0.0),
            _ => {}
        }
    }
    json!({
        "url": url,
        "served": served,
        "alerts_firing": alerts,
        "drift": {"feature_psi": psi, "detections": detections},
        "pending_spans": pending,
        "publication_paused": paused,
    })
}

/// The samples of an OpenMetrics text: name, labels, value.
fn samples(text: &str) -> Vec<(&str, std::collections::BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let mut map = std::collections::BTreeMap::new();
            // Label values here are model, feature, alert and detector names: no `",` inside.
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"")?;
                map.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
            Some((metric, map, value))
        })
        .collect()
}

fn print_text(name: &str, s: &Value) {
    println!("model {name}");
    let r = &s["registry"];
    if let Some(e) = r["error"].as_str() {
        println!("  registry: {e}");
    } else {
        println!(
            "  versions on disk: {}   labels: {}",
            r["versions"], r["labels"]
        );
        println!(
            "  traffic: canary {}%  pinned {}  shadow {}  publication {}",
            r["canary_percent"],
            r["pinned"],
            r["shadow"],
            match r["publication_paused"].as_str() {
                Some(why) => format!("PAUSED ({why})"),
                None => "running".into(),
            }
        );
    }
    let t = &s["trainer"];
    match t["error"].as_str() {
        Some(e) => println!("  trainer: {e}"),
        None => println!(
            "  trainer: {} cycles, watermark {}, last published v{}",
            t["cycles"], t["watermark"], t["last_version"]
        ),
    }
    println!("  recent cycles (newest first):");
    for c in s["recent_cycles"].as_array().into_iter().flatten() {
        if let Some(e) = c["error"].as_str() {
            println!("    {e}");
            continue;
        }
        println!(
            "    span {:<28} progressive logloss {:.4} auc {:.4}  gate {}  {}",
            c["span"].as_str().unwrap_or("?"),
            c["progressive_logloss"].as_f64().unwrap_or(f64::NAN),
            c["progressive_auc"].as_f64().unwrap_or(f64::NAN),
            if c["gate_passed"] == true {
                "PASS"
            } else {
                "FAIL"
            },
            match c["published_version"].as_u64() {
                Some(v) => format!("published v{v}"),
                None => "not published".into(),
            }
        );
    }
    let i = &s["instance"];
    match i["error"].as_str() {
        Some(e) => println!("  instance: not reachable ({e})"),
        None => {
            let served: Vec<String> = i["served"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    format!(
                        "v{} {}",
                        v["version"].as_str().unwrap_or("?"),
                        v["state"].as_str().unwrap_or("")
                    )
                })
                .collect();
            println!(
                "  instance {}: serving {}",
                i["url"].as_str().unwrap_or(""),
                served.join(", ")
            );
            println!(
                "  alerts firing: {}",
                match i["alerts_firing"].as_array() {
                    Some(a) if !a.is_empty() => a
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    _ => "none".into(),
                }
            );
            println!(
                "  drift: detections {}  feature PSI {}",
                i["drift"]["detections"], i["drift"]["feature_psi"]
            );
            println!("  pending spans: {}", i["pending_spans"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_samples_are_parsed_with_their_labels() {
        let text = "# HELP x y\n\
                    evergreen_alerts_firing{model=\"m\",alertname=\"EvergreenDataLag\"} 1\n\
                    evergreen_data_pending_spans{model=\"m\"} 3\n\
                    evergreen_up 1\n";
        let s = samples(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].0, "evergreen_alerts_firing");
        assert_eq!(s[0].1["alertname"], "EvergreenDataLag");
        assert_eq!(s[0].1["model"], "m");
        assert_eq!(s[1].2, 3.0);
        assert!(s[2].1.is_empty());
    }
}
