//! The `tf.train.Example` decoder on arbitrary bytes.
//!
//! - `decode_example` never panics;
//! - a decoded record survives a round trip: re-encoded with `encode_example` (each value back
//!   to the feature list it came from) it decodes to the same record;
//! - the span reader agrees with the decoder: the same bytes, framed as the only record of a
//!   TFRecord file with valid CRCs, read as that record, or as one `malformed_example` item.
#![no_main]

use evergreen_core::{RawRecord, RawValue};
use evergreen_data::tfrecord::{FeatureValues, decode_example, encode_example};
use evergreen_data::{Format, SpanFile, open_span, reason};
use evergreen_fuzz::{same_f64, tfrecord_frame, write_scratch};
use libfuzzer_sys::fuzz_target;

/// The feature list a decoded value came from (see `FeatureValues::to_raw`).
fn back(v: &RawValue) -> FeatureValues {
    fn one(v: &RawValue) -> FeatureValues {
        match v {
            RawValue::Bytes(b) => FeatureValues::Bytes(vec![b.clone()]),
            RawValue::Num(x) => FeatureValues::Float(vec![*x as f32]),
            RawValue::Int(i) => FeatureValues::Int64(vec![*i]),
            RawValue::Missing => FeatureValues::NoKind,
            other => panic!("decode_example produced {other:?} inside a list"),
        }
    }
    match v {
        RawValue::List(items) => {
            assert!(items.len() >= 2, "a list of fewer than 2 values: {v:?}");
            match one(&items[0]) {
                FeatureValues::Bytes(_) => FeatureValues::Bytes(
                    items
                        .iter()
                        .map(|x| match x {
                            RawValue::Bytes(b) => b.clone(),
                            other => panic!("mixed list: {v:?} ({other:?})"),
                        })
                        .collect(),
                ),
                FeatureValues::Float(_) => FeatureValues::Float(
                    items
                        .iter()
                        .map(|x| match x {
                            RawValue::Num(f) => *f as f32,
                            other => panic!("mixed list: {v:?} ({other:?})"),
                        })
                        .collect(),
                ),
                FeatureValues::Int64(_) => FeatureValues::Int64(
                    items
                        .iter()
                        .map(|x| match x {
                            RawValue::Int(i) => *i,
                            other => panic!("mixed list: {v:?} ({other:?})"),
                        })
                        .collect(),
                ),
                FeatureValues::NoKind => panic!("a list holding a missing value: {v:?}"),
            }
        }
        other => one(other),
    }
}

fn same_value(a: &RawValue, b: &RawValue) -> bool {
    match (a, b) {
        (RawValue::Num(x), RawValue::Num(y)) => same_f64(*x, *y),
        (RawValue::List(x), RawValue::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        _ => a == b,
    }
}

fn same_record(a: &RawRecord, b: &RawRecord) -> bool {
    a.len() == b.len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

fuzz_target!(|data: &[u8]| {
    let decoded = decode_example(data);

    if let Ok(record) = &decoded {
        let features: Vec<(&str, FeatureValues)> = record
            .fields()
            .iter()
            .map(|(k, v)| (&**k, back(v)))
            .collect();
        let bytes = encode_example(&features);
        let again = decode_example(&bytes).expect("a re-encoded record decodes");
        assert!(
            same_record(record, &again),
            "round trip changed the record:\n{record:?}\n{again:?}"
        );
    }

    // The same payload through the span reader, framed with valid CRCs.
    let path = write_scratch("example.tfrecord", &tfrecord_frame(data));
    let file = SpanFile {
        name: "example.tfrecord".into(),
        path,
        format: Format::Tfrecord,
        size: data.len() as u64 + 16,
    };
    let items: Vec<_> = open_span(&file).expect("open a tfrecord span").collect();
    // A payload that starts with the gzip magic bytes makes the file start with them only when
    // the length's first bytes are 1f 8b, which the 16-byte frame of a small input never is.
    assert_eq!(items.len(), 1, "one framed record, one item: {items:?}");
    match (&decoded, &items[0]) {
        (Ok(record), Ok(src)) => {
            assert_eq!(src.line, 1);
            assert!(
                same_record(record, &src.record),
                "span reader and decoder disagree:\n{record:?}\n{:?}",
                src.record
            );
        }
        (Err(_), Err(bad)) => {
            assert_eq!(bad.reason, reason::MALFORMED_EXAMPLE, "{bad:?}");
            assert_eq!(bad.line, 1);
        }
        (d, s) => panic!("decoder says {d:?}, span reader says {s:?}"),
    }
});
