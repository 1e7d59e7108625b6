//! Writes a golden model file (run once per new format version or model kind):
//! `cargo run -p evergreen-model --example write_golden -- [ftrl|fm|ffm] [out]`
//! (default `ftrl test-data/ftrl-v1.bin`; `fm` and `ffm` default to `test-data/<kind>-v1.bin`).
//! The recipes are repeated in the golden tests of `src/format.rs`, which retrain and compare.
use evergreen_core::FeatureVector;
use evergreen_model::{Ffm, FfmParams, Fm, FmParams, Ftrl, FtrlParams, Model, save};

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

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let kind = match args.peek().map(String::as_str) {
        Some("ftrl" | "fm" | "ffm") => args.next().unwrap_or_default(),
        _ => "ftrl".to_string(),
    };
    let model = match kind.as_str() {
        "fm" => train(Box::new(Fm::new(FmParams::default(), 16, 3))),
        "ffm" => train(Box::new(Ffm::new(FfmParams::default(), 16, 3))),
        _ => ftrl(),
    };
    let out = args
        .next()
        .unwrap_or_else(|| format!("test-data/{kind}-v1.bin"));
    std::fs::write(&out, save(model.as_ref(), 1)).expect("write golden file");
    println!("wrote {out}");
}
