//! The alert rules evaluated by the trainer itself after every cycle, so that one machine needs
//! no Prometheus: the training rules of `deploy/prometheus/alerts.yml`, with their durations
//! counted in cycles. An alert that starts or stops firing is logged; the set firing is exported
//! (`evergreen_alerts_firing`); an alert that starts firing takes the action configured for it
//! in `[alerts] actions` (the trainer applies it to the registry and records it in lineage).

use evergreen_config::ALERT_NAMES;
use std::collections::BTreeMap;

/// What the rules look at after a cycle.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Cycles in a row whose held-out accuracy fell more than 5% below the previous one's.
    pub accuracy_drops_in_a_row: i64,
    /// Candidates rejected in a row.
    pub rejections_in_a_row: i64,
    /// Share of the cycle spent training.
    pub utilization: Option<f64>,
    /// Smallest mean |gradient| of a parameter group (deep models).
    pub min_gradient: Option<f64>,
    /// Spans waiting (none in a backfill).
    pub pending_spans: Option<usize>,
    /// Bad records over all records read in the window.
    pub quarantine_fraction: f64,
    /// ADWIN saw the progressive loss go up.
    pub loss_drift: bool,
    /// Fields whose PSI against the previous window is over 0.25.
    pub drifted_fields: Vec<String>,
}

/// Consecutive cycles a condition must hold before its alert fires (the `for:` of the
/// Prometheus rules, in cycles).
fn cycles_needed(alert: &str) -> u32 {
    match alert {
        "EvergreenGradientVanishing" | "EvergreenTrainerUnderutilized" | "EvergreenDataLag" => 3,
        _ => 1,
    }
}

/// Whether `alert`'s condition holds, and a one-line description of why.
fn condition(alert: &str, f: &Facts) -> Option<String> {
    match alert {
        "EvergreenValidationAccuracyDropping" => (f.accuracy_drops_in_a_row >= 2).then(|| {
            format!(
                "held-out accuracy fell more than 5% {} cycles in a row",
                f.accuracy_drops_in_a_row
            )
        }),
        "EvergreenGradientVanishing" => f
            .min_gradient
            .filter(|g| *g < 1e-7)
            .map(|g| format!("a layer's mean |gradient| is {g:.2e}")),
        "EvergreenTrainerUnderutilized" => f
            .utilization
            .filter(|u| *u < 0.3)
            .map(|u| format!("training takes {:.0}% of the cycle", u * 100.0)),
        "EvergreenDataLag" => f
            .pending_spans
            .filter(|n| *n > 5)
            .map(|n| format!("{n} spans waiting")),
        "EvergreenHighQuarantineRate" => (f.quarantine_fraction > 0.05).then(|| {
            format!(
                "{:.1}% of the window's records quarantined",
                f.quarantine_fraction * 100.0
            )
        }),
        "EvergreenGateRejectionsInARow" => (f.rejections_in_a_row >= 3)
            .then(|| format!("{} candidates rejected in a row", f.rejections_in_a_row)),
        "EvergreenConceptDrift" => f
            .loss_drift
            .then(|| "the progressive loss went up (ADWIN)".to_string()),
        "EvergreenFeatureDrift" => (!f.drifted_fields.is_empty())
            .then(|| format!("PSI over 0.25 for {}", f.drifted_fields.join(", "))),
        _ => None,
    }
}

/// A change of an alert's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Started firing, with why.
    Firing(&'static str, String),
    /// Stopped firing.
    Resolved(&'static str),
}

/// The state of every alert across cycles.
#[derive(Debug, Default)]
pub struct AlertState {
    /// Consecutive cycles each condition has held.
    held: BTreeMap<&'static str, u32>,
    /// Alerts firing, with why.
    firing: BTreeMap<&'static str, String>,
}

impl AlertState {
    /// Evaluates every rule on `facts`; returns what started and stopped firing.
    pub fn evaluate(&mut self, facts: &Facts) -> Vec<Transition> {
        let mut out = Vec::new();
        for alert in ALERT_NAMES {
            match condition(alert, facts) {
                Some(why) => {
                    let held = self.held.entry(alert).or_default();
                    *held += 1;
                    if *held >= cycles_needed(alert) {
                        if !self.firing.contains_key(alert) {
                            out.push(Transition::Firing(alert, why.clone()));
                        }
                        self.firing.insert(alert, why);
                    }
                }
                None => {
                    self.held.remove(alert);
                    if self.firing.remove(alert).is_some() {
                        out.push(Transition::Resolved(alert));
                    }
                }
            }
        }
        out
    }

    /// The alerts firing, with why.
    pub fn firing(&self) -> &BTreeMap<&'static str, String> {
        &self.firing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_fire_after_their_cycles_and_resolve_once() {
        let mut s = AlertState::default();
        let calm = Facts {
            utilization: Some(0.8),
            pending_spans: Some(0),
            ..Facts::default()
        };
        assert!(s.evaluate(&calm).is_empty());
        // Two rejections: not yet; the third fires.
        let mut f = calm.clone();
        for n in 1..=2 {
            f.rejections_in_a_row = n;
            assert!(s.evaluate(&f).is_empty());
        }
        f.rejections_in_a_row = 3;
        assert_eq!(
            s.evaluate(&f),
            [Transition::Firing(
                "EvergreenGateRejectionsInARow",
                "3 candidates rejected in a row".into()
            )]
        );
        f.rejections_in_a_row = 4;
        assert!(s.evaluate(&f).is_empty(), "still firing: no new transition");
        assert!(s.firing()["EvergreenGateRejectionsInARow"].starts_with('4'));
        // Low utilisation needs three cycles in a row; a good cycle in between restarts it.
        f.rejections_in_a_row = 0;
        f.utilization = Some(0.1);
        assert_eq!(
            s.evaluate(&f),
            [Transition::Resolved("EvergreenGateRejectionsInARow")]
        );
        assert!(s.evaluate(&f).is_empty());
        assert!(s.evaluate(&calm).is_empty());
        for _ in 0..2 {
            assert!(s.evaluate(&f).is_empty());
        }
        assert!(matches!(
            s.evaluate(&f)[..],
            [Transition::Firing("EvergreenTrainerUnderutilized", _)]
        ));
        // Drift and quarantine fire at once.
        let drift = Facts {
            loss_drift: true,
            drifted_fields: vec!["price".into()],
            quarantine_fraction: 0.2,
            ..calm.clone()
        };
        let t = s.evaluate(&drift);
        let names: Vec<&str> = t
            .iter()
            .map(|t| match t {
                Transition::Firing(a, _) | Transition::Resolved(a) => *a,
            })
            .collect();
        assert_eq!(
            names,
            [
                "EvergreenTrainerUnderutilized",
                "EvergreenHighQuarantineRate",
                "EvergreenConceptDrift",
                "EvergreenFeatureDrift"
            ]
        );
    }
}
