//! Attribute observers of a Hoeffding tree leaf: the per-class statistics of one attribute,
//! the best split each suggests (with its children's class distributions) and the
//! class-conditional likelihood naive Bayes leaves use.
//!
//! - [`Gaussian`]: per class a weighted mean and variance (West's weighted Welford update) and
//!   the class's range; candidate thresholds equally spaced inside the attribute's range, each
//!   side's class weights from the normal CDF (as MOA's and River's Gaussian splitter).
//! - [`Histogram`]: per class weights in [`HIST_BINS`] equal-width bins whose range doubles
//!   to take a value outside it (adjacent bins merge); candidate thresholds at bin edges, each
//!   side's class weights exact per bin.
//! - [`Nominal`]: per value and class weights; the better of a multiway split (one branch per
//!   value seen) and each value against the rest.

use super::Criterion;

/// Number of bins of a [`Histogram`] observer (even: bins merge in pairs).
pub(crate) const HIST_BINS: usize = 32;

/// Class weights `[negative, positive]`.
pub(crate) type Dist = [f64; 2];

pub(crate) fn total(d: &Dist) -> f64 {
    d[0] + d[1]
}

/// A split test found by an observer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Test {
    /// `x <= threshold` goes to the first child, else the second.
    Threshold(f64),
    /// One child per value, in this (sorted) order.
    Values(Vec<u32>),
    /// `x == value` goes to the first child, any other value to the second.
    Equals(u32),
}

/// A candidate split of a leaf: its merit, test and the class weights of each child.
#[derive(Debug, Clone)]
pub(crate) struct Suggestion {
    pub merit: f64,
    pub field: u16,
    pub test: Test,
    pub children: Vec<Dist>,
}

/// Weighted mean and variance of one class (West 1979).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Moments {
    pub w: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    #[inline]
    fn add(&mut self, x: f64, w: f64) {
        self.w += w;
        let d = x - self.mean;
        self.mean += d * w / self.w;
        self.m2 += w * d * (x - self.mean);
    }

    /// Sample variance (`m2 / (w - 1)`, as River's `Var`), 0 below a weight of 1.
    fn var(&self) -> f64 {
        if self.w > 1.0 {
            (self.m2 / (self.w - 1.0)).max(0.0)
        } else {
            0.0
        }
    }

    /// P(X <= x) under the class's normal distribution (a step at the mean when the variance
    /// is 0).
    fn cdf(&self, x: f64) -> f64 {
        let sd = self.var().sqrt();
        if sd > 0.0 {
            0.5 * (1.0 + erf((x - self.mean) / (sd * std::f64::consts::SQRT_2)))
        } else if x >= self.mean {
            1.0
        } else {
            0.0
        }
    }
}

/// The error function (musl's, via `libm`: within an ulp, as the C library's `erf` River calls;
/// split points near a tie depend on the last digits of the children's weights).
pub(crate) fn erf(x: f64) -> f64 {
    libm::erf(x)
}

/// Gaussian observer of a numeric attribute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gaussian {
    pub classes: [Moments; 2],
    pub min: [f64; 2],
    pub max: [f64; 2],
}

impl Default for Gaussian {
    fn default() -> Self {
        Self {
            classes: [Moments::default(); 2],
            min: [f64::INFINITY; 2],
            max: [f64::NEG_INFINITY; 2],
        }
    }
}

impl Gaussian {
    #[inline]
    pub fn update(&mut self, x: f64, y: usize, w: f64) {
        self.classes[y].add(x, w);
        self.min[y] = self.min[y].min(x);
        self.max[y] = self.max[y].max(x);
    }

    fn range(&self) -> Option<(f64, f64)> {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for c in 0..2 {
            if self.classes[c].w > 0.0 {
                lo = lo.min(self.min[c]);
                hi = hi.max(self.max[c]);
            }
        }
        (lo < hi).then_some((lo, hi))
    }

    pub fn suggest(
        &self,
        field: u16,
        pre: &Dist,
        criterion: Criterion,
        points: usize,
        min_branch_fraction: f64,
    ) -> Option<Suggestion> {
        let (lo, hi) = self.range()?;
        let mut best: Option<Suggestion> = None;
        for i in 1..=points {
            let t = lo + (hi - lo) * i as f64 / (points + 1) as f64;
            let (mut l, mut r) = ([0.0; 2], [0.0; 2]);
            for c in 0..2 {
                let m = &self.classes[c];
                if m.w <= 0.0 {
                    continue;
                }
                if t < self.min[c] {
                    r[c] = m.w;
                } else if t >= self.max[c] {
                    l[c] = m.w;
                } else {
                    l[c] = m.cdf(t) * m.w;
                    r[c] = m.w - l[c];
                }
            }
            let merit = criterion.merit(pre, &[l, r], min_branch_fraction);
            if best.as_ref().is_none_or(|b| merit > b.merit) {
                best = Some(Suggestion {
                    merit,
                    field,
                    test: Test::Threshold(t),
                    children: vec![l, r],
                });
            }
        }
        best
    }

