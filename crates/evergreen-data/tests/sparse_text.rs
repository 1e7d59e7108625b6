//! The sparse text readers (Vowpal Wabbit, LibSVM, LibFFM): mapping to raw records, bad lines,
//! line handling, the Criteo fixtures, no panics, and a record through the core's transform.

mod common;

use std::path::{Path, PathBuf};

use common::{bad, ok, read_all, s, span};
use evergreen_core::{FeatureSpec, RawRecord, RawValue, Transformer};
use evergreen_data::{Format, SpanFile, open_span, reason};
use proptest::prelude::*;

fn w(pairs: &[(&str, f64)]) -> RawValue {
    RawValue::Weighted(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
}

fn num(x: f64) -> RawValue {
    RawValue::Num(x)
}

fn names(r: &RawRecord) -> Vec<&str> {
    r.fields().iter().map(|(n, _)| &**n).collect()
}

fn file(dir: &tempfile::TempDir, format: Format, bytes: &[u8]) -> SpanFile {
    let name = match format {
        Format::Vw => "span.vw",
        Format::Libsvm => "span.libsvm",
        Format::Libffm => "span.libffm",
        other => panic!("not a sparse text format: {other}"),
    };
    span(dir.path(), name, format, bytes)
}

fn read(
    format: Format,
    bytes: &[u8],
) -> Vec<Result<evergreen_data::SourceRecord, evergreen_data::BadRecord>> {
    let tmp = tempfile::tempdir().unwrap();
    read_all(&file(&tmp, format, bytes))
}

// ---------------------------------------------------------------------------------------------
// Vowpal Wabbit

#[test]
fn vw_label_importance_and_tag() {
    let items = read(
        Format::Vw,
        b"1 2.5 'ex1 |user age:33 city_paris\n-1 0.5 ex2 |user age:20\n1 ex3|user a\n",
    );
    assert_eq!(items.len(), 3);

    let r = ok(&items[0]);
    assert_eq!(r.line, 1);
    assert_eq!(r.raw, "1 2.5 'ex1 |user age:33 city_paris");
    assert_eq!(names(&r.record), ["label", "importance", "tag", "user"]);
    assert_eq!(r.record.get("label"), Some(&num(1.0)));
    assert_eq!(r.record.get("importance"), Some(&num(2.5)));
    assert_eq!(
        r.record.get("tag"),
        Some(&s("ex1")),
        "the leading ' is stripped"
    );
    assert_eq!(
        r.record.get("user"),
        Some(&w(&[("age", 33.0), ("city_paris", 1.0)]))
    );

    // A non-numeric third token is the tag, and -1 canonicalizes to "-1".
    let r = ok(&items[1]);
    assert_eq!(r.record.get("label"), Some(&num(-1.0)));
    assert_eq!(
        r.record.get("label").unwrap().canonical_text().unwrap(),
        "-1"
    );
    assert_eq!(r.record.get("importance"), Some(&num(0.5)));
    assert_eq!(r.record.get("tag"), Some(&s("ex2")));

    // A tag touching the bar (VW's other way to mark one).
    let r = ok(&items[2]);
    assert_eq!(names(&r.record), ["label", "tag", "user"]);
    assert_eq!(r.record.get("tag"), Some(&s("ex3")));
    assert_eq!(r.record.get("importance"), None);
}

#[test]
fn vw_namespaces_scale_default_and_repeats() {
    let items = read(
        Format::Vw,
        b"1 |price:2 :0.25 |  a b:3 |Words:0.5 x y:4 |price z |default c\n",
    );
    let r = ok(&items[0]);
    assert_eq!(names(&r.record), ["label", "price", "default", "Words"]);
    // Scale multiplies each value; the scale of the first `price` header does not carry over
    // to the second.
    assert_eq!(r.record.get("price"), Some(&w(&[("", 0.5), ("z", 1.0)])));
    // `|` followed by whitespace is the default namespace, merged with `|default`.
    assert_eq!(
        r.record.get("default"),
        Some(&w(&[("a", 1.0), ("b", 3.0), ("c", 1.0)]))
    );
    assert_eq!(r.record.get("Words"), Some(&w(&[("x", 0.5), ("y", 2.0)])));
}

#[test]
fn vw_missing_label_and_empty_namespace() {
    let items = read(Format::Vw, b"|f a b\n'only_tag |f a\n1 |e\n0.5\n");
    assert_eq!(items.len(), 4);
    let r = ok(&items[0]);
    assert_eq!(
        names(&r.record),
        ["f"],
        "no label field when the line starts with |"
    );
    assert_eq!(r.record.get("f"), Some(&w(&[("a", 1.0), ("b", 1.0)])));
    let r = ok(&items[1]);
    assert_eq!(names(&r.record), ["tag", "f"]);
    let r = ok(&items[2]);
    assert_eq!(r.record.get("e"), Some(&w(&[])));
    // A line without any namespace: a labelled example without features.
    let r = ok(&items[3]);
    assert_eq!(names(&r.record), ["label"]);
    assert_eq!(r.record.get("label"), Some(&num(0.5)));
}

#[test]
fn vw_malformed_lines_are_reported_and_reading_continues() {
    let items = read(
        Format::Vw,
        b"1 |f x:1bc\n1 |f ok\nyes |f a\n1 heavy |f a\n1 |f:big a\n1 |label a\n1 2 3 4 |f a\n-1 |f fine:2\n",
    );
    let want = [
        (
            1,
            "feature 'x:1bc': value is neither a number nor a string value",
        ),
        (3, "label 'yes' is not a number"),
        (4, "importance 'heavy' is not a number"),
        (5, "namespace 'f:big': scale is not a number"),
        (
            6,
            "namespace 'label' has the name of a reserved field (label, importance, base, tag)",
        ),
        (
            7,
            "4 tokens before the first '|': expected at most label, importance, base and tag",
        ),
    ];
    assert_eq!(items.len(), 8);
    let bads: Vec<_> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    assert_eq!(bads.len(), want.len());
    for (b, (line, detail)) in bads.iter().zip(want) {
        assert_eq!(b.line, line);
        assert_eq!(b.reason, reason::MALFORMED_LINE);
        assert_eq!(b.detail, detail);
        assert_eq!(b.span, "span.vw");
    }
    assert_eq!(bads[0].raw, "1 |f x:1bc");
    let goods: Vec<_> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
    assert_eq!(goods.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 8]);
    assert_eq!(goods[1].record.get("f"), Some(&w(&[("fine", 2.0)])));
}

