//! Pieces shared by the factorization models: canonical sparse entries, AdaGrad, a PRNG.

use evergreen_core::FeatureVector;
use std::cell::RefCell;

/// Largest number of `f32`s (parameters plus optimizer state) a factorization model may hold
/// (2^31 floats = 8 GiB), so that a typo in `hash_bits`, `k` or the field count fails with a
/// clear error instead of an allocation failure.
pub const MAX_STATE_FLOATS: u64 = 1 << 31;

/// Largest number of latent factors `k`.
pub const MAX_FACTORS: u32 = 1024;

/// Why a factorization model cannot be built with a given shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// A hyperparameter is out of range (the field name and the rule).
    #[error("model parameter {0}: {1}")]
    Param(&'static str, String),
    /// The model needs at least one field.
    #[error("a field-aware model needs at least one field")]
    NoFields,
    /// The state would be larger than [`MAX_STATE_FLOATS`].
    #[error(
        "model state of {floats} floats (dim {dim} x {per_bucket} per bucket) exceeds the cap of \
         {MAX_STATE_FLOATS} floats; lower hash_bits, k or the number of fields"
    )]
    TooLarge {
        /// Hash buckets.
        dim: usize,
        /// Floats per bucket.
        per_bucket: u64,
        /// Total floats requested (saturated).
        floats: u64,
    },
}

/// Checks `dim * per_bucket <= MAX_STATE_FLOATS`.
pub(crate) fn check_size(dim: usize, per_bucket: u64) -> Result<usize, ShapeError> {
    let floats = (dim as u64).saturating_mul(per_bucket);
    if floats > MAX_STATE_FLOATS {
        return Err(ShapeError::TooLarge {
            dim,
            per_bucket,
            floats,
        });
    }
    Ok(floats as usize)
}

/// One entry of a canonicalized feature vector: unique `(idx, field)`, non-zero finite value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Entry {
    pub idx: u32,
    pub field: u32,
    pub val: f64,
}

/// Canonical form of `x` used by the factorization models, so that a vector with repeated
/// indices means exactly the dense vector where repeated entries add up:
///
/// - entries with an index `>= dim` or a non-finite value are ignored;
/// - the field is 0 when `fields` is `None` (FM), else the entry's field id clamped to
///   `fields - 1` (a missing field id reads as 0);
/// - entries with the same `(index, field)` are merged by adding their values (in f64), and
///   entries whose value is then 0 are dropped;
/// - the result is sorted by `(index, field)`, so the prediction does not depend on the order
///   of the entries.
pub(crate) fn canonicalize(
    x: &FeatureVector,
    dim: usize,
    fields: Option<usize>,
    out: &mut Vec<Entry>,
) {
    out.clear();
    for (pos, (&i, &v)) in x.indices.iter().zip(&x.values).enumerate() {
        if i as usize >= dim || v == 0.0 || !v.is_finite() {
            continue;
        }
        let field = match fields {
            None => 0,
            Some(nf) => {
                let f = x.fields.get(pos).copied().unwrap_or(0) as usize;
                f.min(nf.saturating_sub(1)) as u32
            }
        };
        out.push(Entry {
            idx: i,
            field,
            val: f64::from(v),
        });
    }
    if out.len() > 1 {
        out.sort_unstable_by_key(|e| (u64::from(e.idx) << 32) | u64::from(e.field));
        let mut w = 0;
        for r in 1..out.len() {
            if out[r].idx == out[w].idx && out[r].field == out[w].field {
                out[w].val += out[r].val;
            } else {
                w += 1;
                out[w] = out[r];
            }
        }
        out.truncate(w + 1);
    }
    out.retain(|e| e.val != 0.0);
}

/// Per-thread scratch for `predict(&self)` (which cannot use the model's own buffers).
#[derive(Debug, Clone, Default)]
pub(crate) struct Scratch {
    pub entries: Vec<Entry>,
    pub sums: Vec<f64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (fresh ones if they are already borrowed).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// One AdaGrad step on a parameter: `acc += g^2; w -= lr * g / sqrt(acc)`. The step is at most
/// `lr` in magnitude, so parameters stay finite; when `acc` is 0 or not finite the parameter is
/// left as it is (a non-finite accumulator makes `is_finite` false, and the gate refuses it).
#[inline(always)]
pub(crate) fn adagrad(w: &mut f32, acc: &mut f32, g: f64, lr: f64) {
    let a = f64::from(*acc) + g * g;
    *acc = a as f32;
    if a > 0.0 && a.is_finite() {
        *w = (f64::from(*w) - lr * g / a.sqrt()) as f32;
    }
}

/// [`adagrad`] in f32 arithmetic, branch-free so the factor loop vectorizes. Same guard: the
/// parameter moves only when the new accumulator is positive and finite (so a non-finite
/// gradient never reaches a parameter).
#[inline(always)]
pub(crate) fn adagrad_f32(w: &mut f32, acc: &mut f32, g: f32, lr: f32) {
    let a = *acc + g * g;
    *acc = a;
    let step = lr * g / a.sqrt();
    *w = if a > 0.0 && a.is_finite() {
        *w - step
    } else {
        *w
    };
}

/// Binary logloss of probability `p` for label `y` (0 or 1), with `p` kept off 0 and 1.
pub fn logloss(p: f64, y: f32) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-15);
    if y > 0.5 { -p.ln() } else { -(1.0 - p).ln() }
}

/// splitmix64 (Steele, Lea, Flood 2014): a tiny, portable PRNG for deterministic initialization.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// splitmix64's finalizer: a bijective 64-bit mix.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// True when every value is finite and every accumulator (`acc(i)` true) is `>= 0`.
pub(crate) fn state_ok(v: &[f32], is_acc: impl Fn(usize) -> bool) -> bool {
    v.iter()
        .enumerate()
        .all(|(i, &x)| x.is_finite() && (!is_acc(i) || x >= 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_merges_sorts_and_filters() {
        let mut x = FeatureVector::default();
        x.push_field(1, 5, 1.0);
        x.push_field(0, 2, 2.0);
        x.push_field(1, 5, 0.5);
        x.push_field(9, 3, 1.0); // field clamped to 2
        x.push_field(0, 100, 1.0); // out of range index
        x.push_field(0, 4, f32::NAN);
        x.push_field(0, 7, 1.0);
        x.push_field(0, 7, -1.0); // sums to zero
        let mut out = Vec::new();
        canonicalize(&x, 10, Some(3), &mut out);
        let got: Vec<_> = out.iter().map(|e| (e.idx, e.field, e.val)).collect();
        assert_eq!(got, vec![(2, 0, 2.0), (3, 2, 1.0), (5, 1, 1.5)]);
        canonicalize(&x, 10, None, &mut out);
        let got: Vec<_> = out.iter().map(|e| (e.idx, e.field, e.val)).collect();
        assert_eq!(got, vec![(2, 0, 2.0), (3, 0, 1.0), (5, 0, 1.5)]);
    }

    #[test]
    fn adagrad_step_is_bounded_by_the_rate() {
        let (mut w, mut a) = (0.0f32, 0.0f32);
        adagrad(&mut w, &mut a, 1e30, 0.1);
        assert!((w + 0.1).abs() < 1e-6);
        let (mut w, mut a) = (0.5f32, 0.0f32);
        adagrad(&mut w, &mut a, 0.0, 0.1);
        assert_eq!(w, 0.5);
    }
}
