//! Span readers: a span file in, raw records (or bad records) out, one at a time.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use evergreen_core::{RawRecord, RawValue};

use crate::{DataError, Format, SpanFile};

/// The `reason` strings a reader puts in a [`BadRecord`].
pub mod reason {
    /// A CSV row whose field count differs from the header's (or that the CSV parser rejected).
    pub const MALFORMED_ROW: &str = "malformed_row";
    /// A row or line that is not valid UTF-8.
    pub const INVALID_UTF8: &str = "invalid_utf8";
    /// A JSON Lines line that is not valid JSON or not a JSON object.
    pub const MALFORMED_JSON: &str = "malformed_json";
    /// A JSON Lines value that is an array or an object.
    pub const UNSUPPORTED_VALUE: &str = "unsupported_value";
    /// A VW, LibSVM or LibFFM line that does not follow its format (a token without `:`, a
    /// value or label that is not a number, a namespace with a reserved name); the detail names
    /// the offending token.
    pub const MALFORMED_LINE: &str = "malformed_line";
    /// A TFRecord record whose payload does not match its data CRC. The framing is intact, so
    /// reading continues with the next record; `raw` is the payload (at most 4 KiB), base64.
    pub const BAD_CRC: &str = "bad_crc";
    /// A TFRecord file that ends inside a record (header, payload or data CRC). The reader ends
    /// after this item; `raw` is the part of the payload that was there, base64.
    pub const TRUNCATED_RECORD: &str = "truncated_record";
    /// A TFRecord length that fails its CRC or exceeds the maximum record length. The rest of
    /// the file cannot be framed, so the reader ends after this item; `raw` is the 12-byte
    /// record header, base64.
    pub const BAD_LENGTH: &str = "bad_length";
    /// A TFRecord payload that is not a valid serialized `tf.train.Example` (truncated or
    /// overlong varint or length, invalid wire type, non-UTF-8 feature name). Reading
    /// continues; `raw` is the payload (at most 4 KiB), base64.
    pub const MALFORMED_EXAMPLE: &str = "malformed_example";
    /// A gzip-compressed TFRecord file whose compressed stream is corrupt (not merely cut
    /// short, which is [`TRUNCATED_RECORD`]). Nothing after it can be read, so the reader ends
    /// after this item; retrying would not help.
    pub const CORRUPT_GZIP: &str = "corrupt_gzip";
    /// An example-file (`.evgx`) record that does not decode (bad label byte, entry count,
    /// bucket or field out of range, non-finite value). Reading continues.
    pub const MALFORMED_RECORD: &str = "malformed_record";
    /// Reading the file failed part way. The reader ends after this item, so the span was
    /// **not** read to its end: treat the span as failed (retry it), do not just quarantine.
    pub const IO_ERROR: &str = "io_error";
    /// A Parquet row group whose pages cannot be decoded (corrupt or truncated page, bad
    /// compression, a value that cannot be converted). The rest of that row group is skipped;
    /// reading continues with the next row group.
    pub const CORRUPT_ROW_GROUP: &str = "corrupt_row_group";
    /// A Parquet row with a value of a type that has no raw value (a map, a nested group, a list
    /// of lists); the detail names the column. Reading continues; `raw` is the row as JSON.
    pub const UNSUPPORTED_TYPE: &str = "unsupported_type";
}

/// One record read from a span, with its position and original text (for quarantine).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    /// 1-based line number in the file where the record starts.
    pub line: u64,
    /// The record's values.
    pub record: RawRecord,
    /// The original text of the record, without its line terminator.
    pub raw: String,
}

/// A record the reader could not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Name of the span it came from.
    pub span: String,
    /// 1-based line number where it starts.
    pub line: u64,
    /// Why: one of the constants in [`reason`].
    pub reason: &'static str,
    /// Details for a person (expected vs got, the parser's message, the offending key).
    pub detail: String,
    /// The original text (invalid UTF-8 replaced by U+FFFD), without its line terminator.
    pub raw: String,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {}: {}: {}",
            self.span, self.line, self.reason, self.detail
        )
    }
}

/// Opens a span for reading.
///
/// Fails only when the file cannot be opened, (CSV) its header cannot be read or used, or
/// (Parquet) it is not a readable Parquet file; a bad
/// row is an `Err(BadRecord)` item of the reader and iteration continues with the next row.
pub fn open_span(file: &SpanFile) -> Result<SpanReader, DataError> {
    open_span_with(file, ReadOptions::default())
}

