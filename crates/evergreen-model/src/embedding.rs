//! Hashed embedding table: rows of `dim` f32 allocated lazily per hashed id, with sparse per-row
//! optimizers (Adagrad, lazy Adam, FTRL-Proximal), frequency admission, expiry by window and a
//! row cap, so memory stays bounded under an unbounded id space.
//!
//! Storage: a map `id → slot` into flat slabs (`slot·dim ..`), plus a free list of slots
//! released by expiry. Nothing is allocated per hash bucket: a 2^24-bucket space costs only the
//! rows actually admitted.

use crate::dense::{mix64, unit_to_symmetric};
use crate::format::Reader;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative hasher for `u32` ids (the ids are already hashes; SipHash would only cost).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (i as u64 ^ 0x5555_5555).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

/// A `HashMap` keyed by ids with [`IdHasher`].
pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Per-row optimizer of a sparse table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SparseOptimizer {
    /// Adagrad: `acc += g²; w -= lr·g / (sqrt(acc) + 1e-7)`.
    #[default]
    Adagrad,
    /// Lazy Adam: moments and step count per row, updated only when the row is touched.
    Adam,
    /// FTRL-Proximal per coordinate (as `Ftrl`): `alpha = lr`, `beta`, `l1`, `l2`.
    Ftrl,
}

impl SparseOptimizer {
    /// Stable code in the model body.
    pub fn code(self) -> u16 {
        match self {
            SparseOptimizer::Adagrad => 0,
            SparseOptimizer::Adam => 1,
            SparseOptimizer::Ftrl => 2,
        }
    }

    /// Optimizer for a body code.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            0 => Some(SparseOptimizer::Adagrad),
            1 => Some(SparseOptimizer::Adam),
            2 => Some(SparseOptimizer::Ftrl),
            _ => None,
        }
    }

    /// Number of per-coordinate state slabs besides the weights.
    fn state_slabs(self) -> usize {
        match self {
            SparseOptimizer::Adagrad => 1,
            SparseOptimizer::Adam | SparseOptimizer::Ftrl => 2,
        }
    }
}

/// Settings of a [`HashedEmbeddingTable`] (validated by the owning model's parameters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableConfig {
    /// Per-row optimizer.
    pub optimizer: SparseOptimizer,
    /// Learning rate (Adagrad, Adam) or FTRL `alpha`.
    pub lr: f32,
    /// L2 regularization (added to the gradient of touched rows; FTRL's `l2`).
    pub l2: f32,
    /// FTRL `beta`.
    pub ftrl_beta: f32,
    /// FTRL `l1`.
    pub ftrl_l1: f32,
    /// New rows start uniform in `[-init_scale, init_scale)` (a function of `seed`, id and
    /// coordinate only, so independent of arrival order).
    pub init_scale: f32,
    /// Initialization seed.
    pub seed: u64,
    /// An id must have been seen this many times before its row is created (0 = at once).
    pub admit_after: u32,
    /// Rows (and pending admission counts) unseen for this many windows are dropped at
    /// `end_window` (0 = never).
    pub expire_after_windows: u32,
    /// At most this many rows; when full, new ids are not admitted (counted in `rejected`).
    pub max_rows: u32,
}

/// Largest magnitude of an FTRL-derived weight.
const MAX_FTRL_WEIGHT: f64 = 1e10;

/// Lazily allocated embedding rows keyed by hashed id, with their optimizer state.
#[derive(Debug, Clone)]
pub struct HashedEmbeddingTable {
    cfg: TableConfig,
    dim: usize,
    /// id → slot.
    slots: IdMap<u32>,
    /// Per slot: its id (stale for free slots).
    ids: Vec<u32>,
    /// Per slot: window in which the row was last seen in training.
    last_seen: Vec<u32>,
    /// Per slot: Adam step count (empty for other optimizers).
    steps: Vec<u32>,
    /// Weights, `slot·dim ..`.
    w: Vec<f32>,
    /// Adagrad accumulator, Adam first moment or FTRL `z`.
    s1: Vec<f32>,
    /// Adam second moment or FTRL `n` (empty for Adagrad).
    s2: Vec<f32>,
    /// Released slots, reused first.
    free: Vec<u32>,
    /// Ids not yet admitted: (times seen, window last seen).
    pending: IdMap<(u32, u32)>,
    window: u32,
    rejected: u64,
}

