//! No train/serve skew: for every record of the shipped Elec2 stream, the feature vector the
//! trainer computes from the CSV span equals the one the server computes from a TensorFlow
//! Serving REST request carrying the same record, both with the spec stored in the published
//! version (not with any config).

mod common;

use common::*;
use evergreen_data::{Format, SpanFile, open_span};
use evergreen_registry::Registry;

#[test]
fn training_and_serving_feature_vectors_are_identical() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let config = write_config(root, false, "");
    let (header, rows) = elec2();
    write_span(&root.join("in"), "all.csv", &header, &rows);
    let out = std::process::Command::new(bin())
        .args(["run", "--config", config.to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The transformer of the stored version, as the server builds it.
    let version = Registry::open(root.join("models/m"), "m")
        .unwrap()
        .load(1)
        .unwrap();
    let t = &version.transformer;

    let span = SpanFile {
        name: "all.csv".into(),
        path: root.join("in/all.csv"),
        format: Format::Csv,
        size: 0,
    };
    let columns: Vec<&str> = header.split(',').collect();
    let mut checked = 0;
    for (item, row) in open_span(&span).unwrap().zip(&rows) {
        let rec = item.unwrap();
        let (train_vec, _) = t.example(&rec.record).unwrap();
        // The same record as a client would send it: the CSV cell text written as JSON number
        // literals (so JSON number parsing meets CSV text parsing), label omitted.
        let fields: Vec<String> = columns
            .iter()
            .zip(row.split(','))
            .filter(|(k, _)| **k != "class")
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        let body = format!("{{\"instances\": [{{{}}}]}}", fields.join(", "));
        let served = evergreen_serve::parse_predict_records(body.as_bytes()).unwrap();
        let serve_vec = t.features(&served[0]).unwrap();
        assert_eq!(train_vec, serve_vec, "line {}: {row}", rec.line);
        checked += 1;
    }
    assert_eq!(checked, rows.len());
}
