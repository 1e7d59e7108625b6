//! Dense layers for the deep models: a fully connected layer on `ndarray` (batch forward and
//! backward through `general_mat_mul`, a scalar path for one example), ReLU, the Adam optimizer
//! and the small deterministic PRNG used for initialization (no `rand` dependency).

use ndarray::{Array1, Array2, ArrayView2, Axis, linalg::general_mat_mul};

/// SplitMix64: a tiny, fast, deterministic generator (Steele, Lea and Flood 2014), used for
/// weight initialization so that a seed fully determines a fresh model.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in `[-limit, limit)`.
    pub fn symmetric(&mut self, limit: f32) -> f32 {
        unit_to_symmetric(self.next_u64(), limit)
    }
}

/// The SplitMix64 finalizer: a bijective 64-bit mix.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps 64 random bits to a uniform value in `[-limit, limit)`.
pub fn unit_to_symmetric(bits: u64, limit: f32) -> f32 {
    // 24 random bits give every representable step of an f32 in [0, 1).
    let u = (bits >> 40) as f32 / (1u64 << 24) as f32;
    (2.0 * u - 1.0) * limit
}

/// Adam hyperparameters (Kingma and Ba 2015) for dense parameters; `l2` is added to the
/// gradient (`g + l2·w`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    /// Step size.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator smoothing.
    pub eps: f32,
    /// L2 regularization added to the gradient.
    pub l2: f32,
}

impl Adam {
    /// Adam with the usual constants (0.9, 0.999, 1e-8).
    pub fn new(lr: f32, l2: f32) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            l2,
        }
    }

    /// One bias-corrected step at step number `t >= 1` over parallel slices: the gradient used
    /// is `scale·g + l2·w`.
    pub fn step(&self, t: u64, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], scale: f32) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return self.step_avx2(t, w, g, m, v, scale);
        }
        self.step_portable(t, w, g, m, v, scale)
    }

    /// [`Self::step`] compiled for AVX2 (8 lanes instead of SSE2's 4 for the square roots and
    /// divisions that dominate it). The same operations in the same order (no fused
    /// multiply-add), so the same results bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    fn step_avx2(
        &self,
        t: u64,
        w: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        scale: f32,
    ) {
        #[target_feature(enable = "avx2")]
        fn kernel(
            adam: &Adam,
            t: u64,
            w: &mut [f32],
            g: &[f32],
            m: &mut [f32],
            v: &mut [f32],
            scale: f32,
        ) {
            adam.step_portable(t, w, g, m, v, scale)
        }
        // SAFETY: the caller checked that this CPU supports AVX2, the only requirement of a
        // `target_feature` function.
        unsafe { kernel(self, t, w, g, m, v, scale) }
    }

    #[inline(always)]
    fn step_portable(
        &self,
        t: u64,
        w: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        scale: f32,
    ) {
        let t = t.max(1) as f64;
        let bc1 = 1.0 - (self.beta1 as f64).powf(t);
        let bc2 = 1.0 - (self.beta2 as f64).powf(t);
        let lr_t = (self.lr as f64 * bc2.sqrt() / bc1) as f32;
        let (b1, b2) = (self.beta1, self.beta2);
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * scale + self.l2 * *w;
            let m_new = b1 * *m + (1.0 - b1) * g;
            let v_new = b2 * *v + (1.0 - b2) * g * g;
            // Subnormal moments become zero: a moment whose gradient stays zero decays into
            // the subnormal range in a few hundred steps (0.9^k) and then stays there (0.9 times
            // the smallest subnormal rounds back to it), and arithmetic on subnormals is
            // several times slower on many CPUs (a microcode assist per operation).
            *m = if m_new.abs() < f32::MIN_POSITIVE {
                0.0
            } else {
                m_new
            };
            *v = if v_new < f32::MIN_POSITIVE {
                0.0
            } else {
                v_new
            };
            *w -= lr_t * *m / (v.sqrt() + self.eps);
        }
    }
}

