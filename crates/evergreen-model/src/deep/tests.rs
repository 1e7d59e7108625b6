//! Tests of the deep models: gradients, learning, persistence, robustness.

use super::*;
use crate::{Ftrl, ModelError, load, save};

const FIELDS: usize = 4;

/// Example generator: bias, two categorical fields, one numeric field, plus optional noise.
fn example(rng: &mut SplitMix64, extra: bool) -> (FeatureVector, f32) {
    let mut x = FeatureVector::default();
    x.push_field(0, 0, 1.0);
    let a = (rng.next_u64() % 6) as u32;
    let b = (rng.next_u64() % 6) as u32;
    x.push_field(1, 10 + a, 1.0);
    x.push_field(2, 30 + b, 1.0);
    let num = rng.symmetric(2.0);
    x.push_field(3, 50, num);
    if extra {
        // a repeated index in the same field, and an entry of an unknown field
        x.push_field(1, 10 + a, 0.5);
        x.push_field(9, 60, 1.0);
    }
    let y = (a + b).is_multiple_of(2) as u8 as f32;
    (x, y)
}

fn batch(seed: u64, n: usize, extra: bool) -> (Vec<FeatureVector>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| example(&mut rng, extra)).unzip()
}

fn params(variant: DeepVariant) -> DeepParams {
    DeepParams {
        variant,
        embedding_dim: 4,
        hidden: vec![8, 6],
        lr: 0.01,
        wide: FtrlParams {
            alpha: 0.1,
            beta: 1.0,
            l1: 0.0,
            l2: 0.1,
            ..FtrlParams::default()
        },
        seed: 5,
        ..DeepParams::default()
    }
}

fn logloss(p: f64, y: f32) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-15);
    -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
}

/// Summed loss of the batch through the batch forward path.
fn batch_loss(m: &mut Deep, xs: &[FeatureVector], ys: &[f32]) -> f64 {
    let mut logits = Vec::new();
    m.forward_batch(xs, &mut logits);
    logits
        .iter()
        .zip(ys)
        .map(|(&l, &y)| logloss(Deep::finish(l), y))
        .sum()
}

fn encoded(m: &Deep) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

/// Checks a numerical derivative against an analytic one.
fn check(what: &str, num: f64, ana: f64) {
    assert!(
        (num - ana).abs() <= 2e-3 + 2e-2 * ana.abs(),
        "{what}: numerical {num} vs analytic {ana}"
    );
}

