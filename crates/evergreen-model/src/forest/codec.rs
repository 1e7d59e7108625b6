//! The forest's body in the model file (`docs/formats.md`, "Forest body"): hyperparameters,
//! field kinds, then each slot (tree, optional background tree, vote statistics, both ADWIN
//! detectors, random state, counters) and the event log. Little-endian throughout; decoding
//! checks every count against the bytes left and every structural rule a tree relies on
//! (children after their parent, each node the child of exactly one split, observers matching
//! their field's kind), so a crafted body is refused, never a panic or a huge allocation.

use super::observer::{Gaussian, HIST_BINS, Histogram, Moments, Nominal, Observer};
use super::tree::{Branches, Leaf, Node, Tree};
use super::{
    Criterion, Event, EventKind, Forest, ForestParams, LeafPrediction, MAX_EVENTS, NumericObserver,
    Slot, usable,
};
use crate::common::SplitMix64;
use crate::format::Reader;
use evergreen_core::FieldKind;
use evergreen_eval::drift::{Adwin, AdwinState};
use std::collections::VecDeque;

/// Body layout version (inside format version 1). Version 2 added `max_share_to_split` after
/// `max_depth` (a version 1 body loads with 1.0: no such limit, as it was trained) and the
/// value-against-rest split (tag 3).
const BODY_VERSION: u32 = 2;

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("counts fit u32"));
    }
    fn dist(&mut self, d: &[f64; 2]) {
        self.f64(d[0]);
        self.f64(d[1]);
    }
}

pub(crate) fn encode(f: &Forest, out: &mut Vec<u8>) {
    let mut w = W(out);
    w.u32(BODY_VERSION);
    let p = &f.params;
    w.u64(p.trees as u64);
    w.u64(p.max_features as u64);
    w.f64(p.lambda);
    w.f64(p.grace_period);
    w.f64(p.delta);
    w.f64(p.tau);
    w.u8(match p.criterion {
        Criterion::InfoGain => 0,
        Criterion::Gini => 1,
    });
    w.u8(match p.leaf_prediction {
        LeafPrediction::Majority => 0,
        LeafPrediction::NaiveBayes => 1,
        LeafPrediction::AdaptiveNaiveBayes => 2,
    });
    w.u8(match p.numeric_observer {
        NumericObserver::Gaussian => 0,
        NumericObserver::Histogram => 1,
    });
    w.u64(p.split_points as u64);
    w.f64(p.min_branch_fraction);
    w.u32(p.max_depth.unwrap_or(0));
    w.f64(p.max_share_to_split);
    w.u64(p.max_bytes);
    w.f64(p.warning_delta);
    w.f64(p.drift_delta);
    w.u8(u8::from(p.weighted_vote));
    w.f64(p.leaf_prior);
    w.u64(p.seed);
    w.u64(f.dim as u64);
    w.len(f.kinds.len());
    for k in &f.kinds {
        w.u8(match k {
            FieldKind::Unused => 0,
            FieldKind::Numeric => 1,
            FieldKind::Categorical => 2,
        });
    }
    w.u64(f.examples);
    for s in &f.slots {
        tree(&mut w, &s.tree);
        match &s.background {
            Some(t) => {
                w.u8(1);
                tree(&mut w, t);
            }
            None => w.u8(0),
        }
        w.f64(s.correct);
        w.f64(s.seen);
        adwin(&mut w, &s.warning);
        adwin(&mut w, &s.drift);
        w.u64(s.rng.0);
        w.u64(s.warnings);
        w.u64(s.replacements);
    }
    w.len(f.events.len());
    for e in &f.events {
        w.u64(e.example);
        w.u32(e.tree);
        w.u8(match e.kind {
            EventKind::Warning => 0,
            EventKind::Replaced => 1,
            EventKind::Reset => 2,
        });
    }
}

fn adwin(w: &mut W<'_>, a: &Adwin) {
    let s = a.state();
    w.f64(s.delta);
    w.u64(s.clock);
    w.f64(s.total);
    w.f64(s.variance);
    w.u64(s.ticks);
    w.u64(s.detections);
    w.f64(s.last_shift);
    w.len(s.rows.len());
    for row in &s.rows {
        w.len(row.len());
        for &(t, v) in row {
            w.f64(t);
            w.f64(v);
        }
    }
}

