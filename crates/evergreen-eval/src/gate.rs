//! The evaluation gate: absolute thresholds on the candidate, and "not worse than the serving
//! model by more than a margin" on the same held-out slice. NaN anywhere rejects.

use crate::Summary;
use serde::{Deserialize, Serialize};

/// Gate thresholds.
///
/// The absolute checks (`min_auc`, `max_logloss`) are off unless set. The relative checks
/// (`max_auc_drop`, `max_logloss_increase`) default to `0.01` whether or not a `[gate]` table
/// is present (serde's per-field defaults equal [`GateConfig::default`]). To switch a relative
/// check off in a config file, set a very large margin: `max_auc_drop = 1.0` can never fail
/// (AUC lies in `[0, 1]`); `max_logloss_increase = 1.0` only stops a badly broken candidate, and
/// `35` or more can never fail (logloss is clipped at `-ln(1e-15)`, about 34.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Candidate AUC must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_auc: Option<f64>,
    /// Candidate logloss must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_logloss: Option<f64>,
    /// Candidate AUC may be below the serving model's by at most this (default `0.01`). `None`
    /// (not expressible in TOML) is serialized as `null`, not omitted, so that it round-trips
    /// instead of coming back as the default.
    #[serde(default = "default_relative_margin")]
    pub max_auc_drop: Option<f64>,
    /// Candidate logloss may exceed the serving model's by at most this (default `0.01`);
    /// serialized like `max_auc_drop`.
    #[serde(default = "default_relative_margin")]
    pub max_logloss_increase: Option<f64>,
    /// The held-out slice must have at least this many examples.
    #[serde(default = "default_min_examples")]
    pub min_examples: u64,
    /// The serving model's AUC on the new held-out slice must be at least this (off unless
    /// set): far below 0.5, the new labels contradict what the model learned (a window's
    /// labels flipped or corrupted: poisoning), which a candidate trained on them would hide,
    /// since it is judged on a slice of the same labels. A real concept change makes the old
    /// model useless (AUC near 0.5), not inverted; a true inversion needs an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_baseline_auc: Option<f64>,
}

fn default_min_examples() -> u64 {
    1
}

/// Default margin of both relative checks.
fn default_relative_margin() -> Option<f64> {
    Some(0.01)
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            min_auc: None,
            max_logloss: None,
            max_auc_drop: default_relative_margin(),
            max_logloss_increase: default_relative_margin(),
            min_examples: default_min_examples(),
            min_baseline_auc: None,
        }
    }
}

impl GateConfig {
    /// Checks that thresholds are finite and non-negative where relevant; returns the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (k, v) in [
            ("min_auc", self.min_auc),
            ("max_logloss", self.max_logloss),
            ("max_auc_drop", self.max_auc_drop),
            ("max_logloss_increase", self.max_logloss_increase),
            ("min_baseline_auc", self.min_baseline_auc),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err((k, format!("must be a finite number >= 0 (got {v})")));
            }
        }
        Ok(())
    }
}

/// One check of the gate, with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Check name (`finite`, `min_examples`, `min_auc`, ...).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Candidate value.
    #[serde(with = "crate::serde_nan")]
    pub value: f64,
    /// Threshold compared against (for relative checks: the bound derived from the baseline).
    #[serde(with = "crate::serde_nan")]
    pub threshold: f64,
    /// Baseline (serving model) value, for relative checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
}

/// The gate's decision with every check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// True when every check passed.
    pub passed: bool,
    /// All checks, in evaluation order.
    pub checks: Vec<Check>,
}

impl GateResult {
    /// One-line human summary, e.g. `PASS min_auc 0.81>=0.6, ...` or `FAIL ...`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .checks
            .iter()
            .map(|c| {
                let mark = if c.passed { "ok" } else { "FAILED" };
                match c.baseline {
                    Some(b) => format!(
                        "{} {mark} (candidate {:.4}, serving {:.4}, bound {:.4})",
                        c.name, c.value, b, c.threshold
                    ),
                    None => format!("{} {mark} ({:.4} vs {:.4})", c.name, c.value, c.threshold),
                }
            })
            .collect();
        format!(
            "{}: {}",
            if self.passed { "PASS" } else { "FAIL" },
            parts.join(", ")
        )
    }
}

