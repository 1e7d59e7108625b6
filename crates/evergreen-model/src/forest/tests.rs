//! Known-answer and behaviour tests of the Hoeffding tree and the adaptive random forest (the
//! model-trait checks every kind passes are in `tests/conformance.rs`).

use super::observer::Observer;
use super::tree::{Branches, Node, Tree, hoeffding_bound};
use super::*;
use crate::{Model, load, save};
use evergreen_core::FieldKind::{Categorical, Numeric, Unused};

fn ctx<'a>(params: &'a ForestParams, kinds: &'a [FieldKind], attrs: &'a [u16]) -> Ctx<'a> {
    Ctx {
        params,
        kinds,
        attrs,
        subspace: attrs.len(),
        tree_budget: usize::MAX,
    }
}

/// Two categorical attributes over a period of 8 examples, 4 of each class:
/// field 1: value 1 holds [4 negatives, 2 positives], value 2 [0, 2]: gain 1 - 3/4·H(1/3)
/// = 0.31128; field 2: value 1 [3, 1], value 2 [1, 3]: gain 1 - H(1/4) = 0.18872.
fn periodic(i: usize) -> ([Attr; 3], usize) {
    const A: [(u32, u32, usize); 8] = [
        (1, 1, 0),
        (1, 1, 0),
        (1, 1, 0),
        (1, 2, 0),
        (1, 2, 1),
        (1, 2, 1),
        (2, 2, 1),
        (2, 1, 1),
    ];
    let (a, b, y) = A[i % 8];
    ([Attr::Missing, Attr::Cat(a), Attr::Cat(b)], y)
}

#[test]
fn a_split_appears_exactly_when_the_hoeffding_bound_allows_it() {
    let g1 = 1.0
        - 0.75 * -((1.0f64 / 3.0) * (1.0f64 / 3.0).log2() + (2.0 / 3.0) * (2.0f64 / 3.0).log2());
    let g2 = 1.0 - -(0.25 * 0.25f64.log2() + 0.75 * 0.75f64.log2());
    let gap = g1 - g2;
    let params = ForestParams {
        grace_period: 40.0,
        delta: 0.01,
        tau: 0.0,
        leaf_prediction: LeafPrediction::Majority,
        ..ForestParams::default()
    };
    let kinds = [Unused, Categorical, Categorical];
    let attrs = [1u16, 2];
    let c = ctx(&params, &kinds, &attrs);
    // Attempts every 40 examples; the first n with gap > ε(n) is the split point.
    let expected = (1..)
        .map(|k| 40 * k)
        .find(|&n| gap > hoeffding_bound(1.0, 0.01, n as f64))
        .unwrap();
    assert_eq!(expected, 160, "gap {gap}");
    let mut t = Tree::new(0);
    let mut rng = SplitMix64(1);
    for i in 0..expected {
        assert!(
            matches!(t.nodes[0], Node::Leaf(_)),
            "split before {expected} examples (at {i})"
        );
        let (row, y) = periodic(i);
        t.learn(&row, y, 1.0, &c, &mut rng);
    }
    match &t.nodes[0] {
        Node::Split {
            field,
            branches: Branches::Values { values, children },
            stats,
            merit,
            ..
        } => {
            assert_eq!(*field, 1, "the better attribute");
            assert_eq!(values, &[1, 2]);
            assert_eq!(*stats, [80.0, 80.0]);
            assert!((merit - g1).abs() < 1e-12, "{merit} vs {g1}");
            let child = |i: u32| match &t.nodes[i as usize] {
                Node::Leaf(l) => l.stats,
                Node::Split { .. } => panic!("a leaf"),
            };
            assert_eq!(child(children[0]), [80.0, 40.0]);
            assert_eq!(child(children[1]), [0.0, 40.0]);
        }
        other => panic!("no split after {expected} examples: {other:?}"),
    }
    // With a stricter δ the bound allows it later: ε(n) = sqrt(ln(1/δ) / 2n).
    let strict = ForestParams {
        delta: 1e-4,
        ..params
    };
    let c = ctx(&strict, &kinds, &attrs);
    let later = (1..)
        .map(|k| 40 * k)
        .find(|&n| gap > hoeffding_bound(1.0, 1e-4, n as f64))
        .unwrap();
    assert_eq!(later, 320);
    let mut t = Tree::new(0);
    for i in 0..later {
        assert!(matches!(t.nodes[0], Node::Leaf(_)), "split at {i}");
        let (row, y) = periodic(i);
        t.learn(&row, y, 1.0, &c, &mut rng);
    }
    assert!(matches!(t.nodes[0], Node::Split { field: 1, .. }));
    // τ breaks ties: with τ above ε(40) = 0.2399 the first attempt splits.
    let tie = ForestParams {
        tau: 0.25,
        ..params
    };
    let c = ctx(&tie, &kinds, &attrs);
    let mut t = Tree::new(0);
    for i in 0..40 {
        let (row, y) = periodic(i);
        t.learn(&row, y, 1.0, &c, &mut rng);
    }
    assert!(matches!(t.nodes[0], Node::Split { field: 1, .. }));
}

