//! The JSON Lines reader: value types, blank lines, bad lines, non-finite tokens.

mod common;

use common::{bad, ok, read_all, s, span};
use evergreen_core::RawValue;
use evergreen_data::{Format, SpanFile, open_span, reason};

fn jsonl(dir: &tempfile::TempDir, bytes: &[u8]) -> SpanFile {
    span(dir.path(), "span.jsonl", Format::Jsonl, bytes)
}

#[test]
fn value_types_and_source_order() {
    let tmp = tempfile::tempdir().unwrap();
    let line = r#"{"z":1.5,"i":-3,"big":12345678901234567890,"s":"x y","t":true,"f":false,"n":null,"e":""}"#;
    let items = read_all(&jsonl(&tmp, format!("{line}\n").as_bytes()));
    assert_eq!(items.len(), 1);
    let r = ok(&items[0]);
    assert_eq!(r.line, 1);
    assert_eq!(r.raw, line);
    let names: Vec<&str> = r.record.fields().iter().map(|(n, _)| &**n).collect();
    assert_eq!(names, ["z", "i", "big", "s", "t", "f", "n", "e"]);
    assert_eq!(r.record.get("z"), Some(&RawValue::Num(1.5)));
    assert_eq!(r.record.get("i"), Some(&RawValue::Num(-3.0)));
    assert_eq!(
        r.record.get("big"),
        Some(&RawValue::Num(12345678901234567890.0))
    );
    assert_eq!(r.record.get("s"), Some(&s("x y")));
    assert_eq!(r.record.get("t"), Some(&s("true")));
    assert_eq!(r.record.get("f"), Some(&s("false")));
    assert_eq!(r.record.get("n"), Some(&RawValue::Missing));
    assert_eq!(
        r.record.get("e"),
        Some(&s("")),
        "an empty JSON string is a string"
    );
}

#[test]
fn duplicate_keys_keep_the_last_value() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&jsonl(&tmp, br#"{"a":1,"a":2}"#));
    let r = ok(&items[0]);
    assert_eq!(r.record.len(), 1);
    assert_eq!(r.record.get("a"), Some(&RawValue::Num(2.0)));
}

#[test]
fn blank_lines_are_skipped_but_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&jsonl(&tmp, b"\n{\"a\":1}\n  \t \n\r\n{\"a\":2}\r\n{}\n\n"));
    assert_eq!(items.len(), 3);
    assert_eq!(ok(&items[0]).line, 2);
    assert_eq!(ok(&items[1]).line, 5);
    assert_eq!(
        ok(&items[1]).raw,
        "{\"a\":2}",
        "CR of a CRLF is not part of raw"
    );
    assert_eq!(ok(&items[2]).line, 6);
    assert!(ok(&items[2]).record.is_empty());
}

#[test]
fn empty_file_yields_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(read_all(&jsonl(&tmp, b"")).is_empty());
    assert!(open_span(&jsonl(&tmp, b"")).unwrap().columns().is_none());
}

#[test]
fn malformed_lines_are_bad_and_reading_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&jsonl(
        &tmp,
        b"{\"a\":1}\n{oops\n[1,2]\n5\n{\"a\":1} trailing\n{\"a\":2}",
    ));
    assert_eq!(items.len(), 6);
    assert_eq!(ok(&items[0]).line, 1);

    let b = bad(&items[1]);
    assert_eq!(b.reason, reason::MALFORMED_JSON);
    assert_eq!(b.reason, "malformed_json");
    assert_eq!(b.line, 2);
    assert_eq!(b.span, "span.jsonl");
    assert_eq!(b.raw, "{oops");
    assert!(
        b.detail.contains("line 1 column"),
        "serde's message: {}",
        b.detail
    );

    let arr = bad(&items[2]);
    assert_eq!(arr.reason, "malformed_json");
    assert!(arr.detail.contains("a JSON object"), "{}", arr.detail);
    assert_eq!(bad(&items[3]).reason, "malformed_json");
    assert_eq!(bad(&items[4]).reason, "malformed_json");

    let last = ok(&items[5]);
    assert_eq!(last.line, 6);
    assert_eq!(last.record.get("a"), Some(&RawValue::Num(2.0)));
}

