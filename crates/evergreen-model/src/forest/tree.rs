//! A Hoeffding tree (VFDT: Domingos & Hulten, "Mining High-Speed Data Streams", KDD 2000) for
//! binary classification, as the adaptive random forest grows it: each leaf watches a random
//! subset of the attributes (drawn when it first learns), and every `grace_period` of weight
//! compares the best split of each; it splits when the best beats the second by more than the
//! Hoeffding bound `ε = sqrt(R² ln(1/δ) / 2n)` (R = 1 for two classes, n the leaf's weight) or
//! when `ε < τ` (a tie). As River, a leaf more than `max_share_to_split` one class, or one no
//! attribute can split once `ε < τ` (the null split wins), restarts its observers instead.
//! Nominal attributes split multiway or one value against the rest, whichever gains more.
//! Leaves predict by majority, naive Bayes, or whichever of the two has been right more often
//! at that leaf (adaptive naive Bayes). Memory is bounded: past its byte budget a tree stops
//! growing and deactivates its least promising leaves (they drop their observers and predict
//! by majority).
//!
//! Nodes live in one arena (`nodes[0]` is the root); a child is always stored after its parent.

use super::observer::{
    Dist, Gaussian, Histogram, NOMINAL_VALUE_BYTES, Nominal, Observer, Suggestion, Test, total,
};
use super::{Attr, Ctx, LeafPrediction, NumericObserver};
use crate::common::SplitMix64;
use evergreen_core::FieldKind;

/// A leaf: class weights, observers of its sampled attributes, and the adaptive naive Bayes
/// bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Leaf {
    pub stats: Dist,
    pub depth: u32,
    /// Weight at the last split attempt (or at creation).
    pub last_eval: f64,
    pub active: bool,
    /// Sampled attributes (field ids), empty until the leaf first learns; parallel to
    /// `observers`.
    pub fields: Vec<u16>,
    pub observers: Vec<Observer>,
    /// Weight the majority class predicted right (adaptive naive Bayes).
    pub mc_correct: f64,
    /// Weight naive Bayes predicted right.
    pub nb_correct: f64,
}

/// Where a split sends an example.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Branches {
    /// `x <= threshold`: `left`, else `right`.
    Threshold {
        threshold: f64,
        left: u32,
        right: u32,
    },
    /// One child per value (values sorted); an unseen value follows the heaviest branch when
    /// predicting and grows a new branch when learning.
    Values {
        values: Vec<u32>,
        children: Vec<u32>,
    },
    /// `x == value`: `eq`, any other value: `ne`.
    Equals { value: u32, eq: u32, ne: u32 },
}

/// A tree node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Leaf(Box<Leaf>),
    Split {
        field: u16,
        branches: Branches,
        /// The class weights of the leaf this split replaced.
        stats: Dist,
        depth: u32,
        /// Merit (information gain or Gini reduction) of the split when it was made.
        merit: f64,
        /// The child that examples missing the attribute follow (the heaviest at split time).
        missing: u32,
    },
}

/// Where a traversal ended.
enum Stop {
    Leaf(usize),
    /// At a multiway split, on a value it has no branch for.
    Unseen {
        node: usize,
        value: u32,
    },
}

/// One Hoeffding tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
    /// Examples the forest had seen when this tree was created.
    pub created_at: u64,
    /// Learn calls since the last memory check.
    pub since_check: u32,
    /// False while over the byte budget: no split, no new branch.
    pub growth: bool,
    /// [`Tree::bytes`] at the last memory check plus what splits added since.
    pub bytes: usize,
}

/// Learn calls between two memory checks of a tree.
const MEMORY_CHECK: u32 = 1024;

/// Bytes of a new leaf node before it watches any attribute.
const NEW_LEAF_BYTES: usize = std::mem::size_of::<Node>() + std::mem::size_of::<Leaf>();

impl Leaf {
    fn new(stats: Dist, depth: u32) -> Self {
        Self {
            stats,
            depth,
            last_eval: total(&stats),
            active: true,
            fields: Vec::new(),
            observers: Vec::new(),
            mc_correct: 0.0,
            nb_correct: 0.0,
        }
    }

    /// Probability of the positive class, `None` for a leaf that has seen nothing.
    pub fn predict(&self, row: &[Attr], ctx: &Ctx<'_>) -> Option<f64> {
        let n = total(&self.stats);
        if n <= 0.0 {
            return None;
        }
        let a = ctx.params.leaf_prior;
        let mc = (self.stats[1] + a) / (n + 2.0 * a);
        let nb = || self.naive_bayes(row, ctx).unwrap_or(mc);
        Some(match ctx.params.leaf_prediction {
            LeafPrediction::Majority => mc,
            LeafPrediction::NaiveBayes => nb(),
            LeafPrediction::AdaptiveNaiveBayes => {
                if self.mc_correct > self.nb_correct {
                    mc
                } else {
                    nb()
                }
            }
        })
    }

