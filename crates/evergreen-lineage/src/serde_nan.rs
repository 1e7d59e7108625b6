//! Serde helper for metric fields: JSON has no NaN, so NaN is written as `null` and infinities as
//! the strings `"Infinity"` / `"-Infinity"`, and read back the same way (same representation as
//! `evergreen-eval`).

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
}

/// Inverse of [`serialize`]; unknown strings read as NaN.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(match Option::<Repr>::deserialize(d)? {
        None => f64::NAN,
        Some(Repr::Num(x)) => x,
        Some(Repr::Text(t)) => match t.as_str() {
            "Infinity" | "inf" => f64::INFINITY,
            "-Infinity" | "-inf" => f64::NEG_INFINITY,
            _ => f64::NAN,
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::MetricsRecord;

    #[test]
    fn non_finite_metrics_survive_json() {
        let m = MetricsRecord {
            examples: 3,
            logloss: f64::INFINITY,
            auc: f64::NAN,
            accuracy: f64::NEG_INFINITY,
            calibration: 1.5,
        };
        let json = serde_json::to_string(&m).expect("serialize");
        assert_eq!(
            json,
            r#"{"examples":3,"logloss":"Infinity","auc":null,"accuracy":"-Infinity","calibration":1.5}"#
        );
        let back: MetricsRecord = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.logloss, f64::INFINITY);
        assert!(back.auc.is_nan());
        assert_eq!(back.accuracy, f64::NEG_INFINITY);
        assert_eq!(back.calibration, 1.5);
    }
}