/// How spans are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Check the CRC32C of every TFRecord length and payload (on by default; turning it off
    /// trades corruption detection for speed).
    pub verify_crc: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self { verify_crc: true }
    }
}

/// [`open_span`] with explicit [`ReadOptions`].
pub fn open_span_with(file: &SpanFile, options: ReadOptions) -> Result<SpanReader, DataError> {
    open_span_counted(file, options, None)
}

/// A span file being read: every byte read from disk (compressed bytes for gzip) is added to
/// `progress`, for progress bars.
pub(crate) struct InputFile {
    file: File,
    progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl InputFile {
    /// Opens `path`, counting the bytes read into `progress`.
    pub(crate) fn open(
        path: &std::path::Path,
        progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    ) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            progress,
        })
    }

    /// The file and the progress counter, for readers that do their own counting (Parquet
    /// seeks, so it reads through its own counting chunk reader).
    pub(crate) fn into_parts(self) -> (File, Option<std::sync::Arc<std::sync::atomic::AtomicU64>>) {
        (self.file, self.progress)
    }
}

impl Read for InputFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(p) = &self.progress {
            p.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// [`open_span_with`], adding the bytes read from the file to `progress` as reading goes.
pub fn open_span_counted(
    file: &SpanFile,
    options: ReadOptions,
    progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<SpanReader, DataError> {
    let open_err = |source| DataError::Open {
        path: file.path.clone(),
        source,
    };
    let handle = InputFile {
        file: File::open(&file.path).map_err(open_err)?,
        progress,
    };
    let inner = match file.format {
        Format::Csv => match CsvRows::open(handle, &file.path)? {
            Some(rows) => Inner::Csv(Box::new(rows)),
            None => Inner::Done,
        },
        Format::Jsonl => Inner::Jsonl(JsonlLines {
            lines: LineReader::new(handle),
        }),
        Format::Tfrecord => Inner::Other(crate::tfrecord::open_tfrecord_rows(
            handle,
            &file.path,
            options.verify_crc,
        )?),
        Format::Vw => Inner::Other(crate::sparse_text::open_vw(handle, &file.path)?),
        Format::Libsvm => Inner::Other(crate::sparse_text::open_libsvm(handle, &file.path)?),
        Format::Libffm => Inner::Other(crate::sparse_text::open_libffm(handle, &file.path)?),
        Format::Examples => {
            return Err(DataError::Header {
                path: file.path.clone(),
                line: 1,
                detail: "an example file holds hashed feature vectors, not records: only the \
                         training pipeline (evergreen train / run) reads it"
                    .into(),
            });
        }
        Format::Parquet => Inner::Other(crate::parquet_file::open_parquet(handle, &file.path)?),
    };
    Ok(SpanReader {
        span: file.name.clone(),
        path: file.path.clone(),
        format: file.format,
        inner,
    })
}

/// Iterates the records of one span: `Ok(SourceRecord)` for a good record, `Err(BadRecord)` for
/// one that could not be parsed (iteration continues after it, except after
/// [`reason::IO_ERROR`], which ends it).
pub struct SpanReader {
    span: String,
    path: PathBuf,
    format: Format,
    inner: Inner,
}

enum Inner {
    Done,
    Csv(Box<CsvRows>),
    Jsonl(JsonlLines),
    Other(Box<dyn RowSource>),
}

impl SpanReader {
    /// The span's name.
    pub fn span(&self) -> &str {
        &self.span
    }

    /// The span's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The format being read.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The CSV header's column names (trimmed), `None` for JSON Lines or an empty CSV file.
    pub fn columns(&self) -> Option<&[String]> {
        match &self.inner {
            Inner::Csv(rows) => Some(&rows.header),
            _ => None,
        }
    }

    fn bad(&self, line: u64, reason: &'static str, detail: String, raw: String) -> BadRecord {
        BadRecord {
            span: self.span.clone(),
            line,
            reason,
            detail,
            raw,
        }
    }
}

impl fmt::Debug for SpanReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanReader")
            .field("span", &self.span)
            .field("path", &self.path)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// A format reader: produces one step at a time. CSV and JSON Lines are built in; the other
/// formats implement this in their own module.
pub(crate) trait RowSource: Send {
    /// The next record, bad record, failure or end.
    fn step(&mut self) -> Step;
}

/// What one step of a format reader produced.
pub(crate) enum Step {
    End,
    Record(SourceRecord),
    Bad {
        line: u64,
        reason: &'static str,
        detail: String,
        raw: String,
    },
    /// An IO error: reported once, then the reader is done.
    Failed {
        line: u64,
        error: io::Error,
    },
}

/// A record read and transformed by [`SpanReader::next_transformed`].
#[derive(Debug)]
pub(crate) enum Transformed {
    /// A good record: its features and label.
    Example {
        /// 1-based record (line) number.
        line: u64,
        /// Its features.
        features: evergreen_core::FeatureVector,
        /// Its label.
        label: f32,
    },
    /// A record that parsed but that the transform refused.
    Refused {
        /// 1-based record (line) number.
        line: u64,
        /// Why.
        error: evergreen_core::TransformError,
        /// Its original text.
        raw: String,
    },
    /// A record that could not be parsed, or the read failing (see [`SpanReader`]'s items).
    Bad(BadRecord),
}

impl SpanReader {
    /// The next record transformed by `t`, whose [`Layout`](evergreen_core::Layout) of this
    /// reader's columns is `layout` (`None` when the reader has no columns): the same result
    /// as transforming [`Iterator::next`]'s record, but a CSV row goes from its cells straight
    /// to features (no record is built, and its text is kept only when it is rejected).
    pub(crate) fn next_transformed(
        &mut self,
        t: &evergreen_core::Transformer,
        layout: Option<&evergreen_core::Layout>,
        pool: &mut crate::pipeline::FeaturePool,
    ) -> Option<Transformed> {
        if let (Inner::Csv(rows), Some(layout)) = (&mut self.inner, layout) {
            return match rows.step_example(t, layout, pool) {
                Ok(done) => Some(done),
                Err(step) => self.finish(step).map(|r| match r {
                    Ok(_) => unreachable!("a CSV example step never yields a record"),
                    Err(bad) => Transformed::Bad(bad),
                }),
            };
        }
        Some(match self.next()? {
            Ok(rec) => match t.example(&rec.record) {
                Ok((features, label)) => Transformed::Example {
                    line: rec.line,
                    features,
                    label,
                },
                Err(error) => Transformed::Refused {
                    line: rec.line,
                    error,
                    raw: rec.raw,
                },
            },
            Err(bad) => Transformed::Bad(bad),
        })
    }

    /// Turns a reader step into the iterator's item.
    fn finish(&mut self, step: Step) -> Option<Result<SourceRecord, BadRecord>> {
        match step {
            Step::End => {
                self.inner = Inner::Done;
                None
            }
            Step::Record(r) => Some(Ok(r)),
            Step::Bad {
                line,
                reason,
                detail,
                raw,
            } => Some(Err(self.bad(line, reason, detail, raw))),
            Step::Failed { line, error } => {
                self.inner = Inner::Done;
                tracing::warn!(span = %self.span, line, %error, "read failed part way through span");
                let detail = format!("reading {} failed: {error}", self.path.display());
                Some(Err(self.bad(line, reason::IO_ERROR, detail, String::new())))
            }
        }
    }
}

impl Iterator for SpanReader {
    type Item = Result<SourceRecord, BadRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        let step = match &mut self.inner {
            Inner::Done => return None,
            Inner::Csv(rows) => rows.step(),
            Inner::Jsonl(lines) => lines.step(),
            Inner::Other(rows) => rows.step(),
        };
        self.finish(step)
    }
}

impl std::iter::FusedIterator for SpanReader {}

// ---------------------------------------------------------------------------------------------
// CSV

/// Keeps the bytes the CSV parser has read but whose records have not been taken yet, so that a
/// record's original text can be cut out by its byte offsets. Holds at most the parser's buffer
/// plus the current record plus `COMPACT_AT`.
struct Capture {
    file: InputFile,
    bytes: Vec<u8>,
    /// File offset of `bytes[0]`.
    base: u64,
}

const COMPACT_AT: usize = 64 * 1024;

impl Read for Capture {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Capture {
    /// The bytes between two file offsets, if still held.
    fn slice(&self, start: u64, end: u64) -> Option<&[u8]> {
        let s = usize::try_from(start.checked_sub(self.base)?).ok()?;
        let e = usize::try_from(end.checked_sub(self.base)?).ok()?;
        self.bytes.get(s..e)
    }

