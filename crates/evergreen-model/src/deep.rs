//! Deep CTR models over hashed sparse features: Wide&Deep (Cheng et al. 2016), DeepFM (Guo
//! et al. 2017) and DCN-v2 (Wang et al. 2021), with hand-written forward and backward passes
//! (see [`crate::dense`] and [`crate::embedding`]).
//!
//! Per example, with `F` fields (`FeatureSpec::field_count()`, fixed at construction) and
//! embedding width `k`:
//!
//! - **Embeddings.** Each field `f` in `0..F` (field 0 = bias included; it acts as a learned
//!   constant input) is sum-pooled: `e_f = Σ_{entries i of field f} x_i · v(index_i)`, so a
//!   numeric field's single entry with value `x` gives `x·v` as in DeepFM. Entries whose field id
//!   is `>= F` are skipped by the embedding part (they still feed the wide part). An id without
//!   a row (not admitted yet, expired, or table full) contributes a zero vector. Entries whose
//!   index is outside the hash space (`>= dim`) are ignored by every part (as by `Ftrl`): they
//!   would otherwise create rows that the decoder refuses.
//! - **Deep tower.** `[e_0, …, e_{F-1}]` (width `F·k`) → Linear+ReLU per `hidden` width →
//!   Linear to one logit.
//! - **Wide / linear part.** FTRL-Proximal over the same hashed features (all entries), stored
//!   lazily as a one-wide [`HashedEmbeddingTable`] (`params.wide`: alpha, beta, l1, l2 as in
//!   `[model.ftrl]`).
//! - **Wide&Deep**: `logit = wide(x) + deep(x)`. **DeepFM**: `logit = linear(x) + fm(x) +
//!   deep(x)`, `fm(x) = ½ Σ_d [(Σ_i x_i v_{i,d})² − Σ_i x_i² v_{i,d}²]` over the embedded
//!   entries (the sum-square trick).
//! - **DCN-v2** (stacked): `cross_layers` full-rank cross layers
//!   `x_{l+1} = x_0 ⊙ (x_l·W_l + b_l) + x_l` on `x_0 = [e_0, …, e_{F-1}]`, then the tower;
//!   `logit = wide(x) + deep(x)`.
//!
//! Input values are sanitized first: NaN becomes 0 and values are clamped to ±1e6; a NaN
//! logit (possible only with an overflowing state) predicts 0.5.
//!
//! Training ([`Model::learn_batch`]) is one mini-batch step: forward with the current state
//! (the predictions returned are pre-update), backward, then Adam on the dense layers with the
//! batch-mean gradient, and one sparse optimizer step per touched row (embedding and wide) with
//! the gradient summed over the batch's examples (so a batch of one is exactly per-example
//! online learning, and a rare id's update does not shrink with the batch size). Ids are
//! admitted, and rows refreshed against expiry, by training sightings only.

use crate::dense::{Adam, DenseLayer, SplitMix64, relu, relu_backward};
use crate::embedding::{
    HashedEmbeddingTable, IdMap, SparseOptimizer, TableConfig, put_u32, put_u64,
};
use crate::format::Reader;
use crate::{FtrlParams, Model, ModelKind, sigmoid};
use evergreen_core::FeatureVector;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// Which deep architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DeepVariant {
    /// Wide & Deep: FTRL wide part plus MLP tower.
    #[default]
    #[serde(rename = "wide_deep")]
    WideDeep,
    /// DeepFM: linear part, FM second-order term over the embeddings, MLP tower.
    #[serde(rename = "deepfm")]
    DeepFm,
    /// DCN-v2 (Wang et al. 2021), stacked: `cross_layers` full-rank cross layers
    /// `x_{l+1} = x_0 ⊙ (x_l·W_l + b_l) + x_l` on the embeddings, then the MLP tower; plus the
    /// wide part.
    #[serde(rename = "dcn")]
    Dcn,
}

impl DeepVariant {
    fn code(self) -> u16 {
        match self {
            DeepVariant::WideDeep => 0,
            DeepVariant::DeepFm => 1,
            DeepVariant::Dcn => 2,
        }
    }
    fn from_code(c: u16) -> Option<Self> {
        match c {
            0 => Some(DeepVariant::WideDeep),
            1 => Some(DeepVariant::DeepFm),
            2 => Some(DeepVariant::Dcn),
            _ => None,
        }
    }
}

/// Hyperparameters of [`Deep`] (`[model.deep]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepParams {
    /// `"wide_deep"` (default), `"deepfm"` or `"dcn"`.
    #[serde(default)]
    pub variant: DeepVariant,
    /// Embedding width `k` (default 8; 1..=256).
    #[serde(default = "d_embedding_dim")]
    pub embedding_dim: usize,
    /// Hidden layer widths of the tower (default `[64, 32]`; at most 8 layers of 1..=4096).
    #[serde(default = "d_hidden")]
    pub hidden: Vec<usize>,
    /// Number of cross layers of `"dcn"` (default 2; 1..=8 for dcn; ignored by the other
    /// variants, 0..=8).
    #[serde(default = "d_cross_layers")]
    pub cross_layers: u32,
    /// Adam learning rate of the dense layers (default 1e-3).
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// L2 of the dense weights, added to their gradient (default 0).
    #[serde(default)]
    pub l2: f64,
    /// Per-row optimizer of the embeddings: `"adagrad"` (default), `"adam"` (lazy) or `"ftrl"`.
    #[serde(default)]
    pub embedding_optimizer: SparseOptimizer,
    /// Embedding learning rate (Adagrad/Adam step, FTRL alpha; default 0.05).
    #[serde(default = "d_embedding_lr")]
    pub embedding_lr: f64,
    /// L2 of the embeddings, applied to touched rows (FTRL's l2; default 0).
    #[serde(default)]
    pub embedding_l2: f64,
    /// New embedding rows start uniform in `[-embedding_init, embedding_init)` (default 0.05).
    #[serde(default = "d_embedding_init")]
    pub embedding_init: f64,
    /// FTRL beta of the embeddings when `embedding_optimizer = "ftrl"` (default 1).
    #[serde(default = "d_one")]
    pub embedding_ftrl_beta: f64,
    /// FTRL l1 of the embeddings when `embedding_optimizer = "ftrl"` (default 0).
    #[serde(default)]
    pub embedding_ftrl_l1: f64,
    /// An id gets embedding and wide rows only after being seen this many times in training
    /// (default 0 = at once); before that it contributes zero.
    #[serde(default)]
    pub admit_after: u32,
    /// Rows unseen in training for this many windows are dropped at the end of a window
    /// (default 0 = never).
    #[serde(default)]
    pub expire_after_windows: u32,
    /// Row cap per table (embedding, wide; default 2^20, at most 2^31): when full, new ids are
    /// not admitted (counted) until expiry frees rows.
    #[serde(default = "d_max_rows")]
    pub max_rows: u32,
    /// Seed of the deterministic initialization (default 0).
    #[serde(default)]
    pub seed: u64,
    /// FTRL-Proximal parameters of the wide / linear part (defaults as `[model.ftrl]`).
    #[serde(default)]
    pub wide: FtrlParams,
}

