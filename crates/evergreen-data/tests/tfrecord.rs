//! TFRecord spans: TensorFlow-written fixtures read back exactly, round trips of the framing and
//! the `tf.train.Example` codec, corruption (bad CRCs, bad lengths, truncation at every byte,
//! corrupt gzip) reported as bad records, and arbitrary bytes that never panic.

mod common;

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use common::{bad, ok, read_all, span};
use evergreen_core::{RawRecord, RawValue};
use evergreen_data::tfrecord::{
    FeatureValues, TfRecordError, TfRecordReader, TfRecordWriter, decode_example, decompressed,
    encode_example,
};
use evergreen_data::{BadRecord, Format, SourceRecord, SpanFile, reason};
use flate2::Compression;
use flate2::write::GzEncoder;
use proptest::prelude::*;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-data/tfrecord")
        .join(name)
}

fn fixture_span(name: &str) -> SpanFile {
    let path = fixture(name);
    SpanFile {
        name: name.to_string(),
        size: std::fs::metadata(&path).unwrap().len(),
        path,
        format: Format::Tfrecord,
    }
}

/// Exact equality: floats by bit pattern (so `-0.0 != 0.0`), any NaN equal to any NaN.
fn same(a: &RawValue, b: &RawValue) -> bool {
    match (a, b) {
        (RawValue::Num(x), RawValue::Num(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        (RawValue::List(x), RawValue::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

fn assert_same_record(got: &RawRecord, want: &RawRecord, context: &str) {
    let mut g: Vec<_> = got.fields().iter().collect();
    let mut w: Vec<_> = want.fields().iter().collect();
    g.sort_by(|a, b| a.0.cmp(&b.0));
    w.sort_by(|a, b| a.0.cmp(&b.0));
    let names = |v: &[&(evergreen_core::FieldName, RawValue)]| {
        v.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names(&g), names(&w), "{context}: feature names");
    for ((name, gv), (_, wv)) in g.iter().zip(&w) {
        assert!(
            same(gv, wv),
            "{context}: feature {name:?}: got {gv:?}, want {wv:?}"
        );
    }
}

/// The float32 value that a JSON number written as a widened float32 stands for.
///
/// The file holds the shortest text of the exact f64, but serde_json (without its
/// `float_roundtrip` feature) may parse it one f64 ulp off. The f32 nearest to the parsed
/// number is still the exact value (an f64 ulp is far below half an f32 ulp), so narrowing and
/// widening again recovers it exactly; the check below makes sure the file holds such values.
fn widened_f32(parsed: f64) -> f64 {
    let exact = f64::from(parsed as f32);
    assert!(
        (exact - parsed).abs() <= exact.abs() * f64::EPSILON * 2.0,
        "{parsed} is not a float32 value"
    );
    exact
}

/// One feature of an `*.expected.json` file as the reader must produce it.
fn expected_value(v: &serde_json::Value) -> RawValue {
    let obj = v.as_object().expect("feature is an object");
    assert_eq!(obj.len(), 1, "one kind per feature: {v}");
    let (kind, values) = obj.iter().next().unwrap();
    let values = values.as_array().expect("values are a list");
    let mut out: Vec<RawValue> = values
        .iter()
        .map(|x| match kind.as_str() {
            "bytes" => RawValue::Bytes(x.as_str().unwrap().as_bytes().to_vec()),
            "float" => RawValue::Num(widened_f32(x.as_f64().unwrap())),
            "int64" => RawValue::Int(x.as_str().unwrap().parse().unwrap()),
            other => panic!("unknown kind {other}"),
        })
        .collect();
    match out.len() {
        0 => RawValue::Missing,
        1 => out.pop().unwrap(),
        _ => RawValue::List(out),
    }
}

fn expected_records(name: &str) -> Vec<RawRecord> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let records = doc["records"].as_array().unwrap();
    assert_eq!(doc["count"].as_u64(), Some(records.len() as u64));
    records
        .iter()
        .map(|r| {
            r.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), expected_value(v)))
                .collect()
        })
        .collect()
}

fn check_fixture(file: &str, expected: &str, count: usize) {
    let want = expected_records(expected);
    assert_eq!(want.len(), count);
    let items = read_all(&fixture_span(file));
    assert_eq!(items.len(), want.len(), "{file}: record count");
    for (i, (item, want)) in items.iter().zip(&want).enumerate() {
        let rec = ok(item);
        assert_eq!(rec.line, i as u64 + 1);
        assert!(rec.raw.is_empty(), "good records keep no raw text");
        assert_same_record(&rec.record, want, &format!("{file} record {}", i + 1));
    }
}

#[test]
fn tensorflow_examples_fixture_reads_exactly() {
    check_fixture("examples.tfrecord", "examples.expected.json", 1000);
}

#[test]
fn tensorflow_examples_gzip_fixture_reads_exactly() {
    check_fixture("examples.tfrecord.gz", "examples.expected.json", 1000);
}

#[test]
fn tensorflow_edge_fixture_reads_exactly() {
    check_fixture("edge.tfrecord", "edge.expected.json", 140);
}

#[test]
fn tensorflow_edge_gzip_fixture_reads_exactly() {
    check_fixture("edge.tfrecord.gz", "edge.expected.json", 140);
}

#[test]
fn edge_fixture_covers_the_edge_cases() {
    // Guards the fixture itself: the exact-match test above is only as strong as its content.
    let recs = expected_records("edge.expected.json");
    let all: Vec<&RawValue> = recs
        .iter()
        .flat_map(|r| r.fields().iter().map(|(_, v)| v))
        .collect();
    let flat: Vec<&RawValue> = all
        .iter()
        .flat_map(|v| match v {
            RawValue::List(l) => l.iter().collect::<Vec<_>>(),
            v => vec![*v],
        })
        .collect();
    assert!(all.iter().any(|v| matches!(v, RawValue::Missing)));
    assert!(recs.iter().any(|r| r.len() < 6), "a record lacks a feature");
    assert!(flat.contains(&&RawValue::Int(i64::MIN)));
    assert!(flat.contains(&&RawValue::Int(i64::MAX)));
    assert!(flat.contains(&&RawValue::Num(f64::from(f32::MAX))));
    // The README mentions subnormals, but the smallest magnitude in the file is the smallest
    // normal float32; subnormals are covered by the round-trip property tests.
    assert!(flat.contains(&&RawValue::Num(-f64::from(f32::MIN_POSITIVE))));
    assert!(
        flat.iter()
            .any(|v| matches!(v, RawValue::Bytes(b) if b.is_empty()))
    );
    assert!(
        flat.iter()
            .any(|v| matches!(v, RawValue::Bytes(b) if !b.is_ascii()))
    );
    assert!(
        all.iter()
            .any(|v| matches!(v, RawValue::List(l) if l.len() == 300))
    );
}

#[test]
fn reader_api_reads_the_fixtures() {
    let plain: Vec<Vec<u8>> = TfRecordReader::open(fixture("examples.tfrecord"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let gz: Vec<Vec<u8>> = TfRecordReader::open(fixture("examples.tfrecord.gz"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(plain.len(), 1000);
    assert_eq!(plain, gz);
    // Re-framing TensorFlow's payloads with our writer gives TensorFlow's file byte for byte.
    let mut w = TfRecordWriter::new(Vec::new());
    for p in &plain {
        w.write_record(p).unwrap();
    }
    assert_eq!(
        w.into_inner(),
        std::fs::read(fixture("examples.tfrecord")).unwrap()
    );
    let e = TfRecordReader::open(fixture("nope.tfrecord")).unwrap_err();
    assert!(e.to_string().contains("nope.tfrecord"), "{e}");
}

#[test]
fn our_encoder_reproduces_tensorflow_payloads() {
    // TensorFlow writes map entries in an unspecified order, so compare by decoding: encoding
    // the decoded features again (in TensorFlow's order) must give the same bytes.
    let mut checked = 0;
    for p in TfRecordReader::open(fixture("edge.tfrecord")).unwrap() {
        let p = p.unwrap();
        let rec = decode_example(&p).unwrap();
        // Empty lists decode to Missing, whose kind is lost; skip records that have one.
        if rec
            .fields()
            .iter()
            .any(|(_, v)| matches!(v, RawValue::Missing))
        {
            continue;
        }
        checked += 1;
        let features: Vec<(String, FeatureValues)> = rec
            .fields()
            .iter()
            .map(|(k, v)| (k.to_string(), to_feature(v)))
            .collect();
        assert_eq!(encode_example(&features), p);
    }
    assert!(checked >= 20, "only {checked} records compared");
}

fn to_feature(v: &RawValue) -> FeatureValues {
    let items: Vec<&RawValue> = match v {
        RawValue::List(l) => l.iter().collect(),
        v => vec![v],
    };
    match items[0] {
        RawValue::Bytes(_) => FeatureValues::Bytes(
            items
                .iter()
                .map(|x| match x {
                    RawValue::Bytes(b) => b.clone(),
                    _ => unreachable!(),
                })
                .collect(),
        ),
        RawValue::Num(_) => FeatureValues::Float(
            items
                .iter()
                .map(|x| match x {
                    RawValue::Num(f) => *f as f32,
                    _ => unreachable!(),
                })
                .collect(),
        ),
        RawValue::Int(_) => FeatureValues::Int64(
            items
                .iter()
                .map(|x| match x {
                    RawValue::Int(i) => *i,
                    _ => unreachable!(),
                })
                .collect(),
        ),
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Corruption

fn sample_payloads() -> Vec<Vec<u8>> {
    (0..4)
        .map(|i| {
            encode_example(&[
                ("id", FeatureValues::Int64(vec![i])),
                (
                    "name",
                    FeatureValues::Bytes(vec![format!("n{i}").into_bytes()]),
                ),
                ("x", FeatureValues::Float(vec![i as f32 * 0.5, 1.0])),
            ])
        })
        .collect()
}

fn frame(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let mut w = TfRecordWriter::new(Vec::new());
    let mut starts = Vec::new();
    for p in payloads {
        starts.push(w.get_ref().len());
        w.write_record(p).unwrap();
    }
    (w.into_inner(), starts)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn read_bytes(bytes: &[u8]) -> Vec<Result<SourceRecord, BadRecord>> {
    let tmp = tempfile::tempdir().unwrap();
    read_all(&span(tmp.path(), "s.tfrecord", Format::Tfrecord, bytes))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn id_of(item: &Result<SourceRecord, BadRecord>) -> i64 {
    match ok(item).record.get("id") {
        Some(RawValue::Int(i)) => *i,
        other => panic!("no id: {other:?}"),
    }
}

#[test]
fn flipped_payload_bit_is_bad_crc_and_reading_continues() {
    let payloads = sample_payloads();
    let (mut bytes, starts) = frame(&payloads);
    let at = starts[1] + 12 + 3;
    bytes[at] ^= 0x10;
    for data in [bytes.clone(), gzip(&bytes)] {
        let items = read_bytes(&data);
        assert_eq!(items.len(), 4);
        assert_eq!(id_of(&items[0]), 0);
        let b = bad(&items[1]);
        assert_eq!(b.reason, reason::BAD_CRC);
        assert_eq!(b.line, 2);
        assert!(b.detail.contains("record 2 at byte"), "{}", b.detail);
        assert_eq!(b.raw, b64(&bytes[starts[1] + 12..starts[2] - 4]));
        assert_eq!(id_of(&items[2]), 2);
        assert_eq!(ok(&items[3]).line, 4);
    }
}

#[test]
fn flipped_data_crc_bit_is_bad_crc() {
    let (mut bytes, starts) = frame(&sample_payloads());
    bytes[starts[2] - 1] ^= 0x80;
    let items = read_bytes(&bytes);
    assert_eq!(items.len(), 4);
    assert_eq!(bad(&items[1]).reason, reason::BAD_CRC);
    assert_eq!(id_of(&items[2]), 2);
}

#[test]
fn flipped_length_bit_is_bad_length_and_reading_stops() {
    let (bytes, starts) = frame(&sample_payloads());
    // Every bit of record 3's length and length CRC.
    for byte in starts[2]..starts[2] + 12 {
        for bit in 0..8 {
            let mut data = bytes.clone();
            data[byte] ^= 1 << bit;
            for data in [data.clone(), gzip(&data)] {
                let items = read_bytes(&data);
                assert_eq!(items.len(), 3, "flip at {byte}:{bit}");
                assert_eq!(id_of(&items[0]), 0);
                assert_eq!(id_of(&items[1]), 1);
                let b = bad(&items[2]);
                assert_eq!(b.reason, reason::BAD_LENGTH, "{b}");
                assert_eq!(b.line, 3);
                assert_eq!(b.raw, b64(&data_header(&data, starts[2])));
            }
        }
    }
}

fn data_header(data: &[u8], start: usize) -> Vec<u8> {
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(data), &mut out).unwrap();
        out[start..start + 12].to_vec()
    } else {
        data[start..start + 12].to_vec()
    }
}

#[test]
fn over_long_length_with_valid_crc_is_bad_length() {
    let len = (1u64 << 40).to_le_bytes();
    let mut bytes = frame(&sample_payloads()[..1]).0;
    bytes.extend_from_slice(&len);
    bytes.extend_from_slice(&evergreen_data::tfrecord::masked_crc32c(&len).to_le_bytes());
    bytes.extend_from_slice(&[0; 100]);
    let items = read_bytes(&bytes);
    assert_eq!(items.len(), 2);
    let b = bad(&items[1]);
    assert_eq!(b.reason, reason::BAD_LENGTH);
    assert!(b.detail.contains("exceeds the maximum"), "{}", b.detail);
}

#[test]
fn truncation_at_every_byte_of_the_last_record() {
    let payloads = sample_payloads();
    let (bytes, starts) = frame(&payloads);
    let last = *starts.last().unwrap();
    for cut in last..=bytes.len() {
        let data = &bytes[..cut];
        for (gz, data) in [(false, data.to_vec()), (true, gzip(data))] {
            let items = read_bytes(&data);
            for (i, item) in items.iter().take(3).enumerate() {
                assert_eq!(id_of(item), i as i64, "cut {cut} gzip {gz}");
            }
            if cut == last {
                assert_eq!(items.len(), 3, "clean end at a record boundary");
            } else if cut == bytes.len() {
                assert_eq!(items.len(), 4);
                assert_eq!(id_of(&items[3]), 3);
            } else {
                assert_eq!(items.len(), 4, "cut {cut} gzip {gz}");
                let b = bad(&items[3]);
                assert_eq!(b.reason, reason::TRUNCATED_RECORD, "cut {cut}: {b}");
                assert_eq!(b.line, 4);
                let payload_start = last + 12;
                let have = cut.clamp(payload_start, bytes.len() - 4);
                assert_eq!(
                    b.raw,
                    b64(&bytes[payload_start.min(have)..have]),
                    "cut {cut}"
                );
            }
        }
    }
}

#[test]
fn truncated_gzip_file_at_every_byte_never_panics() {
    let (bytes, _) = frame(&sample_payloads());
    let gz = gzip(&bytes);
    for cut in 0..gz.len() {
        let items = read_bytes(&gz[..cut]);
        // Every record before the damage reads correctly; the last item reports it.
        let mut good = 0;
        for item in &items {
            match item {
                Ok(_) => {
                    assert_eq!(id_of(item), good);
                    good += 1;
                }
                Err(b) => {
                    assert_eq!(b.reason, reason::TRUNCATED_RECORD, "cut {cut}: {b}");
                    if cut >= 2 {
                        assert!(b.detail.contains("gzip stream ends early"), "{}", b.detail);
                    }
                }
            }
        }
        if cut > 0 {
            let last = items.last().expect("an item reports the truncation");
            assert!(
                last.is_err(),
                "cut {cut}: a truncated gzip file is reported"
            );
        }
    }
}

#[test]
fn corrupt_gzip_is_reported_not_retried() {
    let (bytes, _) = frame(&sample_payloads());
    let mut gz = gzip(&bytes);
    // The header's flag byte, the first deflate block header, the trailer's CRC. (Flips
    // elsewhere in the deflate data may instead decode to garbage that the record CRCs catch.)
    for at in [3, 10, gz.len() - 6] {
        let orig = gz[at];
        gz[at] ^= 0xff;
        let items = read_bytes(&gz);
        let last = bad(items.last().unwrap());
        assert_eq!(last.reason, reason::CORRUPT_GZIP, "flip at {at}: {last}");
        assert!(
            last.detail.contains("corrupt gzip stream"),
            "{}",
            last.detail
        );
        gz[at] = orig;
    }
}

#[test]
fn multi_member_gzip_reads_all_members() {
    let payloads = sample_payloads();
    let (a, _) = frame(&payloads[..2]);
    let (b, _) = frame(&payloads[2..]);
    let data = [gzip(&a), gzip(&b)].concat();
    let items = read_bytes(&data);
    assert_eq!(items.len(), 4);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(id_of(item), i as i64);
        assert_eq!(ok(item).line, i as u64 + 1);
    }
}

#[test]
fn malformed_example_is_bad_and_reading_continues() {
    let mut payloads = sample_payloads();
    payloads[1] = vec![0x0a, 0xff];
    let big = [vec![0x0a, 0x05], vec![7u8; 10_000]].concat();
    payloads[2] = big.clone();
    let (bytes, _) = frame(&payloads);
    let items = read_bytes(&bytes);
    assert_eq!(items.len(), 4);
    let b = bad(&items[1]);
    assert_eq!(b.reason, reason::MALFORMED_EXAMPLE);
    assert_eq!(b.line, 2);
    assert_eq!(b.raw, "Cv8=");
    assert!(b.detail.contains("record 2 at byte"), "{}", b.detail);
    assert!(b.detail.contains("varint"), "{}", b.detail);
    let b = bad(&items[2]);
    assert_eq!(b.reason, reason::MALFORMED_EXAMPLE);
    assert_eq!(
        b.raw,
        b64(&big[..4096]),
        "raw keeps at most 4 KiB of payload"
    );
    assert_eq!(id_of(&items[3]), 3);
}

#[test]
fn tiny_and_empty_files() {
    assert!(read_bytes(b"").is_empty());
    for data in [&[0x1f][..], &[0x1f, 0x8b][..], &[1, 2, 3][..]] {
        let items = read_bytes(data);
        assert_eq!(items.len(), 1, "{data:?}");
        let b = bad(&items[0]);
        assert!(
            [reason::TRUNCATED_RECORD, reason::CORRUPT_GZIP].contains(&b.reason),
            "{b}"
        );
    }
    // An empty gzip stream is an empty span.
    assert!(read_bytes(&gzip(b"")).is_empty());
    // An empty payload is an example with no features.
    let (bytes, _) = frame(&[Vec::new()]);
    let items = read_bytes(&bytes);
    assert_eq!(items.len(), 1);
    assert!(ok(&items[0]).record.is_empty());
}

#[test]
fn reader_reports_positions_and_continues_after_data_crc() {
    let (mut bytes, starts) = frame(&sample_payloads());
    bytes[starts[1] + 12] ^= 1;
    let mut r = TfRecordReader::new(&bytes[..]).with_path("span.tfrecord");
    assert!(r.next_record().unwrap().is_ok());
    let e = r.next_record().unwrap().unwrap_err();
    assert!(!e.is_fatal());
    let pos = e.position().unwrap();
    assert_eq!((pos.record, pos.offset), (2, starts[1] as u64));
    assert!(
        e.to_string().starts_with(&format!(
            "span.tfrecord: record 2 at byte {}: data CRC mismatch",
            starts[1]
        )),
        "{e}"
    );
    assert_eq!(r.record_number(), 2);
    assert_eq!(r.record_offset(), starts[1] as u64);
    assert!(r.next_record().unwrap().is_ok());
    assert!(r.next_record().unwrap().is_ok());
    assert!(r.next_record().is_none());
    assert!(r.next_record().is_none());
    // Truncated: reported once, then the end.
    let mut r = TfRecordReader::new(&bytes[..bytes.len() - 1]);
    let items: Vec<_> = r.by_ref().collect();
    assert_eq!(items.len(), 4);
    assert!(matches!(
        items[3],
        Err(TfRecordError::Truncated {
            part: "data CRC",
            got: 3,
            need: 4,
            ..
        })
    ));
    assert!(r.next().is_none());
}

// ---------------------------------------------------------------------------------------------
// Property tests

fn feature_values() -> impl Strategy<Value = FeatureValues> {
    prop_oneof![
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..5)
            .prop_map(FeatureValues::Bytes),
        prop::collection::vec(any::<u32>().prop_map(f32::from_bits), 0..6)
            .prop_map(FeatureValues::Float),
        prop::collection::vec(
            prop_oneof![any::<i64>(), -300i64..300, Just(i64::MIN), Just(i64::MAX)],
            0..6
        )
        .prop_map(FeatureValues::Int64),
        Just(FeatureValues::NoKind),
    ]
}

fn examples() -> impl Strategy<Value = Vec<(String, FeatureValues)>> {
    prop::collection::vec(
        (prop_oneof!["[a-c]{0,2}", "\\PC{0,6}"], feature_values()),
        0..8,
    )
}

fn expected(features: &[(String, FeatureValues)]) -> RawRecord {
    features
        .iter()
        .map(|(k, v)| (k.clone(), v.to_raw()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn framing_round_trips(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20)) {
        let (bytes, _) = frame(&payloads);
        let back: Vec<Vec<u8>> = TfRecordReader::new(&bytes[..]).map(Result::unwrap).collect();
        prop_assert_eq!(&back, &payloads);
        let (stream, is_gz) = decompressed(std::io::Cursor::new(gzip(&bytes))).unwrap();
        prop_assert!(is_gz || bytes.is_empty());
        let back: Vec<Vec<u8>> = TfRecordReader::new(stream).map(Result::unwrap).collect();
        prop_assert_eq!(&back, &payloads);
        // Gzip through the writer itself.
        let mut w = TfRecordWriter::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for p in &payloads {
            w.write_record(p).unwrap();
        }
        w.flush().unwrap();
        let gz = w.into_inner().finish().unwrap();
        let (stream, is_gz) = decompressed(std::io::Cursor::new(gz)).unwrap();
        prop_assert!(is_gz);
        let back: Vec<Vec<u8>> = TfRecordReader::new(stream).map(Result::unwrap).collect();
        prop_assert_eq!(&back, &payloads);
    }

    #[test]
    fn examples_round_trip(features in examples()) {
        let bytes = encode_example(&features);
        let got = decode_example(&bytes).unwrap();
        let want = expected(&features);
        prop_assert_eq!(got.len(), want.len());
        for ((gk, gv), (wk, wv)) in got.fields().iter().zip(want.fields()) {
            prop_assert_eq!(gk, wk);
            prop_assert!(same(gv, wv), "{:?}: got {:?}, want {:?}", gk, gv, wv);
        }
    }

    #[test]
    fn example_spans_round_trip(records in prop::collection::vec(examples(), 0..6), gz in any::<bool>()) {
        let payloads: Vec<Vec<u8>> = records.iter().map(|f| encode_example(f)).collect();
        let (mut bytes, _) = frame(&payloads);
        if gz {
            bytes = gzip(&bytes);
        }
        let items = read_bytes(&bytes);
        prop_assert_eq!(items.len(), records.len());
        for (i, (item, features)) in items.iter().zip(&records).enumerate() {
            let rec = ok(item);
            prop_assert_eq!(rec.line, i as u64 + 1);
            let want = expected(features);
            prop_assert_eq!(rec.record.len(), want.len());
            for ((gk, gv), (wk, wv)) in rec.record.fields().iter().zip(want.fields()) {
                prop_assert_eq!(gk, wk);
                prop_assert!(same(gv, wv));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_framing(bytes in prop::collection::vec(any::<u8>(), 0..2000), verify in any::<bool>()) {
        let mut r = TfRecordReader::new(&bytes[..]).with_verify(verify);
        let mut n = 0;
        while let Some(item) = r.next_record() {
            n += 1;
            prop_assert!(n <= bytes.len() / 16 + 1);
            if let Ok(p) = item {
                prop_assert!(p.len() <= bytes.len());
            }
        }
        let items = read_bytes(&bytes);
        prop_assert!(items.len() <= bytes.len() / 16 + 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_example(&bytes);
    }

    #[test]
    fn mutated_examples_never_panic(features in examples(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>()) {
        let mut bytes = encode_example(&features);
        if !bytes.is_empty() {
            for (i, x) in &flips {
                let at = i.index(bytes.len());
                bytes[at] ^= x;
            }
            let _ = decode_example(&bytes);
            let _ = decode_example(&bytes[..cut.index(bytes.len())]);
        }
    }

    #[test]
    fn mutated_frames_never_panic(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let (mut bytes, _) = frame(&payloads);
        for (i, x) in &flips {
            let at = i.index(bytes.len());
            bytes[at] ^= x;
        }
        for verify in [true, false] {
            let n = TfRecordReader::new(&bytes[..]).with_verify(verify).count();
            prop_assert!(n <= payloads.len() + 1);
        }
        let items = read_bytes(&bytes);
        prop_assert!(items.len() <= payloads.len());
    }
}
