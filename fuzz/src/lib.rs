//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use evergreen_data::{Format, SpanFile, open_span};

/// A directory private to this process under `std::env::temp_dir()` (so `TMPDIR` moves it;
/// `.ci/fuzz` points it at a temporary directory it removes afterwards). Several fuzzing
/// processes (`-jobs`, `-fork`) never share one.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("evergreen-fuzz-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("create the fuzz scratch directory");
        dir
    })
}

/// Writes `data` to this process's span file `span.<ext>` (overwritten on every run), opens it
/// as a span (the format comes from the extension, as in a span directory) and reads it to the
/// end, checking the reader's invariants:
///
/// - no panic (the fuzzer's own check);
/// - the file name selects the expected format;
/// - line (record) numbers never decrease, and are 1-based;
/// - every item names the span;
/// - the reader ends: at most one item per input byte, plus one (Parquet excepted: a few bytes
///   of run-length encoding can legitimately describe millions of rows, so a Parquet span is
///   read up to [`PARQUET_MAX_ITEMS`] items and then dropped);
/// - after `None` the reader stays done (it is a `FusedIterator`).
pub fn read_span(data: &[u8], ext: &str, format: Format) {
    let name = format!("span.{ext}");
    let path = scratch_dir().join(&name);
    fs::write(&path, data).expect("write the span file");
    assert_eq!(Format::from_path(&path), Some(format), "{name}");
    let file = SpanFile {
        name: name.clone(),
        path,
        format,
        size: data.len() as u64,
    };
    let Ok(mut reader) = open_span(&file) else {
        // An unusable CSV header, or a format that cannot be opened: an error, not a panic.
        return;
    };
    assert_eq!(reader.format(), format);
    let mut last_line = 0u64;
    let mut items = 0usize;
    let limit = data.len() + 1;
    for item in reader.by_ref() {
        items += 1;
        if format == Format::Parquet {
            if items > PARQUET_MAX_ITEMS {
                return;
            }
        } else {
            assert!(
                items <= limit,
                "reader produced more than {limit} items from {} bytes",
                data.len()
            );
        }
        let line = match &item {
            Ok(rec) => rec.line,
            Err(bad) => {
                assert_eq!(bad.span, name);
                assert!(!bad.reason.is_empty());
                bad.line
            }
        };
        assert!(line >= 1, "line numbers are 1-based, got {line}: {item:?}");
        assert!(
            line >= last_line,
            "line number went back from {last_line} to {line}: {item:?}"
        );
        last_line = line;
    }
    assert!(reader.next().is_none(), "reader yielded an item after None");
}

/// Items of a Parquet span read before [`read_span`] stops (see there).
pub const PARQUET_MAX_ITEMS: usize = 100_000;

/// Replaces libFuzzer's panic hook (which aborts, even on a panic that is caught) by the default
/// one, once per process: for readers that catch panics of a dependency themselves (Parquet). A
/// panic that reaches libfuzzer-sys still aborts the process, so it is still reported.
pub fn allow_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| {
            eprintln!("caught by the reader: {info}");
        }));
    });
}

/// Frames `payload` as one TFRecord record with valid CRCs: u64 LE length, masked CRC-32C of
/// the length bytes, payload, masked CRC-32C of the payload.
pub fn tfrecord_frame(payload: &[u8]) -> Vec<u8> {
    // Written as the TFRecord format states it, independently of the crate's `masked_crc32c`.
    #[allow(clippy::manual_rotate)]
    fn masked(data: &[u8]) -> u32 {
        let c = crc32c::crc32c(data);
        ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
    }
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked(payload).to_le_bytes());
    out
}

/// Writes `data` to this process's scratch file `name` and returns its path.
pub fn write_scratch(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    fs::write(&path, data).expect("write the scratch file");
    path
}

/// Float equality that treats every NaN as equal to every NaN (for round-trip checks).
pub fn same_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}
