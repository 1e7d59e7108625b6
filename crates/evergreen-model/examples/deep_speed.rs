//! Throughput and latency of the deep models on a synthetic CTR-like stream:
//! `cargo run --release -p evergreen-model --example deep_speed [examples [batch [threads]]]`.
//!
//! 10 categorical fields (Zipf-like ids) + 5 numeric fields + bias, 2^20 hash buckets,
//! hidden [64, 32], embedding_dim 8, batches of 256 (default), single thread (default; more
//! threads run `Deep::learn_parallel`). Prints training examples/s,
//! progressive logloss, the median / p99 latency of one `predict` and the load time of the
//! saved file, for wide_deep, deepfm and dcn (2 cross layers).
use evergreen_core::FeatureVector;
use evergreen_model::{Deep, DeepParams, DeepVariant, Model, SplitMix64, load, save};
use std::time::Instant;

const DIM: u32 = 1 << 20;
const CAT: usize = 10;
const NUM: usize = 5;
const FIELDS: usize = 1 + CAT + NUM;

fn stream(n: usize, seed: u64) -> (Vec<FeatureVector>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|_| {
            let mut x = FeatureVector::with_capacity(FIELDS);
            x.push_field(0, 0, 1.0);
            let mut logit = -1.0f64;
            let mut first = 0u64;
            for f in 0..CAT {
                // Zipf-like: id = floor(card^u) over a per-field cardinality
                let card = 10f64.powi(2 + (f % 4) as i32);
                let id = card.powf(unit()).floor() as u64;
                if f == 0 {
                    first = id;
                }
                let h = evergreen_model_hash(f as u64, id);
                x.push_field(1 + f as u16, (h % DIM as u64) as u32, 1.0);
                // label signal: per-id effects and an interaction with field 0
                logit += ((h >> 40) % 7) as f64 / 7.0 - 0.43;
                if f == 1 && (id + first).is_multiple_of(3) {
                    logit += 1.0;
                }
            }
            for j in 0..NUM {
                let v = (unit() * 2.0 - 1.0) as f32;
                let h = evergreen_model_hash(100 + j as u64, 0);
                x.push_field(1 + (CAT + j) as u16, (h % DIM as u64) as u32, v);
                logit += 0.5 * v as f64 * if j % 2 == 0 { 1.0 } else { -1.0 };
            }
            let p = 1.0 / (1.0 + (-logit).exp());
            (x, (unit() < p) as u8 as f32)
        })
        .unzip()
}

fn evergreen_model_hash(a: u64, b: u64) -> u64 {
    let mut r = SplitMix64::new(a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b);
    r.next_u64()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(400_000);
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (batch, threads) = (arg(2, 256), arg(3, 1));
    let (xs, ys) = stream(n, 1);
    for variant in [DeepVariant::WideDeep, DeepVariant::DeepFm, DeepVariant::Dcn] {
        let params = DeepParams {
            variant,
            ..DeepParams::default()
        };
        let mut m = Deep::new(params, DIM as usize, FIELDS);
        let mut preds = Vec::with_capacity(n);
        let t = Instant::now();
        if threads > 1 {
            m.learn_parallel(&xs, &ys, batch, threads, &mut preds);
        } else {
            for (bx, by) in xs.chunks(batch).zip(ys.chunks(batch)) {
                m.learn_batch(bx, by, &mut preds);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let half = n / 2;
        let ll: f64 = preds[half..]
            .iter()
            .zip(&ys[half..])
            .map(|(&p, &y)| {
                let p = p.clamp(1e-15, 1.0 - 1e-15);
                -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
            })
            .sum::<f64>()
            / (n - half) as f64;
        let base = ys.iter().map(|&y| y as f64).sum::<f64>() / n as f64;
        let base_ll = -(base * base.ln() + (1.0 - base) * (1.0 - base).ln());
        // latency of one prediction
        let mut lat = Vec::with_capacity(20_000);
        let mut sink = 0.0;
        for x in xs.iter().take(20_000) {
            let t = Instant::now();
            sink += m.predict(x);
            lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        let file = save(&m, 0);
        let t = Instant::now();
        let (_, back) = load(&file).expect("loads");
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(back.predict(&xs[0]).to_bits(), m.predict(&xs[0]).to_bits());
        println!(
            "{variant:?}: train {:.0} ex/s ({n} examples, batch {batch}, {threads} threads, {secs:.2} s); progressive logloss 2nd half {ll:.4} (base rate {base:.3}: {base_ll:.4}); predict median {:.2} µs, p99 {:.2} µs; rows {}; file {:.1} MB, load {load_ms:.1} ms (sink {:.1})",
            n as f64 / secs,
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
            m.embeddings().len(),
            file.len() as f64 / 1e6,
            sink,
        );
    }
}
