//! Rough TFRecord reading throughput (ignored by default; run in release mode):
//!
//! ```text
//! cargo test --release -p evergreen-data --test tfrecord_throughput -- --ignored --nocapture
//! ```
//!
//! Prints records/s and MB/s (of uncompressed record stream) for framing only (with and without
//! CRC checks) and for framing plus `tf.train.Example` decoding through `open_span`.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::time::Instant;

use evergreen_data::tfrecord::{FeatureValues, TfRecordReader, TfRecordWriter, encode_example};
use evergreen_data::{Format, SpanFile, open_span};
use flate2::Compression;
use flate2::write::GzEncoder;

/// A click-log-like example: label, two ids, hour, price, 0-4 tags (about 120 bytes).
fn small(i: i64) -> Vec<(String, FeatureValues)> {
    vec![
        ("label".into(), FeatureValues::Int64(vec![i % 2])),
        (
            "user_id".into(),
            FeatureValues::Bytes(vec![format!("u{}", i % 5000).into_bytes()]),
        ),
        (
            "ad_id".into(),
            FeatureValues::Bytes(vec![format!("ad{}", i % 97).into_bytes()]),
        ),
        ("hour".into(), FeatureValues::Int64(vec![i % 24])),
        (
            "price".into(),
            FeatureValues::Float(vec![(i % 1000) as f32 * 0.1]),
        ),
        (
            "tags".into(),
            FeatureValues::Bytes((0..i % 5).map(|t| format!("t{t}").into_bytes()).collect()),
        ),
    ]
}

/// A wide example: 8 KiB of bytes and 200 floats.
fn large(i: i64) -> Vec<(String, FeatureValues)> {
    vec![
        (
            "blob".into(),
            FeatureValues::Bytes(vec![vec![(i % 251) as u8; 8192]]),
        ),
        (
            "emb".into(),
            FeatureValues::Float((0..200).map(|x| x as f32 * 0.01).collect()),
        ),
    ]
}

fn write(path: &Path, n: i64, make: fn(i64) -> Vec<(String, FeatureValues)>, gzip: bool) -> u64 {
    let file = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut raw = 0u64;
    if gzip {
        let mut w = TfRecordWriter::new(GzEncoder::new(file, Compression::fast()));
        for i in 0..n {
            let p = encode_example(&make(i));
            raw += 16 + p.len() as u64;
            w.write_record(&p).unwrap();
        }
        w.into_inner().finish().unwrap().flush().unwrap();
    } else {
        let mut w = TfRecordWriter::new(file);
        for i in 0..n {
            let p = encode_example(&make(i));
            raw += 16 + p.len() as u64;
            w.write_record(&p).unwrap();
        }
        w.flush().unwrap();
    }
    raw
}

/// Best of three runs (the machine may be shared).
fn best(mut run: impl FnMut() -> u64) -> (u64, f64) {
    let mut best = f64::INFINITY;
    let mut n = 0;
    for _ in 0..3 {
        let t = Instant::now();
        n = run();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (n, best)
}

fn report(what: &str, n: u64, bytes: u64, secs: f64) {
    println!(
        "{what:<44} {:>10.0} records/s {:>8.1} MB/s ({n} records, {:.1} MB, {secs:.2} s)",
        n as f64 / secs,
        bytes as f64 / secs / 1e6,
        bytes as f64 / 1e6
    );
}

fn measure(path: &Path, raw: u64, n: i64, label: &str) {
    for verify in [true, false] {
        let (count, secs) = best(|| {
            let mut r = TfRecordReader::open(path).unwrap().with_verify(verify);
            let mut count = 0u64;
            let mut sum = 0usize;
            while let Some(p) = r.next_record() {
                sum += p.unwrap().len();
                count += 1;
            }
            assert!(sum > 0);
            count
        });
        assert_eq!(count, n as u64);
        let v = if verify { "CRC checked" } else { "no CRC" };
        report(&format!("{label}: framing only, {v}"), count, raw, secs);
    }
    let span = SpanFile {
        name: "bench".into(),
        path: path.to_path_buf(),
        format: Format::Tfrecord,
        size: std::fs::metadata(path).unwrap().len(),
    };
    let (count, secs) = best(|| {
        let mut count = 0u64;
        let mut fields = 0usize;
        for item in open_span(&span).unwrap() {
            fields += item.unwrap().record.len();
            count += 1;
        }
        assert!(fields > 0);
        count
    });
    assert_eq!(count, n as u64);
    report(
        &format!("{label}: framing + decode (open_span)"),
        count,
        raw,
        secs,
    );
}

#[test]
#[ignore = "throughput measurement; run in release mode with --ignored --nocapture"]
fn tfrecord_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, n, make, gzip) in [
        ("small, plain", 1_000_000, small as fn(i64) -> _, false),
        ("small, gzip", 1_000_000, small, true),
        ("8 KiB, plain", 20_000, large, false),
    ] {
        let path = tmp.path().join("bench.tfrecord");
        let raw = write(&path, n, make, gzip);
        // Warm the page cache.
        let _ = std::fs::read(&path).unwrap();
        measure(&path, raw, n, label);
    }
}
