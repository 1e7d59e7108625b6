//! Conformance suite: every model kind must pass the same checks. To add a kind, add one entry
//! to [`KINDS`]. Per-example kinds (FTRL, FM, FFM) learn a batch example by example; mini-batch
//! kinds (the deep models) take one step per batch, so for them the batch properties are: a
//! batch of one is `learn`, and the predictions returned are `predict` before the batch.

use evergreen_core::FeatureVector;
use evergreen_model::{
    Criterion, Deep, DeepParams, DeepVariant, Differentiable, Ffm, FfmParams, Fm, FmParams, Forest,
    ForestParams, Ftrl, FtrlParams, LeafPrediction, Model, ModelError, NumericObserver, OpenError,
    WeightStorage, load, open, save,
};
use proptest::prelude::*;

const DIM: usize = 64;
const FIELDS: usize = 4;

/// A model kind under test.
struct Kind {
    name: &'static str,
    make: Make,
    /// Finite-difference gradient check, and how exact it can be.
    grad_check: GradCheck,
    /// True for a mini-batch model (`learn_batch` is one step on the whole batch, not
    /// `learn` example by example): see `learn_batch_returns_pre_update_predictions`.
    minibatch: bool,
}

/// How a kind is built: gradient-trained kinds expose their parameters (`Differentiable`,
/// for the gradient and NaN-injection checks); the others (the forest) only the model trait.
#[derive(Clone, Copy)]
enum Make {
    Diff(fn() -> Box<dyn Differentiable>),
    Plain(fn() -> Box<dyn Model>),
}

impl Kind {
    fn model(&self) -> Box<dyn Model> {
        match self.make {
            Make::Diff(f) => f(),
            Make::Plain(f) => f(),
        }
    }
}

/// How a kind's gradients are checked against central differences.
#[derive(Clone, Copy, PartialEq)]
enum GradCheck {
    /// Not checked (parameters too coarse, e.g. f16 storage).
    Off,
    /// f32 parameters, loss computed in f64: step `1e-3·max(|θ|, 0.1)`, tolerance
    /// `1e-4 + 2e-3·|g|`.
    Exact,
    /// f32 parameters and f32 arithmetic (the deep models): step `1e-2·max(|θ|, 0.1)`,
    /// tolerance `2e-3 + 2e-2·|g|` (as the deep model's own gradient tests).
    F32,
}

const KINDS: &[Kind] = &[
    Kind {
        name: "ftrl",
        make: Make::Diff(|| Box::new(Ftrl::new(FtrlParams::default(), DIM))),
        grad_check: GradCheck::Exact,
        minibatch: false,
    },
    Kind {
        name: "ftrl-f16-admission",
        make: Make::Diff(ftrl_f16_admission),
        grad_check: GradCheck::Off,
        minibatch: false,
    },
    Kind {
        name: "fm",
        make: Make::Diff(|| {
            Box::new(Fm::new(
                FmParams {
                    init_std: 0.1,
                    ..FmParams::default()
                },
                DIM,
                FIELDS,
            ))
        }),
        grad_check: GradCheck::Exact,
        minibatch: false,
    },
    Kind {
        name: "ffm",
        make: Make::Diff(|| Box::new(Ffm::new(FfmParams::default(), DIM, FIELDS))),
        grad_check: GradCheck::Exact,
        minibatch: false,
    },
    Kind {
        name: "ffm-unnormalized",
        make: Make::Diff(|| {
            Box::new(Ffm::new(
                FfmParams {
                    normalize: false,
                    ..FfmParams::default()
                },
                DIM,
                FIELDS,
            ))
        }),
        grad_check: GradCheck::Exact,
        minibatch: false,
    },
    Kind {
        name: "wide_deep",
        make: Make::Diff(|| deep(DeepVariant::WideDeep)),
        grad_check: GradCheck::F32,
        minibatch: true,
    },
    Kind {
        name: "deepfm",
        make: Make::Diff(|| deep(DeepVariant::DeepFm)),
        grad_check: GradCheck::F32,
        minibatch: true,
    },
    Kind {
        name: "dcn",
        make: Make::Diff(|| deep(DeepVariant::Dcn)),
        grad_check: GradCheck::F32,
        minibatch: true,
    },
    Kind {
        name: "deepfm-ftrl-embeddings",
        make: Make::Diff(deepfm_ftrl_embeddings),
        grad_check: GradCheck::F32,
        minibatch: true,
    },
    Kind {
        name: "forest",
        make: Make::Plain(|| forest(ForestParams::default())),
        grad_check: GradCheck::Off,
        minibatch: false,
    },
    Kind {
        name: "forest-histogram-nb-gini",
        make: Make::Plain(|| {
            forest(ForestParams {
                trees: 3,
                numeric_observer: NumericObserver::Histogram,
                leaf_prediction: LeafPrediction::NaiveBayes,
                criterion: Criterion::Gini,
                grace_period: 10.0,
                seed: 9,
                ..ForestParams::default()
            })
        }),
        grad_check: GradCheck::Off,
        minibatch: false,
    },
];