#[test]
fn a_numeric_split_separates_two_gaussian_classes_near_their_boundary() {
    let params = ForestParams {
        leaf_prediction: LeafPrediction::Majority,
        ..ForestParams::default()
    };
    let kinds = [Unused, Numeric];
    let attrs = [1u16];
    let c = ctx(&params, &kinds, &attrs);
    let mut t = Tree::new(0);
    let mut rng = SplitMix64(3);
    let mut noise = SplitMix64(4);
    for i in 0..2000 {
        let y = i % 2;
        let x = if y == 1 { 3.0 } else { 1.0 } + (noise.next_f64() - 0.5);
        t.learn(&[Attr::Missing, Attr::Num(x as f32)], y, 1.0, &c, &mut rng);
    }
    match &t.nodes[0] {
        Node::Split {
            branches: Branches::Threshold { threshold, .. },
            ..
        } => assert!((1.4..=2.6).contains(threshold), "{threshold}"),
        other => panic!("{other:?}"),
    }
    assert!(t.predict(&[Attr::Missing, Attr::Num(3.1)], &c).unwrap() > 0.9);
    assert!(t.predict(&[Attr::Missing, Attr::Num(0.9)], &c).unwrap() < 0.1);
    // A missing value follows the heavier branch; an unseen value of no attribute is fine.
    assert!(t.predict(&[Attr::Missing, Attr::Missing], &c).is_some());
}

fn stream(n: usize, seed: u64, flip_at: usize) -> (Vec<FeatureVector>, Vec<f32>) {
    let mut r = SplitMix64(seed);
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let a = r.next_f64();
        let b = r.next_f64();
        let cat = (r.next_u64() % 5) as u32;
        let mut y = (a + 0.3 * f64::from(cat == 2) > 0.6) as u8 as f32;
        if i >= flip_at {
            y = 1.0 - y;
        }
        let mut x = FeatureVector::default();
        x.push_field(1, 0, a as f32);
        x.push_field(2, 0, b as f32);
        x.push_field(3, cat, 1.0);
        xs.push(x);
        ys.push(y);
    }
    (xs, ys)
}

fn kinds() -> Vec<FieldKind> {
    vec![Unused, Numeric, Numeric, Categorical]
}

#[test]
fn training_is_deterministic_whatever_the_threads_and_batches() {
    let (xs, ys) = stream(6000, 5, 3000);
    let mut results = Vec::new();
    for (threads, batch) in [(1, 6000), (2, 6000), (3, 777), (1, 1)] {
        let mut f = Forest::try_new(ForestParams::default(), kinds(), 64).unwrap();
        let mut preds = Vec::new();
        for (cx, cy) in xs.chunks(batch).zip(ys.chunks(batch)) {
            f.learn_parallel(cx, cy, threads, &mut preds);
        }
        let mut body = Vec::new();
        f.encode(&mut body);
        results.push((preds, body, f.summary().events));
    }
    for r in &results[1..] {
        assert!(r.0 == results[0].0, "predictions differ");
        assert!(r.1 == results[0].1, "states differ");
        assert_eq!(r.2, results[0].2);
    }
}

