//! CLI: help for every subcommand, config example round trip, validation errors that name the
//! key and the file, bad data handled without a crash.

mod common;

use common::*;
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "run", "serve", "demo", "validate", "config", "lineage", "data", "train",
    ] {
        let (ok, out, _) = run(&[sub, "--help"]);
        assert!(ok, "{sub} --help");
        assert!(out.contains("Usage:"), "{sub}: {out}");
    }
    let (ok, out, _) = run(&["serve", "--help"]);
    assert!(ok);
    for flag in ["--rest_api_port", "--model_name", "--model_base_path"] {
        assert!(out.contains(flag), "serve lacks TF Serving flag {flag}");
    }
    let (ok, out, _) = run(&["--version"]);
    assert!(ok && out.starts_with("evergreen 0."), "{out}");
}

#[test]
fn example_config_validates_and_errors_name_key_and_file() {
    let d = tempfile::tempdir().unwrap();
    let (ok, example, _) = run(&["config", "example"]);
    assert!(ok);
    let good = d.path().join("good.toml");
    std::fs::write(&good, &example).unwrap();
    let (ok, out, err) = run(&["validate", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("ok"), "{out}");

    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        example.replace("epochs = 3", "epochs = 3\nepocks = 3"),
    )
    .unwrap();
    let (ok, _, err) = run(&["validate", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.toml") && err.contains("epocks"), "{err}");

    std::fs::write(
        &bad,
        example.replace("hash_bits = 18", "hash_bits = \"many\""),
    )
    .unwrap();
    let (ok, _, err) = run(&["validate", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("bad.toml") && err.contains("hash_bits"),
        "{err}"
    );

    std::fs::write(&bad, example.replace("label = { column = \"class\" }", "")).unwrap();
    let (ok, _, err) = run(&["validate", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.toml") && err.contains("label"), "{err}");

    let (ok, _, err) = run(&["validate", d.path().join("missing.toml").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn bad_spans_are_quarantined_and_nothing_is_lost() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let config = write_config(root, false, "");
    let (header, rows) = elec2();
    let inbox = root.join("in");
    // a: good rows plus a few bad ones (malformed row, non-numeric, missing label)
    let mut a: Vec<String> = rows[..500].to_vec();
    a.push("0.5,0.1,0.2".into());
    a.push("0.5,abc,0.4,0.003,0.4,0.4,1".into());
    a.push("0.5,0.1,0.4,0.003,0.4,0.4,".into());
    write_span(&inbox, "a.csv", &header, &a);
    // b: empty file
    std::fs::write(inbox.join("b.csv"), "").unwrap();
    // c: JSON Lines with one malformed line
    let mut c = String::new();
    for r in &rows[500..900] {
        let v: Vec<&str> = r.split(',').collect();
        c.push_str(&format!(
            "{{\"period\":{},\"nswprice\":{},\"nswdemand\":{},\"vicprice\":{},\"vicdemand\":{},\"transfer\":{},\"class\":{}}}\n",
            v[0], v[1], v[2], v[3], v[4], v[5], v[6]
        ));
    }
    c.push_str("{\"period\": oops\n");
    std::fs::write(inbox.join("c.jsonl"), c).unwrap();
    // d: poisoned
    let mut dd: Vec<String> = rows[900..950].to_vec();
    dd.extend((0..50).map(|_| "x,y,z,w,v,u,1".to_string()));
    write_span(&inbox, "d.csv", &header, &dd);
    // a partially written file under a temporary name is never read
    std::fs::write(inbox.join(".e.csv.tmp"), "period,nswprice\n0.1,").unwrap();

    let (ok, out, err) = run(&["run", "--config", config.to_str().unwrap(), "--once"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("span ")).collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("span a.csv  records 500  bad 3"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("records 0") && lines[1].contains("EMPTY"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("span c.jsonl  records 400  bad 1"),
        "{}",
        lines[2]
    );
    assert!(lines[3].contains("HELD_BACK"), "{}", lines[3]);
    assert!(
        err.contains("max_bad_fraction"),
        "held-back span is a clear error: {err}"
    );
    let q = std::fs::read_to_string(root.join("state/quarantine/a.csv.jsonl")).unwrap();
    let reasons: Vec<String> = q
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(reasons, ["malformed_row", "not_numeric", "missing_label"]);
    assert!(root.join("state/quarantine/c.jsonl.jsonl").exists());
    // Re-running consumes nothing twice.
    let (ok, out, _) = run(&["run", "--config", config.to_str().unwrap(), "--once"]);
    assert!(ok);
    assert!(!out.contains("span "), "{out}");
}

#[test]
fn data_inspect_reports_schema_balance_missing_and_bad_reasons() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("x.jsonl");
    std::fs::write(
        &f,
        "{\"label\":1,\"site\":\"a\",\"price\":2.5}\n{\"label\":0,\"site\":\"b\"}\nnot json\n{\"label\":0,\"site\":\"a\",\"price\":0.5}\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["data", "inspect", f.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("records: 3 good, 1 bad"), "{out}");
    assert!(out.contains("bad malformed_json: 1"), "{out}");
    assert!(
        out.contains("label \"label\": 0: 2 (66.7%), 1: 1 (33.3%)"),
        "{out}"
    );
    let price = out.lines().find(|l| l.starts_with("price")).unwrap();
    assert!(price.contains("33.3%"), "missing rate of price: {price}");
    assert!(
        price.contains("0.5000") && price.contains("2.5000"),
        "{price}"
    );
    let (ok, out, _) = run(&["data", "inspect", "--json", f.to_str().unwrap()]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["features"]["site"]["distinct"], 2);
    let (ok, _, err) = run(&[
        "data",
        "inspect",
        d.path().join("nope.bin").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("nope.bin"), "{err}");
}

#[test]
fn data_inspect_reads_parquet() {
    // The fuzz seed: 6 rows in two row groups, written by crates/evergreen-data/tests/parquet.rs
    // (`write_fuzz_seeds`): labels 0, 1, 0, 1, 0, 1; `tags` a list column.
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds/parquet/plain.parquet");
    let (ok, out, err) = run(&["data", "inspect", seed.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("records: 6 good, 0 bad"), "{out}");
    assert!(
        out.contains("label \"label\": 0: 3 (50.0%), 1: 3 (50.0%)"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("tags")), "{out}");

    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk.parquet");
    std::fs::write(&junk, "label,x\n1,2\n").unwrap();
    let (ok, _, err) = run(&["data", "inspect", junk.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("junk.parquet"), "{err}");
    assert!(err.contains("not a readable Parquet file"), "{err}");
    let (ok, out, err) = run(&[
        "data",
        "inspect",
        "--format",
        "parquet",
        "--json",
        seed.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["records"], 6, "{v}");
}
