//! FTRL-Proximal logistic regression (McMahan et al., "Ad Click Prediction: a View from the
//! Trenches", KDD 2013, Algorithm 1): per-coordinate learning rates, L1 and L2 regularization.

use crate::sparse_memory::ZeroTable;
use crate::{Differentiable, Model, ModelKind, sigmoid};
use evergreen_core::FeatureVector;
use serde::{Deserialize, Serialize};

mod frozen;
mod parallel;

pub(crate) use frozen::{FrozenFtrl, check_body};

/// How `z` and `n` are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightStorage {
    /// 32-bit floats (8 bytes per bucket).
    #[default]
    F32,
    /// IEEE 754 half-precision floats, rounded to nearest-even, saturating at ±65504 instead of
    /// overflowing to infinity (4 bytes per bucket; McMahan et al. 2013, "Encoding Values with
    /// Fewer Bits", use 16-bit coefficients too). Arithmetic is still done in f64.
    F16,
}

impl WeightStorage {
    fn is_f32(&self) -> bool {
        *self == WeightStorage::F32
    }
}

/// FTRL hyperparameters.
///
/// The options after `l2` are the memory savers of McMahan et al. 2013 (section 4): feature
/// admission ("Probabilistic Feature Inclusion") and 16-bit storage. At their defaults the
/// model, its file and its serialized parameters are exactly what they were before the options
/// existed (they are not serialized when at their defaults).
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
    /// Counting admission ("bloom filter inclusion" with an exact counter): a bucket's `z` and
    /// `n` stay untouched, so its weight stays 0, until the bucket has occurred in
    /// `admit_after` examples' entries; the occurrence that reaches the count is the first one
    /// learned from. 0 (default) admits immediately. At most 254 (one byte per bucket).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub admit_after: u32,
    /// Probabilistic (Poisson) admission: an occurrence of a bucket not yet admitted (and past
    /// `admit_after`) admits it with this probability. The draw is a hash of `seed`, the bucket
    /// and the number of examples seen, so a run is reproducible. 1.0 (default) always admits.
    #[serde(default = "d_one", skip_serializing_if = "is_one")]
    pub admit_probability: f64,
    /// Seed of the admission draws.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub seed: u64,
    /// Storage of `z` and `n`: `"f32"` (default) or `"f16"`.
    #[serde(default, skip_serializing_if = "WeightStorage::is_f32")]
    pub storage: WeightStorage,
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
fn d_one() -> f64 {
    1.0
}
fn is_zero(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl Default for FtrlParams {
    fn default() -> Self {
        Self {
            alpha: d_alpha(),
            beta: d_beta(),
            l1: 0.0,
            l2: d_l2(),
            admit_after: 0,
            admit_probability: 1.0,
            seed: 0,
            storage: WeightStorage::F32,
        }
    }
}

/// Largest `admit_after` (the counter is one byte; 255 marks an admitted bucket).
pub const MAX_ADMIT_AFTER: u32 = 254;
const ADMITTED: u8 = u8::MAX;

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
        if self.admit_after > MAX_ADMIT_AFTER {
            return Err((
                "admit_after",
                format!(
                    "must be at most {MAX_ADMIT_AFTER} (got {})",
                    self.admit_after
                ),
            ));
        }
        let p = self.admit_probability;
        if !(p > 0.0 && p <= 1.0) {
            return Err(("admit_probability", format!("must be in (0, 1] (got {p})")));
        }
        Ok(())
    }

    /// True when feature admission is on (a per-bucket counter is kept).
    pub fn admission(&self) -> bool {
        self.admit_after > 0 || self.admit_probability < 1.0
    }

    /// True when the body needs the extended layout (any option after `l2` not at its default).
    fn extended(&self) -> bool {
        self.admission() || self.seed != 0 || self.storage != WeightStorage::F32
    }
}

/// Largest magnitude of a weight (see `Ftrl::weight`).
const MAX_WEIGHT: f64 = 1e10;

/// Marks the extended body layout. Read as the f64 `alpha` of the original layout it is a NaN,
/// which that layout never holds, so the two layouts cannot be confused.
const EXTENDED_TAG: u64 = 0xFFFF_FFFF_FFFF_0002;

/// f32 → IEEE half, round to nearest even; ±infinity and overflow saturate to ±65504, NaN stays
/// NaN.
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return if man != 0 {
            sign | 0x7e00
        } else {
            sign | 0x7bff
        };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7bff;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let mut r = m >> shift;
        let rem = m & ((1u32 << shift) - 1);
        if rem > half || (rem == half && r & 1 == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) {
        r += 1;
    }
    if r >= 0x7c00 {
        return sign | 0x7bff;
    }
    sign | r as u16
}

/// f32 → IEEE half with unbiased stochastic rounding: rounds away from zero with probability
/// equal to the distance to the lower-magnitude neighbour over the gap (`u` uniform in [0, 1)),
/// so that updates smaller than half a unit in the last place are not all lost (the randomized
/// rounding of McMahan et al. 2013, "Encoding Values with Fewer Bits"). Saturates like
/// [`f32_to_f16`].
pub(crate) fn f32_to_f16_stochastic(x: f32, u: f64) -> u16 {
    let h = f32_to_f16(x);
    if !x.is_finite() || h & 0x7fff >= 0x7bff {
        return h;
    }
    let ax = f64::from(x.abs());
    let mut mag = h & 0x7fff;
    if f64::from(f16_to_f32(mag)) > ax {
        mag -= 1; // toward zero
    }
    let lo = f64::from(f16_to_f32(mag));
    let hi = f64::from(f16_to_f32(mag + 1));
    if hi > lo && u < (ax - lo) / (hi - lo) {
        mag += 1;
    }
    (h & 0x8000) | mag
}

