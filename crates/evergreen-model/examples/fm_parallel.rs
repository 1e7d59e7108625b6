//! Throughput of Hogwild-style parallel FM (`Fm::learn_parallel`, k = 8, default AdaGrad
//! parameters) against the sequential `learn_batch`:
//! `cargo run --release -p evergreen-model --example fm_parallel [examples]`.
//!
//! Synthetic stream: 20 features per example (a bias and 19 hashed ids, Zipf-like, over 2^20
//! buckets), labels from a hidden logistic model; batches of 16384; 3 passes per setting. Prints
//! examples/s and the progressive logloss of the last pass for the sequential path and for 1
//! and 2 threads (the speed-up is bounded by the cores actually free: on a shared machine,
//! expect less than the core count). Every example also updates the FM's global bias `w0`, the
//! one hot spot the Hogwild threads contend on (its cache line moves between cores on every
//! example); `NO_BIAS=1` drops the bias feature (bucket 0), which is an ordinary feature.
use evergreen_core::FeatureVector;
use evergreen_model::{Fm, FmParams, Model, SplitMix64, sigmoid};
use std::time::Instant;

const DIM: u32 = 1 << 20;
const FEATURES: usize = 20;
const BATCH: usize = 16_384;
const PASSES: usize = 3;

fn hash(a: u64) -> u64 {
    let mut z = a.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn stream(n: usize, seed: u64) -> (Vec<FeatureVector>, Vec<f32>) {
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

fn logloss(preds: &[f64], ys: &[f32]) -> f64 {
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

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300_000);
    let (xs, ys) = stream(n, 1);
    println!(
        "{n} examples x {FEATURES} features, 2^20 buckets, k = 8, batches of {BATCH}, \
         {PASSES} passes, {} CPUs visible",
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    for threads in [0usize, 1, 2] {
        let mut m = Fm::new(FmParams::default(), DIM as usize, 1);
        let mut preds = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..PASSES {
            preds.clear();
            for (cx, cy) in xs.chunks(BATCH).zip(ys.chunks(BATCH)) {
                if threads == 0 {
                    m.learn_batch(cx, cy, &mut preds);
                } else {
                    m.learn_parallel(cx, cy, threads, &mut preds);
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
            logloss(&preds, &ys)
        );
        assert!(m.is_finite());
    }
}
