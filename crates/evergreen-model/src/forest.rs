//! Adaptive random forest (Gomes et al., "Adaptive random forests for evolving data stream
//! classification", Machine Learning 2017) of Hoeffding trees, for binary classification over
//! raw feature values (the spec's `representation = "raw"`: numeric values and category ids).
//!
//! Per example and tree (each tree a "slot"):
//! 1. the tree predicts; its vote in the forest's probability is weighted by its accuracy since
//!    it was created (weight 1 while that is 0), as River's `ARFClassifier`;
//! 2. it learns the example with a Poisson(λ) weight (online bagging; λ = 6 as in the paper);
//!    a background tree, when there is one, learns it with the same weight;
//! 3. its 0/1 error goes to two ADWIN detectors: the warning detector (δ = 0.01) starts a
//!    background tree, the drift detector (δ = 0.001) replaces the tree with its background
//!    tree (or a new one), resetting the detectors and the accuracy.
//!
//! Each slot draws from its own random stream (Poisson weights, leaf attribute subsets), and
//! the forest's prediction sums the trees' votes in slot order, so training is deterministic
//! for a seed whatever the number of threads [`Forest::learn_parallel`] uses: slots are split
//! among threads, each thread runs its slots over the whole batch.

mod codec;
mod observer;
mod tree;

#[cfg(test)]
mod tests;

use crate::common::SplitMix64;
use crate::{Model, ModelKind};
use evergreen_core::{FeatureVector, FieldKind, Representation};
use evergreen_eval::drift::Adwin;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use tree::Tree;

pub(crate) use codec::decode;

/// How a leaf splits its weight between candidate splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Information gain (entropy reduction, in bits).
    #[default]
    InfoGain,
    /// Gini impurity reduction.
    Gini,
}

impl Criterion {
    /// Merit of splitting `pre` into `post`; `-inf` when fewer than two branches hold more
    /// than `min_branch_fraction` of the weight.
    pub(crate) fn merit(self, pre: &[f64; 2], post: &[[f64; 2]], min_branch_fraction: f64) -> f64 {
        let all: f64 = post.iter().map(observer::total).sum();
        if all <= 0.0 {
            return f64::NEG_INFINITY;
        }
        let big = post
            .iter()
            .filter(|d| observer::total(d) / all > min_branch_fraction)
            .count();
        if big < 2 {
            return f64::NEG_INFINITY;
        }
        let impurity = |d: &[f64; 2]| {
            let n = d[0] + d[1];
            if n <= 0.0 {
                return 0.0;
            }
            let (p, q) = (d[0] / n, d[1] / n);
            match self {
                Criterion::InfoGain => {
                    let h = |x: f64| if x > 0.0 { -x * x.log2() } else { 0.0 };
                    h(p) + h(q)
                }
                Criterion::Gini => 1.0 - p * p - q * q,
            }
        };
        let after: f64 = post
            .iter()
            .map(|d| observer::total(d) / all * impurity(d))
            .sum();
        impurity(pre) - after
    }
}

/// What a leaf predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeafPrediction {
    /// The (smoothed) class frequencies of the leaf.
    Majority,
    /// Naive Bayes over the leaf's attribute observers.
    NaiveBayes,
    /// Whichever of the two has been right more often at that leaf (River's default `nba`).
    #[default]
    AdaptiveNaiveBayes,
}

/// How a leaf summarises a numeric attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumericObserver {
    /// A normal distribution per class; candidate thresholds equally spaced in the range.
    #[default]
    Gaussian,
    /// Per-class weights in 32 equal-width bins that widen to cover new values; candidate
    /// thresholds at bin edges.
    Histogram,
}