/// IEEE half → f32 (exact).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    if exp == 0 {
        let v = man as f32 * f32::from_bits(0x3380_0000); // man · 2^-24, exact
        return if sign != 0 { -v } else { v };
    }
    let bits = if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 112) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// Entries of an example whose weights [`Ftrl::learn_inner`] keeps from its prediction.
const LEARN_CACHE: usize = 64;

/// The FTRL-Proximal weight of a bucket from its `z` and `n` (`n` read only when needed).
#[inline(always)]
fn weight_of(p: &FtrlParams, z: f32, n: impl FnOnce() -> f32) -> f64 {
    let z = f64::from(z);
    if z.abs() <= p.l1 {
        0.0
    } else {
        let n = f64::from(n());
        // Clamped: a weight beyond 1e10 saturates the sigmoid anyway, and the bound keeps
        // every margin finite even when the denominator underflows to zero.
        (-(z - z.signum() * p.l1) / ((p.beta + n.sqrt()) / p.alpha + p.l2))
            .clamp(-MAX_WEIGHT, MAX_WEIGHT)
    }
}

/// Buckets whose weights are computed together: the loop of [`weights_of`] has no branch, so
/// the compiler turns its square roots and divisions into vector instructions.
const CHUNK: usize = 8;

/// The weights of `CHUNK` buckets from their `z` and `n`: for each, exactly the value of
/// [`weight_of`] (both branches computed, one kept).
#[inline(always)]
fn weights_of(p: &FtrlParams, z: &[f64; CHUNK], n: &[f64; CHUNK], w: &mut [f64; CHUNK]) {
    for k in 0..CHUNK {
        let zk = z[k];
        let raw = (-(zk - zk.signum() * p.l1) / ((p.beta + n[k].sqrt()) / p.alpha + p.l2))
            .clamp(-MAX_WEIGHT, MAX_WEIGHT);
        w[k] = if zk.abs() <= p.l1 { 0.0 } else { raw };
    }
}