fn tree(w: &mut W<'_>, t: &Tree) {
    w.u64(t.created_at);
    w.u32(t.since_check);
    w.u8(u8::from(t.growth));
    w.len(t.nodes.len());
    for n in &t.nodes {
        match n {
            Node::Split {
                field,
                branches,
                stats,
                depth,
                merit,
                missing,
            } => {
                w.u16(*field);
                w.dist(stats);
                w.u32(*depth);
                w.f64(*merit);
                w.u32(*missing);
                match branches {
                    Branches::Threshold {
                        threshold,
                        left,
                        right,
                    } => {
                        w.u8(1);
                        w.f64(*threshold);
                        w.u32(*left);
                        w.u32(*right);
                    }
                    Branches::Equals { value, eq, ne } => {
                        w.u8(3);
                        w.u32(*value);
                        w.u32(*eq);
                        w.u32(*ne);
                    }
                    Branches::Values { values, children } => {
                        w.u8(2);
                        w.len(values.len());
                        for (&v, &c) in values.iter().zip(children) {
                            w.u32(v);
                            w.u32(c);
                        }
                    }
                }
            }
            Node::Leaf(l) => {
                w.u16(u16::MAX);
                w.dist(&l.stats);
                w.u32(l.depth);
                w.f64(l.last_eval);
                w.u8(u8::from(l.active));
                w.f64(l.mc_correct);
                w.f64(l.nb_correct);
                w.len(l.fields.len());
                for (&f, o) in l.fields.iter().zip(&l.observers) {
                    w.u16(f);
                    match o {
                        Observer::Gaussian(g) => {
                            w.u8(0);
                            for c in 0..2 {
                                let m = &g.classes[c];
                                w.f64(m.w);
                                w.f64(m.mean);
                                w.f64(m.m2);
                                w.f64(g.min[c]);
                                w.f64(g.max[c]);
                            }
                        }
                        Observer::Histogram(h) => {
                            w.u8(1);
                            w.f64(h.lo);
                            w.f64(h.width);
                            for d in &h.bins {
                                w.dist(d);
                            }
                        }
                        Observer::Nominal(o) => {
                            w.u8(2);
                            w.dist(&o.class_totals);
                            w.len(o.values.len());
                            for (&v, d) in o.values.iter().zip(&o.dists) {
                                w.u32(v);
                                w.dist(d);
                            }
                        }
                    }
                }
            }
        }
    }
}

struct R<'a>(Reader<'a>);

impl R<'_> {
    fn u8(&mut self) -> Option<u8> {
        self.0.bytes(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.0.u16()
    }
    fn u32(&mut self) -> Option<u32> {
        self.0.u32()
    }
    fn u64(&mut self) -> Option<u64> {
        self.0.u64()
    }
    fn f64(&mut self) -> Option<f64> {
        self.0.f64()
    }
    /// A finite non-negative number.
    fn weight(&mut self) -> Option<f64> {
        self.f64().filter(|v| v.is_finite() && *v >= 0.0)
    }
    fn finite(&mut self) -> Option<f64> {
        self.f64().filter(|v| v.is_finite())
    }
    fn dist(&mut self) -> Option<[f64; 2]> {
        Some([self.weight()?, self.weight()?])
    }
    /// A count of items of at least `item` bytes each, checked against the bytes left.
    fn len(&mut self, item: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(item)? <= self.0.remaining()).then_some(n)
    }
    fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

