//! Drift detection: ADWIN and Page-Hinkley change detectors for a stream of numbers (the
//! per-example progressive loss), and the Population Stability Index between two distributions
//! of a feature.
//!
//! - [`Adwin`]: ADaptive WINdowing (Bifet & Gavaldà, "Learning from Time-Changing Data with
//!   Adaptive Windowing", SDM 2007), the ADWIN2 variant: the window is kept as an exponential
//!   histogram (at most `M` buckets of each size 2^i, each with its sum and variance), and every
//!   `clock` insertions each split of the window into an older and a newer part is tested; when
//!   their means differ by more than the bound `ε_cut` (with the variance-based bound of the
//!   paper's section 4, as in MOA), the oldest bucket is dropped and the test repeats. Memory and
//!   time per item are `O(M log(W/M))`.
//! - [`PageHinkley`]: the Page-Hinkley test (Page 1954; Hinkley 1971) for an increase (or
//!   decrease) of the mean: a cumulative sum of deviations from the running mean minus a
//!   tolerance `delta`, compared with its running minimum; above `threshold` is a change.
//! - [`psi`] and [`FieldProfile`]: PSI = Σ (a − e)·ln(a / e) over the bins of two distributions
//!   (0.1: moderate shift, 0.25: significant, by the usual rule of thumb).

use std::collections::VecDeque;

/// One bucket of ADWIN's exponential histogram: `2^row` items summarised.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    total: f64,
    /// Sum of squared deviations from the bucket's mean.
    variance: f64,
}

/// ADWIN2 change detector (see the module documentation).
#[derive(Debug, Clone)]
pub struct Adwin {
    delta: f64,
    clock: u64,
    max_buckets: usize,
    min_window: u64,
    /// `rows[i]`: buckets of `2^i` items, oldest first (older rows hold older items).
    rows: Vec<VecDeque<Bucket>>,
    width: u64,
    total: f64,
    /// Sum of squared deviations from the window's mean.
    variance: f64,
    ticks: u64,
    detections: u64,
    /// Newer minus older mean at the last detected change.
    last_shift: f64,
}

impl Default for Adwin {
    fn default() -> Self {
        Self::new(0.002)
    }
}

impl Adwin {
    /// A detector with confidence `delta` (smaller: fewer false alarms, slower detection;
    /// MOA and River use 0.002), checking every 32 items, 5 buckets per size, sub-windows of at
    /// least 5 items.
    pub fn new(delta: f64) -> Self {
        Self::with_clock(delta, 32)
    }

    /// [`Adwin::new`] testing for a cut every `clock` items (1: after every item, exact
    /// change locations for short series; 32: MOA's and River's default, cheaper).
    pub fn with_clock(delta: f64, clock: u64) -> Self {
        Self {
            delta,
            clock: clock.max(1),
            max_buckets: 5,
            min_window: 5,
            rows: Vec::new(),
            width: 0,
            total: 0.0,
            variance: 0.0,
            ticks: 0,
            detections: 0,
            last_shift: 0.0,
        }
    }

    /// How the mean moved at the last detected change: the newer part's mean minus the older
    /// part's, the largest of the cuts found then (positive: the values went up).
    pub fn last_shift(&self) -> f64 {
        self.last_shift
    }

    /// Items in the current window (the data since the last change, at most).
    pub fn width(&self) -> u64 {
        self.width
    }

    /// Mean of the current window.
    pub fn mean(&self) -> f64 {
        if self.width == 0 {
            0.0
        } else {
            self.total / self.width as f64
        }
    }

    /// Changes detected so far.
    pub fn detections(&self) -> u64 {
        self.detections
    }

    /// Items seen so far.
    pub fn seen(&self) -> u64 {
        self.ticks
    }

    /// Where the last change happened, estimated after a detection: the index (from 0) of the
    /// first item of the window kept, i.e. of the data after the cut.
    pub fn change_index(&self) -> u64 {
        self.ticks - self.width
    }