/// ReLU in place.
pub fn relu(a: &mut [f32]) {
    for x in a {
        *x = x.max(0.0);
    }
}

/// Backward of ReLU given its output `a`: zeroes `d` where the unit was inactive.
pub fn relu_backward(a: &[f32], d: &mut [f32]) {
    for (d, &a) in d.iter_mut().zip(a) {
        if a <= 0.0 {
            *d = 0.0;
        }
    }
}

/// A fully connected layer `y = x·W + b` with `W` of shape `input × output`, plus its Adam
/// moments.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseLayer {
    /// Weights, `input × output`, row-major.
    pub w: Array2<f32>,
    /// Bias, `output`.
    pub b: Array1<f32>,
    /// Adam first moment of `w`.
    pub mw: Array2<f32>,
    /// Adam second moment of `w`.
    pub vw: Array2<f32>,
    /// Adam first moment of `b`.
    pub mb: Array1<f32>,
    /// Adam second moment of `b`.
    pub vb: Array1<f32>,
}

impl DenseLayer {
    /// A layer with Glorot-uniform weights (limit `sqrt(6 / (input + output))`) and zero bias.
    pub fn new(input: usize, output: usize, rng: &mut SplitMix64) -> Self {
        let limit = (6.0 / (input + output).max(1) as f32).sqrt();
        let w = Array2::from_shape_fn((input, output), |_| rng.symmetric(limit));
        Self::from_parts(w, Array1::zeros(output))
    }

    /// A layer with the given parameters and zero optimizer state.
    pub fn from_parts(w: Array2<f32>, b: Array1<f32>) -> Self {
        let (i, o) = w.dim();
        Self {
            mw: Array2::zeros((i, o)),
            vw: Array2::zeros((i, o)),
            mb: Array1::zeros(o),
            vb: Array1::zeros(o),
            w,
            b,
        }
    }

    /// Input width.
    pub fn input(&self) -> usize {
        self.w.nrows()
    }

    /// Output width.
    pub fn output(&self) -> usize {
        self.w.ncols()
    }

    /// Batch forward: `out = x·W + b` for `x` of shape `batch × input`; `out` must be
    /// `batch × output`.
    pub fn forward(&self, x: ArrayView2<'_, f32>, out: &mut Array2<f32>) {
        general_mat_mul(1.0, &x, &self.w, 0.0, out);
        for mut row in out.rows_mut() {
            row += &self.b;
        }
    }

    /// Forward of one example without allocating: `out = x·W + b`.
    pub fn forward_one(&self, x: &[f32], out: &mut [f32]) {
        let out = &mut out[..self.output()];
        out.copy_from_slice(self.b.as_slice().unwrap_or(&[]));
        if let Some(w) = self.w.as_slice() {
            for (&xi, wrow) in x.iter().zip(w.chunks_exact(self.output().max(1))) {
                if xi != 0.0 {
                    for (o, &wij) in out.iter_mut().zip(wrow) {
                        *o += xi * wij;
                    }
                }
            }
        }
    }