// ---------------------------------------------------------------------------------------------
// LibSVM

#[test]
fn libsvm_labels_features_and_comments() {
    let items = read(
        Format::Libsvm,
        b"+1 1:0.5 3:1 10:-2e-1\n-1 2:1 # a comment 5:5\n# a comment line\n0 7:3 7:4\n1\n1 qid:3 4:1\n",
    );
    assert_eq!(items.len(), 5);

    let r = ok(&items[0]);
    assert_eq!(r.line, 1);
    assert_eq!(names(&r.record), ["label", "features"]);
    assert_eq!(r.record.get("label"), Some(&num(1.0)));
    assert_eq!(
        r.record.get("label").unwrap().canonical_text().unwrap(),
        "1"
    );
    assert_eq!(
        r.record.get("features"),
        Some(&w(&[("1", 0.5), ("3", 1.0), ("10", -0.2)]))
    );

    let r = ok(&items[1]);
    assert_eq!(r.line, 2);
    assert_eq!(r.raw, "-1 2:1 # a comment 5:5", "raw keeps the comment");
    assert_eq!(r.record.get("label"), Some(&num(-1.0)));
    assert_eq!(r.record.get("features"), Some(&w(&[("2", 1.0)])));

    // The comment-only line 3 is skipped; repeated indices are kept as written.
    let r = ok(&items[2]);
    assert_eq!(r.line, 4);
    assert_eq!(r.record.get("label"), Some(&num(0.0)));
    assert_eq!(
        r.record.get("features"),
        Some(&w(&[("7", 3.0), ("7", 4.0)]))
    );

    let r = ok(&items[3]);
    assert_eq!(r.record.get("features"), Some(&w(&[])));

    let r = ok(&items[4]);
    assert_eq!(names(&r.record), ["label", "qid", "features"]);
    assert_eq!(r.record.get("qid"), Some(&num(3.0)));
    assert_eq!(r.record.get("features"), Some(&w(&[("4", 1.0)])));
}

