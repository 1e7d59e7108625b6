//! Per-model serving state: the atomically swapped snapshot of loaded versions, and the reload
//! pass that keeps it in step with the registry directory.
//!
//! Rules of a pass: the newest `N` versions on disk that load (and verify) are served, plus any
//! version a label or the traffic policy (pinned, shadow) names. A version already loaded is reused, never reloaded. A version that
//! fails to load is logged and counted once per attempt; it is retried only after a back-off,
//! at most [`RETRY_DELAYS`]`.len()` times, or at once when its files change. When no version on
//! disk can be served, the versions already served stay (a failed load or a deleted directory
//! never takes away a working version).

use crate::batching::{BATCHING_PARAMS_FILE, Batcher, BatchingParameters};
use crate::error::LoadError;
use arc_swap::ArcSwap;
use evergreen_metrics::Metrics;
use evergreen_registry::{MANIFEST_FILE, MODEL_FILE, Registry, SharedVersion, TrafficPolicy};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Waits before the second and third attempt to load a version that failed; after the last,
/// the version is retried only when its files change.
pub(crate) const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(30)];

/// The versions of one model being served, immutable once published.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Loaded versions.
    pub(crate) versions: BTreeMap<u64, SharedVersion>,
    /// Labels from `labels.json` as of the pass that built this snapshot.
    pub(crate) labels: BTreeMap<String, u64>,
    /// Traffic policy from `traffic.json` as of that pass.
    pub(crate) traffic: TrafficPolicy,
    /// The batching queue of each loaded version that batches requests.
    pub(crate) batchers: BTreeMap<u64, Arc<Batcher>>,
}

impl Snapshot {
    /// The newest served version.
    pub(crate) fn latest(&self) -> Option<(u64, &SharedVersion)> {
        self.versions.iter().next_back().map(|(v, lv)| (*v, lv))
    }
}

/// One model: name, base path, current snapshot and what the reload passes remember.
pub(crate) struct ModelState {
    pub(crate) name: String,
    pub(crate) base_path: PathBuf,
    policy: crate::VersionPolicy,
    /// Labels from the model config file (under `labels.json`'s).
    config_labels: BTreeMap<String, u64>,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    memory: Mutex<Memory>,
    batching: Option<crate::Batching>,
    mapping: crate::ModelMapping,
}

#[derive(Default)]
struct Memory {
    failures: HashMap<u64, Failure>,
    /// Problems reported by the last pass (so a persistent problem is logged once).
    problems: Vec<String>,
}

struct Failure {
    attempts: usize,
    signature: Signature,
    at: Instant,
}

/// What identifies the content of a version directory cheaply: the manifest's bytes and the
/// model and warm-up files' sizes and modification times.
#[derive(Debug, PartialEq)]
struct Signature {
    manifest: Option<Vec<u8>>,
    model: Option<(u64, Option<SystemTime>)>,
    warmup: Option<(u64, Option<SystemTime>)>,
    tf_warmup: Option<(u64, Option<SystemTime>)>,
}

fn signature(dir: &Path) -> Signature {
    let stat = |f: &str| {
        std::fs::metadata(dir.join(f))
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    Signature {
        manifest: std::fs::read(dir.join(MANIFEST_FILE)).ok(),
        model: stat(MODEL_FILE),
        warmup: stat(WARMUP_FILE),
        tf_warmup: stat(crate::warmup::TF_WARMUP_FILE),
    }
}

/// The batching parameters of version directory `dir` under `batching`: the server's, or with
/// per-model parameters, those of its [`BATCHING_PARAMS_FILE`] (none without one).
fn batching_params(
    batching: Option<&crate::Batching>,
    dir: &Path,
) -> Result<Option<BatchingParameters>, LoadError> {
    let Some(b) = batching else {
        return Ok(None);
    };
    if !b.per_model {
        return Ok(Some(b.params.clone()));
    }
    let file = dir.join(BATCHING_PARAMS_FILE);
    let fail = |message: String| LoadError::Batching {
        path: file.clone(),
        message,
    };
    match std::fs::read_to_string(&file) {
        Ok(text) => crate::batching::parse_batching_parameters(&text)
            .map(|mut p| {
                if !text.contains("num_batch_threads") {
                    p.num_batch_threads = b.params.num_batch_threads;
                }
                Some(p)
            })
            .map_err(fail),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(e.to_string())),
    }
}

