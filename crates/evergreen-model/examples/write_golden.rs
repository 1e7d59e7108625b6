//! Writes the golden model file test-data/ftrl-v1.bin (run once per new format version).
use evergreen_core::FeatureVector;
use evergreen_model::{Ftrl, FtrlParams, Model, save};

fn main() {
    let mut m = Ftrl::new(FtrlParams::default(), 64);
    let mut x = FeatureVector::default();
    x.push(3, 1.0);
    x.push(7, 0.5);
    for i in 0..50 {
        m.learn(&x, (i % 3 == 0) as u8 as f32);
    }
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "test-data/ftrl-v1.bin".into());
    std::fs::write(&out, save(&m, 1)).expect("write golden file");
    println!("wrote {out}");
}