    /// Log-density of `x` under class `c`'s normal distribution; `None` when the class has a
    /// weight of at most 1 or no variance there (as River, such a term says nothing: a point
    /// mass would make naive Bayes certain). The normalising constant is kept: one class may
    /// take a term the other does not.
    #[inline]
    pub fn log_likelihood(&self, x: f64, c: usize) -> Option<f64> {
        let m = &self.classes[c];
        if m.w <= 1.0 {
            return None;
        }
        let var = m.var();
        if var <= 0.0 {
            return None;
        }
        let d = x - m.mean;
        Some(-0.5 * (d * d / var) - 0.5 * (std::f64::consts::TAU * var).ln())
    }
}

/// Histogram observer of a numeric attribute (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Histogram {
    /// Lower edge of bin 0.
    pub lo: f64,
    /// Bin width; 0 while every value seen was `lo` (all weight in bin 0).
    pub width: f64,
    pub bins: Vec<Dist>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            lo: f64::NAN,
            width: 0.0,
            bins: vec![[0.0; 2]; HIST_BINS],
        }
    }
}

impl Histogram {
    fn bin(&self, x: f64) -> usize {
        (((x - self.lo) / self.width) as usize).min(HIST_BINS - 1)
    }

    pub fn update(&mut self, x: f64, y: usize, w: f64) {
        if self.lo.is_nan() {
            self.lo = x;
        }
        if self.width == 0.0 && x != self.lo {
            // The second distinct value fixes a first range: [min, max] spread over the bins
            // (the weight so far, all at `lo`, moves to its bin).
            let (a, b) = (self.lo.min(x), self.lo.max(x));
            let width = (b - a) / (HIST_BINS as f64 - 1.0);
            if !(width > 0.0 && width.is_finite()) {
                return;
            }
            let old = std::mem::replace(&mut self.bins[0], [0.0; 2]);
            let at = self.lo;
            self.lo = a;
            self.width = width;
            let k = self.bin(at);
            self.bins[k] = old;
        }
        if self.width > 0.0 {
            while x < self.lo {
                // Double the range to the left: old bin j lands in bin (B + j) / 2.
                let mut next = vec![[0.0; 2]; HIST_BINS];
                for (j, d) in self.bins.iter().enumerate() {
                    let k = (HIST_BINS + j) / 2;
                    next[k][0] += d[0];
                    next[k][1] += d[1];
                }
                self.lo -= HIST_BINS as f64 * self.width;
                self.width *= 2.0;
                self.bins = next;
            }
            while x >= self.lo + HIST_BINS as f64 * self.width {
                // Double the range to the right: old bin j lands in bin j / 2.
                let mut next = vec![[0.0; 2]; HIST_BINS];
                for (j, d) in self.bins.iter().enumerate() {
                    next[j / 2][0] += d[0];
                    next[j / 2][1] += d[1];
                }
                self.width *= 2.0;
                self.bins = next;
            }
            let k = self.bin(x);
            self.bins[k][y] += w;
        } else {
            self.bins[0][y] += w;
        }
    }

    pub fn suggest(
        &self,
        field: u16,
        pre: &Dist,
        criterion: Criterion,
        min_branch_fraction: f64,
    ) -> Option<Suggestion> {
        if self.width <= 0.0 {
            return None;
        }
        let all = self
            .bins
            .iter()
            .fold([0.0; 2], |a, d| [a[0] + d[0], a[1] + d[1]]);
        let mut left = [0.0; 2];
        let mut best: Option<Suggestion> = None;
        for (j, d) in self.bins[..HIST_BINS - 1].iter().enumerate() {
            left = [left[0] + d[0], left[1] + d[1]];
            if total(d) == 0.0 {
                continue;
            }
            let right = [all[0] - left[0], all[1] - left[1]];
            let merit = criterion.merit(pre, &[left, right], min_branch_fraction);
            if best.as_ref().is_none_or(|b| merit > b.merit) {
                best = Some(Suggestion {
                    merit,
                    field,
                    // Values below the next bin's lower edge go left.
                    test: Test::Threshold(self.lo + (j + 1) as f64 * self.width),
                    children: vec![left, right],
                });
            }
        }
        best
    }

    /// Log of the class's share of weight in `x`'s bin (add-one smoothed).
    pub fn log_likelihood(&self, x: f64, c: usize) -> Option<f64> {
        let class_total: f64 = self.bins.iter().map(|d| d[c]).sum();
        if class_total <= 0.0 {
            return None;
        }
        let k = if self.width > 0.0 {
            if x < self.lo { 0 } else { self.bin(x) }
        } else {
            0
        };
        Some(((self.bins[k][c] + 1.0) / (class_total + HIST_BINS as f64)).ln())
    }
}

/// Bytes a [`Nominal`] observer grows by per new value.
pub(crate) const NOMINAL_VALUE_BYTES: usize = 4 + 16;