#[test]
fn an_abrupt_concept_flip_replaces_trees_and_the_forest_recovers() {
    let (xs, ys) = stream(40_000, 6, 20_000);
    let mut f = Forest::try_new(ForestParams::default(), kinds(), 64).unwrap();
    let mut preds = Vec::new();
    f.learn_parallel(&xs, &ys, 2, &mut preds);
    let acc = |r: std::ops::Range<usize>| {
        let n = r.len() as f64;
        r.filter(|&i| (preds[i] > 0.5) == (ys[i] > 0.5)).count() as f64 / n
    };
    assert!(acc(15_000..20_000) > 0.85, "{}", acc(15_000..20_000));
    // Until the detectors see it (they test every 32 errors), the old concept answers.
    assert!(acc(20_000..20_030) < 0.3, "{}", acc(20_000..20_030));
    assert!(
        acc(35_000..40_000) > 0.85,
        "recovered: {}",
        acc(35_000..40_000)
    );
    let s = f.summary();
    // Every tree was replaced after the flip.
    let after: std::collections::BTreeSet<u32> = s
        .events
        .iter()
        .filter(|e| e.example > 20_000 && e.kind != EventKind::Warning)
        .map(|e| e.tree)
        .collect();
    assert_eq!(after.len(), 10, "{:?}", s.events);
    assert!(s.replacements >= 10);
    // The attribute the concept uses ranks first.
    assert!(s.importance[1] > s.importance[2], "{:?}", s.importance);
}

#[test]
fn the_memory_budget_holds_on_a_long_stream() {
    // Many distinct category values and numeric noise: an unbounded forest grows large.
    let mut r = SplitMix64(8);
    let n = 120_000;
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let a = r.next_f64();
        let cat = (r.next_u64() % 5000) as u32;
        let mut x = FeatureVector::default();
        x.push_field(1, 0, a as f32);
        x.push_field(2, 0, r.next_f64() as f32);
        x.push_field(3, cat, 1.0);
        xs.push(x);
        ys.push(f32::from(u8::from((a > 0.5) ^ cat.is_multiple_of(3))));
    }
    let run = |max_bytes: u64| {
        let params = ForestParams {
            trees: 4,
            max_bytes,
            ..ForestParams::default()
        };
        let mut f = Forest::try_new(params, kinds(), 64).unwrap();
        let mut preds = Vec::new();
        let mut peak = 0;
        for (cx, cy) in xs.chunks(5000).zip(ys.chunks(5000)) {
            f.learn_parallel(cx, cy, 2, &mut preds);
            peak = peak.max(f.summary().bytes);
        }
        (peak, f)
    };
    let (unbounded, _) = run(1 << 40);
    let budget = 1 << 20;
    let (bounded, f) = run(budget);
    assert!(unbounded > 4 * budget as usize, "unbounded {unbounded}");
    assert!(bounded <= budget as usize, "{bounded} > {budget}");
    let s = f.summary();
    assert!(
        s.trees.iter().any(|t| t.active_leaves < t.leaves),
        "no leaf deactivated"
    );
    assert!(f.is_finite());
}

#[test]
fn save_load_continues_identically() {
    let (xs, ys) = stream(8000, 9, 4000);
    let mut a = Forest::try_new(ForestParams::default(), kinds(), 64).unwrap();
    let mut pa = Vec::new();
    a.learn_parallel(&xs[..5000], &ys[..5000], 2, &mut pa);
    // The size kept up to date as the trees grow is the size computed from scratch.
    for s in &a.slots {
        assert_eq!(s.tree.bytes, s.tree.bytes());
    }
    let (_, m) = load(&save(&a, 3)).unwrap();
    let mut b = m.as_any().downcast_ref::<Forest>().unwrap().clone();
    for x in &xs[5000..5200] {
        assert_eq!(a.predict(x).to_bits(), b.predict(x).to_bits());
    }
    let (mut qa, mut qb) = (Vec::new(), Vec::new());
    a.learn_parallel(&xs[5000..], &ys[5000..], 2, &mut qa);
    b.learn_parallel(&xs[5000..], &ys[5000..], 1, &mut qb);
    assert!(qa == qb);
    assert_eq!(a.summary(), b.summary());
}