    /// Adds `x`; returns true when a change was detected (the window then shrank to the data
    /// after it). Non-finite values are ignored.
    pub fn update(&mut self, x: f64) -> bool {
        if !x.is_finite() {
            return false;
        }
        self.insert(x);
        self.ticks += 1;
        if !self.ticks.is_multiple_of(self.clock) || self.width < 2 * self.min_window {
            return false;
        }
        let mut changed = false;
        while let Some(shift) = self.cut_found() {
            // Several cuts may be found in turn (the oldest data first): keep the largest rise,
            // so that a recent increase is not hidden by an older decrease.
            self.last_shift = if changed {
                self.last_shift.max(shift)
            } else {
                shift
            };
            self.drop_oldest();
            changed = true;
        }
        if changed {
            self.detections += 1;
        }
        changed
    }

    fn insert(&mut self, x: f64) {
        if self.width > 0 {
            let n = self.width as f64;
            let mean = self.total / n;
            self.variance += n / (n + 1.0) * (x - mean) * (x - mean);
        }
        self.width += 1;
        self.total += x;
        if self.rows.is_empty() {
            self.rows.push(VecDeque::new());
        }
        self.rows[0].push_back(Bucket {
            total: x,
            variance: 0.0,
        });
        // Merge the two oldest buckets of a full row into one of the next size.
        let mut row = 0;
        while self.rows[row].len() > self.max_buckets {
            let size = (1u64 << row) as f64;
            let a = self.rows[row].pop_front().expect("a full row");
            let b = self.rows[row].pop_front().expect("a full row");
            let (ma, mb) = (a.total / size, b.total / size);
            let merged = Bucket {
                total: a.total + b.total,
                variance: a.variance + b.variance + size / 2.0 * (ma - mb) * (ma - mb),
            };
            if self.rows.len() == row + 1 {
                self.rows.push(VecDeque::new());
            }
            self.rows[row + 1].push_back(merged);
            row += 1;
        }
    }

    /// The oldest bucket: the front of the highest non-empty row.
    fn drop_oldest(&mut self) {
        let Some(row) = self.rows.iter().rposition(|r| !r.is_empty()) else {
            return;
        };
        let b = self.rows[row].pop_front().expect("non-empty row");
        let n1 = (1u64 << row) as f64;
        let n = self.width as f64;
        let n0 = n - n1;
        let u1 = b.total / n1;
        self.width -= 1u64 << row;
        self.total -= b.total;
        if self.width == 0 {
            self.total = 0.0;
            self.variance = 0.0;
        } else {
            let u0 = self.total / n0;
            self.variance =
                (self.variance - b.variance - n0 * n1 / n * (u0 - u1) * (u0 - u1)).max(0.0);
        }
        while self.rows.last().is_some_and(|r| r.is_empty()) {
            self.rows.pop();
        }
    }

    /// A split of the window into older and newer items whose means are further apart than
    /// `ε_cut`, as the newer mean minus the older one.
    fn cut_found(&self) -> Option<f64> {
        let n = self.width as f64;
        if self.width < 2 * self.min_window {
            return None;
        }
        let v = self.variance / n;
        let dd = (2.0 * n.ln() / self.delta).ln();
        let (mut n0, mut s0) = (0u64, 0.0);
        // Oldest first: highest row first, each row front to back.
        for (row, buckets) in self.rows.iter().enumerate().rev() {
            for b in buckets {
                n0 += 1u64 << row;
                s0 += b.total;
                let n1 = self.width - n0;
                if n1 < self.min_window {
                    return None;
                }
                if n0 < self.min_window {
                    continue;
                }
                let (u0, u1) = (s0 / n0 as f64, (self.total - s0) / n1 as f64);
                let m = 1.0 / (n0 - self.min_window + 1) as f64
                    + 1.0 / (n1 - self.min_window + 1) as f64;
                let eps = (2.0 * m * v * dd).sqrt() + 2.0 / 3.0 * dd * m;
                if (u0 - u1).abs() > eps {
                    return Some(u1 - u0);
                }
            }
        }
        None
    }
}