fn d_embedding_dim() -> usize {
    8
}
fn d_hidden() -> Vec<usize> {
    vec![64, 32]
}
fn d_cross_layers() -> u32 {
    2
}
fn d_lr() -> f64 {
    1e-3
}
fn d_embedding_lr() -> f64 {
    0.05
}
fn d_embedding_init() -> f64 {
    0.05
}
fn d_one() -> f64 {
    1.0
}
fn d_max_rows() -> u32 {
    1 << 20
}

impl Default for DeepParams {
    fn default() -> Self {
        Self {
            variant: DeepVariant::default(),
            embedding_dim: d_embedding_dim(),
            hidden: d_hidden(),
            cross_layers: d_cross_layers(),
            lr: d_lr(),
            l2: 0.0,
            embedding_optimizer: SparseOptimizer::default(),
            embedding_lr: d_embedding_lr(),
            embedding_l2: 0.0,
            embedding_init: d_embedding_init(),
            embedding_ftrl_beta: d_one(),
            embedding_ftrl_l1: 0.0,
            admit_after: 0,
            expire_after_windows: 0,
            max_rows: d_max_rows(),
            seed: 0,
            wide: FtrlParams::default(),
        }
    }
}

impl DeepParams {
    /// Checks the ranges; returns the offending field name and message.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=256).contains(&self.embedding_dim) {
            return Err((
                "embedding_dim",
                format!("must be in 1..=256 (got {})", self.embedding_dim),
            ));
        }
        if self.hidden.len() > 8 || self.hidden.iter().any(|&h| !(1..=4096).contains(&h)) {
            return Err((
                "hidden",
                format!(
                    "at most 8 layers, each 1..=4096 wide (got {:?})",
                    self.hidden
                ),
            ));
        }
        let min_cross = u32::from(self.variant == DeepVariant::Dcn);
        if !(min_cross..=8).contains(&self.cross_layers) {
            return Err((
                "cross_layers",
                format!("must be in {min_cross}..=8 (got {})", self.cross_layers),
            ));
        }
        for (k, v) in [("lr", self.lr), ("embedding_lr", self.embedding_lr)] {
            if !(v.is_finite() && v > 0.0) {
                return Err((k, format!("must be > 0 (got {v})")));
            }
        }
        for (k, v) in [
            ("l2", self.l2),
            ("embedding_l2", self.embedding_l2),
            ("embedding_init", self.embedding_init),
            ("embedding_ftrl_beta", self.embedding_ftrl_beta),
            ("embedding_ftrl_l1", self.embedding_ftrl_l1),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err((k, format!("must be >= 0 (got {v})")));
            }
        }
        if !(1..=1 << 31).contains(&self.max_rows) {
            return Err((
                "max_rows",
                format!("must be in 1..=2^31 (got {})", self.max_rows),
            ));
        }
        if self.wide.admission() || self.wide.storage != crate::WeightStorage::F32 {
            return Err((
                "wide",
                "admission and storage are set by the deep model's own admit_after / max_rows; \
                 the wide part takes only alpha, beta, l1, l2"
                    .into(),
            ));
        }
        self.wide.validate().map_err(|(k, m)| {
            let k = match k {
                "alpha" => "wide.alpha",
                "beta" => "wide.beta",
                "l1" => "wide.l1",
                "l2" => "wide.l2",
                _ => "wide",
            };
            (k, m)
        })
    }

    fn embedding_table(&self) -> TableConfig {
        TableConfig {
            optimizer: self.embedding_optimizer,
            lr: self.embedding_lr as f32,
            l2: self.embedding_l2 as f32,
            ftrl_beta: self.embedding_ftrl_beta as f32,
            ftrl_l1: self.embedding_ftrl_l1 as f32,
            init_scale: self.embedding_init as f32,
            seed: self.seed,
            admit_after: self.admit_after,
            expire_after_windows: self.expire_after_windows,
            max_rows: self.max_rows,
        }
    }

    fn wide_table(&self) -> TableConfig {
        TableConfig {
            optimizer: SparseOptimizer::Ftrl,
            lr: self.wide.alpha as f32,
            l2: self.wide.l2 as f32,
            ftrl_beta: self.wide.beta as f32,
            ftrl_l1: self.wide.l1 as f32,
            init_scale: 0.0,
            seed: self.seed,
            admit_after: self.admit_after,
            expire_after_windows: self.expire_after_windows,
            max_rows: self.max_rows,
        }
    }

    /// Cross layers actually built (0 unless `variant = "dcn"`).
    fn n_cross(&self) -> usize {
        if self.variant == DeepVariant::Dcn {
            self.cross_layers as usize
        } else {
            0
        }
    }

    fn adam(&self) -> Adam {
        Adam::new(self.lr as f32, self.l2 as f32)
    }
}

/// Fewer examples per part of a data-parallel batch are not worth a thread.
const MIN_PART: usize = 16;

/// Largest magnitude of an input value in the model (larger ones are clamped).
const MAX_VALUE: f32 = 1e6;

#[inline]
fn clean(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(-MAX_VALUE, MAX_VALUE)
    }
}

/// Reusable buffers of the batch step (not part of the state).
#[derive(Debug, Clone, Default)]
struct Scratch {
    /// Pooled embeddings, `batch × F·k`.
    x0: Array2<f32>,
    /// Output of each layer (after ReLU for hidden layers), `batch × width`.
    acts: Vec<Array2<f32>>,
    /// ∂L/∂(pre-activation) per layer.
    dz: Vec<Array2<f32>>,
    /// ∂L/∂x0.
    dx0: Array2<f32>,
    /// DCN: outputs `x_1..x_L` of the cross layers and their linear parts `u_l = x_{l-1}·W + b`.
    cx: Vec<Array2<f32>>,
    cu: Vec<Array2<f32>>,
    /// DCN backward buffers: ∂L/∂u, ∂L/∂x_l through W, ∂L/∂x_0 through the products.
    cdu: Array2<f32>,
    cdx: Array2<f32>,
    cacc: Array2<f32>,
    /// Cross layer gradients.
    cdw: Vec<Array2<f32>>,
    cdb: Vec<Array1<f32>>,
    /// Weight and bias gradients per layer (of the summed loss).
    dw: Vec<Array2<f32>>,
    db: Vec<Array1<f32>>,
    /// Per example: Σ_i x_i v_i (`batch × k`, DeepFM).
    sum: Array2<f32>,
    /// Per example: Σ_i Σ_d (x_i v_{i,d})² (DeepFM).
    sq: Vec<f32>,
    /// Per example: wide logit.
    wide: Vec<f64>,
    /// Sparse gradients of the summed loss, per distinct id in first-seen order.
    emb: SparseGrads,
    lin: SparseGrads,
}

