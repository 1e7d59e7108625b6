//! Second-order factorization machine (Rendle, "Factorization Machines", ICDM 2010) for binary
//! logloss over hashed sparse features, trained online with per-coordinate AdaGrad.
//!
//! ```text
//! margin = w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j
//!        = w0 + Σ_i w_i x_i + ½ Σ_f [ (Σ_i v_if x_i)² − Σ_i v_if² x_i² ]     (O(k·nnz))
//! ```
//!
//! The sums run over the canonical form of the feature vector (see `common::canonicalize`):
//! repeated indices add up first, so a vector means the same as its dense equivalent. Every
//! parameter (bias, linear weights, factors) has its own AdaGrad accumulator, which starts at 1
//! as in LibFFM: `acc += g²; θ −= lr·g/√acc`, with `g` the logloss gradient plus the L2 term
//! (`l2_linear·w` for linear weights, `l2_factors·v` for factors; the bias is not regularized).
//! L2 is applied lazily: only to the parameters an example touches. Factor steps are computed in
//! f32 (gradients in f64), the rest in f64.

use crate::common::{
    Entry, MAX_FACTORS, Scratch, ShapeError, SplitMix64, adagrad, adagrad_f32, canonicalize,
    check_size, logloss, state_ok, with_scratch,
};
use crate::{Differentiable, Model, ModelKind, sigmoid};
use evergreen_core::FeatureVector;
use serde::{Deserialize, Serialize};

mod parallel;

/// FM hyperparameters (`[model.fm]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FmParams {
    /// Number of latent factors per feature (1 to [`MAX_FACTORS`]); fixed for a model's life.
    #[serde(default = "d_k")]
    pub k: u32,
    /// AdaGrad learning rate.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Standard deviation of the initial factors (uniform on `±init_std·√3`).
    #[serde(default = "d_init_std")]
    pub init_std: f64,
    /// L2 regularization of the linear weights.
    #[serde(default)]
    pub l2_linear: f64,
    /// L2 regularization of the factors.
    #[serde(default = "d_l2_factors")]
    pub l2_factors: f64,
    /// Seed of the factor initialization (splitmix64): the same seed gives the same model.
    #[serde(default)]
    pub seed: u64,
}

fn d_k() -> u32 {
    8
}
fn d_lr() -> f64 {
    0.05
}
fn d_init_std() -> f64 {
    0.01
}
fn d_l2_factors() -> f64 {
    1e-5
}

impl Default for FmParams {
    fn default() -> Self {
        Self {
            k: d_k(),
            lr: d_lr(),
            init_std: d_init_std(),
            l2_linear: 0.0,
            l2_factors: d_l2_factors(),
            seed: 0,
        }
    }
}

impl FmParams {
    /// Checks the ranges; returns the offending field name and message.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_FACTORS).contains(&self.k) {
            return Err(("k", format!("must be 1 to {MAX_FACTORS} (got {})", self.k)));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(("lr", format!("must be > 0 (got {})", self.lr)));
        }
        for (k, v) in [
            ("init_std", self.init_std),
            ("l2_linear", self.l2_linear),
            ("l2_factors", self.l2_factors),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err((k, format!("must be >= 0 (got {v})")));
            }
        }
        Ok(())
    }
}

/// Factorization machine state. Per bucket `i`, one contiguous row of `2 + 2k` floats:
/// `[w_i, acc(w_i), v_i0 .. v_i(k-1), acc(v_i0) .. acc(v_i(k-1))]`.
#[derive(Debug, Clone)]
pub struct Fm {
    params: FmParams,
    k: usize,
    dim: usize,
    /// `[w0, acc(w0)]`.
    bias: [f32; 2],
    rows: Vec<f32>,
    examples: u64,
    scratch: Scratch,
}