    /// Batch backward for `dy = ∂L/∂y` (`batch × output`): writes `dw = xᵀ·dy`,
    /// `db = Σ_rows dy` and, when given, `dx = dy·Wᵀ` (`batch × input`).
    pub fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        dy: ArrayView2<'_, f32>,
        dw: &mut Array2<f32>,
        db: &mut Array1<f32>,
        dx: Option<&mut Array2<f32>>,
    ) {
        general_mat_mul(1.0, &x.t(), &dy, 0.0, dw);
        db.assign(&dy.sum_axis(Axis(0)));
        if let Some(dx) = dx {
            general_mat_mul(1.0, &dy, &self.w.t(), 0.0, dx);
        }
    }

    /// One Adam step with gradients `scale·dw`, `scale·db` at step number `t`.
    pub fn apply_adam(
        &mut self,
        adam: &Adam,
        t: u64,
        dw: &Array2<f32>,
        db: &Array1<f32>,
        scale: f32,
    ) {
        fn flat<D: ndarray::Dimension>(a: &mut ndarray::Array<f32, D>) -> &mut [f32] {
            a.as_slice_mut().unwrap_or(&mut [])
        }
        if let Some(g) = dw.as_slice() {
            adam.step(
                t,
                flat(&mut self.w),
                g,
                flat(&mut self.mw),
                flat(&mut self.vw),
                scale,
            );
        }
        if let Some(g) = db.as_slice() {
            adam.step(
                t,
                flat(&mut self.b),
                g,
                flat(&mut self.mb),
                flat(&mut self.vb),
                scale,
            );
        }
    }

    /// Iterates over every parameter and optimizer value.
    pub fn values(&self) -> impl Iterator<Item = f32> + '_ {
        self.w
            .iter()
            .chain(&self.b)
            .chain(&self.mw)
            .chain(&self.vw)
            .chain(&self.mb)
            .chain(&self.vb)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatched step (AVX2 where the CPU has it) gives exactly the portable step's values.
    #[test]
    fn adam_step_is_the_same_bit_for_bit_on_every_path() {
        let adam = Adam::new(0.01, 1e-4);
        let n = 1037; // not a multiple of any vector width
        let mut rng = SplitMix64::new(7);
        let mut r = || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        let g: Vec<f32> = (0..n).map(|_| r()).collect();
        let w0: Vec<f32> = (0..n).map(|_| r()).collect();
        let (mut w1, mut m1, mut v1) = (w0.clone(), vec![0.0; n], vec![0.0; n]);
        let (mut w2, mut m2, mut v2) = (w0.clone(), vec![0.0; n], vec![0.0; n]);
        for t in 1..=5 {
            adam.step(t, &mut w1, &g, &mut m1, &mut v1, 0.5);
            adam.step_portable(t, &mut w2, &g, &mut m2, &mut v2, 0.5);
        }
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&w1), bits(&w2));
        assert_eq!(bits(&m1), bits(&m2));
        assert_eq!(bits(&v1), bits(&v2));
        assert_ne!(bits(&w1), bits(&w0));
    }

    /// Moments left without gradient decay to zero, never into the subnormal range (where
    /// arithmetic is slow), on every path.
    #[test]
    fn moments_without_gradient_reach_zero_not_subnormals() {
        let adam = Adam::new(0.01, 0.0);
        let n = 19;
        for portable in [false, true] {
            let step = |t, w: &mut Vec<f32>, g: &[f32], m: &mut Vec<f32>, v: &mut Vec<f32>| {
                if portable {
                    adam.step_portable(t, w, g, m, v, 1.0)
                } else {
                    adam.step(t, w, g, m, v, 1.0)
                }
            };
            let (mut w, mut m, mut v) = (vec![0.5f32; n], vec![0.0; n], vec![0.0; n]);
            step(1, &mut w, &[1e-3; 19], &mut m, &mut v);
            let zero = [0.0; 19];
            for t in 2..80_000 {
                step(t, &mut w, &zero, &mut m, &mut v);
                assert!(
                    m.iter().chain(&v).all(|x| *x == 0.0 || x.is_normal()),
                    "step {t}: {m:?} {v:?}"
                );
            }
            assert!(m.iter().chain(&v).all(|x| *x == 0.0));
            assert!(w.iter().all(|x| x.is_finite()));
        }
    }

    /// L = Σ (x·W + b) ⊙ r, so ∂L/∂y = r.
    fn loss(layer: &DenseLayer, x: &Array2<f32>, r: &Array2<f32>) -> f64 {
        let mut y = Array2::zeros((x.nrows(), layer.output()));
        layer.forward(x.view(), &mut y);
        y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    #[test]
    fn dense_gradients_match_finite_differences() {
        let mut rng = SplitMix64::new(7);
        let mut layer = DenseLayer::new(5, 3, &mut rng);
        layer.b = Array1::from_shape_fn(3, |_| rng.symmetric(0.5));
        let mut x = Array2::from_shape_fn((4, 5), |_| rng.symmetric(1.0));
        let r = Array2::from_shape_fn((4, 3), |_| rng.symmetric(1.0));
        let mut dw = Array2::zeros((5, 3));
        let mut db = Array1::zeros(3);
        let mut dx = Array2::zeros((4, 5));
        layer.backward(x.view(), r.view(), &mut dw, &mut db, Some(&mut dx));
        let h = 1e-2f32;
        let close = |num: f64, ana: f32| (num - ana as f64).abs() <= 1e-3 * (1.0 + num.abs());
        for i in 0..5 {
            for j in 0..3 {
                let orig = layer.w[[i, j]];
                layer.w[[i, j]] = orig + h;
                let up = loss(&layer, &x, &r);
                layer.w[[i, j]] = orig - h;
                let down = loss(&layer, &x, &r);
                layer.w[[i, j]] = orig;
                let num = (up - down) / (2.0 * h as f64);
                assert!(
                    close(num, dw[[i, j]]),
                    "dW[{i},{j}] {num} vs {}",
                    dw[[i, j]]
                );
            }
        }
        for j in 0..3 {
            let orig = layer.b[j];
            layer.b[j] = orig + h;
            let up = loss(&layer, &x, &r);
            layer.b[j] = orig - h;
            let down = loss(&layer, &x, &r);
            layer.b[j] = orig;
            let num = (up - down) / (2.0 * h as f64);
            assert!(close(num, db[j]), "db[{j}] {num} vs {}", db[j]);
        }
        for b in 0..4 {
            for i in 0..5 {
                let orig = x[[b, i]];
                x[[b, i]] = orig + h;
                let up = loss(&layer, &x, &r);
                x[[b, i]] = orig - h;
                let down = loss(&layer, &x, &r);
                x[[b, i]] = orig;
                let num = (up - down) / (2.0 * h as f64);
                assert!(
                    close(num, dx[[b, i]]),
                    "dX[{b},{i}] {num} vs {}",
                    dx[[b, i]]
                );
            }
        }
    }

    #[test]
    fn forward_one_matches_batch_forward() {
        let mut rng = SplitMix64::new(3);
        let layer = DenseLayer::new(6, 4, &mut rng);
        let x = Array2::from_shape_fn((1, 6), |_| rng.symmetric(1.0));
        let mut y = Array2::zeros((1, 4));
        layer.forward(x.view(), &mut y);
        let mut one = [0.0f32; 4];
        layer.forward_one(x.as_slice().unwrap(), &mut one);
        for j in 0..4 {
            assert!((one[j] - y[[0, j]]).abs() < 1e-5);
        }
    }

    #[test]
    fn relu_and_its_backward() {
        let mut a = [-1.0, 0.0, 2.0];
        relu(&mut a);
        assert_eq!(a, [0.0, 0.0, 2.0]);
        let mut d = [1.0, 1.0, 1.0];
        relu_backward(&a, &mut d);
        assert_eq!(d, [0.0, 0.0, 1.0]);
    }

    #[test]
    fn adam_minimizes_a_quadratic() {
        let adam = Adam::new(0.1, 0.0);
        let (mut w, mut m, mut v) = ([3.0f32, -2.0], [0.0f32; 2], [0.0f32; 2]);
        for t in 1..=500 {
            let g = [2.0 * w[0], 2.0 * w[1]];
            adam.step(t, &mut w, &g, &mut m, &mut v, 1.0);
        }
        assert!(w[0].abs() < 0.05 && w[1].abs() < 0.05, "{w:?}");
    }

    #[test]
    fn prng_is_deterministic_and_bounded() {
        let (mut a, mut b) = (SplitMix64::new(1), SplitMix64::new(1));
        for _ in 0..1000 {
            let x = a.symmetric(0.5);
            assert_eq!(x, b.symmetric(0.5));
            assert!((-0.5..0.5).contains(&x));
        }
    }
}
