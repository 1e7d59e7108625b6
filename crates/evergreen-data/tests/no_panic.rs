//! Property tests: no input makes a reader panic, and well-formed CSV round-trips.

mod common;

use common::span;
use evergreen_core::RawValue;
use evergreen_data::{Format, open_span};
use proptest::prelude::*;

/// Bytes biased towards the characters that matter to the parsers.
fn nasty_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &b","[..],
        b"\"",
        b"\n",
        b"\r",
        b"\r\n",
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b"NaN",
        b"-Infinity",
        b"Infinity",
        b"null",
        b"true",
        b"1",
        b"-",
        b"e5",
        b"\\",
        b" ",
        b"\xff",
        b"\xe2\x82",
        b"\xef\xbb\xbf",
        b"a",
        b"\"k\"",
        b"\t",
        b"\0",
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        prop::collection::vec(pieces, 0..120).prop_map(|v| v.concat()),
    ]
}

fn check(bytes: &[u8], format: Format) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let f = span(tmp.path(), "fuzz", format, bytes);
    // Line breaks as the CSV reader counts them (CRLF, CR, LF); JSON Lines counts LF only,
    // which is never more.
    let mut newlines = 0u64;
    let mut last_cr = false;
    for &b in bytes {
        if b == b'\r' || (b == b'\n' && !last_cr) {
            newlines += 1;
        }
        last_cr = b == b'\r';
    }
    let Ok(reader) = open_span(&f) else {
        // An unusable CSV header is a clean error, not a panic.
        prop_assert_eq!(format, Format::Csv);
        return Ok(());
    };
    let mut last_line = 0;
    let mut n = 0u64;
    for item in reader {
        let line = match &item {
            Ok(r) => r.line,
            Err(b) => {
                prop_assert!(!b.reason.is_empty());
                prop_assert_eq!(&b.span, "fuzz");
                b.line
            }
        };
        prop_assert!(
            line >= 1 && line <= newlines + 1,
            "line {} of {}",
            line,
            newlines + 1
        );
        prop_assert!(
            line > last_line,
            "lines increase: {} after {}",
            line,
            last_line
        );
        last_line = line;
        n += 1;
    }
    prop_assert!(n <= newlines + 1);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn csv_reader_never_panics(bytes in nasty_bytes()) {
        check(&bytes, Format::Csv)?;
    }

    #[test]
    fn jsonl_reader_never_panics(bytes in nasty_bytes()) {
        check(&bytes, Format::Jsonl)?;
    }

    #[test]
    fn well_formed_csv_round_trips(
        rows in prop::collection::vec(prop::collection::vec(any::<String>(), 3), 0..20)
    ) {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["a", "b", "c"]).unwrap();
        for row in &rows {
            w.write_record(row).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let f = span(tmp.path(), "rt.csv", Format::Csv, &bytes);
        let items: Vec<_> = open_span(&f).unwrap().collect();
        prop_assert_eq!(items.len(), rows.len());
        for (item, row) in items.iter().zip(&rows) {
            let r = item.as_ref().map_err(|b| TestCaseError::fail(b.to_string()))?;
            for (name, cell) in ["a", "b", "c"].iter().zip(row) {
                let want = if cell.is_empty() { RawValue::Missing } else { RawValue::Str(cell.clone()) };
                prop_assert_eq!(r.record.get(name), Some(&want));
            }
            // The raw text parses back to the same row.
            let mut back = csv::ReaderBuilder::new().has_headers(false).from_reader(r.raw.as_bytes());
            let rec = back.records().next().unwrap().unwrap();
            prop_assert_eq!(rec.iter().collect::<Vec<_>>(), row.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
