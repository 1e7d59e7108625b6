//! A read-only memory mapping of a whole file, viewed as typed little-endian tables: how a
//! served FTRL model reads its `z` and `n` straight from its file (`crate::open`). Pages are
//! file-backed and clean: the kernel reads them in when first touched and may drop them under
//! memory pressure, and two versions of a model are never both fully resident in anonymous
//! memory during a swap.
//!
//! The file mapped must never shrink while mapped (a read of a page past the end would raise
//! `SIGBUS`): `crate::open` only maps its own private, unnamed copy of a model file, which no
//! other process can name, let alone truncate. With `crate::sparse_memory`, `crate::hogwild`
//! and `Adam::step`'s AVX2 dispatch, the only `unsafe` code of the crate.

use std::fs::File;

/// A whole file mapped read-only (`PROT_READ`, `MAP_PRIVATE`), unmapped on drop.
#[derive(Debug)]
pub(crate) struct FileMap {
    inner: imp::Mapping,
}

impl FileMap {
    /// Maps the first `len` bytes of `file` (`len` > 0, at most the file's length, which must
    /// not shrink afterwards: see the module documentation).
    pub(crate) fn new(file: &File, len: usize) -> std::io::Result<Self> {
        Ok(Self {
            inner: imp::Mapping::new(file, len)?,
        })
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.inner.bytes()
    }

    /// `len` little-endian `f32` values at byte `offset`; `None` when out of range or not
    /// aligned (the mapping is page-aligned, so an `offset` that is a multiple of 4 is).
    pub(crate) fn f32s(&self, offset: usize, len: usize) -> Option<&[f32]> {
        imp::typed(self.bytes(), offset, len)
    }

    /// `len` little-endian `u16` values at byte `offset` (as [`FileMap::f32s`]).
    pub(crate) fn u16s(&self, offset: usize, len: usize) -> Option<&[u16]> {
        imp::typed(self.bytes(), offset, len)
    }
}

/// The value types viewed in place: plain numbers, every bit pattern valid, little-endian in
/// the file and (`cfg` below) in memory.
trait Plain: Copy {}
impl Plain for f32 {}
impl Plain for u16 {}

#[cfg(all(unix, target_endian = "little"))]
#[allow(unsafe_code)]
mod imp {
    use super::Plain;
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::ptr::NonNull;

    #[derive(Debug)]
    pub(super) struct Mapping {
        ptr: NonNull<u8>,
        len: usize,
    }

    // SAFETY: the mapping is read-only memory owned by `self` (never written through, unmapped
    // only on drop), so sharing or sending it between threads is like sharing a `Box<[u8]>`.
    unsafe impl Send for Mapping {}
    // SAFETY: as above.
    unsafe impl Sync for Mapping {}

    impl Mapping {
        pub(super) fn new(file: &File, len: usize) -> std::io::Result<Self> {
            let file_len = file.metadata()?.len();
            if len == 0 || len as u64 > file_len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("cannot map {len} bytes of a {file_len}-byte file"),
                ));
            }
            // SAFETY: a new read-only private mapping of an open file descriptor, no address
            // hint; the result is checked against MAP_FAILED below. The caller guarantees the
            // file does not shrink while mapped (module documentation).
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if addr == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Self {
                // mmap never returns null for a mapping without a hint.
                ptr: NonNull::new(addr.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?,
                len,
            })
        }

        pub(super) fn bytes(&self) -> &[u8] {
            // SAFETY: `ptr..ptr + len` is a live readable mapping owned by `self` (unmapped
            // only in `drop`), within the file's length, never written.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping made in `new`, no longer borrowed.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.len);
            }
        }
    }

    pub(super) fn typed<T: Plain>(bytes: &[u8], offset: usize, len: usize) -> Option<&[T]> {
        let size = len.checked_mul(size_of::<T>())?;
        let part = bytes.get(offset..offset.checked_add(size)?)?;
        if !(part.as_ptr() as usize).is_multiple_of(align_of::<T>()) {
            return None;
        }
        // SAFETY: `part` is `len * size_of::<T>()` initialised bytes borrowed from the
        // mapping, aligned for `T` (checked above); every bit pattern is a valid `T`
        // (`Plain`: f32 or u16), and the host is little-endian like the file (`cfg`).
        Some(unsafe { std::slice::from_raw_parts(part.as_ptr().cast::<T>(), len) })
    }
}

#[cfg(not(all(unix, target_endian = "little")))]
mod imp {
    //! Elsewhere no file is mapped: `crate::open` reads the model into memory instead.
    use super::Plain;
    use std::fs::File;

    #[derive(Debug)]
    pub(super) enum Mapping {}

    impl Mapping {
        pub(super) fn new(_: &File, _: usize) -> std::io::Result<Self> {
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "model files are mapped only on little-endian Unix",
            ))
        }
        pub(super) fn bytes(&self) -> &[u8] {
            match *self {}
        }
    }

    pub(super) fn typed<T: Plain>(_: &[u8], _: usize, _: usize) -> Option<&[T]> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_a_file_and_views_aligned_tables_only() {
        let mut f = tempfile::tempfile().unwrap();
        let values = [1.5f32, -2.0, 3.25, 0.0];
        let mut bytes = Vec::new();
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&7u16.to_le_bytes());
        f.write_all(&bytes).unwrap();
        let m = FileMap::new(&f, bytes.len()).unwrap();
        assert_eq!(m.bytes(), &bytes[..]);
        assert_eq!(m.f32s(0, 4).unwrap(), &values);
        assert_eq!(m.f32s(4, 2).unwrap(), &values[1..3]);
        assert_eq!(m.u16s(16, 1).unwrap(), &[7]);
        assert!(m.f32s(2, 1).is_none(), "misaligned");
        assert!(m.f32s(4, 4).is_none(), "past the end");
        assert!(m.u16s(usize::MAX, 1).is_none());
        assert!(m.f32s(0, usize::MAX).is_none());
        assert!(
            FileMap::new(&f, bytes.len() + 1).is_err(),
            "longer than the file"
        );
        assert!(FileMap::new(&f, 0).is_err());
    }
}
