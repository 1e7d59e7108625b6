//! Opening a model file for serving: verified while it is read, and, for an FTRL model, served
//! from a mapped private copy instead of being decoded into memory.
//!
//! A hot swap loads the new version beside the one serving; decoded into anonymous memory, the
//! two are both resident for a while (TF Serving's 2x). [`open`] with a scratch directory
//! instead copies the file into an unnamed file there (`O_TMPFILE`: it has no name, so no
//! other process can truncate or rewrite it, and it disappears with its last descriptor),
//! hashing the bytes as they go, checks the FTRL state a bounded run of buckets at a time with
//! positioned reads, and maps the copy read-only. Nothing is decoded and no page of the model
//! becomes resident until a prediction touches it; those pages are file-backed, clean and
//! reclaimable. Other kinds, and FTRL where no unnamed file can be made (another OS, a
//! filesystem without `O_TMPFILE`, a read-only directory), are read into memory as by
//! [`crate::load`], and [`Opened::fallback`] says why.

use crate::format::{HEADER_LEN, Header, ModelError, parse_header};
use crate::{Model, ModelKind};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Bytes read at a time while a model file is copied and checked.
const CHUNK: usize = 1 << 20;

/// A model file opened by [`open`].
#[derive(Debug)]
pub struct Opened {
    /// The file's header.
    pub header: Header,
    /// The model.
    pub model: Box<dyn Model>,
    /// The file's size in bytes.
    pub size: u64,
    /// xxh3-64 of the whole file (what a registry manifest records).
    pub xxh3: u64,
    /// True when the model reads its parameters from a mapped private copy of the file.
    pub mapped: bool,
    /// Why a mapping was asked for (a scratch directory given) but the model was read into
    /// memory instead; `None` when mapped, or when no mapping was asked for.
    pub fallback: Option<String>,
}

/// Why [`open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file (or the scratch copy) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a valid model file.
    #[error("{path}: {source}")]
    Model {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: ModelError,
    },
}

/// Opens and verifies the model file at `path` (the same checks as [`crate::load`]). With
/// `scratch_dir`, an FTRL model is served from a mapped private copy made in that directory
/// (see the module documentation); without, or for other kinds, it is read into memory.
pub fn open(path: &Path, scratch_dir: Option<&Path>) -> Result<Opened, OpenError> {
    let io = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |source| OpenError::Model {
        path: path.to_path_buf(),
        source,
    };
    let mut src = File::open(path).map_err(io)?;
    let size = src.metadata().map_err(io)?.len();
    let mut head = [0u8; HEADER_LEN];
    if size < HEADER_LEN as u64 {
        return Err(bad(ModelError::Truncated { len: size as usize }));
    }
    src.read_exact(&mut head).map_err(io)?;
    let header = parse_header(&head, size).map_err(bad)?;
    let mut fallback = None;
    if header.kind == ModelKind::Ftrl
        && let Some(dir) = scratch_dir
    {
        match unnamed_file(dir) {
            Ok(copy) => return mapped(path, src, header, head, size, copy),
            Err(e) => {
                fallback = Some(format!(
                    "no private copy can be made in {}: {e}",
                    dir.display()
                ))
            }
        }
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    bytes.extend_from_slice(&head);
    src.read_to_end(&mut bytes).map_err(io)?;
    let (header, model) = crate::load(&bytes).map_err(bad)?;
    Ok(Opened {
        header,
        model,
        size: bytes.len() as u64,
        xxh3: xxhash_rust::xxh3::xxh3_64(&bytes),
        mapped: false,
        fallback,
    })
}

/// The mapped route of [`open`]: `src` has been read up to the end of the header `head`.
fn mapped(
    path: &Path,
    mut src: File,
    header: Header,
    head: [u8; HEADER_LEN],
    size: u64,
    mut copy: File,
) -> Result<Opened, OpenError> {
    use std::os::unix::fs::FileExt;
    let io = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |source| OpenError::Model {
        path: path.to_path_buf(),
        source,
    };
    let truncated = || bad(ModelError::Truncated { len: size as usize });
    // Copy, hashing the whole file (the manifest's checksum) and everything before the last
    // 8 bytes (the file's own checksum, which those bytes hold).
    let content_len = size - 8;
    let mut whole = xxhash_rust::xxh3::Xxh3::new();
    let mut content = xxhash_rust::xxh3::Xxh3::new();
    let mut stored = Vec::with_capacity(8);
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    let mut consume = |chunk: &[u8], pos: u64| {
        whole.update(chunk);
        let keep = usize::try_from(content_len.saturating_sub(pos))
            .map_or(chunk.len(), |k| k.min(chunk.len()));
        content.update(&chunk[..keep]);
        stored.extend_from_slice(&chunk[keep..]);
    };
    consume(&head, 0);
    copy.write_all(&head).map_err(io)?;
    pos += HEADER_LEN as u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        if pos + n as u64 > size {
            // The file grew while it was read: not the file whose header was checked.
            return Err(truncated());
        }
        consume(&buf[..n], pos);
        copy.write_all(&buf[..n]).map_err(io)?;
        pos += n as u64;
    }
    drop(buf);
    if pos != size {
        return Err(truncated());
    }
    let stored = u64::from_le_bytes(stored.as_slice().try_into().map_err(|_| truncated())?);
    if content.digest() != stored {
        return Err(bad(ModelError::Checksum));
    }
    let body_len = usize::try_from(content_len - HEADER_LEN as u64).map_err(|_| truncated())?;
    let head = crate::ftrl::check_body(HEADER_LEN as u64, body_len, |at, buf| {
        copy.read_exact_at(buf, at)
    })
    .map_err(io)?
    .ok_or_else(|| bad(ModelError::Body("ftrl")))?;
    let len = usize::try_from(size).map_err(|_| truncated())?;
    let map = crate::file_map::FileMap::new(&copy, len).map_err(io)?;
    let model = crate::ftrl::FrozenFtrl::new(map, HEADER_LEN..HEADER_LEN + body_len, head)
        .ok_or_else(|| bad(ModelError::Body("ftrl: state not aligned for mapping")))?;
    Ok(Opened {
        header,
        model: Box::new(model),
        size,
        xxh3: whole.digest(),
        mapped: true,
        fallback: None,
    })
}

