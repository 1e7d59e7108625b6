//! Writes a golden model file (run once per new format version or model kind):
//! `cargo run -p evergreen-model --example write_golden -- [ftrl|fm|ffm|deep|forest] [out]`
//! (default `ftrl test-data/ftrl-v1.bin`; the others default to `test-data/<kind>-v1.bin`).
//! The recipes are repeated in the golden tests (`src/format.rs`, `src/deep/tests.rs`), which
//! retrain or pin exact predictions.
use evergreen_core::FeatureVector;
use evergreen_model::{
    Deep, DeepParams, DeepVariant, Ffm, FfmParams, Fm, FmParams, Forest, ForestParams, Ftrl,
    FtrlParams, Model, save,
};

fn ftrl() -> Box<dyn Model> {
    let mut m = Ftrl::new(FtrlParams::default(), 64);
    let mut x = FeatureVector::default();
    x.push(3, 1.0);
    x.push(7, 0.5);
    for i in 0..50 {
        m.learn(&x, (i % 3 == 0) as u8 as f32);
    }
    Box::new(m)
}

/// Two examples over three fields, alternated for 50 steps.
fn factor_data() -> [FeatureVector; 2] {
    let mut a = FeatureVector::default();
    a.push_field(0, 3, 1.0);
    a.push_field(1, 7, 0.5);
    a.push_field(2, 11, 1.0);
    let mut b = FeatureVector::default();
    b.push_field(0, 3, 1.0);
    b.push_field(1, 8, 1.0);
    b.push_field(2, 12, -0.5);
    [a, b]
}

fn train(mut m: Box<dyn Model>) -> Box<dyn Model> {
    let data = factor_data();
    for i in 0..50 {
        m.learn(&data[i % 2], (i % 3 == 0) as u8 as f32);
    }
    m
}

/// Keep in sync with `golden_model` in src/deep/tests.rs; prints the predictions it pins.
fn deep() -> Box<dyn Model> {
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
    // The exact predictions the golden test pins (GOLDEN_PREDICTIONS in src/deep/tests.rs).
    for i in 0..5u32 {
        let mut x = FeatureVector::default();
        x.push_field(0, 0, 1.0);
        x.push_field(1, 1 + i, 1.0);
        x.push_field(2, 10 + i % 3, 0.5);
        let p = m.predict(&x);
        println!("0x{:016x}, // {p}", p.to_bits());
    }
    Box::new(m)
}

/// Keep in sync with `golden_forest` in src/forest/tests.rs: a 3-tree forest over a numeric and
/// a categorical field, 600 examples of a concept that flips at 300 (so the file holds splits,
/// observers of both kinds, detector state and events).
pub fn forest() -> Box<dyn Model> {
    use evergreen_core::FieldKind::{Categorical, Numeric, Unused};
    let params = ForestParams {
        trees: 3,
        seed: 7,
        ..ForestParams::default()
    };
    let mut m = Forest::try_new(params, vec![Unused, Numeric, Categorical], 64).unwrap();
    for i in 0..600u32 {
        let mut x = FeatureVector::default();
        let v = (i * 37 % 100) as f32 / 100.0;
        x.push_field(1, 0, v);
        x.push_field(2, i % 4, 1.0);
        let y = ((v > 0.5) ^ (i % 4 == 0) ^ (i >= 300)) as u8 as f32;
        m.learn(&x, y);
    }
    for i in 0..4u32 {
        let mut x = FeatureVector::default();
        x.push_field(1, 0, 0.3 * i as f32);
        x.push_field(2, i, 1.0);
        let p = m.predict(&x);
        println!("0x{:016x}, // {p}", p.to_bits());
    }
    Box::new(m)
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let kind = match args.peek().map(String::as_str) {
        Some("ftrl" | "fm" | "ffm" | "deep" | "forest") => args.next().unwrap_or_default(),
        _ => "ftrl".to_string(),
    };
    let model = match kind.as_str() {
        "fm" => train(Box::new(Fm::new(FmParams::default(), 16, 3))),
        "ffm" => train(Box::new(Ffm::new(FfmParams::default(), 16, 3))),
        "deep" => deep(),
        "forest" => forest(),
        _ => ftrl(),
    };
    let out = args
        .next()
        .unwrap_or_else(|| format!("test-data/{kind}-v1.bin"));
    std::fs::write(&out, save(model.as_ref(), 1)).expect("write golden file");
    println!("wrote {out}");
}