    /// Forgets bytes before file offset `end` (lazily, to keep the copying cheap).
    fn release(&mut self, end: u64) {
        let Some(n) = end
            .checked_sub(self.base)
            .and_then(|n| usize::try_from(n).ok())
        else {
            return;
        };
        if n >= COMPACT_AT && n <= self.bytes.len() {
            self.bytes.drain(..n);
            self.base = end;
        }
    }
}

struct CsvRows {
    rdr: csv::Reader<Capture>,
    header: Vec<String>,
    /// The header's names, shared by every record (checked unique).
    names: Vec<evergreen_core::FieldName>,
    rec: csv::ByteRecord,
    /// 1-based line number at the parser's position.
    line: u64,
    /// Whether the last byte counted was a `\r` (so a `\n` next completes the same break).
    last_cr: bool,
}

/// Line breaks in `bytes` (`\r\n`, `\r`, `\n` each one), continuing a count whose last byte was
/// a `\r` when `last_cr` is set.
fn count_breaks(bytes: &[u8], last_cr: &mut bool) -> u64 {
    if !bytes.contains(&b'\r') {
        // `\n` endings only (the common case): count them in one pass.
        let mut n = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        if let Some(&first) = bytes.first() {
            if *last_cr && first == b'\n' {
                n -= 1;
            }
            *last_cr = false;
        }
        return n;
    }
    let mut n = 0;
    for &b in bytes {
        match b {
            b'\r' => {
                n += 1;
                *last_cr = true;
            }
            b'\n' => {
                if !*last_cr {
                    n += 1;
                }
                *last_cr = false;
            }
            _ => *last_cr = false,
        }
    }
    n
}

impl CsvRows {
    /// Reads the header. `None` for a file without one (empty or only blank lines).
    fn open(file: InputFile, path: &std::path::Path) -> Result<Option<CsvRows>, DataError> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(64 * 1024)
            .from_reader(Capture {
                file,
                bytes: Vec::new(),
                base: 0,
            });
        let mut rec = csv::ByteRecord::new();
        let got = rdr.read_byte_record(&mut rec).map_err(|e| {
            let detail = e.to_string();
            match e.into_kind() {
                csv::ErrorKind::Io(source) => DataError::Read {
                    path: path.to_path_buf(),
                    source,
                },
                _ => DataError::Header {
                    path: path.to_path_buf(),
                    line: 1,
                    detail,
                },
            }
        })?;
        if !got {
            return Ok(None);
        }
        let mut rows = CsvRows {
            rdr,
            header: Vec::new(),
            names: Vec::new(),
            rec,
            line: 1,
            last_cr: false,
        };
        let (line, _) = rows.take_text(false);
        let mut header = Vec::with_capacity(rows.rec.len());
        let mut seen = std::collections::HashSet::with_capacity(rows.rec.len());
        for (i, cell) in rows.rec.iter().enumerate() {
            let text = std::str::from_utf8(cell).map_err(|e| DataError::Header {
                path: path.to_path_buf(),
                line,
                detail: format!("column {} is not valid UTF-8: {e}", i + 1),
            })?;
            let text = if i == 0 {
                text.trim_start_matches('\u{feff}')
            } else {
                text
            };
            let name = text.trim().to_string();
            if !seen.insert(name.clone()) {
                return Err(DataError::DuplicateColumn {
                    path: path.to_path_buf(),
                    column: name,
                });
            }
            header.push(name);
        }
        rows.names = header
            .iter()
            .map(|h| evergreen_core::FieldName::from(h.as_str()))
            .collect();
        rows.header = header;
        Ok(Some(rows))
    }