/// The probabilistic-admission draw of bucket `i` at example number `examples`.
#[inline]
fn admission_draw(seed: u64, i: usize, examples: u64, p: f64) -> bool {
    let h =
        crate::common::mix64(seed ^ crate::common::mix64((i as u64) ^ examples.rotate_left(32)));
    ((h >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
}

/// The stochastic-rounding draws (for `z`, for `n`) of an f16 update of bucket `i` at example
/// number `examples`.
#[inline]
fn rounding_draws(seed: u64, i: usize, examples: u64) -> (f64, f64) {
    let h = crate::common::mix64(seed ^ crate::common::mix64((i as u64) ^ (examples << 32)));
    let to_unit = |b: u64| (b >> 40) as f64 * (1.0 / (1u64 << 24) as f64);
    (to_unit(h), to_unit(h << 24))
}

/// `z` and `n` of every bucket in the configured precision, interleaved (`[z_0, n_0, z_1, n_1,
/// …]`): one cache line, and one page, hold both values of a bucket. The encoded form keeps
/// the format's layout (every `z`, then every `n`).
#[derive(Debug, Clone, PartialEq)]
enum Store {
    F32(ZeroTable<f32>),
    F16(ZeroTable<u16>),
}

impl Store {
    fn zeros(storage: WeightStorage, dim: usize) -> Self {
        match storage {
            WeightStorage::F32 => Store::F32(ZeroTable::zeros(2 * dim)),
            WeightStorage::F16 => Store::F16(ZeroTable::zeros(2 * dim)),
        }
    }
    /// Value `k` of the interleaved table.
    #[inline(always)]
    fn get(&self, k: usize) -> f32 {
        match self {
            Store::F32(v) => v[k],
            Store::F16(v) => f16_to_f32(v[k]),
        }
    }
    #[inline(always)]
    fn set(&mut self, k: usize, x: f32) {
        match self {
            Store::F32(v) => v[k] = x,
            Store::F16(v) => v[k] = f32_to_f16(x),
        }
    }
    /// Like `set`, with stochastic rounding (draw `u`) for f16.
    #[inline(always)]
    fn set_stochastic(&mut self, k: usize, x: f32, u: f64) {
        match self {
            Store::F32(v) => v[k] = x,
            Store::F16(v) => v[k] = f32_to_f16_stochastic(x, u),
        }
    }
    /// `z` of bucket `i`.
    #[inline(always)]
    fn z(&self, i: usize) -> f32 {
        self.get(2 * i)
    }
    /// `n` of bucket `i`.
    #[inline(always)]
    fn n(&self, i: usize) -> f32 {
        self.get(2 * i + 1)
    }
    #[inline(always)]
    fn set_z(&mut self, i: usize, x: f32) {
        self.set(2 * i, x)
    }
    #[inline(always)]
    fn set_n(&mut self, i: usize, x: f32) {
        self.set(2 * i + 1, x)
    }
    #[inline(always)]
    fn set_z_stochastic(&mut self, i: usize, x: f32, u: f64) {
        self.set_stochastic(2 * i, x, u)
    }
    #[inline(always)]
    fn set_n_stochastic(&mut self, i: usize, x: f32, u: f64) {
        self.set_stochastic(2 * i + 1, x, u)
    }
    /// Buckets.
    fn dim(&self) -> usize {
        match self {
            Store::F32(v) => v.len() / 2,
            Store::F16(v) => v.len() / 2,
        }
    }
    fn bytes_per_value(&self) -> usize {
        match self {
            Store::F32(_) => 4,
            Store::F16(_) => 2,
        }
    }
    /// Every `z`, then every `n`.
    fn zs_then_ns(&self) -> impl Iterator<Item = f32> + '_ {
        let dim = self.dim();
        (0..dim)
            .map(|i| self.z(i))
            .chain((0..dim).map(|i| self.n(i)))
    }
    fn convert(&self, storage: WeightStorage) -> Self {
        let mut out = Store::zeros(storage, self.dim());
        for k in 0..2 * self.dim() {
            out.set(k, self.get(k));
        }
        out
    }
    /// The format's layout: every `z`, then every `n`, stored values as they are.
    fn encode(&self, out: &mut Vec<u8>) {
        fn halves<T: Copy>(v: &[T], mut put: impl FnMut(T)) {
            v.iter().step_by(2).for_each(|&x| put(x));
            v.iter().skip(1).step_by(2).for_each(|&x| put(x));
        }
        match self {
            Store::F32(v) => halves(v, |x| out.extend_from_slice(&x.to_le_bytes())),
            Store::F16(v) => halves(v, |x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }
    /// Reads `dim` `z` values then `dim` `n` values.
    fn decode(
        r: &mut crate::format::Reader<'_>,
        storage: WeightStorage,
        dim: usize,
    ) -> Option<Self> {
        // Straight from the two byte runs into the interleaved table: no intermediate copies
        // (a served version's load holds the file and the model, nothing more).
        fn interleave<T, const N: usize>(
            z: &[u8],
            n: &[u8],
            value: impl Fn([u8; N]) -> T,
        ) -> Vec<T> {
            let mut v = Vec::with_capacity(2 * z.len() / N);
            for (z, n) in z.chunks_exact(N).zip(n.chunks_exact(N)) {
                v.push(value(z.try_into().expect("N bytes")));
                v.push(value(n.try_into().expect("N bytes")));
            }
            v
        }
        let width = match storage {
            WeightStorage::F32 => 4,
            WeightStorage::F16 => 2,
        };
        let z = r.bytes(dim.checked_mul(width)?)?;
        let n = r.bytes(dim.checked_mul(width)?)?;
        Some(match storage {
            WeightStorage::F32 => Store::F32(interleave(z, n, f32::from_le_bytes).into()),
            WeightStorage::F16 => Store::F16(interleave(z, n, u16::from_le_bytes).into()),
        })
    }
}

/// Read access to `z` and `n` by bucket: a model's own table, or a served file's
/// (`frozen::FrozenFtrl`).
trait ZnRead {
    /// Buckets.
    fn buckets(&self) -> usize;
    /// `z` of bucket `i` (`i < buckets()`).
    fn z_at(&self, i: usize) -> f32;
    /// `n` of bucket `i` (`i < buckets()`).
    fn n_at(&self, i: usize) -> f32;
}

impl ZnRead for Store {
    #[inline(always)]
    fn buckets(&self) -> usize {
        self.dim()
    }
    #[inline(always)]
    fn z_at(&self, i: usize) -> f32 {
        self.z(i)
    }
    #[inline(always)]
    fn n_at(&self, i: usize) -> f32 {
        self.n(i)
    }
}

/// `Σ w_i · v_i` over the example's features in their order (the same sum, bit for bit, as
/// one weight per feature), the weights computed `CHUNK` at a time; `seen(k, z, n, w)` is told
/// the state and weight of the `k`-th feature's bucket (0 for one outside the model, which is
/// skipped).
#[inline(always)]
fn margin_over<T: ZnRead>(
    params: &FtrlParams,
    table: &T,
    x: &FeatureVector,
    mut seen: impl FnMut(usize, f32, f32, f64),
) -> f64 {
    let dim = table.buckets();
    let (indices, values) = (&x.indices, &x.values);
    let mut sum = -0.0f64;
    let (mut z, mut n, mut w) = ([0.0; CHUNK], [0.0; CHUNK], [0.0; CHUNK]);
    let mut zn = [(0.0f32, 0.0f32); CHUNK];
    for (c, (idx, val)) in indices.chunks(CHUNK).zip(values.chunks(CHUNK)).enumerate() {
        for (k, &i) in idx.iter().enumerate() {
            let i = i as usize;
            // Outside the model: z = n = 0, whose weight is 0 (|z| <= l1, l1 >= 0).
            zn[k] = if i < dim {
                (table.z_at(i), table.n_at(i))
            } else {
                (0.0, 0.0)
            };
            z[k] = f64::from(zn[k].0);
            n[k] = f64::from(zn[k].1);
        }
        weights_of(params, &z, &n, &mut w);
        for (k, (&i, &v)) in idx.iter().zip(val).enumerate() {
            if (i as usize) < dim {
                seen(c * CHUNK + k, zn[k].0, zn[k].1, w[k]);
            }
            sum += w[k] * v as f64;
        }
    }
    sum
}

/// FTRL-Proximal state: `z` and `n` per hash bucket (weights are derived lazily), plus a
/// one-byte admission counter per bucket when admission is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Ftrl {
    params: FtrlParams,
    /// `z` and `n`, interleaved.
    zn: Store,
    /// Empty unless `params.admission()`: occurrences so far, or `ADMITTED`.
    counts: ZeroTable<u8>,
    examples: u64,
}

impl Ftrl {
    /// A fresh model over `dim` buckets.
    pub fn new(params: FtrlParams, dim: usize) -> Self {
        Self {
            params,
            zn: Store::zeros(params.storage, dim),
            counts: ZeroTable::zeros(if params.admission() { dim } else { 0 }),
            examples: 0,
        }
    }

    /// The hyperparameters.
    pub fn params(&self) -> FtrlParams {
        self.params
    }

    /// Replaces the hyperparameters (a warm start may change them; state is kept). A change of
    /// `storage` converts `z` and `n`; turning admission on marks every bucket with state as
    /// admitted; turning it off drops the counters; lowering `admit_after` caps the counts of
    /// buckets not yet admitted.
    pub fn set_params(&mut self, params: FtrlParams) {
        if params.storage != self.params.storage {
            self.zn = self.zn.convert(params.storage);
        }
        if params.admission() && !self.params.admission() {
            let mut counts = ZeroTable::zeros(self.zn.dim());
            for (i, c) in counts.iter_mut().enumerate() {
                if self.zn.z(i) != 0.0 || self.zn.n(i) != 0.0 {
                    *c = ADMITTED;
                }
            }
            self.counts = counts;
        } else if !params.admission() {
            self.counts = ZeroTable::zeros(0);
        } else {
            // Still on: a lower admit_after caps the counts of buckets not yet admitted.
            let need = params.admit_after.max(1) as u8;
            for c in self.counts.iter_mut() {
                if *c != ADMITTED && *c > need {
                    *c = need;
                }
            }
        }
        self.params = params;
    }

    /// Bytes of model state (`z`, `n` and admission counters).
    pub fn state_bytes(&self) -> usize {
        2 * self.zn.dim() * self.zn.bytes_per_value() + self.counts.len()
    }

    #[inline]
    fn weight(&self, i: usize) -> f64 {
        if i >= self.zn.dim() {
            return 0.0;
        }
        weight_of(&self.params, self.zn.z(i), || self.zn.n(i))
    }

    /// One FTRL step; with `anchor = Some((previous, mu))` the gradient of each touched
    /// coordinate gains `mu · (w_i − previous_i)`: an L2 pull towards another model's weights.
    fn learn_inner(&mut self, x: &FeatureVector, y: f32, anchor: Option<(&Ftrl, f64)>) -> f64 {
        // The weights computed for the prediction, with the `z` and `n` bits they came from,
        // are reused by the update when the bucket still holds those bits (it does not when an
        // index repeats within the example): same values as recomputing, one division less.
        let mut cache = [(0u32, 0u32, 0.0f64); LEARN_CACHE];
        let p = if x.len() <= LEARN_CACHE {
            sigmoid(self.margin_with(x, |k, z, n, w| cache[k] = (z.to_bits(), n.to_bits(), w)))
        } else {
            self.predict(x)
        };
        let g = p - y as f64;
        let alpha = self.params.alpha;
        let admission = !self.counts.is_empty();
        for (j, (i, v)) in x.iter().enumerate() {
            let i = i as usize;
            if i >= self.zn.dim() || (admission && !self.admit(i)) {
                continue;
            }
            let (zi, ni) = (self.zn.z(i), self.zn.n(i));
            let w = match cache.get(j) {
                Some(&(zb, nb, w)) if zb == zi.to_bits() && nb == ni.to_bits() => w,
                _ => weight_of(&self.params, zi, || ni),
            };
            let gi = match anchor {
                Some((prev, mu)) => g * v as f64 + mu * (w - prev.weight(i)),
                None => g * v as f64,
            };
            let n = ni as f64;
            let sigma = ((n + gi * gi).sqrt() - n.sqrt()) / alpha;
            let z = (zi as f64 + gi - sigma * w) as f32;
            let n = (n + gi * gi) as f32;
            if self.params.storage == WeightStorage::F16 {
                let (uz, un) = rounding_draws(self.params.seed, i, self.examples);
                self.zn.set_z_stochastic(i, z, uz);
                self.zn.set_n_stochastic(i, n, un);
            } else {
                self.zn.set_z(i, z);
                self.zn.set_n(i, n);
            }
        }
        self.examples += 1;
        p
    }

    /// Learns one example with an L2 pull of strength `mu` towards `previous`'s weights (the
    /// penalty `mu/2 · Σ (w_i − previous_i)²` on the coordinates the example touches, as in
    /// L2-SP fine-tuning); returns the prediction made before the update. With `mu = 0` this is
    /// exactly [`Model::learn`].
    pub fn learn_anchored(&mut self, x: &FeatureVector, y: f32, previous: &Ftrl, mu: f64) -> f64 {
        self.learn_inner(x, y, (mu > 0.0).then_some((previous, mu)))
    }

    /// The current weight of a bucket (0 outside the model).
    pub fn weight_at(&self, i: usize) -> f64 {
        self.weight(i)
    }

    fn margin(&self, x: &FeatureVector) -> f64 {
        self.margin_with(x, |_, _, _, _| {})
    }

    /// [`margin_over`] this model's table.
    #[inline(always)]
    fn margin_with(&self, x: &FeatureVector, seen: impl FnMut(usize, f32, f32, f64)) -> f64 {
        margin_over(&self.params, &self.zn, x, seen)
    }

    /// Counts one occurrence of bucket `i` and says whether it is admitted (learned from).
    fn admit(&mut self, i: usize) -> bool {
        let need = self.params.admit_after.max(1) as u8;
        let p = self.params.admit_probability;
        let (seed, examples) = (self.params.seed, self.examples);
        let Some(c) = self.counts.get_mut(i) else {
            return false;
        };
        if *c == ADMITTED {
            return true;
        }
        if *c < need {
            *c += 1;
        }
        if *c < need {
            return false;
        }
        if p >= 1.0 || admission_draw(seed, i, examples, p) {
            *c = ADMITTED;
            true
        } else {
            false
        }
    }

    /// Decodes a body written by `encode`. `None` (reported as `ModelError::Body("ftrl")`) when
    /// the layout is wrong or a hyperparameter breaks the rules of [`FtrlParams::validate`]
    /// (non-finite, or out of range), so that a corrupt file whose checksum was recomputed
    /// cannot produce NaN predictions. Two layouts (see `docs/formats.md`): the original one,
    /// written when every option after `l2` is at its default, and the extended one, which
    /// starts with `EXTENDED_TAG` and is accepted only when some option is not at its default
    /// (so every model has exactly one encoding).
    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        let head = Head::decode(body)?;
        let state = body.get(head.state_at..)?;
        if state.len() != head.state_len()? {
            return None;
        }
        let (z, rest) = state.split_at(head.dim * head.width());
        let (n, counts) = rest.split_at(head.dim * head.width());
        if !state_is_valid(&head.params, z, n, counts) {
            return None;
        }
        let zn = Store::decode(
            &mut crate::format::Reader::new(&state[..2 * z.len()]),
            head.params.storage,
            head.dim,
        )?;
        Some(Self {
            params: head.params,
            zn,
            counts: counts.to_vec().into(),
            examples: head.examples,
        })
    }
}

/// What an encoded body says before the state: hyperparameters, examples seen, buckets, and
/// where the state (every `z`, every `n`, then the admission counters) starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    params: FtrlParams,
    examples: u64,
    dim: usize,
    /// Byte offset of the state in the body.
    state_at: usize,
}

