//! End to end: spans dropped into a directory become versions 1..N, served over REST with hot
//! reload under concurrent load (zero failed requests), predictions change between versions,
//! lineage links each version to its span, bad requests get clear errors.

mod common;

use common::*;
use evergreen_lineage::LineageStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn instance(header: &str, row: &str) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in header.split(',').zip(row.split(',')) {
        if k != "class" {
            m.insert(k.into(), serde_json::json!(v.parse::<f64>().unwrap()));
        }
    }
    serde_json::Value::Object(m)
}

#[test]
fn spans_become_served_versions_with_zero_failed_requests() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let config = write_config(root, true, "");
    let (header, rows) = elec2();
    let mut p = Proc::spawn(&["run", "--config", config.to_str().unwrap()], &[]);
    let base = p.rest_addr();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // No version yet: a clear 503/404 JSON error, not a crash.
    let r = client.get(format!("{base}/v1/models/m")).send().unwrap();
    assert!(r.status() == 404 || r.status() == 503, "{}", r.status());
    assert!(r.json::<serde_json::Value>().unwrap()["error"].is_string());

    let spans: Vec<&[String]> = rows.chunks(1000).take(6).collect();
    write_span(&root.join("in"), "span-001.csv", &header, spans[0]);
    p.wait_out("cycle 1", |l| l.starts_with("span span-001.csv"));
    eventually("v1 served", || {
        let r = client
            .get(format!("{base}/v1/models/m/versions/1"))
            .send()
            .ok()?;
        r.status().is_success().then_some(())
    });

    // Concurrent clients from here on: every request must succeed across every swap.
    let probe = instance(&header, &rows[5000]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (stop, base, probe) = (stop.clone(), base.clone(), probe.clone());
        clients.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut failures = Vec::new();
            let mut by_version: BTreeMap<u64, f64> = BTreeMap::new();
            let mut last = 0u64;
            let mut count = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .post(format!("{base}/v1/models/m:predict"))
                    .json(&serde_json::json!({ "instances": [probe] }))
                    .send();
                count += 1;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let v: u64 = r.headers()["x-evergreen-model-version"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!(v >= last, "version went backwards: {v} after {last}");
                        last = v;
                        let body: serde_json::Value = r.json().unwrap();
                        by_version.insert(v, body["predictions"][0].as_f64().unwrap());
                    }
                    Ok(r) => {
                        failures.push(format!("{} {}", r.status(), r.text().unwrap_or_default()))
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (failures, by_version, count)
        }));
    }

    for (i, chunk) in spans.iter().enumerate().skip(1) {
        let name = format!("span-{:03}.csv", i + 1);
        write_span(&root.join("in"), &name, &header, chunk);
        p.wait_out("the cycle line", |l| l.starts_with(&format!("span {name}")));
    }
    let published: Vec<u64> = p
        .seen_out
        .iter()
        .filter_map(|l| l.split("published v").nth(1))
        .map(|s| s.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(published, (1..=published.len() as u64).collect::<Vec<_>>());
    assert!(published.len() >= 4, "most spans publish: {:?}", p.seen_out);
    let newest = *published.last().unwrap();
    eventually("newest version served", || {
        let r = client
            .get(format!("{base}/v1/models/m/versions/{newest}"))
            .send()
            .ok()?;
        r.status().is_success().then_some(())
    });
    // Let every client observe the newest version before stopping them.
    eventually("clients on the newest version", || {
        let r = client
            .post(format!("{base}/v1/models/m:predict"))
            .json(&serde_json::json!({ "instances": [probe] }))
            .send()
            .ok()?;
        (r.headers()["x-evergreen-model-version"] == newest.to_string().as_str()).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let mut all: BTreeMap<u64, f64> = BTreeMap::new();
    let mut total = 0;
    for c in clients {
        let (failures, by_version, count) = c.join().unwrap();
        assert!(
            failures.is_empty(),
            "failed requests across swaps: {failures:?}"
        );
        total += count;
        all.extend(by_version);
    }
    assert!(total > 20, "clients made {total} requests");
    assert!(all.len() >= 2, "clients saw several versions: {all:?}");
    let first = all.values().next().unwrap();
    let last = all.values().last().unwrap();
    assert_ne!(first, last, "predictions change between versions: {all:?}");

    // Metrics are exported on both paths, with training and serving series.
    for path in ["/metrics", "/monitoring/prometheus/metrics"] {
        let text = client
            .get(format!("{base}{path}"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(
            text.contains("evergreen_training_cycles_total{model=\"m\",outcome=\"published\"}"),
            "{text}"
        );
        assert!(
            text.contains("evergreen_serving_requests_total{model=\"m\""),
            "{text}"
        );
        assert!(
            text.contains("evergreen_training_progressive_auc{model=\"m\"}"),
            "{text}"
        );
        // Where the cycles' time went, and the series the alert rules watch.
        for series in [
            "evergreen_training_stage_seconds_total{model=\"m\",stage=\"read\"}",
            "evergreen_training_stage_seconds_total{model=\"m\",stage=\"train\"}",
            "evergreen_training_stage_seconds_total{model=\"m\",stage=\"publish\"}",
            "evergreen_training_stage_seconds_total{model=\"m\",stage=\"commit\"}",
            "evergreen_training_utilization{model=\"m\"}",
            "evergreen_training_evaluation_accuracy{model=\"m\"}",
            "evergreen_training_gate_rejections_in_a_row{model=\"m\"}",
            "evergreen_training_last_cycle_timestamp_seconds{model=\"m\"}",
        ] {
            assert!(text.contains(series), "{series} missing: {text}");
        }
        assert!(
            text.contains(&format!(
                "evergreen_serving_model_version{{model=\"m\"}} {newest}"
            )),
            "{text}"
        );
    }

    // `evergreen status` of the running instance: versions, recent cycles, what it serves.
    let out = std::process::Command::new(bin())
        .args([
            "status",
            "--config",
            config.to_str().unwrap(),
            "--json",
            "--url",
            &base,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["model"], "m");
    let on_disk: Vec<u64> = status["registry"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(on_disk.last(), Some(&newest), "{status}");
    assert_eq!(status["trainer"]["last_version"], newest, "{status}");
    let cycles = status["recent_cycles"].as_array().unwrap();
    assert_eq!(cycles.len(), 5, "{status}");
    assert_eq!(cycles[0]["span"], "span-006.csv", "newest first: {status}");
    assert!(
        cycles[0]["progressive_auc"].as_f64().unwrap() > 0.5,
        "{status}"
    );
    let served = status["instance"]["served"].as_array().unwrap();
    assert_eq!(served[0]["version"], newest.to_string(), "{status}");
    assert!(status["instance"]["alerts_firing"].is_array(), "{status}");
    assert!(
        status["instance"]["drift"]["feature_psi"]
            .as_object()
            .unwrap()
            .contains_key("nswprice"),
        "{status}"
    );
    assert_eq!(status["instance"]["publication_paused"], false, "{status}");
    // Text form, and an instance that does not answer.
    let out = std::process::Command::new(bin())
        .args([
            "status",
            "--config",
            config.to_str().unwrap(),
            "--url",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("recent cycles") && text.contains("span-006.csv"),
        "{text}"
    );
    assert!(text.contains("instance: not reachable"), "{text}");

    // Bad requests: clear JSON errors with fitting codes; the server keeps serving.
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "/v1/models/nope:predict",
            r#"{"instances":[{}]}"#.into(),
            404,
        ),
        (
            "/v1/models/m/versions/999:predict",
            serde_json::json!({"instances":[probe]}).to_string(),
            404,
        ),
        ("/v1/models/m:predict", "{not json".into(), 400),
        (
            "/v1/models/m:predict",
            r#"{"instances":[{"nswprice":"cheap"}]}"#.into(),
            400,
        ),
        (
            "/v1/models/m:predict",
            format!(
                r#"{{"instances":[{{"nswprice":"{}"}}]}}"#,
                "9".repeat(70_000)
            ),
            413,
        ),
    ];
    for (path, body, code) in cases {
        let r = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), code, "{path}");
        let v: serde_json::Value = r.json().unwrap();
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {v}"
        );
    }

    // Clean shutdown on SIGTERM.
    let pid = p.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = p.wait_exit();
    assert!(status.success(), "exit {status:?}; stderr {:?}", p.seen_err);

    // Lineage links each version to its span and parent.
    let store = LineageStore::open(&root.join("state/lineage.sqlite")).unwrap();
    for v in &published {
        let l = store.model_lineage("m", *v).unwrap().unwrap();
        assert_eq!(l.spans.len(), 1);
        assert_eq!(l.parent_version, if *v == 1 { None } else { Some(v - 1) });
    }
    let out = std::process::Command::new(bin())
        .args([
            "lineage",
            "--config",
            config.to_str().unwrap(),
            "model",
            "m",
            "2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("parent version:  1"), "{text}");
    assert!(text.contains("span-002.csv"), "{text}");
    let out = std::process::Command::new(bin())
        .args([
            "lineage",
            "--config",
            config.to_str().unwrap(),
            "span",
            "span-003.csv",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("consumed by model m"));
}