fn gradient_check(variant: DeepVariant) {
    let mut m = Deep::new(params(variant), 1 << 10, FIELDS);
    // train a little so that every part (wide weights included) is non-trivial
    for s in 0..20 {
        let (xs, ys) = batch(100 + s, 16, true);
        m.learn_batch(&xs, &ys, &mut Vec::new());
    }
    let (xs, ys) = batch(7, 8, true);
    let mut logits = Vec::new();
    m.forward_batch(&xs, &mut logits);
    let g: Vec<f32> = logits
        .iter()
        .zip(&ys)
        .map(|(&l, &y)| (Deep::finish(l) - y as f64) as f32)
        .collect();
    m.backward_batch(&xs, &g);
    let grads = m.scratch.clone();
    let h = 1e-3f32;
    let mut rng = SplitMix64::new(11);
    // dense weights and biases of every layer
    for l in 0..m.layers.len() {
        let (ni, no) = m.layers[l].w.dim();
        for _ in 0..12 {
            let (i, j) = (
                (rng.next_u64() % ni as u64) as usize,
                (rng.next_u64() % no as u64) as usize,
            );
            let orig = m.layers[l].w[[i, j]];
            m.layers[l].w[[i, j]] = orig + h;
            let up = batch_loss(&mut m, &xs, &ys);
            m.layers[l].w[[i, j]] = orig - h;
            let down = batch_loss(&mut m, &xs, &ys);
            m.layers[l].w[[i, j]] = orig;
            let num = (up - down) / (2.0 * h as f64);
            check(&format!("W{l}[{i},{j}]"), num, grads.dw[l][[i, j]] as f64);
        }
        let j = (rng.next_u64() % no as u64) as usize;
        let orig = m.layers[l].b[j];
        m.layers[l].b[j] = orig + h;
        let up = batch_loss(&mut m, &xs, &ys);
        m.layers[l].b[j] = orig - h;
        let down = batch_loss(&mut m, &xs, &ys);
        m.layers[l].b[j] = orig;
        check(
            &format!("b{l}[{j}]"),
            (up - down) / (2.0 * h as f64),
            grads.db[l][j] as f64,
        );
    }
    // cross layers (DCN)
    for l in 0..m.cross.len() {
        let (ni, no) = m.cross[l].w.dim();
        for _ in 0..12 {
            let (i, j) = (
                (rng.next_u64() % ni as u64) as usize,
                (rng.next_u64() % no as u64) as usize,
            );
            let orig = m.cross[l].w[[i, j]];
            m.cross[l].w[[i, j]] = orig + h;
            let up = batch_loss(&mut m, &xs, &ys);
            m.cross[l].w[[i, j]] = orig - h;
            let down = batch_loss(&mut m, &xs, &ys);
            m.cross[l].w[[i, j]] = orig;
            let num = (up - down) / (2.0 * h as f64);
            check(&format!("C{l}[{i},{j}]"), num, grads.cdw[l][[i, j]] as f64);
        }
        let j = (rng.next_u64() % no as u64) as usize;
        let orig = m.cross[l].b[j];
        m.cross[l].b[j] = orig + h;
        let up = batch_loss(&mut m, &xs, &ys);
        m.cross[l].b[j] = orig - h;
        let down = batch_loss(&mut m, &xs, &ys);
        m.cross[l].b[j] = orig;
        check(
            &format!("cb{l}[{j}]"),
            (up - down) / (2.0 * h as f64),
            grads.cdb[l][j] as f64,
        );
    }
    // embedding entries (ids with rows), including the repeated one and the numeric one
    let k = m.params.embedding_dim;
    for id in [0u32, 10, 11, 12, 30, 33, 50] {
        if m.emb.row(id).is_none() {
            continue;
        }
        let Some(ana) = grads.emb.get(id, k) else {
            continue;
        };
        for (d, &ana_d) in ana.iter().enumerate() {
            let orig = m.emb.row(id).unwrap()[d];
            m.emb.row_mut(id).unwrap()[d] = orig + h;
            let up = batch_loss(&mut m, &xs, &ys);
            m.emb.row_mut(id).unwrap()[d] = orig - h;
            let down = batch_loss(&mut m, &xs, &ys);
            m.emb.row_mut(id).unwrap()[d] = orig;
            check(
                &format!("emb[{id}][{d}]"),
                (up - down) / (2.0 * h as f64),
                ana_d as f64,
            );
        }
    }
    // wide weights (the unknown-field entry 60 only feeds the wide part)
    for id in [0u32, 10, 31, 50, 60] {
        if m.wide.row(id).is_none() {
            continue;
        }
        let ana = grads.lin.get(id, 1).expect("wide gradient")[0];
        let orig = m.wide.row(id).unwrap()[0];
        m.wide.row_mut(id).unwrap()[0] = orig + h;
        let up = batch_loss(&mut m, &xs, &ys);
        m.wide.row_mut(id).unwrap()[0] = orig - h;
        let down = batch_loss(&mut m, &xs, &ys);
        m.wide.row_mut(id).unwrap()[0] = orig;
        check(
            &format!("wide[{id}]"),
            (up - down) / (2.0 * h as f64),
            ana as f64,
        );
    }
    assert!(grads.emb.get(60, k).is_none(), "unknown field skipped");
}

#[test]
fn wide_deep_gradients_match_finite_differences() {
    gradient_check(DeepVariant::WideDeep);
}

#[test]
fn deepfm_gradients_match_finite_differences() {
    gradient_check(DeepVariant::DeepFm);
}

#[test]
fn dcn_gradients_match_finite_differences() {
    gradient_check(DeepVariant::Dcn);
}

