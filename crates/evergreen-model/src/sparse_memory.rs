//! Zeroed tables for hashed models whose rows are touched sparsely (FTRL's `z`/`n`, FM's
//! factors): the kernel is asked to back them with ordinary 4 KiB pages instead of transparent
//! huge pages, so the first write to a row zeroes 4 KiB, not the 2 MiB around it. A model of
//! 2^24 buckets touched by a few thousand features then costs the few thousand pages it uses
//! (measured in BENCHMARKS.md: with huge pages the first touches of a covertype run zeroed ~100
//! MB, a quarter of the trainer's time). Reads of untouched rows map the shared zero page.

/// Smallest table (bytes) worth the advice: below it, huge pages cost little.
const MIN_BYTES: usize = 4 << 20;

/// A zeroed vector of `n` values, advised as above when it is large.
pub(crate) fn zeroed<T: Clone + Default>(n: usize) -> Vec<T> {
    let v = vec![T::default(); n];
    advise_sparse(&v);
    v
}

/// Advises the whole pages inside `v`'s buffer not to use transparent huge pages (Linux; a
/// no-op elsewhere, and when the kernel refuses).
pub(crate) fn advise_sparse<T>(v: &[T]) {
    let bytes = std::mem::size_of_val(v);
    if bytes < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = v.as_ptr() as usize;
        let first = start.div_ceil(PAGE) * PAGE;
        let last = (start + bytes) / PAGE * PAGE;
        if last > first {
            advise(first, last - first);
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise(addr: usize, len: usize) {
    // SAFETY: `[addr, addr + len)` is a page-aligned range inside a live allocation of this
    // process; MADV_NOHUGEPAGE only changes how the kernel backs it (page size), never its
    // contents or mapping, so no Rust reference is invalidated. The result is ignored: the
    // advice is an optimisation.
    unsafe {
        libc::madvise(addr as *mut libc::c_void, len, libc::MADV_NOHUGEPAGE);
    }
}
