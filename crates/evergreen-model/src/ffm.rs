//! Field-aware factorization machine (Juan, Zhuang, Chin, Lin, "Field-aware Factorization
//! Machines for CTR Prediction", RecSys 2016), trained like LibFFM: per-coordinate AdaGrad with
//! accumulators starting at 1, factors initialized uniformly on `[0, 1/√k)`, optional
//! instance-wise normalization. Like xLearn's FFM it also has a bias and linear weights.
//!
//! ```text
//! margin = w0 + Σ_a w_{i_a} x_a + r · Σ_{a<b} <v_{i_a, f_b}, v_{i_b, f_a}> x_a x_b
//! r      = 1 / Σ_a x_a²   with `normalize` (LibFFM's instance-wise L2 normalization), else 1
//! ```
//!
//! where `a, b` run over the canonical entries of the feature vector (see
//! `common::canonicalize`: entries with the same index and field add up; an entry whose field id
//! is `>= fields` is treated as field `fields − 1`, so nothing panics and a spec that gained a
//! column still maps to a latent vector). As in LibFFM, the pairwise update is applied pair by
//! pair (`g = l2·v + κ·v' · x_a x_b r` with `κ = p − y` taken before the update). L2 (`l2`)
//! applies to factors and linear weights, lazily (only to what an example touches). The pairwise
//! updates are computed in f32 like LibFFM's (4× faster than f64 here), the rest in f64.

use crate::common::{
    Entry, MAX_FACTORS, Scratch, ShapeError, SplitMix64, adagrad, adagrad_f32, canonicalize,
    check_size, logloss, state_ok, with_scratch,
};
use crate::{Differentiable, Model, ModelKind, sigmoid};
use evergreen_core::FeatureVector;
use serde::{Deserialize, Serialize};

/// FFM hyperparameters (`[model.ffm]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FfmParams {
    /// Latent factors per (feature, field) pair (1 to [`MAX_FACTORS`]); fixed for a model's life.
    #[serde(default = "d_k")]
    pub k: u32,
    /// AdaGrad learning rate (LibFFM's `eta`).
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// L2 regularization (LibFFM's `lambda`) of factors and linear weights.
    #[serde(default = "d_l2")]
    pub l2: f64,
    /// Seed of the factor initialization (splitmix64).
    #[serde(default)]
    pub seed: u64,
    /// Instance-wise L2 normalization of the pairwise term (LibFFM's default).
    #[serde(default = "d_normalize")]
    pub normalize: bool,
}

fn d_k() -> u32 {
    4
}
fn d_lr() -> f64 {
    0.2
}
fn d_l2() -> f64 {
    2e-5
}
fn d_normalize() -> bool {
    true
}

impl Default for FfmParams {
    fn default() -> Self {
        Self {
            k: d_k(),
            lr: d_lr(),
            l2: d_l2(),
            seed: 0,
            normalize: true,
        }
    }
}

impl FfmParams {
    /// Checks the ranges; returns the offending field name and message.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_FACTORS).contains(&self.k) {
            return Err(("k", format!("must be 1 to {MAX_FACTORS} (got {})", self.k)));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(("lr", format!("must be > 0 (got {})", self.lr)));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(("l2", format!("must be >= 0 (got {})", self.l2)));
        }
        Ok(())
    }
}

/// FFM state. Factors: for bucket `i` and field `f`, a block of `2k` floats at
/// `(i·fields + f)·2k`: `[v_if0 .. v_if(k-1), acc_0 .. acc_(k-1)]`. Linear: `[w_i, acc(w_i)]`
/// per bucket.
#[derive(Debug, Clone)]
pub struct Ffm {
    params: FfmParams,
    k: usize,
    dim: usize,
    fields: usize,
    /// `[w0, acc(w0)]`.
    bias: [f32; 2],
    linear: Vec<f32>,
    factors: Vec<f32>,
    examples: u64,
    scratch: Scratch,
}

/// Two disjoint mutable blocks of `len` floats at `o1 != o2`.
fn two_blocks(v: &mut [f32], o1: usize, o2: usize, len: usize) -> Option<(&mut [f32], &mut [f32])> {
    if o1 < o2 {
        let (a, b) = v.split_at_mut(o2);
        Some((a.get_mut(o1..o1.checked_add(len)?)?, b.get_mut(..len)?))
    } else if o2 < o1 {
        let (a, b) = v.split_at_mut(o1);
        let second = a.get_mut(o2..o2.checked_add(len)?)?;
        Some((b.get_mut(..len)?, second))
    } else {
        None
    }
}