impl Head {
    /// Longest encoded head (extended layout), bytes.
    pub(crate) const MAX_LEN: usize = 8 + 4 * 8 + 8 + 8 + 4 + 4 + 8 + 8;

    /// Parses the head of a body (only its first [`Head::MAX_LEN`] bytes are needed), with
    /// the hyperparameters validated.
    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        let mut r = crate::format::Reader::new(body);
        let extended = body.get(..8) == Some(&EXTENDED_TAG.to_le_bytes()[..]);
        if extended {
            r.u64()?;
        }
        let mut params = FtrlParams {
            alpha: r.f64()?,
            beta: r.f64()?,
            l1: r.f64()?,
            l2: r.f64()?,
            ..FtrlParams::default()
        };
        if extended {
            params.admit_probability = r.f64()?;
            params.seed = r.u64()?;
            params.admit_after = r.u32()?;
            params.storage = match r.u32()? {
                0 => WeightStorage::F32,
                1 => WeightStorage::F16,
                _ => return None,
            };
            if !params.extended() {
                return None;
            }
        }
        params.validate().ok()?;
        let examples = r.u64()?;
        let dim = usize::try_from(r.u64()?).ok()?;
        Some(Self {
            params,
            examples,
            dim,
            state_at: body.len() - r.remaining(),
        })
    }

    /// Bytes per stored `z` or `n` value.
    fn width(&self) -> usize {
        match self.params.storage {
            WeightStorage::F32 => 4,
            WeightStorage::F16 => 2,
        }
    }

    /// Bytes the state must take; `None` on overflow.
    pub(crate) fn state_len(&self) -> Option<usize> {
        let per_bucket = 2 * self.width() + usize::from(self.params.admission());
        self.dim.checked_mul(per_bucket)
    }
}

