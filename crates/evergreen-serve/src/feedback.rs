//! Online feedback: labels that arrive after the predictions, joined to them, give live
//! metrics per served version, and the canary's verdict.
//!
//! Every successful inference answer carries a prediction id (`x-evergreen-prediction-id`,
//! instance `i` of the request is `<id>/<i>`); the server remembers, for a bounded time and a
//! bounded number of instances, which version predicted what for each id (and for the
//! request's split key). Labels come back through `POST /admin/v1/models/<m>:feedback` (by
//! prediction id, or by key: the latest prediction for that key), are joined once, and feed
//! each version's live metrics over its most recent labelled predictions. With a
//! [`CanaryPolicy`], once the canary and the stable version both have enough of them, the
//! canary is rolled back when its live logloss is worse than stable's by more than the
//! tolerance, or promoted when it is at least as good.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Feedback settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackOptions {
    /// How long a prediction waits for its label (default 10 minutes).
    pub window: Duration,
    /// Instances remembered at most (default 1,000,000; the oldest are forgotten first).
    pub max_instances: usize,
    /// Labelled predictions per version the live metrics cover (the most recent; default
    /// 10,000).
    pub recent: usize,
    /// Automatic canary verdicts; `None`: live metrics only.
    pub canary: Option<CanaryPolicy>,
}

impl Default for FeedbackOptions {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            max_instances: 1_000_000,
            recent: 10_000,
            canary: None,
        }
    }
}

/// When the canary is judged, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryPolicy {
    /// Labelled predictions each of canary and stable needs before a verdict.
    pub min_examples: usize,
    /// Rolled back when its live logloss exceeds stable's by more than this.
    pub max_logloss_increase: f64,
    /// Promoted when its live logloss is at most stable's (else only rollbacks are automatic).
    pub promote: bool,
}

/// One label sent back.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackItem {
    /// The prediction id (`<id>` for instance 0, or `<id>/<i>`).
    #[serde(default)]
    pub prediction_id: Option<String>,
    /// Or the request's split key (the latest prediction with that key, instance 0).
    #[serde(default)]
    pub key: Option<String>,
    /// The label, 0 or 1 (`true`/`false` accepted).
    pub label: LabelValue,
}

/// A label as sent: a number or a boolean.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum LabelValue {
    /// 0 or 1.
    Number(f64),
    /// false or true.
    Bool(bool),
}

impl LabelValue {
    fn positive(self) -> Option<bool> {
        match self {
            LabelValue::Bool(b) => Some(b),
            LabelValue::Number(0.0) => Some(false),
            LabelValue::Number(1.0) => Some(true),
            LabelValue::Number(_) => None,
        }
    }
}

/// What became of a batch of feedback.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct JoinReport {
    /// Labels joined to their prediction.
    pub joined: u64,
    /// Ids or keys not known (never issued, or already forgotten).
    pub unknown: u64,
    /// Known, but older than the window.
    pub expired: u64,
    /// That instance was labelled already.
    pub duplicate: u64,
    /// Not a valid label or id.
    pub invalid: u64,
}

/// Live metrics of one version over its most recent labelled predictions.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Live {
    /// Labelled predictions covered.
    pub examples: usize,
    /// Mean logloss.
    pub logloss: f64,
    /// Accuracy at 0.5.
    pub accuracy: f64,
}

struct Entry {
    model: String,
    version: u64,
    predictions: Vec<f32>,
    labelled: Vec<bool>,
    at: Instant,
}

#[derive(Default)]
struct State {
    next: u64,
    entries: HashMap<u64, Entry>,
    order: VecDeque<u64>,
    instances: usize,
    by_key: HashMap<(String, Vec<u8>), u64>,
    recent: HashMap<(String, u64), VecDeque<(f32, bool)>>,
}

/// The feedback store of a server.
pub(crate) struct Feedback {
    pub(crate) opts: FeedbackOptions,
    prefix: String,
    state: Mutex<State>,
}