#[derive(Debug, Clone, Default)]
struct SparseGrads {
    pos: IdMap<u32>,
    ids: Vec<u32>,
    counts: Vec<u32>,
    g: Vec<f32>,
}

impl SparseGrads {
    fn clear(&mut self) {
        self.pos.clear();
        self.ids.clear();
        self.counts.clear();
        self.g.clear();
    }

    /// The gradient slot of `id` (`dim` wide), counting one sighting.
    fn slot(&mut self, id: u32, dim: usize) -> &mut [f32] {
        let p = match self.pos.get(&id) {
            Some(&p) => {
                self.counts[p as usize] += 1;
                p as usize
            }
            None => {
                let p = self.ids.len();
                self.pos.insert(id, p as u32);
                self.ids.push(id);
                self.counts.push(1);
                self.g.resize(self.g.len() + dim, 0.0);
                p
            }
        };
        &mut self.g[p * dim..(p + 1) * dim]
    }

    /// Adds `other`'s gradients and sightings (ids new here keep `other`'s order, after the
    /// ones already here: the first-seen order of the concatenated batch).
    fn merge(&mut self, other: &SparseGrads, dim: usize) {
        for (i, (&id, &c)) in other.ids.iter().zip(&other.counts).enumerate() {
            let slot = self.slot(id, dim);
            for (a, b) in slot.iter_mut().zip(&other.g[i * dim..(i + 1) * dim]) {
                *a += b;
            }
            let p = self.pos[&id] as usize;
            self.counts[p] += c - 1;
        }
    }

    #[cfg(test)]
    fn get(&self, id: u32, dim: usize) -> Option<&[f32]> {
        let p = *self.pos.get(&id)? as usize;
        self.g.get(p * dim..(p + 1) * dim)
    }
}