    /// Naive Bayes: the class prior times each observed attribute's class likelihood, in log
    /// space. A numeric attribute's term is left out for a class whose normal is undefined
    /// (as River); a categorical or binned attribute one of the classes has not been observed
    /// with is left out for both. The result is kept within the add-`leaf_prior` estimate of
    /// a pure leaf of this weight.
    fn naive_bayes(&self, row: &[Attr], ctx: &Ctx<'_>) -> Option<f64> {
        let n = total(&self.stats);
        if n <= 0.0 {
            return None;
        }
        let a = ctx.params.leaf_prior;
        if self.stats[0] <= 0.0 || self.stats[1] <= 0.0 {
            // A class the leaf has not seen has no likelihoods to weigh against the other's:
            // the (smoothed) frequencies say all there is (River leaves such a class out).
            return Some((self.stats[1] + a) / (n + 2.0 * a));
        }
        let prior = |c: usize| ((self.stats[c] + a) / (n + 2.0 * a)).ln();
        let mut l = [prior(0), prior(1)];
        for (&f, obs) in self.fields.iter().zip(&self.observers) {
            let pair = match (obs, row.get(usize::from(f))) {
                (Observer::Gaussian(g), Some(&Attr::Num(x))) => {
                    // Per class, as River: a class whose normal is undefined here (weight at
                    // most 1, or no variance) takes no term.
                    let x = f64::from(x);
                    for (c, lc) in l.iter_mut().enumerate() {
                        *lc += g.log_likelihood(x, c).unwrap_or(0.0);
                    }
                    None
                }
                (Observer::Histogram(h), Some(&Attr::Num(x))) => {
                    let x = f64::from(x);
                    h.log_likelihood(x, 0).zip(h.log_likelihood(x, 1))
                }
                (Observer::Nominal(o), Some(&Attr::Cat(v))) => {
                    o.log_likelihood(v, 0).zip(o.log_likelihood(v, 1))
                }
                _ => None,
            };
            if let Some((l0, l1)) = pair {
                l[0] += l0;
                l[1] += l1;
            }
        }
        let d = l[0] - l[1];
        if d.is_nan() {
            return None;
        }
        let p = 1.0 / (1.0 + d.exp());
        let edge = a / (n + 2.0 * a);
        Some(p.clamp(edge, 1.0 - edge))
    }

    /// Learns one example; returns the bytes the leaf grew by.
    fn learn(
        &mut self,
        row: &[Attr],
        y: usize,
        w: f64,
        ctx: &Ctx<'_>,
        rng: &mut SplitMix64,
    ) -> usize {
        let mut grew = 0;
        if self.active {
            if ctx.params.leaf_prediction == LeafPrediction::AdaptiveNaiveBayes {
                let n = total(&self.stats);
                let mc = usize::from(self.stats[1] > self.stats[0]);
                if n <= 0.0 || mc == y {
                    self.mc_correct += w;
                }
                if let Some(p) = self.naive_bayes(row, ctx)
                    && usize::from(p > 0.5) == y
                {
                    self.nb_correct += w;
                }
            }
            if self.fields.is_empty() {
                self.sample_fields(ctx, rng);
                grew += self.bytes() - std::mem::size_of::<Leaf>();
            }
            for (&f, obs) in self.fields.iter().zip(self.observers.iter_mut()) {
                match (obs, row.get(usize::from(f))) {
                    (Observer::Gaussian(g), Some(&Attr::Num(x))) => g.update(f64::from(x), y, w),
                    (Observer::Histogram(h), Some(&Attr::Num(x))) => h.update(f64::from(x), y, w),
                    (Observer::Nominal(o), Some(&Attr::Cat(v))) => {
                        grew += NOMINAL_VALUE_BYTES * usize::from(o.update(v, y, w));
                    }
                    _ => {}
                }
            }
        }
        self.stats[y] += w;
        grew
    }

