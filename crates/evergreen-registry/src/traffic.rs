//! Server-side traffic policy (`traffic.json`) and the admin actions on it and on `labels.json`:
//! promote, rollback, split (with a ramp), pin and shadow.
//!
//! Requests that name no version ("unversioned") are routed by the policy: to the pinned version
//! if one is pinned; else to the `canary` label for a share of request keys (sticky: a key's
//! bucket is a hash, so a key stays on one side while the share only grows) and to the `stable`
//! label for the rest; with no `stable` label, to the newest served version (TF Serving's
//! behaviour). The actions are plain functions over a [`Registry`], shared by the server's admin
//! API and the `evergreen models` CLI; each returns what changed, for the lineage record.

use crate::{Registry, RegistryError, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;

/// File name of the traffic policy in the model's base directory.
pub const TRAFFIC_FILE: &str = "traffic.json";

/// The label unversioned requests go to (besides the canary share).
pub const STABLE: &str = "stable";
/// The label that gets the canary share.
pub const CANARY: &str = "canary";
/// Request header carrying the split key when the policy names none.
pub const DEFAULT_KEY_HEADER: &str = "x-evergreen-key";

/// `traffic.json`: how unversioned requests are routed. Spec in `docs/formats.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Every unversioned request goes to this version (overrides the split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<u64>,
    /// Share of request keys routed to the `canary` label, in percent (0 to 100).
    #[serde(default)]
    pub canary_percent: f64,
    /// Ramp schedule: the canary share takes these percentages in turn, one step every
    /// `ramp_interval_s` seconds from `ramp_started_ms` (the last step stays). Empty: no ramp.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ramp: Vec<f64>,
    /// Seconds per ramp step.
    #[serde(default)]
    pub ramp_interval_s: u64,
    /// When the ramp started, ms since the Unix epoch.
    #[serde(default)]
    pub ramp_started_ms: i64,
    /// Request header holding the split key (default [`DEFAULT_KEY_HEADER`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_header: Option<String>,
    /// Feature of the first instance holding the split key (e.g. a user id), used when the
    /// header is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_feature: Option<String>,
    /// Shadow: a share of unversioned requests is also predicted by this version, off the
    /// response path; its predictions are compared with the served ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
    /// Versions promoted to `stable`, oldest first; rollback goes back along it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<u64>,
    /// Publication paused, and why: the trainer starts no cycle (new spans wait, nothing is
    /// lost) until it is resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publication_paused: Option<String>,
    /// Alerts already acted on (`fingerprint@startsAt` of an Alertmanager alert), newest last,
    /// at most [`HANDLED_ALERTS`]: a notification sent again does not act twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handled_alerts: Vec<String>,
}

/// Alerts remembered in [`TrafficPolicy::handled_alerts`].
pub const HANDLED_ALERTS: usize = 64;

impl Default for TrafficPolicy {
    fn default() -> Self {
        Self {
            pinned: None,
            canary_percent: 0.0,
            ramp: Vec::new(),
            ramp_interval_s: 0,
            ramp_started_ms: 0,
            key_header: None,
            key_feature: None,
            shadow: None,
            history: Vec::new(),
            publication_paused: None,
            handled_alerts: Vec::new(),
        }
    }
}

/// The shadow part of a [`TrafficPolicy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    /// Version predicting the mirrored requests.
    pub version: u64,
    /// Share of unversioned requests mirrored, in percent.
    pub percent: f64,
}

impl TrafficPolicy {
    /// The canary share in percent at `now_ms` (the ramp's current step, if any).
    pub fn canary_percent_at(&self, now_ms: i64) -> f64 {
        if self.ramp.is_empty() {
            return self.canary_percent;
        }
        let elapsed = now_ms.saturating_sub(self.ramp_started_ms).max(0) as u64;
        let step = match self.ramp_interval_s {
            0 => self.ramp.len() - 1,
            s => usize::try_from(elapsed / (s * 1000)).unwrap_or(usize::MAX),
        };
        self.ramp[step.min(self.ramp.len() - 1)]
    }

    /// The header holding the split key.
    pub fn key_header(&self) -> &str {
        self.key_header.as_deref().unwrap_or(DEFAULT_KEY_HEADER)
    }