impl Ffm {
    /// A fresh model over `dim` buckets and `fields` fields
    /// ([`FeatureSpec::field_count`](evergreen_core::FeatureSpec::field_count)).
    ///
    /// # Panics
    /// When [`Ffm::try_new`] fails.
    pub fn new(params: FfmParams, dim: usize, fields: usize) -> Self {
        match Self::try_new(params, dim, fields) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// A fresh model, or why it cannot be built: parameters out of range, no field, or more
    /// than [`crate::MAX_STATE_FLOATS`] floats of state (`dim·(2 + fields·2k)`).
    pub fn try_new(params: FfmParams, dim: usize, fields: usize) -> Result<Self, ShapeError> {
        params
            .validate()
            .map_err(|(f, m)| ShapeError::Param(f, m))?;
        if fields == 0 {
            return Err(ShapeError::NoFields);
        }
        let k = params.k as usize;
        let per_bucket = (fields as u64)
            .saturating_mul(2 * k as u64)
            .saturating_add(2);
        check_size(dim, per_bucket)?;
        let mut factors = vec![0.0f32; dim * fields * 2 * k];
        let mut rng = SplitMix64(params.seed);
        let coef = 1.0 / (k as f64).sqrt();
        for block in factors.chunks_exact_mut(2 * k) {
            let (v, acc) = block.split_at_mut(k);
            for v in v {
                *v = (coef * rng.next_f64()) as f32;
            }
            acc.fill(1.0);
        }
        let mut linear = vec![0.0f32; dim * 2];
        for l in linear.chunks_exact_mut(2) {
            l[1] = 1.0;
        }
        Ok(Self {
            params,
            k,
            dim,
            fields,
            bias: [0.0, 1.0],
            linear,
            factors,
            examples: 0,
            scratch: Scratch::default(),
        })
    }

    /// The hyperparameters.
    pub fn params(&self) -> FfmParams {
        self.params
    }

    /// Number of fields the model was built for.
    pub fn fields(&self) -> usize {
        self.fields
    }

    /// Replaces the hyperparameters (rates, regularization, normalization; the state is kept).
    /// Refuses invalid parameters and a change of `k`.
    pub fn set_params(&mut self, params: FfmParams) -> Result<(), String> {
        params.validate().map_err(|(f, m)| format!("{f}: {m}"))?;
        if params.k != self.params.k {
            return Err(format!(
                "k cannot change on a trained model ({} -> {})",
                self.params.k, params.k
            ));
        }
        self.params = params;
        Ok(())
    }

    /// Bytes of parameter and optimizer state.
    pub fn state_bytes(&self) -> usize {
        (2 + self.linear.len() + self.factors.len()) * 4
    }

    #[inline]
    fn block(&self, idx: u32, field: u32) -> usize {
        (idx as usize * self.fields + field as usize) * 2 * self.k
    }

    fn scale(&self, e: &[Entry]) -> f64 {
        if !self.params.normalize {
            return 1.0;
        }
        let s: f64 = e.iter().map(|en| en.val * en.val).sum();
        if s > 0.0 && s.is_finite() {
            1.0 / s
        } else {
            1.0
        }
    }

    fn margin(&self, e: &[Entry]) -> f64 {
        let k = self.k;
        let mut lin = f64::from(self.bias[0]);
        for en in e {
            if let Some(w) = self.linear.get(2 * en.idx as usize) {
                lin += f64::from(*w) * en.val;
            }
        }
        let mut pair = 0.0;
        for (a, ea) in e.iter().enumerate() {
            for eb in &e[a + 1..] {
                let (o1, o2) = (self.block(ea.idx, eb.field), self.block(eb.idx, ea.field));
                let (Some(v1), Some(v2)) =
                    (self.factors.get(o1..o1 + k), self.factors.get(o2..o2 + k))
                else {
                    continue;
                };
                let dot: f64 = v1
                    .iter()
                    .zip(v2)
                    .map(|(&p, &q)| f64::from(p) * f64::from(q))
                    .sum();
                pair += dot * ea.val * eb.val;
            }
        }
        lin + pair * self.scale(e)
    }

    /// Decodes a body written by `encode` (layout in `docs/formats.md`); `None` when the
    /// layout, a hyperparameter or the state is inconsistent.
    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        let mut r = crate::format::Reader::new(body);
        let k = u32::try_from(r.u64()?).ok()?;
        let fields = usize::try_from(r.u64()?).ok()?;
        let lr = r.f64()?;
        let l2 = r.f64()?;
        let seed = r.u64()?;
        let normalize = match r.u64()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let params = FfmParams {
            k,
            lr,
            l2,
            seed,
            normalize,
        };
        params.validate().ok()?;
        if fields == 0 {
            return None;
        }
        let examples = r.u64()?;
        let dim = usize::try_from(r.u64()?).ok()?;
        let k = k as usize;
        let nf = dim.checked_mul(fields)?.checked_mul(2 * k)?;
        let nl = dim.checked_mul(2)?;
        let total = nf.checked_add(nl)?.checked_add(2)?.checked_mul(4)?;
        if total != r.remaining() {
            return None;
        }
        let b = r.f32s(2)?;
        let bias = [b[0], b[1]];
        let linear = r.f32s(nl)?;
        let factors = r.f32s(nf)?;
        if !state_ok(&bias, |i| i == 1)
            || !state_ok(&linear, |i| i % 2 == 1)
            || !state_ok(&factors, |i| i % (2 * k) >= k)
        {
            return None;
        }
        Some(Self {
            params,
            k,
            dim,
            fields,
            bias,
            linear,
            factors,
            examples,
            scratch: Scratch::default(),
        })
    }
}

