//! Writes the golden model files test-data/ftrl-v1.bin and test-data/deep-v1.bin (run once per
//! new format version): `cargo run -p evergreen-model --example write_golden [dir]`.
use evergreen_core::FeatureVector;
use evergreen_model::{Deep, DeepParams, DeepVariant, Ftrl, FtrlParams, Model, save};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "test-data".into());
    let mut m = Ftrl::new(FtrlParams::default(), 64);
    let mut x = FeatureVector::default();
    x.push(3, 1.0);
    x.push(7, 0.5);
    for i in 0..50 {
        m.learn(&x, (i % 3 == 0) as u8 as f32);
    }
    let out = format!("{dir}/ftrl-v1.bin");
    std::fs::write(&out, save(&m, 1)).expect("write golden file");
    println!("wrote {out}");

    // Keep in sync with `golden_model` in src/deep/tests.rs.
    let p = DeepParams {
        variant: DeepVariant::DeepFm,
        embedding_dim: 4,
        hidden: vec![8, 4],
        lr: 0.01,
        admit_after: 1,
        expire_after_windows: 3,
        seed: 42,
        ..DeepParams::default()
    };
    let mut m = Deep::new(p, 64, 3);
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for i in 0..40u32 {
        let mut x = FeatureVector::default();
        x.push_field(0, 0, 1.0);
        x.push_field(1, 1 + i % 5, 1.0);
        x.push_field(2, 10 + i % 3, 0.5 * (i % 4) as f32);
        xs.push(x);
        ys.push(((i % 5 + i % 3) % 2) as f32);
    }
    for chunk in 0..4 {
        let r = chunk * 10..(chunk + 1) * 10;
        m.learn_batch(&xs[r.clone()], &ys[r], &mut Vec::new());
        m.end_window();
    }
    let out = format!("{dir}/deep-v1.bin");
    std::fs::write(&out, save(&m, 1)).expect("write golden file");
    println!("wrote {out}");
    // The exact predictions the golden test pins (GOLDEN_PREDICTIONS in src/deep/tests.rs).
    for i in 0..5u32 {
        let mut x = FeatureVector::default();
        x.push_field(0, 0, 1.0);
        x.push_field(1, 1 + i, 1.0);
        x.push_field(2, 10 + i % 3, 0.5);
        let p = m.predict(&x);
        println!("0x{:016x}, // {p}", p.to_bits());
    }
}
