//! The error type of this crate: every message names the file (and line where one applies).

use std::io;
use std::path::PathBuf;

/// What can go wrong while listing, opening or quarantining spans.
///
/// Bad *records* are not errors of this type: a reader yields them as [`crate::BadRecord`] items
/// and carries on with the next record.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The span directory could not be listed (missing, not a directory, no permission).
    #[error("cannot list span directory {}: {source}", dir.display())]
    ListDir {
        /// The directory.
        dir: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A directory entry could not be inspected.
    #[error("cannot inspect {}: {source}", path.display())]
    Stat {
        /// The entry.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A span could not be opened.
    #[error("cannot open span {}: {source}", path.display())]
    Open {
        /// The span file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading a span failed before its first record (while reading the CSV header).
    #[error("cannot read span {}: {source}", path.display())]
    Read {
        /// The span file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A span pattern that cannot be used.
    #[error("span pattern {pattern:?}: {message}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// The format is declared but its reader is not available in this build.
    #[error("{}: reading {format} spans is not implemented yet", path.display())]
    Unsupported {
        /// The span file.
        path: PathBuf,
        /// The format.
        format: &'static str,
    },
    /// The CSV header line could not be used.
    #[error("unreadable CSV header in {} at line {line}: {detail}", path.display())]
    Header {
        /// The span file.
        path: PathBuf,
        /// 1-based line of the header.
        line: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// A Parquet span that is not a readable Parquet file (bad magic, a footer that cannot be
    /// decoded, too short): bad input, like an unusable CSV header.
    #[error("{} is not a readable Parquet file: {detail}", path.display())]
    Parquet {
        /// The span file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Two CSV header cells name the same column (after trimming).
    #[error("duplicate column {column:?} in the CSV header of {}", path.display())]
    DuplicateColumn {
        /// The span file.
        path: PathBuf,
        /// The repeated column name.
        column: String,
    },
    /// A span name that cannot name a quarantine file (empty, a path separator, `.` or `..`).
    #[error("span name {name:?} cannot name a quarantine file in {}", dir.display())]
    InvalidSpanName {
        /// The quarantine directory.
        dir: PathBuf,
        /// The rejected name.
        name: String,
    },
    /// Creating, writing, syncing or removing a quarantine file (or its directory) failed.
    #[error("quarantine {}: cannot {action}: {source}", path.display())]
    Quarantine {
        /// The quarantine file or directory.
        path: PathBuf,
        /// What was being done ("create directory", "write", "fsync", ...).
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },
}