/// Hyperparameters of [`Forest`]; the defaults are those of River's `ARFClassifier` (and of the
/// paper), except `leaf_prior` (River has none) and the byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestParams {
    /// Number of trees.
    #[serde(default = "d_trees")]
    pub trees: usize,
    /// Attributes watched per leaf; 0 (default): round(sqrt(attributes)), at least 1.
    #[serde(default)]
    pub max_features: usize,
    /// λ of the Poisson weight of each example in each tree (online bagging).
    #[serde(default = "d_lambda")]
    pub lambda: f64,
    /// Weight a leaf sees between split attempts.
    #[serde(default = "d_grace")]
    pub grace_period: f64,
    /// δ of the Hoeffding bound (1 - confidence that the best split is best).
    #[serde(default = "d_delta")]
    pub delta: f64,
    /// τ: split anyway when the Hoeffding bound falls below this (a tie).
    #[serde(default = "d_tau")]
    pub tau: f64,
    /// Split criterion.
    #[serde(default)]
    pub criterion: Criterion,
    /// Leaf prediction.
    #[serde(default)]
    pub leaf_prediction: LeafPrediction,
    /// Numeric attribute observer.
    #[serde(default)]
    pub numeric_observer: NumericObserver,
    /// Candidate thresholds per numeric attribute (Gaussian observer).
    #[serde(default = "d_points")]
    pub split_points: usize,
    /// A split needs two branches with more than this share of the weight.
    #[serde(default = "d_branch")]
    pub min_branch_fraction: f64,
    /// Depth limit (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    /// At a split attempt, a leaf whose majority class holds more than this share of its
    /// weight is not split and its observers start over (River's default 0.99; 1 = off).
    #[serde(default = "d_share")]
    pub max_share_to_split: f64,
    /// Memory budget of the whole forest (trees and background trees) in bytes: a tree over
    /// its share stops growing and deactivates its least promising leaves.
    #[serde(default = "d_bytes")]
    pub max_bytes: u64,
    /// δ of each tree's ADWIN warning detector.
    #[serde(default = "d_warning")]
    pub warning_delta: f64,
    /// δ of each tree's ADWIN drift detector.
    #[serde(default = "d_drift")]
    pub drift_delta: f64,
    /// Weight each tree's vote by its accuracy (River's default).
    #[serde(default = "d_true")]
    pub weighted_vote: bool,
    /// Pseudo-count added to each class of a leaf's frequencies, and the bound of naive Bayes'
    /// confidence at a leaf (a leaf of weight n says at most (n + a) / (n + 2a)).
    #[serde(default = "d_prior")]
    pub leaf_prior: f64,
    /// Seed of every random draw.
    #[serde(default)]
    pub seed: u64,
}

fn d_trees() -> usize {
    10
}
fn d_lambda() -> f64 {
    6.0
}
fn d_grace() -> f64 {
    50.0
}
fn d_delta() -> f64 {
    0.01
}
fn d_tau() -> f64 {
    0.05
}
fn d_points() -> usize {
    10
}
fn d_branch() -> f64 {
    0.01
}
fn d_share() -> f64 {
    0.99
}
fn d_bytes() -> u64 {
    256 << 20
}
fn d_warning() -> f64 {
    0.01
}
fn d_drift() -> f64 {
    0.001
}
fn d_true() -> bool {
    true
}
fn d_prior() -> f64 {
    0.05
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            trees: d_trees(),
            max_features: 0,
            lambda: d_lambda(),
            grace_period: d_grace(),
            delta: d_delta(),
            tau: d_tau(),
            criterion: Criterion::default(),
            leaf_prediction: LeafPrediction::default(),
            numeric_observer: NumericObserver::default(),
            split_points: d_points(),
            min_branch_fraction: d_branch(),
            max_depth: None,
            max_share_to_split: d_share(),
            max_bytes: d_bytes(),
            warning_delta: d_warning(),
            drift_delta: d_drift(),
            weighted_vote: true,
            leaf_prior: d_prior(),
            seed: 0,
        }
    }
}

/// Most trees in a forest.
pub const MAX_TREES: usize = 1000;

