//! Parquet spans, read with the `parquet` crate's row API (no Arrow).
//!
//! # Rows
//!
//! A Parquet span is read row group by row group, one [`RawRecord`] per row, its fields named by
//! the schema's top-level columns in schema order. Rows are numbered 1-based across the whole
//! file (the `line` of a record or bad record): the first row of the second row group follows
//! the last row of the first, by the row counts in the footer.
//!
//! # Type mapping
//!
//! | Parquet (physical / logical)                     | [`RawValue`]                          |
//! |--------------------------------------------------|---------------------------------------|
//! | `null` (an optional value that is absent)        | `Missing`                             |
//! | `BOOLEAN`                                        | `Int(0)` / `Int(1)`                   |
//! | `INT32`, `INT64`, signed or unsigned `INT(8..64)`| `Int` (a `UINT_64` above `i64::MAX`: `Num`) |
//! | `FLOAT`, `DOUBLE`, `FLOAT16`                     | `Num`                                 |
//! | `DECIMAL` (any physical type)                    | `Num` (the nearest `f64`)             |
//! | `BYTE_ARRAY` `STRING`/`ENUM`/`JSON`              | `Str`                                 |
//! | `BYTE_ARRAY`, `FIXED_LEN_BYTE_ARRAY` (binary)    | `Str` when valid UTF-8, else `Bytes`  |
//! | `DATE`                                           | `Int`: days since 1970-01-01          |
//! | `TIME` (millis / micros)                         | `Int`: ms / µs since midnight         |
//! | `TIMESTAMP` (millis / micros)                    | `Int`: ms / µs since the Unix epoch   |
//! | `TIMESTAMP` (nanos, `INT64`)                     | `Int`: ns since the Unix epoch        |
//! | `INT96` (legacy timestamp)                       | `Int`: ms since the Unix epoch        |
//! | `LIST` of the scalars above                      | `List` (null elements: `Missing`)     |
//! | `MAP`, a nested group, a list of lists/groups    | bad record `unsupported_type`         |
//!
//! # Errors
//!
//! - A file that is not Parquet (bad magic, a footer that cannot be decoded, a file too short)
//!   fails to open with [`DataError::Parquet`], naming the path: bad input, like an unusable CSV
//!   header, so retrying it would not help.
//! - A row group whose pages cannot be decoded (corrupt or truncated page, bad compression, a
//!   value the row API cannot convert) becomes one bad record `corrupt_row_group` at the row
//!   where decoding failed; the rest of that row group is skipped (its row numbers are still
//!   counted) and reading goes on with the next row group.
//! - A row with an unsupported value type becomes a bad record `unsupported_type`.
//! - An IO error while reading the file ends the span with `io_error` (retry the span).
//! - The `parquet` crate may panic on some malformed inputs; such panics are caught and turned
//!   into the errors above, so a corrupt file never takes the reader down.
//!
//! `raw` (kept for the quarantine) is a JSON rendering of the row, at most 4 KiB.
//!
//! # Progress
//!
//! Parquet is read by seeking (footer first, then column chunks) through a counting
//! [`ChunkReader`], not through the sequential `InputFile` counter: the bytes read are added to
//! the progress counter as they are read, capped at the file size (the footer is read more than
//! once), and when the last row group is done the rest up to the file size (the leading magic,
//! anything no column needed) is added, so a span read to its end adds exactly its size.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use evergreen_core::{FieldName, RawRecord, RawValue};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{ReaderProperties, ReaderPropertiesPtr};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedRowGroupReader;
use parquet::record::reader::{ReaderIter, TreeBuilder};
use parquet::record::{Field, Row};
use parquet::schema::types::SchemaDescPtr;

use crate::DataError;
use crate::reader::{InputFile, RowSource, SourceRecord, Step, reason};

/// Bytes of a row's JSON rendering kept as its `raw` text.
const RAW_KEEP: usize = 4096;

/// The span file as a [`ChunkReader`]: reads are bounds-checked against the file length (so a
/// corrupt offset or length in the footer is an error, never a huge allocation), counted into
/// the progress counter, and an IO error is remembered (to tell a failing disk from a corrupt
/// file).
struct CountingFile {
    file: File,
    len: u64,
    progress: Arc<Progress>,
}

