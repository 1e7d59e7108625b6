//! Hogwild-style parallel training of [`Fm`], as for FTRL (`ftrl/parallel.rs`; Recht et al.,
//! "Hogwild!", NIPS 2011): a batch is split into contiguous shards, one per thread, and every
//! thread runs the ordinary per-example AdaGrad update of
//! [`Model::learn`](crate::Model::learn) on the shared bias and rows without locks.
//!
//! Sharing is data-race free: for the duration of the call the `f32` state (held through
//! `&mut self`) is viewed as [`AtomicU32`]s (`crate::hogwild`), read and written with `Relaxed`
//! loads and stores (plain loads and stores on the usual targets). A thread computes the margin
//! from the shared values, then steps each parameter it touches: load the parameter and its
//! AdaGrad accumulator, apply the same step as `learn`, store both. Two threads updating the
//! same parameter (or the bias, which every example updates) at once may lose one of the two
//! updates, or pair a parameter with the other thread's accumulator: the Hogwild trade, a small
//! amount of noise with sparse features. Every value stored is one computed by the AdaGrad step
//! from values some thread wrote, never a torn mix, so accumulators stay positive and
//! parameters finite, and the state always loads.
//!
//! With one thread the result is exactly that of
//! [`Model::learn_batch`](crate::Model::learn_batch) (bit for bit). Scratch buffers (canonical
//! entries, factor sums) are per thread.

use super::Fm;
use crate::common::{Entry, Scratch, adagrad, adagrad_f32, canonicalize};
use crate::hogwild::atomic_view;
use crate::{FmParams, sigmoid};
use evergreen_core::FeatureVector;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// What one thread updates: shared views plus the (copied) shape and hyperparameters.
#[derive(Clone, Copy)]
struct Worker<'a> {
    params: FmParams,
    k: usize,
    dim: usize,
    /// `[w0, acc(w0)]`.
    bias: &'a [AtomicU32],
    rows: &'a [AtomicU32],
}

#[inline(always)]
fn get(a: &AtomicU32) -> f32 {
    f32::from_bits(a.load(Relaxed))
}

#[inline(always)]
fn set(a: &AtomicU32, x: f32) {
    a.store(x.to_bits(), Relaxed);
}

impl Worker<'_> {
    fn stride(&self) -> usize {
        2 + 2 * self.k
    }

    fn row(&self, idx: u32) -> Option<&[AtomicU32]> {
        let stride = self.stride();
        let o = idx as usize * stride;
        self.rows.get(o..o + stride)
    }

    /// `Fm::margin` on the shared state (same arithmetic, same order).
    fn margin(&self, e: &[Entry], sums: &mut Vec<f64>) -> f64 {
        let k = self.k;
        sums.clear();
        sums.resize(k, 0.0);
        let mut lin = f64::from(get(&self.bias[0]));
        let mut sq = 0.0;
        for en in e {
            let Some(row) = self.row(en.idx) else {
                continue;
            };
            let x = en.val;
            lin += f64::from(get(&row[0])) * x;
            for (s, v) in sums.iter_mut().zip(&row[2..2 + k]) {
                let vx = f64::from(get(v)) * x;
                *s += vx;
                sq += vx * vx;
            }
        }
        let pair: f64 = sums.iter().map(|s| s * s).sum();
        lin + 0.5 * (pair - sq)
    }

    /// `Fm::learn` of one example on the shared state. Each parameter is loaded together with
    /// its accumulator just before its step and stored right after (the narrowest race window;
    /// measured faster than copying whole rows). The arithmetic is that of `update_row`, kept in
    /// step with it by the bit-identity test.
    fn learn(&self, x: &FeatureVector, y: f32, s: &mut Scratch) -> f64 {
        canonicalize(x, self.dim, None, &mut s.entries);
        let p = sigmoid(self.margin(&s.entries, &mut s.sums));
        let d = p - f64::from(y);
        let FmParams {
            lr,
            l2_linear,
            l2_factors,
            ..
        } = self.params;
        let (mut w0, mut a0) = (get(&self.bias[0]), get(&self.bias[1]));
        adagrad(&mut w0, &mut a0, d, lr);
        set(&self.bias[0], w0);
        set(&self.bias[1], a0);
        let k = self.k;
        let lrf = lr as f32;
        for en in &s.entries {
            let Some(row) = self.row(en.idx) else {
                continue;
            };
            let x = en.val;
            let (mut w, mut a) = (get(&row[0]), get(&row[1]));
            let gw = d * x + l2_linear * f64::from(w);
            adagrad(&mut w, &mut a, gw, lr);
            set(&row[0], w);
            set(&row[1], a);
            let (v, acc) = row[2..].split_at(k);
            for ((v, acc), &sf) in v.iter().zip(acc).zip(&s.sums) {
                let (mut vv, mut aa) = (get(v), get(acc));
                let vf = f64::from(vv);
                let g = d * x * (sf - vf * x) + l2_factors * vf;
                adagrad_f32(&mut vv, &mut aa, g as f32, lrf);
                set(v, vv);
                set(acc, aa);
            }
        }
        p
    }

    fn learn_shard(&self, xs: &[FeatureVector], ys: &[f32], preds: &mut Vec<f64>) {
        let mut scratch = Scratch::default();
        for (x, &y) in xs.iter().zip(ys) {
            preds.push(self.learn(x, y, &mut scratch));
        }
    }
}