    /// Versions the policy needs served (pinned, shadow).
    pub fn versions(&self) -> impl Iterator<Item = u64> + '_ {
        self.pinned
            .into_iter()
            .chain(self.shadow.as_ref().map(|s| s.version))
    }

    /// Checks ranges (percentages within 0-100, ramp steps non-decreasing).
    pub fn validate(&self) -> Result<(), String> {
        let pct = |what: &str, p: f64| {
            if (0.0..=100.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("{what} must be between 0 and 100 (got {p})"))
            }
        };
        pct("canary_percent", self.canary_percent)?;
        for &p in &self.ramp {
            pct("a ramp step", p)?;
        }
        if self.ramp.windows(2).any(|w| w[1] < w[0]) {
            return Err("ramp steps must not decrease (a key in the canary stays there)".into());
        }
        if let Some(s) = &self.shadow {
            pct("shadow percent", s.percent)?;
        }
        for name in [&self.key_header, &self.key_feature].into_iter().flatten() {
            if name.is_empty() || name.len() > 128 {
                return Err(format!("key name {name:?} must have 1 to 128 characters"));
            }
        }
        Ok(())
    }
}

/// Which side of the split a request key falls on: its bucket in [0, 100), from a hash, so a key
/// keeps its side as long as the share does not shrink below its bucket.
pub fn key_bucket(key: &[u8]) -> f64 {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(key, 0x5EED_CA9A);
    (h >> 11) as f64 / (1u64 << 53) as f64 * 100.0
}

/// What an admin action changed (recorded in lineage as its details).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminChange {
    /// The action (`promote`, `rollback`, `split`, `pin`, `unpin`, `shadow`).
    pub action: &'static str,
    /// Labels before and after.
    pub labels_before: BTreeMap<String, u64>,
    /// Labels after.
    pub labels_after: BTreeMap<String, u64>,
    /// Policy before.
    pub traffic_before: TrafficPolicy,
    /// Policy after.
    pub traffic_after: TrafficPolicy,
    /// One line saying what happened.
    pub summary: String,
}

