//! `Transformer::features`, `label` and `example` on records built from the fuzz input (every
//! `RawValue` variant, nested lists and weighted features included), with a fixed spec that has
//! categorical columns, numeric columns (plain, with a default, log + standardize, buckets),
//! crosses and a sparse column.
//!
//! - no panic;
//! - when `features` is Ok: every index is below `2^hash_bits` and every value is finite;
//! - when `label` is Ok: it is 0 or 1;
//! - `example` agrees with `label` and `features`.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use evergreen_core::{FeatureSpec, RawRecord, RawValue, Transformer};
use libfuzzer_sys::fuzz_target;

const HASH_BITS: u8 = 12;

/// Column names of the spec, so that most fuzzed fields hit a column.
const NAMES: [&str; 8] = [
    "y",
    "c1",
    "c2",
    "n_plain",
    "n_default",
    "n_log",
    "n_bkt",
    "s",
];

fn transformer() -> &'static Transformer {
    static T: OnceLock<Transformer> = OnceLock::new();
    T.get_or_init(|| {
        let spec: FeatureSpec = serde_json::from_value(serde_json::json!({
            "hash_bits": HASH_BITS,
            "label": {"column": "y"},
            "bias": true,
            "categorical": [{"name": "c1"}, {"name": "c2"}],
            "numeric": [
                {"name": "n_plain"},
                {"name": "n_default", "default": 2.5},
                {"name": "n_log", "log": true, "standardize": {"mean": 1.5, "std": 0.25}},
                {"name": "n_bkt", "log": true, "standardize": {"mean": -3.0, "std": 2.0},
                 "buckets": [-1.0, 0.0, 0.5, 10.0]}
            ],
            "cross": [{"columns": ["c1", "c2"]}, {"columns": ["c1", "n_bkt"]}],
            "sparse": [{"name": "s"}]
        }))
        .expect("the fixed spec deserializes");
        spec.validate("features").expect("the fixed spec is valid");
        Transformer::new(spec).expect("the fixed spec compiles")
    })
}

#[derive(Debug, Arbitrary)]
enum Name {
    Known(u8),
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Value {
    Missing,
    Num(f64),
    Int(i64),
    Str(String),
    /// A number as text, as a CSV cell or a JSON string would carry it.
    NumText(f64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Weighted(Vec<(Name, f64)>),
}

impl Name {
    fn name(&self) -> String {
        match self {
            Name::Known(i) => NAMES[*i as usize % NAMES.len()].to_string(),
            Name::Other(s) => s.clone(),
        }
    }
}

impl Value {
    fn raw(&self) -> RawValue {
        match self {
            Value::Missing => RawValue::Missing,
            Value::Num(x) => RawValue::Num(*x),
            Value::Int(i) => RawValue::Int(*i),
            Value::Str(s) => RawValue::Str(s.clone()),
            Value::NumText(x) => RawValue::Str(x.to_string()),
            Value::Bytes(b) => RawValue::Bytes(b.clone()),
            Value::List(v) => RawValue::List(v.iter().map(Value::raw).collect()),
            Value::Weighted(v) => {
                RawValue::Weighted(v.iter().map(|(n, x)| (n.name(), *x)).collect())
            }
        }
    }
}

fuzz_target!(|fields: Vec<(Name, Value)>| {
    let mut record = RawRecord::new();
    for (name, value) in &fields {
        record.insert(name.name(), value.raw());
    }
    let t = transformer();

    let features = t.features(&record);
    if let Ok(fv) = &features {
        assert_eq!(fv.indices.len(), fv.values.len());
        for (i, v) in fv.iter() {
            assert!(
                u64::from(i) < 1u64 << HASH_BITS,
                "index {i} >= 2^{HASH_BITS} for {record:?}"
            );
            assert!(v.is_finite(), "value {v} at index {i} for {record:?}");
        }
    }
    let label = t.label(&record);
    if let Ok(y) = label {
        assert!(y == 0.0 || y == 1.0, "label {y} for {record:?}");
    }
    match (t.example(&record), &label, &features) {
        (Ok((fv, y)), Ok(l), Ok(f)) => {
            assert_eq!(y, *l);
            assert_eq!(&fv, f);
        }
        (Err(_), Err(_), _) | (Err(_), Ok(_), Err(_)) => {}
        (e, l, f) => panic!("example {e:?} disagrees with label {l:?} and features {f:?}"),
    }
});