/// Bytes read so far, capped at the file length (the footer is read more than once), the
/// caller's progress counter, and the first IO error seen.
struct Progress {
    sink: Option<Arc<AtomicU64>>,
    counted: AtomicU64,
    len: u64,
    io_error: Mutex<Option<(io::ErrorKind, String)>>,
}

impl Progress {
    /// Remembers an IO error (the first one).
    fn note(&self, e: &io::Error) {
        if let Ok(mut slot) = self.io_error.lock() {
            slot.get_or_insert_with(|| (e.kind(), e.to_string()));
        }
    }

    /// Counts `n` bytes read, never past the file length.
    fn count(&self, n: u64) {
        let Some(sink) = &self.sink else { return };
        let before = self
            .counted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_add(n).min(self.len))
            })
            .unwrap_or(self.len);
        let added = before.saturating_add(n).min(self.len) - before;
        sink.fetch_add(added, Ordering::Relaxed);
    }

    /// The whole file has been read: counts what was not (the leading magic, bytes no column
    /// needed), so that a span adds exactly its size.
    fn finish(&self) {
        self.count(self.len);
    }
}

impl CountingFile {
    fn note(&self, e: io::Error) -> ParquetError {
        self.progress.note(&e);
        ParquetError::External(Box::new(e))
    }

    /// The first IO error seen, if any.
    fn io_error(&self) -> Option<io::Error> {
        let slot = self.progress.io_error.lock().ok()?;
        slot.as_ref().map(|(k, m)| io::Error::new(*k, m.clone()))
    }

    fn check_range(&self, start: u64, length: u64) -> Result<(), ParquetError> {
        match start.checked_add(length) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ParquetError::EOF(format!(
                "range of {length} bytes at offset {start} is outside the file ({} bytes)",
                self.len
            ))),
        }
    }
}

impl Length for CountingFile {
    fn len(&self) -> u64 {
        self.len
    }
}

/// A reader handed out by [`CountingFile::get_read`]: counts what it reads.
struct CountingRead {
    file: File,
    progress: Arc<Progress>,
}

impl Read for CountingRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf).inspect_err(|e| self.progress.note(e))?;
        self.progress.count(n as u64);
        Ok(n)
    }
}

impl ChunkReader for CountingFile {
    type T = BufReader<io::Take<CountingRead>>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        self.check_range(start, 0)?;
        let mut file = self.file.try_clone().map_err(|e| self.note(e))?;
        file.seek(SeekFrom::Start(start))
            .map_err(|e| self.note(e))?;
        let r = CountingRead {
            file,
            progress: self.progress.clone(),
        };
        Ok(BufReader::new(r.take(self.len - start)))
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.check_range(start, length as u64)?;
        let mut file = self.file.try_clone().map_err(|e| self.note(e))?;
        file.seek(SeekFrom::Start(start))
            .map_err(|e| self.note(e))?;
        let mut buf = vec![0u8; length];
        file.read_exact(&mut buf).map_err(|e| self.note(e))?;
        self.progress.count(length as u64);
        Ok(buf.into())
    }
}

/// Opens a Parquet span: reads and checks the footer.
pub(crate) fn open_parquet(file: InputFile, path: &Path) -> Result<Box<dyn RowSource>, DataError> {
    let (file, progress) = file.into_parts();
    let len = file.metadata().map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let len = len.len();
    let chunk = Arc::new(CountingFile {
        file,
        len,
        progress: Arc::new(Progress {
            sink: progress,
            counted: AtomicU64::new(0),
            len,
            io_error: Mutex::new(None),
        }),
    });
    let bad = |detail: String| DataError::Parquet {
        path: path.to_path_buf(),
        detail,
    };
    // The footer's Thrift lists are sized by counts the file states, and the parquet crate
    // allocates them before reading: a corrupt count asks for gigabytes, and a failed
    // allocation aborts the process (a panic would be caught below; an abort cannot be).
    if let Some(detail) = footer_problem(&chunk) {
        if let Some(source) = chunk.io_error() {
            return Err(DataError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
        return Err(bad(detail));
    }
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        ParquetMetaDataReader::new().parse_and_finish(&*chunk)
    }));
    let meta = match parsed {
        Ok(Ok(meta)) => meta,
        Ok(Err(e)) => {
            if let Some(source) = chunk.io_error() {
                return Err(DataError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
            return Err(bad(e.to_string()));
        }
        Err(panic) => {
            return Err(bad(format!(
                "the footer could not be decoded ({})",
                panic_message(&panic)
            )));
        }
    };
    let descr = meta.file_metadata().schema_descr_ptr();
    let names = descr
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| FieldName::from(f.name()))
        .collect();
    Ok(Box::new(ParquetRows {
        chunk,
        meta,
        descr,
        props: Arc::new(ReaderProperties::builder().build()),
        names,
        group: 0,
        current: None,
        left: 0,
        next_row: 1,
    }))
}

