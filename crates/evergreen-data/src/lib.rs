//! Span data: finding the spans that are ready in a data directory, reading CSV and JSON Lines
//! spans into raw records, and quarantining the records that cannot be read.
//!
//! # The ready rule
//!
//! A file in a span directory is a *span* (ready to be read) when all of these hold:
//!
//! - it is a regular file (a symbolic link to a regular file counts; directories and anything
//!   else are ignored);
//! - its name does not start with `.` or `_`;
//! - its name does not end with `.tmp`, `.partial` or `.ready` (compared case-insensitively);
//! - its name has a known format extension (`.csv`; `.jsonl`, `.ndjson`, `.json`; `.tfrecord`;
//!   `.vw`; `.libsvm`; `.libffm`; `.parquet`, `.parq`; see [`Format::from_path`]; compared
//!   case-insensitively), or the directory has a forced format, which then applies to every file
//!   that passes the rules above;
//! - in ready-marker mode only: a file named `X.ready` exists beside the span `X` (its content
//!   is ignored).
//!
//! Writers therefore write a span elsewhere on the same file system, or in this directory under a
//! hidden (`.x`), `_x`, `x.tmp` or `x.partial` name, and *rename* it into place when complete,
//! which is atomic. A writer that cannot rename writes `X` in place and creates `X.ready` after
//! `X` is complete, and the directory is used in ready-marker mode.
//!
//! Spans are processed in file name order (byte order), and a trainer's progress is a watermark:
//! the name of the last span it finished; [`SpanDir::after`] lists the spans after it. Name spans
//! so that this order is the arrival order (for example `span-000123.csv` or a UTC timestamp).
//!
//! # Reading
//!
//! [`open_span`] gives an iterator of `Result<SourceRecord, BadRecord>`: one bad row does not stop
//! the span; it becomes a [`BadRecord`] (see [`reason`] for the reasons) for the [`Quarantine`].
//! CSV cells arrive as strings (empty cells as missing); JSON numbers as numbers, strings and
//! booleans as strings, `null` as missing, and the bare tokens `NaN`, `Infinity`, `-Infinity` as
//! numbers.

mod discovery;
mod error;
pub mod examples;
mod parquet_file;
pub mod pipeline;
mod quarantine;
mod reader;
mod replay;
mod span;
mod sparse_text;
pub mod tfrecord;

pub use discovery::{DiscoveredSpan, SpanPattern, span_id};
pub use error::DataError;
pub use pipeline::ResumePoint;
pub use quarantine::{Quarantine, QuarantineWriter};
pub use reader::{
    BadRecord, ReadOptions, SourceRecord, SpanReader, open_span, open_span_with, reason,
};
pub use replay::{ReplayConfig, ReplayError, ReplayStore};
pub use span::{Format, SpanDir, SpanFile};