/// XOR of two categorical fields: no linear model separates it.
fn xor_batch(rng: &mut SplitMix64, n: usize) -> (Vec<FeatureVector>, Vec<f32>) {
    (0..n)
        .map(|_| {
            let a = (rng.next_u64() % 2) as u32;
            let b = (rng.next_u64() % 2) as u32;
            let mut x = FeatureVector::default();
            x.push_field(0, 0, 1.0);
            x.push_field(1, 100 + a, 1.0);
            x.push_field(2, 200 + b, 1.0);
            (x, (a ^ b) as f32)
        })
        .unzip()
}

fn mean_loss(m: &dyn Model, xs: &[FeatureVector], ys: &[f32]) -> f64 {
    xs.iter()
        .zip(ys)
        .map(|(x, &y)| logloss(m.predict(x), y))
        .sum::<f64>()
        / xs.len() as f64
}

#[test]
fn deep_variants_learn_xor_that_a_linear_model_cannot() {
    let mut rng = SplitMix64::new(1);
    let (test_x, test_y) = xor_batch(&mut rng, 200);
    let mut linear = Ftrl::new(FtrlParams::default(), 1 << 10);
    for _ in 0..200 {
        let (xs, ys) = xor_batch(&mut rng, 32);
        for (x, &y) in xs.iter().zip(&ys) {
            linear.learn(x, y);
        }
    }
    let linear_loss = mean_loss(&linear, &test_x, &test_y);
    assert!(linear_loss > 0.6, "linear {linear_loss}");
    for variant in [DeepVariant::WideDeep, DeepVariant::DeepFm, DeepVariant::Dcn] {
        let mut m = Deep::new(
            DeepParams {
                hidden: vec![16, 8],
                ..params(variant)
            },
            1 << 10,
            3,
        );
        let before = mean_loss(&m, &test_x, &test_y);
        for _ in 0..200 {
            let (xs, ys) = xor_batch(&mut rng, 32);
            m.learn_batch(&xs, &ys, &mut Vec::new());
        }
        let after = mean_loss(&m, &test_x, &test_y);
        assert!(
            after < 0.1 && after < before,
            "{variant:?}: {before} -> {after}"
        );
        assert_eq!(m.examples_seen(), 200 * 32);
    }
}

#[test]
fn learn_returns_the_prediction_before_the_update() {
    let mut m = Deep::new(params(DeepVariant::DeepFm), 1 << 10, FIELDS);
    let (xs, ys) = batch(3, 64, true);
    m.learn_batch(&xs, &ys, &mut Vec::new());
    let (xs, ys) = batch(4, 16, true);
    let expected: Vec<f64> = xs.iter().map(|x| m.predict(x)).collect();
    let mut preds = vec![-1.0];
    m.learn_batch(&xs, &ys, &mut preds);
    assert_eq!(preds.len(), 17);
    for (p, e) in preds[1..].iter().zip(&expected) {
        assert!((p - e).abs() < 1e-5, "{p} vs {e}");
    }
    let p = m.predict(&xs[0]);
    let q = m.learn(&xs[0], ys[0]);
    assert!((p - q).abs() < 1e-5);
    let mut d = Deep::new(params(DeepVariant::Dcn), 1 << 10, FIELDS);
    d.learn_batch(&xs, &ys, &mut Vec::new());
    let expected: Vec<f64> = xs.iter().map(|x| d.predict(x)).collect();
    let mut preds = Vec::new();
    d.learn_batch(&xs, &ys, &mut preds);
    for (p, e) in preds.iter().zip(&expected) {
        assert!((p - e).abs() < 1e-5, "dcn {p} vs {e}");
    }
}

#[test]
fn save_load_gives_bit_identical_predictions_and_encoding() {
    for variant in [DeepVariant::WideDeep, DeepVariant::DeepFm, DeepVariant::Dcn] {
        for opt in [
            SparseOptimizer::Adagrad,
            SparseOptimizer::Adam,
            SparseOptimizer::Ftrl,
        ] {
            let mut m = Deep::new(
                DeepParams {
                    embedding_optimizer: opt,
                    admit_after: 1,
                    expire_after_windows: 2,
                    ..params(variant)
                },
                1 << 10,
                FIELDS,
            );
            for s in 0..5 {
                let (xs, ys) = batch(s, 32, true);
                m.learn_batch(&xs, &ys, &mut Vec::new());
                m.end_window();
            }
            let bytes = save(&m, 77);
            let (h, back) = load(&bytes).expect("loads");
            assert_eq!(h.kind, ModelKind::Deep);
            assert_eq!(back.examples_seen(), m.examples_seen());
            assert_eq!(back.dim(), 1 << 10);
            let (xs, _) = batch(99, 50, true);
            for x in &xs {
                assert_eq!(m.predict(x).to_bits(), back.predict(x).to_bits());
            }
            let mut re = Vec::new();
            back.encode(&mut re);
            assert_eq!(
                re,
                encoded(&m),
                "{variant:?} {opt:?}: canonical re-encoding"
            );
        }
    }
}