    /// Reads the next row into `self.rec`; `Err` with the step to report when there is none
    /// (end, IO failure, a row the parser rejects).
    fn read_row(&mut self) -> Result<(), Step> {
        match self.rdr.read_byte_record(&mut self.rec) {
            Ok(false) => Err(Step::End),
            Ok(true) => Ok(()),
            Err(e) => {
                let line = self.line;
                let detail = e.to_string();
                Err(match e.into_kind() {
                    csv::ErrorKind::Io(error) => Step::Failed { line, error },
                    _ => Step::Bad {
                        line,
                        reason: reason::MALFORMED_ROW,
                        detail,
                        raw: String::new(),
                    },
                })
            }
        }
    }

    /// The bad-row step of a row whose field count differs from the header's.
    fn wrong_width(&self, line: u64, raw: String) -> Step {
        Step::Bad {
            line,
            reason: reason::MALFORMED_ROW,
            detail: format!(
                "expected {} fields (as in the header), got {}",
                self.header.len(),
                self.rec.len()
            ),
            raw,
        }
    }

    /// The next row transformed straight from its cells (see
    /// [`Transformer::example_of_cells`](evergreen_core::Transformer::example_of_cells)): the
    /// same outcome as transforming [`Self::step`]'s record, the same bad rows with the same
    /// reasons; `Err` with the step for the end, a failure or a bad row.
    fn step_example(
        &mut self,
        t: &evergreen_core::Transformer,
        layout: &evergreen_core::Layout,
        pool: &mut crate::pipeline::FeaturePool,
    ) -> Result<Transformed, Step> {
        self.read_row()?;
        if self.rec.len() != self.header.len() {
            let (line, raw) = self.take_text(true);
            return Err(self.wrong_width(line, raw));
        }
        // Each cell is checked once; rows of up to `MAX_CELLS` keep them on the stack.
        const MAX_CELLS: usize = 64;
        let mut features = pool.take();
        let outcome = {
            let rec = &self.rec;
            let wide = rec.len() > MAX_CELLS;
            let mut cells = [""; MAX_CELLS];
            let mut invalid = None;
            for (i, cell) in rec.iter().enumerate() {
                match std::str::from_utf8(cell) {
                    Ok(text) if !wide => cells[i] = text,
                    Ok(_) => {}
                    Err(e) => {
                        invalid = Some((i, e));
                        break;
                    }
                }
            }
            match invalid {
                Some(bad) => Err(bad),
                None if wide => Ok(t.example_of_cells_into(
                    layout,
                    |i| std::str::from_utf8(rec.get(i).unwrap_or_default()).unwrap_or(""),
                    &mut features,
                )),
                None => Ok(t.example_of_cells_into(layout, |i| cells[i], &mut features)),
            }
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err((i, e)) => {
                pool.give_back(features);
                let (line, raw) = self.take_text(true);
                return Err(Step::Bad {
                    line,
                    reason: reason::INVALID_UTF8,
                    detail: format!(
                        "field {} ({:?}) is not valid UTF-8: {e}",
                        i + 1,
                        self.names[i]
                    ),
                    raw,
                });
            }
        };
        match outcome {
            Ok(label) => {
                let (line, _) = self.take_text(false);
                Ok(Transformed::Example {
                    line,
                    features,
                    label,
                })
            }
            Err(error) => {
                pool.give_back(features);
                let (line, raw) = self.take_text(true);
                Ok(Transformed::Refused { line, error, raw })
            }
        }
    }

