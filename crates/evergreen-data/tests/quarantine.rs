//! The quarantine: file content, counts, truncation, no file when clean.

mod common;

use std::collections::BTreeMap;

use common::span;
use evergreen_data::{DataError, Format, Quarantine, open_span};

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn writes_one_json_object_per_bad_record_and_counts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let qdir = tmp.path().join("q").join("nested");
    let q = Quarantine::new(&qdir);
    assert_eq!(q.dir(), qdir);
    let mut w = q.begin("span-001.csv").unwrap();
    assert_eq!(w.span(), "span-001.csv");
    w.add(3, "malformed_row", "expected 2 fields, got 1", "3")
        .unwrap();
    w.add(7, "invalid_utf8", "bad byte", "a,\"b\"\n\u{fffd}")
        .unwrap();
    w.add(9, "malformed_row", "expected 2 fields, got 3", "1,2,3")
        .unwrap();
    assert_eq!(w.total(), 3);
    assert_eq!(w.counts().get("malformed_row"), Some(&2));
    assert_eq!(w.counts().get("invalid_utf8"), Some(&1));
    let path = w.path().to_path_buf();
    assert_eq!(path, qdir.join("span-001.csv.jsonl"));
    let counts = w.finish().unwrap();
    let expected: BTreeMap<String, u64> = [
        ("invalid_utf8".to_string(), 1),
        ("malformed_row".to_string(), 2),
    ]
    .into();
    assert_eq!(counts, expected);

    let got = lines(&path);
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0],
        serde_json::json!({"span":"span-001.csv","line":3,"reason":"malformed_row",
            "detail":"expected 2 fields, got 1","raw":"3"})
    );
    assert_eq!(got[1]["raw"], "a,\"b\"\n\u{fffd}");
    assert_eq!(got[2]["line"], 9);
    // Field order on disk.
    let first = std::fs::read_to_string(&path).unwrap();
    let first = first.lines().next().unwrap();
    let order: Vec<usize> = [
        "\"span\"",
        "\"line\"",
        "\"reason\"",
        "\"detail\"",
        "\"raw\"",
    ]
    .iter()
    .map(|k| first.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{first}");
}

#[test]
fn begin_truncates_a_previous_file_for_the_span() {
    let tmp = tempfile::tempdir().unwrap();
    let q = Quarantine::new(tmp.path());
    let mut w = q.begin("s.jsonl").unwrap();
    for i in 0..5 {
        w.add(i + 1, "malformed_json", "x", "y").unwrap();
    }
    w.finish().unwrap();
    let path = q.path_for("s.jsonl");
    assert_eq!(lines(&path).len(), 5);

    // Another span's file is untouched by it.
    let mut other = q.begin("t.jsonl").unwrap();
    other.add(1, "malformed_json", "x", "y").unwrap();
    other.finish().unwrap();

    let mut w = q.begin("s.jsonl").unwrap();
    w.add(2, "unsupported_value", "field \"a\"", "{}").unwrap();
    assert_eq!(w.finish().unwrap().get("unsupported_value"), Some(&1));
    let got = lines(&path);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["reason"], "unsupported_value");

    // A clean retry leaves no stale file behind.
    let w = q.begin("s.jsonl").unwrap();
    assert!(!path.exists());
    assert!(w.finish().unwrap().is_empty());
    assert!(!path.exists());
    assert_eq!(lines(&q.path_for("t.jsonl")).len(), 1);
}

#[test]
fn no_file_and_no_directory_when_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let qdir = tmp.path().join("quarantine");
    let q = Quarantine::new(&qdir);
    let w = q.begin("clean.csv").unwrap();
    assert_eq!(w.total(), 0);
    assert!(w.counts().is_empty());
    assert!(w.finish().unwrap().is_empty());
    assert!(!qdir.exists());
}

#[test]
fn span_names_that_are_not_file_names_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let q = Quarantine::new(tmp.path());
    for name in ["", ".", "..", "../escape", "a/b", "a\\b"] {
        let err = q.begin(name).unwrap_err();
        assert!(
            matches!(err, DataError::InvalidSpanName { .. }),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn reader_bad_records_flow_into_the_quarantine() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let f = span(&data, "s.csv", Format::Csv, b"a,b\n1,2\n3\n4,5\n6,7,8\n");
    let q = Quarantine::new(tmp.path().join("q"));
    let mut w = q.begin(&f.name).unwrap();
    let mut good = 0;
    for item in open_span(&f).unwrap() {
        match item {
            Ok(_) => good += 1,
            Err(bad) => w.add_bad(&bad).unwrap(),
        }
    }
    let counts = w.finish().unwrap();
    assert_eq!(good, 2);
    assert_eq!(counts.get("malformed_row"), Some(&2));
    let got = lines(&q.path_for("s.csv"));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["line"], 3);
    assert_eq!(got[0]["raw"], "3");
    assert_eq!(got[0]["span"], "s.csv");
    assert_eq!(got[1]["line"], 5);
    assert_eq!(got[1]["raw"], "6,7,8");
}
