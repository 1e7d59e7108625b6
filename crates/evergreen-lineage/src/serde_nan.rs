//! Non-finite metrics in JSON: the one helper of `evergreen-eval` (`NaN` as `null`, infinities as
//! `"Infinity"`/`"-Infinity"`), re-exported so lineage records round-trip like manifests do.

pub use evergreen_eval::serde_nan::{deserialize, serialize};

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