pub(crate) fn decode(body: &[u8]) -> Option<Forest> {
    let mut r = R(Reader::new(body));
    let version = r.u32()?;
    if !(1..=BODY_VERSION).contains(&version) {
        return None;
    }
    let trees = usize::try_from(r.u64()?).ok()?;
    let max_features = usize::try_from(r.u64()?).ok()?;
    let lambda = r.f64()?;
    let grace_period = r.f64()?;
    let delta = r.f64()?;
    let tau = r.f64()?;
    let criterion = match r.u8()? {
        0 => Criterion::InfoGain,
        1 => Criterion::Gini,
        _ => return None,
    };
    let leaf_prediction = match r.u8()? {
        0 => LeafPrediction::Majority,
        1 => LeafPrediction::NaiveBayes,
        2 => LeafPrediction::AdaptiveNaiveBayes,
        _ => return None,
    };
    let numeric_observer = match r.u8()? {
        0 => NumericObserver::Gaussian,
        1 => NumericObserver::Histogram,
        _ => return None,
    };
    let split_points = usize::try_from(r.u64()?).ok()?;
    let min_branch_fraction = r.f64()?;
    let max_depth = Some(r.u32()?).filter(|d| *d > 0);
    let max_share_to_split = if version >= 2 { r.f64()? } else { 1.0 };
    let max_bytes = r.u64()?;
    let warning_delta = r.f64()?;
    let drift_delta = r.f64()?;
    let weighted_vote = r.bool()?;
    let leaf_prior = r.f64()?;
    let seed = r.u64()?;
    let params = ForestParams {
        trees,
        max_features,
        lambda,
        grace_period,
        delta,
        tau,
        criterion,
        leaf_prediction,
        numeric_observer,
        split_points,
        min_branch_fraction,
        max_depth,
        max_share_to_split,
        max_bytes,
        warning_delta,
        drift_delta,
        weighted_vote,
        leaf_prior,
        seed,
    };
    params.validate().ok()?;
    let dim = usize::try_from(r.u64()?).ok()?;
    let nk = r.len(1)?;
    let kinds = (0..nk)
        .map(|_| match r.u8()? {
            0 => Some(FieldKind::Unused),
            1 => Some(FieldKind::Numeric),
            2 => Some(FieldKind::Categorical),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    let attrs = usable(&kinds);
    if attrs.is_empty() || kinds.len() > usize::from(u16::MAX) {
        return None;
    }
    let examples = r.u64()?;
    // A slot takes well over 64 bytes: checked before allocating.
    if trees.checked_mul(64)? > r.0.remaining() {
        return None;
    }
    let mut slots = Vec::with_capacity(trees);
    for _ in 0..trees {
        let tree_ = read_tree(&mut r, &kinds, version)?;
        let background = if r.bool()? {
            Some(read_tree(&mut r, &kinds, version)?)
        } else {
            None
        };
        let correct = r.weight()?;
        let seen = r.weight()?;
        if correct > seen {
            return None;
        }
        let warning = read_adwin(&mut r)?;
        let drift = read_adwin(&mut r)?;
        let rng = SplitMix64(r.u64()?);
        let warnings = r.u64()?;
        let replacements = r.u64()?;
        slots.push(Slot {
            tree: tree_,
            background,
            correct,
            seen,
            warning,
            drift,
            rng,
            warnings,
            replacements,
        });
    }
    let ne = r.len(13)?;
    if ne > MAX_EVENTS {
        return None;
    }
    let mut events = VecDeque::with_capacity(ne);
    for _ in 0..ne {
        let example = r.u64()?;
        let tree = r.u32()?;
        let kind = match r.u8()? {
            0 => EventKind::Warning,
            1 => EventKind::Replaced,
            2 => EventKind::Reset,
            _ => return None,
        };
        if tree as usize >= trees || example > examples {
            return None;
        }
        events.push_back(Event {
            example,
            tree,
            kind,
        });
    }
    if r.0.remaining() != 0 {
        return None;
    }
    Some(Forest {
        params,
        kinds,
        attrs,
        dim,
        slots,
        examples,
        events,
    })
}

fn read_adwin(r: &mut R<'_>) -> Option<Adwin> {
    let delta = r.f64()?;
    let clock = r.u64()?;
    let total = r.f64()?;
    let variance = r.f64()?;
    let ticks = r.u64()?;
    let detections = r.u64()?;
    let last_shift = r.f64()?;
    let nrows = r.len(4)?;
    let mut rows = Vec::with_capacity(nrows);
    for _ in 0..nrows {
        let n = r.len(16)?;
        let mut row = Vec::with_capacity(n);
        for _ in 0..n {
            row.push((r.f64()?, r.f64()?));
        }
        rows.push(row);
    }
    Adwin::from_state(&AdwinState {
        delta,
        clock,
        rows,
        total,
        variance,
        ticks,
        detections,
        last_shift,
    })
}

fn read_tree(r: &mut R<'_>, kinds: &[FieldKind], version: u32) -> Option<Tree> {
    let created_at = r.u64()?;
    let since_check = r.u32()?;
    let growth = r.bool()?;
    // A node takes at least 30 bytes.
    let n = r.len(30)?;
    if n == 0 {
        return None;
    }
    let mut nodes = Vec::with_capacity(n);
    // parent_of[i]: set when a split names node i as a child.
    let mut has_parent = vec![false; n];
    let mut claim = |parent: usize, child: u32| -> Option<()> {
        let c = child as usize;
        if c <= parent || c >= n || has_parent[c] {
            return None;
        }
        has_parent[c] = true;
        Some(())
    };
    for i in 0..n {
        let field = r.u16()?;
        if field != u16::MAX {
            let kind = kinds.get(usize::from(field)).copied()?;
            let stats = r.dist()?;
            let depth = r.u32()?;
            let merit = r.finite()?;
            let missing = r.u32()?;
            // The two children of a binary split, claimed; missing values follow one of them.
            let mut pair = |r: &mut R<'_>| -> Option<(u32, u32)> {
                let (a, b) = (r.u32()?, r.u32()?);
                claim(i, a)?;
                claim(i, b)?;
                (missing == a || missing == b).then_some((a, b))
            };
            let branches = match (r.u8()?, kind) {
                (1, FieldKind::Numeric) => {
                    let threshold = r.finite()?;
                    let (left, right) = pair(r)?;
                    Branches::Threshold {
                        threshold,
                        left,
                        right,
                    }
                }
                (2, FieldKind::Categorical) => {
                    let m = r.len(8)?;
                    let mut values = Vec::with_capacity(m);
                    let mut children = Vec::with_capacity(m);
                    for _ in 0..m {
                        let v = r.u32()?;
                        let c = r.u32()?;
                        if values.last().is_some_and(|&last| last >= v) {
                            return None;
                        }
                        claim(i, c)?;
                        values.push(v);
                        children.push(c);
                    }
                    if !children.contains(&missing) {
                        return None;
                    }
                    Branches::Values { values, children }
                }
                (3, FieldKind::Categorical) if version >= 2 => {
                    let value = r.u32()?;
                    let (eq, ne) = pair(r)?;
                    Branches::Equals { value, eq, ne }
                }
                _ => return None,
            };
            nodes.push(Node::Split {
                field,
                branches,
                stats,
                depth,
                merit,
                missing,
            });
        } else {
            let stats = r.dist()?;
            let depth = r.u32()?;
            let last_eval = r.weight()?;
            let active = r.bool()?;
            let mc_correct = r.weight()?;
            let nb_correct = r.weight()?;
            let m = r.len(3)?;
            if m > usize::from(u16::MAX) {
                return None;
            }
            let mut fields = Vec::with_capacity(m);
            let mut observers = Vec::with_capacity(m);
            for _ in 0..m {
                let f = r.u16()?;
                let kind = kinds.get(usize::from(f)).copied()?;
                let obs = match (r.u8()?, kind) {
                    (0, FieldKind::Numeric) => {
                        let mut g = Gaussian::default();
                        for c in 0..2 {
                            g.classes[c] = Moments {
                                w: r.weight()?,
                                mean: r.finite()?,
                                m2: r.weight()?,
                            };
                            g.min[c] = r.f64()?;
                            g.max[c] = r.f64()?;
                            if g.min[c].is_nan() || g.max[c].is_nan() {
                                return None;
                            }
                        }
                        Observer::Gaussian(g)
                    }
                    (1, FieldKind::Numeric) => {
                        let lo = r.f64()?;
                        let width = r.weight()?;
                        if lo.is_infinite() || (lo.is_nan() && width != 0.0) {
                            return None;
                        }
                        let mut bins = Vec::with_capacity(HIST_BINS);
                        for _ in 0..HIST_BINS {
                            bins.push(r.dist()?);
                        }
                        Observer::Histogram(Histogram { lo, width, bins })
                    }
                    (2, FieldKind::Categorical) => {
                        let class_totals = r.dist()?;
                        let k = r.len(20)?;
                        let mut values = Vec::with_capacity(k);
                        let mut dists = Vec::with_capacity(k);
                        for _ in 0..k {
                            let v = r.u32()?;
                            if values.last().is_some_and(|&last| last >= v) {
                                return None;
                            }
                            values.push(v);
                            dists.push(r.dist()?);
                        }
                        Observer::Nominal(Nominal {
                            values,
                            dists,
                            class_totals,
                        })
                    }
                    _ => return None,
                };
                fields.push(f);
                observers.push(obs);
            }
            nodes.push(Node::Leaf(Box::new(Leaf {
                stats,
                depth,
                last_eval,
                active,
                fields,
                observers,
                mc_correct,
                nb_correct,
            })));
        }
    }
    // Every node but the root hangs from exactly one split: a tree.
    if has_parent[0] || has_parent[1..].iter().any(|p| !p) {
        return None;
    }
    let mut tree = Tree {
        nodes,
        created_at,
        since_check,
        growth,
        bytes: 0,
    };
    tree.bytes = tree.bytes();
    Some(tree)
}