    fn step(&mut self) -> Step {
        if let Err(step) = self.read_row() {
            return step;
        }
        let (line, raw) = self.take_text(true);

        if self.rec.len() != self.header.len() {
            return self.wrong_width(line, raw);
        }
        let mut record = RawRecord::with_capacity(self.header.len());
        for (i, (name, cell)) in self.names.iter().zip(self.rec.iter()).enumerate() {
            let value = match std::str::from_utf8(cell) {
                Ok("") => RawValue::Missing,
                Ok(s) => RawValue::Str(s.to_string()),
                Err(e) => {
                    return Step::Bad {
                        line,
                        reason: reason::INVALID_UTF8,
                        detail: format!("field {} ({name:?}) is not valid UTF-8: {e}", i + 1),
                        raw,
                    };
                }
            };
            record.push_unique(name.clone(), value);
        }
        Step::Record(SourceRecord { line, record, raw })
    }

    /// The 1-based line and original text (when `keep`; else empty) of the record just read;
    /// moves the line count past it and lets the capture forget its bytes.
    ///
    /// The parser starts a record where the previous one ended, which can be before blank lines
    /// it skipped (and before the `\n` of a CRLF ending the previous record); those are stepped
    /// over here. Line breaks are counted as the parser treats them: `\r\n`, `\r` and `\n` each
    /// end a line.
    fn take_text(&mut self, keep: bool) -> (u64, String) {
        let start = self.rec.position().map_or(0, |p| p.byte());
        let end = self.rdr.position().byte();
        let Some(bytes) = self.rdr.get_ref().slice(start, end) else {
            // Not expected: the capture keeps everything from the record's start on.
            let line = self.line;
            self.line += 1;
            self.last_cr = false;
            return (
                line,
                if keep {
                    self.rebuilt_text()
                } else {
                    String::new()
                },
            );
        };
        let skip = bytes
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        let line = self.line + count_breaks(&bytes[..skip], &mut self.last_cr);
        self.line = line + count_breaks(&bytes[skip..], &mut self.last_cr);
        let mut body = &bytes[skip..];
        if let Some((&last, rest)) = body.split_last()
            && (last == b'\n' || last == b'\r')
        {
            body = rest;
        }
        let raw = if keep {
            String::from_utf8_lossy(body).into_owned()
        } else {
            String::new()
        };
        self.rdr.get_mut().release(end);
        (line, raw)
    }