#[test]
fn nested_values_are_unsupported_and_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&jsonl(
        &tmp,
        b"{\"ok\":1,\"tags\":[1,2]}\n{\"meta\":{\"x\":1}}\n{\"ok\":3}\n",
    ));
    assert_eq!(items.len(), 3);
    let a = bad(&items[0]);
    assert_eq!(a.reason, reason::UNSUPPORTED_VALUE);
    assert_eq!(a.reason, "unsupported_value");
    assert_eq!(a.line, 1);
    assert!(a.detail.contains("\"tags\""), "{}", a.detail);
    assert_eq!(a.raw, "{\"ok\":1,\"tags\":[1,2]}");
    let o = bad(&items[1]);
    assert!(o.detail.contains("\"meta\""), "{}", o.detail);
    assert_eq!(ok(&items[2]).record.get("ok"), Some(&RawValue::Num(3.0)));
}

#[test]
fn invalid_utf8_line() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&jsonl(&tmp, b"{\"a\":\"\xff\"}\n{\"a\":1}\n"));
    assert_eq!(items.len(), 2);
    let b = bad(&items[0]);
    assert_eq!(b.reason, "invalid_utf8");
    assert_eq!(b.line, 1);
    assert_eq!(b.raw, "{\"a\":\"\u{fffd}\"}");
    assert_eq!(ok(&items[1]).line, 2);
}

#[test]
fn nan_and_infinity_tokens_are_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let text = concat!(
        r#"{"a":NaN,"b":Infinity,"c": -Infinity ,"d":"NaN","e":null,"f":1}"#,
        "\n",
        r#"{"x":[NaN]}"#,
        "\n",
        r#"{"y":NaNx}"#,
        "\n",
        r#"{"s":"a \"quoted\" NaN","t":NaN}"#,
        "\n",
    );
    let items = read_all(&jsonl(&tmp, text.as_bytes()));
    assert_eq!(items.len(), 4);
    let r = ok(&items[0]);
    match r.record.get("a") {
        Some(RawValue::Num(x)) => assert!(x.is_nan()),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.record.get("b"), Some(&RawValue::Num(f64::INFINITY)));
    assert_eq!(r.record.get("c"), Some(&RawValue::Num(f64::NEG_INFINITY)));
    assert_eq!(r.record.get("d"), Some(&s("NaN")));
    assert_eq!(r.record.get("e"), Some(&RawValue::Missing));
    assert_eq!(r.record.get("f"), Some(&RawValue::Num(1.0)));
    assert!(r.raw.contains("NaN"), "raw is the original text");

    assert_eq!(bad(&items[1]).reason, "unsupported_value");
    assert_eq!(bad(&items[2]).reason, "malformed_json");
    let q = ok(&items[3]);
    assert_eq!(q.record.get("s"), Some(&s("a \"quoted\" NaN")));
    assert!(matches!(q.record.get("t"), Some(RawValue::Num(x)) if x.is_nan()));
}

#[test]
fn bom_on_the_first_line_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&jsonl(&tmp, "\u{feff}{\"a\":1}\n".as_bytes()));
    assert_eq!(ok(&items[0]).record.get("a"), Some(&RawValue::Num(1.0)));
}

#[cfg(unix)]
#[test]
fn read_failure_is_reported_once_and_ends_the_span() {
    // Opening a directory succeeds on Unix; reading it fails.
    let tmp = tempfile::tempdir().unwrap();
    let f = SpanFile {
        name: "dir.jsonl".into(),
        path: tmp.path().to_path_buf(),
        format: Format::Jsonl,
        size: 0,
    };
    let items: Vec<_> = open_span(&f).unwrap().collect();
    assert_eq!(items.len(), 1);
    let b = bad(&items[0]);
    assert_eq!(b.reason, reason::IO_ERROR);
    assert_eq!(b.line, 1);
    assert!(
        b.detail.contains(&tmp.path().display().to_string()),
        "{}",
        b.detail
    );
}
