//! Helpers shared by the integration tests (included with `mod common;`).

#![allow(dead_code)]

use std::path::Path;

use evergreen_core::RawValue;
use evergreen_data::{BadRecord, Format, SourceRecord, SpanFile, SpanReader, open_span};

/// Writes `bytes` to `dir/name` and returns it as a span of `format`.
pub fn span(dir: &Path, name: &str, format: Format, bytes: &[u8]) -> SpanFile {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    SpanFile {
        name: name.to_string(),
        path,
        format,
        size: bytes.len() as u64,
    }
}

/// Opens and drains a span.
pub fn read_all(file: &SpanFile) -> Vec<Result<SourceRecord, BadRecord>> {
    let reader: SpanReader = open_span(file).unwrap();
    reader.collect()
}

/// A string value.
pub fn s(text: &str) -> RawValue {
    RawValue::Str(text.to_string())
}

/// Unwraps a good record.
pub fn ok(item: &Result<SourceRecord, BadRecord>) -> &SourceRecord {
    match item {
        Ok(r) => r,
        Err(b) => panic!("expected a record, got bad record {b}"),
    }
}

/// Unwraps a bad record.
pub fn bad(item: &Result<SourceRecord, BadRecord>) -> &BadRecord {
    match item {
        Err(b) => b,
        Ok(r) => panic!("expected a bad record, got {r:?}"),
    }
}