impl Fm {
    /// Learns a batch on `threads` threads, Hogwild-style (see the module documentation): the
    /// batch is cut into `threads` contiguous shards learned concurrently, each example with the
    /// ordinary AdaGrad update, on the shared state without locks. Appends one pre-update
    /// prediction per example to `preds`, in batch order (each is the prediction its thread
    /// made just before that example's update).
    ///
    /// `threads` is capped at the batch size; with 1 (or 0) the batch is learned on the calling
    /// thread, bit-identical to [`Model::learn_batch`](crate::Model::learn_batch). Threads are
    /// spawned per call (`std::thread::scope`), so batches should be large (thousands of
    /// examples) for the parallelism to pay.
    pub fn learn_parallel(
        &mut self,
        xs: &[FeatureVector],
        ys: &[f32],
        threads: usize,
        preds: &mut Vec<f64>,
    ) {
        let b = xs.len().min(ys.len());
        if b == 0 {
            return;
        }
        let (xs, ys) = (&xs[..b], &ys[..b]);
        let threads = threads.clamp(1, b);
        let worker = Worker {
            params: self.params,
            k: self.k,
            dim: self.dim,
            bias: atomic_view(&mut self.bias),
            rows: atomic_view(&mut self.rows),
        };
        crate::hogwild::run_shards(xs, ys, threads, preds, |_, cx, cy, out| {
            worker.learn_shard(cx, cy, out)
        });
        self.examples += b as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Model;
    use crate::dense::SplitMix64;

    const DIM: usize = 1 << 12;

    /// A learnable stream with interactions: 20 features per example (a bias and 19 hashed ids),
    /// labels from a hidden model with linear weights and a pairwise term between the first two
    /// ids.
    fn stream(n: usize, seed: u64) -> (Vec<FeatureVector>, Vec<f32>) {
        let truth = |i: u32| {
            let h = crate::dense::mix64(u64::from(i) ^ 0xABCD);
            ((h >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * 3.0
        };
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                let mut x = FeatureVector::default();
                x.push(0, 1.0);
                let mut margin = -0.3;
                let mut ids = Vec::with_capacity(19);
                for _ in 0..19 {
                    let r = rng.next_u64();
                    let i = if r & 1 == 0 {
                        1 + (r >> 1) as u32 % 64
                    } else {
                        1 + (r >> 1) as u32 % (DIM as u32 - 1)
                    };
                    ids.push(i);
                    let v = if r & 2 == 0 { 1.0 } else { 0.5 };
                    x.push(i, v);
                    margin += truth(i) * f64::from(v) / 4.0;
                }
                margin += 0.5 * truth(ids[0]) * truth(ids[1]);
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                (x, f32::from(u8::from(u < sigmoid(margin))))
            })
            .unzip()
    }

    fn logloss(m: &Fm, xs: &[FeatureVector], ys: &[f32]) -> f64 {
        xs.iter()
            .zip(ys)
            .map(|(x, &y)| crate::common::logloss(m.predict(x), y))
            .sum::<f64>()
            / xs.len() as f64
    }

    fn encoded(m: &Fm) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        out
    }

    fn settings() -> Vec<FmParams> {
        vec![
            FmParams::default(),
            FmParams {
                k: 3,
                lr: 0.1,
                init_std: 0.05,
                l2_linear: 1e-4,
                l2_factors: 1e-3,
                seed: 5,
            },
        ]
    }