/// An admin action that cannot be carried out as asked.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request does not make sense (names no version, out-of-range share, ...).
    #[error("{0}")]
    Invalid(String),
    /// The registry could not be read or written.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl Registry {
    /// The traffic policy; the default (no split, nothing pinned) when `traffic.json` is absent.
    pub fn traffic(&self) -> Result<TrafficPolicy, RegistryError> {
        let path = self.base.join(TRAFFIC_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let p: TrafficPolicy =
                    serde_json::from_slice(&bytes).map_err(|e| RegistryError::Traffic {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                p.validate()
                    .map_err(|message| RegistryError::Traffic { path, message })?;
                Ok(p)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrafficPolicy::default()),
            Err(e) => Err(RegistryError::Io { path, source: e }),
        }
    }

    /// Replaces the traffic policy atomically.
    pub fn set_traffic(&self, policy: &TrafficPolicy) -> Result<(), RegistryError> {
        let json = serde_json::to_vec_pretty(policy).expect("policy serializes");
        write_atomic(&self.base.join(TRAFFIC_FILE), &json)
    }

    /// The version an unversioned request is served from when no split applies: `stable`, else
    /// the newest version on disk.
    fn current_stable(&self, labels: &BTreeMap<String, u64>) -> Result<Option<u64>, AdminError> {
        Ok(match labels.get(STABLE) {
            Some(v) => Some(*v),
            None => self.latest()?,
        })
    }

    fn require_version(&self, v: u64) -> Result<(), AdminError> {
        self.manifest(v).map(|_| ()).map_err(|e| {
            AdminError::Invalid(format!(
                "version {v} of model {} cannot be used: {e}",
                self.model_name
            ))
        })
    }

    /// Applies `change` to labels and policy; writes the labels first, then the policy (each
    /// atomically), so a reader never sees a split towards a label that does not exist yet.
    fn admin(
        &self,
        action: &'static str,
        change: impl FnOnce(
            &mut BTreeMap<String, u64>,
            &mut TrafficPolicy,
        ) -> Result<String, AdminError>,
    ) -> Result<AdminChange, AdminError> {
        let labels_before = self.labels()?;
        let traffic_before = self.traffic()?;
        let (mut labels, mut traffic) = (labels_before.clone(), traffic_before.clone());
        let summary = change(&mut labels, &mut traffic)?;
        traffic.validate().map_err(AdminError::Invalid)?;
        if labels != labels_before {
            self.set_labels(&labels)?;
        }
        if traffic != traffic_before {
            self.set_traffic(&traffic)?;
        }
        Ok(AdminChange {
            action,
            labels_before,
            labels_after: labels,
            traffic_before,
            traffic_after: traffic,
            summary,
        })
    }

    /// Makes `version` (default: the `canary` label) the `stable` version: the canary label and
    /// share are cleared, a ramp ends, and the version joins the promotion history.
    pub fn promote(&self, version: Option<u64>) -> Result<AdminChange, AdminError> {
        let labels = self.labels()?;
        let target = match version.or_else(|| labels.get(CANARY).copied()) {
            Some(v) => v,
            None => {
                return Err(AdminError::Invalid(
                    "nothing to promote: give a version, or set a canary first".into(),
                ));
            }
        };
        self.require_version(target)?;
        let before = self.current_stable(&labels)?;
        self.admin("promote", |labels, traffic| {
            labels.insert(STABLE.into(), target);
            if labels.get(CANARY) == Some(&target) || version.is_none() {
                labels.remove(CANARY);
            }
            traffic.canary_percent = 0.0;
            traffic.ramp.clear();
            if let Some(b) = before
                && traffic.history.last() != Some(&b)
                && b != target
            {
                traffic.history.push(b);
            }
            if traffic.history.last() != Some(&target) {
                traffic.history.push(target);
            }
            Ok(format!("stable is now version {target} (was {before:?})"))
        })
    }

    /// Rolls back: a canary that gets traffic is withdrawn (label and share cleared); otherwise
    /// `stable` goes back to the previous version of the promotion history (or, without one, to
    /// the newest version older than the one serving). A pin is removed either way.
    pub fn rollback(&self) -> Result<AdminChange, AdminError> {
        self.rollback_marking(None)
    }

    /// Pauses publication (the trainer starts no cycle until [`Registry::resume_publication`]),
    /// saying `why`.
    pub fn pause_publication(&self, why: &str) -> Result<AdminChange, AdminError> {
        let why = if why.is_empty() { "paused" } else { why }.to_string();
        self.admin("pause", |_, traffic| {
            traffic.publication_paused = Some(why.clone());
            Ok(format!("publication paused: {why}"))
        })
    }

    /// Resumes publication.
    pub fn resume_publication(&self) -> Result<AdminChange, AdminError> {
        self.admin("resume", |_, traffic| {
            let was = traffic.publication_paused.take();
            Ok(match was {
                Some(why) => format!("publication resumed (was paused: {why})"),
                None => "publication was not paused".into(),
            })
        })
    }

    /// Whether an alert (its `fingerprint@startsAt`) was acted on already.
    pub fn alert_handled(&self, key: &str) -> Result<bool, RegistryError> {
        Ok(self.traffic()?.handled_alerts.iter().any(|k| k == key))
    }

    /// [`Registry::rollback`] on behalf of alert `key` (remembered in the same write, so that the
    /// alert sent again, even after a restart, does not roll back twice): `None` when `key`
    /// was acted on already.
    pub fn rollback_for_alert(&self, key: &str) -> Result<Option<AdminChange>, AdminError> {
        if self.alert_handled(key)? {
            return Ok(None);
        }
        self.rollback_marking(Some(key)).map(Some)
    }

    fn rollback_marking(&self, alert: Option<&str>) -> Result<AdminChange, AdminError> {
        let mark = |traffic: &mut TrafficPolicy| {
            if let Some(k) = alert {
                traffic.handled_alerts.push(k.to_string());
                let over = traffic.handled_alerts.len().saturating_sub(HANDLED_ALERTS);
                traffic.handled_alerts.drain(..over);
            }
        };
        let labels = self.labels()?;
        let traffic = self.traffic()?;
        let canary_live = labels.contains_key(CANARY)
            && (traffic.canary_percent > 0.0 || !traffic.ramp.is_empty());
        if canary_live {
            let canary = labels[CANARY];
            return self.admin("rollback", |labels, traffic| {
                labels.remove(CANARY);
                traffic.canary_percent = 0.0;
                traffic.ramp.clear();
                traffic.pinned = None;
                mark(traffic);
                Ok(format!("canary version {canary} withdrawn"))
            });
        }
        let current = self.current_stable(&labels)?.ok_or_else(|| {
            AdminError::Invalid(format!(
                "model {} has no version to roll back from",
                self.model_name
            ))
        })?;
        let on_disk = self.versions()?;
        let mut history: Vec<u64> = traffic.history.clone();
        while history.last() == Some(&current) {
            history.pop();
        }
        // The newest earlier stable still on disk, else the newest older version on disk.
        let previous = loop {
            match history.pop() {
                Some(v) if on_disk.binary_search(&v).is_ok() => break Some(v),
                Some(_) => continue,
                None => break on_disk.iter().rev().find(|v| **v < current).copied(),
            }
        };
        let Some(previous) = previous else {
            return Err(AdminError::Invalid(format!(
                "model {}: no version before {current} to roll back to",
                self.model_name
            )));
        };
        self.admin("rollback", |labels, traffic| {
            labels.insert(STABLE.into(), previous);
            if labels.get(CANARY) == Some(&current) {
                labels.remove(CANARY);
            }
            traffic.pinned = None;
            traffic.history = history;
            traffic.history.push(previous);
            mark(traffic);
            Ok(format!(
                "stable rolled back from version {current} to {previous}"
            ))
        })
    }

    /// Sends `percent` of request keys to `canary` (which becomes the `canary` label), or, with
    /// a `ramp`, the ramp's steps one per `ramp_interval_s` from now. Without a `stable` label,
    /// the newest version older than the canary becomes `stable` (the rest of the traffic stays
    /// where it was). `key_header` /
    /// `key_feature` choose where the sticky key is read (unchanged when `None`).
    pub fn split(&self, split: &SplitRequest, now_ms: i64) -> Result<AdminChange, AdminError> {
        self.require_version(split.canary)?;
        if !split.ramp.is_empty() && split.ramp_interval_s == 0 {
            return Err(AdminError::Invalid(
                "a ramp needs ramp_interval_s > 0".into(),
            ));
        }
        // Without a `stable` label the rest of the traffic would follow the newest version (which
        // may be the canary itself): the version serving now becomes `stable`.
        let on_disk = self.versions()?;
        let base = on_disk
            .iter()
            .rev()
            .find(|v| **v < split.canary)
            .or_else(|| on_disk.iter().rev().find(|v| **v != split.canary))
            .copied();
        self.admin("split", |labels, traffic| {
            if !labels.contains_key(STABLE) {
                match base {
                    Some(b) => {
                        labels.insert(STABLE.into(), b);
                    }
                    None => {
                        return Err(AdminError::Invalid(format!(
                            "version {} is the only version: there is nothing to split with",
                            split.canary
                        )));
                    }
                }
            }
            labels.insert(CANARY.into(), split.canary);
            traffic.canary_percent = split.percent;
            traffic.ramp = split.ramp.clone();
            traffic.ramp_interval_s = split.ramp_interval_s;
            traffic.ramp_started_ms = now_ms;
            if split.key_header.is_some() {
                traffic.key_header = split.key_header.clone();
            }
            if split.key_feature.is_some() {
                traffic.key_feature = split.key_feature.clone();
            }
            Ok(if split.ramp.is_empty() {
                format!(
                    "{}% of keys to canary version {}",
                    split.percent, split.canary
                )
            } else {
                format!(
                    "canary version {} ramps {:?}% every {}s",
                    split.canary, split.ramp, split.ramp_interval_s
                )
            })
        })
    }

    /// Pins unversioned traffic to `version`, or removes the pin.
    pub fn pin(&self, version: Option<u64>) -> Result<AdminChange, AdminError> {
        if let Some(v) = version {
            self.require_version(v)?;
        }
        self.admin(
            if version.is_some() { "pin" } else { "unpin" },
            |_, traffic| {
                traffic.pinned = version;
                Ok(match version {
                    Some(v) => format!("unversioned requests pinned to version {v}"),
                    None => "pin removed".into(),
                })
            },
        )
    }

    /// Mirrors `percent` of unversioned requests to `version` (shadow), or stops mirroring.
    pub fn shadow(&self, shadow: Option<Shadow>) -> Result<AdminChange, AdminError> {
        if let Some(s) = &shadow {
            self.require_version(s.version)?;
        }
        self.admin("shadow", |_, traffic| {
            let summary = match &shadow {
                Some(s) => format!(
                    "{}% of requests mirrored to version {}",
                    s.percent, s.version
                ),
                None => "shadow stopped".into(),
            };
            traffic.shadow = shadow;
            Ok(summary)
        })
    }
}

/// Arguments of [`Registry::split`].
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// Version that becomes the canary.
    pub canary: u64,
    /// Share of keys in percent (ignored while a ramp runs).
    #[serde(default)]
    pub percent: f64,
    /// Ramp steps in percent (non-decreasing).
    #[serde(default)]
    pub ramp: Vec<f64>,
    /// Seconds per ramp step.
    #[serde(default)]
    pub ramp_interval_s: u64,
    /// Header holding the sticky key.
    #[serde(default)]
    pub key_header: Option<String>,
    /// Feature holding the sticky key.
    #[serde(default)]
    pub key_feature: Option<String>,
}