impl Model for Ffm {
    fn kind(&self) -> ModelKind {
        ModelKind::Ffm
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn predict(&self, x: &FeatureVector) -> f64 {
        with_scratch(|s| {
            canonicalize(x, self.dim, Some(self.fields), &mut s.entries);
            sigmoid(self.margin(&s.entries))
        })
    }

    fn learn(&mut self, x: &FeatureVector, y: f32) -> f64 {
        let mut s = std::mem::take(&mut self.scratch);
        canonicalize(x, self.dim, Some(self.fields), &mut s.entries);
        let e = &s.entries;
        let p = sigmoid(self.margin(e));
        let d = p - f64::from(y);
        let FfmParams { lr, l2, .. } = self.params;
        let [w0, a0] = &mut self.bias;
        adagrad(w0, a0, d, lr);
        for en in e {
            let o = 2 * en.idx as usize;
            if let Some([w, a]) = self.linear.get_mut(o..o + 2) {
                adagrad(w, a, d * en.val + l2 * f64::from(*w), lr);
            }
        }
        let r = self.scale(e);
        let k = self.k;
        let (l2f, lrf) = (l2 as f32, lr as f32);
        for (a, ea) in e.iter().enumerate() {
            for eb in &e[a + 1..] {
                let (o1, o2) = (self.block(ea.idx, eb.field), self.block(eb.idx, ea.field));
                let Some((b1, b2)) = two_blocks(&mut self.factors, o1, o2, 2 * k) else {
                    continue;
                };
                // The hot loop, in f32 like LibFFM (see `adagrad_f32`).
                let kv = (d * ea.val * eb.val * r) as f32;
                let (v1, acc1) = b1.split_at_mut(k);
                let (v2, acc2) = b2.split_at_mut(k);
                for (((w1, g1), w2), g2) in v1.iter_mut().zip(acc1).zip(v2).zip(acc2) {
                    let (x1, x2) = (*w1, *w2);
                    adagrad_f32(w1, g1, l2f * x1 + kv * x2, lrf);
                    adagrad_f32(w2, g2, l2f * x2 + kv * x1, lrf);
                }
            }
        }
        self.scratch = s;
        self.examples += 1;
        p
    }

    fn is_finite(&self) -> bool {
        self.bias
            .iter()
            .chain(&self.linear)
            .chain(&self.factors)
            .all(|v| v.is_finite())
    }

    fn examples_seen(&self) -> u64 {
        self.examples
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(72 + (self.linear.len() + self.factors.len()) * 4);
        let p = &self.params;
        out.extend_from_slice(&u64::from(p.k).to_le_bytes());
        out.extend_from_slice(&(self.fields as u64).to_le_bytes());
        out.extend_from_slice(&p.lr.to_le_bytes());
        out.extend_from_slice(&p.l2.to_le_bytes());
        out.extend_from_slice(&p.seed.to_le_bytes());
        out.extend_from_slice(&u64::from(p.normalize).to_le_bytes());
        out.extend_from_slice(&self.examples.to_le_bytes());
        out.extend_from_slice(&(self.dim as u64).to_le_bytes());
        for v in self.bias.iter().chain(&self.linear).chain(&self.factors) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn learning_rate(&self) -> Option<f64> {
        Some(self.params.lr)
    }

    /// `weights/linear` of every bucket, and `weights/factors`, every latent factor.
    fn inspect(&self, visit: &mut dyn FnMut(&str, &[f32])) {
        visit("weights/linear", &self.linear);
        visit("weights/factors", &self.factors);
    }

    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(self.clone())
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Parameter ids: 0 = bias; `1 + i` = linear `w_i`; `1 + dim + (i·fields + f)·k + d` = factor
/// `d` of `v_{i,f}`.
impl Differentiable for Ffm {
    fn loss_and_grad(&self, x: &FeatureVector, y: f32) -> (f64, Vec<(usize, f64)>) {
        let mut e = Vec::new();
        canonicalize(x, self.dim, Some(self.fields), &mut e);
        let p = sigmoid(self.margin(&e));
        let d = p - f64::from(y);
        let r = self.scale(&e);
        let k = self.k;
        let mut g = std::collections::BTreeMap::new();
        g.insert(0, d);
        for en in &e {
            *g.entry(1 + en.idx as usize).or_insert(0.0) += d * en.val;
        }
        let id = |idx: u32, f: u32, dd: usize| {
            1 + self.dim + (idx as usize * self.fields + f as usize) * k + dd
        };
        for (a, ea) in e.iter().enumerate() {
            for eb in &e[a + 1..] {
                let (o1, o2) = (self.block(ea.idx, eb.field), self.block(eb.idx, ea.field));
                let s = d * ea.val * eb.val * r;
                for dd in 0..k {
                    let (w1, w2) = (
                        f64::from(self.factors[o1 + dd]),
                        f64::from(self.factors[o2 + dd]),
                    );
                    *g.entry(id(ea.idx, eb.field, dd)).or_insert(0.0) += s * w2;
                    *g.entry(id(eb.idx, ea.field, dd)).or_insert(0.0) += s * w1;
                }
            }
        }
        (logloss(p, y), g.into_iter().collect())
    }

    fn param(&self, id: usize) -> f64 {
        match id {
            0 => f64::from(self.bias[0]),
            i if i <= self.dim => f64::from(self.linear[2 * (i - 1)]),
            i => {
                let j = i - 1 - self.dim;
                f64::from(self.factors[(j / self.k) * 2 * self.k + j % self.k])
            }
        }
    }

    fn set_param(&mut self, id: usize, value: f64) {
        let v = value as f32;
        match id {
            0 => self.bias[0] = v,
            i if i <= self.dim => self.linear[2 * (i - 1)] = v,
            i => {
                let j = i - 1 - self.dim;
                self.factors[(j / self.k) * 2 * self.k + j % self.k] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fv(e: &[(u16, u32, f32)]) -> FeatureVector {
        let mut v = FeatureVector::default();
        for &(f, i, x) in e {
            v.push_field(f, i, x);
        }
        v
    }

    #[test]
    fn margin_matches_the_definition() {
        let params = FfmParams {
            k: 2,
            normalize: false,
            ..FfmParams::default()
        };
        let mut m = Ffm::new(params, 8, 3);
        m.linear[2 * 5] = 0.25;
        m.bias[0] = -0.1;
        let x = fv(&[(0, 1, 1.0), (1, 5, 2.0), (2, 7, -0.5)]);
        let v = |i: usize, f: usize| -> Vec<f64> {
            let o = (i * 3 + f) * 4;
            m.factors[o..o + 2].iter().map(|&a| f64::from(a)).collect()
        };
        let dot = |a: Vec<f64>, b: Vec<f64>| a[0] * b[0] + a[1] * b[1];
        let want = -0.1 + 0.25 * 2.0 + dot(v(1, 1), v(5, 0)) * 2.0 + dot(v(1, 2), v(7, 0)) * -0.5
            - dot(v(5, 2), v(7, 1)); // x_5 · x_7 = 2 · -0.5
        let mut e = Vec::new();
        canonicalize(&x, 8, Some(3), &mut e);
        let got = m.margin(&e);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn init_is_libffm_uniform_and_deterministic() {
        let a = Ffm::new(FfmParams::default(), 16, 3);
        let b = Ffm::new(FfmParams::default(), 16, 3);
        assert_eq!(a.factors, b.factors);
        for block in a.factors.chunks_exact(8) {
            assert!(block[..4].iter().all(|&v| (0.0..0.5).contains(&v)));
            assert!(block[4..].iter().all(|&v| v == 1.0));
        }
    }

    #[test]
    fn out_of_range_fields_do_not_panic() {
        let mut m = Ffm::new(FfmParams::default(), 8, 2);
        let x = fv(&[(0, 1, 1.0), (7, 2, 1.0), (u16::MAX, 3, 1.0)]);
        let p = m.learn(&x, 1.0);
        assert!((0.0..=1.0).contains(&p));
        // Field 7 and 65535 are read as field 1.
        let y = fv(&[(0, 1, 1.0), (1, 2, 1.0), (1, 3, 1.0)]);
        assert_eq!(m.predict(&x), m.predict(&y));
    }

    #[test]
    fn learns_field_aware_interactions() {
        let mut m = Ffm::new(FfmParams::default(), 16, 3);
        let data = [
            (fv(&[(0, 0, 1.0), (1, 1, 1.0), (2, 3, 1.0)]), 1.0),
            (fv(&[(0, 0, 1.0), (1, 2, 1.0), (2, 4, 1.0)]), 1.0),
            (fv(&[(0, 0, 1.0), (1, 1, 1.0), (2, 4, 1.0)]), 0.0),
            (fv(&[(0, 0, 1.0), (1, 2, 1.0), (2, 3, 1.0)]), 0.0),
        ];
        for _ in 0..2000 {
            for (x, y) in &data {
                m.learn(x, *y);
            }
        }
        for (x, y) in &data {
            let p = m.predict(x);
            assert!((p - f64::from(*y)).abs() < 0.3, "{p} for {y}");
        }
    }

    #[test]
    fn shape_errors() {
        assert_eq!(
            Ffm::try_new(FfmParams::default(), 8, 0).unwrap_err(),
            ShapeError::NoFields
        );
        let e = Ffm::try_new(FfmParams::default(), 1 << 24, 40).unwrap_err();
        assert!(matches!(e, ShapeError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("exceeds the cap"));
        let mut m = Ffm::new(FfmParams::default(), 4, 2);
        assert!(
            m.set_params(FfmParams {
                k: 8,
                ..FfmParams::default()
            })
            .is_err()
        );
        m.set_params(FfmParams {
            lr: 0.05,
            normalize: false,
            ..FfmParams::default()
        })
        .unwrap();
    }

    #[test]
    fn inconsistent_bodies_are_refused() {
        let m = Ffm::new(FfmParams::default(), 4, 2);
        let mut body = Vec::new();
        m.encode(&mut body);
        assert!(Ffm::decode(&body).is_some());
        let mut bad = body.clone();
        bad[40] = 2; // normalize must be 0 or 1
        assert!(Ffm::decode(&bad).is_none());
        let mut bad = body.clone();
        bad[8..16].copy_from_slice(&0u64.to_le_bytes()); // no field
        assert!(Ffm::decode(&bad).is_none());
        let mut bad = body.clone();
        bad[56..64].copy_from_slice(&u64::MAX.to_le_bytes()); // absurd dim
        assert!(Ffm::decode(&bad).is_none());
        for (off, v) in [(72 + 4, -1.0f32), (72 + 32 + 16, -0.5), (72 + 40, f32::NAN)] {
            let mut bad = body.clone();
            bad[off..off + 4].copy_from_slice(&v.to_le_bytes());
            assert!(Ffm::decode(&bad).is_none(), "offset {off}");
        }
    }
}
