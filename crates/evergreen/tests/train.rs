//! `evergreen train`: backfill over files with the same window code as `run`: an offline
//! evaluation leaves the registry untouched, a publishing backfill adds exactly one version,
//! warm-starts from the latest one, never moves the `run` watermark, and bad input is held back.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn train(cfg: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .arg("train")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn versions(root: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(root.join("models/m"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn backfill_windows_publish_once_and_warm_start() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = write_config(root, false, "");
    let (header, rows) = elec2();
    let data = root.join("backfill");
    write_span(&data, "a.csv", &header, &rows[..6000]);
    write_span(&data, "b.csv", &header, &rows[6000..9000]);

    // Offline evaluation: windows of 1000 rows, nothing written to the registry.
    let r1 = root.join("r1.json");
    let (ok, out, err) = train(
        &cfg,
        &[
            "--data",
            data.join("a.csv").to_str().unwrap(),
            data.join("b.csv").to_str().unwrap(),
            "--window-rows",
            "1000",
            "--publish",
            "none",
            "--report",
            r1.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("nothing published"), "{out}");
    assert!(versions(root).is_empty());
    let j = report(&r1);
    assert_eq!(j["windows"], 9);
    assert_eq!(j["examples"], 9000);
    assert_eq!(j["window_reports"].as_array().unwrap().len(), 9);
    assert_eq!(j["progressive"]["examples"], 9000);
    // Every training-slice example is predicted once before it is learned (first epoch).
    let online = j["online"]["examples"].as_u64().unwrap();
    assert!(online > 6000 && online < 9000, "{online}");
    let ll = j["progressive"]["logloss"].as_f64().unwrap();
    assert!(
        ll < 0.69,
        "a learning model beats the constant 0.5 predictor: {ll}"
    );

    // Publishing backfill: one version, with both files as its spans.
    let r2 = root.join("r2.json");
    let (ok, out, err) = train(
        &cfg,
        &[
            "--data",
            data.to_str().unwrap(),
            "--window-rows",
            "3000",
            "--report",
            r2.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("published v1"), "{out}");
    assert_eq!(versions(root), [1]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("models/m/1/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["spans"],
        serde_json::json!(["backfill-a.csv", "backfill-b.csv"])
    );
    assert!(manifest["watermark"].is_null(), "{manifest}");
    assert_eq!(manifest["positions"].as_array().unwrap().len(), 2);
    assert_eq!(report(&r2)["parent_version"], serde_json::Value::Null);

    // A second backfill warm-starts from v1: its first window is predicted by a trained model.
    let r3 = root.join("r3.json");
    let (ok, out, err) = train(
        &cfg,
        &[
            "--data",
            data.join("b.csv").to_str().unwrap(),
            "--report",
            r3.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert_eq!(versions(root), [1, 2]);
    let j = report(&r3);
    assert_eq!(j["parent_version"], 1);
    assert_eq!(j["version"], 2);
    // A fresh model predicts 0.5 everywhere (logloss ln 2 = 0.693) on its first window.
    let warm = j["progressive"]["logloss"].as_f64().unwrap();
    assert!(warm < 0.68, "warm-started model predicts b.csv: {warm}");

    // `run` then consumes the data directory from the start: the backfill moved no watermark.
    write_span(&root.join("in"), "s1.csv", &header, &rows[9000..10000]);
    let out = Command::new(bin())
        .args(["run", "--once", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("span s1.csv"), "{text}");
    assert_eq!(versions(root), [1, 2, 3]);
}

#[test]
fn poisoned_file_is_held_back_and_overrides_are_applied() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = write_config(root, false, "");
    let (header, rows) = elec2();
    let data = root.join("backfill");
    let mut bad: Vec<String> = rows[..100].to_vec();
    for r in bad.iter_mut().take(50) {
        *r = r.replacen(',', ",oops,", 1).replacen(",oops,", ",x", 1);
    }
    write_span(&data, "bad.csv", &header, &bad);
    write_span(&data, "good.csv", &header, &rows[100..1100]);
    let r = root.join("r.json");
    let (ok, out, err) = train(
        &cfg,
        &[
            "--data",
            data.to_str().unwrap(),
            "--set",
            "training.epochs=2",
            "--set",
            "training.holdout_fraction=0",
            "--publish",
            "none",
            "--report",
            r.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("held back:") && out.contains("bad.csv"),
        "{out}"
    );
    let j = report(&r);
    assert_eq!(j["examples"], 1050);
    assert_eq!(j["bad"], 50);
    assert_eq!(j["windows"], 1);
    // holdout 0: every example of good.csv trained, twice.
    assert_eq!(j["trained"], 2000);
    assert!(root.join("state/quarantine").exists());

    let (ok, _, err) = train(&cfg, &["--data", "/nonexistent.csv"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent.csv"), "{err}");
    let (ok, _, err) = train(&cfg, &["--data", "x.csv", "--set", "training.epochs=0"]);
    assert!(!ok);
    assert!(err.contains("training.epochs"), "{err}");
    // Publishing without a holdout could never pass the gate: refused up front, with the way out.
    let (ok, _, err) = train(
        &cfg,
        &[
            "--data",
            data.to_str().unwrap(),
            "--set",
            "training.holdout_fraction=0",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("training.holdout_fraction is 0") && err.contains("--publish none"),
        "{err}"
    );
}

#[test]
fn a_file_whose_framing_breaks_part_way_trains_the_windows_before_the_break() {
    use evergreen_data::tfrecord::{FeatureValues, TfRecordWriter, encode_example};
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = write_config(root, false, "");
    let (header, rows) = elec2();
    let names: Vec<&str> = header.split(',').collect();
    let path = root.join("cut.tfrecord");
    let mut w = TfRecordWriter::new(Vec::new());
    for r in &rows[..5000] {
        let f: Vec<(String, FeatureValues)> = names
            .iter()
            .zip(r.split(','))
            .map(|(k, v)| {
                let x: f64 = v.parse().unwrap();
                let v = if *k == "class" {
                    FeatureValues::Int64(vec![x as i64])
                } else {
                    FeatureValues::Float(vec![x as f32])
                };
                (k.to_string(), v)
            })
            .collect();
        w.write_record(&encode_example(&f)).unwrap();
    }
    let mut bytes = w.into_inner();
    // Cut inside record 4,501 (records of this stream all have one length): the tail cannot be
    // framed.
    let keep = bytes.len() * 9 / 10 + 7;
    bytes.truncate(keep);
    std::fs::write(&path, bytes).unwrap();
    let r = root.join("r.json");
    let (ok, out, err) = train(
        &cfg,
        &[
            "--data",
            path.to_str().unwrap(),
            "--window-rows",
            "1000",
            "--publish",
            "none",
            "--report",
            r.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("held back:") && out.contains("the 4 windows before it were trained"),
        "{out}"
    );
    let j = report(&r);
    assert_eq!(j["windows"], 4);
    assert_eq!(j["bad_by_reason"]["truncated_record"], 1, "{j}");
}

#[test]
fn every_model_kind_trains_publishes_and_serves() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = write_config(root, false, "");
    let (header, rows) = elec2();
    let data = root.join("data.csv");
    write_span(root, "data.csv", &header, &rows[..4000]);
    for kind in ["ftrl", "fm", "ffm", "deep"] {
        let name = format!("m{kind}");
        let (ok, out, err) = train(
            &cfg,
            &[
                "--data",
                data.to_str().unwrap(),
                "--window-rows",
                "1000",
                "--quiet",
                "--set",
                &format!("model.kind={kind}"),
                "--set",
                &format!("model.name={name}"),
                "--set",
                &format!("state.dir=state-{kind}"),
            ],
        );
        assert!(ok && out.contains("published v1"), "{kind}: {out}\n{err}");
        let model_dir = root.join("models").join(&name);
        let mut s = Proc::spawn(
            &[
                "serve",
                "--rest_api_port=0",
                &format!("--model_name={name}"),
                &format!("--model_base_path={}", model_dir.display()),
            ],
            &[],
        );
        let base = s.rest_addr();
        let status: serde_json::Value = eventually("status", || {
            let r = reqwest::blocking::get(format!("{base}/v1/models/{name}")).ok()?;
            r.status().is_success().then(|| r.json().unwrap())
        });
        assert_eq!(status["model_version_status"][0]["state"], "AVAILABLE");
        let r: serde_json::Value = reqwest::blocking::Client::new()
            .post(format!("{base}/v1/models/{name}:predict"))
            .json(&serde_json::json!({"instances": [
                {"period": 0.5, "nswprice": 0.06, "nswdemand": 0.4, "vicprice": 0.003,
                 "vicdemand": 0.4, "transfer": 0.41},
                {"period": 0.1, "nswprice": 0.02, "nswdemand": 0.2, "vicprice": 0.003,
                 "vicdemand": 0.4, "transfer": 0.41}]}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let p = r["predictions"].as_array().unwrap();
        assert_eq!(p.len(), 2, "{kind}: {r}");
        for v in p {
            let v = v.as_f64().unwrap();
            assert!(v > 0.0 && v < 1.0, "{kind}: {r}");
        }
        assert_ne!(p[0], p[1], "{kind}: a trained model tells the two apart");
    }
}

#[test]
fn an_example_file_trains_exactly_like_its_source_and_refuses_another_spec() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = write_config(root, false, "");
    let (header, rows) = elec2();
    let mut rows = rows[..3000].to_vec();
    rows[10] = rows[10].replacen(',', ",x", 1); // one bad record, skipped by the cache
    write_span(root, "src.csv", &header, &rows);
    let out = Command::new(bin())
        .args(["data", "cache", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(root.join("src.evgx"))
        .arg(root.join("src.csv"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("wrote 2999 examples") && text.contains("1 bad"),
        "{text}"
    );
    let run = |input: &str, extra: &[&str]| {
        let r = root.join(format!("{input}.json"));
        let mut args = vec![
            "--data".to_string(),
            root.join(input).display().to_string(),
            "--window-rows".into(),
            "1000".into(),
            "--publish".into(),
            "none".into(),
            "--report".into(),
            r.display().to_string(),
            // The holdout split hashes record numbers, which differ between the source (line
            // numbers) and the example file (example numbers): without holdout, training and
            // metrics must be identical.
            "--set".into(),
            "training.holdout_fraction=0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = train(&cfg, &args);
        (ok, out, err, r)
    };
    let (ok, out, err, a) = run("src.csv", &[]);
    assert!(ok, "{out}\n{err}");
    let (ok, out, err, b) = run("src.evgx", &[]);
    assert!(ok, "{out}\n{err}");
    let (a, b) = (report(&a), report(&b));
    assert_eq!(a["examples"], b["examples"]);
    assert_eq!(a["online"], b["online"], "same vectors, same training");
    assert_eq!(a["progressive"], b["progressive"]);
    // Another spec: the file is held back as a whole, never misread.
    let (ok, out, err, _) = run("src.evgx", &["--set", "features.hash_bits=12"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("held back") && out.contains("written for another feature spec"),
        "{out}"
    );
    // data inspect explains what the file is instead of misreading it.
    let out = Command::new(bin())
        .args(["data", "inspect"])
        .arg(root.join("src.evgx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hashed feature vectors"));
}

#[test]
fn a_backfill_killed_anywhere_leaves_the_registry_untouched_and_reruns_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = write_config(root, false, "[training.replay]\ncapacity = 500\n");
    let (header, rows) = elec2();
    let data = root.join("backfill");
    write_span(&data, "a.csv", &header, &rows[..3000]);
    write_span(&data, "b.csv", &header, &rows[3000..6000]);
    let args = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--window-rows",
        "1000",
        "--quiet",
    ];
    // Killed mid-read of the second file, after the first file, and just after the publish
    // (before lineage and state): the first two leave no version, the last one a complete one.
    for (point, expected) in [
        ("mid_read:30", 0),
        ("after_read:1", 0),
        ("after_publish", 1),
    ] {
        let out = Command::new(bin())
            .args(args)
            .env("EVERGREEN_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the failpoint fired");
        assert_eq!(versions(root).len(), expected, "{point}");
        if expected == 1 {
            // The version directory is complete (the rename is the commit): it loads.
            let reg = evergreen_registry::Registry::open(root.join("models/m"), "m").unwrap();
            reg.load(1).unwrap();
        }
    }
    // A clean rerun warm-starts from the committed version and publishes the next one.
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(versions(root), [1, 2]);
}

#[test]
fn the_last_k_spans_of_the_data_source_are_replayed_on_demand() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = write_config(root, false, "");
    let (header, rows) = elec2();
    for (i, chunk) in rows.chunks(500).take(4).enumerate() {
        write_span(&root.join("in"), &format!("s{i}.csv"), &header, chunk);
    }
    let r = root.join("r.json");
    let (ok, _, err) = train(
        &cfg,
        &[
            "--last-spans",
            "2",
            "--publish",
            "none",
            "--report",
            r.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("replaying 2 spans: s2.csv, s3.csv"), "{err}");
    assert_eq!(report(&r)["examples"], 1000);
    let (ok, _, err) = train(
        &cfg,
        &[
            "--last-spans",
            "3",
            "--until",
            "s1.csv",
            "--publish",
            "none",
            "--report",
            r.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains("replaying 2 spans: s0.csv, s1.csv"), "{err}");
    // The run watermark plays no part and is not moved.
    assert!(
        !root.join("state/trainer-state.json").exists() || {
            let s = std::fs::read_to_string(root.join("state/trainer-state.json")).unwrap();
            !s.contains("s1.csv")
        }
    );
    let (ok, _, err) = train(&cfg, &["--last-spans", "2", "--until", "a.csv"]);
    assert!(!ok && err.contains("no ready span"), "{err}");
}

/// A forest: trained on two threads over raw features, published, warm-started by a second
/// backfill (the trees keep growing), inspected with `models show`, served.
#[test]
fn a_forest_trains_warm_starts_is_shown_and_serves() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = write_config(root, false, "");
    // Raw features: trees split numeric values themselves (no buckets).
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("buckets = [0.25, 0.5, 0.75]\n", "")
        .replace("[features]\n", "[features]\nrepresentation = \"raw\"\n")
        .replace(
            "[model]\nname = \"m\"\n",
            "[model]\nname = \"m\"\nkind = \"forest\"\n",
        );
    std::fs::write(&cfg, text).unwrap();
    let (header, rows) = elec2();
    write_span(root, "a.csv", &header, &rows[..3000]);
    write_span(root, "b.csv", &header, &rows[3000..6000]);
    let run = |file: &str| {
        train(
            &cfg,
            &[
                "--data",
                root.join(file).to_str().unwrap(),
                "--window-rows",
                "1000",
                "--quiet",
                "--set",
                "training.threads=2",
            ],
        )
    };
    let (ok, out, err) = run("a.csv");
    assert!(ok && out.contains("published v1"), "{out}\n{err}");
    let (ok, out, err) = run("b.csv");
    assert!(ok && out.contains("published v2"), "{out}\n{err}");
    let m: serde_json::Value = report(&root.join("models/m/2/manifest.json"));
    assert_eq!(m["model_kind"], "forest");
    assert_eq!(m["parent_version"], 1);
    assert_eq!(m["feature_spec"]["representation"], "raw");
    let show = Command::new(bin())
        .args(["model", "--config"])
        .arg(&cfg)
        .args(["--json", "show"])
        .output()
        .unwrap();
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(s["version"], 2);
    assert_eq!(s["kind"], "forest");
    // Warm started: the second backfill's examples come on top of the first's (holdout aside).
    let seen = s["examples_seen"].as_u64().unwrap();
    assert!(seen > 4000, "{s}");
    let trees = s["forest"]["trees"].as_array().unwrap();
    assert_eq!(trees.len(), 10);
    // Grown trees (a tree just replaced by a fresh one is a single leaf, so not every tree).
    let nodes: u64 = trees.iter().map(|t| t["nodes"].as_u64().unwrap()).sum();
    assert!(nodes > 100, "{s}");
    assert!(
        trees.iter().any(|t| t["depth"].as_u64().unwrap() >= 4),
        "{s}"
    );
    let importance = s["importance"].as_array().unwrap();
    let names: Vec<&str> = importance.iter().map(|p| p[0].as_str().unwrap()).collect();
    assert!(names.contains(&"nswprice"), "{names:?}");
    let text = Command::new(bin())
        .args(["models", "--config"])
        .arg(&cfg)
        .arg("show")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("forest: 10 trees"), "{text}");
    assert!(text.contains("leaves by depth"), "{text}");

    let mut s = Proc::spawn(
        &[
            "serve",
            "--rest_api_port=0",
            "--model_name=m",
            &format!("--model_base_path={}", root.join("models/m").display()),
        ],
        &[],
    );
    let base = s.rest_addr();
    eventually("served", || {
        let r = reqwest::blocking::get(format!("{base}/v1/models/m")).ok()?;
        r.status().is_success().then_some(())
    });
    let r: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{base}/v1/models/m:predict"))
        .json(&serde_json::json!({"instances": [
            {"period": 0.5, "nswprice": 0.06, "nswdemand": 0.4, "vicprice": 0.003,
             "vicdemand": 0.4, "transfer": 0.41},
            {"period": 0.1, "nswprice": 0.02, "nswdemand": 0.2}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let p = r["predictions"].as_array().unwrap();
    assert_eq!(p.len(), 2, "{r}");
    assert!(
        p.iter().all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())),
        "{r}"
    );
}