#[test]
fn warm_start_continues_bit_identically() {
    for opt in [
        SparseOptimizer::Adagrad,
        SparseOptimizer::Adam,
        SparseOptimizer::Ftrl,
    ] {
        let p = DeepParams {
            embedding_optimizer: opt,
            admit_after: 1,
            expire_after_windows: 1,
            ..params(if opt == SparseOptimizer::Adam {
                DeepVariant::Dcn
            } else {
                DeepVariant::DeepFm
            })
        };
        let train = |m: &mut Deep, seeds: std::ops::Range<u64>| {
            for s in seeds {
                let (xs, ys) = batch(s, 24, true);
                m.learn_batch(&xs, &ys, &mut Vec::new());
                if s % 2 == 1 {
                    m.end_window();
                }
            }
        };
        let mut one = Deep::new(p.clone(), 1 << 10, FIELDS);
        train(&mut one, 0..6);
        train(&mut one, 6..12);
        let mut first = Deep::new(p, 1 << 10, FIELDS);
        train(&mut first, 0..6);
        let mut second = Deep::decode(&encoded(&first)).expect("decodes");
        train(&mut second, 6..12);
        assert_eq!(encoded(&one), encoded(&second), "{opt:?}");
    }
}

#[test]
fn non_finite_state_is_reported_and_refused_on_load() {
    let mut m = Deep::new(params(DeepVariant::WideDeep), 1 << 10, FIELDS);
    let (xs, ys) = batch(1, 16, false);
    m.learn_batch(&xs, &ys, &mut Vec::new());
    assert!(m.is_finite());
    let mut a = m.clone();
    a.layers[1].w[[0, 0]] = f32::NAN;
    assert!(!a.is_finite());
    assert_eq!(load(&save(&a, 1)).unwrap_err(), ModelError::Body("deep"));
    let mut b = m.clone();
    b.emb.row_mut(10).expect("row")[0] = f32::INFINITY;
    assert!(!b.is_finite());
    assert_eq!(load(&save(&b, 1)).unwrap_err(), ModelError::Body("deep"));
    let mut c = m.clone();
    c.layers[0].vw[[0, 0]] = -1.0;
    assert_eq!(load(&save(&c, 1)).unwrap_err(), ModelError::Body("deep"));
    let mut d = m;
    d.params.lr = -1.0;
    assert_eq!(load(&save(&d, 1)).unwrap_err(), ModelError::Body("deep"));
}

#[test]
fn rows_expire_and_stay_bounded_under_always_new_ids() {
    let mut m = Deep::new(
        DeepParams {
            expire_after_windows: 1,
            max_rows: 500,
            ..params(DeepVariant::WideDeep)
        },
        1 << 24,
        3,
    );
    let mut next = 1000u32;
    for w in 0..10 {
        for _ in 0..10 {
            let xs: Vec<FeatureVector> = (0..40)
                .map(|_| {
                    let mut x = FeatureVector::default();
                    x.push_field(0, 0, 1.0);
                    x.push_field(1, next, 1.0);
                    next += 1;
                    x
                })
                .collect();
            m.learn_batch(&xs, &[1.0; 40], &mut Vec::new());
        }
        assert!(m.emb.len() <= 500 && m.wide.len() <= 500, "window {w}");
        m.end_window();
    }
    assert!(
        m.emb.rejected() > 0,
        "400 new ids per window + bias beyond the cap"
    );
    assert!(m.emb.capacity_rows() <= 500);
    // the bias row is seen every window and survives
    assert!(m.emb.row(0).is_some());
    // a window without the recent ids drops them
    m.end_window();
    m.end_window();
    assert_eq!(m.emb.len(), 0);
    assert_eq!(m.wide.len(), 0);
    let back = Deep::decode(&encoded(&m)).expect("decodes");
    assert_eq!(encoded(&back), encoded(&m));
}