    fn rebuilt_text(&self) -> String {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        if w.write_byte_record(&self.rec).is_err() {
            return String::new();
        }
        let bytes = w.into_inner().unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        text.trim_end_matches('\n').to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// JSON Lines

/// Line splitting shared by the line-oriented formats (JSON Lines, VW, LibSVM, LibFFM): 1-based
/// line numbers, `\n` or `\r\n` endings, a byte-order mark dropped on line 1, invalid UTF-8
/// reported as a bad record, IO errors as `Step::Failed`.
pub(crate) struct LineReader {
    rdr: BufReader<InputFile>,
    buf: Vec<u8>,
    line: u64,
}

/// One step of a [`LineReader`].
pub(crate) enum Line<'a> {
    /// A line of text (without its ending) and its number.
    Text(u64, &'a str),
    /// End of input, an IO failure, or a line that is not UTF-8.
    Done(Step),
}

impl LineReader {
    pub(crate) fn new(file: InputFile) -> Self {
        Self {
            rdr: BufReader::with_capacity(64 * 1024, file),
            buf: Vec::new(),
            line: 0,
        }
    }

    pub(crate) fn next_line(&mut self) -> Line<'_> {
        self.buf.clear();
        match self.rdr.read_until(b'\n', &mut self.buf) {
            Ok(0) => return Line::Done(Step::End),
            Ok(_) => {}
            Err(error) => {
                return Line::Done(Step::Failed {
                    line: self.line + 1,
                    error,
                });
            }
        }
        self.line += 1;
        let mut bytes = self.buf.as_slice();
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest;
        }
        if let Some(rest) = bytes.strip_suffix(b"\r") {
            bytes = rest;
        }
        if self.line == 1
            && let Some(rest) = bytes.strip_prefix("\u{feff}".as_bytes())
        {
            bytes = rest;
        }
        match std::str::from_utf8(bytes) {
            Ok(t) => Line::Text(self.line, t),
            Err(e) => Line::Done(Step::Bad {
                line: self.line,
                reason: reason::INVALID_UTF8,
                detail: format!("line is not valid UTF-8: {e}"),
                raw: String::from_utf8_lossy(bytes).into_owned(),
            }),
        }
    }
}

struct JsonlLines {
    lines: LineReader,
}

impl JsonlLines {
    fn step(&mut self) -> Step {
        loop {
            match self.lines.next_line() {
                Line::Done(step) => return step,
                Line::Text(_, text)
                    if text
                        .bytes()
                        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) => {}
                Line::Text(line, text) => return parse_json_line(line, text),
            }
        }
    }
}