impl HashedEmbeddingTable {
    /// An empty table of `dim`-wide rows.
    pub fn new(dim: usize, cfg: TableConfig) -> Self {
        Self {
            cfg,
            dim,
            slots: IdMap::default(),
            ids: Vec::new(),
            last_seen: Vec::new(),
            steps: Vec::new(),
            w: Vec::new(),
            s1: Vec::new(),
            s2: Vec::new(),
            free: Vec::new(),
            pending: IdMap::default(),
            window: 0,
            rejected: 0,
        }
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The settings.
    pub fn config(&self) -> TableConfig {
        self.cfg
    }

    /// Replaces the settings. The optimizer must stay the same (the state layout depends on
    /// it); FTRL weights are re-derived from `z` and `n` under the new settings.
    pub fn set_config(&mut self, cfg: TableConfig) {
        debug_assert_eq!(cfg.optimizer, self.cfg.optimizer);
        self.cfg = cfg;
        if cfg.optimizer == SparseOptimizer::Ftrl {
            for (w, (&z, &n)) in self.w.iter_mut().zip(self.s1.iter().zip(&self.s2)) {
                *w = ftrl_weight(&cfg, z, n);
            }
        }
    }

    /// Number of live rows.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no row is live.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Ids seen but not yet admitted.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Sightings refused because the table was full (`max_rows`), over the table's life.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Windows ended so far.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// Slots allocated in the slabs (live plus free): the memory high-water mark in rows.
    pub fn capacity_rows(&self) -> usize {
        self.ids.len()
    }

    /// The row of `id`, if admitted.
    #[inline]
    pub fn row(&self, id: u32) -> Option<&[f32]> {
        let s = *self.slots.get(&id)? as usize * self.dim;
        self.w.get(s..s + self.dim)
    }

    /// Mutable weights of `id` (tests: finite differences, corruption).
    #[cfg(test)]
    pub(crate) fn row_mut(&mut self, id: u32) -> Option<&mut [f32]> {
        let s = *self.slots.get(&id)? as usize * self.dim;
        self.w.get_mut(s..s + self.dim)
    }

    /// Overwrites coordinate `j` of the row of `id` with `value` (rounded to f32), if the row
    /// exists; returns whether it does. With FTRL the stored state is `z` (and `n`): `z` is
    /// solved for so that the derived weight is `value` under the current `n` (as
    /// `Ftrl::set_param` does; 0 gives `z = 0`), so a NaN reaches `z` and hence the encoded
    /// state. Parameter-level access for gradient checks, not a training path.
    pub(crate) fn set_weight(&mut self, id: u32, j: usize, value: f64) -> bool {
        let Some(&slot) = self.slots.get(&id) else {
            return false;
        };
        if j >= self.dim {
            return false;
        }
        let a = slot as usize * self.dim + j;
        if self.cfg.optimizer == SparseOptimizer::Ftrl {
            let c = &self.cfg;
            let n = self.s2[a];
            let denom = (c.ftrl_beta as f64 + (n as f64).sqrt()) / c.lr as f64 + c.l2 as f64;
            let z = if value == 0.0 {
                0.0
            } else {
                -(value * denom + value.signum() * c.ftrl_l1 as f64)
            };
            self.s1[a] = z as f32;
            self.w[a] = ftrl_weight(c, self.s1[a], n);
        } else {
            self.w[a] = value as f32;
        }
        true
    }

    /// Ids of the live rows, sorted.
    pub fn ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.slots.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Records `count` training sightings of `id` (admitting it when due) and, if the id has a
    /// row, applies one optimizer step with gradient `grad` (`dim` values, already summed over
    /// the sightings).
    pub fn update(&mut self, id: u32, count: u32, grad: &[f32]) {
        let slot = match self.slots.get(&id) {
            Some(&s) => s,
            None => match self.admit(id, count) {
                Some(s) => s,
                None => return,
            },
        } as usize;
        self.last_seen[slot] = self.window;
        let (a, b) = (slot * self.dim, (slot + 1) * self.dim);
        let c = &self.cfg;
        match c.optimizer {
            SparseOptimizer::Adagrad => {
                for ((w, acc), &g) in self.w[a..b].iter_mut().zip(&mut self.s1[a..b]).zip(grad) {
                    let g = g + c.l2 * *w;
                    *acc += g * g;
                    *w -= c.lr * g / (acc.sqrt() + 1e-7);
                }
            }
            SparseOptimizer::Adam => {
                let t = self.steps[slot].saturating_add(1);
                self.steps[slot] = t;
                let (b1, b2) = (0.9f64, 0.999f64);
                let bc1 = 1.0 - b1.powf(t as f64);
                let bc2 = 1.0 - b2.powf(t as f64);
                let lr_t = (c.lr as f64 * bc2.sqrt() / bc1) as f32;
                let (b1, b2) = (b1 as f32, b2 as f32);
                let m = &mut self.s1[a..b];
                let v = &mut self.s2[a..b];
                for (((w, m), v), &g) in self.w[a..b].iter_mut().zip(m).zip(v).zip(grad) {
                    let g = g + c.l2 * *w;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *w -= lr_t * *m / (v.sqrt() + 1e-8);
                }
            }
            SparseOptimizer::Ftrl => {
                let alpha = c.lr as f64;
                let z = &mut self.s1[a..b];
                let n = &mut self.s2[a..b];
                for (((w, z), n), &g) in self.w[a..b].iter_mut().zip(z).zip(n).zip(grad) {
                    let g = g as f64;
                    let nn = *n as f64;
                    let sigma = ((nn + g * g).sqrt() - nn.sqrt()) / alpha;
                    *z = (*z as f64 + g - sigma * *w as f64) as f32;
                    *n = (nn + g * g) as f32;
                    *w = ftrl_weight(c, *z, *n);
                }
            }
        }
    }

    /// Counts sightings of a row-less id and creates its row when admitted.
    fn admit(&mut self, id: u32, count: u32) -> Option<u32> {
        if self.slots.len() >= self.cfg.max_rows as usize {
            self.rejected += 1;
            return None;
        }
        if self.cfg.admit_after > 0 {
            let seen = match self.pending.get_mut(&id) {
                Some(e) => {
                    e.0 = e.0.saturating_add(count);
                    e.1 = self.window;
                    e.0
                }
                None => {
                    if self.pending.len() >= self.cfg.max_rows as usize {
                        // A flood of one-off ids: reset the counts rather than grow.
                        self.pending.clear();
                    }
                    self.pending.insert(id, (count, self.window));
                    count
                }
            };
            if seen <= self.cfg.admit_after {
                return None;
            }
            self.pending.remove(&id);
        }
        Some(self.create(id))
    }

    /// Creates the row of `id` with its deterministic initial value.
    fn create(&mut self, id: u32) -> u32 {
        let dim = self.dim;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = self.ids.len() as u32;
                self.ids.push(0);
                self.last_seen.push(0);
                if self.cfg.optimizer == SparseOptimizer::Adam {
                    self.steps.push(0);
                }
                self.w.resize(self.w.len() + dim, 0.0);
                self.s1.resize(self.s1.len() + dim, 0.0);
                if self.cfg.optimizer != SparseOptimizer::Adagrad {
                    self.s2.resize(self.s2.len() + dim, 0.0);
                }
                s
            }
        };
        let s = slot as usize;
        self.ids[s] = id;
        self.last_seen[s] = self.window;
        if let Some(t) = self.steps.get_mut(s) {
            *t = 0;
        }
        let (a, b) = (s * dim, (s + 1) * dim);
        self.s1[a..b].fill(0.0);
        if !self.s2.is_empty() {
            self.s2[a..b].fill(0.0);
        }
        let base = mix64(self.cfg.seed ^ mix64(id as u64 ^ 0xE3B0_C442_98FC_1C14));
        for j in 0..dim {
            let v = if self.cfg.init_scale > 0.0 {
                unit_to_symmetric(mix64(base.wrapping_add(j as u64)), self.cfg.init_scale)
            } else {
                0.0
            };
            if self.cfg.optimizer == SparseOptimizer::Ftrl {
                // z chosen so that the derived weight starts at v (0 if it cannot).
                let denom = self.cfg.ftrl_beta / self.cfg.lr + self.cfg.l2;
                let z = if denom > 0.0 { -v * denom } else { 0.0 };
                self.s1[a + j] = z;
                self.w[a + j] = ftrl_weight(&self.cfg, z, 0.0);
            } else {
                self.w[a + j] = v;
            }
        }
        self.slots.insert(id, slot);
        slot
    }

    /// Ends a window: advances the window counter and, with `expire_after_windows = N > 0`,
    /// drops the rows and pending counts not seen during the last `N` windows, returning their
    /// slots to the free list.
    pub fn end_window(&mut self) {
        self.window = self.window.saturating_add(1);
        let n = self.cfg.expire_after_windows;
        if n == 0 {
            return;
        }
        let window = self.window;
        let last_seen = &self.last_seen;
        let free = &mut self.free;
        self.slots.retain(|_, slot| {
            let keep = window - last_seen[*slot as usize] <= n;
            if !keep {
                free.push(*slot);
            }
            keep
        });
        // Free slots are popped from the end: lowest first keeps the slabs dense-ish.
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        self.pending.retain(|_, e| window - e.1 <= n);
    }

    /// True when every live weight and optimizer value is finite.
    pub fn is_finite(&self) -> bool {
        self.slots.values().all(|&s| {
            let (a, b) = (s as usize * self.dim, (s as usize + 1) * self.dim);
            self.w[a..b].iter().all(|x| x.is_finite())
                && self.s1[a..b].iter().all(|x| x.is_finite())
                && self
                    .s2
                    .get(a..b)
                    .is_none_or(|s| s.iter().all(|x| x.is_finite()))
        })
    }

    /// Appends the state, rows sorted by id (canonical: equal states encode identically).
    /// Layout in `docs/formats.md` (deep body, table section).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut rows: Vec<(u32, u32)> = self.slots.iter().map(|(&i, &s)| (i, s)).collect();
        rows.sort_unstable();
        let mut pending: Vec<(u32, (u32, u32))> =
            self.pending.iter().map(|(&i, &e)| (i, e)).collect();
        pending.sort_unstable();
        let opt = self.cfg.optimizer;
        let w_slabs = if opt == SparseOptimizer::Ftrl { 0 } else { 1 };
        out.reserve(
            24 + rows.len()
                * (8 + 4 * self.steps.len().min(1) + 4 * self.dim * (w_slabs + opt.state_slabs()))
                + pending.len() * 12,
        );
        put_u32(out, self.window);
        put_u32(out, 0);
        put_u64(out, rows.len() as u64);
        put_u64(out, pending.len() as u64);
        put_u64(out, self.rejected);
        for &(id, _) in &rows {
            put_u32(out, id);
        }
        for &(_, s) in &rows {
            put_u32(out, self.last_seen[s as usize]);
        }
        if opt == SparseOptimizer::Adam {
            for &(_, s) in &rows {
                put_u32(out, self.steps[s as usize]);
            }
        }
        let slabs: [&[f32]; 3] = [&self.w, &self.s1, &self.s2];
        let first = if opt == SparseOptimizer::Ftrl { 1 } else { 0 };
        for slab in &slabs[first..1 + opt.state_slabs()] {
            for &(_, s) in &rows {
                let a = s as usize * self.dim;
                for v in &slab[a..a + self.dim] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        for (id, _) in &pending {
            put_u32(out, *id);
        }
        for (_, (count, _)) in &pending {
            put_u32(out, *count);
        }
        for (_, (_, last)) in &pending {
            put_u32(out, *last);
        }
    }

    /// Reads a table written by [`encode`](Self::encode) for rows of `dim` over an id space of
    /// `space` buckets. `None` when anything is inconsistent: ids not strictly increasing or
    /// outside the space, more rows than `max_rows`, windows in the future, non-finite values,
    /// negative accumulators, pending counts that should have been admitted. Sizes are checked
    /// against the remaining bytes before anything is allocated; the slabs are read in one pass
    /// straight into their final vectors.
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        dim: usize,
        space: u64,
        cfg: TableConfig,
    ) -> Option<Self> {
        let window = r.u32()?;
        if r.u32()? != 0 {
            return None;
        }
        let rows = usize::try_from(r.u64()?).ok()?;
        let npending = usize::try_from(r.u64()?).ok()?;
        let rejected = r.u64()?;
        if rows > cfg.max_rows as usize {
            return None;
        }
        let opt = cfg.optimizer;
        let adam = opt == SparseOptimizer::Adam;
        let w_slabs = if opt == SparseOptimizer::Ftrl { 0 } else { 1 };
        let per_row = 4usize.checked_mul(2 + adam as usize)?.checked_add(
            4usize
                .checked_mul(dim)?
                .checked_mul(w_slabs + opt.state_slabs())?,
        )?;
        let need = per_row
            .checked_mul(rows)?
            .checked_add(npending.checked_mul(12)?)?;
        if need > r.remaining() {
            return None;
        }
        let ids = read_u32s(r, rows)?;
        if ids.windows(2).any(|p| p[0] >= p[1]) || ids.last().is_some_and(|&i| i as u64 >= space) {
            return None;
        }
        let last_seen = read_u32s(r, rows)?;
        if last_seen.iter().any(|&l| l > window) {
            return None;
        }
        let steps = if adam {
            read_u32s(r, rows)?
        } else {
            Vec::new()
        };
        let n = rows.checked_mul(dim)?;
        let mut w = if w_slabs == 1 { r.f32s(n)? } else { Vec::new() };
        let s1 = r.f32s(n)?;
        let s2 = if opt.state_slabs() == 2 {
            r.f32s(n)?
        } else {
            Vec::new()
        };
        let nonneg = match opt {
            SparseOptimizer::Adagrad => &s1,
            _ => &s2,
        };
        if w.iter().chain(&s1).chain(&s2).any(|x| !x.is_finite()) || nonneg.iter().any(|&x| x < 0.0)
        {
            return None;
        }
        if opt == SparseOptimizer::Ftrl {
            w = s1
                .iter()
                .zip(&s2)
                .map(|(&z, &n)| ftrl_weight(&cfg, z, n))
                .collect();
        }
        let pids = read_u32s(r, npending)?;
        let counts = read_u32s(r, npending)?;
        let lasts = read_u32s(r, npending)?;
        if pids.windows(2).any(|p| p[0] >= p[1])
            || pids.last().is_some_and(|&i| i as u64 >= space)
            || counts.iter().any(|&c| c == 0 || c > cfg.admit_after)
            || lasts.iter().any(|&l| l > window)
        {
            return None;
        }
        let mut slots = IdMap::default();
        slots.reserve(rows);
        for (s, &id) in ids.iter().enumerate() {
            slots.insert(id, s as u32);
        }
        let mut pending = IdMap::default();
        pending.reserve(npending);
        for ((&id, &c), &l) in pids.iter().zip(&counts).zip(&lasts) {
            if slots.contains_key(&id) {
                return None;
            }
            pending.insert(id, (c, l));
        }
        Some(Self {
            cfg,
            dim,
            slots,
            ids,
            last_seen,
            steps,
            w,
            s1,
            s2,
            free: Vec::new(),
            pending,
            window,
            rejected,
        })
    }
}