/// Largest footer (Thrift `FileMetaData`) accepted.
const MAX_FOOTER_BYTES: u64 = 64 << 20;

/// Why the footer cannot be handed to the parquet crate safely, if it cannot: larger than
/// [`MAX_FOOTER_BYTES`], or Thrift whose list, map or string sizes exceed the bytes left in it
/// (every element takes at least one byte), or nested deeper than 64. A footer this accepts
/// may still be invalid: the parquet crate says why.
fn footer_problem(chunk: &CountingFile) -> Option<String> {
    let len = chunk.len;
    if len < 12 {
        return None; // too short for a footer: the parquet crate's own error names it
    }
    let tail = chunk.get_bytes(len - 8, 8).ok()?;
    if &tail[4..] != b"PAR1" {
        return None;
    }
    let meta_len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    if meta_len > MAX_FOOTER_BYTES {
        return Some(format!(
            "the footer is {meta_len} bytes, more than the {MAX_FOOTER_BYTES} accepted"
        ));
    }
    if meta_len + 8 > len {
        return None;
    }
    let meta = chunk
        .get_bytes(len - 8 - meta_len, meta_len as usize)
        .ok()?;
    let mut walk = thrift::Walk { buf: &meta, pos: 0 };
    walk.value(thrift::STRUCT, 0)
        .err()
        .map(|e| format!("the footer is malformed: {e}"))
}

/// Largest page (uncompressed) accepted: the parquet crate allocates that much to decompress
/// it. Writers make pages of about 1 MiB.
const MAX_PAGE_BYTES: i64 = 64 << 20;
/// Longest page header read (statistics included).
const MAX_PAGE_HEADER_BYTES: u64 = 1 << 20;

/// Why a row group's pages cannot be handed to the parquet crate safely, if they cannot: a
/// page header that does not parse, a page that runs past its column chunk, an uncompressed
/// size over [`MAX_PAGE_BYTES`], or a dictionary page claiming more values than its bytes can
/// hold (the crate sizes the dictionary by that claim before decoding it).
fn page_problem(
    chunk: &CountingFile,
    rg: &parquet::file::metadata::RowGroupMetaData,
) -> Option<String> {
    use parquet::basic::Type;
    for (c, col) in rg.columns().iter().enumerate() {
        let data = col.data_page_offset();
        let start = match col.dictionary_page_offset() {
            Some(d) if d > 0 => d.min(data),
            _ => data,
        };
        let size = col.compressed_size();
        let (Ok(start), Ok(size)) = (u64::try_from(start), u64::try_from(size)) else {
            return Some(format!("column {c}: a negative page offset or size"));
        };
        if start.saturating_add(size) > chunk.len {
            return Some(format!(
                "column {c}: its pages lie past the end of the file"
            ));
        }
        // Bytes a dictionary value takes at least, encoded.
        let min_value = match col.column_type() {
            Type::FIXED_LEN_BYTE_ARRAY => i64::from(col.column_descr().type_length().max(1)),
            Type::BOOLEAN => 1,
            _ => 4,
        };
        let mut pos = 0u64;
        while pos < size {
            let take = (size - pos).min(MAX_PAGE_HEADER_BYTES);
            let Ok(bytes) = chunk.get_bytes(start + pos, take as usize) else {
                return None; // an IO error: the parquet crate reports it
            };
            let mut walk = thrift::Walk {
                buf: &bytes,
                pos: 0,
            };
            let at = start + pos;
            let h = match walk.page_header() {
                Ok(h) => h,
                Err(e) => return Some(format!("column {c}: the page header at byte {at}: {e}")),
            };
            if h.compressed < 0 || h.uncompressed < 0 {
                return Some(format!(
                    "column {c}: the page at byte {at} has a negative size"
                ));
            }
            if h.uncompressed > MAX_PAGE_BYTES {
                return Some(format!(
                    "column {c}: the page at byte {at} is {} bytes uncompressed, more than the \
                     {MAX_PAGE_BYTES} accepted",
                    h.uncompressed
                ));
            }
            if let Some(n) = h.dictionary_values
                && (n < 0 || n.saturating_mul(min_value) > h.uncompressed)
            {
                return Some(format!(
                    "column {c}: the dictionary page at byte {at} claims {n} values in {} bytes",
                    h.uncompressed
                ));
            }
            let next = pos + walk.pos as u64 + h.compressed as u64;
            if next > size {
                return Some(format!(
                    "column {c}: the page at byte {at} runs past the end of its column chunk"
                ));
            }
            pos = next;
        }
    }
    None
}