fn load_checked(
    registry: &Registry,
    version: u64,
    batching: Option<&crate::Batching>,
    mapping: &crate::ModelMapping,
) -> Result<(SharedVersion, Option<BatchingParameters>), LoadError> {
    let dir = registry.version_dir(version);
    let params = batching_params(batching, &dir)?;
    let scratch = match mapping {
        crate::ModelMapping::Off => None,
        crate::ModelMapping::BesideVersion => Some(dir.as_path()),
        crate::ModelMapping::In(d) => Some(d.as_path()),
    };
    let loaded = registry.load_with(version, scratch)?;
    let spec_dim = loaded.transformer.spec().dim();
    let model_dim = loaded.model.dim();
    if model_dim != spec_dim {
        return Err(LoadError::Dimension {
            path: registry.version_dir(version).join(MODEL_FILE),
            model_dim,
            spec_dim,
        });
    }
    warm_up(&loaded, &registry.version_dir(version))?;
    Ok((Arc::new(loaded), params))
}

/// File of warm-up requests in a version directory: one `:predict` body (JSON) per line.
pub const WARMUP_FILE: &str = "warmup.jsonl";

/// Most warm-up requests read from a warm-up file.
const MAX_WARMUP_REQUESTS: usize = 1000;

/// Warms a loaded version up before it is swapped in, off the request path (TF Serving's
/// `--enable_model_warmup`): the requests of TF Serving's warm-up file
/// (`assets.extra/tf_serving_warmup_requests`: predict, classify and regress logs) and of its
/// `warmup.jsonl` (`:predict` bodies), those it has, else a built-in set (every input missing,
/// then each input alone with a typical value). Every request must be answered and every
/// prediction must be a probability; otherwise the version is not served.
fn warm_up(lv: &evergreen_registry::LoadedVersion, dir: &Path) -> Result<(), LoadError> {
    let file = dir.join(WARMUP_FILE);
    let tf_file = dir.join(crate::warmup::TF_WARMUP_FILE);
    let fail = |path: &Path, message: String| LoadError::Warmup {
        path: path.to_path_buf(),
        message,
    };
    let check = |records: &[evergreen_core::RawRecord], what: &str, path: &Path| {
        for (i, r) in records.iter().enumerate() {
            let x = lv
                .transformer
                .features(r)
                .map_err(|e| fail(path, format!("{what}, instance {i}: {e}")))?;
            let p = lv.model.predict(&x);
            if !(0.0..=1.0).contains(&p) {
                return Err(fail(
                    path,
                    format!("{what}, instance {i}: prediction {p} is not a probability"),
                ));
            }
        }
        Ok(())
    };
    let tf_warmed = match std::fs::read(&tf_file) {
        Ok(bytes) => {
            let requests = crate::warmup::requests(&bytes, MAX_WARMUP_REQUESTS)
                .map_err(|e| fail(&tf_file, e))?;
            for (what, records) in &requests {
                check(records, what, &tf_file)?;
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(fail(&tf_file, e.to_string())),
    };
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            for (n, line) in text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(MAX_WARMUP_REQUESTS)
                .enumerate()
            {
                let (_, records) = crate::json::predict_request(line.as_bytes(), None)
                    .map_err(|e| fail(&file, format!("request {}: {e}", n + 1)))?;
                check(&records, &format!("request {}", n + 1), &file)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && tf_warmed => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let spec = lv.transformer.spec();
            let mut records = vec![evergreen_core::RawRecord::default()];
            for c in &spec.categorical {
                records.push(
                    [(c.name.as_str(), evergreen_core::RawValue::Str("0".into()))]
                        .into_iter()
                        .collect(),
                );
            }
            for c in &spec.numeric {
                records.push(
                    [(c.name.as_str(), evergreen_core::RawValue::Num(0.0))]
                        .into_iter()
                        .collect(),
                );
            }
            check(&records, "built-in request", dir)
        }
        Err(e) => Err(fail(&file, e.to_string())),
    }
}

impl ModelState {
    pub(crate) fn new(
        name: String,
        base_path: PathBuf,
        policy: crate::VersionPolicy,
        config_labels: BTreeMap<String, u64>,
        batching: Option<crate::Batching>,
        mapping: crate::ModelMapping,
    ) -> Self {
        Self {
            name,
            base_path,
            policy,
            config_labels,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            memory: Mutex::new(Memory::default()),
            batching,
            mapping,
        }
    }

    /// Whether this state serves exactly `base_path` under `policy` and `config_labels` (a
    /// model config file read again keeps it, loaded versions and all).
    pub(crate) fn serves(
        &self,
        base_path: &std::path::Path,
        policy: &crate::VersionPolicy,
        config_labels: &BTreeMap<String, u64>,
    ) -> bool {
        self.base_path == base_path
            && self.policy == *policy
            && self.config_labels == *config_labels
    }

    /// One reload pass (blocking IO) under the model's version policy.
    pub(crate) fn reload(&self, metrics: &Arc<Metrics>) {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let mut problems = Vec::new();
        self.pass(metrics, &mut memory, &mut problems);
        if problems != memory.problems {
            for p in &problems {
                tracing::warn!(model = %self.name, "{p}");
            }
            if problems.is_empty() {
                tracing::info!(model = %self.name, base_path = %self.base_path.display(), "registry readable again");
            }
            memory.problems = problems;
        }
    }

    fn pass(&self, metrics: &Arc<Metrics>, memory: &mut Memory, problems: &mut Vec<String>) {
        let registry = match Registry::open_existing(&self.base_path, &self.name) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!(
                    "base path not readable; no new version can be loaded: {e}"
                ));
                return;
            }
        };
        let on_disk = match registry.versions() {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("cannot list versions: {e}"));
                return;
            }
        };
        let current = self.snapshot.load_full();
        let labels = match registry.labels() {
            Ok(l) => {
                let mut merged = self.config_labels.clone();
                merged.extend(l);
                merged
            }
            Err(e) => {
                problems.push(format!(
                    "cannot read labels; keeping the previous ones: {e}"
                ));
                current.labels.clone()
            }
        };
        let traffic = match registry.traffic() {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!(
                    "cannot read the traffic policy; keeping the previous one: {e}"
                ));
                current.traffic.clone()
            }
        };
        memory
            .failures
            .retain(|v, _| on_disk.binary_search(v).is_ok());

        let mut chosen = BTreeMap::new();
        let mut batchers = BTreeMap::new();
        match &self.policy {
            crate::VersionPolicy::Latest(keep) => {
                for &v in on_disk.iter().rev() {
                    if chosen.len() >= (*keep).max(1) {
                        break;
                    }
                    if let Some(lv) =
                        self.obtain(v, &current, memory, &registry, metrics, &mut batchers)
                    {
                        chosen.insert(v, lv);
                    }
                }
            }
            crate::VersionPolicy::All => {
                for &v in &on_disk {
                    if let Some(lv) =
                        self.obtain(v, &current, memory, &registry, metrics, &mut batchers)
                    {
                        chosen.insert(v, lv);
                    }
                }
            }
            crate::VersionPolicy::Specific(wanted) => {
                for &v in wanted {
                    if on_disk.binary_search(&v).is_ok()
                        && let Some(lv) =
                            self.obtain(v, &current, memory, &registry, metrics, &mut batchers)
                    {
                        chosen.insert(v, lv);
                    }
                }
            }
        }
        for v in labels.values().copied().chain(traffic.versions()) {
            if chosen.contains_key(&v) || on_disk.binary_search(&v).is_err() {
                continue;
            }
            if let Some(lv) = self.obtain(v, &current, memory, &registry, metrics, &mut batchers) {
                chosen.insert(v, lv);
            }
        }
        if chosen.is_empty() {
            // Nothing on disk can be served: keep serving what we have.
            chosen = current.versions.clone();
            batchers = current.batchers.clone();
        }
        batchers.retain(|v, _| chosen.contains_key(v));
        let unchanged = chosen.keys().eq(current.versions.keys())
            && labels == current.labels
            && traffic == current.traffic;
        if !unchanged {
            let served: Vec<u64> = chosen.keys().rev().copied().collect();
            let dropped: Vec<u64> = current
                .versions
                .keys()
                .filter(|v| !chosen.contains_key(v))
                .copied()
                .collect();
            tracing::info!(model = %self.name, ?served, ?dropped, ?labels, ?traffic, "serving versions");
            self.snapshot.store(Arc::new(Snapshot {
                versions: chosen,
                labels,
                traffic,
                batchers,
            }));
        }
        if let Some((v, _)) = self.snapshot.load().latest() {
            metrics
                .serving_version
                .get_or_create(&Metrics::model(&self.name))
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    /// The loaded version `v`: reused from the current snapshot, or loaded now unless it failed
    /// before and is neither due for a retry nor changed on disk.
    fn obtain(
        &self,
        v: u64,
        current: &Snapshot,
        memory: &mut Memory,
        registry: &Registry,
        metrics: &Arc<Metrics>,
        batchers: &mut BTreeMap<u64, Arc<Batcher>>,
    ) -> Option<SharedVersion> {
        if let Some(lv) = current.versions.get(&v) {
            if let Some(b) = current.batchers.get(&v) {
                batchers.insert(v, b.clone());
            }
            return Some(lv.clone());
        }
        let dir = registry.version_dir(v);
        let before = signature(&dir);
        let mut attempts = 0;
        if let Some(f) = memory.failures.get(&v) {
            if before != f.signature {
                tracing::info!(model = %self.name, version = v, "files of a failed version changed; loading it again");
            } else {
                let due = RETRY_DELAYS
                    .get(f.attempts - 1)
                    .is_some_and(|d| f.at.elapsed() >= *d);
                if !due {
                    return None;
                }
                attempts = f.attempts;
            }
        }
        let started = Instant::now();
        match load_checked(registry, v, self.batching.as_ref(), &self.mapping) {
            Ok((lv, params)) => {
                if let Some(p) = params {
                    tracing::info!(model = %self.name, version = v, ?p, "batching requests");
                    let served = lv.clone();
                    let score = move |xs: &[evergreen_core::FeatureVector], out: &mut Vec<f64>| {
                        served.model.predict_batch(xs, out)
                    };
                    batchers.insert(
                        v,
                        Arc::new(Batcher::start(score, &p, &self.name, metrics.clone())),
                    );
                }
                memory.failures.remove(&v);
                metrics
                    .version_loads
                    .get_or_create(&Metrics::outcome(&self.name, "loaded"))
                    .inc();
                if let Some(why) = &lv.fallback {
                    tracing::warn!(model = %self.name, version = v, "model read into memory, not mapped: {why}");
                }
                tracing::info!(
                    model = %self.name,
                    version = v,
                    mapped = lv.mapped,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "loaded version"
                );
                Some(lv)
            }
            Err(e) => {
                if !dir.exists() {
                    // Removed while we read it (retention): not a failure of the version.
                    memory.failures.remove(&v);
                    tracing::debug!(model = %self.name, version = v, "version removed while loading");
                    return None;
                }
                metrics
                    .version_loads
                    .get_or_create(&Metrics::outcome(&self.name, "failed"))
                    .inc();
                let attempts = attempts + 1;
                let retry = match RETRY_DELAYS.get(attempts - 1) {
                    Some(d) => format!("retrying in {}s", d.as_secs()),
                    None => "not retrying until its files change".to_string(),
                };
                tracing::warn!(
                    model = %self.name,
                    version = v,
                    error = %e,
                    "failed to load version; it is not served ({retry})"
                );
                memory.failures.insert(
                    v,
                    Failure {
                        attempts,
                        signature: before,
                        at: Instant::now(),
                    },
                );
                None
            }
        }
    }
}