/// True when the state of a run of buckets is one a model can hold: `z` and `n` finite, `n`
/// (a sum of squared gradients) never negative, and, with admission on (`counts` not empty),
/// a bucket not admitted has a count of at most `admit_after` and no state. `z`, `n` and
/// `counts` are the encoded bytes of the same buckets.
pub(crate) fn state_is_valid(params: &FtrlParams, z: &[u8], n: &[u8], counts: &[u8]) -> bool {
    fn check(
        params: &FtrlParams,
        z: impl Iterator<Item = f32>,
        n: impl Iterator<Item = f32>,
        counts: &[u8],
    ) -> bool {
        let need = params.admit_after.max(1) as u8;
        let mut counts = counts.iter();
        for (zi, ni) in z.zip(n) {
            if !zi.is_finite() || !ni.is_finite() || ni < 0.0 {
                return false;
            }
            if let Some(&c) = counts.next()
                && c != ADMITTED
                && (c > need || zi != 0.0 || ni != 0.0)
            {
                return false;
            }
        }
        true
    }
    match params.storage {
        WeightStorage::F32 => {
            let f = |c: &[u8]| f32::from_le_bytes(c.try_into().expect("4 bytes"));
            check(
                params,
                z.chunks_exact(4).map(f),
                n.chunks_exact(4).map(f),
                counts,
            )
        }
        WeightStorage::F16 => {
            let f = |c: &[u8]| f16_to_f32(u16::from_le_bytes(c.try_into().expect("2 bytes")));
            check(
                params,
                z.chunks_exact(2).map(f),
                n.chunks_exact(2).map(f),
                counts,
            )
        }
    }
}

