//! The CSV reader: values, line numbers, raw text, bad rows, headers.

mod common;

use common::{bad, ok, read_all, s, span};
use evergreen_core::RawValue;
use evergreen_data::{DataError, Format, SpanFile, open_span, reason};

fn csv(dir: &tempfile::TempDir, bytes: &[u8]) -> SpanFile {
    span(dir.path(), "span.csv", Format::Csv, bytes)
}

#[test]
fn happy_path_values_lines_and_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let f = csv(&tmp, b" a ,b,c\n1, x ,\n2,,z\n");
    let reader = open_span(&f).unwrap();
    assert_eq!(reader.columns().unwrap(), ["a", "b", "c"]);
    assert_eq!(reader.span(), "span.csv");
    assert_eq!(reader.format(), Format::Csv);
    let items: Vec<_> = reader.collect();
    assert_eq!(items.len(), 2);

    let r1 = ok(&items[0]);
    assert_eq!(r1.line, 2);
    assert_eq!(r1.raw, "1, x ,");
    let names: Vec<&str> = r1.record.fields().iter().map(|(n, _)| &**n).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(r1.record.get("a"), Some(&s("1")));
    assert_eq!(r1.record.get("b"), Some(&s(" x ")), "cells are not trimmed");
    assert_eq!(r1.record.get("c"), Some(&RawValue::Missing));

    let r2 = ok(&items[1]);
    assert_eq!(r2.line, 3);
    assert_eq!(r2.raw, "2,,z");
    assert_eq!(r2.record.get("b"), Some(&RawValue::Missing));
    assert_eq!(r2.record.get("c"), Some(&s("z")));
}

#[test]
fn last_row_without_newline() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&csv(&tmp, b"a,b\n1,2\n3,4"));
    assert_eq!(items.len(), 2);
    assert_eq!(ok(&items[1]).line, 3);
    assert_eq!(ok(&items[1]).raw, "3,4");
    assert_eq!(ok(&items[1]).record.get("b"), Some(&s("4")));
}

#[test]
fn quoted_fields_multiline_crlf_and_blank_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let f = csv(
        &tmp,
        b"id,text\r\n1,\"hello, \"\"world\"\"\"\r\n2,\"two\nlines\"\r\n\r\n\r\n3,plain\r\n",
    );
    let items = read_all(&f);
    assert_eq!(items.len(), 3);
    let r1 = ok(&items[0]);
    assert_eq!(r1.line, 2);
    assert_eq!(r1.record.get("text"), Some(&s("hello, \"world\"")));
    assert_eq!(r1.raw, "1,\"hello, \"\"world\"\"\"");
    let r2 = ok(&items[1]);
    assert_eq!(r2.line, 3);
    assert_eq!(r2.record.get("text"), Some(&s("two\nlines")));
    assert_eq!(r2.raw, "2,\"two\nlines\"");
    let r3 = ok(&items[2]);
    assert_eq!(r3.line, 7, "two blank lines after a two-line record");
    assert_eq!(r3.raw, "3,plain");
}

#[test]
fn malformed_rows_in_the_middle_do_not_stop_the_span() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&csv(&tmp, b"a,b\n1,2\n3\n4,5,6\n7,8\n"));
    assert_eq!(items.len(), 4);
    assert_eq!(ok(&items[0]).line, 2);

    let short = bad(&items[1]);
    assert_eq!(short.span, "span.csv");
    assert_eq!(short.line, 3);
    assert_eq!(short.reason, reason::MALFORMED_ROW);
    assert_eq!(short.reason, "malformed_row");
    assert!(short.detail.contains("expected 2"), "{}", short.detail);
    assert!(short.detail.contains("got 1"), "{}", short.detail);
    assert_eq!(short.raw, "3");

    let long = bad(&items[2]);
    assert_eq!(long.line, 4);
    assert!(long.detail.contains("got 3"), "{}", long.detail);
    assert_eq!(long.raw, "4,5,6");

    let after = ok(&items[3]);
    assert_eq!(after.line, 5);
    assert_eq!(after.record.get("a"), Some(&s("7")));
    assert_eq!(after.record.get("b"), Some(&s("8")));
}

#[test]
fn invalid_utf8_row_is_bad_and_reading_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&csv(&tmp, b"a,b\n1,\xff\xfe\n3,4\n"));
    assert_eq!(items.len(), 2);
    let b = bad(&items[0]);
    assert_eq!(b.reason, "invalid_utf8");
    assert_eq!(b.line, 2);
    assert!(b.detail.contains("\"b\""), "{}", b.detail);
    assert!(
        b.raw.starts_with("1,") && b.raw.contains('\u{fffd}'),
        "{}",
        b.raw
    );
    assert_eq!(ok(&items[1]).line, 3);
}

