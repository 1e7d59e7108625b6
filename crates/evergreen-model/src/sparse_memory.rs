//! Zeroed tables for hashed models whose rows are touched sparsely (FTRL's `z`, `n` and
//! admission counters): a large table is its own anonymous memory mapping, so it starts as
//! untouched zero pages without being written (an allocator may clear reused memory with a
//! `memset` of the whole table), and the kernel is asked to back it with ordinary 4 KiB pages
//! instead of transparent huge pages, so the first write to a row zeroes 4 KiB, not the 2 MiB
//! around it. A model of 2^24 buckets touched by a few thousand features then costs the few
//! thousand pages it uses: in a covertype run the first touches of huge pages took a quarter
//! of the trainer's time (BENCHMARKS.md). Reads of untouched rows map the shared zero page.
//! Small tables, tables loaded from a file, and other platforms use a plain `Vec`.
//!
//! Besides `crate::hogwild`, `crate::file_map` and `Adam::step`'s AVX2 dispatch, the only `unsafe` code of the
//! crate: mapping, viewing and
//! unmapping the memory.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Smallest table (bytes) given its own mapping: below it, huge pages cost little.
const MIN_BYTES: usize = 4 << 20;

/// The value types a table holds: plain numbers whose all-zero bit pattern is zero.
pub(crate) trait Zeroable: Copy + Default + PartialEq + fmt::Debug + Send + Sync {}
impl Zeroable for f32 {}
impl Zeroable for u16 {}
impl Zeroable for u8 {}

/// A table of `T`, zero where never written. Dereferences to a slice.
pub(crate) struct ZeroTable<T: Zeroable> {
    backing: Backing<T>,
}

enum Backing<T> {
    Vec(Vec<T>),
    #[cfg(target_os = "linux")]
    Map(map::Mapping<T>),
}

impl<T: Zeroable> ZeroTable<T> {
    /// A table of `n` zeros.
    pub(crate) fn zeros(n: usize) -> Self {
        #[cfg(target_os = "linux")]
        if n.saturating_mul(size_of::<T>()) >= MIN_BYTES
            && let Some(m) = map::Mapping::new(n)
        {
            return Self {
                backing: Backing::Map(m),
            };
        }
        Self {
            backing: Backing::Vec(vec![T::default(); n]),
        }
    }
}

impl<T: Zeroable> From<Vec<T>> for ZeroTable<T> {
    fn from(v: Vec<T>) -> Self {
        Self {
            backing: Backing::Vec(v),
        }
    }
}

impl<T: Zeroable> Deref for ZeroTable<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.backing {
            Backing::Vec(v) => v,
            #[cfg(target_os = "linux")]
            Backing::Map(m) => m.as_slice(),
        }
    }
}

impl<T: Zeroable> DerefMut for ZeroTable<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.backing {
            Backing::Vec(v) => v,
            #[cfg(target_os = "linux")]
            Backing::Map(m) => m.as_mut_slice(),
        }
    }
}

impl<T: Zeroable> Clone for ZeroTable<T> {
    fn clone(&self) -> Self {
        let mut out = Self::zeros(self.len());
        out.copy_from_slice(self);
        out
    }
}

impl<T: Zeroable> PartialEq for ZeroTable<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Zeroable> fmt::Debug for ZeroTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZeroTable(len {})", self.len())
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod map {
    use super::Zeroable;
    use std::marker::PhantomData;
    use std::ptr::NonNull;

    /// An anonymous private mapping of `len` values of `T`, owned.
    pub(super) struct Mapping<T> {
        ptr: NonNull<T>,
        len: usize,
        bytes: usize,
        owns: PhantomData<T>,
    }

    // SAFETY: the mapping is owned memory like a `Vec<T>`'s (no interior sharing); `T` is a
    // plain number type, itself `Send + Sync`.
    unsafe impl<T: Zeroable> Send for Mapping<T> {}
    // SAFETY: as above; shared access only reads.
    unsafe impl<T: Zeroable> Sync for Mapping<T> {}

    impl<T: Zeroable> Mapping<T> {
        /// Maps `len` zeroed values; `None` when the kernel refuses.
        pub(super) fn new(len: usize) -> Option<Self> {
            let bytes = len.checked_mul(size_of::<T>())?;
            if bytes == 0 {
                return None;
            }
            // SAFETY: a fresh anonymous private mapping (no address hint, no file) has no
            // preconditions; the result is checked against MAP_FAILED below.
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if addr == libc::MAP_FAILED {
                return None;
            }
            // SAFETY: `addr..addr + bytes` is the mapping just made; MADV_NOHUGEPAGE only
            // chooses the page size backing it. Its result is ignored: it is an optimisation.
            unsafe {
                libc::madvise(addr, bytes, libc::MADV_NOHUGEPAGE);
            }
            Some(Self {
                // The mapping is page-aligned, so aligned for `T`; MAP_FAILED was excluded,
                // and mmap never returns null for a mapping without a hint.
                ptr: NonNull::new(addr.cast::<T>())?,
                len,
                bytes,
                owns: PhantomData,
            })
        }

        pub(super) fn as_slice(&self) -> &[T] {
            // SAFETY: `ptr` points to `len` values of `T` in a live, readable mapping owned by
            // `self`, zero-initialised by the kernel (all zeros is a valid `T`: `Zeroable`);
            // the borrow of `self` keeps it alive and unaliased by `&mut`.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }

        pub(super) fn as_mut_slice(&mut self) -> &mut [T] {
            // SAFETY: as in `as_slice`; the mapping is writable and `&mut self` is exclusive.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
        }
    }

    impl<T> Drop for Mapping<T> {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping made in `new`, owned by `self` and no longer
            // borrowed (drop has `&mut self`).
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tables_start_zero_clone_and_compare_like_vectors() {
        for n in [0, 10, (MIN_BYTES / 4) + 3] {
            let mut t = ZeroTable::<f32>::zeros(n);
            assert_eq!(t.len(), n);
            assert!(t.iter().all(|&x| x == 0.0));
            if n > 0 {
                t[n - 1] = 2.5;
                t[0] = -1.0;
            }
            let c = t.clone();
            assert_eq!(c, t);
            assert_eq!(&c[..], &t[..]);
            let v: ZeroTable<f32> = t.to_vec().into();
            assert_eq!(v, t);
            if n > 0 {
                t[n / 2] = 1.0;
                assert_ne!(c, t);
            }
        }
        let bytes = ZeroTable::<u8>::zeros(MIN_BYTES + 1);
        assert!(bytes.iter().all(|&b| b == 0));
    }
}