thread_local! {
    static PREDICT_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A Wide&Deep or DeepFM model (see the module documentation).
#[derive(Debug, Clone)]
pub struct Deep {
    params: DeepParams,
    dim: usize,
    fields: usize,
    layers: Vec<DenseLayer>,
    /// DCN cross layers (`F·k` square), empty for the other variants.
    cross: Vec<DenseLayer>,
    emb: HashedEmbeddingTable,
    wide: HashedEmbeddingTable,
    /// Adam steps taken by the dense layers.
    step: u64,
    examples: u64,
    scratch: Scratch,
    /// Buffers of the parts of a data-parallel batch (`learn_batch_parallel`).
    parts: Vec<Scratch>,
}

impl Deep {
    /// A fresh model over `dim` hash buckets and `fields` fields (`FeatureSpec::field_count()`;
    /// at least 1 is used). `params` should have passed [`DeepParams::validate`].
    pub fn new(params: DeepParams, dim: usize, fields: usize) -> Self {
        let fields = fields.max(1);
        let mut rng = SplitMix64::new(params.seed ^ 0x00DE_E9DE_E9DE_E9DE);
        let mut layers = Vec::with_capacity(params.hidden.len() + 1);
        let mut input = fields * params.embedding_dim;
        for &h in params.hidden.iter().chain(&[1]) {
            layers.push(DenseLayer::new(input, h, &mut rng));
            input = h;
        }
        let d = fields * params.embedding_dim;
        let cross = (0..params.n_cross())
            .map(|_| DenseLayer::new(d, d, &mut rng))
            .collect();
        Self {
            emb: HashedEmbeddingTable::new(params.embedding_dim, params.embedding_table()),
            wide: HashedEmbeddingTable::new(1, params.wide_table()),
            params,
            dim,
            fields,
            layers,
            cross,
            step: 0,
            examples: 0,
            scratch: Scratch::default(),
            parts: Vec::new(),
        }
    }

    /// The hyperparameters.
    pub fn params(&self) -> &DeepParams {
        &self.params
    }

    /// Number of fields the model embeds.
    pub fn fields(&self) -> usize {
        self.fields
    }

    /// The embedding table.
    pub fn embeddings(&self) -> &HashedEmbeddingTable {
        &self.emb
    }

    /// The wide (linear) part, one-wide rows.
    pub fn wide_part(&self) -> &HashedEmbeddingTable {
        &self.wide
    }

    /// Replaces the learning rates, regularization, initialization, admission, expiry and row
    /// cap (a warm start may change them; state is kept). Refuses (and keeps the old
    /// parameters) a change of `variant`, `embedding_dim`, `hidden` or `embedding_optimizer`,
    /// which would change the shape of the state, and parameters that fail
    /// [`DeepParams::validate`].
    pub fn set_params(&mut self, p: DeepParams) -> Result<(), String> {
        p.validate().map_err(|(k, m)| format!("{k}: {m}"))?;
        let old = &self.params;
        if p.variant != old.variant
            || p.embedding_dim != old.embedding_dim
            || p.hidden != old.hidden
            || p.embedding_optimizer != old.embedding_optimizer
            || p.n_cross() != old.n_cross()
        {
            return Err(format!(
                "cannot change the shape of a trained deep model (variant {:?}, embedding_dim {}, hidden {:?}, cross_layers {}, embedding_optimizer {:?})",
                old.variant,
                old.embedding_dim,
                old.hidden,
                old.n_cross(),
                old.embedding_optimizer
            ));
        }
        self.emb.set_config(p.embedding_table());
        self.wide.set_config(p.wide_table());
        self.params = p;
        Ok(())
    }

    /// Pools one example's embeddings into `row` (`F·k`, zeroed by the caller) and returns
    /// `(wide logit, Σ_i Σ_d (x_i v_{i,d})²)`.
    #[inline]
    fn pool(&self, x: &FeatureVector, row: &mut [f32]) -> (f64, f32) {
        let k = self.params.embedding_dim;
        let mut wide = 0.0f64;
        let mut sq = 0.0f32;
        let fm = self.params.variant == DeepVariant::DeepFm;
        for ((&idx, &val), &field) in x.indices.iter().zip(&x.values).zip(&x.fields) {
            if idx as usize >= self.dim {
                continue;
            }
            let v = clean(val);
            if let Some(w) = self.wide.row(idx) {
                wide += w[0] as f64 * v as f64;
            }
            let f = field as usize;
            if f >= self.fields {
                continue;
            }
            if let Some(e) = self.emb.row(idx) {
                let block = &mut row[f * k..(f + 1) * k];
                for (b, &e) in block.iter_mut().zip(e) {
                    let xe = v * e;
                    *b += xe;
                    if fm {
                        sq += xe * xe;
                    }
                }
            }
        }
        (wide, sq)
    }

    /// FM second-order term from the pooled row.
    #[inline]
    fn fm_term(&self, row: &[f32], sq: f32, sum: &mut [f32]) -> f64 {
        let k = self.params.embedding_dim;
        sum.fill(0.0);
        for block in row.chunks_exact(k.max(1)) {
            for (s, &e) in sum.iter_mut().zip(block) {
                *s += e;
            }
        }
        let s2: f32 = sum.iter().map(|s| s * s).sum();
        0.5 * (s2 as f64 - sq as f64)
    }

    fn finish(logit: f64) -> f64 {
        if logit.is_nan() { 0.5 } else { sigmoid(logit) }
    }

    /// Batch forward into the model's scratch buffers; logits appended to `out`.
    fn forward_batch(&mut self, xs: &[FeatureVector], out: &mut Vec<f64>) {
        let mut s = std::mem::take(&mut self.scratch);
        self.forward_into(&mut s, xs, out);
        self.scratch = s;
    }

    /// Batch forward into the given scratch buffers; logits appended to `out`.
    fn forward_into(&self, s: &mut Scratch, xs: &[FeatureVector], out: &mut Vec<f64>) {
        let b = xs.len();
        let k = self.params.embedding_dim;
        let in0 = self.fields * k;
        if s.x0.dim() != (b, in0) {
            s.x0 = Array2::zeros((b, in0));
        } else {
            s.x0.fill(0.0);
        }
        if s.sum.dim() != (b, k) {
            s.sum = Array2::zeros((b, k));
        }
        if s.acts.len() != self.layers.len() || s.acts[0].nrows() != b {
            s.acts = self
                .layers
                .iter()
                .map(|l| Array2::zeros((b, l.output())))
                .collect();
            s.dz = s.acts.clone();
            s.dx0 = Array2::zeros((b, in0));
        }
        if s.cx.len() != self.cross.len() || s.cdu.nrows() != b {
            s.cx = vec![Array2::zeros((b, in0)); self.cross.len()];
            s.cu = s.cx.clone();
            s.cdu = Array2::zeros((b, in0));
            s.cdx = Array2::zeros((b, in0));
            s.cacc = Array2::zeros((b, in0));
        }
        s.sq.clear();
        s.wide.clear();
        for (r, x) in xs.iter().enumerate() {
            let mut row = s.x0.row_mut(r);
            let row = row.as_slice_mut().unwrap_or(&mut []);
            let (w, sq) = self.pool(x, row);
            s.wide.push(w);
            s.sq.push(sq);
        }
        for (l, layer) in self.cross.iter().enumerate() {
            let (before, after) = s.cx.split_at_mut(l);
            let input = if l == 0 { &s.x0 } else { &before[l - 1] };
            layer.forward(input.view(), &mut s.cu[l]);
            ndarray::Zip::from(&mut after[0])
                .and(&s.x0)
                .and(&s.cu[l])
                .and(input)
                .for_each(|o, &x0, &u, &xl| *o = x0 * u + xl);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let (before, after) = s.acts.split_at_mut(l);
            let input = if l > 0 {
                before[l - 1].view()
            } else if let Some(top) = s.cx.last() {
                top.view()
            } else {
                s.x0.view()
            };
            layer.forward(input, &mut after[0]);
            if l + 1 < self.layers.len() {
                relu(after[0].as_slice_mut().unwrap_or(&mut []));
            }
        }
        let last = s.acts.len() - 1;
        for r in 0..b {
            let mut logit = s.wide[r] + s.acts[last][[r, 0]] as f64;
            if self.params.variant == DeepVariant::DeepFm {
                let mut sum = s.sum.row_mut(r);
                let sum = sum.as_slice_mut().unwrap_or(&mut []);
                let row = s.x0.row(r);
                logit += self.fm_term(row.as_slice().unwrap_or(&[]), s.sq[r], sum);
            }
            out.push(logit);
        }
    }

    /// Backward of the summed loss `Σ_r loss_r` given `g[r] = ∂loss_r/∂logit_r`, after
    /// [`forward_batch`](Self::forward_batch) on the same `xs`: dense gradients into
    /// `scratch.dw/db` (`cdw/cdb`), sparse ones into `scratch.emb/lin`.
    fn backward_batch(&mut self, xs: &[FeatureVector], g: &[f32]) {
        let mut s = std::mem::take(&mut self.scratch);
        self.backward_into(&mut s, xs, g);
        self.scratch = s;
    }

    /// [`backward_batch`](Self::backward_batch) on the given scratch buffers (filled by
    /// [`forward_into`](Self::forward_into) on the same `xs`).
    fn backward_into(&self, s: &mut Scratch, xs: &[FeatureVector], g: &[f32]) {
        let k = self.params.embedding_dim;
        let nl = self.layers.len();
        if s.dw.len() != nl {
            s.dw = self
                .layers
                .iter()
                .map(|l| Array2::zeros(l.w.dim()))
                .collect();
            s.db = self
                .layers
                .iter()
                .map(|l| Array1::zeros(l.output()))
                .collect();
        }
        for (d, &gr) in s.dz[nl - 1].iter_mut().zip(g) {
            *d = gr;
        }
        for l in (0..nl).rev() {
            let layer = &self.layers[l];
            let (dz_before, dz_after) = s.dz.split_at_mut(l);
            let input = if l > 0 {
                s.acts[l - 1].view()
            } else if let Some(top) = s.cx.last() {
                top.view()
            } else {
                s.x0.view()
            };
            let dx = if l == 0 {
                &mut s.dx0
            } else {
                &mut dz_before[l - 1]
            };
            layer.backward(
                input,
                dz_after[0].view(),
                &mut s.dw[l],
                &mut s.db[l],
                Some(dx),
            );
            if l > 0 {
                relu_backward(
                    s.acts[l - 1].as_slice().unwrap_or(&[]),
                    dz_before[l - 1].as_slice_mut().unwrap_or(&mut []),
                );
            }
        }
        if !self.cross.is_empty() {
            self.cross_backward(s);
        }
        s.emb.clear();
        s.lin.clear();
        let fm = self.params.variant == DeepVariant::DeepFm;
        for (r, x) in xs.iter().enumerate() {
            let gr = g[r];
            let dx0 = s.dx0.row(r);
            let dx0 = dx0.as_slice().unwrap_or(&[]);
            let sum = s.sum.row(r);
            let sum = sum.as_slice().unwrap_or(&[]);
            for ((&idx, &val), &field) in x.indices.iter().zip(&x.values).zip(&x.fields) {
                if idx as usize >= self.dim {
                    continue;
                }
                let v = clean(val);
                s.lin.slot(idx, 1)[0] += gr * v;
                let f = field as usize;
                if f >= self.fields {
                    continue;
                }
                let e = self.emb.row(idx);
                let slot = s.emb.slot(idx, k);
                for d in 0..k {
                    let mut gd = v * dx0[f * k + d];
                    if fm {
                        let ed = e.map_or(0.0, |e| e[d]);
                        gd += gr * v * (sum[d] - v * ed);
                    }
                    slot[d] += gd;
                }
            }
        }
    }

    /// DCN backward: on entry `s.dx0` holds ∂L/∂x_L (the tower's input); on exit ∂L/∂x_0.
    fn cross_backward(&self, s: &mut Scratch) {
        let n = self.cross.len();
        if s.cdw.len() != n {
            s.cdw = self
                .cross
                .iter()
                .map(|l| Array2::zeros(l.w.dim()))
                .collect();
            s.cdb = self
                .cross
                .iter()
                .map(|l| Array1::zeros(l.output()))
                .collect();
        }
        s.cacc.fill(0.0);
        for l in (0..n).rev() {
            // cur = ∂L/∂x_{l+1} (in s.dx0); x_{l+1} = x0 ⊙ u_l + x_l
            ndarray::Zip::from(&mut s.cdu)
                .and(&s.dx0)
                .and(&s.x0)
                .for_each(|du, &c, &x0| *du = c * x0);
            ndarray::Zip::from(&mut s.cacc)
                .and(&s.dx0)
                .and(&s.cu[l])
                .for_each(|a, &c, &u| *a += c * u);
            let input = if l == 0 { &s.x0 } else { &s.cx[l - 1] };
            self.cross[l].backward(
                input.view(),
                s.cdu.view(),
                &mut s.cdw[l],
                &mut s.cdb[l],
                Some(&mut s.cdx),
            );
            s.dx0 += &s.cdx;
        }
        s.dx0 += &s.cacc;
    }

    /// Data-parallel mini-batches over a window: `xs` is learned in batches of `batch`, in
    /// order, each batch cut into up to `threads` contiguous parts whose forward and backward
    /// passes run at the same time, each on its own thread and buffers, against the same model
    /// (read-only while they run); their gradients are summed in part order and applied once,
    /// exactly as [`Model::learn_batch`] applies a batch's. The helper threads live for the whole
    /// call. The result differs from batch-by-batch `learn_batch` only by the order of
    /// floating-point sums, and is the same on every run with the same `threads`. `preds` gets
    /// every example's prediction before its batch was learned, in order.
    pub fn learn_parallel(
        &mut self,
        xs: &[FeatureVector],
        ys: &[f32],
        batch: usize,
        threads: usize,
        preds: &mut Vec<f64>,
    ) {
        let n = xs.len().min(ys.len());
        let (xs, ys) = (&xs[..n], &ys[..n]);
        let batch = batch.max(1);
        let parts = threads.min(batch / MIN_PART).max(1);
        if parts == 1 {
            for (bx, by) in xs.chunks(batch).zip(ys.chunks(batch)) {
                self.learn_batch(bx, by, preds);
            }
            return;
        }
        let mut scratch: Vec<Option<Scratch>> = std::mem::take(&mut self.parts)
            .into_iter()
            .map(Some)
            .collect();
        scratch.resize_with(parts, || Some(Scratch::default()));
        let lock = std::sync::RwLock::new(&mut *self);
        std::thread::scope(|scope| {
            let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Scratch, Vec<f64>)>();
            let mut go = Vec::with_capacity(parts - 1);
            for w in 1..parts {
                let (tx, rx) = std::sync::mpsc::channel::<(usize, usize, Scratch)>();
                go.push(tx);
                let (done_tx, lock) = (done_tx.clone(), &lock);
                std::thread::Builder::new()
                    .name(format!("evergreen-deep-{w}"))
                    .spawn_scoped(scope, move || {
                        while let Ok((lo, hi, mut s)) = rx.recv() {
                            let mut out = Vec::with_capacity(hi - lo);
                            {
                                let model = lock.read().unwrap_or_else(|e| e.into_inner());
                                model.part_step(&mut s, &xs[lo..hi], &ys[lo..hi], &mut out);
                            }
                            if done_tx.send((w, s, out)).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn a training thread");
            }
            let mut outs: Vec<Vec<f64>> = vec![Vec::new(); parts];
            for start in (0..n).step_by(batch) {
                let len = batch.min(n - start);
                let here = parts.min(len / MIN_PART).max(1);
                let bound = |i: usize| start + i * len / here;
                for (w, tx) in go.iter().enumerate().take(here - 1) {
                    let s = scratch[w + 1].take().expect("buffers of an idle part");
                    tx.send((bound(w + 1), bound(w + 2), s))
                        .expect("training thread alive");
                }
                {
                    let model = lock.read().unwrap_or_else(|e| e.into_inner());
                    let s = scratch[0].as_mut().expect("main part buffers");
                    outs[0].clear();
                    model.part_step(
                        s,
                        &xs[bound(0)..bound(1)],
                        &ys[bound(0)..bound(1)],
                        &mut outs[0],
                    );
                }
                for _ in 1..here {
                    let (w, s, out) = done_rx.recv().expect("training thread alive");
                    scratch[w] = Some(s);
                    outs[w] = out;
                }
                let mut model = lock.write().unwrap_or_else(|e| e.into_inner());
                let mut used: Vec<Scratch> = scratch[..here]
                    .iter_mut()
                    .map(|s| s.take().expect("buffers returned"))
                    .collect();
                model.apply_parts(&mut used, len);
                for (slot, s) in scratch.iter_mut().zip(used) {
                    *slot = Some(s);
                }
                for out in &outs[..here] {
                    preds.extend_from_slice(out);
                }
            }
            drop(go);
        });
        self.parts = scratch.into_iter().flatten().collect();
    }

    /// One part of a data-parallel batch: forward and backward of `xs` into `s`, predictions
    /// (probabilities) into `out`.
    fn part_step(&self, s: &mut Scratch, xs: &[FeatureVector], ys: &[f32], out: &mut Vec<f64>) {
        self.forward_into(s, xs, out);
        let g: Vec<f32> = out
            .iter_mut()
            .zip(ys)
            .map(|(p, &y)| {
                *p = Self::finish(*p);
                (*p - y as f64) as f32
            })
            .collect();
        self.backward_into(s, xs, &g);
    }

    /// Sums the gradients of the parts of a batch of `b` examples (in part order, into the first
    /// part's buffers) and applies them.
    fn apply_parts(&mut self, parts: &mut [Scratch], b: usize) {
        let k = self.params.embedding_dim;
        let (acc, rest) = parts.split_at_mut(1);
        let acc = &mut acc[0];
        for s in rest.iter() {
            for (a, g) in acc.dw.iter_mut().zip(&s.dw) {
                *a += g;
            }
            for (a, g) in acc.db.iter_mut().zip(&s.db) {
                *a += g;
            }
            for (a, g) in acc.cdw.iter_mut().zip(&s.cdw) {
                *a += g;
            }
            for (a, g) in acc.cdb.iter_mut().zip(&s.cdb) {
                *a += g;
            }
            acc.emb.merge(&s.emb, k);
            acc.lin.merge(&s.lin, 1);
        }
        std::mem::swap(&mut self.scratch, acc);
        self.apply(b);
        std::mem::swap(&mut self.scratch, acc);
        self.examples += b as u64;
    }

    /// Applies the gradients in the scratch buffers for a batch of `b` examples.
    fn apply(&mut self, b: usize) {
        self.step += 1;
        let adam = self.params.adam();
        let scale = 1.0 / b as f32;
        let s = &self.scratch;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            layer.apply_adam(&adam, self.step, &s.dw[l], &s.db[l], scale);
        }
        for (l, layer) in self.cross.iter_mut().enumerate() {
            layer.apply_adam(&adam, self.step, &s.cdw[l], &s.cdb[l], scale);
        }
        let k = self.params.embedding_dim;
        for (i, (&id, &c)) in s.emb.ids.iter().zip(&s.emb.counts).enumerate() {
            self.emb.update(id, c, &s.emb.g[i * k..(i + 1) * k]);
        }
        for (i, (&id, &c)) in s.lin.ids.iter().zip(&s.lin.counts).enumerate() {
            self.wide.update(id, c, &s.lin.g[i..i + 1]);
        }
    }

    /// Decodes a body written by `encode`; `None` (reported as `ModelError::Body("deep")`) when
    /// the layout is wrong, a parameter breaks [`DeepParams::validate`], or the state is
    /// inconsistent (lengths, non-finite values, negative second moments or accumulators, ids
    /// outside the hash space or unsorted). Nothing sized from the body is allocated before it
    /// is checked against the remaining bytes.
    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        let mut r = Reader::new(body);
        let variant = DeepVariant::from_code(r.u16()?)?;
        let embedding_optimizer = SparseOptimizer::from_code(r.u16()?)?;
        let embedding_dim = r.u32()? as usize;
        let nh = r.u32()? as usize;
        if nh > 8 {
            return None;
        }
        let mut hidden = Vec::with_capacity(nh);
        for _ in 0..nh {
            hidden.push(r.u32()? as usize);
        }
        let mut f = [0.0f64; 7];
        for v in &mut f {
            *v = r.f64()?;
        }
        let admit_after = r.u32()?;
        let expire_after_windows = r.u32()?;
        let max_rows = r.u32()?;
        let cross_layers = r.u32()?;
        let seed = r.u64()?;
        let wide = FtrlParams {
            alpha: r.f64()?,
            beta: r.f64()?,
            l1: r.f64()?,
            l2: r.f64()?,
            ..FtrlParams::default()
        };
        let params = DeepParams {
            variant,
            embedding_dim,
            hidden,
            cross_layers,
            lr: f[0],
            l2: f[1],
            embedding_optimizer,
            embedding_lr: f[2],
            embedding_l2: f[3],
            embedding_init: f[4],
            embedding_ftrl_beta: f[5],
            embedding_ftrl_l1: f[6],
            admit_after,
            expire_after_windows,
            max_rows,
            seed,
            wide,
        };
        params.validate().ok()?;
        let dim = r.u64()?;
        let fields = r.u32()? as usize;
        if r.u32()? != 0 || dim == 0 || dim > 1 << 32 || !(1..=1 << 16).contains(&fields) {
            return None;
        }
        let examples = r.u64()?;
        let step = r.u64()?;
        let mut layers = Vec::with_capacity(params.hidden.len() + 1);
        let mut input = fields * embedding_dim;
        for &h in params.hidden.iter().chain(&[1]) {
            layers.push(read_layer(&mut r, input, h)?);
            input = h;
        }
        let d = fields * embedding_dim;
        let mut cross = Vec::with_capacity(params.n_cross());
        for _ in 0..params.n_cross() {
            cross.push(read_layer(&mut r, d, d)?);
        }
        let emb =
            HashedEmbeddingTable::decode(&mut r, embedding_dim, dim, params.embedding_table())?;
        let wide = HashedEmbeddingTable::decode(&mut r, 1, dim, params.wide_table())?;
        if r.remaining() != 0 {
            return None;
        }
        Some(Self {
            params,
            dim: usize::try_from(dim).ok()?,
            fields,
            layers,
            cross,
            emb,
            wide,
            step,
            examples,
            scratch: Scratch::default(),
            parts: Vec::new(),
        })
    }
}

/// Reads one dense layer (`W`, `b`, Adam `mW`, `vW`, `mb`, `vb`) of the given shape, refusing
/// non-finite values and negative second moments.
fn read_layer(r: &mut Reader<'_>, input: usize, output: usize) -> Option<DenseLayer> {
    let n = input.checked_mul(output)?;
    let w = Array2::from_shape_vec((input, output), r.f32s(n)?).ok()?;
    let b = Array1::from_vec(r.f32s(output)?);
    let mw = Array2::from_shape_vec((input, output), r.f32s(n)?).ok()?;
    let vw = Array2::from_shape_vec((input, output), r.f32s(n)?).ok()?;
    let mb = Array1::from_vec(r.f32s(output)?);
    let vb = Array1::from_vec(r.f32s(output)?);
    let layer = DenseLayer {
        w,
        b,
        mw,
        vw,
        mb,
        vb,
    };
    if layer.values().any(|x| !x.is_finite()) || layer.vw.iter().chain(&layer.vb).any(|&x| x < 0.0)
    {
        return None;
    }
    Some(layer)
}

impl Deep {
    /// The dense layers (`layer_<i>`, the output layer last) then DCN's cross layers
    /// (`cross_<i>`), by name.
    fn named_layers(&self) -> impl Iterator<Item = (String, &DenseLayer)> {
        let dense = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("layer_{i}"), l));
        let cross = self
            .cross
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("cross_{i}"), l));
        dense.chain(cross)
    }
}

