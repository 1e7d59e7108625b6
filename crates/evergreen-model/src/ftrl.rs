//! FTRL-Proximal logistic regression (McMahan et al., "Ad Click Prediction: a View from the
//! Trenches", KDD 2013, Algorithm 1): per-coordinate learning rates, L1 and L2 regularization.

use crate::{Model, ModelKind, sigmoid};
use evergreen_core::FeatureVector;
use serde::{Deserialize, Serialize};

/// FTRL hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtrlParams {
    /// Learning-rate scale alpha.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Learning-rate smoothing beta.
    #[serde(default = "d_beta")]
    pub beta: f64,
    /// L1 regularization (sparsity).
    #[serde(default)]
    pub l1: f64,
    /// L2 regularization.
    #[serde(default = "d_l2")]
    pub l2: f64,
}

fn d_alpha() -> f64 {
    0.1
}
fn d_beta() -> f64 {
    1.0
}
fn d_l2() -> f64 {
    1.0
}

impl Default for FtrlParams {
    fn default() -> Self {
        Self {
            alpha: d_alpha(),
            beta: d_beta(),
            l1: 0.0,
            l2: d_l2(),
        }
    }
}

impl FtrlParams {
    /// Checks the ranges; returns the offending field name and message.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(("alpha", format!("must be > 0 (got {})", self.alpha)));
        }
        for (k, v) in [("beta", self.beta), ("l1", self.l1), ("l2", self.l2)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err((k, format!("must be >= 0 (got {v})")));
            }
        }
        Ok(())
    }
}

/// Largest magnitude of a weight (see `Ftrl::weight`).
const MAX_WEIGHT: f64 = 1e10;

/// FTRL-Proximal state: `z` and `n` per hash bucket (weights are derived lazily).
#[derive(Debug, Clone, PartialEq)]
pub struct Ftrl {
    params: FtrlParams,
    z: Vec<f32>,
    n: Vec<f32>,
    examples: u64,
}

impl Ftrl {
    /// A fresh model over `dim` buckets.
    pub fn new(params: FtrlParams, dim: usize) -> Self {
        Self {
            params,
            z: vec![0.0; dim],
            n: vec![0.0; dim],
            examples: 0,
        }
    }

    /// The hyperparameters.
    pub fn params(&self) -> FtrlParams {
        self.params
    }

    /// Replaces the hyperparameters (a warm start may change them; state is kept).
    pub fn set_params(&mut self, params: FtrlParams) {
        self.params = params;
    }

    #[inline]
    fn weight(&self, i: usize) -> f64 {
        let z = self.z[i] as f64;
        let p = &self.params;
        if z.abs() <= p.l1 {
            0.0
        } else {
            let n = self.n[i] as f64;
            // Clamped: a weight beyond 1e10 saturates the sigmoid anyway, and the bound keeps
            // every margin finite even when the denominator underflows to zero.
            (-(z - z.signum() * p.l1) / ((p.beta + n.sqrt()) / p.alpha + p.l2))
                .clamp(-MAX_WEIGHT, MAX_WEIGHT)
        }
    }

    /// The current weight of a bucket.
    pub fn weight_at(&self, i: usize) -> f64 {
        self.weight(i)
    }

    fn margin(&self, x: &FeatureVector) -> f64 {
        x.iter()
            .map(|(i, v)| self.weight(i as usize) * v as f64)
            .sum()
    }

    /// Decodes a body written by `encode`. `None` (reported as `ModelError::Body("ftrl")`) when
    /// the layout is wrong or a hyperparameter breaks the rules of [`FtrlParams::validate`]
    /// (non-finite, or out of range), so that a corrupt file whose checksum was recomputed
    /// cannot produce NaN predictions.
    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        let mut r = crate::format::Reader::new(body);
        let params = FtrlParams {
            alpha: r.f64()?,
            beta: r.f64()?,
            l1: r.f64()?,
            l2: r.f64()?,
        };
        params.validate().ok()?;
        let examples = r.u64()?;
        let dim = usize::try_from(r.u64()?).ok()?;
        if dim.checked_mul(8)? != r.remaining() {
            return None;
        }
        let z = r.f32s(dim)?;
        let n = r.f32s(dim)?;
        // n is a sum of squared gradients: finite and never negative; z finite.
        if z.iter().chain(&n).any(|x| !x.is_finite()) || n.iter().any(|&x| x < 0.0) {
            return None;
        }
        Some(Self {
            params,
            z,
            n,
            examples,
        })
    }
}

