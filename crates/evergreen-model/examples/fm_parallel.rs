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

mod hogwild;

use evergreen_model::{Fm, FmParams};
use hogwild::{BATCH, DIM, FEATURES, PASSES, stream};

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
    hogwild::compare(
        &xs,
        &ys,
        &[0, 1, 2],
        || Fm::new(FmParams::default(), DIM as usize, 1),
        |m, x, y, t, p| m.learn_parallel(x, y, t, p),
    );
}
