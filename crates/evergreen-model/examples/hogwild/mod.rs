//! The synthetic stream and the timing loop shared by the Hogwild examples (`ftrl_parallel`,
//! `fm_parallel`): 20 Zipf-like hashed features over 2^20 buckets, batches of 16384, 3 passes.

use evergreen_core::FeatureVector;
use evergreen_model::{Model, SplitMix64, sigmoid};
use std::time::Instant;

pub const DIM: u32 = 1 << 20;
pub const FEATURES: usize = 20;
pub const BATCH: usize = 16_384;
pub const PASSES: usize = 3;

fn hash(a: u64) -> u64 {
    let mut z = a.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn stream(n: usize, seed: u64) -> (Vec<FeatureVector>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|_| {
            let mut x = FeatureVector::with_capacity(FEATURES);
            if std::env::var_os("NO_BIAS").is_none() {
                x.push(0, 1.0);
            }
            let mut margin = -1.0f64;
            for f in 1..FEATURES as u64 {
                // Zipf-like id within a per-field cardinality of 10^2 .. 10^5
                let card = 10f64.powi(2 + (f % 4) as i32);
                let id = card.powf(unit()).floor() as u64;
                let h = hash((f << 40) ^ id);
                x.push((h % u64::from(DIM)) as u32, 1.0);
                margin += ((h >> 40) % 9) as f64 / 9.0 - 0.45;
            }
            let y = f32::from(u8::from(unit() < sigmoid(margin)));
            (x, y)
        })
        .unzip()
}

pub fn logloss(preds: &[f64], ys: &[f32]) -> f64 {
    preds
        .iter()
        .zip(ys)
        .map(|(&p, &y)| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            if y > 0.5 { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum::<f64>()
        / preds.len() as f64
}

/// Times `PASSES` passes over `xs` for the sequential path (`threads` 0) and each thread count,
/// printing examples/s and the last pass's progressive logloss; `parallel` is the model's
/// `learn_parallel`.
pub fn compare<M: Model>(
    xs: &[FeatureVector],
    ys: &[f32],
    thread_counts: &[usize],
    make: impl Fn() -> M,
    parallel: impl Fn(&mut M, &[FeatureVector], &[f32], usize, &mut Vec<f64>),
) {
    let n = xs.len();
    for &threads in thread_counts {
        let mut m = make();
        let mut preds = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..PASSES {
            preds.clear();
            for (cx, cy) in xs.chunks(BATCH).zip(ys.chunks(BATCH)) {
                if threads == 0 {
                    m.learn_batch(cx, cy, &mut preds);
                } else {
                    parallel(&mut m, cx, cy, threads, &mut preds);
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let name = if threads == 0 {
            "learn_batch (sequential)".to_string()
        } else {
            format!("learn_parallel, {threads} thread(s)")
        };
        println!(
            "{name:<28} {:>10.0} examples/s   last-pass progressive logloss {:.4}",
            (n * PASSES) as f64 / secs,
            logloss(&preds, ys)
        );
        assert!(m.is_finite());
    }
}