    /// Draws the leaf's attributes: `ctx.subspace` of the usable ones (all when there are no
    /// more), uniformly without replacement.
    fn sample_fields(&mut self, ctx: &Ctx<'_>, rng: &mut SplitMix64) {
        let attrs = ctx.attrs;
        let k = ctx.subspace.min(attrs.len());
        let mut pool: Vec<u16> = attrs.to_vec();
        if k < pool.len() {
            for i in 0..k {
                let j = i + (rng.next_u64() % (pool.len() - i) as u64) as usize;
                pool.swap(i, j);
            }
            pool.truncate(k);
            pool.sort_unstable();
        }
        self.observers = pool
            .iter()
            .map(|&f| match ctx.kinds[usize::from(f)] {
                FieldKind::Categorical => Observer::Nominal(Nominal::default()),
                _ => match ctx.params.numeric_observer {
                    NumericObserver::Gaussian => Observer::Gaussian(Gaussian::default()),
                    NumericObserver::Histogram => Observer::Histogram(Histogram::default()),
                },
            })
            .collect();
        self.fields = pool;
    }

    /// The weight a split could still classify better (River's and MOA's "promise").
    fn promise(&self) -> f64 {
        total(&self.stats) - self.stats[0].max(self.stats[1])
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Leaf>()
            + self.fields.len() * 2
            + self.observers.iter().map(Observer::bytes).sum::<usize>()
    }

    fn deactivate(&mut self) {
        self.active = false;
        self.fields = Vec::new();
        self.observers = Vec::new();
    }
}

impl Tree {
    pub fn new(created_at: u64) -> Self {
        Self {
            nodes: vec![Node::Leaf(Box::new(Leaf::new([0.0; 2], 0)))],
            created_at,
            since_check: 0,
            growth: true,
            bytes: NEW_LEAF_BYTES,
        }
    }

    /// Walks to the leaf of `row`. A value a multiway split has no branch for stops the walk
    /// when `learning` (a branch is grown for it), else follows the heaviest branch.
    fn find(&self, row: &[Attr], learning: bool) -> Stop {
        let mut i = 0usize;
        loop {
            match &self.nodes[i] {
                Node::Leaf(_) => return Stop::Leaf(i),
                Node::Split {
                    field,
                    branches,
                    missing,
                    ..
                } => {
                    let attr = row.get(usize::from(*field)).copied();
                    i =
                        match (branches, attr) {
                            (
                                Branches::Threshold {
                                    threshold,
                                    left,
                                    right,
                                },
                                Some(Attr::Num(x)),
                            ) => {
                                if f64::from(x) <= *threshold {
                                    *left
                                } else {
                                    *right
                                }
                            }
                            (Branches::Equals { value, eq, ne }, Some(Attr::Cat(v))) => {
                                if v == *value { *eq } else { *ne }
                            }
                            (Branches::Values { values, children }, Some(Attr::Cat(v))) => {
                                match values.binary_search(&v) {
                                    Ok(k) => children[k],
                                    Err(_) if learning => {
                                        return Stop::Unseen { node: i, value: v };
                                    }
                                    Err(_) => *missing,
                                }
                            }
                            _ => *missing,
                        } as usize;
                }
            }
        }
    }

    /// Probability of the positive class, `None` when the example reaches a leaf that has
    /// seen nothing.
    pub fn predict(&self, row: &[Attr], ctx: &Ctx<'_>) -> Option<f64> {
        match self.find(row, false) {
            Stop::Leaf(i) => match &self.nodes[i] {
                Node::Leaf(leaf) => leaf.predict(row, ctx),
                Node::Split { .. } => None,
            },
            Stop::Unseen { .. } => None,
        }
    }

    /// Learns one example of weight `w` (`y` 0 or 1).
    pub fn learn(&mut self, row: &[Attr], y: usize, w: f64, ctx: &Ctx<'_>, rng: &mut SplitMix64) {
        let i = match self.find(row, true) {
            Stop::Leaf(i) => i,
            Stop::Unseen { node, value }
                if self.growth && self.bytes + NEW_LEAF_BYTES <= ctx.tree_budget =>
            {
                self.add_branch(node, value)
            }
            // Over budget: a value the split has no branch for is not learned.
            Stop::Unseen { .. } => return self.count_learn(ctx),
        };
        let Node::Leaf(leaf) = &mut self.nodes[i] else {
            return;
        };
        let grew = leaf.learn(row, y, w, ctx, rng);
        self.bytes += grew;
        if leaf.active && self.growth {
            let p = ctx.params;
            if p.max_depth.is_some_and(|d| leaf.depth >= d) {
                leaf.deactivate();
            } else {
                let n = total(&leaf.stats);
                let pure = leaf.stats[0] == 0.0 || leaf.stats[1] == 0.0;
                if n - leaf.last_eval >= p.grace_period {
                    if !pure {
                        self.attempt_split(i, ctx);
                    }
                    if let Node::Leaf(leaf) = &mut self.nodes[i] {
                        leaf.last_eval = n;
                    }
                }
            }
        }
        self.count_learn(ctx);
    }