impl Model for Ftrl {
    fn kind(&self) -> ModelKind {
        ModelKind::Ftrl
    }

    fn dim(&self) -> usize {
        self.z.len()
    }

    fn predict(&self, x: &FeatureVector) -> f64 {
        sigmoid(self.margin(x))
    }

    fn learn(&mut self, x: &FeatureVector, y: f32) -> f64 {
        let p = self.predict(x);
        let g = p - y as f64;
        let alpha = self.params.alpha;
        for (i, v) in x.iter() {
            let i = i as usize;
            let gi = g * v as f64;
            let w = self.weight(i);
            let n = self.n[i] as f64;
            let sigma = ((n + gi * gi).sqrt() - n.sqrt()) / alpha;
            self.z[i] = (self.z[i] as f64 + gi - sigma * w) as f32;
            self.n[i] = (n + gi * gi) as f32;
        }
        self.examples += 1;
        p
    }

    fn is_finite(&self) -> bool {
        self.z.iter().chain(&self.n).all(|x| x.is_finite())
    }

    fn examples_seen(&self) -> u64 {
        self.examples
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(48 + self.z.len() * 8);
        for v in [
            self.params.alpha,
            self.params.beta,
            self.params.l1,
            self.params.l2,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.examples.to_le_bytes());
        out.extend_from_slice(&(self.z.len() as u64).to_le_bytes());
        for v in self.z.iter().chain(&self.n) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(self.clone())
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fv(idx: &[u32]) -> FeatureVector {
        let mut v = FeatureVector::default();
        for &i in idx {
            v.push(i, 1.0);
        }
        v
    }

    #[test]
    fn learns_a_separable_rule() {
        let params = FtrlParams {
            alpha: 0.5,
            l2: 0.0,
            ..FtrlParams::default()
        };
        let mut m = Ftrl::new(params, 16);
        for _ in 0..500 {
            m.learn(&fv(&[0, 1]), 1.0);
            m.learn(&fv(&[0, 2]), 0.0);
        }
        assert!(m.predict(&fv(&[0, 1])) > 0.9);
        assert!(m.predict(&fv(&[0, 2])) < 0.1);
        assert_eq!(m.examples_seen(), 1000);
    }

    #[test]
    fn l1_keeps_rare_noise_weights_at_zero() {
        let params = FtrlParams {
            l1: 5.0,
            ..FtrlParams::default()
        };
        let mut m = Ftrl::new(params, 16);
        m.learn(&fv(&[3]), 1.0);
        assert_eq!(m.weight_at(3), 0.0);
    }

    #[test]
    fn update_matches_algorithm_1_by_hand() {
        let params = FtrlParams {
            alpha: 0.5,
            beta: 1.0,
            l1: 0.0,
            l2: 0.0,
        };
        let mut m = Ftrl::new(params, 4);
        // first step: w = 0, p = 0.5, g = -0.5, sigma = 0.5 / 0.5 = 1, z = -0.5, n = 0.25
        m.learn(&fv(&[1]), 1.0);
        assert!((m.z[1] as f64 + 0.5).abs() < 1e-7);
        assert!((m.n[1] as f64 - 0.25).abs() < 1e-7);
        // w = 0.5 / ((1 + 0.5) / 0.5) = 1/6
        assert!((m.weight_at(1) - 1.0 / 6.0).abs() < 1e-7);
    }

    #[test]
    fn zero_denominator_still_predicts_a_probability() {
        let params = FtrlParams {
            alpha: 0.5,
            beta: 0.0,
            l1: 0.0,
            l2: 0.0,
        };
        let mut m = Ftrl::new(params, 4);
        m.z[0] = 1.0;
        m.z[1] = -1.0; // n stays 0: both weights divide by zero
        let p = m.predict(&fv(&[0, 1]));
        assert!((0.0..=1.0).contains(&p), "{p}");
        let mut x = fv(&[0, 1]);
        x.values[1] = 0.0;
        assert!(m.predict(&x).is_finite());
    }

    #[test]
    fn negative_or_non_finite_state_is_refused_on_load() {
        for (zi, ni) in [(0.0, -1.0), (f32::NAN, 0.0), (0.0, f32::INFINITY)] {
            let mut m = Ftrl::new(FtrlParams::default(), 4);
            m.z[3] = zi;
            m.n[3] = ni;
            let mut body = Vec::new();
            m.encode(&mut body);
            assert!(Ftrl::decode(&body).is_none(), "z={zi} n={ni} accepted");
        }
    }
}
