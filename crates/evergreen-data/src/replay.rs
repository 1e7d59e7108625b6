//! The replay store: a bounded sample of past training examples, mixed into each new window
//! against catastrophic forgetting.
//!
//! Sampling is a priority sample (Efraimidis–Spirakis A-Res in log space): every example offered
//! gets the priority `ln(E) - w · ln 2 / half_life`, with `E ~ Exp(1)` drawn from a
//! deterministic generator and `w` the window number, and the store keeps the `capacity`
//! examples with the smallest priorities. With `half_life_windows = 0` the decay term vanishes
//! and this is a uniform reservoir over the whole history; with a half-life, an example from `h`
//! windows ago is half as likely to be kept as a new one.
//!
//! The store is saved next to the trainer state as `replay-<span id>.bin` (`replay.bin` before
//! the first span; format below), written
//! before the cycle's commit and selected at start by the committed watermark, so the sample a
//! restarted trainer uses is exactly the one that matches its model. File format: magic
//! `EVGREPLY`, u32 version (1), u64 window number, u64 offered count, u32 item count, then per
//! item: f64 priority, f32 label, u32 nnz, nnz × (u32 index, f32 value, u16 field); then an xxh3-64
//! checksum of every byte before it. All integers little-endian.

use evergreen_core::FeatureVector;
use serde::{Deserialize, Serialize};
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"EVGREPLY";
const VERSION: u32 = 1;
/// Cap on the entries of one stored feature vector (longer vectors are not sampled).
const MAX_NNZ: usize = 1 << 16;

/// Replay settings (`[training.replay]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// Examples kept (0 disables replay).
    #[serde(default)]
    pub capacity: usize,
    /// Replayed examples mixed into a window, per new training example (0.5: one replayed
    /// example for every two new ones).
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// Windows after which an example's chance of being kept halves (0 = uniform reservoir over
    /// the whole history).
    #[serde(default)]
    pub half_life_windows: f64,
    /// Seed of the sampling.
    #[serde(default)]
    pub seed: u64,
}

fn default_ratio() -> f64 {
    0.5
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            capacity: 0,
            ratio: default_ratio(),
            half_life_windows: 0.0,
            seed: 0,
        }
    }
}

impl ReplayConfig {
    /// Checks the ranges; returns the offending field and message.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.capacity > 10_000_000 {
            return Err((
                "capacity",
                format!("must be at most 10000000 (got {})", self.capacity),
            ));
        }
        if !(self.ratio.is_finite() && (0.0..=10.0).contains(&self.ratio)) {
            return Err(("ratio", format!("must be in [0, 10] (got {})", self.ratio)));
        }
        if !(self.half_life_windows.is_finite() && self.half_life_windows >= 0.0) {
            return Err((
                "half_life_windows",
                format!("must be >= 0 (got {})", self.half_life_windows),
            ));
        }
        Ok(())
    }
}

/// Why a replay file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// IO failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a replay file, wrong version, truncated or checksum mismatch.
    #[error("{path}: not a valid replay file ({reason})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

#[derive(Debug, Clone)]
struct Item {
    priority: f64,
    label: f32,
    x: FeatureVector,
}

/// The canonical order of items in a file (and of draws): priority, then content.
fn canonical(a: &Item, b: &Item) -> std::cmp::Ordering {
    a.priority
        .total_cmp(&b.priority)
        .then_with(|| a.label.total_cmp(&b.label))
        .then_with(|| a.x.indices.cmp(&b.x.indices))
        .then_with(|| {
            let bits = |x: &FeatureVector| x.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            bits(&a.x).cmp(&bits(&b.x))
        })
        .then_with(|| a.x.fields.cmp(&b.x.fields))
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        self.priority.total_cmp(&o.priority).is_eq()
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.priority.total_cmp(&o.priority)
    }
}

/// A bounded priority sample of past examples.
#[derive(Debug, Clone)]
pub struct ReplayStore {
    cfg: ReplayConfig,
    /// Max-heap on priority: the top is the first to be evicted.
    heap: BinaryHeap<Item>,
    window: u64,
    offered: u64,
}