#[test]
fn libsvm_malformed_lines_are_reported_and_reading_continues() {
    let items = read(
        Format::Libsvm,
        b"1 3\n1 1:1\n1 2:x\nlabel 1:1\n1 :4\n1 qid:q 1:1\n0 1:0.25",
    );
    let want = [
        (1, "feature '3': expected index:value (no ':')"),
        (3, "feature '2:x': value is not a number"),
        (4, "label 'label' is not a number"),
        (5, "feature ':4': index is empty"),
        (6, "qid 'q' is not a number"),
    ];
    assert_eq!(items.len(), 7);
    let bads: Vec<_> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    assert_eq!(bads.len(), want.len());
    for (b, (line, detail)) in bads.iter().zip(want) {
        assert_eq!(
            (b.line, b.reason, b.detail.as_str()),
            (line, reason::MALFORMED_LINE, detail)
        );
    }
    let goods: Vec<_> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
    assert_eq!(goods.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 7]);
    assert_eq!(goods[1].record.get("features"), Some(&w(&[("1", 0.25)])));
}

// ---------------------------------------------------------------------------------------------
// LibFFM

#[test]
fn libffm_fields_become_weighted_columns() {
    let items = read(Format::Libffm, b"1 0:5:0.5 2:9:1 0:7:0.25\n0 3:1:1e0\n");
    assert_eq!(items.len(), 2);
    let r = ok(&items[0]);
    assert_eq!(names(&r.record), ["label", "field_0", "field_2"]);
    assert_eq!(r.record.get("label"), Some(&num(1.0)));
    assert_eq!(
        r.record.get("field_0"),
        Some(&w(&[("5", 0.5), ("7", 0.25)])),
        "tokens of one field are merged in order"
    );
    assert_eq!(r.record.get("field_2"), Some(&w(&[("9", 1.0)])));
    let r = ok(&items[1]);
    assert_eq!(r.record.get("label"), Some(&num(0.0)));
    assert_eq!(r.record.get("field_3"), Some(&w(&[("1", 1.0)])));
}

#[test]
fn libffm_malformed_lines_are_reported_and_reading_continues() {
    let items = read(
        Format::Libffm,
        b"1 0:1\n1 0:1:1\n1 0:1:z\n1 :1:1\n1 0::1\n1 0:1:1:1\nx 0:1:1\n0 1:1:1\n",
    );
    let want = [
        (1, "feature '0:1': expected field:index:value"),
        (3, "feature '0:1:z': value is not a number"),
        (4, "feature ':1:1': field is empty"),
        (5, "feature '0::1': index is empty"),
        (6, "feature '0:1:1:1': value is not a number"),
        (7, "label 'x' is not a number"),
    ];
    assert_eq!(items.len(), 8);
    let bads: Vec<_> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    assert_eq!(bads.len(), want.len());
    for (b, (line, detail)) in bads.iter().zip(want) {
        assert_eq!(
            (b.line, b.reason, b.detail.as_str()),
            (line, reason::MALFORMED_LINE, detail)
        );
    }
    let goods: Vec<_> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
    assert_eq!(goods.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 8]);
}

// ---------------------------------------------------------------------------------------------
// Line handling, the same for all three formats