impl ForestParams {
    /// Checks every range; the message names the parameter.
    pub fn validate(&self) -> Result<(), crate::ShapeError> {
        use crate::ShapeError::Param;
        let prob = |x: f64| x > 0.0 && x < 1.0;
        if self.trees == 0 || self.trees > MAX_TREES {
            return Err(Param("trees", format!("must be 1 to {MAX_TREES}")));
        }
        if !(self.lambda > 0.0 && self.lambda <= 100.0) {
            return Err(Param("lambda", "must be in (0, 100]".into()));
        }
        if !(self.grace_period >= 1.0 && self.grace_period.is_finite()) {
            return Err(Param("grace_period", "must be >= 1".into()));
        }
        for (name, v) in [
            ("delta", self.delta),
            ("warning_delta", self.warning_delta),
            ("drift_delta", self.drift_delta),
        ] {
            if !prob(v) {
                return Err(Param(name, format!("must be in (0, 1) (got {v})")));
            }
        }
        if !(self.tau >= 0.0 && self.tau <= 1.0) {
            return Err(Param("tau", "must be in [0, 1]".into()));
        }
        if self.split_points == 0 || self.split_points > 1000 {
            return Err(Param("split_points", "must be 1 to 1000".into()));
        }
        if !(self.min_branch_fraction >= 0.0 && self.min_branch_fraction < 0.5) {
            return Err(Param("min_branch_fraction", "must be in [0, 0.5)".into()));
        }
        if !(self.max_share_to_split > 0.5 && self.max_share_to_split <= 1.0) {
            return Err(Param("max_share_to_split", "must be in (0.5, 1]".into()));
        }
        if self.max_depth == Some(0) {
            return Err(Param("max_depth", "must be >= 1 when set".into()));
        }
        if self.max_bytes < 1 << 16 {
            return Err(Param("max_bytes", "must be at least 65536".into()));
        }
        if !(self.leaf_prior >= 0.0 && self.leaf_prior <= 1e6) {
            return Err(Param("leaf_prior", "must be in [0, 1e6]".into()));
        }
        if self.max_features > usize::from(u16::MAX) {
            return Err(Param("max_features", "must be at most 65535".into()));
        }
        Ok(())
    }
}

/// One attribute of an example, by field id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Attr {
    Missing,
    Num(f32),
    Cat(u32),
}

/// What trees need besides their own state.
pub(crate) struct Ctx<'a> {
    pub params: &'a ForestParams,
    pub kinds: &'a [FieldKind],
    /// Usable attributes (numeric and categorical field ids).
    pub attrs: &'a [u16],
    /// Attributes per leaf.
    pub subspace: usize,
    /// Bytes each tree may hold.
    pub tree_budget: usize,
}

/// A detector event of one tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The warning detector fired: a background tree started.
    Warning,
    /// The drift detector fired and the background tree replaced the tree.
    Replaced,
    /// The drift detector fired with no background tree: a new tree replaced the tree.
    Reset,
}

/// When a tree's detectors fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Examples the forest had seen (this one included).
    pub example: u64,
    /// Tree (slot) index.
    pub tree: u32,
    /// What happened.
    pub kind: EventKind,
}

/// Most events kept (the newest).
pub const MAX_EVENTS: usize = 256;

/// One tree of the ensemble with its background tree, detectors and vote weight.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub tree: Tree,
    pub background: Option<Tree>,
    /// Weight of examples predicted right, and of all, since `tree` was created.
    pub correct: f64,
    pub seen: f64,
    pub warning: Adwin,
    pub drift: Adwin,
    pub rng: SplitMix64,
    pub warnings: u64,
    pub replacements: u64,
}