/// splitmix64: the deterministic generator behind priorities and draws.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in (0, 1).
fn unit(z: u64) -> f64 {
    ((mix(z) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

impl ReplayStore {
    /// An empty store.
    pub fn new(cfg: ReplayConfig) -> Self {
        Self {
            cfg,
            heap: BinaryHeap::new(),
            window: 0,
            offered: 0,
        }
    }

    /// Examples held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Windows completed so far.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Examples offered over the store's life.
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// Replaces the settings (capacity shrinks evict the highest priorities).
    pub fn set_config(&mut self, cfg: ReplayConfig) {
        self.cfg = cfg;
        while self.heap.len() > cfg.capacity {
            self.heap.pop();
        }
    }

    /// Draws `round(ratio × n_new)` examples (with replacement, deterministic for a given window
    /// and store) to mix into a window of `n_new` training examples.
    pub fn draw(&self, n_new: usize) -> Vec<(FeatureVector, f32)> {
        if self.heap.is_empty() || self.cfg.ratio == 0.0 {
            return Vec::new();
        }
        let want = (self.cfg.ratio * n_new as f64).round() as usize;
        // Canonical order, so that a store read back from disk draws exactly the same examples.
        let mut items: Vec<&Item> = self.heap.iter().collect();
        items.sort_by(|a, b| canonical(a, b));
        let base = mix(self.cfg.seed ^ 0x5245_504c ^ self.window.rotate_left(32));
        (0..want)
            .map(|i| {
                let k = (mix(base ^ i as u64) % items.len() as u64) as usize;
                (items[k].x.clone(), items[k].label)
            })
            .collect()
    }

    /// Offers the training examples of the window just trained, then closes the window.
    pub fn offer_window<'a>(
        &mut self,
        examples: impl IntoIterator<Item = (&'a FeatureVector, f32)>,
    ) {
        if self.cfg.capacity == 0 {
            self.window += 1;
            return;
        }
        let decay = if self.cfg.half_life_windows > 0.0 {
            self.window as f64 * std::f64::consts::LN_2 / self.cfg.half_life_windows
        } else {
            0.0
        };
        let base = mix(self.cfg.seed ^ self.window.wrapping_mul(0x9e37_79b9));
        for (x, y) in examples {
            self.offered += 1;
            if x.len() > MAX_NNZ {
                continue;
            }
            let e = -unit(base ^ self.offered).ln();
            let priority = e.ln() - decay;
            if self.heap.len() < self.cfg.capacity {
                self.heap.push(Item {
                    priority,
                    label: y,
                    x: x.clone(),
                });
            } else if self.heap.peek().is_some_and(|top| priority < top.priority) {
                self.heap.pop();
                self.heap.push(Item {
                    priority,
                    label: y,
                    x: x.clone(),
                });
            }
        }
        self.window += 1;
    }

    /// Serializes the store (canonical: items in priority order).
    pub fn encode(&self) -> Vec<u8> {
        let mut items: Vec<&Item> = self.heap.iter().collect();
        items.sort_by(|a, b| canonical(a, b));
        let mut out = Vec::with_capacity(32 + items.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.window.to_le_bytes());
        out.extend_from_slice(&self.offered.to_le_bytes());
        out.extend_from_slice(&(items.len() as u32).to_le_bytes());
        for it in items {
            out.extend_from_slice(&it.priority.to_le_bytes());
            out.extend_from_slice(&it.label.to_le_bytes());
            out.extend_from_slice(&(it.x.len() as u32).to_le_bytes());
            for ((i, v), f) in it.x.indices.iter().zip(&it.x.values).zip(&it.x.fields) {
                out.extend_from_slice(&i.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses a store written by [`ReplayStore::encode`]; `cfg` applies from now on.
    pub fn decode(bytes: &[u8], cfg: ReplayConfig) -> Result<Self, &'static str> {
        if bytes.len() < 8 + 4 + 8 + 8 + 4 + 8 {
            return Err("truncated");
        }
        let (content, sum) = bytes.split_at(bytes.len() - 8);
        if xxhash_rust::xxh3::xxh3_64(content)
            != u64::from_le_bytes(sum.try_into().unwrap_or([0; 8]))
        {
            return Err("checksum mismatch");
        }
        if &content[..8] != MAGIC {
            return Err("bad magic");
        }
        let mut r = Cursor(&content[8..]);
        if r.u32()? != VERSION {
            return Err("unsupported version");
        }
        let window = r.u64()?;
        let offered = r.u64()?;
        let n = r.u32()? as usize;
        let mut heap = BinaryHeap::with_capacity(n.min(r.0.len() / 16));
        let mut prev: Option<Item> = None;
        for _ in 0..n {
            let priority = r.f64()?;
            let label = r.f32()?;
            let nnz = r.u32()? as usize;
            if nnz > MAX_NNZ || nnz * 10 > r.0.len() {
                return Err("bad entry count");
            }
            let mut x = FeatureVector::with_capacity(nnz);
            for _ in 0..nnz {
                let i = r.u32()?;
                let v = r.f32()?;
                let f = r.u16()?;
                x.push_field(f, i, v);
            }
            if !priority.is_finite() || !(label == 0.0 || label == 1.0) {
                return Err("bad item");
            }
            let item = Item { priority, label, x };
            if prev.as_ref().is_some_and(|p| canonical(p, &item).is_gt()) {
                return Err("items out of order");
            }
            prev = Some(item.clone());
            heap.push(item);
        }
        if !r.0.is_empty() {
            return Err("trailing bytes");
        }
        let mut s = Self {
            cfg,
            heap,
            window,
            offered,
        };
        s.set_config(cfg);
        Ok(s)
    }

    /// Path of the store committed with watermark `span` (`replay.bin` before any span).
    pub fn path_for(dir: &Path, span: Option<&str>) -> PathBuf {
        match span {
            Some(s) => dir.join(format!("replay-{s}.bin")),
            None => dir.join("replay.bin"),
        }
    }

    /// Loads the store committed with `watermark` from `dir` (empty when there is none yet), and
    /// removes stores of other spans (older ones, or one written by a cycle that did not commit).
    pub fn open(
        dir: &Path,
        watermark: Option<&str>,
        cfg: ReplayConfig,
    ) -> Result<Self, ReplayError> {
        let keep = Self::path_for(dir, watermark);
        let mut store = Self::new(cfg);
        {
            let p = &keep;
            match std::fs::read(p) {
                Ok(bytes) => {
                    store = Self::decode(&bytes, cfg).map_err(|reason| ReplayError::Corrupt {
                        path: p.clone(),
                        reason,
                    })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ReplayError::Io {
                        path: p.clone(),
                        source,
                    });
                }
            }
        }
        Self::remove_others(dir, Some(&keep));
        Ok(store)
    }

    /// Removes every replay file in `dir` except `keep`.
    pub fn remove_others(dir: &Path, keep: Option<&Path>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("replay")
                && name.ends_with(".bin")
                && Some(e.path().as_path()) != keep
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (h, rest) = self.0.split_at_checked(N).ok_or("truncated")?;
        self.0 = rest;
        h.try_into().map_err(|_| "truncated")
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        self.take::<2>().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    fn f32(&mut self) -> Result<f32, &'static str> {
        self.take::<4>().map(f32::from_le_bytes)
    }
    fn f64(&mut self) -> Result<f64, &'static str> {
        self.take::<8>().map(f64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(i: u32) -> FeatureVector {
        let mut v = FeatureVector::default();
        v.push_field(1, i, 1.0);
        v.push_field(2, i + 1, 0.5);
        v
    }

    fn cfg(capacity: usize, half_life: f64) -> ReplayConfig {
        ReplayConfig {
            capacity,
            ratio: 0.5,
            half_life_windows: half_life,
            seed: 7,
        }
    }

    #[test]
    fn bounded_under_a_stream_larger_than_its_capacity() {
        let mut s = ReplayStore::new(cfg(500, 0.0));
        let xs: Vec<FeatureVector> = (0..20_000).map(ex).collect();
        for w in xs.chunks(1000) {
            s.offer_window(w.iter().map(|x| (x, 1.0)));
            assert!(s.len() <= 500);
        }
        assert_eq!(s.len(), 500);
        assert_eq!(s.offered(), 20_000);
        assert_eq!(s.window(), 20);
        // Uniform over history: every quarter of the stream is represented about equally.
        let mut quarters = [0usize; 4];
        for it in s.heap.iter() {
            quarters[(it.x.indices[0] / 5000) as usize] += 1;
        }
        for q in quarters {
            assert!((80..=170).contains(&q), "{quarters:?}");
        }
        assert_eq!(s.draw(100).len(), 50);
    }

    #[test]
    fn half_life_favours_recent_windows() {
        let mut s = ReplayStore::new(cfg(500, 2.0));
        let xs: Vec<FeatureVector> = (0..20_000).map(ex).collect();
        for w in xs.chunks(1000) {
            s.offer_window(w.iter().map(|x| (x, 0.0)));
        }
        // Weights 2^(w/2): the last 4 of 20 windows hold about 75% of the total weight, against
        // 20% for a uniform sample.
        let recent = s.heap.iter().filter(|it| it.x.indices[0] >= 16_000).count();
        assert!(
            (320..=420).contains(&recent),
            "{recent} of 500 from the last 4 windows"
        );
    }

    #[test]
    fn round_trip_is_exact_and_corruption_is_refused() {
        let mut s = ReplayStore::new(cfg(50, 0.0));
        let xs: Vec<FeatureVector> = (0..200).map(ex).collect();
        s.offer_window(xs.iter().map(|x| (x, 1.0)));
        let bytes = s.encode();
        let t = ReplayStore::decode(&bytes, s.cfg).unwrap();
        assert_eq!(t.encode(), bytes);
        if std::env::var_os("EVERGREEN_WRITE_FUZZ_SEED").is_some() {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/replay_load");
            std::fs::write(format!("{dir}/small.bin"), &bytes).unwrap();
        }
        assert_eq!(t.draw(40), s.draw(40));
        for i in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(ReplayStore::decode(&b, s.cfg).is_err());
        }
        assert!(ReplayStore::decode(&bytes[..bytes.len() - 3], s.cfg).is_err());
    }

    #[test]
    fn open_selects_the_committed_store_and_removes_the_others() {
        let d = tempfile::tempdir().unwrap();
        let mut s = ReplayStore::new(cfg(10, 0.0));
        let xs: Vec<FeatureVector> = (0..30).map(ex).collect();
        s.offer_window(xs.iter().map(|x| (x, 1.0)));
        std::fs::write(ReplayStore::path_for(d.path(), Some("a")), s.encode()).unwrap();
        s.offer_window(xs.iter().map(|x| (x, 0.0)));
        // Written by a cycle that crashed before its commit.
        std::fs::write(ReplayStore::path_for(d.path(), Some("b")), s.encode()).unwrap();
        let t = ReplayStore::open(d.path(), Some("a"), s.cfg).unwrap();
        assert_eq!(t.window(), 1);
        assert!(!ReplayStore::path_for(d.path(), Some("b")).exists());
        assert!(ReplayStore::path_for(d.path(), Some("a")).exists());
    }
}