/// A walk over Thrift compact-protocol data that checks sizes without building anything.
mod thrift {
    pub(super) const STRUCT: u8 = 12;
    const MAX_DEPTH: usize = 64;

    pub(super) struct Walk<'a> {
        pub(super) buf: &'a [u8],
        pub(super) pos: usize,
    }

    /// What a Parquet `PageHeader` says about sizes.
    #[derive(Debug, Default)]
    pub(super) struct PageHeader {
        pub(super) uncompressed: i64,
        pub(super) compressed: i64,
        /// `num_values` of a dictionary page.
        pub(super) dictionary_values: Option<i64>,
    }

    impl Walk<'_> {
        /// A zigzag varint (an i32 or i64 field's value).
        fn int(&mut self) -> Result<i64, String> {
            let v = self.varint()?;
            Ok((v >> 1) as i64 ^ -((v & 1) as i64))
        }

        /// The fields of a struct, each handed to `field(walk, id, type)`, which reads or
        /// skips its value.
        fn fields(
            &mut self,
            mut field: impl FnMut(&mut Self, i16, u8) -> Result<(), String>,
        ) -> Result<(), String> {
            let mut last = 0i16;
            loop {
                let h = self.byte()?;
                if h == 0 {
                    return Ok(());
                }
                let id = match h >> 4 {
                    0 => i16::try_from(self.int()?).map_err(|_| "a field id out of range")?,
                    d => last.wrapping_add(i16::from(d)),
                };
                last = id;
                field(self, id, h & 0x0f)?;
            }
        }

        /// Parses a `PageHeader` (Thrift compact protocol): its sizes and, for a dictionary
        /// page, its number of values; everything else is skipped (sizes checked).
        pub(super) fn page_header(&mut self) -> Result<PageHeader, String> {
            let mut h = PageHeader::default();
            let mut seen = (false, false);
            self.fields(|w, id, t| match (id, t) {
                (2, 5) => {
                    h.uncompressed = w.int()?;
                    seen.0 = true;
                    Ok(())
                }
                (3, 5) => {
                    h.compressed = w.int()?;
                    seen.1 = true;
                    Ok(())
                }
                (7, STRUCT) => w.fields(|w, id, t| match (id, t) {
                    (1, 5) => {
                        h.dictionary_values = Some(w.int()?);
                        Ok(())
                    }
                    _ => w.value(t, 2),
                }),
                _ => w.value(t, 1),
            })?;
            if seen != (true, true) {
                return Err("its sizes are missing".into());
            }
            Ok(h)
        }

        fn left(&self) -> usize {
            self.buf.len() - self.pos
        }

        fn byte(&mut self) -> Result<u8, String> {
            let b = *self.buf.get(self.pos).ok_or("it ends inside a value")?;
            self.pos += 1;
            Ok(b)
        }

        fn skip(&mut self, n: usize) -> Result<(), String> {
            if n > self.left() {
                return Err(format!(
                    "a value of {n} bytes at byte {} runs past its end",
                    self.pos
                ));
            }
            self.pos += n;
            Ok(())
        }

        fn varint(&mut self) -> Result<u64, String> {
            let mut v = 0u64;
            for shift in (0..70).step_by(7) {
                let b = self.byte()?;
                v |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
                if b & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err(format!("a varint at byte {} is too long", self.pos))
        }

        /// A count of `n` elements of at least one byte each, at most the bytes left.
        fn count(&mut self, n: u64, what: &str) -> Result<usize, String> {
            if n > self.left() as u64 {
                return Err(format!(
                    "a {what} of {n} elements at byte {} is longer than the {} bytes left",
                    self.pos,
                    self.left()
                ));
            }
            Ok(n as usize)
        }

        /// Skips one element of a list, set or map: booleans are a byte each there.
        fn element(&mut self, t: u8, depth: usize) -> Result<(), String> {
            if t == 1 || t == 2 {
                self.skip(1)
            } else {
                self.value(t, depth)
            }
        }

        /// Skips one value of compact type `t`.
        pub(super) fn value(&mut self, t: u8, depth: usize) -> Result<(), String> {
            if depth > MAX_DEPTH {
                return Err(format!("values nested deeper than {MAX_DEPTH}"));
            }
            match t {
                1 | 2 => Ok(()), // a boolean field: the value is its type
                3 => self.skip(1),
                4..=6 => self.varint().map(drop),
                7 => self.skip(8),
                8 => {
                    let n = self.varint()?;
                    let n = self.count(n, "string")?;
                    self.skip(n)
                }
                9 | 10 => {
                    let h = self.byte()?;
                    let n = match h >> 4 {
                        15 => self.varint()?,
                        n => u64::from(n),
                    };
                    let n = self.count(n, "list")?;
                    for _ in 0..n {
                        self.element(h & 0x0f, depth + 1)?;
                    }
                    Ok(())
                }
                11 => {
                    let n = self.varint()?;
                    let n = self.count(n.saturating_mul(2), "map")? / 2;
                    if n == 0 {
                        return Ok(());
                    }
                    let kv = self.byte()?;
                    for _ in 0..n {
                        self.element(kv >> 4, depth + 1)?;
                        self.element(kv & 0x0f, depth + 1)?;
                    }
                    Ok(())
                }
                STRUCT => loop {
                    let h = self.byte()?;
                    if h == 0 {
                        return Ok(());
                    }
                    if h >> 4 == 0 {
                        self.varint()?; // a field id that is not a small delta
                    }
                    self.value(h & 0x0f, depth + 1)?;
                },
                13 => self.skip(16),
                other => Err(format!("unknown type {other} at byte {}", self.pos)),
            }
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic in the Parquet decoder".to_string()
    }
}