#[test]
fn non_finite_statistics_are_refused_by_the_finite_check_and_the_decoder() {
    let (xs, ys) = stream(3000, 10, usize::MAX);
    let mut f = Forest::try_new(ForestParams::default(), kinds(), 64).unwrap();
    let mut p = Vec::new();
    f.learn_parallel(&xs, &ys, 1, &mut p);
    assert!(f.is_finite());
    let mut bad = f.clone();
    let leaf = bad.slots[0]
        .tree
        .nodes
        .iter_mut()
        .find_map(|n| match n {
            Node::Leaf(l) if !l.observers.is_empty() => Some(l),
            _ => None,
        })
        .expect("an active leaf");
    if let Observer::Gaussian(g) = &mut leaf.observers[0] {
        g.classes[0].mean = f64::NAN;
    } else {
        leaf.stats[0] = f64::INFINITY;
    }
    assert!(!bad.is_finite());
    assert!(load(&save(&bad, 1)).is_err());
    let mut bad = f.clone();
    bad.slots[3].correct = bad.slots[3].seen + 1.0;
    assert!(load(&save(&bad, 1)).is_err());
}

#[test]
fn hyperparameters_are_validated_and_shape_changes_refused_on_warm_start() {
    let ok = ForestParams::default();
    for bad in [
        ForestParams { trees: 0, ..ok },
        ForestParams { lambda: 0.0, ..ok },
        ForestParams { delta: 1.0, ..ok },
        ForestParams {
            drift_delta: f64::NAN,
            ..ok
        },
        ForestParams {
            grace_period: 0.5,
            ..ok
        },
        ForestParams {
            max_depth: Some(0),
            ..ok
        },
        ForestParams {
            max_bytes: 10,
            ..ok
        },
    ] {
        assert!(Forest::try_new(bad, kinds(), 64).is_err(), "{bad:?}");
    }
    assert!(
        Forest::try_new(ok, vec![Unused], 64).is_err(),
        "no attribute"
    );
    let mut f = Forest::try_new(ok, kinds(), 64).unwrap();
    assert!(f.set_params(ForestParams { trees: 3, ..ok }).is_err());
    assert!(f.set_params(ForestParams { seed: 1, ..ok }).is_err());
    f.set_params(ForestParams {
        grace_period: 100.0,
        ..ok
    })
    .unwrap();
    assert_eq!(f.params().grace_period, 100.0);
    assert_eq!(f.representation(), Representation::Raw);
    assert_eq!(f.field_kinds(), Some(&kinds()[..]));
}

/// The recipe of `examples/write_golden.rs`'s `forest`.
fn golden_forest() -> Forest {
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
        let y = f32::from(u8::from((v > 0.5) ^ (i % 4 == 0) ^ (i >= 300)));
        m.learn(&x, y);
    }
    m
}

#[test]
fn golden_forest_v1_file_loads_predicts_and_is_reproduced() {
    // test-data/forest-v1.bin was written by `write_golden forest`; it must load forever.
    let bytes = include_bytes!("../../test-data/forest-v1.bin");
    let (h, m) = load(bytes).expect("golden forest loads");
    assert_eq!(h.format_version, 1);
    assert_eq!(m.kind(), crate::ModelKind::Forest);
    assert_eq!(m.examples_seen(), 600);
    let pinned = [
        0x3f61_0597_835a_f434u64,
        0x3fe6_00be_d572_a056,
        0x3fc3_c5dd_6c03_964b,
        0x3fb1_bee4_9851_df6f,
    ];
    for (i, want) in (0..4u32).zip(pinned) {
        let mut x = FeatureVector::default();
        x.push_field(1, 0, 0.3 * i as f32);
        x.push_field(2, i, 1.0);
        assert_eq!(m.predict(&x).to_bits(), want, "input {i}");
    }
    // Training is deterministic: the recipe re-creates the file byte for byte.
    assert_eq!(save(&golden_forest(), h.spec_fingerprint), bytes);
    assert!(
        m.as_any()
            .downcast_ref::<Forest>()
            .unwrap()
            .summary()
            .replacements
            > 0
    );
}