impl Fm {
    /// A fresh model over `dim` buckets (`fields` is unused: FM is not field-aware; the
    /// argument keeps the constructors of all kinds alike).
    ///
    /// # Panics
    /// When [`Fm::try_new`] fails (invalid parameters, or state over the size cap).
    pub fn new(params: FmParams, dim: usize, fields: usize) -> Self {
        match Self::try_new(params, dim, fields) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// A fresh model, or why it cannot be built: parameters out of range, or more than
    /// [`crate::MAX_STATE_FLOATS`] floats of state.
    pub fn try_new(params: FmParams, dim: usize, _fields: usize) -> Result<Self, ShapeError> {
        params
            .validate()
            .map_err(|(f, m)| ShapeError::Param(f, m))?;
        let k = params.k as usize;
        let n = check_size(dim, 2 + 2 * k as u64)?;
        let mut rows = vec![0.0f32; n];
        let mut rng = SplitMix64(params.seed);
        let a = params.init_std * 3f64.sqrt();
        for row in rows.chunks_exact_mut(2 + 2 * k) {
            row[1] = 1.0;
            for f in 0..k {
                row[2 + f] = ((rng.next_f64() * 2.0 - 1.0) * a) as f32;
                row[2 + k + f] = 1.0;
            }
        }
        Ok(Self {
            params,
            k,
            dim,
            bias: [0.0, 1.0],
            rows,
            examples: 0,
            scratch: Scratch::default(),
        })
    }

    /// The hyperparameters.
    pub fn params(&self) -> FmParams {
        self.params
    }

    /// Replaces the hyperparameters (a warm start may change rates and regularization; the
    /// state is kept). Refuses invalid parameters and a change of `k`.
    pub fn set_params(&mut self, params: FmParams) -> Result<(), String> {
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
        (self.rows.len() + 2) * 4
    }

    fn stride(&self) -> usize {
        2 + 2 * self.k
    }

    /// Margin over canonical entries; leaves `Σ_i v_if x_i` in `sums[..k]`.
    fn margin(&self, e: &[Entry], sums: &mut Vec<f64>) -> f64 {
        let k = self.k;
        let stride = self.stride();
        sums.clear();
        sums.resize(k, 0.0);
        let mut lin = f64::from(self.bias[0]);
        let mut sq = 0.0;
        for en in e {
            let o = en.idx as usize * stride;
            let Some(row) = self.rows.get(o..o + stride) else {
                continue;
            };
            let x = en.val;
            lin += f64::from(row[0]) * x;
            for (s, &v) in sums.iter_mut().zip(&row[2..2 + k]) {
                let vx = f64::from(v) * x;
                *s += vx;
                sq += vx * vx;
            }
        }
        let pair: f64 = sums.iter().map(|s| s * s).sum();
        lin + 0.5 * (pair - sq)
    }

    /// Decodes a body written by `encode` (layout in `docs/formats.md`); `None` when the
    /// layout, a hyperparameter or the state is inconsistent.
    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        let mut r = crate::format::Reader::new(body);
        let k = r.u64()?;
        let params = FmParams {
            k: u32::try_from(k).ok()?,
            lr: r.f64()?,
            init_std: r.f64()?,
            l2_linear: r.f64()?,
            l2_factors: r.f64()?,
            seed: r.u64()?,
        };
        params.validate().ok()?;
        let examples = r.u64()?;
        let dim = usize::try_from(r.u64()?).ok()?;
        let k = params.k as usize;
        let stride = 2 + 2 * k;
        let n = dim.checked_mul(stride)?;
        if n.checked_add(2)?.checked_mul(4)? != r.remaining() {
            return None;
        }
        check_size(dim, stride as u64).ok()?;
        let b = r.f32s(2)?;
        let bias = [b[0], b[1]];
        let rows = r.f32s(n)?;
        if !state_ok(&bias, |i| i == 1) || !state_ok(&rows, |i| is_acc(i % stride, k)) {
            return None;
        }
        Some(Self {
            params,
            k,
            dim,
            bias,
            rows,
            examples,
            scratch: Scratch::default(),
        })
    }
}

/// The AdaGrad step of one bucket's row (`[w, acc(w), v.., acc(v)..]`) for an entry of value
/// `x`, given the logloss derivative `d` and the factor sums `Σ_i v_if x_i` of the example.
/// The Hogwild workers (`learn_parallel`) do the same arithmetic parameter by parameter.
#[inline(always)]
fn update_row(row: &mut [f32], k: usize, x: f64, d: f64, sums: &[f64], p: &FmParams) {
    let (wa, va) = row.split_at_mut(2);
    let [w, a] = wa else { return };
    adagrad(w, a, d * x + p.l2_linear * f64::from(*w), p.lr);
    let (v, acc) = va.split_at_mut(k);
    let (lrf, l2_factors) = (p.lr as f32, p.l2_factors);
    // The hot loop: gradient in f64, step in f32 (see `adagrad_f32`).
    for ((v, acc), &sf) in v.iter_mut().zip(acc.iter_mut()).zip(sums) {
        let vf = f64::from(*v);
        let g = d * x * (sf - vf * x) + l2_factors * vf;
        adagrad_f32(v, acc, g as f32, lrf);
    }
}

fn is_acc(pos_in_row: usize, k: usize) -> bool {
    pos_in_row == 1 || pos_in_row >= 2 + k
}