/// The rows of a Parquet span (see the module documentation).
struct ParquetRows {
    chunk: Arc<CountingFile>,
    meta: ParquetMetaData,
    descr: SchemaDescPtr,
    props: ReaderPropertiesPtr,
    /// The top-level column names, in schema order.
    names: Vec<FieldName>,
    /// The next row group to open.
    group: usize,
    /// The rows of the row group being read (`group - 1`).
    current: Option<ReaderIter>,
    /// Rows of the current row group not yet read.
    left: u64,
    /// 1-based number of the next row.
    next_row: u64,
}

impl ParquetRows {
    /// A row group failed at row `next_row`: one bad record (or an IO failure), and the rest of
    /// the row group is skipped.
    fn group_failed(&mut self, group: usize, detail: String) -> Step {
        let line = self.next_row;
        let skipped = self.left;
        self.next_row = self.next_row.saturating_add(self.left);
        self.left = 0;
        self.current = None;
        if let Some(error) = self.chunk.io_error() {
            return Step::Failed { line, error };
        }
        Step::Bad {
            line,
            reason: reason::CORRUPT_ROW_GROUP,
            detail: format!(
                "row group {group} cannot be decoded at row {line}: {detail}; its remaining {skipped} row(s) are skipped"
            ),
            raw: String::new(),
        }
    }