impl Slot {
    fn new(params: &ForestParams, index: usize, created_at: u64) -> Self {
        Self {
            tree: Tree::new(created_at),
            background: None,
            correct: 0.0,
            seen: 0.0,
            warning: Adwin::new(params.warning_delta),
            drift: Adwin::new(params.drift_delta),
            rng: SplitMix64(crate::common::mix64(
                params.seed ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F),
            )),
            warnings: 0,
            replacements: 0,
        }
    }

    /// The tree's vote weight.
    fn weight(&self, params: &ForestParams) -> f64 {
        let acc = if self.seen > 0.0 {
            self.correct / self.seen
        } else {
            0.0
        };
        if params.weighted_vote && acc > 0.0 {
            acc
        } else {
            1.0
        }
    }

    /// The tree's weighted vote `(w·p, w)` for a prediction `p` of the tree (nothing when it
    /// cannot predict).
    #[inline]
    fn vote(&self, p: Option<f64>, params: &ForestParams) -> (f64, f64) {
        match p {
            Some(p) => {
                let w = self.weight(params);
                (w * p, w)
            }
            None => (0.0, 0.0),
        }
    }

    /// Progressive step: vote, learn, watch the error. `example` is the forest's count with
    /// this example; events go to `events`.
    fn step(
        &mut self,
        row: &[Attr],
        y: usize,
        ctx: &Ctx<'_>,
        example: u64,
        index: u32,
        events: &mut Vec<Event>,
    ) -> (f64, f64) {
        let p = self.tree.predict(row, ctx);
        let vote = self.vote(p, ctx.params);
        let right = p.is_some_and(|p| usize::from(p > 0.5) == y);
        self.seen += 1.0;
        if right {
            self.correct += 1.0;
        }
        let k = poisson(ctx.params.lambda, &mut self.rng);
        if k > 0 {
            let w = f64::from(k);
            if let Some(bg) = &mut self.background {
                bg.learn(row, y, w, ctx, &mut self.rng);
            }
            self.tree.learn(row, y, w, ctx, &mut self.rng);
        }
        let err = if right { 0.0 } else { 1.0 };
        if self.warning.update(err) {
            self.background = Some(Tree::new(example));
            self.warning = Adwin::new(ctx.params.warning_delta);
            self.warnings += 1;
            events.push(Event {
                example,
                tree: index,
                kind: EventKind::Warning,
            });
        }
        if self.drift.update(err) {
            let kind = match self.background.take() {
                Some(bg) => {
                    self.tree = bg;
                    EventKind::Replaced
                }
                None => {
                    self.tree = Tree::new(example);
                    EventKind::Reset
                }
            };
            self.warning = Adwin::new(ctx.params.warning_delta);
            self.drift = Adwin::new(ctx.params.drift_delta);
            self.correct = 0.0;
            self.seen = 0.0;
            self.replacements += 1;
            events.push(Event {
                example,
                tree: index,
                kind,
            });
        }
        vote
    }
}

/// Knuth's Poisson sampler (as River's `poisson`); λ is at most 100.
fn poisson(lambda: f64, rng: &mut SplitMix64) -> u32 {
    let l = (-lambda).exp();
    let mut k = 0u32;
    let mut p = 1.0;
    loop {
        p *= rng.next_f64();
        if p <= l || k >= 1000 {
            return k;
        }
        k += 1;
    }
}

/// Adaptive random forest over raw features (see the module documentation).
#[derive(Debug, Clone)]
pub struct Forest {
    params: ForestParams,
    /// Kind of each field id (the spec's `field_kinds`).
    kinds: Vec<FieldKind>,
    /// Numeric and categorical field ids.
    attrs: Vec<u16>,
    /// Hash buckets of the spec (checked against the spec a version is served with).
    dim: usize,
    slots: Vec<Slot>,
    examples: u64,
    events: VecDeque<Event>,
}

/// Per-tree figures for `evergreen model show`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TreeSummary {
    /// Nodes (splits and leaves).
    pub nodes: usize,
    /// Leaves.
    pub leaves: usize,
    /// Leaves still growing (not deactivated by the memory budget).
    pub active_leaves: usize,
    /// Deepest leaf.
    pub depth: u32,
    /// Approximate bytes.
    pub bytes: usize,
    /// Examples the forest had seen when the tree was created.
    pub created_at: u64,
    /// A background tree is growing (its warning detector fired).
    pub background: bool,
    /// Accuracy since the tree was created (its vote weight).
    pub accuracy: f64,
    /// Warnings of this slot's detector so far.
    pub warnings: u64,
    /// Replacements of this slot's tree so far.
    pub replacements: u64,
}