/// The complete state of an [`Adwin`], as plain numbers, for models that persist their
/// detectors (the adaptive random forest's per-tree detectors): [`Adwin::state`] and
/// [`Adwin::from_state`] round-trip exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct AdwinState {
    /// Confidence.
    pub delta: f64,
    /// Items between cut tests.
    pub clock: u64,
    /// Buckets per row of the histogram, oldest first: `(total, variance)` of each bucket of
    /// `2^row` items.
    pub rows: Vec<Vec<(f64, f64)>>,
    /// Sum of the window's items.
    pub total: f64,
    /// Sum of squared deviations from the window's mean.
    pub variance: f64,
    /// Items seen.
    pub ticks: u64,
    /// Changes detected.
    pub detections: u64,
    /// Newer minus older mean at the last change.
    pub last_shift: f64,
}

impl Adwin {
    /// The detector's state (see [`AdwinState`]).
    pub fn state(&self) -> AdwinState {
        AdwinState {
            delta: self.delta,
            clock: self.clock,
            rows: self
                .rows
                .iter()
                .map(|r| r.iter().map(|b| (b.total, b.variance)).collect())
                .collect(),
            total: self.total,
            variance: self.variance,
            ticks: self.ticks,
            detections: self.detections,
            last_shift: self.last_shift,
        }
    }

    /// A detector in `state`; `None` when the state is not one a detector can be in (a row
    /// with more than 5 buckets, a non-finite or negative value, a width above the items seen,
    /// `delta` outside (0, 1), a clock of 0). The width is the buckets' item count.
    pub fn from_state(state: &AdwinState) -> Option<Adwin> {
        let mut a = Adwin::with_clock(state.delta, state.clock);
        if !(state.delta > 0.0 && state.delta < 1.0) || state.clock == 0 || state.rows.len() > 63 {
            return None;
        }
        let mut width = 0u64;
        for (row, buckets) in state.rows.iter().enumerate() {
            if buckets.len() > a.max_buckets {
                return None;
            }
            let mut r = VecDeque::with_capacity(buckets.len());
            for &(t, v) in buckets {
                if !t.is_finite() || !v.is_finite() || v < 0.0 {
                    return None;
                }
                width = width.checked_add(1u64 << row)?;
                r.push_back(Bucket {
                    total: t,
                    variance: v,
                });
            }
            a.rows.push(r);
        }
        let finite = state.total.is_finite() && state.variance.is_finite();
        if width > state.ticks || !finite || state.variance < 0.0 || !state.last_shift.is_finite() {
            return None;
        }
        while a.rows.last().is_some_and(|r| r.is_empty()) {
            a.rows.pop();
        }
        a.width = width;
        a.total = state.total;
        a.variance = state.variance;
        a.ticks = state.ticks;
        a.detections = state.detections;
        a.last_shift = state.last_shift;
        Some(a)
    }
}

/// Which change of the mean [`PageHinkley`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// An increase (e.g. of a loss).
    Up,
    /// A decrease.
    Down,
}

/// Page-Hinkley change detector (see the module documentation).
#[derive(Debug, Clone)]
pub struct PageHinkley {
    min_instances: u64,
    delta: f64,
    threshold: f64,
    alpha: f64,
    direction: Direction,
    n: u64,
    mean: f64,
    sum: f64,
    extreme: f64,
    /// Items seen when the cumulative sum was last at its extreme.
    extreme_at: u64,
    /// Items seen over the detector's life, and where the last change began.
    seen: u64,
    change_index: u64,
    detections: u64,
}

impl PageHinkley {
    /// A detector of a `direction` change: tolerance `delta` (deviations below it are not
    /// accumulated), alarm `threshold`, forgetting factor `alpha` of the cumulative sum, after at
    /// least `min_instances` items (River's defaults: 30, 0.005, 50, 1 − 1e-4).
    pub fn new(
        direction: Direction,
        min_instances: u64,
        delta: f64,
        threshold: f64,
        alpha: f64,
    ) -> Self {
        Self {
            min_instances,
            delta,
            threshold,
            alpha,
            direction,
            n: 0,
            mean: 0.0,
            sum: 0.0,
            extreme: 0.0,
            extreme_at: 0,
            seen: 0,
            change_index: 0,
            detections: 0,
        }
    }