impl Feedback {
    pub(crate) fn new(opts: FeedbackOptions) -> Self {
        // Ids differ between server processes: a label for a previous process's prediction is
        // "unknown", never joined to another prediction.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix = format!(
            "{:x}",
            (nanos as u64) ^ (u64::from(std::process::id()) << 40)
        );
        Self {
            opts,
            prefix,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the predictions of one answered request; returns its prediction id.
    pub(crate) fn record(
        &self,
        model: &str,
        version: u64,
        predictions: &[f64],
        key: Option<&[u8]>,
    ) -> String {
        let now = Instant::now();
        let mut s = self.lock();
        let n = s.next;
        s.next += 1;
        s.instances += predictions.len();
        s.entries.insert(
            n,
            Entry {
                model: model.to_string(),
                version,
                predictions: predictions.iter().map(|&p| p as f32).collect(),
                labelled: vec![false; predictions.len()],
                at: now,
            },
        );
        s.order.push_back(n);
        if let Some(k) = key {
            s.by_key.insert((model.to_string(), k.to_vec()), n);
        }
        // Forget the oldest beyond the bounds (age: twice the window, so that a label a little
        // late is reported as expired rather than unknown).
        while let Some(&old) = s.order.front() {
            let too_many = s.instances > self.opts.max_instances;
            let too_old = s
                .entries
                .get(&old)
                .is_none_or(|e| now.duration_since(e.at) > 2 * self.opts.window);
            if !(too_many || too_old) {
                break;
            }
            s.order.pop_front();
            if let Some(e) = s.entries.remove(&old) {
                s.instances -= e.predictions.len();
            }
        }
        if s.by_key.len() > 2 * s.entries.len() + 1024 {
            let State {
                by_key, entries, ..
            } = &mut *s;
            by_key.retain(|_, id| entries.contains_key(id));
        }
        format!("{}-{n}", self.prefix)
    }

    /// Joins `items` (labels for `model`'s predictions); returns the counts and the versions
    /// whose live metrics changed.
    pub(crate) fn join(&self, model: &str, items: &[FeedbackItem]) -> (JoinReport, Vec<u64>) {
        let now = Instant::now();
        let mut report = JoinReport::default();
        let mut touched = Vec::new();
        let mut s = self.lock();
        for item in items {
            let Some(y) = item.label.positive() else {
                report.invalid += 1;
                continue;
            };
            // Exactly one of id and key. An id of another form or process, or a key never
            // seen, is unknown.
            let target = match (&item.prediction_id, &item.key) {
                (Some(id), None) => self.parse_id(id),
                (None, Some(k)) => s
                    .by_key
                    .get(&(model.to_string(), k.as_bytes().to_vec()))
                    .map(|&n| (n, 0)),
                _ => {
                    report.invalid += 1;
                    continue;
                }
            };
            let Some((n, i)) = target else {
                report.unknown += 1;
                continue;
            };
            let recent_cap = self.opts.recent;
            let State {
                entries, recent, ..
            } = &mut *s;
            let Some(e) = entries.get_mut(&n).filter(|e| e.model == model) else {
                report.unknown += 1;
                continue;
            };
            if now.duration_since(e.at) > self.opts.window {
                report.expired += 1;
                continue;
            }
            let (Some(&p), Some(done)) = (e.predictions.get(i), e.labelled.get_mut(i)) else {
                report.unknown += 1;
                continue;
            };
            if *done {
                report.duplicate += 1;
                continue;
            }
            *done = true;
            let buf = recent.entry((model.to_string(), e.version)).or_default();
            buf.push_back((p, y));
            while buf.len() > recent_cap {
                buf.pop_front();
            }
            if !touched.contains(&e.version) {
                touched.push(e.version);
            }
            report.joined += 1;
        }
        (report, touched)
    }

    /// `<prefix>-<n>` or `<prefix>-<n>/<i>` of this process.
    fn parse_id(&self, id: &str) -> Option<(u64, usize)> {
        let rest = id.strip_prefix(&self.prefix)?.strip_prefix('-')?;
        let (n, i) = match rest.split_once('/') {
            Some((n, i)) => (n, i.parse().ok()?),
            None => (rest, 0),
        };
        Some((n.parse().ok()?, i))
    }

    /// Live metrics of `version` of `model` (none without labelled predictions).
    pub(crate) fn live(&self, model: &str, version: u64) -> Option<Live> {
        let s = self.lock();
        let buf = s.recent.get(&(model.to_string(), version))?;
        if buf.is_empty() {
            return None;
        }
        let (mut loss, mut correct) = (0.0, 0usize);
        for &(p, y) in buf {
            let p = f64::from(p);
            loss += evergreen_model::logloss(p, f32::from(u8::from(y)));
            correct += usize::from((p >= 0.5) == y);
        }
        let n = buf.len();
        Some(Live {
            examples: n,
            logloss: loss / n as f64,
            accuracy: correct as f64 / n as f64,
        })
    }
}

/// The canary's verdict under `policy`, from the live metrics of canary and stable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// Not enough labelled predictions yet, or no clear answer.
    Wait,
    /// Worse than stable beyond the tolerance.
    RollBack,
    /// At least as good as stable.
    Promote,
}