/// Applies the gate. `model_finite` is false when any model parameter is NaN/Inf.
pub fn evaluate_gate(
    cfg: &GateConfig,
    candidate: &Summary,
    baseline: Option<&Summary>,
    model_finite: bool,
) -> GateResult {
    let mut checks = Vec::new();
    let finite = model_finite
        && candidate.logloss.is_finite()
        && candidate.auc.is_finite()
        && baseline.is_none_or(|b| b.logloss.is_finite() && b.auc.is_finite());
    checks.push(Check {
        name: "finite".into(),
        passed: finite,
        value: if finite { 1.0 } else { 0.0 },
        threshold: 1.0,
        baseline: None,
    });
    checks.push(Check {
        name: "min_examples".into(),
        passed: candidate.examples >= cfg.min_examples,
        value: candidate.examples as f64,
        threshold: cfg.min_examples as f64,
        baseline: None,
    });
    // Comparisons are written so that NaN fails them.
    if let Some(t) = cfg.min_auc {
        checks.push(Check {
            name: "min_auc".into(),
            passed: candidate.auc >= t,
            value: candidate.auc,
            threshold: t,
            baseline: None,
        });
    }
    if let Some(t) = cfg.max_logloss {
        checks.push(Check {
            name: "max_logloss".into(),
            passed: candidate.logloss <= t,
            value: candidate.logloss,
            threshold: t,
            baseline: None,
        });
    }
    if let Some(b) = baseline {
        if let Some(t) = cfg.min_baseline_auc {
            checks.push(Check {
                name: "min_baseline_auc".into(),
                passed: b.auc >= t,
                value: b.auc,
                threshold: t,
                baseline: Some(b.auc),
            });
        }
        if let Some(d) = cfg.max_auc_drop {
            let bound = b.auc - d;
            checks.push(Check {
                name: "max_auc_drop".into(),
                passed: candidate.auc >= bound,
                value: candidate.auc,
                threshold: bound,
                baseline: Some(b.auc),
            });
        }
        if let Some(d) = cfg.max_logloss_increase {
            let bound = b.logloss + d;
            checks.push(Check {
                name: "max_logloss_increase".into(),
                passed: candidate.logloss <= bound,
                value: candidate.logloss,
                threshold: bound,
                baseline: Some(b.logloss),
            });
        }
    }
    GateResult {
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(auc: f64, logloss: f64, n: u64) -> Summary {
        Summary {
            examples: n,
            logloss,
            auc,
            accuracy: 0.7,
            calibration: 1.0,
            mean_prediction: 0.4,
            positive_rate: 0.4,
        }
    }

    fn cfg() -> GateConfig {
        GateConfig {
            min_auc: Some(0.6),
            max_logloss: Some(0.69),
            max_auc_drop: Some(0.01),
            max_logloss_increase: Some(0.02),
            min_examples: 10,
            min_baseline_auc: Some(0.3),
        }
    }

    #[test]
    fn passes_when_good_and_not_worse() {
        let r = evaluate_gate(&cfg(), &s(0.8, 0.5, 100), Some(&s(0.805, 0.49, 100)), true);
        assert!(r.passed, "{}", r.summary());
        assert_eq!(r.checks.len(), 7);
    }

    #[test]
    fn first_run_skips_relative_checks() {
        let r = evaluate_gate(&cfg(), &s(0.8, 0.5, 100), None, true);
        assert!(r.passed);
        assert!(r.checks.iter().all(|c| c.baseline.is_none()));
    }

    #[test]
    fn each_threshold_can_fail() {
        let base = s(0.8, 0.5, 100);
        let weak = s(0.55, 0.7, 100);
        let cases = [
            (s(0.55, 0.5, 100), &weak, "min_auc"),
            (s(0.8, 0.7, 100), &weak, "max_logloss"),
            (s(0.78, 0.5, 100), &base, "max_auc_drop"),
            (s(0.8, 0.53, 100), &base, "max_logloss_increase"),
            (s(0.8, 0.5, 5), &base, "min_examples"),
            // Labels that contradict the serving model (it scores 0.1 on them): suspected
            // poisoning, however well the candidate fits them.
            (s(0.9, 0.3, 100), &s(0.1, 2.5, 100), "min_baseline_auc"),
        ];
        for (cand, baseline, name) in cases {
            let r = evaluate_gate(&cfg(), &cand, Some(baseline), true);
            assert!(!r.passed, "{name} should fail");
            let failed: Vec<_> = r
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(failed, vec![name]);
        }
    }

    #[test]
    fn defaults_do_not_depend_on_the_table_being_present() {
        let empty: GateConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, GateConfig::default());
        assert_eq!(empty.max_auc_drop, Some(0.01));
        assert_eq!(empty.max_logloss_increase, Some(0.01));
        assert_eq!(empty.min_auc, None);
        assert_eq!(empty.max_logloss, None);
        assert_eq!(empty.min_examples, 1);
        // A table that sets only other keys keeps the relative defaults.
        let partial: GateConfig = serde_json::from_str(r#"{"min_auc": 0.6}"#).unwrap();
        assert_eq!(partial.max_auc_drop, Some(0.01));
        assert_eq!(partial.max_logloss_increase, Some(0.01));
        // Round trips keep the values, an unset relative check included.
        let off = GateConfig {
            max_auc_drop: None,
            ..GateConfig::default()
        };
        for cfg in [GateConfig::default(), off] {
            let json = serde_json::to_string(&cfg).unwrap();
            let back: GateConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, cfg, "{json}");
        }
    }

    #[test]
    fn a_large_relative_margin_effectively_disables_the_check() {
        let cfg = GateConfig {
            max_auc_drop: Some(1.0),
            max_logloss_increase: Some(1.0),
            ..GateConfig::default()
        };
        // Much worse than the serving model, but within the (huge) margins.
        let r = evaluate_gate(&cfg, &s(0.6, 0.9, 100), Some(&s(0.95, 0.2, 100)), true);
        assert!(r.passed, "{}", r.summary());
    }

    #[test]
    fn nan_anywhere_rejects() {
        let r = evaluate_gate(&GateConfig::default(), &s(f64::NAN, 0.5, 100), None, true);
        assert!(!r.passed);
        let r = evaluate_gate(&GateConfig::default(), &s(0.8, 0.5, 100), None, false);
        assert!(!r.passed);
        let r = evaluate_gate(
            &GateConfig::default(),
            &s(0.8, 0.5, 100),
            Some(&s(0.8, f64::INFINITY, 100)),
            true,
        );
        assert!(!r.passed);
        assert!(r.summary().starts_with("FAIL"));
    }
}