fn parse_json_line(line: u64, text: &str) -> Step {
    let bad = |reason, detail| Step::Bad {
        line,
        reason,
        detail,
        raw: text.to_string(),
    };
    let (parsed, nonfinite) = match nonfinite::replace(text) {
        Some((patched, found)) => (serde_json::from_str::<Entries>(&patched), found),
        None => (serde_json::from_str::<Entries>(text), Vec::new()),
    };
    let entries = match parsed {
        Ok(Entries(entries)) => entries,
        Err(e) => return bad(reason::MALFORMED_JSON, e.to_string()),
    };
    let mut record = RawRecord::with_capacity(entries.len());
    for (i, (key, value)) in entries.into_iter().enumerate() {
        use serde_json::Value;
        let v = match value {
            Value::Null => match nonfinite.iter().find(|(idx, _)| *idx == i) {
                Some(&(_, x)) => RawValue::Num(x),
                None => RawValue::Missing,
            },
            Value::Bool(b) => RawValue::Str(if b { "true" } else { "false" }.to_string()),
            // Without serde_json's arbitrary_precision every number has an f64 value; a huge
            // integer rounds.
            Value::Number(n) => RawValue::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => RawValue::Str(s),
            Value::Array(_) => {
                return bad(
                    reason::UNSUPPORTED_VALUE,
                    format!(
                        "field {key:?} is an array; only numbers, strings, booleans and null are supported"
                    ),
                );
            }
            Value::Object(_) => {
                return bad(
                    reason::UNSUPPORTED_VALUE,
                    format!(
                        "field {key:?} is an object; only numbers, strings, booleans and null are supported"
                    ),
                );
            }
        };
        record.insert(key, v);
    }
    Step::Record(SourceRecord {
        line,
        record,
        raw: text.to_string(),
    })
}

/// A JSON object's entries in source order (duplicates kept; the record keeps the last value).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The non-standard bare tokens `NaN`, `Infinity` and `-Infinity` (as Python's `json` writes
/// them): replaced by `null` before parsing, remembering which top-level entry each stood for.
mod nonfinite {
    const TOKENS: [(&str, f64); 3] = [
        ("NaN", f64::NAN),
        ("Infinity", f64::INFINITY),
        ("-Infinity", f64::NEG_INFINITY),
    ];