    fn count_learn(&mut self, ctx: &Ctx<'_>) {
        self.since_check += 1;
        if self.since_check >= MEMORY_CHECK || self.bytes > ctx.tree_budget {
            self.since_check = 0;
            self.enforce_budget(ctx.tree_budget);
        }
    }

    /// Adds a branch for `value` to the multiway split `node`; returns the new leaf.
    fn add_branch(&mut self, node: usize, value: u32) -> usize {
        let new = self.nodes.len();
        let Node::Split {
            branches: Branches::Values { values, children },
            depth,
            ..
        } = &mut self.nodes[node]
        else {
            return node;
        };
        let depth = *depth + 1;
        let k = values.binary_search(&value).unwrap_or_else(|k| k);
        values.insert(k, value);
        children.insert(k, new as u32);
        self.nodes
            .push(Node::Leaf(Box::new(Leaf::new([0.0; 2], depth))));
        self.bytes += NEW_LEAF_BYTES + 8;
        new
    }

    fn attempt_split(&mut self, i: usize, ctx: &Ctx<'_>) {
        let Node::Leaf(leaf) = &self.nodes[i] else {
            return;
        };
        let p = ctx.params;
        let n = total(&leaf.stats);
        // A leaf its majority class all but fills is not split now; its observers start
        // over (River's `max_share_to_split`).
        if leaf.stats[0].max(leaf.stats[1]) > p.max_share_to_split * n {
            return self.restart(i);
        }
        let mut suggestions: Vec<Suggestion> = leaf
            .fields
            .iter()
            .zip(&leaf.observers)
            .filter_map(|(&f, obs)| match obs {
                Observer::Gaussian(g) => g.suggest(
                    f,
                    &leaf.stats,
                    p.criterion,
                    p.split_points,
                    p.min_branch_fraction,
                ),
                Observer::Histogram(h) => {
                    h.suggest(f, &leaf.stats, p.criterion, p.min_branch_fraction)
                }
                Observer::Nominal(o) => {
                    o.suggest(f, &leaf.stats, p.criterion, p.min_branch_fraction)
                }
            })
            .collect();
        let eps = hoeffding_bound(1.0, p.delta, n);
        if !suggestions.iter().any(|s| s.merit.is_finite()) {
            // No attribute separates the classes (every candidate leaves a branch under
            // `min_branch_fraction`, or the values are all equal); once the bound is within
            // the tie threshold the null split wins and the observers start over (as River).
            if eps < p.tau {
                self.restart(i);
            }
            return;
        }
        suggestions.sort_by(|a, b| b.merit.total_cmp(&a.merit));
        let best = suggestions.swap_remove(0);
        // The second best real split, or the null split (merit -inf, as MOA and River).
        let second = suggestions
            .iter()
            .map(|s| s.merit)
            .fold(f64::NEG_INFINITY, f64::max);
        if best.merit > 0.0 && best.merit.is_finite() && (best.merit - second > eps || eps < p.tau)
        {
            // A split whose new leaves would not fit the budget is not made (a multiway split
            // on a high-cardinality attribute can be large).
            let added = best.children.len() * (NEW_LEAF_BYTES + 8);
            if self.bytes.saturating_add(added) > ctx.tree_budget {
                return;
            }
            self.split(i, best);
        }
    }

    /// Leaf `i`'s observers start over, on the same attributes (the null split won: River
    /// deactivates the leaf, and its memory manager reactivates it at once, empty).
    fn restart(&mut self, i: usize) {
        if let Node::Leaf(l) = &mut self.nodes[i] {
            let before = l.bytes();
            for o in &mut l.observers {
                *o = o.emptied();
            }
            self.bytes -= before - l.bytes();
        }
    }