    /// Where the last change began, estimated after a detection: the index (from 0) of the
    /// first item after the cumulative sum's extreme (the CUSUM change-point estimate).
    pub fn change_index(&self) -> u64 {
        self.change_index
    }

    /// Changes detected so far.
    pub fn detections(&self) -> u64 {
        self.detections
    }

    /// Adds `x`; returns true on a change (the detector then starts afresh).
    pub fn update(&mut self, x: f64) -> bool {
        if !x.is_finite() {
            return false;
        }
        self.n += 1;
        self.seen += 1;
        self.mean += (x - self.mean) / self.n as f64;
        let dev = match self.direction {
            Direction::Up => x - self.mean - self.delta,
            Direction::Down => self.mean - x - self.delta,
        };
        self.sum = self.alpha * self.sum + dev;
        if self.sum <= self.extreme {
            self.extreme = self.sum;
            self.extreme_at = self.seen;
        }
        if self.n >= self.min_instances && self.sum - self.extreme > self.threshold {
            let (seen, at) = (self.seen, self.extreme_at);
            let detections = self.detections + 1;
            *self = Self::new(
                self.direction,
                self.min_instances,
                self.delta,
                self.threshold,
                self.alpha,
            );
            (self.seen, self.detections, self.change_index) = (seen, detections, at);
            return true;
        }
        false
    }
}

/// Population Stability Index of `actual` against `expected` (bin counts, same binning):
/// Σ (a − e)·ln(a / e) over the bins' shares, each share at least 1e-4 (an empty bin would be
/// infinite). 0 when either side is empty.
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    let (te, ta): (f64, f64) = (expected.iter().sum(), actual.iter().sum());
    if te <= 0.0 || ta <= 0.0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = ((e / te).max(1e-4), (a / ta).max(1e-4));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Slots the feature indices of a field are hashed into.
const INDEX_SLOTS: usize = 16;
/// Value bins of a field (quantiles of the reference).
const VALUE_BINS: usize = 10;

/// The distribution of one feature field over a window, in bins fixed by a reference window:
/// each occurrence falls in a bin by its hashed index (16 slots: the category, or the bucket of
/// a bucketized column) and its value's decile among the reference's values (a numeric
/// column); one more bin counts the examples where the field is absent. So a categorical
/// field's bins are its categories' frequencies and a numeric one's its value deciles.
#[derive(Debug, Clone)]
pub struct FieldProfile {
    /// Upper edges of the value bins (the reference's deciles).
    edges: Vec<f32>,
    counts: Vec<f64>,
}

impl FieldProfile {
    /// The bins of a reference window: value deciles of `values` (every value of the field in
    /// the reference).
    pub fn reference_bins(values: &mut Vec<f32>) -> Vec<f32> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return Vec::new();
        }
        values.sort_unstable_by(f32::total_cmp);
        let mut edges: Vec<f32> = (1..VALUE_BINS)
            .map(|k| values[k * (values.len() - 1) / VALUE_BINS])
            .collect();
        edges.dedup();
        edges
    }

    /// An empty profile over `edges` (from [`FieldProfile::reference_bins`]).
    pub fn new(edges: Vec<f32>) -> Self {
        let bins = INDEX_SLOTS * (edges.len() + 1) + 1;
        Self {
            edges,
            counts: vec![0.0; bins],
        }
    }

    /// Counts one example in which the field has the entries `(index, value)` (none: absent).
    pub fn add(&mut self, entries: impl Iterator<Item = (u32, f32)>) {
        let mut any = false;
        let per_slot = self.edges.len() + 1;
        for (i, v) in entries {
            any = true;
            let slot = (crate_hash(i) % INDEX_SLOTS as u64) as usize;
            let bin = self.edges.partition_point(|&e| e < v);
            self.counts[slot * per_slot + bin] += 1.0;
        }
        if !any {
            let last = self.counts.len() - 1;
            self.counts[last] += 1.0;
        }
    }

    /// PSI of this profile against `reference` (same edges).
    pub fn psi_against(&self, reference: &FieldProfile) -> f64 {
        psi(&reference.counts, &self.counts)
    }
}