    fn open_group(&mut self, g: usize) -> Result<ReaderIter, String> {
        let rg = self.meta.row_group(g);
        // Page headers state sizes the parquet crate allocates before reading (a dictionary of
        // a billion values): checked first, as the footer was.
        if let Some(problem) = page_problem(&self.chunk, rg) {
            return Err(problem);
        }
        let chunk = Arc::clone(&self.chunk);
        let props = Arc::clone(&self.props);
        let descr = Arc::clone(&self.descr);
        let built = catch_unwind(AssertUnwindSafe(|| {
            let reader = SerializedRowGroupReader::new(chunk, rg, None, props)?;
            TreeBuilder::new().as_iter(descr, &reader)
        }));
        match built {
            Ok(Ok(iter)) => Ok(iter),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(panic_message(&panic)),
        }
    }

    fn record(&self, line: u64, row: &Row) -> Step {
        let raw = render_row(row);
        let mut record = RawRecord::with_capacity(row.len());
        for (i, (name, field)) in row.get_column_iter().enumerate() {
            let value = match to_value(field, true) {
                Ok(v) => v,
                Err(what) => {
                    return Step::Bad {
                        line,
                        reason: reason::UNSUPPORTED_TYPE,
                        detail: format!(
                            "column {name:?} is {what}; only scalars and lists of scalars are supported"
                        ),
                        raw,
                    };
                }
            };
            match self.names.get(i) {
                Some(n) if **n == **name => record.insert(n.clone(), value),
                _ => record.insert(name.as_str(), value),
            }
        }
        Step::Record(SourceRecord { line, record, raw })
    }
}

impl RowSource for ParquetRows {
    fn step(&mut self) -> Step {
        loop {
            if let Some(iter) = &mut self.current {
                let group = self.group - 1;
                if self.left == 0 {
                    self.current = None;
                    continue;
                }
                let next = catch_unwind(AssertUnwindSafe(|| iter.next()));
                match next {
                    Ok(Some(Ok(row))) => {
                        let line = self.next_row;
                        self.next_row = self.next_row.saturating_add(1);
                        self.left -= 1;
                        return self.record(line, &row);
                    }
                    Ok(Some(Err(e))) => return self.group_failed(group, e.to_string()),
                    Ok(None) => {
                        return self.group_failed(
                            group,
                            "the row group ended before its row count".to_string(),
                        );
                    }
                    Err(panic) => return self.group_failed(group, panic_message(&panic)),
                }
            }
            let g = self.group;
            if g >= self.meta.num_row_groups() {
                self.chunk.progress.finish();
                return Step::End;
            }
            self.group += 1;
            let rows = u64::try_from(self.meta.row_group(g).num_rows()).unwrap_or(0);
            if rows == 0 {
                continue;
            }
            self.left = rows;
            match self.open_group(g) {
                Ok(iter) => self.current = Some(iter),
                Err(detail) => return self.group_failed(g, detail),
            }
        }
    }
}

/// A field as a raw value; `Err` names an unsupported type. `top`: a top-level column (a list
/// is allowed there, not inside a list).
fn to_value(field: &Field, top: bool) -> Result<RawValue, &'static str> {
    Ok(match field {
        Field::Null => RawValue::Missing,
        Field::Bool(b) => RawValue::Int(i64::from(*b)),
        Field::Byte(x) => RawValue::Int(i64::from(*x)),
        Field::Short(x) => RawValue::Int(i64::from(*x)),
        Field::Int(x) => RawValue::Int(i64::from(*x)),
        Field::Long(x) => RawValue::Int(*x),
        Field::UByte(x) => RawValue::Int(i64::from(*x)),
        Field::UShort(x) => RawValue::Int(i64::from(*x)),
        Field::UInt(x) => RawValue::Int(i64::from(*x)),
        Field::ULong(x) => match i64::try_from(*x) {
            Ok(i) => RawValue::Int(i),
            Err(_) => RawValue::Num(*x as f64),
        },
        Field::Float16(x) => RawValue::Num(f64::from(*x)),
        Field::Float(x) => RawValue::Num(f64::from(*x)),
        Field::Double(x) => RawValue::Num(*x),
        Field::Decimal(d) => RawValue::Num(decimal_to_f64(d.data(), d.scale())),
        Field::Str(s) => RawValue::Str(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => RawValue::Str(s.to_string()),
            Err(_) => RawValue::Bytes(b.data().to_vec()),
        },
        Field::Date(d) => RawValue::Int(i64::from(*d)),
        Field::TimeMillis(t) => RawValue::Int(i64::from(*t)),
        Field::TimeMicros(t) => RawValue::Int(*t),
        Field::TimestampMillis(t) | Field::TimestampMicros(t) => RawValue::Int(*t),
        Field::ListInternal(list) if top => {
            let mut out = Vec::with_capacity(list.len());
            for f in list.elements() {
                out.push(to_value(f, false)?);
            }
            RawValue::List(out)
        }
        Field::ListInternal(_) => return Err("a list inside a list"),
        Field::Group(_) => return Err("a nested group (struct)"),
        Field::MapInternal(_) => return Err("a map"),
    })
}