    fn split(&mut self, i: usize, s: Suggestion) {
        let Node::Leaf(leaf) = &self.nodes[i] else {
            return;
        };
        let (stats, depth, old) = (leaf.stats, leaf.depth, leaf.bytes());
        let first = self.nodes.len() as u32;
        let heaviest = s
            .children
            .iter()
            .enumerate()
            .max_by(|a, b| total(a.1).total_cmp(&total(b.1)))
            .map_or(0, |(k, _)| k) as u32;
        for d in &s.children {
            self.nodes
                .push(Node::Leaf(Box::new(Leaf::new(*d, depth + 1))));
        }
        let branches = match s.test {
            Test::Threshold(t) => Branches::Threshold {
                threshold: t,
                left: first,
                right: first + 1,
            },
            Test::Equals(value) => Branches::Equals {
                value,
                eq: first,
                ne: first + 1,
            },
            Test::Values(values) => Branches::Values {
                children: (first..first + values.len() as u32).collect(),
                values,
            },
        };
        let branch_bytes = match &branches {
            Branches::Threshold { .. } | Branches::Equals { .. } => 0,
            Branches::Values { values, children } => (values.len() + children.len()) * 4,
        };
        self.bytes = self.bytes - old + branch_bytes + s.children.len() * NEW_LEAF_BYTES;
        self.nodes[i] = Node::Split {
            field: s.field,
            branches,
            stats,
            depth,
            merit: s.merit,
            missing: first + heaviest,
        };
    }

    /// Approximate bytes held by the tree.
    pub fn bytes(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| {
                std::mem::size_of::<Node>()
                    + match n {
                        Node::Leaf(l) => l.bytes(),
                        Node::Split { branches, .. } => match branches {
                            Branches::Threshold { .. } | Branches::Equals { .. } => 0,
                            Branches::Values { values, children } => {
                                (values.len() + children.len()) * 4
                            }
                        },
                    }
            })
            .sum()
    }

    /// Over `budget` bytes: stop growing and deactivate the least promising active leaves
    /// until the tree is within 90% of it; growth resumes below 80%. (The size is also kept
    /// up to date between checks, so a tree never grows far past its budget.)
    pub fn enforce_budget(&mut self, budget: usize) {
        let mut bytes = self.bytes();
        self.bytes = bytes;
        if bytes <= budget {
            if bytes.saturating_mul(5) < budget.saturating_mul(4) {
                self.growth = true;
            }
            return;
        }
        self.growth = false;
        let mut active: Vec<(f64, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n {
                Node::Leaf(l) if l.active => Some((l.promise(), i)),
                _ => None,
            })
            .collect();
        active.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let target = budget / 10 * 9;
        for (_, i) in active {
            if bytes <= target {
                break;
            }
            if let Node::Leaf(l) = &mut self.nodes[i] {
                let before = l.bytes();
                l.deactivate();
                bytes -= before - l.bytes();
            }
        }
        self.bytes = bytes;
    }

    /// Leaves (all, active).
    pub fn leaves(&self) -> (usize, usize) {
        self.nodes.iter().fold((0, 0), |(n, a), node| match node {
            Node::Leaf(l) => (n + 1, a + usize::from(l.active)),
            Node::Split { .. } => (n, a),
        })
    }

    /// Depth of each leaf.
    pub fn leaf_depths(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes.iter().filter_map(|n| match n {
            Node::Leaf(l) => Some(l.depth),
            Node::Split { .. } => None,
        })
    }

    /// Adds each split's weight times merit to `importance[field]`.
    pub fn add_importance(&self, importance: &mut [f64]) {
        for n in &self.nodes {
            if let Node::Split {
                field,
                stats,
                merit,
                ..
            } = n
                && let Some(slot) = importance.get_mut(usize::from(*field))
            {
                *slot += total(stats) * merit.max(0.0);
            }
        }
    }

    /// True when every weight and statistic is finite.
    pub fn is_finite(&self) -> bool {
        let dist_ok = |d: &Dist| d[0].is_finite() && d[1].is_finite();
        self.nodes.iter().all(|n| match n {
            Node::Split { stats, merit, .. } => dist_ok(stats) && merit.is_finite(),
            Node::Leaf(l) => {
                dist_ok(&l.stats)
                    && l.mc_correct.is_finite()
                    && l.nb_correct.is_finite()
                    && l.observers.iter().all(|o| match o {
                        Observer::Gaussian(g) => g
                            .classes
                            .iter()
                            .all(|m| m.w.is_finite() && m.mean.is_finite() && m.m2.is_finite()),
                        Observer::Histogram(h) => h.bins.iter().all(dist_ok),
                        Observer::Nominal(o) => o.dists.iter().all(dist_ok),
                    })
            }
        })
    }
}

/// The Hoeffding bound: with probability `1 - delta` the true mean of a variable of range
/// `range` is within this of the mean of `n` observations.
pub(crate) fn hoeffding_bound(range: f64, delta: f64, n: f64) -> f64 {
    (range * range * (1.0 / delta).ln() / (2.0 * n)).sqrt()
}