/// Size, shape, history and feature importances of a forest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForestSummary {
    /// Trees.
    pub trees: Vec<TreeSummary>,
    /// Background trees growing.
    pub background_trees: usize,
    /// Leaves by depth, over every tree (`depths[d]`: leaves at depth d).
    pub depths: Vec<usize>,
    /// Approximate bytes of the whole forest (background trees included).
    pub bytes: usize,
    /// Warning detections, all trees.
    pub warnings: u64,
    /// Tree replacements, all trees.
    pub replacements: u64,
    /// The newest detector events (at most [`MAX_EVENTS`]).
    pub events: Vec<Event>,
    /// Share of split merit (weight × gain, summed over the trees' splits) by field id,
    /// summing to 1 (all 0 before the first split).
    pub importance: Vec<f64>,
    /// Examples learned.
    pub examples: u64,
}

impl Forest {
    /// A new forest over fields of these kinds (`FeatureSpec::field_kinds`); `dim` is the
    /// spec's number of hash buckets (only checked, not used).
    pub fn try_new(
        params: ForestParams,
        kinds: Vec<FieldKind>,
        dim: usize,
    ) -> Result<Self, crate::ShapeError> {
        params.validate()?;
        if kinds.len() > usize::from(u16::MAX) {
            return Err(crate::ShapeError::Param(
                "fields",
                "at most 65535 fields".into(),
            ));
        }
        let attrs = usable(&kinds);
        if attrs.is_empty() {
            return Err(crate::ShapeError::NoFields);
        }
        let slots = (0..params.trees)
            .map(|i| Slot::new(&params, i, 0))
            .collect();
        Ok(Self {
            params,
            kinds,
            attrs,
            dim,
            slots,
            examples: 0,
            events: VecDeque::new(),
        })
    }

    /// The hyperparameters.
    pub fn params(&self) -> &ForestParams {
        &self.params
    }

    /// Applies hyperparameters on warm start. The number of trees and the seed are part of the
    /// forest's shape and cannot change; every other setting applies from the next example.
    pub fn set_params(&mut self, params: ForestParams) -> Result<(), crate::ShapeError> {
        params.validate()?;
        if params.trees != self.params.trees {
            return Err(crate::ShapeError::Param(
                "trees",
                format!("the forest has {} trees", self.params.trees),
            ));
        }
        if params.seed != self.params.seed {
            return Err(crate::ShapeError::Param(
                "seed",
                format!("the forest was grown with seed {}", self.params.seed),
            ));
        }
        self.params = params;
        Ok(())
    }

    fn subspace(&self) -> usize {
        let n = self.attrs.len();
        let k = if self.params.max_features == 0 {
            (n as f64).sqrt().round() as usize
        } else {
            self.params.max_features
        };
        k.clamp(1, n)
    }