pub(crate) fn verdict(
    policy: &CanaryPolicy,
    canary: Option<Live>,
    stable: Option<Live>,
) -> Verdict {
    let (Some(c), Some(s)) = (canary, stable) else {
        return Verdict::Wait;
    };
    if c.examples < policy.min_examples || s.examples < policy.min_examples {
        return Verdict::Wait;
    }
    if c.logloss > s.logloss + policy.max_logloss_increase {
        Verdict::RollBack
    } else if policy.promote && c.logloss <= s.logloss {
        Verdict::Promote
    } else {
        Verdict::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, y: f64) -> FeedbackItem {
        FeedbackItem {
            prediction_id: Some(id.into()),
            key: None,
            label: LabelValue::Number(y),
        }
    }

    #[test]
    fn labels_join_once_by_id_or_key_within_the_window() {
        let f = Feedback::new(FeedbackOptions::default());
        let a = f.record("m", 1, &[0.9, 0.2], Some(b"user-1"));
        let b = f.record("m", 2, &[0.4], None);
        let (r, touched) = f.join(
            "m",
            &[
                item(&a, 1.0),
                item(&format!("{a}/1"), 0.0),
                item(&a, 1.0),
                item(&b, 1.0),
                item(&format!("{a}/7"), 1.0),
                item("someone-else-3", 1.0),
                item(&b, 0.5),
            ],
        );
        assert_eq!(
            r,
            JoinReport {
                joined: 3,
                unknown: 2,
                expired: 0,
                duplicate: 1,
                invalid: 1
            }
        );
        assert_eq!(touched, [1, 2]);
        let live = f.live("m", 1).unwrap();
        assert_eq!(live.examples, 2);
        assert_eq!(live.accuracy, 1.0);
        let want = -(0.9f32 as f64).ln() - (1.0 - 0.2f32 as f64).ln();
        assert!((live.logloss - want / 2.0).abs() < 1e-12);
        // By key: the latest prediction of that key; another model's key is not this one's.
        let c = f.record("m", 1, &[0.7], Some(b"user-1"));
        let by_key = FeedbackItem {
            prediction_id: None,
            key: Some("user-1".into()),
            label: LabelValue::Bool(true),
        };
        assert_eq!(f.join("m", std::slice::from_ref(&by_key)).0.joined, 1);
        assert_eq!(f.join("m", std::slice::from_ref(&by_key)).0.duplicate, 1);
        assert_eq!(f.join("other", &[by_key]).0.unknown, 1);
        assert_eq!(f.join("other", &[item(&c, 1.0)]).0.unknown, 1);
        assert_eq!(f.live("m", 1).unwrap().examples, 3);
    }

    #[test]
    fn memory_and_age_are_bounded() {
        let f = Feedback::new(FeedbackOptions {
            max_instances: 10,
            window: Duration::from_millis(0),
            recent: 4,
            canary: None,
        });
        let ids: Vec<String> = (0..20)
            .map(|_| f.record("m", 1, &[0.5, 0.5], None))
            .collect();
        assert!(f.lock().instances <= 10);
        // The window is zero: a label for a remembered prediction has expired.
        let last = ids.last().unwrap();
        let (r, _) = f.join("m", &[item(last, 1.0), item(&ids[0], 1.0)]);
        assert_eq!((r.expired, r.unknown), (1, 1));
        // Live metrics cover only the most recent labelled predictions.
        let g = Feedback::new(FeedbackOptions {
            recent: 4,
            ..FeedbackOptions::default()
        });
        for i in 0..10 {
            let id = g.record("m", 1, &[0.9], None);
            g.join("m", &[item(&id, f64::from(i % 2))]);
        }
        assert_eq!(g.live("m", 1).unwrap().examples, 4);
    }

    #[test]
    fn verdicts_wait_for_enough_labels_then_roll_back_or_promote() {
        let p = CanaryPolicy {
            min_examples: 100,
            max_logloss_increase: 0.02,
            promote: true,
        };
        let live = |examples, logloss| {
            Some(Live {
                examples,
                logloss,
                accuracy: 0.5,
            })
        };
        assert_eq!(verdict(&p, live(99, 0.9), live(500, 0.3)), Verdict::Wait);
        assert_eq!(verdict(&p, None, live(500, 0.3)), Verdict::Wait);
        assert_eq!(
            verdict(&p, live(100, 0.33), live(500, 0.3)),
            Verdict::RollBack
        );
        assert_eq!(verdict(&p, live(100, 0.31), live(500, 0.3)), Verdict::Wait);
        assert_eq!(
            verdict(&p, live(100, 0.29), live(500, 0.3)),
            Verdict::Promote
        );
        let no_promote = CanaryPolicy {
            promote: false,
            ..p
        };
        assert_eq!(
            verdict(&no_promote, live(100, 0.29), live(500, 0.3)),
            Verdict::Wait
        );
    }
}