/// One good line per format, each with a label of 1 and a single weighted field.
const GOOD: [(Format, &str, &str); 3] = [
    (Format::Vw, "1 |f a:2", "f"),
    (Format::Libsvm, "1 a:2", "features"),
    (Format::Libffm, "1 f:a:2", "field_f"),
];

fn assert_good(r: &evergreen_data::SourceRecord, line: u64, text: &str, field: &str) {
    assert_eq!(r.line, line);
    assert_eq!(r.raw, text);
    assert_eq!(r.record.get("label"), Some(&num(1.0)));
    assert_eq!(r.record.get(field), Some(&w(&[("a", 2.0)])));
    assert_eq!(r.record.len(), 2);
}

#[test]
fn blank_lines_are_skipped_but_counted() {
    for (format, text, field) in GOOD {
        let bytes = format!("\n{text}\n  \t \n\r\n{text}\n\n");
        let items = read(format, bytes.as_bytes());
        assert_eq!(items.len(), 2, "{format}");
        assert_good(ok(&items[0]), 2, text, field);
        assert_good(ok(&items[1]), 5, text, field);
    }
}

#[test]
fn crlf_endings_and_a_last_line_without_newline() {
    for (format, text, field) in GOOD {
        let bytes = format!("{text}\r\n{text}\r\n{text}");
        let items = read(format, bytes.as_bytes());
        assert_eq!(items.len(), 3, "{format}");
        for (i, item) in items.iter().enumerate() {
            assert_good(ok(item), i as u64 + 1, text, field);
        }
    }
}

#[test]
fn a_byte_order_mark_is_ignored() {
    for (format, text, field) in GOOD {
        let bytes = format!("\u{feff}{text}\n");
        let items = read(format, bytes.as_bytes());
        assert_good(ok(&items[0]), 1, text, field);
    }
}

#[test]
fn invalid_utf8_is_a_bad_line_and_reading_continues() {
    for (format, text, field) in GOOD {
        let mut bytes = format!("{text}\n").into_bytes();
        bytes.extend_from_slice(b"1 \xff\xfe:1\r\n");
        bytes.extend_from_slice(format!("{text}\n").as_bytes());
        let items = read(format, &bytes);
        assert_eq!(items.len(), 3, "{format}");
        assert_good(ok(&items[0]), 1, text, field);
        let b = bad(&items[1]);
        assert_eq!(b.line, 2);
        assert_eq!(b.reason, reason::INVALID_UTF8);
        assert!(b.detail.contains("not valid UTF-8"), "{}", b.detail);
        assert_eq!(b.raw, "1 \u{fffd}\u{fffd}:1");
        assert_good(ok(&items[2]), 3, text, field);
    }
}

#[test]
fn an_empty_file_has_no_records() {
    for (format, _, _) in GOOD {
        assert!(read(format, b"").is_empty());
        assert!(read(format, b"\n \n").is_empty());
    }
}

#[test]
fn span_dir_detects_the_formats_by_extension() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["a.vw", "b.libsvm", "c.svm", "d.libffm", "e.ffm"] {
        std::fs::write(tmp.path().join(name), b"1 |f a\n").unwrap();
    }
    let spans = evergreen_data::SpanDir::new(tmp.path(), false, None)
        .list()
        .unwrap();
    let formats: Vec<_> = spans.iter().map(|f| f.format).collect();
    assert_eq!(
        formats,
        [
            Format::Vw,
            Format::Libsvm,
            Format::Libsvm,
            Format::Libffm,
            Format::Libffm
        ]
    );
    // Opening each works; the VW line is malformed as LibSVM and LibFFM, which is reported
    // rather than fatal.
    for f in &spans {
        let items: Vec<_> = open_span(f).unwrap().collect();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].is_ok(), f.format == Format::Vw, "{}", f.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures: the Criteo libffm sample from xLearn, and a VW conversion of its first rows

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-data/sparse")
        .join(name)
}

