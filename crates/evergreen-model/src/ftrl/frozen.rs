//! An FTRL model served straight from its (mapped, private) file: predictions read `z` and `n`
//! in the file's layout (every `z`, then every `n`) through the mapping, so loading a version
//! costs no anonymous memory and only the pages requests touch become resident. The first
//! `learn` decodes the file into an ordinary [`Ftrl`] and continues on that copy.

use super::{Ftrl, Head, ZnRead, f16_to_f32, margin_over, state_is_valid};
use crate::file_map::FileMap;
use crate::{Model, ModelKind, sigmoid};
use evergreen_core::FeatureVector;
use std::ops::Range;
use std::sync::Arc;

/// Buckets checked per read while a file is validated.
const CHECK_BUCKETS: usize = 1 << 16;

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct FrozenFtrl {
    head: Head,
    map: Arc<FileMap>,
    /// The body's bytes in the file.
    body: Range<usize>,
    /// Owned state, made by the first `learn`; it answers everything afterwards.
    thawed: Option<Box<Ftrl>>,
}

/// The two tables, viewed in the file.
enum View<'a> {
    F32(&'a [f32], &'a [f32]),
    F16(&'a [u16], &'a [u16]),
}

impl ZnRead for View<'_> {
    #[inline(always)]
    fn buckets(&self) -> usize {
        match self {
            View::F32(z, _) => z.len(),
            View::F16(z, _) => z.len(),
        }
    }
    #[inline(always)]
    fn z_at(&self, i: usize) -> f32 {
        match self {
            View::F32(z, _) => z[i],
            View::F16(z, _) => f16_to_f32(z[i]),
        }
    }
    #[inline(always)]
    fn n_at(&self, i: usize) -> f32 {
        match self {
            View::F32(_, n) => n[i],
            View::F16(_, n) => f16_to_f32(n[i]),
        }
    }
}

/// Checks the state of the body that starts at byte `body_at` of a file read through `read`
/// (`read(offset, buffer)` fills `buffer` from that offset), a bounded run of buckets at a
/// time, as [`Ftrl::decode`] does on a whole body. Returns the head, or `None` when the body
/// is not a valid FTRL body of `body_len` bytes.
pub(crate) fn check_body<E>(
    body_at: u64,
    body_len: usize,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<Option<Head>, E> {
    let mut first = vec![0u8; Head::MAX_LEN.min(body_len)];
    read(body_at, &mut first)?;
    let Some(head) = Head::decode(&first) else {
        return Ok(None);
    };
    if head.state_len() != body_len.checked_sub(head.state_at) {
        return Ok(None);
    }
    let width = head.width();
    let state_at = body_at + head.state_at as u64;
    let (z_at, n_at) = (state_at, state_at + (head.dim * width) as u64);
    let counts_at = n_at + (head.dim * width) as u64;
    let admission = head.params.admission();
    let (mut z, mut n, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut start = 0;
    while start < head.dim {
        let buckets = CHECK_BUCKETS.min(head.dim - start);
        z.resize(buckets * width, 0);
        n.resize(buckets * width, 0);
        c.resize(if admission { buckets } else { 0 }, 0);
        let at = (start * width) as u64;
        read(z_at + at, &mut z)?;
        read(n_at + at, &mut n)?;
        if admission {
            read(counts_at + start as u64, &mut c)?;
        }
        if !state_is_valid(&head.params, &z, &n, &c) {
            return Ok(None);
        }
        start += buckets;
    }
    Ok(Some(head))
}

impl FrozenFtrl {
    /// The model whose body lies at `body` in `map`, which [`check_body`] accepted with
    /// `head`; `None` when the tables cannot be viewed in place (misaligned).
    pub(crate) fn new(map: FileMap, body: Range<usize>, head: Head) -> Option<Self> {
        let m = Self {
            head,
            map: Arc::new(map),
            body,
            thawed: None,
        };
        m.view()?;
        Some(m)
    }

    fn view(&self) -> Option<View<'_>> {
        let (dim, width) = (self.head.dim, self.head.width());
        let z_at = self.body.start + self.head.state_at;
        let n_at = z_at + dim * width;
        Some(match width {
            4 => View::F32(self.map.f32s(z_at, dim)?, self.map.f32s(n_at, dim)?),
            _ => View::F16(self.map.u16s(z_at, dim)?, self.map.u16s(n_at, dim)?),
        })
    }

    /// The owned model, decoded from the file on first use.
    fn thaw(&mut self) -> &mut Ftrl {
        let (map, body) = (&self.map, &self.body);
        self.thawed.get_or_insert_with(|| {
            Box::new(
                Ftrl::decode(&map.bytes()[body.clone()])
                    .expect("a private copy checked when opened decodes"),
            )
        })
    }
}

impl Model for FrozenFtrl {
    fn kind(&self) -> ModelKind {
        ModelKind::Ftrl
    }

    fn dim(&self) -> usize {
        self.head.dim
    }

    fn predict(&self, x: &FeatureVector) -> f64 {
        match (&self.thawed, self.view()) {
            (Some(m), _) => m.predict(x),
            (None, Some(view)) => {
                sigmoid(margin_over(&self.head.params, &view, x, |_, _, _, _| {}))
            }
            (None, None) => unreachable!("the view was checked in `new`"),
        }
    }

    fn learn(&mut self, x: &FeatureVector, y: f32) -> f64 {
        self.thaw().learn(x, y)
    }

    fn learn_batch(&mut self, xs: &[FeatureVector], ys: &[f32], preds: &mut Vec<f64>) {
        self.thaw().learn_batch(xs, ys, preds)
    }

    fn end_window(&mut self) {
        if let Some(m) = &mut self.thawed {
            m.end_window();
        }
    }

    fn is_finite(&self) -> bool {
        // The file's state was checked finite when opened, and the private copy cannot change.
        self.thawed.as_ref().is_none_or(|m| m.is_finite())
    }

    fn examples_seen(&self) -> u64 {
        self.thawed
            .as_ref()
            .map_or(self.head.examples, |m| m.examples_seen())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match &self.thawed {
            Some(m) => m.encode(out),
            None => out.extend_from_slice(&self.map.bytes()[self.body.clone()]),
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