/// Observer of a categorical attribute: class weights per value (values sorted).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Nominal {
    pub values: Vec<u32>,
    pub dists: Vec<Dist>,
    pub class_totals: Dist,
}

impl Nominal {
    /// Returns true when `v` is a new value (the observer grew by [`NOMINAL_VALUE_BYTES`]).
    pub fn update(&mut self, v: u32, y: usize, w: f64) -> bool {
        let (i, new) = match self.values.binary_search(&v) {
            Ok(i) => (i, false),
            Err(i) => {
                self.values.insert(i, v);
                self.dists.insert(i, [0.0; 2]);
                (i, true)
            }
        };
        self.dists[i][y] += w;
        self.class_totals[y] += w;
        new
    }

    pub fn suggest(
        &self,
        field: u16,
        pre: &Dist,
        criterion: Criterion,
        min_branch_fraction: f64,
    ) -> Option<Suggestion> {
        if self.values.len() < 2 {
            return None;
        }
        // The multiway split, then each value against the rest (as River's nominal splitter:
        // the first best wins).
        let mut best = Suggestion {
            merit: criterion.merit(pre, &self.dists, min_branch_fraction),
            field,
            test: Test::Values(self.values.clone()),
            children: self.dists.clone(),
        };
        for (&v, d) in self.values.iter().zip(&self.dists) {
            let rest = [self.class_totals[0] - d[0], self.class_totals[1] - d[1]];
            let children = [*d, rest];
            let merit = criterion.merit(pre, &children, min_branch_fraction);
            if merit > best.merit {
                best = Suggestion {
                    merit,
                    field,
                    test: Test::Equals(v),
                    children: children.to_vec(),
                };
            }
        }
        Some(best)
    }

    /// Log of the value's add-one smoothed share of the class's weight.
    pub fn log_likelihood(&self, v: u32, c: usize) -> Option<f64> {
        if self.class_totals[c] <= 0.0 {
            return None;
        }
        let n = match self.values.binary_search(&v) {
            Ok(i) => self.dists[i][c],
            Err(_) => 0.0,
        };
        Some(((n + 1.0) / (self.class_totals[c] + self.values.len() as f64 + 1.0)).ln())
    }

    pub fn bytes(&self) -> usize {
        self.values.len() * 4 + self.dists.len() * 16
    }
}

/// One leaf observer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Observer {
    Gaussian(Gaussian),
    Histogram(Histogram),
    Nominal(Nominal),
}

impl Observer {
    /// An empty observer of the same kind.
    pub fn emptied(&self) -> Observer {
        match self {
            Observer::Gaussian(_) => Observer::Gaussian(Gaussian::default()),
            Observer::Histogram(_) => Observer::Histogram(Histogram::default()),
            Observer::Nominal(_) => Observer::Nominal(Nominal::default()),
        }
    }

    /// Approximate heap and inline bytes.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Observer>()
            + match self {
                Observer::Gaussian(_) => 0,
                Observer::Histogram(h) => h.bins.len() * 16,
                Observer::Nominal(n) => n.bytes(),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265),
            (-1.0, -0.842_700_792_9),
        ] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn weighted_moments_equal_repeated_items() {
        let mut a = Moments::default();
        let mut b = Moments::default();
        for (x, w) in [(1.0, 3.0), (4.0, 1.0), (2.5, 2.0)] {
            a.add(x, w);
            for _ in 0..w as usize {
                b.add(x, 1.0);
            }
        }
        assert!((a.mean - b.mean).abs() < 1e-12);
        assert!((a.var() - b.var()).abs() < 1e-12);
    }

    #[test]
    fn histogram_keeps_every_weight_when_its_range_grows() {
        let mut h = Histogram::default();
        let xs = [5.0, 5.0, 6.0, 5.5, -100.0, 1000.0, 3.0, 7.25];
        for (i, &x) in xs.iter().enumerate() {
            h.update(x, i % 2, 1.0);
        }
        let sum: f64 = h.bins.iter().map(total).sum();
        assert_eq!(sum, xs.len() as f64);
        assert!(h.lo <= -100.0 && h.lo + HIST_BINS as f64 * h.width > 1000.0);
    }

    #[test]
    fn nominal_split_has_one_child_per_value() {
        let mut n = Nominal::default();
        for (v, y) in [(9, 0), (3, 1), (9, 0), (3, 1), (7, 0)] {
            n.update(v, y, 1.0);
        }
        let s = n
            .suggest(1, &[3.0, 2.0], Criterion::InfoGain, 0.01)
            .unwrap();
        assert_eq!(s.test, Test::Values(vec![3, 7, 9]));
        assert_eq!(s.children, vec![[0.0, 2.0], [1.0, 0.0], [2.0, 0.0]]);
        // A pure split gains the whole entropy of the parent.
        let h = -(0.6f64 * 0.6f64.log2() + 0.4 * 0.4f64.log2());
        assert!((s.merit - h).abs() < 1e-12);
    }
}