impl Model for Deep {
    fn kind(&self) -> ModelKind {
        ModelKind::Deep
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn predict(&self, x: &FeatureVector) -> f64 {
        let k = self.params.embedding_dim;
        let in0 = self.fields * k;
        let width = self.layers.iter().map(|l| l.output()).max().unwrap_or(1);
        PREDICT_SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            buf.clear();
            let nc = if self.cross.is_empty() { 0 } else { 2 * in0 };
            buf.resize(in0 + nc + 2 * width + k, 0.0);
            let (x0, rest) = buf.split_at_mut(in0);
            let (xl, rest) = rest.split_at_mut(nc / 2);
            let (u, rest) = rest.split_at_mut(nc / 2);
            let (a, rest) = rest.split_at_mut(width);
            let (bb, sum) = rest.split_at_mut(width);
            let (wide, sq) = self.pool(x, x0);
            let mut logit = wide;
            if self.params.variant == DeepVariant::DeepFm {
                logit += self.fm_term(x0, sq, sum);
            }
            let tower_input: &[f32] = if self.cross.is_empty() {
                x0
            } else {
                xl.copy_from_slice(x0);
                for layer in &self.cross {
                    layer.forward_one(xl, u);
                    for ((xl, &x0), &u) in xl.iter_mut().zip(x0.iter()).zip(u.iter()) {
                        *xl += x0 * u;
                    }
                }
                xl
            };
            let n = self.layers.len();
            let (mut cur, mut next) = (a, bb);
            for (l, layer) in self.layers.iter().enumerate() {
                let input: &[f32] = if l == 0 { tower_input } else { &cur[..] };
                layer.forward_one(input, next);
                if l + 1 < n {
                    relu(&mut next[..layer.output()]);
                }
                std::mem::swap(&mut cur, &mut next);
            }
            logit += cur[0] as f64;
            Self::finish(logit)
        })
    }

    fn predict_batch(&self, xs: &[FeatureVector], out: &mut Vec<f64>) {
        /// Rows per matrix product (bounds the buffers).
        const ROWS: usize = 256;
        if xs.len() < 2 {
            out.extend(xs.iter().map(|x| self.predict(x)));
            return;
        }
        let mut s = Scratch::default();
        for chunk in xs.chunks(ROWS) {
            let start = out.len();
            self.forward_into(&mut s, chunk, out);
            for p in &mut out[start..] {
                *p = Self::finish(*p);
            }
        }
    }

    fn learn(&mut self, x: &FeatureVector, y: f32) -> f64 {
        let mut p = Vec::with_capacity(1);
        self.learn_batch(std::slice::from_ref(x), std::slice::from_ref(&y), &mut p);
        p.first().copied().unwrap_or(0.5)
    }

    fn learn_batch(&mut self, xs: &[FeatureVector], ys: &[f32], preds: &mut Vec<f64>) {
        let b = xs.len().min(ys.len());
        if b == 0 {
            return;
        }
        let (xs, ys) = (&xs[..b], &ys[..b]);
        let start = preds.len();
        self.forward_batch(xs, preds);
        let mut g = Vec::with_capacity(b);
        for (p, &y) in preds[start..].iter_mut().zip(ys) {
            *p = Self::finish(*p);
            g.push((*p - y as f64) as f32);
        }
        self.backward_batch(xs, &g);
        self.apply(b);
        self.examples += b as u64;
    }

    fn end_window(&mut self) {
        self.emb.end_window();
        self.wide.end_window();
    }

    fn is_finite(&self) -> bool {
        self.layers
            .iter()
            .chain(&self.cross)
            .all(|l| l.values().all(f32::is_finite))
            && self.emb.is_finite()
            && self.wide.is_finite()
    }

    fn examples_seen(&self) -> u64 {
        self.examples
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let p = &self.params;
        out.extend_from_slice(&p.variant.code().to_le_bytes());
        out.extend_from_slice(&p.embedding_optimizer.code().to_le_bytes());
        put_u32(out, p.embedding_dim as u32);
        put_u32(out, p.hidden.len() as u32);
        for &h in &p.hidden {
            put_u32(out, h as u32);
        }
        for v in [
            p.lr,
            p.l2,
            p.embedding_lr,
            p.embedding_l2,
            p.embedding_init,
            p.embedding_ftrl_beta,
            p.embedding_ftrl_l1,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_u32(out, p.admit_after);
        put_u32(out, p.expire_after_windows);
        put_u32(out, p.max_rows);
        put_u32(out, p.cross_layers);
        put_u64(out, p.seed);
        for v in [p.wide.alpha, p.wide.beta, p.wide.l1, p.wide.l2] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_u64(out, self.dim as u64);
        put_u32(out, self.fields as u32);
        put_u32(out, 0);
        put_u64(out, self.examples);
        put_u64(out, self.step);
        for l in self.layers.iter().chain(&self.cross) {
            for v in
                l.w.iter()
                    .chain(&l.b)
                    .chain(&l.mw)
                    .chain(&l.vw)
                    .chain(&l.mb)
                    .chain(&l.vb)
            {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        self.emb.encode(out);
        self.wide.encode(out);
    }

    fn learning_rate(&self) -> Option<f64> {
        Some(self.params.lr)
    }

    /// Per dense layer (`layer_<i>`, the output layer last; DCN's cross layers `cross_<i>`):
    /// `weights/<layer>/kernel` and `/bias`, and `gradients/<layer>/kernel` and `/bias` of the
    /// last mini-batch learned (their sum over its examples; absent before any batch); the
    /// embedding table's row norms (`embeddings/row_norms`) and the wide part's weights
    /// (`weights/wide`), over the rows that exist.
    fn inspect(&self, visit: &mut dyn FnMut(&str, &[f32])) {
        for (name, l) in self.named_layers() {
            visit(
                &format!("weights/{name}/kernel"),
                l.w.as_slice().unwrap_or(&[]),
            );
            visit(
                &format!("weights/{name}/bias"),
                l.b.as_slice().unwrap_or(&[]),
            );
        }
        self.inspect_gradients(visit);
        let norms: Vec<f32> = self
            .emb
            .ids()
            .into_iter()
            .filter_map(|id| self.emb.row(id))
            .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect();
        visit("embeddings/row_norms", &norms);
        let wide: Vec<f32> = self
            .wide
            .ids()
            .into_iter()
            .filter_map(|id| self.wide.row(id))
            .flatten()
            .copied()
            .collect();
        visit("weights/wide", &wide);
    }

    fn inspect_gradients(&self, visit: &mut dyn FnMut(&str, &[f32])) {
        let s = &self.scratch;
        for (k, (name, l)) in self.named_layers().enumerate() {
            let (dw, db) = match k.checked_sub(self.layers.len()) {
                None => (s.dw.get(k), s.db.get(k)),
                Some(c) => (s.cdw.get(c), s.cdb.get(c)),
            };
            if let (Some(dw), Some(db)) = (dw, db)
                && dw.dim() == l.w.dim()
            {
                visit(
                    &format!("gradients/{name}/kernel"),
                    dw.as_slice().unwrap_or(&[]),
                );
                visit(
                    &format!("gradients/{name}/bias"),
                    db.as_slice().unwrap_or(&[]),
                );
            }
        }
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
}

/// Where a [`Differentiable`](crate::Differentiable) parameter id points (see the id scheme on
/// the impl).
enum ParamRef {
    /// Layer `layer` of `layers` then `cross` (chained), weight at flat row-major offset.
    Weight(usize, usize),
    /// Layer `layer` (as above), bias `j`.
    Bias(usize, usize),
    /// Embedding row of hashed index `idx`, coordinate `d`.
    Embedding(u32, usize),
    /// Wide weight of hashed index `idx`.
    Wide(u32),
}

impl Deep {
    /// Number of dense parameters (weights and biases of the tower and cross layers).
    fn dense_params(&self) -> usize {
        self.layers
            .iter()
            .chain(&self.cross)
            .map(|l| l.w.len() + l.b.len())
            .sum()
    }

    /// Decodes a parameter id; `None` past the last one.
    fn param_ref(&self, id: usize) -> Option<ParamRef> {
        let mut rest = id;
        for (l, layer) in self.layers.iter().chain(&self.cross).enumerate() {
            let (nw, nb) = (layer.w.len(), layer.b.len());
            if rest < nw {
                return Some(ParamRef::Weight(l, rest));
            }
            if rest < nw + nb {
                return Some(ParamRef::Bias(l, rest - nw));
            }
            rest -= nw + nb;
        }
        let k = self.params.embedding_dim;
        let emb = self.dim.checked_mul(k)?;
        if rest < emb {
            // (rest < emb implies k > 0)
            return Some(ParamRef::Embedding((rest / k) as u32, rest % k));
        }
        rest -= emb;
        (rest < self.dim).then_some(ParamRef::Wide(rest as u32))
    }

    fn dense_layer_mut(&mut self, l: usize) -> Option<&mut DenseLayer> {
        let nl = self.layers.len();
        if l < nl {
            self.layers.get_mut(l)
        } else {
            self.cross.get_mut(l - nl)
        }
    }
}

/// Parameter ids (gradient checks and the conformance suite only; not a stable API). With
/// `D = Σ (input·output + output)` over the tower layers (input to output, the final one-wide
/// layer last) and then the DCN cross layers (empty for the other variants), `k` the embedding
/// width and `dim` the hash space:
///
/// - `0 .. D`: per layer in that order, its weights `W[i][j]` at `i·output + j` (row-major),
///   then its biases `b[j]`;
/// - `D + idx·k + d`: coordinate `d` of the embedding row of hashed index `idx < dim`;
/// - `D + dim·k + idx`: the wide (linear) weight of hashed index `idx < dim`.
///
/// Embedding and wide parameters exist only for rows that exist (admitted and not expired):
/// [`param`](crate::Differentiable::param) of a missing row reads 0 and
/// [`set_param`](crate::Differentiable::set_param) on it does nothing (it never creates a
/// row). The wide part (and the embeddings with `embedding_optimizer = "ftrl"`) store FTRL `z`
/// and `n`, not the weight: the parameter is still the effective weight, and `set_param` solves
/// for the `z` that yields it under the current `n` (as [`crate::Ftrl`] does), so it
/// round-trips up to f32 rounding of `z` and a NaN reaches the encoded state. Dense
/// parameters are set directly (their Adam moments are left alone).
///
/// [`loss_and_grad`](crate::Differentiable::loss_and_grad) runs the training forward and
/// backward passes on a batch of one (so the gradient is exactly the one a `learn` step feeds
/// to the optimizers) and returns every dense parameter (zero derivatives included: fine for
/// the small shapes it is meant for), then the embedding coordinates of the example's existing
/// rows in fields `< F`, then the wide weights of its existing rows, each in first-seen order.
/// The forward pass runs in f32 like training, so finite-difference checks need an f32
/// tolerance.
impl crate::Differentiable for Deep {
    fn loss_and_grad(&self, x: &FeatureVector, y: f32) -> (f64, Vec<(usize, f64)>) {
        let mut s = Scratch::default();
        let mut logits = Vec::with_capacity(1);
        let xs = std::slice::from_ref(x);
        self.forward_into(&mut s, xs, &mut logits);
        let p = Self::finish(logits[0]);
        let g = (p - f64::from(y)) as f32;
        self.backward_into(&mut s, xs, &[g]);
        let mut grad = Vec::with_capacity(self.dense_params());
        let dense =
            s.dw.iter()
                .zip(&s.db)
                .chain(s.cdw.iter().zip(&s.cdb))
                .flat_map(|(dw, db)| dw.iter().chain(db));
        grad.extend(dense.enumerate().map(|(i, &v)| (i, f64::from(v))));
        debug_assert_eq!(grad.len(), self.dense_params());
        let k = self.params.embedding_dim;
        let base = self.dense_params();
        for (i, &id) in s.emb.ids.iter().enumerate() {
            if (id as usize) < self.dim && self.emb.row(id).is_some() {
                let gs = &s.emb.g[i * k..(i + 1) * k];
                grad.extend(
                    gs.iter()
                        .enumerate()
                        .map(|(d, &v)| (base + id as usize * k + d, f64::from(v))),
                );
            }
        }
        let base = base + self.dim * k;
        for (i, &id) in s.lin.ids.iter().enumerate() {
            if (id as usize) < self.dim && self.wide.row(id).is_some() {
                grad.push((base + id as usize, f64::from(s.lin.g[i])));
            }
        }
        (crate::common::logloss(p, y), grad)
    }

    fn param(&self, id: usize) -> f64 {
        let v = match self.param_ref(id) {
            Some(ParamRef::Weight(l, o)) => {
                let layer = self.layers.iter().chain(&self.cross).nth(l);
                layer.and_then(|l| l.w.as_slice()?.get(o).copied())
            }
            Some(ParamRef::Bias(l, j)) => {
                let layer = self.layers.iter().chain(&self.cross).nth(l);
                layer.and_then(|l| l.b.get(j).copied())
            }
            Some(ParamRef::Embedding(idx, d)) => self.emb.row(idx).and_then(|r| r.get(d).copied()),
            Some(ParamRef::Wide(idx)) => self.wide.row(idx).map(|r| r[0]),
            None => None,
        };
        v.map_or(0.0, f64::from)
    }

    fn set_param(&mut self, id: usize, value: f64) {
        match self.param_ref(id) {
            Some(ParamRef::Weight(l, o)) => {
                if let Some(w) = self
                    .dense_layer_mut(l)
                    .and_then(|l| l.w.as_slice_mut())
                    .and_then(|w| w.get_mut(o))
                {
                    *w = value as f32;
                }
            }
            Some(ParamRef::Bias(l, j)) => {
                if let Some(b) = self.dense_layer_mut(l).and_then(|l| l.b.get_mut(j)) {
                    *b = value as f32;
                }
            }
            Some(ParamRef::Embedding(idx, d)) => {
                self.emb.set_weight(idx, d, value);
            }
            Some(ParamRef::Wide(idx)) => {
                self.wide.set_weight(idx, 0, value);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests;