    /// `None` when the line has no such token outside strings (the common case costs two
    /// substring searches). Otherwise the patched text and, for each token that was a value of
    /// the top-level object, the entry's index and the number.
    pub(super) fn replace(text: &str) -> Option<(String, Vec<(usize, f64)>)> {
        if !text.contains("NaN") && !text.contains("Infinity") {
            return None;
        }
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len() + 8);
        let mut found = Vec::new();
        let mut copied = 0;
        let (mut depth, mut entry) = (0usize, 0usize);
        let (mut in_str, mut escaped) = (false, false);
        // Last byte outside strings that is not whitespace.
        let mut prev = 0u8;
        let mut i = 0;
        let mut replaced = false;
        while i < b.len() {
            let c = b[i];
            if in_str {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    in_str = false;
                    prev = c;
                }
                i += 1;
                continue;
            }
            match c {
                b'"' => in_str = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth = depth.saturating_sub(1),
                b',' if depth == 1 => entry += 1,
                b'N' | b'I' | b'-' if depth >= 1 && matches!(prev, b':' | b',' | b'[') => {
                    let hit = TOKENS.iter().find(|(tok, _)| {
                        b[i..].starts_with(tok.as_bytes())
                            && b.get(i + tok.len()).is_none_or(|&n| {
                                matches!(n, b' ' | b'\t' | b'\r' | b'\n' | b',' | b'}' | b']')
                            })
                    });
                    if let Some(&(tok, x)) = hit {
                        out.push_str(&text[copied..i]);
                        out.push_str("null");
                        if depth == 1 {
                            found.push((entry, x));
                        }
                        i += tok.len();
                        copied = i;
                        prev = b'l';
                        replaced = true;
                        continue;
                    }
                }
                _ => {}
            }
            if !matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
                prev = c;
            }
            i += 1;
        }
        if !replaced {
            return None;
        }
        out.push_str(&text[copied..]);
        Some((out, found))
    }

    #[cfg(test)]
    mod tests {
        use super::replace;

        #[test]
        fn replaces_tokens_outside_strings_only() {
            let (t, f) =
                replace(r#"{"a":NaN,"b":"NaN","c": -Infinity ,"d":[Infinity],"e":Infinity}"#)
                    .unwrap();
            assert_eq!(t, r#"{"a":null,"b":"NaN","c": null ,"d":[null],"e":null}"#);
            assert_eq!(f.len(), 3);
            assert_eq!(f[0].0, 0);
            assert!(f[0].1.is_nan());
            assert_eq!(f[1], (2, f64::NEG_INFINITY));
            assert_eq!(f[2], (4, f64::INFINITY));
        }

        #[test]
        fn leaves_strings_and_non_tokens_alone() {
            assert!(replace(r#"{"a":"Infinity and NaN"}"#).is_none());
            assert!(replace(r#"{"a":"x\"NaN"}"#).is_none());
            assert!(replace(r#"{"a":NaNa}"#).is_none());
            assert!(replace(r#"{"NaN":1}"#).is_none());
            assert!(replace("NaN").is_none());
        }
    }
}

#[cfg(test)]
mod transformed_tests {
    use super::*;
    use evergreen_core::{FeatureSpec, Transformer};
    use proptest::prelude::*;

    /// What a reader produced for one record, comparable across the two paths.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Example(u64, Vec<u32>, Vec<u32>, Vec<u16>, f32),
        Refused(u64, String, String),
        Bad(u64, &'static str, String, String),
    }

    fn transformer() -> Transformer {
        let spec: FeatureSpec = serde_json::from_value(serde_json::json!({
            "hash_bits": 16, "label": {"column": "y"}, "bias": true,
            "numeric": [{"name": "a", "log": true}, {"name": "b", "buckets": [0.0, 2.0]},
                        {"name": "absent"}],
            "categorical": [{"name": "c"}, {"name": "d"}],
            "cross": [{"columns": ["c", "b"]}]
        }))
        .unwrap();
        Transformer::new(spec).unwrap()
    }

    fn outcome_of(t: Transformed) -> Outcome {
        match t {
            Transformed::Example {
                line,
                features,
                label,
            } => Outcome::Example(
                line,
                features.indices,
                features.values.iter().map(|v| v.to_bits()).collect(),
                features.fields,
                label,
            ),
            Transformed::Refused { line, error, raw } => {
                Outcome::Refused(line, error.to_string(), raw)
            }
            Transformed::Bad(b) => Outcome::Bad(b.line, b.reason, b.detail, b.raw),
        }
    }

    /// Cells that exercise every branch: numbers, text, blanks, padding, quotes (with a comma
    /// and a line break inside), labels good and bad, a value outside log's domain, invalid
    /// UTF-8.
    const CELLS: &[&[u8]] = &[
        b"",
        b"1",
        b"0",
        b"3.5",
        b"-2",
        b" 7 ",
        b"abc",
        b"NaN",
        b"inf",
        b"1e400",
        b"true",
        b"-1",
        b"maybe",
        b"\"q,uoted\"",
        b"\"two\nlines\"",
        b"\xff\xfe",
        b"x\xc3",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Reading CSV rows straight into features gives, record by record, what transforming
        /// the records the reader builds gives: same features, labels, line numbers, rejects,
        /// reasons and raw text.
        #[test]
        fn csv_rows_transformed_in_place_match_records_transformed(
            rows in proptest::collection::vec(
                (proptest::collection::vec(0..CELLS.len(), 4..7), 0u8..4), 0..40),
        ) {
            let mut text: Vec<u8> = b"y,a,b,c,d\n".to_vec();
            for (cells, ending) in &rows {
                for (i, &c) in cells.iter().enumerate() {
                    if i > 0 {
                        text.push(b',');
                    }
                    text.extend_from_slice(CELLS[c]);
                }
                text.extend_from_slice(match ending {
                    0 | 1 => b"\n",
                    2 => b"\r\n",
                    _ => b"\n\n",
                });
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("rows.csv");
            std::fs::write(&path, &text).unwrap();
            let file = SpanFile::at(&path, Format::Csv).unwrap();
            let t = transformer();

            let mut records = Vec::new();
            for item in open_span(&file).unwrap() {
                records.push(match item {
                    Ok(rec) => match t.example(&rec.record) {
                        Ok((features, label)) => outcome_of(Transformed::Example {
                            line: rec.line,
                            features,
                            label,
                        }),
                        Err(error) => outcome_of(Transformed::Refused {
                            line: rec.line,
                            error,
                            raw: rec.raw,
                        }),
                    },
                    Err(bad) => outcome_of(Transformed::Bad(bad)),
                });
            }
            let mut reader = open_span(&file).unwrap();
            let layout = reader.columns().map(|c| t.layout(c));
            prop_assert!(layout.is_some());
            let mut direct = Vec::new();
            let mut pool = crate::pipeline::FeaturePool::none();
            while let Some(item) = reader.next_transformed(&t, layout.as_ref(), &mut pool) {
                direct.push(outcome_of(item));
            }
            prop_assert_eq!(direct, records);
        }
    }
}
