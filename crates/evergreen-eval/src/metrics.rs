//! Binary-classification metrics accumulated one prediction at a time: logloss, AUC, accuracy
//! and calibration (mean predicted / observed positive rate).

use serde::{Deserialize, Serialize};

/// Probabilities are clipped to `[EPS, 1 - EPS]` for logloss (as Vowpal Wabbit and River do).
pub const EPS: f64 = 1e-15;

/// Accumulates `(prediction, label)` pairs. AUC is exact (pairs are kept; a span is bounded).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pairs: Pairs,
    logloss_sum: f64,
    correct: u64,
    prediction_sum: f64,
    positives: u64,
}

/// Pairs of a [`Metrics`], in blocks: a long accumulation (a whole backfill's) grows by adding
/// blocks, never by moving what it holds to a larger buffer.
#[derive(Debug, Clone, Default)]
struct Pairs {
    blocks: Vec<Vec<(f64, bool)>>,
    len: usize,
}

/// Pairs per block after the first.
const BLOCK: usize = 1 << 16;

impl Pairs {
    fn with_capacity(n: usize) -> Self {
        Self {
            blocks: vec![Vec::with_capacity(n.min(BLOCK))],
            len: 0,
        }
    }

    fn push(&mut self, pair: (f64, bool)) {
        match self.blocks.last_mut() {
            Some(b) if b.len() < b.capacity() => b.push(pair),
            _ => {
                let mut b = Vec::with_capacity(BLOCK);
                b.push(pair);
                self.blocks.push(b);
            }
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = &(f64, bool)> {
        self.blocks.iter().flatten()
    }
}

/// An integer whose order is the numeric order of `p` (not NaN), with `-0.0` equal to `0.0`.
fn order_key(p: f64) -> u64 {
    let bits = (p + 0.0).to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Final numbers of a [`Metrics`]. `NaN` where undefined (no examples, or AUC with one class).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of examples.
    pub examples: u64,
    /// Mean log loss.
    #[serde(with = "crate::serde_nan")]
    pub logloss: f64,
    /// Area under the ROC curve.
    #[serde(with = "crate::serde_nan")]
    pub auc: f64,
    /// Accuracy at threshold 0.5.
    #[serde(with = "crate::serde_nan")]
    pub accuracy: f64,
    /// Mean prediction divided by the observed positive rate (1.0 = calibrated).
    #[serde(with = "crate::serde_nan")]
    pub calibration: f64,
    /// Mean prediction.
    #[serde(with = "crate::serde_nan")]
    pub mean_prediction: f64,
    /// Observed positive rate.
    #[serde(with = "crate::serde_nan")]
    pub positive_rate: f64,
}

impl Metrics {
    /// Empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty accumulator with room for `n` predictions.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            pairs: Pairs::with_capacity(n),
            ..Self::default()
        }
    }

    /// Adds one prediction `p` (probability of positive) for label `y` (0 or 1).
    pub fn add(&mut self, p: f64, y: f32) {
        let positive = y >= 0.5;
        let pc = if p.is_nan() {
            p
        } else {
            p.clamp(EPS, 1.0 - EPS)
        };
        self.logloss_sum -= if positive { pc.ln() } else { (1.0 - pc).ln() };
        if (p >= 0.5) == positive {
            self.correct += 1;
        }
        self.prediction_sum += p;
        self.positives += positive as u64;
        self.pairs.push((p, positive));
    }

    /// Adds every prediction of `other` (as if each had been added here).
    pub fn merge(&mut self, other: &Metrics) {
        for &pair in other.pairs.iter() {
            self.pairs.push(pair);
        }
        self.logloss_sum += other.logloss_sum;
        self.correct += other.correct;
        self.prediction_sum += other.prediction_sum;
        self.positives += other.positives;
    }