impl Model for Ftrl {
    fn kind(&self) -> ModelKind {
        ModelKind::Ftrl
    }

    fn dim(&self) -> usize {
        self.zn.dim()
    }

    fn predict(&self, x: &FeatureVector) -> f64 {
        sigmoid(self.margin(x))
    }

    fn learn(&mut self, x: &FeatureVector, y: f32) -> f64 {
        self.learn_inner(x, y, None)
    }

    fn is_finite(&self) -> bool {
        self.zn.zs_then_ns().all(|x| x.is_finite())
    }

    fn examples_seen(&self) -> u64 {
        self.examples
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let p = &self.params;
        out.reserve(80 + self.state_bytes());
        if p.extended() {
            out.extend_from_slice(&EXTENDED_TAG.to_le_bytes());
        }
        for v in [p.alpha, p.beta, p.l1, p.l2] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if p.extended() {
            out.extend_from_slice(&p.admit_probability.to_le_bytes());
            out.extend_from_slice(&p.seed.to_le_bytes());
            out.extend_from_slice(&p.admit_after.to_le_bytes());
            let storage: u32 = match p.storage {
                WeightStorage::F32 => 0,
                WeightStorage::F16 => 1,
            };
            out.extend_from_slice(&storage.to_le_bytes());
        }
        out.extend_from_slice(&self.examples.to_le_bytes());
        out.extend_from_slice(&(self.zn.dim() as u64).to_le_bytes());
        self.zn.encode(out);
        out.extend_from_slice(&self.counts);
    }

    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(self.clone())
    }

    fn learning_rate(&self) -> Option<f64> {
        Some(self.params.alpha)
    }

    /// `weights`: the weights of the buckets with state (an untouched bucket's is 0 and would
    /// drown the rest); `accumulators/sqrt_n`: √n of the same buckets, the root of the summed
    /// squared gradients each coordinate's learning rate is scaled by.
    fn inspect(&self, visit: &mut dyn FnMut(&str, &[f32])) {
        let live: Vec<usize> = (0..self.zn.dim())
            .filter(|&i| self.zn.z(i) != 0.0 || self.zn.n(i) != 0.0)
            .collect();
        let weights: Vec<f32> = live.iter().map(|&i| self.weight(i) as f32).collect();
        visit("weights", &weights);
        let sqrt_n: Vec<f32> = live.iter().map(|&i| self.zn.n(i).sqrt()).collect();
        visit("accumulators/sqrt_n", &sqrt_n);
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Parameter ids: `i` = the weight of bucket `i` (set through `z`, `n` kept).
impl Differentiable for Ftrl {
    fn loss_and_grad(&self, x: &FeatureVector, y: f32) -> (f64, Vec<(usize, f64)>) {
        let p = self.predict(x);
        let d = p - f64::from(y);
        let mut g = std::collections::BTreeMap::new();
        for (i, v) in x.iter() {
            if (i as usize) < self.zn.dim() {
                *g.entry(i as usize).or_insert(0.0) += d * f64::from(v);
            }
        }
        (crate::common::logloss(p, y), g.into_iter().collect())
    }

    fn param(&self, id: usize) -> f64 {
        self.weight(id)
    }

    fn set_param(&mut self, id: usize, value: f64) {
        let p = self.params;
        let denom = (p.beta + f64::from(self.zn.n(id)).sqrt()) / p.alpha + p.l2;
        let z = if value == 0.0 {
            0.0
        } else {
            -(value * denom + value.signum() * p.l1)
        };
        self.zn.set_z(id, z as f32);
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
            ..FtrlParams::default()
        };
        let mut m = Ftrl::new(params, 4);
        // first step: w = 0, p = 0.5, g = -0.5, sigma = 0.5 / 0.5 = 1, z = -0.5, n = 0.25
        m.learn(&fv(&[1]), 1.0);
        assert!((m.zn.z(1) as f64 + 0.5).abs() < 1e-7);
        assert!((m.zn.n(1) as f64 - 0.25).abs() < 1e-7);
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
            ..FtrlParams::default()
        };
        let mut m = Ftrl::new(params, 4);
        m.zn.set_z(0, 1.0);
        m.zn.set_z(1, -1.0); // n stays 0: both weights divide by zero
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
            m.zn.set_z(3, zi);
            m.zn.set_n(3, ni);
            let mut body = Vec::new();
            m.encode(&mut body);
            assert!(Ftrl::decode(&body).is_none(), "z={zi} n={ni} accepted");
        }
    }

    #[test]
    fn f16_conversion_round_trips_and_rounds_to_nearest_even() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan());
            } else if x.is_infinite() {
                assert_eq!(f32_to_f16(x), (h & 0x8000) | 0x7bff, "inf saturates");
            } else {
                assert_eq!(f32_to_f16(x), h, "{x}");
            }
        }
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(1e6), 0x7bff);
        assert_eq!(f32_to_f16(-1e30), 0xfbff);
        assert_eq!(f32_to_f16(1e-10), 0);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        // Smallest subnormal, and half of it (ties to even: 0).
        assert_eq!(f32_to_f16(2f32.powi(-24)), 1);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0);
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-25)), 1);
        // Every f32 lands on one of its two f16 neighbours, the nearer one.
        let mut s = 0x1234_5678u64;
        for _ in 0..100_000 {
            s = crate::common::mix64(s);
            let x = f32::from_bits(s as u32);
            if !x.is_finite() || x.abs() > 65504.0 {
                continue;
            }
            let y = f64::from(f16_to_f32(f32_to_f16(x)));
            let h = f32_to_f16(x);
            for nb in [h.wrapping_add(1), h.wrapping_sub(1)] {
                let o = f64::from(f16_to_f32(nb));
                if o.is_finite() && (nb & 0x8000) == (h & 0x8000) {
                    assert!((y - f64::from(x)).abs() <= (o - f64::from(x)).abs(), "{x}");
                }
            }
        }
    }

    fn toy_data() -> Vec<(FeatureVector, f32)> {
        toy_data_n(1000, 8)
    }

    fn toy_data_n(count: usize, keep: u64) -> Vec<(FeatureVector, f32)> {
        // Bias 0, two informative features and noise features.
        let mut out = Vec::new();
        let mut s = 7u64;
        for _ in 0..count {
            s = crate::common::mix64(s);
            let a = s & 1 == 1;
            let noise = 3 + ((s >> 8) % 5) as u32;
            let y = if (s >> 20) % 10 < keep { a } else { !a };
            let mut x = fv(&[0, if a { 1 } else { 2 }, noise]);
            x.values[2] = 0.5;
            out.push((x, f32::from(u8::from(y))));
        }
        out
    }

    #[test]
    fn f16_storage_predicts_like_f32_in_half_the_memory() {
        let p32 = FtrlParams::default();
        let p16 = FtrlParams {
            storage: WeightStorage::F16,
            ..p32
        };
        let (mut a, mut b) = (Ftrl::new(p32, 16), Ftrl::new(p16, 16));
        for (x, y) in toy_data() {
            a.learn(&x, y);
            b.learn(&x, y);
        }
        let gap = |a: &Ftrl, b: &Ftrl| {
            toy_data_n(50, 8)
                .iter()
                .map(|(x, _)| (a.predict(x) - b.predict(x)).abs())
                .fold(0.0f64, f64::max)
        };
        let worst = gap(&a, &b);
        assert!(worst < 1e-3, "f16 vs f32 prediction gap {worst}");
        // Longer runs drift further apart (f16 keeps 11 significant bits; the rounding noise
        // makes a different sample path, not a bias): measured 2.6e-3 after 20000 examples.
        let (mut la, mut lb) = (Ftrl::new(p32, 16), Ftrl::new(p16, 16));
        for (x, y) in toy_data_n(20_000, 8) {
            la.learn(&x, y);
            lb.learn(&x, y);
        }
        let long = gap(&la, &lb);
        assert!(
            long < 5e-3,
            "f16 vs f32 prediction gap after 20000 examples {long}"
        );
        assert!(a.predict(&fv(&[0, 1])) > 0.7);
        assert_eq!(b.state_bytes() * 2, a.state_bytes());
        // Round trip of the extended layout, and set_params converting back and forth.
        let mut body = Vec::new();
        b.encode(&mut body);
        assert_eq!(Ftrl::decode(&body).as_ref(), Some(&b));
        let mut c = b.clone();
        c.set_params(p32);
        assert_eq!(c.state_bytes(), a.state_bytes());
        assert_eq!(c.predict(&fv(&[0, 1])), b.predict(&fv(&[0, 1])));
        c.set_params(p16);
        assert_eq!(c, b);
    }

    #[test]
    fn counting_admission_keeps_rare_features_at_zero() {
        let params = FtrlParams {
            admit_after: 3,
            ..FtrlParams::default()
        };
        let mut m = Ftrl::new(params, 16);
        m.learn(&fv(&[5]), 1.0);
        m.learn(&fv(&[5, 6]), 1.0);
        assert_eq!(m.weight_at(5), 0.0);
        assert_eq!(m.weight_at(6), 0.0);
        assert_eq!((m.zn.z(5), m.zn.n(5)), (0.0, 0.0));
        m.learn(&fv(&[5]), 1.0); // third occurrence: admitted and learned from
        assert!(m.weight_at(5) > 0.0);
        assert_eq!(m.weight_at(6), 0.0);
        assert_eq!(m.counts[5], ADMITTED);
        assert_eq!(m.counts[6], 1);
        let mut body = Vec::new();
        m.encode(&mut body);
        assert_eq!(Ftrl::decode(&body).as_ref(), Some(&m));
        // A count past admit_after, or state on a bucket not admitted, is refused.
        let last = body.len() - 16 + 6;
        let mut bad = body.clone();
        bad[last] = 4;
        assert!(Ftrl::decode(&bad).is_none());
        let mut bad = m.clone();
        bad.zn.set_n(6, 1.0);
        let mut b = Vec::new();
        bad.encode(&mut b);
        assert!(Ftrl::decode(&b).is_none());
    }

    #[test]
    fn probabilistic_admission_is_reproducible_and_about_right() {
        let params = FtrlParams {
            admit_probability: 0.25,
            seed: 9,
            ..FtrlParams::default()
        };
        let run = || {
            let mut m = Ftrl::new(params, 4096);
            for i in 0..4000 {
                m.learn(&fv(&[i]), 1.0);
            }
            m
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        let admitted = (0..4000).filter(|&i| a.weight_at(i) != 0.0).count();
        assert!(
            (800..1200).contains(&admitted),
            "{admitted} of 4000 admitted"
        );
    }

    #[test]
    fn default_params_serialize_as_before_and_old_configs_parse() {
        let json = serde_json::to_string(&FtrlParams::default()).unwrap();
        assert_eq!(json, r#"{"alpha":0.1,"beta":1.0,"l1":0.0,"l2":1.0}"#);
        let back: FtrlParams = serde_json::from_str(r#"{"alpha":0.2}"#).unwrap();
        assert_eq!(back.storage, WeightStorage::F32);
        assert_eq!(back.admit_probability, 1.0);
        let p: FtrlParams =
            serde_json::from_str(r#"{"storage":"f16","admit_after":2,"admit_probability":0.5}"#)
                .unwrap();
        assert_eq!(p.storage, WeightStorage::F16);
        assert!(p.admission());
        let bad = FtrlParams {
            admit_after: 255,
            ..FtrlParams::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "admit_after");
        for p in [0.0, 1.5, f64::NAN] {
            let bad = FtrlParams {
                admit_probability: p,
                ..FtrlParams::default()
            };
            assert_eq!(bad.validate().unwrap_err().0, "admit_probability");
        }
    }

    #[test]
    fn extended_layout_with_default_options_is_refused() {
        // Canonical encoding: default options must use the original layout.
        let m = Ftrl::new(
            FtrlParams {
                seed: 1,
                ..FtrlParams::default()
            },
            4,
        );
        let mut body = Vec::new();
        m.encode(&mut body);
        assert!(Ftrl::decode(&body).is_some());
        body[48..56].copy_from_slice(&0u64.to_le_bytes()); // seed 0: nothing extended left
        assert!(Ftrl::decode(&body).is_none());
    }

    #[test]
    fn changing_admission_on_warm_start_keeps_a_loadable_state() {
        let p5 = FtrlParams {
            admit_after: 5,
            ..FtrlParams::default()
        };
        let mut m = Ftrl::new(FtrlParams::default(), 8);
        m.learn(&fv(&[1]), 1.0);
        m.set_params(p5);
        assert_eq!(m.counts[1], ADMITTED);
        assert_eq!(m.counts[2], 0);
        for _ in 0..4 {
            m.learn(&fv(&[2]), 1.0);
        }
        assert_eq!(m.counts[2], 4);
        m.set_params(FtrlParams {
            admit_after: 2,
            ..p5
        });
        assert_eq!(m.counts[2], 2);
        let mut body = Vec::new();
        m.encode(&mut body);
        assert_eq!(Ftrl::decode(&body).as_ref(), Some(&m));
        m.learn(&fv(&[2]), 1.0);
        assert!(m.weight_at(2) > 0.0);
        m.set_params(FtrlParams::default());
        assert!(m.counts.is_empty());
        let mut body = Vec::new();
        m.encode(&mut body);
        assert_eq!(Ftrl::decode(&body).as_ref(), Some(&m));
    }

    /// The scalar reference of one step: every weight from `weight_at` (recomputed after each
    /// earlier update of the same example), summed in feature order.
    fn reference_learn(m: &Ftrl, x: &FeatureVector, y: f32) -> (f64, Ftrl) {
        let margin = x
            .iter()
            .map(|(i, v)| m.weight_at(i as usize) * v as f64)
            .fold(-0.0, |a, b| a + b);
        let p = sigmoid(margin);
        let mut r = m.clone();
        let g = p - y as f64;
        for (i, v) in x.iter() {
            let i = i as usize;
            if i >= r.zn.dim() {
                continue;
            }
            let w = r.weight_at(i);
            let gi = g * v as f64;
            let n = r.zn.n(i) as f64;
            let sigma = ((n + gi * gi).sqrt() - n.sqrt()) / r.params.alpha;
            let z = (r.zn.z(i) as f64 + gi - sigma * w) as f32;
            let n = (n + gi * gi) as f32;
            let (uz, un) = rounding_draws(r.params.seed, i, r.examples);
            r.zn.set_z_stochastic(i, z, uz);
            r.zn.set_n_stochastic(i, n, un);
        }
        r.examples += 1;
        (p, r)
    }

    proptest::proptest! {
        /// The chunked (vectorized) weights give, bit for bit, the scalar sums and updates:
        /// examples longer than a chunk, repeated indices, indices outside the model, L1 on
        /// and off, both storages.
        #[test]
        fn chunked_weights_match_the_scalar_reference(
            l1 in proptest::sample::select(vec![0.0, 0.3, 2.0]),
            l2 in proptest::sample::select(vec![0.0, 1.0]),
            beta in proptest::sample::select(vec![0.0, 1.0]),
            f16 in proptest::bool::ANY,
            examples in proptest::collection::vec(
                (proptest::collection::vec((0u32..20, -2.0f32..2.0), 0..30), proptest::bool::ANY),
                1..40,
            ),
        ) {
            let params = FtrlParams {
                l1,
                l2,
                beta,
                storage: if f16 { WeightStorage::F16 } else { WeightStorage::F32 },
                ..FtrlParams::default()
            };
            let mut m = Ftrl::new(params, 16);
            for (entries, y) in &examples {
                let mut x = FeatureVector::default();
                for &(i, v) in entries {
                    x.push(i, v);
                }
                let y = f32::from(u8::from(*y));
                let (p_ref, m_ref) = reference_learn(&m, &x, y);
                proptest::prop_assert_eq!(m.predict(&x).to_bits(), p_ref.to_bits());
                proptest::prop_assert_eq!(m.learn(&x, y).to_bits(), p_ref.to_bits());
                proptest::prop_assert_eq!(&m, &m_ref);
            }
        }
    }
}
