//! Lock-free sharing of model state between the threads of a Hogwild-style `learn_parallel`
//! ([`Ftrl::learn_parallel`](crate::Ftrl::learn_parallel),
//! [`Fm::learn_parallel`](crate::Fm::learn_parallel)): for the duration of the call, storage
//! held through `&mut self` is viewed as atomics of the same size and alignment (`f32` bits as
//! [`AtomicU32`], f16 bits as [`AtomicU16`], counters as [`AtomicU8`]) and read and written with
//! `Relaxed` loads and stores, which compile to plain loads and stores on the usual targets.
//! With `crate::sparse_memory` (the model tables' memory) and the AVX2 dispatch of
//! `Adam::step` (`crate::dense`), the only `unsafe` code of the crate.

use evergreen_core::FeatureVector;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32};

mod sealed {
    pub trait Sealed {}
}

/// A plain type with an atomic twin of the same size, alignment and bit validity. Sealed: the
/// three implementations below are the only ones.
pub(crate) trait Plain: sealed::Sealed + Sized {
    /// The atomic twin.
    type Atomic;
}

impl sealed::Sealed for f32 {}
impl Plain for f32 {
    type Atomic = AtomicU32;
}
impl sealed::Sealed for u16 {}
impl Plain for u16 {
    type Atomic = AtomicU16;
}
impl sealed::Sealed for u8 {}
impl Plain for u8 {
    type Atomic = AtomicU8;
}

// The views rely on the atomic types having the layout of the plain ones (also checked, per
// instantiation, inside `atomic_view`).
const _: () = {
    assert!(size_of::<AtomicU32>() == size_of::<f32>());
    assert!(align_of::<AtomicU32>() == align_of::<f32>());
    assert!(size_of::<AtomicU16>() == size_of::<u16>());
    assert!(align_of::<AtomicU16>() == align_of::<u16>());
    assert!(size_of::<AtomicU8>() == size_of::<u8>());
    assert!(align_of::<AtomicU8>() == align_of::<u8>());
};

/// Views exclusively borrowed plain values as atomics (what the unstable
/// `AtomicU32::from_mut_slice` does).
#[allow(unsafe_code)]
pub(crate) fn atomic_view<T: Plain>(v: &mut [T]) -> &[T::Atomic] {
    const {
        assert!(size_of::<T>() == size_of::<T::Atomic>());
        assert!(align_of::<T>() == align_of::<T::Atomic>());
    }
    // SAFETY: `T::Atomic` is, for each of the three sealed implementations of `Plain`, an atomic
    // integer with the size, alignment and bit validity of `T` (`AtomicU32` for `f32`, whose
    // every bit pattern is a valid `u32`; `AtomicU16` for `u16`; `AtomicU8` for `u8`), which is
    // checked at compile time above; the cast keeps the slice length. `v` is exclusively
    // borrowed for the lifetime of the returned slice, so every access to the memory goes
    // through the atomics meanwhile, and the plain values are only read again after the borrow
    // (and hence every thread using the view) has ended.
    unsafe { &*(std::ptr::from_mut(v) as *const [T::Atomic]) }
}

/// Runs `learn` over `xs`/`ys` (equal lengths, at least one example) cut into `threads`
/// contiguous shards, each on its own scoped thread (on the calling thread when `threads <= 1`),
/// and appends the shards' predictions to `preds` in batch order. `learn` gets the shard's
/// offset in the batch, its examples, its labels and the buffer for its predictions.
pub(crate) fn run_shards<F>(
    xs: &[FeatureVector],
    ys: &[f32],
    threads: usize,
    preds: &mut Vec<f64>,
    learn: F,
) where
    F: Fn(usize, &[FeatureVector], &[f32], &mut Vec<f64>) + Sync,
{
    let b = xs.len();
    preds.reserve(b);
    if threads <= 1 {
        learn(0, xs, ys, preds);
        return;
    }
    let shard = b.div_ceil(threads);
    let learn = &learn;
    let outs: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = xs
            .chunks(shard)
            .zip(ys.chunks(shard))
            .enumerate()
            .map(|(t, (cx, cy))| {
                s.spawn(move || {
                    let mut out = Vec::with_capacity(cx.len());
                    learn(t * shard, cx, cy, &mut out);
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    for out in outs {
        preds.extend(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn views_read_and_write_the_plain_values() {
        let mut f = vec![1.5f32, -2.0];
        let a = atomic_view(&mut f);
        assert_eq!(f32::from_bits(a[1].load(Relaxed)), -2.0);
        a[0].store(3.25f32.to_bits(), Relaxed);
        assert_eq!(f, [3.25, -2.0]);
        let mut h = vec![7u16; 3];
        atomic_view(&mut h)[2].store(9, Relaxed);
        assert_eq!(h, [7, 7, 9]);
        let mut c = vec![0u8; 4];
        assert_eq!(atomic_view(&mut c).len(), 4);
        atomic_view(&mut c)[3].fetch_max(200, Relaxed);
        assert_eq!(c, [0, 0, 0, 200]);
    }
}