/// A forest over the toy vectors: field 0 unused (the bias), fields 1 and 2 categorical (the
/// bucket index is the category), field 3 numeric (the value).
fn forest(params: ForestParams) -> Box<dyn Model> {
    use evergreen_core::FieldKind::*;
    Box::new(
        Forest::try_new(params, vec![Unused, Categorical, Categorical, Numeric], DIM)
            .expect("valid forest"),
    )
}

/// A small deep model: embedding width 4, tower [8, 6] (DCN: 2 cross layers of 16×16).
fn deep_params(variant: DeepVariant) -> DeepParams {
    DeepParams {
        variant,
        embedding_dim: 4,
        hidden: vec![8, 6],
        cross_layers: 2,
        lr: 0.01,
        seed: 5,
        ..DeepParams::default()
    }
}

fn deep(variant: DeepVariant) -> Box<dyn Differentiable> {
    let p = deep_params(variant);
    p.validate().expect("valid deep params");
    Box::new(Deep::new(p, DIM, FIELDS))
}

/// DeepFM with FTRL embeddings (settable only through `z`) and admission after 1 sighting
/// (rows created lazily).
fn deepfm_ftrl_embeddings() -> Box<dyn Differentiable> {
    let p = DeepParams {
        embedding_optimizer: evergreen_model::SparseOptimizer::Ftrl,
        admit_after: 1,
        ..deep_params(DeepVariant::DeepFm)
    };
    p.validate().expect("valid deep params");
    Box::new(Deep::new(p, DIM, FIELDS))
}

fn ftrl_f16_admission() -> Box<dyn Differentiable> {
    let params = FtrlParams {
        storage: WeightStorage::F16,
        admit_after: 2,
        admit_probability: 0.9,
        seed: 3,
        ..FtrlParams::default()
    };
    Box::new(Ftrl::new(params, DIM))
}

/// Deterministic pseudo-random examples: bias (field 0, index 0), one feature per field 1..3
/// out of 4 candidates each, value 1 or a real value; label separable by the field-1 feature.
fn toy(n: usize, seed: u64) -> Vec<(FeatureVector, f32)> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| {
            let mut x = FeatureVector::default();
            x.push_field(0, 0, 1.0);
            let mut y = 0.0;
            for f in 1..4u16 {
                let r = next();
                let idx = u32::from(f) * 4 + (r % 4) as u32;
                let val = if r & 16 == 0 {
                    1.0
                } else {
                    0.5 + (r >> 40) as f32 / (1u64 << 24) as f32
                };
                x.push_field(f, idx, val);
                if f == 1 && r % 4 < 2 {
                    y = 1.0;
                }
            }
            (x, y)
        })
        .collect()
}

fn trained(k: &Kind) -> Box<dyn Model> {
    let mut m = k.model();
    for (x, y) in toy(300, 1) {
        m.learn(&x, y);
    }
    m
}

/// [`trained`] with parameter access, for the gradient-trained kinds.
fn trained_diff(k: &Kind) -> Option<Box<dyn Differentiable>> {
    let Make::Diff(make) = k.make else {
        return None;
    };
    let mut m = make();
    for (x, y) in toy(300, 1) {
        m.learn(&x, y);
    }
    Some(m)
}

fn body(m: &dyn Model) -> Vec<u8> {
    let mut b = Vec::new();
    m.encode(&mut b);
    b
}