    fn ctx(&self) -> Ctx<'_> {
        let budget = self.params.max_bytes / (2 * self.params.trees as u64).max(1);
        Ctx {
            params: &self.params,
            kinds: &self.kinds,
            attrs: &self.attrs,
            subspace: self.subspace(),
            tree_budget: usize::try_from(budget).unwrap_or(usize::MAX),
        }
    }

    /// Writes the attributes of `x` into `row` (one per field id; the first entry of a field
    /// wins; a non-finite numeric value reads as missing).
    fn fill_row(&self, x: &FeatureVector, row: &mut [Attr]) {
        row.fill(Attr::Missing);
        for ((&f, &i), &v) in x.fields.iter().zip(&x.indices).zip(&x.values) {
            let f = usize::from(f);
            let (Some(slot), Some(kind)) = (row.get_mut(f), self.kinds.get(f)) else {
                continue;
            };
            if *slot != Attr::Missing {
                continue;
            }
            *slot = match kind {
                FieldKind::Numeric if v.is_finite() => Attr::Num(v),
                FieldKind::Categorical => Attr::Cat(i),
                _ => Attr::Missing,
            };
        }
    }

    fn combine(num: f64, den: f64) -> f64 {
        if den > 0.0 { num / den } else { 0.5 }
    }

    /// Learns `xs` (labels `ys`) on `threads` threads (slots split among them), appending each
    /// example's prediction made before it was learned to `preds`. The result does not depend
    /// on `threads`.
    pub fn learn_parallel(
        &mut self,
        xs: &[FeatureVector],
        ys: &[f32],
        threads: usize,
        preds: &mut Vec<f64>,
    ) {
        let n = xs.len().min(ys.len());
        if n == 0 {
            return;
        }
        let width = self.kinds.len();
        let mut rows = vec![Attr::Missing; n * width];
        for (x, row) in xs.iter().zip(rows.chunks_exact_mut(width.max(1))) {
            self.fill_row(x, row);
        }
        let labels: Vec<usize> = ys[..n].iter().map(|&y| usize::from(y > 0.5)).collect();
        let base = self.examples;
        let trees = self.slots.len();
        // votes[slot][example] = (w·p, w); summed in slot order below.
        let mut votes = vec![(0.0f64, 0.0f64); trees * n];
        let mut slot_events: Vec<Vec<Event>> = vec![Vec::new(); trees];
        let threads = threads.clamp(1, trees);
        let per = trees.div_ceil(threads);
        let mut slots = std::mem::take(&mut self.slots);
        {
            let ctx = self.ctx();
            let (rows, labels, ctx) = (&rows, &labels, &ctx);
            let run = |first: usize,
                       slots: &mut [Slot],
                       votes: &mut [(f64, f64)],
                       events: &mut [Vec<Event>]| {
                for (j, ((slot, votes), events)) in slots
                    .iter_mut()
                    .zip(votes.chunks_exact_mut(n))
                    .zip(events.iter_mut())
                    .enumerate()
                {
                    let index = (first + j) as u32;
                    for (i, vote) in votes.iter_mut().enumerate() {
                        let row = &rows[i * width..(i + 1) * width];
                        *vote = slot.step(row, labels[i], ctx, base + i as u64 + 1, index, events);
                    }
                }
            };
            if threads == 1 {
                run(0, &mut slots, &mut votes, &mut slot_events);
            } else {
                std::thread::scope(|s| {
                    let parts = slots
                        .chunks_mut(per)
                        .zip(votes.chunks_mut(per * n))
                        .zip(slot_events.chunks_mut(per))
                        .enumerate();
                    for (t, ((sl, vo), ev)) in parts {
                        let run = &run;
                        s.spawn(move || run(t * per, sl, vo, ev));
                    }
                });
            }
        }
        self.slots = slots;
        for i in 0..n {
            let (mut num, mut den) = (0.0, 0.0);
            for s in 0..trees {
                let (a, b) = votes[s * n + i];
                num += a;
                den += b;
            }
            preds.push(Self::combine(num, den));
        }
        self.examples += n as u64;
        let mut events: Vec<Event> = slot_events.into_iter().flatten().collect();
        events.sort_by_key(|e| (e.example, e.tree));
        for e in events {
            if self.events.len() == MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(e);
        }
    }

    /// Size, shape, history and feature importances.
    pub fn summary(&self) -> ForestSummary {
        let mut depths = Vec::new();
        let mut importance = vec![0.0; self.kinds.len()];
        let mut bytes = 0;
        let trees = self
            .slots
            .iter()
            .map(|s| {
                let t = &s.tree;
                let (leaves, active_leaves) = t.leaves();
                let mut depth = 0;
                for d in t.leaf_depths() {
                    depth = depth.max(d);
                    let d = d as usize;
                    if depths.len() <= d {
                        depths.resize(d + 1, 0);
                    }
                    depths[d] += 1;
                }
                t.add_importance(&mut importance);
                let b = t.bytes() + s.background.as_ref().map_or(0, Tree::bytes);
                bytes += b;
                TreeSummary {
                    nodes: t.nodes.len(),
                    leaves,
                    active_leaves,
                    depth,
                    bytes: t.bytes(),
                    created_at: t.created_at,
                    background: s.background.is_some(),
                    accuracy: if s.seen > 0.0 {
                        s.correct / s.seen
                    } else {
                        0.0
                    },
                    warnings: s.warnings,
                    replacements: s.replacements,
                }
            })
            .collect::<Vec<_>>();
        let sum: f64 = importance.iter().sum();
        if sum > 0.0 {
            importance.iter_mut().for_each(|v| *v /= sum);
        }
        ForestSummary {
            background_trees: self.slots.iter().filter(|s| s.background.is_some()).count(),
            warnings: self.slots.iter().map(|s| s.warnings).sum(),
            replacements: self.slots.iter().map(|s| s.replacements).sum(),
            trees,
            depths,
            bytes,
            events: self.events.iter().copied().collect(),
            importance,
            examples: self.examples,
        }
    }
}