#[test]
fn admission_needs_repeated_sightings() {
    let mut m = Deep::new(
        DeepParams {
            admit_after: 2,
            ..params(DeepVariant::DeepFm)
        },
        1 << 10,
        3,
    );
    let mut x = FeatureVector::default();
    x.push_field(1, 7, 1.0);
    let p0 = m.predict(&x);
    m.learn(&x, 1.0);
    m.learn(&x, 1.0);
    assert!(m.emb.row(7).is_none() && m.wide.row(7).is_none());
    assert_eq!(m.emb.pending_len(), 1);
    // not admitted: the id contributes nothing, only the dense biases moved
    let mut empty = FeatureVector::default();
    empty.push_field(1, 8, 0.0);
    assert_eq!(m.predict(&x), m.predict(&empty));
    m.learn(&x, 1.0);
    assert!(m.emb.row(7).is_some() && m.wide.row(7).is_some());
    assert!(m.predict(&x) != p0);
}

#[test]
fn set_params_changes_rates_but_refuses_shape_changes() {
    let mut m = Deep::new(params(DeepVariant::WideDeep), 1 << 10, FIELDS);
    let (xs, ys) = batch(1, 16, false);
    m.learn_batch(&xs, &ys, &mut Vec::new());
    let mut p = m.params().clone();
    p.lr = 0.5;
    p.wide.l2 = 3.0;
    m.set_params(p.clone()).expect("rates may change");
    assert_eq!(m.params().lr, 0.5);
    for bad in [
        DeepParams {
            hidden: vec![8],
            ..p.clone()
        },
        DeepParams {
            embedding_dim: 5,
            ..p.clone()
        },
        DeepParams {
            variant: DeepVariant::DeepFm,
            ..p.clone()
        },
        DeepParams {
            embedding_optimizer: SparseOptimizer::Adam,
            ..p.clone()
        },
        DeepParams {
            embedding_lr: 0.0,
            ..p.clone()
        },
        DeepParams {
            variant: DeepVariant::Dcn,
            ..p.clone()
        },
    ] {
        assert!(m.set_params(bad).is_err());
    }
    assert_eq!(m.params(), &p);
    // cross_layers is part of the shape only for dcn
    m.set_params(DeepParams {
        cross_layers: 5,
        ..p.clone()
    })
    .expect("ignored by wide_deep");
    let mut d = Deep::new(params(DeepVariant::Dcn), 1 << 10, FIELDS);
    let q = d.params().clone();
    assert!(
        d.set_params(DeepParams {
            cross_layers: 3,
            ..q
        })
        .is_err()
    );
}