    #[test]
    fn one_thread_is_bit_identical_to_learn_batch() {
        let (mut xs, ys) = stream(3000, 1);
        // repeated indices and out-of-range ones go through canonicalization as in `learn`
        xs[7].push(DIM as u32 + 3, 1.0);
        let again = xs[8].indices[2];
        xs[8].push(again, -0.25);
        for params in settings() {
            let mut a = Fm::new(params, DIM, 1);
            let mut b = Fm::new(params, DIM, 1);
            let (mut pa, mut pb) = (Vec::new(), Vec::new());
            for (i, (cx, cy)) in xs.chunks(500).zip(ys.chunks(500)).enumerate() {
                a.learn_batch(cx, cy, &mut pa);
                // 0 means 1 as well
                b.learn_parallel(cx, cy, i % 2, &mut pb);
            }
            let bits = |p: &[f64]| p.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&pa), bits(&pb), "{params:?}");
            assert_eq!(encoded(&a), encoded(&b), "{params:?}");
            assert_eq!(b.examples_seen(), 3000);
        }
    }

    #[test]
    fn two_threads_learn_as_well_as_one() {
        let (xs, ys) = stream(40_000, 2);
        let (tx, ty) = stream(5_000, 3);
        for params in settings() {
            let mut seq = Fm::new(params, DIM, 1);
            let mut par = Fm::new(params, DIM, 1);
            let before = logloss(&seq, &tx, &ty);
            let (mut ps, mut pp) = (Vec::new(), Vec::new());
            for (cx, cy) in xs.chunks(4096).zip(ys.chunks(4096)) {
                seq.learn_batch(cx, cy, &mut ps);
                par.learn_parallel(cx, cy, 2, &mut pp);
            }
            assert_eq!(pp.len(), xs.len());
            assert!(pp.iter().all(|p| (0.0..=1.0).contains(p)));
            assert!(par.is_finite());
            assert_eq!(par.examples_seen(), seq.examples_seen());
            assert_eq!(par.examples_seen(), xs.len() as u64);
            let (ls, lp) = (logloss(&seq, &tx, &ty), logloss(&par, &tx, &ty));
            println!("{params:?}: {before:.4} -> sequential {ls:.4}, 2 threads {lp:.4}");
            assert!(
                ls < before - 0.03,
                "{params:?}: sequential {before} -> {ls}"
            );
            assert!(
                (lp - ls).abs() < 0.005,
                "{params:?}: parallel {lp} vs sequential {ls}"
            );
            // The parallel model is an ordinary model: it saves and loads.
            let (_, back) = crate::load(&crate::save(&par, 1)).expect("loads");
            assert_eq!(back.predict(&tx[0]), par.predict(&tx[0]));
            assert_eq!(back.examples_seen(), par.examples_seen());
        }
    }

    #[test]
    fn odd_shapes_and_heavy_contention() {
        let (xs, ys) = stream(5, 4);
        let mut m = Fm::new(FmParams::default(), DIM, 1);
        let mut p = vec![-1.0];
        m.learn_parallel(&xs, &ys, 64, &mut p);
        assert_eq!(p.len(), 6);
        assert_eq!(p[0], -1.0);
        m.learn_parallel(&[], &[], 2, &mut p);
        m.learn_parallel(&xs, &ys[..3], 2, &mut p);
        assert_eq!(p.len(), 9);
        assert_eq!(m.examples_seen(), 8);
        // Indices outside the model are ignored, as by `learn`.
        let mut x = FeatureVector::default();
        x.push(DIM as u32 + 5, 1.0);
        m.learn_parallel(&[x.clone(), x], &[1.0, 0.0], 2, &mut p);
        // Four threads on a few buckets: every update races; the state stays loadable.
        let (xs, ys): (Vec<_>, Vec<_>) = (0..8000u32)
            .map(|j| {
                let mut x = FeatureVector::default();
                for f in 0..20 {
                    x.push((j + f) % 24, 1.0);
                }
                (x, f32::from(u8::from(j % 3 == 0)))
            })
            .unzip();
        m.learn_parallel(&xs, &ys, 4, &mut p);
        assert!(p[1..].iter().all(|p| (0.0..=1.0).contains(p)));
        assert!(m.is_finite());
        assert_eq!(m.examples_seen(), 8010);
        crate::load(&crate::save(&m, 1)).expect("a raced state loads");
    }
}