/// A DECIMAL's unscaled big-endian two's-complement bytes and scale as the nearest `f64`.
fn decimal_to_f64(bytes: &[u8], scale: i32) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    if bytes.len() <= 16 {
        let mut v: i128 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
        for &b in bytes {
            v = (v << 8) | i128::from(b);
        }
        // Parsing the decimal text rounds once, correctly.
        return format!("{v}e{}", -i64::from(scale))
            .parse()
            .unwrap_or(f64::NAN);
    }
    let mut v = f64::from(bytes[0] as i8);
    for &b in &bytes[1..] {
        v = v * 256.0 + f64::from(b);
    }
    v / 10f64.powi(scale)
}

/// A row as JSON text, at most [`RAW_KEEP`] bytes (cut at a character boundary).
fn render_row(row: &Row) -> String {
    let mut text = serde_json::Value::Object(
        row.get_column_iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect(),
    )
    .to_string();
    if text.len() > RAW_KEEP {
        let mut cut = RAW_KEEP;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

fn to_json(field: &Field) -> serde_json::Value {
    use serde_json::Value;
    let num = |x: f64| {
        serde_json::Number::from_f64(x)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(x.to_string()))
    };
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(x) => Value::from(*x),
        Field::Short(x) => Value::from(*x),
        Field::Int(x) => Value::from(*x),
        Field::Long(x) => Value::from(*x),
        Field::UByte(x) => Value::from(*x),
        Field::UShort(x) => Value::from(*x),
        Field::UInt(x) => Value::from(*x),
        Field::ULong(x) => Value::from(*x),
        Field::Float16(x) => num(f64::from(*x)),
        Field::Float(x) => num(f64::from(*x)),
        Field::Double(x) => num(*x),
        Field::Decimal(d) => num(decimal_to_f64(d.data(), d.scale())),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => Value::String(String::from_utf8_lossy(b.data()).into_owned()),
        Field::Date(x) => Value::from(*x),
        Field::TimeMillis(x) => Value::from(*x),
        Field::TimeMicros(x) => Value::from(*x),
        Field::TimestampMillis(x) | Field::TimestampMicros(x) => Value::from(*x),
        Field::Group(row) => Value::Object(
            row.get_column_iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(to_json).collect()),
        Field::MapInternal(map) => Value::Array(
            map.entries()
                .iter()
                .map(|(k, v)| Value::Array(vec![to_json(k), to_json(v)]))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::decimal_to_f64;

    #[test]
    fn decimals() {
        assert_eq!(decimal_to_f64(&[0, 123], 2), 1.23);
        assert_eq!(decimal_to_f64(&[0xff, 0x85], 2), -1.23);
        assert_eq!(decimal_to_f64(&[], 2), 0.0);
        assert_eq!(decimal_to_f64(&[0, 0, 0, 5], 0), 5.0);
        assert_eq!(decimal_to_f64(&[0, 5], -2), 500.0);
        let mut big = vec![0xffu8; 20];
        big[19] = 0xfe; // -2
        assert_eq!(decimal_to_f64(&big, 1), -0.2);
    }
}