#[test]
fn params_parse_with_defaults_and_validate() {
    let p: DeepParams = serde_json::from_str(r#"{"variant": "deepfm", "hidden": [16]}"#).unwrap();
    assert_eq!(p.variant, DeepVariant::DeepFm);
    assert_eq!(p.embedding_dim, 8);
    assert_eq!(p.embedding_optimizer, SparseOptimizer::Adagrad);
    assert!(p.validate().is_ok());
    assert!(serde_json::from_str::<DeepParams>(r#"{"hiden": [16]}"#).is_err());
    let p: DeepParams = serde_json::from_str(r#"{"embedding_optimizer": "ftrl"}"#).unwrap();
    assert_eq!(p.embedding_optimizer, SparseOptimizer::Ftrl);
    let bad = DeepParams {
        wide: FtrlParams {
            alpha: 0.0,
            ..FtrlParams::default()
        },
        ..DeepParams::default()
    };
    assert_eq!(bad.validate().unwrap_err().0, "wide.alpha");
    let bad = DeepParams {
        hidden: vec![0],
        ..DeepParams::default()
    };
    assert_eq!(bad.validate().unwrap_err().0, "hidden");
    let p: DeepParams = serde_json::from_str(r#"{"variant": "dcn"}"#).unwrap();
    assert_eq!((p.variant, p.cross_layers), (DeepVariant::Dcn, 2));
    let bad = DeepParams {
        cross_layers: 0,
        ..p
    };
    assert_eq!(bad.validate().unwrap_err().0, "cross_layers");
}

/// The model of the golden file (same code as examples/write_golden.rs).
fn golden_model() -> Deep {
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
    m
}

fn golden_vectors() -> Vec<FeatureVector> {
    (0..5u32)
        .map(|i| {
            let mut x = FeatureVector::default();
            x.push_field(0, 0, 1.0);
            x.push_field(1, 1 + i, 1.0);
            x.push_field(2, 10 + i % 3, 0.5);
            x
        })
        .collect()
}

#[test]
fn golden_deep_v1_file_still_loads() {
    // test-data/deep-v1.bin was written by examples/write_golden.rs (format version 1).
    let bytes = include_bytes!("../../test-data/deep-v1.bin");
    let (h, m) = load(bytes).expect("golden deep model loads");
    assert_eq!(h.format_version, 1);
    assert_eq!(h.kind, ModelKind::Deep);
    assert_eq!(m.dim(), 64);
    assert_eq!(m.examples_seen(), 40);
    // Exact predictions of the stored state (the scalar predict path is deterministic).
    let expected: [u64; 5] = GOLDEN_PREDICTIONS;
    let fresh = golden_model();
    for (x, &bits) in golden_vectors().iter().zip(&expected) {
        let p = m.predict(x);
        assert_eq!(p.to_bits(), bits, "{p} vs {}", f64::from_bits(bits));
        // Retraining here may differ in the last bits only if the GEMM kernel differs.
        assert!((p - fresh.predict(x)).abs() < 1e-4);
    }
}

const GOLDEN_PREDICTIONS: [u64; 5] = [
    0x3fdd3af7667aa8d5, // 0.45672402389267336
    0x3fe338006f0a6877, // 0.6005861443293402
    0x3fe0b8935e1ec63f, // 0.5225312078748131
    0x3fe1b096536481f1, // 0.5528060559045668
    0x3fe1a67bd3597b02, // 0.5515727165146418
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn predictions_are_probabilities_for_any_input(
        entries in proptest::collection::vec(
            (0u32..80, proptest::prop_oneof![
                -3.0f32..3.0,
                proptest::num::f32::ANY,
                proptest::strategy::Just(1e30f32),
                proptest::strategy::Just(-1e30f32),
            ], 0u16..12),
            0..30,
        ),
        variant in proptest::prop_oneof![
            proptest::strategy::Just(DeepVariant::WideDeep),
            proptest::strategy::Just(DeepVariant::DeepFm),
            proptest::strategy::Just(DeepVariant::Dcn),
        ],
    ) {
        let mut m = Deep::new(params(variant), 1 << 10, FIELDS);
        let (xs, ys) = batch(2, 32, true);
        m.learn_batch(&xs, &ys, &mut Vec::new());
        let mut x = FeatureVector::default();
        for &(i, v, f) in &entries {
            x.push_field(f, i, v);
            x.push_field(f, i, v); // repeated indices
        }
        let p = m.predict(&x);
        proptest::prop_assert!(p.is_finite() && (0.0..=1.0).contains(&p), "{}", p);
        let q = m.learn(&x, 1.0);
        proptest::prop_assert!(q.is_finite() && (0.0..=1.0).contains(&q), "{}", q);
    }

    #[test]
    fn decoding_mutated_bodies_never_panics(
        flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..6),
        cut in proptest::num::usize::ANY,
    ) {
        let body = mutation_base();
        let mut b = body.clone();
        for &(pos, v) in &flips {
            let n = b.len();
            b[pos % n] = v;
        }
        if let Some(m) = Deep::decode(&b) {
            let (xs, _) = batch(5, 4, true);
            for x in &xs {
                let p = m.predict(x);
                proptest::prop_assert!((0.0..=1.0).contains(&p));
            }
        }
        let _ = Deep::decode(&body[..cut % (body.len() + 1)]);
    }
}

fn mutation_base() -> Vec<u8> {
    let mut m = Deep::new(
        DeepParams {
            variant: DeepVariant::Dcn,
            cross_layers: 1,
            embedding_dim: 2,
            hidden: vec![3],
            embedding_optimizer: SparseOptimizer::Adam,
            admit_after: 2,
            expire_after_windows: 1,
            ..DeepParams::default()
        },
        128,
        FIELDS,
    );
    let (xs, ys) = batch(8, 12, true);
    m.learn_batch(&xs, &ys, &mut Vec::new());
    m.end_window();
    encoded(&m)
}

#[test]
fn every_truncation_of_a_body_is_refused() {
    let body = mutation_base();
    assert!(Deep::decode(&body).is_some());
    for len in 0..body.len() {
        assert!(Deep::decode(&body[..len]).is_none(), "truncated at {len}");
    }
    let mut longer = body.clone();
    longer.push(0);
    assert!(Deep::decode(&longer).is_none());
}

#[test]
fn degenerate_unvalidated_params_do_not_panic() {
    for p in [
        DeepParams {
            embedding_dim: 0,
            variant: DeepVariant::DeepFm,
            ..DeepParams::default()
        },
        DeepParams {
            hidden: vec![0, 3],
            ..DeepParams::default()
        },
        DeepParams {
            hidden: vec![],
            variant: DeepVariant::Dcn,
            ..DeepParams::default()
        },
    ] {
        let mut m = Deep::new(p, 1 << 10, 0);
        let (xs, ys) = batch(1, 8, true);
        m.learn_batch(&xs, &ys, &mut Vec::new());
        let p = m.predict(&xs[0]);
        assert!((0.0..=1.0).contains(&p));
        assert!(Deep::decode(&encoded(&m)).is_none() || m.params().validate().is_ok());
    }
}

#[test]
fn differentiable_ids_follow_the_documented_scheme() {
    use crate::Differentiable;
    for variant in [DeepVariant::WideDeep, DeepVariant::DeepFm, DeepVariant::Dcn] {
        let mut m = Deep::new(params(variant), 1 << 10, FIELDS);
        let (xs, ys) = batch(3, 16, true);
        m.learn_batch(&xs, &ys, &mut Vec::new());
        let (in0, h0) = m.layers[0].w.dim();
        let dense = m.dense_params();
        let expected: usize = m
            .layers
            .iter()
            .chain(&m.cross)
            .map(|l| l.w.len() + l.b.len())
            .sum();
        assert_eq!(dense, expected);
        // tower layer 0: W row-major, then b
        assert_eq!(m.param(h0 + 1), m.layers[0].w[[1, 1]] as f64);
        assert_eq!(m.param(in0 * h0 + 2), m.layers[0].b[2] as f64);
        m.set_param(in0 * h0 + 2, 0.25);
        assert_eq!(m.layers[0].b[2], 0.25);
        // cross layers after the whole tower
        if let Some(c) = m.cross.first() {
            let tower: usize = m.layers.iter().map(|l| l.w.len() + l.b.len()).sum();
            assert_eq!(m.param(tower + 3), c.w.as_slice().unwrap()[3] as f64);
        }
        // embeddings, then wide weights, of existing rows only
        let k = m.params.embedding_dim;
        let id = 10 + (0..6).find(|a| m.emb.row(10 + a).is_some()).unwrap();
        let e = dense + id as usize * k + 2;
        assert_eq!(m.param(e), m.emb.row(id).unwrap()[2] as f64);
        m.set_param(e, -0.125);
        assert_eq!(m.emb.row(id).unwrap()[2], -0.125);
        let w = dense + (1 << 10) * k + id as usize;
        m.set_param(w, 0.375);
        assert!((m.wide.row(id).unwrap()[0] as f64 - 0.375).abs() < 1e-6);
        assert!((m.param(w) - 0.375).abs() < 1e-6);
        let before = encoded(&m);
        for missing in [dense + 999 * k, dense + (1 << 10) * k + 999, usize::MAX] {
            assert_eq!(m.param(missing), 0.0);
            m.set_param(missing, 1.0);
        }
        assert_eq!(encoded(&m), before, "no row created");
        // the gradient is the training backward's, ids unique and in range
        let (loss, grad) = m.loss_and_grad(&xs[0], ys[0]);
        assert!(loss.is_finite());
        let mut ids: Vec<usize> = grad.iter().map(|g| g.0).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), grad.len());
        assert!(
            ids.iter()
                .take(dense)
                .eq((0..dense).collect::<Vec<_>>().iter())
        );
        assert!(ids.iter().any(|&i| i >= dense && i < dense + (1 << 10) * k));
        assert!(ids.iter().any(|&i| i >= dense + (1 << 10) * k));
        assert!(
            ids.contains(&(dense + (1 << 10) * k + 60)),
            "wide of an unknown field"
        );
        assert!(
            !ids.contains(&(dense + 60 * k)),
            "no embedding for an unknown field"
        );
    }
}

#[test]
fn indices_outside_the_hash_space_are_ignored() {
    let mut m = Deep::new(params(DeepVariant::DeepFm), 64, FIELDS);
    let mut inside = FeatureVector::default();
    inside.push_field(1, 5, 1.0);
    let mut x = inside.clone();
    x.push_field(1, 100, 1.0);
    x.push_field(9, 64, 1.0);
    for _ in 0..3 {
        m.learn(&x, 1.0);
    }
    assert_eq!(m.predict(&x), m.predict(&inside));
    assert!(m.emb.ids().iter().chain(&m.wide.ids()).all(|&i| i < 64));
    let (_, back) = load(&save(&m, 1)).expect("a model trained on any input loads");
    assert_eq!(back.predict(&x), m.predict(&x));
}

/// Parameters of the dense layers and every embedding row, as one vector (for comparisons).
fn state_vector(m: &Deep) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::new();
    for l in m.layers.iter().chain(&m.cross) {
        v.extend(l.w.iter());
        v.extend(l.b.iter());
    }
    for id in 0..64u32 {
        if let Some(r) = m.emb.row(id) {
            v.extend_from_slice(r);
        }
        if let Some(r) = m.wide.row(id) {
            v.extend_from_slice(r);
        }
    }
    v
}

#[test]
fn data_parallel_batches_match_serial_batches_and_repeat_exactly() {
    for variant in [DeepVariant::WideDeep, DeepVariant::DeepFm, DeepVariant::Dcn] {
        let p = params(variant);
        let mut serial = Deep::new(p.clone(), 1 << 10, FIELDS);
        let mut par = Deep::new(p.clone(), 1 << 10, FIELDS);
        let mut again = Deep::new(p, 1 << 10, FIELDS);
        let (mut ps, mut pp, mut pa) = (Vec::new(), Vec::new(), Vec::new());
        // Two windows of 39 batches of 50 (3 parts of 16-17 with 3 threads) and a short last
        // batch of 20 (one part).
        for w in 0..2 {
            let (xs, ys) = batch(100 + w, 39 * 50 + 20, w == 1);
            for (bx, by) in xs.chunks(50).zip(ys.chunks(50)) {
                serial.learn_batch(bx, by, &mut ps);
            }
            par.learn_parallel(&xs, &ys, 50, 3, &mut pp);
            again.learn_parallel(&xs, &ys, 50, 3, &mut pa);
        }
        assert_eq!(pp.len(), 2 * (39 * 50 + 20));
        assert_eq!(pp, pa, "{variant:?}: same thread count, same predictions");
        assert_eq!(encoded(&par), encoded(&again), "{variant:?}: same state");
        assert_eq!(par.examples_seen(), serial.examples_seen());
        // The same sums in another order: the same model up to rounding.
        let worst_pred = ps
            .iter()
            .zip(&pp)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst_pred < 1e-4,
            "{variant:?}: predictions differ by {worst_pred}"
        );
        let (a, b) = (state_vector(&serial), state_vector(&par));
        assert_eq!(a.len(), b.len(), "{variant:?}: the same rows exist");
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "{variant:?}: parameters differ by {worst}");
        assert_eq!(
            par.parts.len(),
            3,
            "{variant:?}: the batches ran in 3 parts"
        );
    }
}
