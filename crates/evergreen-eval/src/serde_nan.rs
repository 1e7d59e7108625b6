//! Serde helper: JSON has no NaN, so a non-finite `f64` is written as `null` (NaN) or as the
//! strings "Infinity"/"-Infinity", and read back the same way.

use serde::{Deserialize, Deserializer, Serializer};

/// Serializes NaN as `null`, infinities as strings, finite values as numbers.
pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_none()
    } else if v.is_infinite() {
        s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        s.serialize_f64(*v)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Num(f64),
    Text(String),
    Null(()),
}

/// Inverse of [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let r: Option<Repr> = Option::deserialize(d)?;
    Ok(match r {
        None | Some(Repr::Null(())) => f64::NAN,
        Some(Repr::Num(x)) => x,
        Some(Repr::Text(t)) => match t.as_str() {
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => f64::NAN,
        },
    })
}