fn fixture_span(name: &str, format: Format) -> SpanFile {
    let path = fixture(name);
    SpanFile {
        name: name.to_string(),
        size: std::fs::metadata(&path).unwrap().len(),
        path,
        format,
    }
}

#[test]
fn criteo_libffm_fixtures_read_completely() {
    // (file, rows, clicks) as stated in SOURCE.md.
    for (name, rows, clicks) in [("small_train.txt", 200, 48), ("small_test.txt", 200, 46)] {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let items: Vec<_> = open_span(&fixture_span(name, Format::Libffm))
            .unwrap()
            .collect();
        assert_eq!(items.len(), rows, "{name}");
        let mut positives = 0;
        for (i, (item, line)) in items.iter().zip(&lines).enumerate() {
            let r = ok(item);
            assert_eq!(r.line, i as u64 + 1);
            assert_eq!(r.raw, *line);
            // Expected from a plain whitespace split (some test rows end with a space): a label
            // plus one column per distinct field, holding every token of that field.
            let tokens: Vec<&str> = line.split_whitespace().skip(1).collect();
            let mut fields: Vec<&str> = tokens
                .iter()
                .map(|t| t.split(':').next().unwrap())
                .collect();
            fields.sort_unstable();
            fields.dedup();
            assert_eq!(r.record.len(), 1 + fields.len(), "{name} line {}", i + 1);
            let pairs: usize = r
                .record
                .fields()
                .iter()
                .filter_map(|(n, v)| match v {
                    RawValue::Weighted(p) => {
                        assert!(n.starts_with("field_"));
                        Some(p.len())
                    }
                    _ => None,
                })
                .sum();
            assert_eq!(pairs, tokens.len());
            match r.record.get("label") {
                Some(RawValue::Num(1.0)) => positives += 1,
                Some(RawValue::Num(0.0)) => {}
                other => panic!("{name} line {}: label {other:?}", i + 1),
            }
        }
        assert_eq!(positives, clicks, "{name}");
    }
}