impl Model for Fm {
    fn kind(&self) -> ModelKind {
        ModelKind::Fm
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn predict(&self, x: &FeatureVector) -> f64 {
        with_scratch(|s| {
            canonicalize(x, self.dim, None, &mut s.entries);
            sigmoid(self.margin(&s.entries, &mut s.sums))
        })
    }

    fn learn(&mut self, x: &FeatureVector, y: f32) -> f64 {
        let mut s = std::mem::take(&mut self.scratch);
        canonicalize(x, self.dim, None, &mut s.entries);
        let p = sigmoid(self.margin(&s.entries, &mut s.sums));
        let d = p - f64::from(y);
        let [w0, a0] = &mut self.bias;
        adagrad(w0, a0, d, self.params.lr);
        let k = self.k;
        let stride = self.stride();
        for en in &s.entries {
            let o = en.idx as usize * stride;
            let Some(row) = self.rows.get_mut(o..o + stride) else {
                continue;
            };
            update_row(row, k, en.val, d, &s.sums, &self.params);
        }
        self.scratch = s;
        self.examples += 1;
        p
    }

    fn is_finite(&self) -> bool {
        self.bias.iter().chain(&self.rows).all(|v| v.is_finite())
    }

    fn examples_seen(&self) -> u64 {
        self.examples
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(72 + self.rows.len() * 4);
        let p = &self.params;
        out.extend_from_slice(&u64::from(p.k).to_le_bytes());
        for v in [p.lr, p.init_std, p.l2_linear, p.l2_factors] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&p.seed.to_le_bytes());
        out.extend_from_slice(&self.examples.to_le_bytes());
        out.extend_from_slice(&(self.dim as u64).to_le_bytes());
        for v in self.bias.iter().chain(&self.rows) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn learning_rate(&self) -> Option<f64> {
        Some(self.params.lr)
    }

    /// `weights/linear` and `weights/factor_norms` (‖v_i‖) of the buckets whose linear weight
    /// has moved (a bucket never trained keeps its random factors and a zero weight).
    fn inspect(&self, visit: &mut dyn FnMut(&str, &[f32])) {
        let k = self.k;
        let trained = || {
            self.rows
                .chunks_exact(2 + 2 * k)
                .filter(|r| r[0] != 0.0 || r[1] != 1.0)
        };
        let linear: Vec<f32> = trained().map(|r| r[0]).collect();
        visit("weights/linear", &linear);
        let norms: Vec<f32> = trained()
            .map(|r| r[2..2 + k].iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        visit("weights/factor_norms", &norms);
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

/// Parameter ids: 0 = bias `w0`; `1 + i·(1+k)` = `w_i`; `1 + i·(1+k) + 1 + f` = `v_if`.
impl Differentiable for Fm {
    fn loss_and_grad(&self, x: &FeatureVector, y: f32) -> (f64, Vec<(usize, f64)>) {
        let mut e = Vec::new();
        let mut sums = Vec::new();
        canonicalize(x, self.dim, None, &mut e);
        let p = sigmoid(self.margin(&e, &mut sums));
        let d = p - f64::from(y);
        let k = self.k;
        let mut grad = vec![(0, d)];
        for en in &e {
            let base = 1 + en.idx as usize * (1 + k);
            grad.push((base, d * en.val));
            let row = &self.rows[en.idx as usize * self.stride()..];
            for (f, &sf) in sums.iter().enumerate() {
                let vf = f64::from(row[2 + f]);
                grad.push((base + 1 + f, d * en.val * (sf - vf * en.val)));
            }
        }
        (logloss(p, y), grad)
    }

    fn param(&self, id: usize) -> f64 {
        if id == 0 {
            return f64::from(self.bias[0]);
        }
        let (i, j) = ((id - 1) / (1 + self.k), (id - 1) % (1 + self.k));
        let o = i * self.stride() + if j == 0 { 0 } else { 1 + j };
        f64::from(self.rows[o])
    }

    fn set_param(&mut self, id: usize, value: f64) {
        if id == 0 {
            self.bias[0] = value as f32;
            return;
        }
        let (i, j) = ((id - 1) / (1 + self.k), (id - 1) % (1 + self.k));
        let o = i * self.stride() + if j == 0 { 0 } else { 1 + j };
        self.rows[o] = value as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fv(e: &[(u32, f32)]) -> FeatureVector {
        let mut v = FeatureVector::default();
        for &(i, x) in e {
            v.push(i, x);
        }
        v
    }

    /// The margin by the O(k·n²) definition over the dense vector.
    fn naive_margin(m: &Fm, dense: &[(usize, f64)]) -> f64 {
        let k = m.k;
        let st = m.stride();
        let mut out = f64::from(m.bias[0]);
        for (a, &(i, xi)) in dense.iter().enumerate() {
            out += f64::from(m.rows[i * st]) * xi;
            for &(j, xj) in &dense[a + 1..] {
                let dot: f64 = (0..k)
                    .map(|f| f64::from(m.rows[i * st + 2 + f]) * f64::from(m.rows[j * st + 2 + f]))
                    .sum();
                out += dot * xi * xj;
            }
        }
        out
    }

    #[test]
    fn sum_square_trick_matches_the_definition_with_repeated_indices() {
        let params = FmParams {
            init_std: 0.5,
            k: 3,
            ..FmParams::default()
        };
        let mut m = Fm::new(params, 16, 1);
        let st = m.stride();
        for r in m.rows.chunks_exact_mut(st).enumerate() {
            r.1[0] = r.0 as f32 * 0.1 - 0.5;
        }
        let x = fv(&[(3, 1.0), (5, 0.5), (3, 2.0), (9, -1.5)]);
        let dense = [(3usize, 3.0f64), (5, 0.5), (9, -1.5)];
        let mut e = Vec::new();
        let mut s = Vec::new();
        canonicalize(&x, 16, None, &mut e);
        let got = m.margin(&e, &mut s);
        let want = naive_margin(&m, &dense);
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        // Order of entries does not matter.
        let y = fv(&[(9, -1.5), (3, 2.0), (5, 0.5), (3, 1.0)]);
        assert_eq!(m.predict(&x), m.predict(&y));
        m.learn(&x, 1.0);
    }

    #[test]
    fn initialization_is_deterministic_from_the_seed() {
        let a = Fm::new(FmParams::default(), 32, 1);
        let b = Fm::new(FmParams::default(), 32, 1);
        assert_eq!(a.rows, b.rows);
        let c = Fm::new(
            FmParams {
                seed: 7,
                ..FmParams::default()
            },
            32,
            1,
        );
        assert_ne!(a.rows, c.rows);
        let std = (a.rows.chunks_exact(a.stride()))
            .flat_map(|r| r[2..2 + a.k].to_vec())
            .map(|v| f64::from(v).powi(2))
            .sum::<f64>()
            / (32.0 * 8.0);
        assert!((std.sqrt() - 0.01).abs() < 0.003, "{}", std.sqrt());
    }

    #[test]
    fn learns_an_interaction_a_linear_model_cannot() {
        // XOR of two features: only the pairwise term can fit it.
        let params = FmParams {
            lr: 0.1,
            init_std: 0.1,
            ..FmParams::default()
        };
        let mut m = Fm::new(params, 8, 1);
        let data = [
            (fv(&[(0, 1.0), (1, 1.0), (3, 1.0)]), 1.0),
            (fv(&[(0, 1.0), (2, 1.0), (4, 1.0)]), 1.0),
            (fv(&[(0, 1.0), (1, 1.0), (4, 1.0)]), 0.0),
            (fv(&[(0, 1.0), (2, 1.0), (3, 1.0)]), 0.0),
        ];
        for _ in 0..3000 {
            for (x, y) in &data {
                m.learn(x, *y);
            }
        }
        for (x, y) in &data {
            let p = m.predict(x);
            assert!((p - f64::from(*y)).abs() < 0.2, "{p} for label {y}");
        }
    }

    #[test]
    fn set_params_refuses_a_change_of_k() {
        let mut m = Fm::new(FmParams::default(), 4, 1);
        let p = FmParams {
            lr: 0.2,
            ..FmParams::default()
        };
        m.set_params(p).unwrap();
        assert_eq!(m.params().lr, 0.2);
        assert!(m.set_params(FmParams { k: 4, ..p }).is_err());
        assert!(m.set_params(FmParams { lr: -1.0, ..p }).is_err());
    }

    #[test]
    fn size_cap_and_bad_params_are_errors() {
        assert!(matches!(
            Fm::try_new(FmParams::default(), 1 << 30, 1),
            Err(ShapeError::TooLarge { .. })
        ));
        assert!(matches!(
            Fm::try_new(
                FmParams {
                    k: 0,
                    ..FmParams::default()
                },
                4,
                1
            ),
            Err(ShapeError::Param("k", _))
        ));
    }

    #[test]
    fn negative_accumulator_or_nan_is_refused_on_decode() {
        let m = Fm::new(FmParams::default(), 4, 1);
        let mut body = Vec::new();
        m.encode(&mut body);
        assert!(Fm::decode(&body).is_some());
        for (pos, v) in [(1usize, -1.0f32), (2, f32::NAN), (0, f32::INFINITY)] {
            let mut m2 = m.clone();
            let st = m2.stride();
            m2.rows[st + pos] = v;
            let mut b = Vec::new();
            m2.encode(&mut b);
            assert!(Fm::decode(&b).is_none(), "{pos} {v}");
        }
        assert!(Fm::decode(&body[..body.len() - 1]).is_none());
    }
}
