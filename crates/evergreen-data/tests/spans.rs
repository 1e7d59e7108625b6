//! Span discovery: the ready rule, ordering, watermarks.

use std::fs;

use evergreen_data::{DataError, Format, SpanDir};

fn touch(dir: &std::path::Path, name: &str, content: &str) {
    fs::write(dir.join(name), content).unwrap();
}

fn names(spans: &[evergreen_data::SpanFile]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn lists_ready_spans_in_byte_order_and_ignores_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    touch(d, "span-002.csv", "a\n1\n");
    touch(d, "span-001.jsonl", "{}\n");
    touch(d, "span-010.ndjson", "");
    touch(d, "Upper.JSON", "");
    touch(d, "span-003.CSV", "x\n");
    // Not spans:
    touch(d, ".hidden.csv", "");
    touch(d, "_staging.csv", "");
    touch(d, "span-004.csv.tmp", "");
    touch(d, "span-005.csv.partial", "");
    touch(d, "span-006.csv.ready", "");
    touch(d, "notes.txt", "");
    touch(d, "noext", "");
    fs::create_dir(d.join("subdir.csv")).unwrap();

    let sd = SpanDir::new(d, false, None);
    assert_eq!(sd.dir(), d);
    let spans = sd.list().unwrap();
    assert_eq!(
        names(&spans),
        [
            "Upper.JSON",
            "span-001.jsonl",
            "span-002.csv",
            "span-003.CSV",
            "span-010.ndjson"
        ]
    );
    let formats: Vec<Format> = spans.iter().map(|s| s.format).collect();
    assert_eq!(
        formats,
        [
            Format::Jsonl,
            Format::Jsonl,
            Format::Csv,
            Format::Csv,
            Format::Jsonl
        ]
    );
    assert_eq!(spans[2].size, 4);
    assert_eq!(spans[2].path, d.join("span-002.csv"));
    assert_eq!(spans[4].size, 0);
}

#[test]
fn forced_format_takes_any_extension_but_keeps_the_name_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    touch(d, "part-0001", "");
    touch(d, "part-0002.txt", "");
    touch(d, "part-0003.csv", "");
    touch(d, ".part-0004", "");
    touch(d, "part-0005.tmp", "");
    let spans = SpanDir::new(d, false, Some(Format::Jsonl)).list().unwrap();
    assert_eq!(
        names(&spans),
        ["part-0001", "part-0002.txt", "part-0003.csv"]
    );
    assert!(spans.iter().all(|s| s.format == Format::Jsonl));
}

#[test]
fn ready_marker_mode_waits_for_the_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    touch(d, "a.csv", "x\n");
    touch(d, "a.csv.ready", "");
    touch(d, "b.csv", "x\n");
    touch(d, "orphan.csv.ready", "");
    let sd = SpanDir::new(d, true, None);
    assert!(sd.ready_marker());
    assert_eq!(names(&sd.list().unwrap()), ["a.csv"]);

    touch(d, "b.csv.ready", "");
    assert_eq!(names(&sd.list().unwrap()), ["a.csv", "b.csv"]);

    // Without marker mode both are spans anyway; markers never are.
    assert_eq!(
        names(&SpanDir::new(d, false, None).list().unwrap()),
        ["a.csv", "b.csv"]
    );
}

#[test]
fn after_watermark() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for n in ["s-001.csv", "s-002.csv", "s-003.csv"] {
        touch(d, n, "");
    }
    let sd = SpanDir::new(d, false, None);
    assert_eq!(
        names(&sd.after(None).unwrap()),
        ["s-001.csv", "s-002.csv", "s-003.csv"]
    );
    assert_eq!(
        names(&sd.after(Some("s-001.csv")).unwrap()),
        ["s-002.csv", "s-003.csv"]
    );
    // A watermark need not name an existing span.
    assert_eq!(
        names(&sd.after(Some("s-002")).unwrap()),
        ["s-002.csv", "s-003.csv"]
    );
    assert_eq!(names(&sd.after(Some("")).unwrap()).len(), 3);
    assert!(sd.after(Some("s-003.csv")).unwrap().is_empty());
    assert!(sd.after(Some("zzz")).unwrap().is_empty());
}

#[test]
fn empty_directory_lists_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(
        SpanDir::new(tmp.path(), false, None)
            .list()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn missing_directory_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir");
    let err = SpanDir::new(&missing, false, None).list().unwrap_err();
    assert!(matches!(err, DataError::ListDir { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(
        SpanDir::new(&missing, false, None)
            .after(Some("x"))
            .is_err()
    );
}

#[cfg(unix)]
#[test]
fn symlinks_to_files_count_and_dangling_ones_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("real.csv"), "a\n1\n").unwrap();
    fs::create_dir(elsewhere.path().join("adir")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("real.csv"), d.join("link.csv")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("adir"), d.join("dirlink.csv")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("gone.csv"), d.join("dangling.csv")).unwrap();
    let spans = SpanDir::new(d, false, None).list().unwrap();
    assert_eq!(names(&spans), ["link.csv"]);
    assert_eq!(spans[0].size, 4);
}