#[test]
fn empty_file_yields_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let f = csv(&tmp, b"");
    let reader = open_span(&f).unwrap();
    assert!(reader.columns().is_none());
    assert_eq!(reader.count(), 0);
    // Only blank lines: no header either.
    assert!(read_all(&csv(&tmp, b"\n\n\r\n")).is_empty());
}

#[test]
fn header_only_yields_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let f = csv(&tmp, b"a,b,c\n");
    let reader = open_span(&f).unwrap();
    assert_eq!(reader.columns().unwrap(), ["a", "b", "c"]);
    assert_eq!(reader.count(), 0);
    assert!(read_all(&csv(&tmp, b"a,b,c")).is_empty());
}

#[test]
fn bom_is_not_part_of_the_first_column() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&csv(&tmp, "\u{feff}a,b\n1,2\n".as_bytes()));
    assert_eq!(ok(&items[0]).record.get("a"), Some(&s("1")));
}

#[test]
fn duplicate_header_is_an_error_naming_file_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let f = csv(&tmp, b"a,b, a \n1,2,3\n");
    let err = open_span(&f).unwrap_err();
    match &err {
        DataError::DuplicateColumn { path, column } => {
            assert_eq!(path, &f.path);
            assert_eq!(column, "a");
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("span.csv") && msg.contains("\"a\""), "{msg}");
}

#[test]
fn invalid_utf8_header_is_an_error_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = csv(&tmp, b"\n\na,\xff\n1,2\n");
    let err = open_span(&f).unwrap_err();
    assert!(matches!(err, DataError::Header { line: 3, .. }), "{err:?}");
    assert!(err.to_string().contains("span.csv"), "{err}");
}

#[test]
fn missing_file_is_an_open_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let f = SpanFile {
        name: "gone.csv".into(),
        path: tmp.path().join("gone.csv"),
        format: Format::Csv,
        size: 0,
    };
    let err = open_span(&f).unwrap_err();
    assert!(matches!(err, DataError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("gone.csv"), "{err}");
}

#[test]
fn long_file_keeps_exact_raw_text_and_lines() {
    // Large enough to exercise the parser's buffer refills and the capture compaction, with a
    // few rows longer than the parser's buffer.
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("id,payload\n");
    let mut expected = Vec::new();
    let mut line = 2u64;
    for i in 0..20_000u64 {
        let row = if i % 5000 == 17 {
            format!("{i},\"{}\"", "y".repeat(150_000))
        } else if i % 997 == 0 {
            format!("{i},\"multi\nline {i}\"")
        } else {
            format!("{i},payload-{i}")
        };
        expected.push((line, row.clone()));
        line += 1 + row.matches('\n').count() as u64;
        text.push_str(&row);
        text.push('\n');
    }
    let items = read_all(&csv(&tmp, text.as_bytes()));
    assert_eq!(items.len(), expected.len());
    for (item, (line, raw)) in items.iter().zip(&expected) {
        let r = ok(item);
        assert_eq!(r.line, *line);
        assert_eq!(&r.raw, raw);
    }
}

#[test]
fn cr_only_line_endings_count_as_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let items = read_all(&csv(&tmp, b"a,b\r1,2\r\r3,4\r"));
    assert_eq!(items.len(), 2);
    assert_eq!((ok(&items[0]).line, ok(&items[0]).raw.as_str()), (2, "1,2"));
    assert_eq!((ok(&items[1]).line, ok(&items[1]).raw.as_str()), (4, "3,4"));
}

#[cfg(unix)]
#[test]
fn unreadable_span_is_a_read_error() {
    // Opening a directory succeeds on Unix; reading it fails.
    let tmp = tempfile::tempdir().unwrap();
    let f = SpanFile {
        name: "dir.csv".into(),
        path: tmp.path().to_path_buf(),
        format: Format::Csv,
        size: 0,
    };
    let err = open_span(&f).unwrap_err();
    assert!(matches!(err, DataError::Read { .. }), "{err:?}");
}

#[test]
fn readers_and_writers_can_move_between_threads() {
    fn is_send<T: Send>() {}
    is_send::<evergreen_data::SpanReader>();
    is_send::<evergreen_data::QuarantineWriter>();
    is_send::<evergreen_data::SpanDir>();
}