fn mean_logloss(m: &dyn Model, data: &[(FeatureVector, f32)]) -> f64 {
    data.iter()
        .map(|(x, y)| {
            let p = m.predict(x).clamp(1e-15, 1.0 - 1e-15);
            if *y > 0.5 { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum::<f64>()
        / data.len() as f64
}

#[test]
fn analytic_gradients_match_central_differences() {
    for k in KINDS.iter().filter(|k| k.grad_check != GradCheck::Off) {
        let (step, abs, rel) = match k.grad_check {
            GradCheck::F32 => (1e-2, 2e-3, 2e-2),
            _ => (1e-3, 1e-4, 2e-3),
        };
        let mut m = trained_diff(k).expect("checked kinds are differentiable");
        // Repeated indices, several fields, real values.
        let mut x = FeatureVector::default();
        x.push_field(0, 0, 1.0);
        x.push_field(1, 5, 0.7);
        x.push_field(2, 9, -1.3);
        x.push_field(1, 5, 0.4);
        x.push_field(3, 14, 0.25);
        x.push_field(2, 5, 0.9);
        for y in [0.0, 1.0] {
            let (loss, grad) = m.loss_and_grad(&x, y);
            assert!(grad.len() > 3, "{}: {} gradients", k.name, grad.len());
            for &(id, g) in &grad {
                let theta = m.param(id);
                let h = step * theta.abs().max(0.1);
                m.set_param(id, theta + h);
                let (plus, up) = (m.loss_and_grad(&x, y).0, m.param(id));
                m.set_param(id, theta - h);
                let (minus, down) = (m.loss_and_grad(&x, y).0, m.param(id));
                m.set_param(id, theta);
                assert_eq!(
                    m.loss_and_grad(&x, y).0,
                    loss,
                    "{}: param {id} not restored",
                    k.name
                );
                let numeric = (plus - minus) / (up - down);
                assert!(
                    (numeric - g).abs() <= abs + rel * g.abs(),
                    "{} y={y} param {id}: analytic {g} vs numeric {numeric}",
                    k.name
                );
            }
        }
    }
}

#[test]
fn loss_decreases_on_a_separable_problem() {
    for k in KINDS {
        let mut m = k.model();
        let test = toy(200, 99);
        let before = mean_logloss(m.as_ref(), &test);
        for _ in 0..10 {
            for (x, y) in toy(200, 5) {
                m.learn(&x, y);
            }
        }
        let after = mean_logloss(m.as_ref(), &test);
        println!("{}: logloss {before:.4} -> {after:.4}", k.name);
        assert!(
            after < 0.5 * before && after < 0.3,
            "{}: {before} -> {after}",
            k.name
        );
        assert!(m.is_finite());
    }
}

#[test]
fn save_load_predicts_bit_identically_and_re_encodes_identically() {
    for k in KINDS {
        let m = trained(k);
        let bytes = save(m.as_ref(), 7);
        let (h, back) = load(&bytes).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        assert_eq!(h.kind, m.kind());
        assert_eq!(back.examples_seen(), m.examples_seen());
        for (x, _) in toy(50, 3) {
            assert_eq!(
                back.predict(&x).to_bits(),
                m.predict(&x).to_bits(),
                "{}",
                k.name
            );
        }
        assert_eq!(body(back.as_ref()), body(m.as_ref()), "{}", k.name);
        assert_eq!(save(back.as_ref(), 7), bytes, "{}", k.name);
    }
}

#[test]
fn warm_start_through_a_file_equals_training_in_one_go() {
    for k in KINDS {
        let (a, b) = (toy(150, 11), toy(150, 12));
        let mut one = k.model();
        for (x, y) in a.iter().chain(&b) {
            one.learn(x, *y);
        }
        let mut first = k.model();
        for (x, y) in &a {
            first.learn(x, *y);
        }
        let (_, mut second) = load(&save(first.as_ref(), 1)).unwrap();
        for (x, y) in &b {
            second.learn(x, *y);
        }
        assert_eq!(body(one.as_ref()), body(second.as_ref()), "{}", k.name);
        for (x, _) in toy(20, 13) {
            assert_eq!(
                one.predict(&x).to_bits(),
                second.predict(&x).to_bits(),
                "{}",
                k.name
            );
        }
    }
}

/// Every kind, opened from a file as a server opens it (`open` with a scratch directory: FTRL
/// mapped from a private copy, the other kinds read into memory) and without one: the same
/// predictions bit for bit, the same encoding, the manifest's size and hash, and learning from
/// the opened model continues exactly as from the model saved.
#[test]
fn a_model_opened_from_its_file_serves_and_learns_as_the_model_saved() {
    let dir = tempfile::tempdir().unwrap();
    for k in KINDS {
        let m = trained(k);
        let bytes = save(m.as_ref(), 7);
        let path = dir.path().join(format!("{}.bin", k.name));
        std::fs::write(&path, &bytes).unwrap();
        for scratch in [Some(dir.path()), None] {
            let opened = open(&path, scratch).unwrap_or_else(|e| panic!("{}: {e}", k.name));
            let what = format!("{} (scratch {:?})", k.name, scratch.is_some());
            let ftrl = m.kind() == evergreen_model::ModelKind::Ftrl;
            assert_eq!(opened.mapped, ftrl && scratch.is_some(), "{what}");
            assert_eq!(opened.fallback, None, "{what}");
            assert_eq!(opened.header.spec_fingerprint, 7);
            assert_eq!(opened.size, bytes.len() as u64);
            assert_eq!(opened.xxh3, xxhash_rust::xxh3::xxh3_64(&bytes), "{what}");
            let mut back = opened.model;
            assert!(back.is_finite(), "{what}");
            assert_eq!(back.dim(), m.dim(), "{what}");
            assert_eq!(back.examples_seen(), m.examples_seen(), "{what}");
            let (xs, ys): (Vec<_>, Vec<_>) = toy(50, 3).into_iter().unzip();
            for x in &xs {
                assert_eq!(back.predict(x).to_bits(), m.predict(x).to_bits(), "{what}");
            }
            let (mut one, mut two) = (Vec::new(), Vec::new());
            back.predict_batch(&xs, &mut one);
            m.predict_batch(&xs, &mut two);
            assert_eq!(one, two, "{what}");
            assert_eq!(save(back.as_ref(), 7), bytes, "{what}");
            assert_eq!(save(back.clone_box().as_ref(), 7), bytes, "{what}");
            let mut cont = m.clone_box();
            for (x, y) in xs.iter().zip(&ys) {
                assert_eq!(
                    back.learn(x, *y).to_bits(),
                    cont.learn(x, *y).to_bits(),
                    "{what}"
                );
            }
            assert_eq!(body(back.as_ref()), body(cont.as_ref()), "{what}");
            assert!(back.is_finite(), "{what}");
            for x in &xs {
                assert_eq!(
                    back.predict(x).to_bits(),
                    cont.predict(x).to_bits(),
                    "{what}"
                );
            }
        }
    }
}

/// Every kind: a learning rate, and named, finite parameter groups for histograms that see the
/// training (a trained model has more non-zero values than a fresh one); the deep kinds report
/// the last mini-batch's gradients per layer.
#[test]
fn every_kind_reports_its_learning_rate_and_parameter_groups() {
    let groups = |m: &dyn Model| {
        let mut out: Vec<(String, Vec<f32>)> = Vec::new();
        m.inspect(&mut |tag, values| out.push((tag.to_string(), values.to_vec())));
        out
    };
    for k in KINDS {
        let fresh = k.model();
        let mut m = k.model();
        let (xs, ys): (Vec<_>, Vec<_>) = toy(64, 5).into_iter().unzip();
        let mut preds = Vec::new();
        m.learn_batch(&xs, &ys, &mut preds);
        // Gradient-trained kinds have a learning rate; the forest has none.
        let gradient_trained = matches!(k.make, Make::Diff(_));
        assert_eq!(
            m.learning_rate().is_some_and(|lr| lr > 0.0),
            gradient_trained,
            "{}",
            k.name
        );
        let seen = groups(m.as_ref());
        assert!(!seen.is_empty(), "{}", k.name);
        for (tag, values) in &seen {
            assert!(
                !tag.is_empty() && !tag.starts_with('/'),
                "{}: {tag}",
                k.name
            );
            assert!(values.iter().all(|v| v.is_finite()), "{}: {tag}", k.name);
        }
        let nonzero =
            |g: &[(String, Vec<f32>)]| g.iter().flat_map(|(_, v)| v).filter(|v| **v != 0.0).count();
        assert!(
            nonzero(&seen) > nonzero(&groups(fresh.as_ref())),
            "{}",
            k.name
        );
        // The cheap gradient-only view is exactly inspect's gradient groups.
        let mut only = Vec::new();
        m.inspect_gradients(&mut |tag, values| only.push((tag.to_string(), values.to_vec())));
        let from_inspect: Vec<_> = seen
            .iter()
            .filter(|(t, _)| t.starts_with("gradients/"))
            .cloned()
            .collect();
        assert_eq!(only, from_inspect, "{}", k.name);
        if k.minibatch {
            let grads: Vec<_> = seen
                .iter()
                .filter(|(t, _)| t.starts_with("gradients/"))
                .collect();
            assert!(!grads.is_empty(), "{}: no gradients", k.name);
            assert!(
                grads.iter().any(|(_, v)| v.iter().any(|g| *g != 0.0)),
                "{}",
                k.name
            );
        }
    }
}

/// Every kind, both ways of opening: a truncated file, a flipped bit, and a NaN parameter
/// under a recomputed checksum are refused.
#[test]
fn opening_refuses_truncated_corrupt_and_non_finite_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    for k in KINDS {
        let m = trained(k);
        let bytes = save(m.as_ref(), 7);
        let x = &toy(1, 21)[0].0;
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(mut nan) = trained_diff(k) {
            let (_, grad) = nan.loss_and_grad(x, 1.0);
            nan.set_param(grad[0].0, f64::NAN);
            cases.push(("non-finite".into(), save(nan.as_ref(), 7)));
        }
        let step = (bytes.len() / 23).max(1);
        for len in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
            cases.push((format!("truncated to {len}"), bytes[..len].to_vec()));
        }
        for i in (0..bytes.len()).step_by(step) {
            let mut b = bytes.clone();
            b[i] ^= 0x04;
            cases.push((format!("bit flip at {i}"), b));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        cases.push(("one byte longer".into(), longer));
        for (what, b) in cases {
            std::fs::write(&path, &b).unwrap();
            for scratch in [Some(dir.path()), None] {
                match open(&path, scratch) {
                    Err(OpenError::Model { .. }) => {}
                    other => panic!(
                        "{} {what} (scratch {}): {other:?}",
                        k.name,
                        scratch.is_some()
                    ),
                }
            }
        }
    }
    let missing = open(&dir.path().join("absent.bin"), None).unwrap_err();
    assert!(matches!(missing, OpenError::Io { .. }), "{missing}");
    assert!(missing.to_string().contains("absent.bin"), "{missing}");
}

#[test]
fn a_nan_parameter_fails_the_finite_check_and_the_decoder() {
    for k in KINDS {
        let Some(d) = trained_diff(k) else {
            continue; // the forest's own tests inject non-finite statistics
        };
        let x = &toy(1, 21)[0].0;
        let (_, grad) = d.loss_and_grad(x, 1.0);
        assert!(!grad.is_empty(), "{}", k.name);
        // The last, first and middle parameters the example touches (for the deep kinds: a
        // wide weight, a dense weight, an embedding coordinate or dense parameter).
        for at in [grad.len() - 1, 0, grad.len() / 2] {
            let mut m = trained_diff(k).expect("differentiable");
            assert!(m.is_finite(), "{}", k.name);
            let id = grad[at].0;
            m.set_param(id, f64::NAN);
            assert!(!m.is_finite(), "{}: NaN parameter {id} not noticed", k.name);
            let p = m.predict(x);
            assert!((0.0..=1.0).contains(&p), "{}: {p}", k.name);
            assert!(
                matches!(load(&save(m.as_ref(), 1)), Err(ModelError::Body(_))),
                "{}: a NaN parameter {id} loaded",
                k.name
            );
        }
    }
}

/// Per-example kinds: `learn_batch` is `learn` example by example, bit for bit (predictions and
/// state), whatever the batch size. (A mini-batch kind takes one step per batch instead: see
/// the two tests below.)
/// Every kind: `predict_batch` gives `predict` of each example, in order (bit for bit for the
/// kinds that keep the default, up to float rounding for batched matrix products).
#[test]
fn predict_batch_equals_predicting_one_by_one() {
    for k in KINDS {
        let m = trained(k);
        let (xs, _): (Vec<_>, Vec<_>) = toy(600, 33).into_iter().unzip();
        let one: Vec<f64> = xs.iter().map(|x| m.predict(x)).collect();
        let mut batch = vec![0.25];
        m.predict_batch(&xs, &mut batch);
        assert_eq!(batch.len(), 601, "{}: appended", k.name);
        assert_eq!(batch[0], 0.25);
        for (i, (a, b)) in one.iter().zip(&batch[1..]).enumerate() {
            assert!((a - b).abs() < 1e-5, "{} example {i}: {a} vs {b}", k.name);
            if !k.minibatch {
                assert_eq!(a.to_bits(), b.to_bits(), "{} example {i}", k.name);
            }
        }
    }
}

#[test]
fn learn_batch_equals_learning_one_by_one() {
    for k in KINDS.iter().filter(|k| !k.minibatch) {
        let data = toy(120, 31);
        let (xs, ys): (Vec<_>, Vec<_>) = data.into_iter().unzip();
        let mut a = k.model();
        let pa: Vec<f64> = xs.iter().zip(&ys).map(|(x, y)| a.learn(x, *y)).collect();
        let mut b = k.model();
        let mut pb = Vec::new();
        for (cx, cy) in xs.chunks(16).zip(ys.chunks(16)) {
            b.learn_batch(cx, cy, &mut pb);
        }
        assert_eq!(pa, pb, "{}", k.name);
        assert_eq!(body(a.as_ref()), body(b.as_ref()), "{}", k.name);
    }
}

/// Every kind: `learn_batch` on batches of one is exactly `learn` (predictions and state, bit
/// for bit).
#[test]
fn learn_batch_of_one_equals_learn() {
    for k in KINDS {
        let data = toy(120, 32);
        let mut a = k.model();
        let mut b = k.model();
        let mut pb = Vec::new();
        for (x, y) in &data {
            let pa = a.learn(x, *y);
            b.learn_batch(std::slice::from_ref(x), std::slice::from_ref(y), &mut pb);
            assert_eq!(
                pb.last().map(|p| p.to_bits()),
                Some(pa.to_bits()),
                "{}",
                k.name
            );
        }
        assert_eq!(pb.len(), data.len(), "{}", k.name);
        assert_eq!(body(a.as_ref()), body(b.as_ref()), "{}", k.name);
    }
}

/// Every kind: `learn_batch` appends one pre-update prediction per example (progressive
/// validation): for a mini-batch kind, what `predict` said before the batch (the batch forward
/// path may round differently from `predict`: 1e-6); for a per-example kind, exactly what
/// `predict` said just before that example's own update. The step is deterministic (a copy
/// taking the same batch ends bit-identical) and changes the model.
#[test]
fn learn_batch_returns_pre_update_predictions() {
    for k in KINDS {
        let data = toy(120, 33);
        let mut m = k.model();
        let mut shadow = k.model();
        let mut preds = vec![-1.0];
        for chunk in data.chunks(16) {
            let (xs, ys): (Vec<_>, Vec<_>) = chunk.iter().cloned().unzip();
            let expected: Vec<f64> = if k.minibatch {
                xs.iter().map(|x| m.predict(x)).collect()
            } else {
                xs.iter()
                    .zip(&ys)
                    .map(|(x, y)| {
                        let p = shadow.predict(x);
                        shadow.learn(x, *y);
                        p
                    })
                    .collect()
            };
            let before = body(m.as_ref());
            let mut copy = m.clone_box();
            let start = preds.len();
            m.learn_batch(&xs, &ys, &mut preds);
            assert_eq!(preds.len(), start + xs.len(), "{}", k.name);
            for (i, (&got, &want)) in preds[start..].iter().zip(&expected).enumerate() {
                if k.minibatch {
                    assert!(
                        (got - want).abs() <= 1e-6,
                        "{} example {i}: batch {got} vs predict {want}",
                        k.name
                    );
                } else {
                    assert_eq!(got.to_bits(), want.to_bits(), "{} example {i}", k.name);
                }
            }
            let mut again = Vec::new();
            copy.learn_batch(&xs, &ys, &mut again);
            assert_eq!(again, preds[start..], "{}", k.name);
            assert_eq!(body(copy.as_ref()), body(m.as_ref()), "{}", k.name);
            assert_ne!(
                before,
                body(m.as_ref()),
                "{}: the batch changed nothing",
                k.name
            );
        }
        assert_eq!(preds[0], -1.0, "{}: appended, not overwritten", k.name);
    }
}

/// Every kind also learns when trained by mini-batches of 16.
#[test]
fn loss_decreases_when_learning_by_batches() {
    for k in KINDS {
        let mut m = k.model();
        let test = toy(200, 99);
        let before = mean_logloss(m.as_ref(), &test);
        let (xs, ys): (Vec<_>, Vec<_>) = toy(200, 5).into_iter().unzip();
        for _ in 0..10 {
            for (cx, cy) in xs.chunks(16).zip(ys.chunks(16)) {
                m.learn_batch(cx, cy, &mut Vec::new());
            }
        }
        let after = mean_logloss(m.as_ref(), &test);
        println!(
            "{} (batches of 16): logloss {before:.4} -> {after:.4}",
            k.name
        );
        assert!(
            after < 0.5 * before && after < 0.3,
            "{}: {before} -> {after}",
            k.name
        );
        assert!(m.is_finite());
    }
}

fn wild_vector() -> impl Strategy<Value = FeatureVector> {
    let value = prop_oneof![
        Just(1.0f32),
        -10.0f32..10.0,
        Just(0.0),
        Just(f32::MAX),
        Just(-f32::MAX),
        Just(1e30),
        Just(f32::MIN_POSITIVE),
    ];
    // Small index range: many repeated indices; some beyond DIM; any field id.
    let entry = (
        0u32..(DIM as u32 + 8),
        prop_oneof![0u16..8, any::<u16>()],
        value,
    );
    proptest::collection::vec(entry, 0..24).prop_map(|es| {
        let mut x = FeatureVector::default();
        for (i, f, v) in es {
            x.push_field(f, i, v);
        }
        x
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn predictions_are_probabilities_for_any_vector(
        xs in proptest::collection::vec((wild_vector(), any::<bool>()), 1..12)
    ) {
        for k in KINDS {
            let mut m = trained(k);
            for (x, y) in &xs {
                let p = m.predict(x);
                prop_assert!((0.0..=1.0).contains(&p), "{}: predict {p}", k.name);
                let q = m.learn(x, f32::from(u8::from(*y)));
                prop_assert!((0.0..=1.0).contains(&q), "{}: learn {q}", k.name);
            }
            for (x, _) in &xs {
                let p = m.predict(x);
                prop_assert!((0.0..=1.0).contains(&p), "{}: after learning {p}", k.name);
            }
            // Whatever it learned from, a finite model saves and loads (nothing it holds is
            // refused by its own decoder) and predicts the same; one that is not finite (the
            // gate rejects it) is refused.
            let loaded = load(&save(m.as_ref(), 1));
            if m.is_finite() {
                let (_, back) =
                    loaded.map_err(|e| TestCaseError::fail(format!("{}: {e}", k.name)))?;
                for (x, _) in &xs {
                    let (b, a) = (back.predict(x), m.predict(x));
                    prop_assert_eq!(b.to_bits(), a.to_bits(), "{}", k.name);
                }
            } else {
                prop_assert!(matches!(loaded, Err(ModelError::Body(_))), "{}", k.name);
            }
        }
    }

    /// Random mutations of a valid file, with the checksum (and body length) recomputed so the
    /// body decoder is reached: never a panic; what loads re-encodes to its own body and
    /// predicts probabilities (what the fuzz target checks).
    #[test]
    fn mutated_bodies_never_panic(
        kind in 0..KINDS.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut m = KINDS[kind].model();
        for (x, y) in toy(5, 1) {
            m.learn(&x, y);
        }
        let file = save(m.as_ref(), 1);
        let mut content = file[..file.len() - 8].to_vec();
        for (at, byte) in &edits {
            // Mostly the first 96 bytes (header and body parameters), sometimes anywhere.
            let span = if byte % 4 == 0 { content.len() } else { content.len().min(96) };
            let i = at.index(span);
            content[i] = *byte;
        }
        if let Some(c) = cut {
            content.truncate(32 + c.index(content.len() - 32));
        }
        let body_len = (content.len() - 32) as u64;
        content[24..32].copy_from_slice(&body_len.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&content);
        content.extend_from_slice(&sum.to_le_bytes());
        if let Ok((_, back)) = load(&content) {
            prop_assert_eq!(&body(back.as_ref())[..], &content[32..content.len() - 8]);
            let mut all = FeatureVector::default();
            for i in 0..back.dim().min(256) {
                let mut one = FeatureVector::default();
                one.push(i as u32, 1.0);
                prop_assert!((0.0..=1.0).contains(&back.predict(&one)));
                all.push_field((i % 7) as u16, i as u32, 1.0);
            }
            prop_assert!((0.0..=1.0).contains(&back.predict(&all)));
        }
    }
}
