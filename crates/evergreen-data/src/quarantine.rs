//! The quarantine: bad records set aside, one JSON Lines file per span, for a person to inspect.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{BadRecord, DataError};

/// Appends bad records to `<dir>/<span name>.jsonl`, one JSON object per line:
/// `{"span","line","reason","detail","raw"}`. Creates the directory on first use; flushes and
/// fsyncs on [`QuarantineWriter::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    /// A quarantine kept in `dir` (created when the first bad record arrives).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a span's bad records go to.
    pub fn path_for(&self, span: &str) -> PathBuf {
        self.dir.join(format!("{span}.jsonl"))
    }

    /// Starts quarantining a span, removing any previous file for it: a retried span
    /// re-quarantines from scratch. The file itself is only created by the first
    /// [`QuarantineWriter::add`].
    ///
    /// A span name that is empty, `.`, `..` or contains a path separator or NUL is rejected.
    pub fn begin(&self, span: &str) -> Result<QuarantineWriter, DataError> {
        if span.is_empty() || span == "." || span == ".." || span.contains(['/', '\\', '\0']) {
            return Err(DataError::InvalidSpanName {
                dir: self.dir.clone(),
                name: span.to_string(),
            });
        }
        let path = self.path_for(span);
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "removed previous quarantine file");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DataError::Quarantine {
                    path,
                    action: "remove previous file",
                    source,
                });
            }
        }
        Ok(QuarantineWriter {
            dir: self.dir.clone(),
            span: span.to_string(),
            path,
            out: None,
            counts: BTreeMap::new(),
            total: 0,
        })
    }
}

/// Writes one span's bad records. Drop without [`finish`](Self::finish) still flushes (best
/// effort) but neither reports errors nor fsyncs.
#[derive(Debug)]
pub struct QuarantineWriter {
    dir: PathBuf,
    span: String,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    counts: BTreeMap<String, u64>,
    total: u64,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    span: &'a str,
    line: u64,
    reason: &'a str,
    detail: &'a str,
    raw: &'a str,
}

impl QuarantineWriter {
    /// The span being quarantined.
    pub fn span(&self) -> &str {
        &self.span
    }

    /// The quarantine file (it exists only once something was added).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one bad record and counts it under `reason`.
    pub fn add(
        &mut self,
        line: u64,
        reason: &str,
        detail: &str,
        raw: &str,
    ) -> Result<(), DataError> {
        let entry = Line {
            span: &self.span,
            line,
            reason,
            detail,
            raw,
        };
        let mut text = serde_json::to_vec(&entry).map_err(|e| self.err("encode", e.into()))?;
        text.push(b'\n');
        let out = self.open()?;
        if let Err(e) = out.write_all(&text) {
            return Err(self.err("write", e));
        }
        *self.counts.entry(reason.to_string()).or_insert(0) += 1;
        self.total += 1;
        Ok(())
    }

    /// [`add`](Self::add) for a reader's [`BadRecord`].
    pub fn add_bad(&mut self, bad: &BadRecord) -> Result<(), DataError> {
        self.add(bad.line, bad.reason, &bad.detail, &bad.raw)
    }

    /// Records added so far, per reason.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Records added so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Flushes and fsyncs the file (and, on Unix, the directory entry) and returns the counts
    /// per reason. Creates no file when nothing was added.
    pub fn finish(mut self) -> Result<BTreeMap<String, u64>, DataError> {
        if let Some(out) = self.out.take() {
            let file = out
                .into_inner()
                .map_err(|e| self.err("flush", e.into_error()))?;
            file.sync_all().map_err(|e| self.err("fsync", e))?;
            drop(file);
            if self.total == 0 {
                // Opened but nothing written (a failed first write): leave no empty file.
                fs::remove_file(&self.path).map_err(|e| self.err("remove empty file", e))?;
            } else {
                sync_dir(&self.dir).map_err(|source| DataError::Quarantine {
                    path: self.dir.clone(),
                    action: "fsync directory",
                    source,
                })?;
            }
        }
        Ok(std::mem::take(&mut self.counts))
    }

    fn open(&mut self) -> Result<&mut BufWriter<File>, DataError> {
        let out = match self.out.take() {
            Some(out) => out,
            None => {
                fs::create_dir_all(&self.dir).map_err(|source| DataError::Quarantine {
                    path: self.dir.clone(),
                    action: "create directory",
                    source,
                })?;
                BufWriter::new(File::create(&self.path).map_err(|e| self.err("create", e))?)
            }
        };
        Ok(self.out.insert(out))
    }

    fn err(&self, action: &'static str, source: io::Error) -> DataError {
        DataError::Quarantine {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