/// Field ids a tree can split on.
fn usable(kinds: &[FieldKind]) -> Vec<u16> {
    kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k, FieldKind::Numeric | FieldKind::Categorical))
        .map(|(i, _)| i as u16)
        .collect()
}

/// Rows of up to this many fields are built on the stack when predicting.
const STACK_FIELDS: usize = 64;

impl Model for Forest {
    fn kind(&self) -> ModelKind {
        ModelKind::Forest
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn representation(&self) -> Representation {
        Representation::Raw
    }

    fn field_kinds(&self) -> Option<&[FieldKind]> {
        Some(&self.kinds)
    }

    fn predict(&self, x: &FeatureVector) -> f64 {
        let ctx = self.ctx();
        let width = self.kinds.len();
        let mut stack = [Attr::Missing; STACK_FIELDS];
        let mut heap = Vec::new();
        let row: &mut [Attr] = if width <= STACK_FIELDS {
            &mut stack[..width]
        } else {
            heap.resize(width, Attr::Missing);
            &mut heap
        };
        self.fill_row(x, row);
        let (mut num, mut den) = (0.0, 0.0);
        for s in &self.slots {
            let (a, b) = s.vote(s.tree.predict(row, &ctx), &self.params);
            num += a;
            den += b;
        }
        Self::combine(num, den)
    }

    fn learn(&mut self, x: &FeatureVector, y: f32) -> f64 {
        let mut preds = Vec::with_capacity(1);
        self.learn_parallel(std::slice::from_ref(x), &[y], 1, &mut preds);
        preds[0]
    }

    fn learn_batch(&mut self, xs: &[FeatureVector], ys: &[f32], preds: &mut Vec<f64>) {
        self.learn_parallel(xs, ys, 1, preds);
    }

    fn is_finite(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.tree.is_finite() && s.background.as_ref().is_none_or(Tree::is_finite))
    }

    fn examples_seen(&self) -> u64 {
        self.examples
    }

    fn encode(&self, out: &mut Vec<u8>) {
        codec::encode(self, out);
    }

    fn clone_box(&self) -> Box<dyn Model> {
        Box::new(self.clone())
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    /// `forest/leaf_depth` (every leaf's depth) and `forest/tree_bytes` (each tree's size).
    fn inspect(&self, visit: &mut dyn FnMut(&str, &[f32])) {
        let depths: Vec<f32> = self
            .slots
            .iter()
            .flat_map(|s| s.tree.leaf_depths().map(|d| d as f32))
            .collect();
        visit("forest/leaf_depth", &depths);
        let bytes: Vec<f32> = self.slots.iter().map(|s| s.tree.bytes() as f32).collect();
        visit("forest/tree_bytes", &bytes);
    }

    fn gauges(&self, visit: &mut dyn FnMut(&str, f64)) {
        let s = self.summary();
        visit("trees", s.trees.len() as f64);
        visit("background_trees", s.background_trees as f64);
        visit(
            "nodes",
            s.trees.iter().map(|t| t.nodes).sum::<usize>() as f64,
        );
        visit(
            "leaves",
            s.trees.iter().map(|t| t.leaves).sum::<usize>() as f64,
        );
        visit(
            "max_depth",
            f64::from(s.trees.iter().map(|t| t.depth).max().unwrap_or(0)),
        );
        visit("bytes", s.bytes as f64);
        visit("warnings", s.warnings as f64);
        visit("replacements", s.replacements as f64);
    }
}