/// FTRL-Proximal weight from `z` and `n` (McMahan et al. 2013), clamped like `Ftrl`'s.
fn ftrl_weight(c: &TableConfig, z: f32, n: f32) -> f32 {
    let (z, n) = (z as f64, n as f64);
    let l1 = c.ftrl_l1 as f64;
    if z.abs() <= l1 {
        return 0.0;
    }
    let w = -(z - z.signum() * l1) / ((c.ftrl_beta as f64 + n.sqrt()) / c.lr as f64 + c.l2 as f64);
    w.clamp(-MAX_FTRL_WEIGHT, MAX_FTRL_WEIGHT) as f32
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Reads `n` u32s, checking the length before allocating.
pub(crate) fn read_u32s(r: &mut Reader<'_>, n: usize) -> Option<Vec<u32>> {
    if n.checked_mul(4)? > r.remaining() {
        return None;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(r.u32()?);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(opt: SparseOptimizer) -> TableConfig {
        TableConfig {
            optimizer: opt,
            lr: 0.1,
            l2: 0.0,
            ftrl_beta: 1.0,
            ftrl_l1: 0.0,
            init_scale: 0.05,
            seed: 9,
            admit_after: 0,
            expire_after_windows: 0,
            max_rows: 1 << 20,
        }
    }

    fn round_trip(t: &HashedEmbeddingTable) -> HashedEmbeddingTable {
        let mut out = Vec::new();
        t.encode(&mut out);
        let mut r = Reader::new(&out);
        let back = HashedEmbeddingTable::decode(&mut r, t.dim, 1 << 20, t.cfg).expect("decodes");
        assert_eq!(r.remaining(), 0);
        let mut again = Vec::new();
        back.encode(&mut again);
        assert_eq!(out, again, "canonical re-encoding");
        back
    }

    #[test]
    fn every_optimizer_descends_a_quadratic_and_round_trips() {
        for opt in [
            SparseOptimizer::Adagrad,
            SparseOptimizer::Adam,
            SparseOptimizer::Ftrl,
        ] {
            let mut t = HashedEmbeddingTable::new(4, cfg(opt));
            let target = [0.5f32, -0.3, 0.2, 0.0];
            t.update(7, 1, &[0.0; 4]);
            for _ in 0..2000 {
                let row = t.row(7).unwrap().to_vec();
                let g: Vec<f32> = row
                    .iter()
                    .zip(&target)
                    .map(|(w, c)| 2.0 * (w - c))
                    .collect();
                t.update(7, 1, &g);
            }
            let row = t.row(7).unwrap();
            for (w, c) in row.iter().zip(&target) {
                assert!((w - c).abs() < 0.05, "{opt:?}: {row:?}");
            }
            let back = round_trip(&t);
            assert_eq!(back.row(7), t.row(7), "{opt:?}");
            assert!(t.is_finite());
        }
    }

    #[test]
    fn initial_rows_are_deterministic_and_small() {
        let mut a = HashedEmbeddingTable::new(8, cfg(SparseOptimizer::Adagrad));
        let mut b = HashedEmbeddingTable::new(8, cfg(SparseOptimizer::Adagrad));
        a.update(1, 1, &[0.0; 8]);
        a.update(2, 1, &[0.0; 8]);
        b.update(2, 1, &[0.0; 8]);
        b.update(1, 1, &[0.0; 8]);
        assert_eq!(a.row(1), b.row(1));
        assert_ne!(a.row(1), a.row(2));
        assert!(
            a.row(1)
                .unwrap()
                .iter()
                .all(|v| v.abs() < 0.05 && *v != 0.0)
        );
    }

    #[test]
    fn admission_waits_for_enough_sightings() {
        let mut c = cfg(SparseOptimizer::Adagrad);
        c.admit_after = 2;
        let mut t = HashedEmbeddingTable::new(2, c);
        t.update(5, 1, &[1.0, 1.0]);
        assert!(t.row(5).is_none());
        assert_eq!(t.pending_len(), 1);
        round_trip(&t);
        t.update(5, 1, &[1.0, 1.0]);
        assert!(
            t.row(5).is_none(),
            "seen twice: not yet (must be seen 2 times before)"
        );
        t.update(5, 1, &[1.0, 1.0]);
        assert!(t.row(5).is_some(), "third sighting admits");
        assert_eq!(t.pending_len(), 0);
        // several sightings in one batch count together
        t.update(6, 3, &[1.0, 1.0]);
        assert!(t.row(6).is_some());
    }

    #[test]
    fn expiry_drops_unseen_rows_and_bounds_memory() {
        let mut c = cfg(SparseOptimizer::Adam);
        c.expire_after_windows = 2;
        c.max_rows = 1000;
        let mut t = HashedEmbeddingTable::new(4, c);
        t.update(1, 1, &[0.1; 4]);
        t.end_window();
        t.end_window();
        assert!(t.row(1).is_some(), "unseen for 2 windows: kept");
        t.end_window();
        assert!(t.row(1).is_none(), "unseen for 3 windows: dropped");
        // A stream of always-new ids, 600 per window: rows stay within 3 windows' worth and
        // never exceed max_rows; the slabs stop growing.
        let mut next = 100u32;
        for _ in 0..20 {
            for _ in 0..600 {
                t.update(next, 1, &[0.1; 4]);
                next += 1;
            }
            assert!(t.len() <= 1000);
            t.end_window();
        }
        assert!(t.len() <= 1000);
        assert!(t.capacity_rows() <= 1000, "{}", t.capacity_rows());
        assert!(t.rejected() > 0, "the cap was hit");
        round_trip(&t);
    }

    #[test]
    fn a_full_table_rejects_new_ids() {
        let mut c = cfg(SparseOptimizer::Adagrad);
        c.max_rows = 3;
        let mut t = HashedEmbeddingTable::new(2, c);
        for id in 0..10 {
            t.update(id, 1, &[0.0, 0.0]);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.rejected(), 7);
        t.update(1, 1, &[1.0, 1.0]);
        assert_eq!(t.rejected(), 7, "existing rows still train");
    }

    #[test]
    fn decode_refuses_inconsistent_tables() {
        let mut t = HashedEmbeddingTable::new(2, cfg(SparseOptimizer::Adagrad));
        t.update(3, 1, &[1.0, 1.0]);
        t.update(9, 1, &[1.0, 1.0]);
        let mut out = Vec::new();
        t.encode(&mut out);
        // ids at offset 32, 36: make them equal, then out of order
        let mut b = out.clone();
        b[36..40].copy_from_slice(&3u32.to_le_bytes());
        assert!(HashedEmbeddingTable::decode(&mut Reader::new(&b), 2, 1 << 20, t.cfg).is_none());
        // id outside the space
        assert!(HashedEmbeddingTable::decode(&mut Reader::new(&out), 2, 5, t.cfg).is_none());
        // a negative accumulator (last value of s1)
        let mut b = out.clone();
        let n = b.len();
        b[n - 4..].copy_from_slice(&(-1.0f32).to_le_bytes());
        assert!(HashedEmbeddingTable::decode(&mut Reader::new(&b), 2, 1 << 20, t.cfg).is_none());
        // a NaN weight
        let mut b = out.clone();
        b[48..52].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(HashedEmbeddingTable::decode(&mut Reader::new(&b), 2, 1 << 20, t.cfg).is_none());
        // a huge row count
        let mut b = out.clone();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(HashedEmbeddingTable::decode(&mut Reader::new(&b), 2, 1 << 20, t.cfg).is_none());
    }
}