fn crate_hash(i: u32) -> u64 {
    let mut x = u64::from(i) ^ 0x9E37_79B9_7F4A_7C15;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic uniform [0, 1) stream.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn adwin_finds_an_abrupt_change_soon_and_no_change_in_a_stationary_stream() {
        // Bernoulli(0.2) then Bernoulli(0.8) from item 1000 on.
        let mut r = Lcg(7);
        let mut a = Adwin::default();
        let mut found = None;
        for t in 0..3000 {
            let p = if t < 1000 { 0.2 } else { 0.8 };
            if a.update(f64::from(r.next() < p)) && found.is_none() {
                found = Some(t);
            }
        }
        let t = found.expect("a change is found");
        assert!((1000..1100).contains(&t), "found at {t}");
        assert!(a.last_shift() > 0.3, "{}", a.last_shift());
        // After the change the window holds (mostly) the new data.
        assert!((a.mean() - 0.8).abs() < 0.05, "{}", a.mean());
        assert!(a.width() < 2100, "{}", a.width());
        // Stationary: 20,000 items, no alarm.
        let mut b = Adwin::default();
        for _ in 0..20_000 {
            assert!(!b.update(f64::from(r.next() < 0.3)));
        }
        assert_eq!(b.width(), 20_000);
        assert!((b.mean() - 0.3).abs() < 0.02);
        // Its exponential histogram stays small.
        assert!(b.rows.iter().map(VecDeque::len).sum::<usize>() < 80);
    }

    #[test]
    fn adwin_state_round_trips_and_continues_identically() {
        let mut r = Lcg(11);
        let mut a = Adwin::new(0.01);
        for t in 0..2500 {
            a.update(f64::from(r.next() < if t < 1200 { 0.1 } else { 0.6 }));
        }
        let mut b = Adwin::from_state(&a.state()).expect("a valid state");
        assert_eq!(b.state(), a.state());
        for _ in 0..3000 {
            let x = f64::from(r.next() < 0.3);
            assert_eq!(a.update(x), b.update(x));
        }
        assert_eq!(b.state(), a.state());
        // States no detector can be in are refused.
        let good = a.state();
        let mut bad = good.clone();
        bad.rows[0] = vec![(1.0, 0.0); 6];
        assert!(Adwin::from_state(&bad).is_none());
        let mut bad = good.clone();
        bad.variance = f64::NAN;
        assert!(Adwin::from_state(&bad).is_none());
        let mut bad = good.clone();
        bad.ticks = 0;
        assert!(Adwin::from_state(&bad).is_none());
        let mut bad = good;
        bad.delta = 0.0;
        assert!(Adwin::from_state(&bad).is_none());
    }

    #[test]
    fn adwin_window_statistics_match_a_direct_computation() {
        let mut r = Lcg(3);
        let mut a = Adwin::new(1e-9); // no cut: the window keeps everything
        let xs: Vec<f64> = (0..777).map(|_| r.next() * 10.0).collect();
        for &x in &xs {
            a.update(x);
        }
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>();
        assert_eq!(a.width(), 777);
        assert!((a.mean() - mean).abs() < 1e-9);
        assert!((a.variance - var).abs() < 1e-6 * var);
        // Bucket variances add up with the between-bucket terms to the window's.
        let total: f64 = a.rows.iter().flatten().map(|b| b.total).sum();
        assert!((total - a.total).abs() < 1e-6);
        // Dropping the oldest bucket keeps the window's statistics exact.
        let row = a.rows.iter().rposition(|r| !r.is_empty()).unwrap();
        a.drop_oldest();
        let rest = &xs[1 << row..];
        let m = rest.iter().sum::<f64>() / rest.len() as f64;
        let v = rest.iter().map(|x| (x - m) * (x - m)).sum::<f64>();
        assert_eq!(a.width() as usize, rest.len());
        assert!((a.mean() - m).abs() < 1e-9);
        assert!((a.variance - v).abs() < 1e-6 * v);
    }

    #[test]
    fn page_hinkley_finds_an_increase_and_ignores_a_decrease() {
        let mut r = Lcg(11);
        let mut up = PageHinkley::new(Direction::Up, 30, 0.005, 50.0, 1.0 - 1e-4);
        let mut found = None;
        for t in 0..4000 {
            let mean = if t < 2000 { 0.3 } else { 0.8 };
            if up.update(mean + (r.next() - 0.5) * 0.2) && found.is_none() {
                found = Some(t);
            }
        }
        let t = found.expect("the increase is found");
        assert!((2000..2200).contains(&t), "found at {t}");
        let mut up = PageHinkley::new(Direction::Up, 30, 0.005, 50.0, 1.0 - 1e-4);
        for t in 0..4000 {
            let mean = if t < 2000 { 0.8 } else { 0.3 };
            assert!(
                !up.update(mean + (r.next() - 0.5) * 0.2),
                "false alarm at {t}"
            );
        }
        let mut down = PageHinkley::new(Direction::Down, 30, 0.005, 50.0, 1.0 - 1e-4);
        let hits = (0..4000)
            .filter(|&t| down.update(if t < 2000 { 0.8 } else { 0.3 }))
            .count();
        assert_eq!(hits, 1);
    }

    #[test]
    fn psi_is_zero_for_equal_shares_and_grows_with_the_shift() {
        assert_eq!(psi(&[10.0, 20.0, 30.0], &[1.0, 2.0, 3.0]), 0.0);
        let small = psi(&[50.0, 50.0], &[55.0, 45.0]);
        let large = psi(&[50.0, 50.0], &[90.0, 10.0]);
        assert!(small > 0.0 && small < 0.1, "{small}");
        assert!(large > 0.25, "{large}");
        // (0.9 - 0.5) ln(0.9/0.5) + (0.1 - 0.5) ln(0.1/0.5)
        let want = 0.4 * (1.8f64).ln() - 0.4 * (0.2f64).ln();
        assert!((large - want).abs() < 1e-12);
        assert!(psi(&[1.0, 0.0], &[0.0, 1.0]).is_finite());
        assert_eq!(psi(&[], &[]), 0.0);
    }

    #[test]
    fn field_profiles_see_value_and_category_shifts_but_not_noise() {
        let mut r = Lcg(5);
        let mut values: Vec<f32> = (0..5000).map(|_| r.next() as f32).collect();
        let edges = FieldProfile::reference_bins(&mut values);
        assert_eq!(edges.len(), 9);
        let profile = |r: &mut Lcg, shift: f32, cats: u32| {
            let mut p = FieldProfile::new(edges.clone());
            for _ in 0..5000 {
                let v = r.next() as f32 + shift;
                let c = (r.next() * f64::from(cats)) as u32;
                p.add([(c, v)].into_iter());
            }
            p
        };
        let reference = profile(&mut r, 0.0, 20);
        let same = profile(&mut r, 0.0, 20);
        let moved = profile(&mut r, 0.3, 20);
        let new_categories = profile(&mut r, 0.0, 3);
        assert!(
            same.psi_against(&reference) < 0.1,
            "{}",
            same.psi_against(&reference)
        );
        assert!(moved.psi_against(&reference) > 0.25);
        assert!(new_categories.psi_against(&reference) > 0.25);
        // A field that stops appearing is a shift too.
        let mut absent = FieldProfile::new(edges.clone());
        for _ in 0..100 {
            absent.add(std::iter::empty());
        }
        assert!(absent.psi_against(&reference) > 0.25);
    }
}