    /// Number of examples added.
    pub fn len(&self) -> u64 {
        self.pairs.len() as u64
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Exact AUC (Mann-Whitney U with average ranks for ties).
    fn auc(&self) -> f64 {
        let n = self.pairs.len();
        let pos = self.positives as f64;
        let neg = n as f64 - pos;
        if pos == 0.0 || neg == 0.0 || self.pairs.iter().any(|(p, _)| p.is_nan()) {
            return f64::NAN;
        }
        // Sorted by a key whose integer order is the numeric order of the (non-NaN)
        // predictions, `-0.0` made `0.0`: equal keys are exactly the tied predictions.
        // The label rides in the key's lowest bit: `2 · key + label`, sorted as plain integers
        // (half the memory of (key, label) pairs, and the fastest sort), which needs the key's
        // top bit free: it is for every prediction >= 0 (every probability); any other set of
        // scores is sorted as (key, label) pairs.
        let mut rank_sum_pos = 0.0;
        let mut add_ties = |i: usize, j: usize, pos_in_tie: u64| {
            let avg_rank = (i + j) as f64 / 2.0 + 1.0;
            rank_sum_pos += avg_rank * pos_in_tie as f64;
        };
        if self.pairs.iter().all(|(p, _)| *p >= 0.0) {
            let mut sorted: Vec<u64> = Vec::with_capacity(n);
            sorted.extend(
                self.pairs
                    .iter()
                    .map(|&(p, y)| ((p + 0.0).to_bits() << 1) | u64::from(y)),
            );
            sorted.sort_unstable();
            let mut i = 0;
            while i < n {
                let key = sorted[i] >> 1;
                let mut j = i;
                while j + 1 < n && sorted[j + 1] >> 1 == key {
                    j += 1;
                }
                let pos_in_tie = sorted[i..=j].iter().map(|k| k & 1).sum();
                add_ties(i, j, pos_in_tie);
                i = j + 1;
            }
        } else {
            let mut sorted: Vec<(u64, bool)> = Vec::with_capacity(n);
            sorted.extend(self.pairs.iter().map(|&(p, y)| (order_key(p), y)));
            sorted.sort_unstable_by_key(|&(k, _)| k);
            let mut i = 0;
            while i < n {
                let mut j = i;
                let mut pos_in_tie = u64::from(sorted[i].1);
                while j + 1 < n && sorted[j + 1].0 == sorted[i].0 {
                    j += 1;
                    pos_in_tie += u64::from(sorted[j].1);
                }
                add_ties(i, j, pos_in_tie);
                i = j + 1;
            }
        }
        (rank_sum_pos - pos * (pos + 1.0) / 2.0) / (pos * neg)
    }

    /// The metrics so far.
    pub fn summary(&self) -> Summary {
        let n = self.pairs.len() as f64;
        if self.pairs.is_empty() {
            return Summary {
                examples: 0,
                logloss: f64::NAN,
                auc: f64::NAN,
                accuracy: f64::NAN,
                calibration: f64::NAN,
                mean_prediction: f64::NAN,
                positive_rate: f64::NAN,
            };
        }
        let mean_prediction = self.prediction_sum / n;
        let positive_rate = self.positives as f64 / n;
        Summary {
            examples: self.pairs.len() as u64,
            logloss: self.logloss_sum / n,
            auc: self.auc(),
            accuracy: self.correct as f64 / n,
            calibration: if positive_rate > 0.0 {
                mean_prediction / positive_rate
            } else {
                f64::NAN
            },
            mean_prediction,
            positive_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let mut m = Metrics::new();
        for (p, y) in [(0.9, 1.0), (0.8, 0.0), (0.3, 1.0), (0.1, 0.0)] {
            m.add(p, y);
        }
        let s = m.summary();
        // positives at 0.9 and 0.3; negatives at 0.8 and 0.1: pairs won 3 of 4.
        assert!((s.auc - 0.75).abs() < 1e-12);
        let ll = -((0.9f64).ln() + (0.2f64).ln() + (0.3f64).ln() + (0.9f64).ln()) / 4.0;
        assert!((s.logloss - ll).abs() < 1e-12);
        assert!((s.accuracy - 0.5).abs() < 1e-12);
        assert!((s.calibration - (2.1 / 4.0) / 0.5).abs() < 1e-12);
    }

    #[test]
    fn ties_count_half() {
        let mut m = Metrics::new();
        m.add(0.5, 1.0);
        m.add(0.5, 0.0);
        assert!((m.summary().auc - 0.5).abs() < 1e-12);
    }

    #[test]
    fn undefined_cases_are_nan() {
        assert!(Metrics::new().summary().logloss.is_nan());
        let mut m = Metrics::new();
        m.add(0.7, 1.0);
        assert!(m.summary().auc.is_nan());
        let mut m = Metrics::new();
        m.add(f64::NAN, 1.0);
        m.add(0.2, 0.0);
        assert!(m.summary().logloss.is_nan());
        assert!(m.summary().auc.is_nan());
    }

    #[test]
    fn logloss_is_clipped() {
        let mut m = Metrics::new();
        m.add(0.0, 1.0);
        assert!((m.summary().logloss - (-(EPS.ln()))).abs() < 1e-9);
    }

    #[test]
    fn merged_accumulators_equal_one_accumulator() {
        let (mut all, mut a, mut b) = (Metrics::new(), Metrics::with_capacity(3), Metrics::new());
        for i in 0..1000 {
            let (p, y) = ((i * 37 % 101) as f64 / 100.0, (i % 3 == 0) as u8 as f32);
            all.add(p, y);
            if i < 400 { a.add(p, y) } else { b.add(p, y) }
        }
        a.merge(&b);
        let (x, y) = (a.summary(), all.summary());
        assert_eq!(x.examples, y.examples);
        assert_eq!(x.auc, y.auc);
        assert_eq!(x.accuracy, y.accuracy);
        assert!((x.logloss - y.logloss).abs() < 1e-12);
        assert!((x.calibration - y.calibration).abs() < 1e-12);
    }

    /// Many more pairs than one block: the same AUC as counting wins per score value.
    #[test]
    fn auc_over_many_blocks_matches_counting() {
        let n = 3 * BLOCK + 123;
        let score = |i: usize| (i * 7919 % 1000) as f64 / 1000.0;
        let label = |i: usize| (i * 31 % 7) < (i * 7919 % 1000) / 200;
        let mut m = Metrics::with_capacity(1000);
        let (mut pos, mut neg) = (vec![0u64; 1000], vec![0u64; 1000]);
        for i in 0..n {
            m.add(score(i), label(i) as u8 as f32);
            let k = i * 7919 % 1000;
            if label(i) { pos[k] += 1 } else { neg[k] += 1 }
        }
        let (mut won, mut neg_below) = (0.0, 0u64);
        for k in 0..1000 {
            won += pos[k] as f64 * (neg_below as f64 + neg[k] as f64 / 2.0);
            neg_below += neg[k];
        }
        let total_pos: u64 = pos.iter().sum();
        let expected = won / (total_pos as f64 * neg_below as f64);
        let s = m.summary();
        assert_eq!(s.examples, n as u64);
        assert!((s.auc - expected).abs() < 1e-12, "{} vs {expected}", s.auc);
    }

    /// `auc` against counting won pairs (ties half): NaN with one class only.
    fn check_auc(
        auc: f64,
        scored: &[(f64, bool)],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let pos: Vec<f64> = scored.iter().filter(|x| x.1).map(|x| x.0).collect();
        let neg: Vec<f64> = scored.iter().filter(|x| !x.1).map(|x| x.0).collect();
        if pos.is_empty() || neg.is_empty() {
            proptest::prop_assert!(auc.is_nan());
        } else {
            let mut won = 0.0;
            for a in &pos {
                for b in &neg {
                    won += if a > b {
                        1.0
                    } else if a == b {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
            proptest::prop_assert!((auc - won / (pos.len() * neg.len()) as f64).abs() < 1e-9);
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn auc_matches_pair_counting(v in proptest::collection::vec((0u8..10, proptest::bool::ANY), 2..60)) {
            let mut m = Metrics::new();
            for (p, y) in &v { m.add(*p as f64 / 10.0, *y as u8 as f32); }
            let scored: Vec<(f64, bool)> = v.iter().map(|&(p, y)| (p as f64, y)).collect();
            check_auc(m.summary().auc, &scored)?;
        }

        /// Any finite scores (negative, signed zeros, tiny and huge magnitudes) rank as numbers.
        #[test]
        fn auc_ranks_any_finite_scores(v in proptest::collection::vec((
            proptest::sample::select(vec![-1e300, -2.5, -1e-300, -0.0, 0.0, 1e-300, 0.25, 0.5, 3.0, 1e300]),
            proptest::bool::ANY), 2..60)) {
            let mut m = Metrics::new();
            for (p, y) in &v { m.add(*p, *y as u8 as f32); }
            check_auc(m.summary().auc, &v)?;
        }
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[test]
    fn nan_survives_json() {
        let s = Metrics::new().summary();
        let json = serde_json::to_string(&s).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert!(back.logloss.is_nan() && back.auc.is_nan());
        assert_eq!(back.examples, 0);
    }
}
