//! Drift monitoring across the windows a trainer consumes: an ADWIN detector on the
//! per-example progressive logloss (concept drift: the model got worse on new data) and the
//! PSI of every feature field of a window against the previous window (data drift). In memory:
//! a restarted trainer starts with a fresh detector and no reference window.

use evergreen_core::FeatureVector;
use evergreen_eval::drift::{Adwin, FieldProfile};
use serde::Serialize;
use std::collections::BTreeMap;

/// PSI above which a field counts as drifted (the usual "significant shift").
pub const PSI_DRIFT: f64 = 0.25;

/// Examples between two of ADWIN's tests for a change of the loss (MOA's default is 32; a
/// window is thousands of examples, and the tests dominate the detector's cost).
const LOSS_CLOCK: u64 = 128;

/// Examples of a window profiled at most (evenly spaced): the PSI of 5,000 examples is as
/// telling as that of millions (its noise over ~180 bins is a few hundredths, the drift
/// threshold 0.25), and a window's profile then costs a fixed millisecond or two instead of a
/// pass over every feature of every example.
const PROFILED: usize = 5_000;

/// What drift monitoring saw in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DriftReport {
    /// ADWIN found the progressive loss going up in this window (a change for the better, as
    /// the model learns, is not drift).
    pub loss_change: bool,
    /// Mean progressive logloss of the window kept by ADWIN after the change (the new level).
    pub loss_level: f64,
    /// PSI of each feature field against the previous window (empty for the first window).
    pub psi: BTreeMap<String, f64>,
    /// Fields whose PSI is above [`PSI_DRIFT`].
    pub drifted_fields: Vec<String>,
}

impl DriftReport {
    /// Whether this window drifted (loss change or a drifted field).
    pub fn drifted(&self) -> bool {
        self.loss_change || !self.drifted_fields.is_empty()
    }
}

/// The detectors and the reference window.
#[derive(Debug)]
pub struct DriftMonitor {
    fields: Vec<String>,
    loss: Adwin,
    /// Bin edges per field, and the previous window's profiles over them.
    reference: Option<(Vec<Vec<f32>>, Vec<FieldProfile>)>,
}

impl DriftMonitor {
    /// A monitor for feature vectors whose field ids name `fields`.
    pub fn new(fields: Vec<String>) -> Self {
        Self {
            fields,
            loss: Adwin::with_clock(0.002, LOSS_CLOCK),
            reference: None,
        }
    }

    /// Observes one window: `xs` its examples, `losses` the progressive logloss of each (the
    /// model's prediction before it learned the window).
    pub fn observe<'a>(
        &mut self,
        xs: impl Iterator<Item = &'a FeatureVector> + Clone,
        losses: impl Iterator<Item = f64>,
    ) -> DriftReport {
        let mut report = DriftReport::default();
        for l in losses {
            report.loss_change |= self.loss.update(l) && self.loss.last_shift() > 0.0;
        }
        report.loss_level = self.loss.mean();
        let nf = self.fields.len();
        let n = xs.clone().count().max(1);
        // The sampled examples' entries, copied once into one contiguous buffer (feature
        // vectors lie all over the heap: touching them is the cost), then profiled from it.
        let mut flat: Vec<(u16, u32, f32)> = Vec::new();
        let mut ends: Vec<usize> = Vec::new();
        for x in xs.step_by(n.div_ceil(PROFILED).max(1)) {
            flat.extend(
                x.fields
                    .iter()
                    .zip(&x.indices)
                    .zip(&x.values)
                    .map(|((&f, &i), &v)| (f, i, v)),
            );
            ends.push(flat.len());
        }
        let profile = |edges: &[Vec<f32>]| {
            let mut out: Vec<FieldProfile> =
                edges.iter().map(|e| FieldProfile::new(e.clone())).collect();
            let mut entries: Vec<Vec<(u32, f32)>> = vec![Vec::new(); nf];
            let mut start = 0;
            for &end in &ends {
                entries.iter_mut().for_each(Vec::clear);
                for &(f, i, v) in &flat[start..end] {
                    if let Some(e) = entries.get_mut(usize::from(f)) {
                        e.push((i, v));
                    }
                }
                for (p, e) in out.iter_mut().zip(&entries) {
                    p.add(e.iter().copied());
                }
                start = end;
            }
            out
        };
        // This window against the previous one, over the previous one's bins.
        if let Some((edges, reference)) = &self.reference {
            let now = profile(edges);
            for (f, (p, r)) in now.iter().zip(reference).enumerate() {
                let name = &self.fields[f];
                if f == 0 && name == "bias" {
                    continue;
                }
                let psi = p.psi_against(r);
                if psi > PSI_DRIFT {
                    report.drifted_fields.push(name.clone());
                }
                report.psi.insert(name.clone(), psi);
            }
        }
        // This window becomes the reference: bins from its (sampled) values.
        let mut values: Vec<Vec<f32>> = vec![Vec::new(); nf];
        for &(f, _, v) in &flat {
            if let Some(vs) = values.get_mut(usize::from(f)) {
                vs.push(v);
            }
        }
        let edges: Vec<Vec<f32>> = values
            .iter_mut()
            .map(FieldProfile::reference_bins)
            .collect();
        let profiles = profile(&edges);
        self.reference = Some((edges, profiles));
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(shift: f32, seed: u64, n: usize) -> Vec<FeatureVector> {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        (0..n)
            .map(|_| {
                let mut x = FeatureVector::default();
                x.push_field(0, 0, 1.0);
                x.push_field(1, 100 + (next() * 10.0) as u32, 1.0);
                x.push_field(2, 7, next() + shift);
                x
            })
            .collect()
    }

    #[test]
    fn a_shifted_field_and_a_loss_jump_are_reported_and_noise_is_not() {
        let names = vec!["bias".into(), "city".into(), "price".into()];
        let mut m = DriftMonitor::new(names);
        let calm = |n| std::iter::repeat_n(0.3, n);
        let first = m.observe(window(0.0, 1, 4000).iter(), calm(4000));
        assert!(first.psi.is_empty() && !first.drifted());
        let second = m.observe(window(0.0, 2, 4000).iter(), calm(4000));
        assert!(!second.drifted(), "{second:?}");
        assert!(
            second.psi["price"] < 0.1 && second.psi["city"] < 0.1,
            "{second:?}"
        );
        assert!(!second.psi.contains_key("bias"));
        let shifted = m.observe(window(0.5, 3, 4000).iter(), calm(4000));
        assert_eq!(shifted.drifted_fields, ["price"], "{shifted:?}");
        assert!(!shifted.loss_change);
        // The loss jumps from 0.3 to 0.9 within the next window.
        let losses = std::iter::repeat_n(0.3, 2000).chain(std::iter::repeat_n(0.9, 2000));
        let jump = m.observe(window(0.5, 4, 4000).iter(), losses);
        assert!(jump.loss_change, "{jump:?}");
        assert!((jump.loss_level - 0.9).abs() < 0.05, "{jump:?}");
        assert!(jump.drifted_fields.is_empty(), "{jump:?}");
    }
}