/// A new unnamed file in `dir`, readable and writable by this process only.
#[cfg(target_os = "linux")]
fn unnamed_file(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if cfg!(not(target_endian = "little")) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "model files are mapped only on little-endian hosts",
        ));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

#[cfg(not(target_os = "linux"))]
fn unnamed_file(_: &Path) -> std::io::Result<File> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "unnamed files (O_TMPFILE) are a Linux feature",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ftrl, FtrlParams, save};
    use evergreen_core::FeatureVector;

    /// An FTRL model over `dim` buckets with state in its first and last buckets.
    fn model(dim: usize) -> (Ftrl, FeatureVector) {
        let mut m = Ftrl::new(FtrlParams::default(), dim);
        let mut x = FeatureVector::default();
        x.push(0, 1.0);
        x.push((dim - 1) as u32, 0.5);
        for i in 0..20 {
            m.learn(&x, (i % 3 == 0) as u8 as f32);
        }
        (m, x)
    }

    #[test]
    fn a_mapped_model_is_unaffected_when_its_file_is_truncated_or_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        let (m, x) = model(1 << 12);
        std::fs::write(&path, save(&m, 1)).unwrap();
        let opened = open(&path, Some(dir.path())).unwrap();
        assert!(opened.mapped);
        // Rewritten in place (as `cp` over it would), then emptied: the private copy serves on.
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        std::fs::File::create(&path).unwrap();
        assert_eq!(opened.model.predict(&x), m.predict(&x));
        // The copy has no name: the scratch directory holds only the file itself.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn bad_state_in_any_run_of_buckets_is_refused_when_mapped() {
        // Past the first run of buckets checked: the last bucket's `n` goes negative, then NaN.
        let dim = 3 * (1 << 16) + 5;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        let (m, _) = model(dim);
        let good = save(&m, 1);
        std::fs::write(&path, &good).unwrap();
        assert!(open(&path, Some(dir.path())).unwrap().mapped);
        let mut body = Vec::new();
        crate::Model::encode(&m, &mut body);
        for bad in [-1.0f32, f32::NAN] {
            let mut b = body.clone();
            let at = b.len() - 4;
            b[at..].copy_from_slice(&bad.to_le_bytes());
            let mut file = good[..HEADER_LEN].to_vec();
            file.extend_from_slice(&b);
            let sum = xxhash_rust::xxh3::xxh3_64(&file);
            file.extend_from_slice(&sum.to_le_bytes());
            std::fs::write(&path, &file).unwrap();
            let err = open(&path, Some(dir.path())).unwrap_err();
            assert!(
                matches!(
                    err,
                    OpenError::Model {
                        source: ModelError::Body(_),
                        ..
                    }
                ),
                "n = {bad}: {err}"
            );
            assert!(err.to_string().contains("model.bin"), "{err}");
        }
    }

    #[test]
    fn without_an_unnamed_file_the_model_is_read_into_memory_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        let (m, x) = model(64);
        std::fs::write(&path, save(&m, 1)).unwrap();
        let absent = dir.path().join("no-such-dir");
        let opened = open(&path, Some(&absent)).unwrap();
        assert!(!opened.mapped);
        let why = opened.fallback.unwrap();
        assert!(why.contains("no-such-dir"), "{why}");
        assert_eq!(opened.model.predict(&x), m.predict(&x));
    }
}