#[test]
fn vw_fixture_matches_the_libffm_rows_it_was_converted_from() {
    let vw: Vec<_> = open_span(&fixture_span("criteo_small_train_head.vw", Format::Vw))
        .unwrap()
        .collect();
    let ffm: Vec<_> = open_span(&fixture_span("small_train.txt", Format::Libffm))
        .unwrap()
        .take(vw.len())
        .collect();
    assert_eq!(vw.len(), 9);
    for (i, (v, f)) in vw.iter().zip(&ffm).enumerate() {
        let (v, f) = (ok(v), ok(f));
        assert_eq!(v.record.get("tag"), Some(&s(&format!("train{}", i + 1))));
        let want_label = match f.record.get("label") {
            Some(RawValue::Num(1.0)) => 1.0,
            Some(RawValue::Num(0.0)) => -1.0,
            other => panic!("label {other:?}"),
        };
        assert_eq!(v.record.get("label"), Some(&num(want_label)));
        // label + tag + namespaces vs label + fields.
        assert_eq!(v.record.len(), f.record.len() + 1);
        for (name, value) in f.record.fields().iter().skip(1) {
            let field = name.strip_prefix("field_").unwrap();
            assert_eq!(
                v.record.get(&format!("f{field}")),
                Some(value),
                "row {}",
                i + 1
            );
        }
    }
    // Row 9 repeats fields 16 and 17 (three tokens each), merged into one namespace each.
    match ok(&vw[8]).record.get("f17") {
        Some(RawValue::Weighted(p)) => assert_eq!(p.len(), 3),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Through the core's transform

fn transformer(sparse: &[&str]) -> Transformer {
    let spec: FeatureSpec = serde_json::from_value(serde_json::json!({
        "hash_bits": 20,
        "label": {"column": "label"},
        "sparse": sparse.iter().map(|n| serde_json::json!({"name": n})).collect::<Vec<_>>(),
    }))
    .unwrap();
    Transformer::new(spec).unwrap()
}

#[test]
fn a_libsvm_line_transforms_into_a_feature_vector() {
    let t = transformer(&["features"]);
    let items = read(Format::Libsvm, b"+1 3:0.5 17:2 42:-1.5 # c\n-1 3:0.75\n");
    let (x, y) = t.example(&ok(&items[0]).record).unwrap();
    assert_eq!(y, 1.0);
    // The bias plus one entry per index:value pair.
    assert_eq!(x.len(), 4);
    let mut values: Vec<f32> = x.iter().map(|(_, v)| v).collect();
    values.sort_by(f32::total_cmp);
    assert_eq!(values, [-1.5, 0.5, 1.0, 2.0]);
    let indices: std::collections::HashSet<u32> = x.iter().map(|(i, _)| i).collect();
    assert_eq!(indices.len(), 4, "distinct indices hash apart (at 20 bits)");
    assert!(x.iter().all(|(i, _)| i < 1 << 20));

    let (x2, y2) = t.example(&ok(&items[1]).record).unwrap();
    assert_eq!(y2, 0.0, "-1 is the negative class");
    assert_eq!(x2.len(), 2);
    // The same index text hashes to the same bucket in both records.
    let bucket_of_3 = |x: &evergreen_core::FeatureVector, v: f32| {
        x.iter().find(|&(_, val)| val == v).map(|(i, _)| i)
    };
    assert_eq!(bucket_of_3(&x, 0.5), bucket_of_3(&x2, 0.75));
}

#[test]
fn vw_and_libffm_records_transform_too() {
    let t = transformer(&["user", "default"]);
    let items = read(Format::Vw, b"-1 2 'a |user age:3 |  x\n|user age:3\n");
    let (x, y) = t.example(&ok(&items[0]).record).unwrap();
    assert_eq!((x.len(), y), (3, 0.0));
    let e = t.example(&ok(&items[1]).record).unwrap_err();
    assert_eq!(e.reason(), "missing_label");

    let t = transformer(&["field_0", "field_1"]);
    let items = read(Format::Libffm, b"1 0:5:0.5 1:9:1 0:7:0.25\n");
    let (x, y) = t.example(&ok(&items[0]).record).unwrap();
    assert_eq!((x.len(), y), (4, 1.0));
}

// ---------------------------------------------------------------------------------------------
// No input makes a reader panic

fn nasty_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &b"|"[..],
        b":",
        b"'",
        b"#",
        b" ",
        b"\t",
        b"\n",
        b"\r\n",
        b"\r",
        b"1",
        b"-1",
        b"+1",
        b"0.5",
        b"e",
        b"nan",
        b"inf",
        b"a",
        b"label",
        b"qid:",
        b"\xff",
        b"\xe2\x82",
        b"\xef\xbb\xbf",
        b"\0",
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(pieces, 0..160).prop_map(|v| v.concat()),
    ]
}

fn check(bytes: &[u8], format: Format) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let f = file(&tmp, format, bytes);
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let mut last = 0;
    for item in open_span(&f).unwrap() {
        let line = match &item {
            Ok(r) => r.line,
            Err(b) => {
                prop_assert!(
                    b.reason == reason::MALFORMED_LINE || b.reason == reason::INVALID_UTF8,
                    "{}",
                    b.reason
                );
                prop_assert!(!b.detail.is_empty());
                b.line
            }
        };
        prop_assert!(
            line > last && line <= lines,
            "line {} after {} of {}",
            line,
            last,
            lines
        );
        last = line;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn vw_reader_never_panics(bytes in nasty_bytes()) {
        check(&bytes, Format::Vw)?;
    }

    #[test]
    fn libsvm_reader_never_panics(bytes in nasty_bytes()) {
        check(&bytes, Format::Libsvm)?;
    }

    #[test]
    fn libffm_reader_never_panics(bytes in nasty_bytes()) {
        check(&bytes, Format::Libffm)?;
    }
}
