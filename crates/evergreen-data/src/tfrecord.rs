//! TFRecord files: the framing (reader and writer, plain or gzip) and the `tf.train.Example`
//! codec ([`example`]), written by hand.
//!
//! # Framing
//!
//! A TFRecord file is a sequence of records, each
//!
//! ```text
//! u64 length (little-endian) | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)
//! ```
//!
//! where `masked_crc32c(x) = ((c >> 15) | (c << 17)).wrapping_add(0xa282ead8)` of the CRC-32C
//! (Castagnoli) `c` of `x`, all little-endian. A gzip-compressed file is the gzip of that byte
//! stream (one or more gzip members); [`TfRecordReader::open`] and span reading detect it from
//! the magic bytes `1f 8b`. To write one, give [`TfRecordWriter`] a
//! `flate2::write::GzEncoder` and call its `finish` at the end.
//!
//! # Errors
//!
//! [`TfRecordReader`] checks both CRCs (unless told not to) and reports, per record, with the
//! record's number and byte offset:
//!
//! - a data CRC mismatch ([`TfRecordError::DataCrc`]): the framing is intact, reading goes on
//!   with the next record;
//! - a length CRC mismatch or a length above the maximum ([`TfRecordError::LengthCrc`],
//!   [`TfRecordError::TooLong`]): nothing after it can be framed, the reader stops;
//! - a file ending inside a record ([`TfRecordError::Truncated`]), or a read error
//!   ([`TfRecordError::Io`]): the reader stops.
//!
//! A length is never trusted for an allocation: the payload buffer grows with the bytes actually
//! read.
//!
//! # Spans
//!
//! A TFRecord span holds one serialized `tf.train.Example` per record. Its rows are numbered by
//! record (1-based; the `line` of a record or bad record); a good record's `raw` text is empty
//! (it is only kept for bad records: base64 of the payload, at most 4 KiB of it). Bad records
//! carry the reasons `bad_crc`, `malformed_example` (reading goes on), `bad_length`,
//! `truncated_record` and `corrupt_gzip` (the span ends there); see [`crate::reason`].

pub mod example;

pub use example::{
    ExampleError, ExampleErrorKind, FeatureValues, decode_example, encode_example,
    encode_example_into,
};

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::DataError;
use crate::reader::{RowSource, SourceRecord, Step, reason};

/// The default maximum record length a reader accepts: 256 MiB.
pub const DEFAULT_MAX_RECORD_LEN: u64 = 256 << 20;

/// Size of the record header: length and its CRC.
const HEADER_LEN: usize = 12;

/// Bytes of a bad record's payload kept (base64-encoded) for the quarantine.
const RAW_KEEP: usize = 4096;

/// Read buffer for span files and decompressed streams.
const READ_BUF: usize = 256 * 1024;

/// The masked CRC-32C that TFRecord stores: `((c >> 15) | (c << 17)) + 0xa282ead8`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Where a record starts: its 1-based number and its byte offset in the (decompressed) record
/// stream, and the file when the reader knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPos {
    /// The file, when the reader was given one.
    pub path: Option<PathBuf>,
    /// 1-based record number.
    pub record: u64,
    /// Byte offset of the record's header in the record stream (after decompression).
    pub offset: u64,
}

impl fmt::Display for RecordPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        write!(f, "record {} at byte {}", self.record, self.offset)
    }
}

/// What went wrong reading a TFRecord file. Only [`TfRecordError::DataCrc`] lets the reader go
/// on (see [`TfRecordError::is_fatal`]).
#[derive(Debug, thiserror::Error)]
pub enum TfRecordError {
    /// The file could not be opened, or its first bytes (the gzip check) not read.
    #[error("cannot open TFRecord file {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The length field does not match its CRC: the rest of the file cannot be framed.
    #[error(
        "{at}: length CRC mismatch (stored {stored:#010x}, computed {computed:#010x}); the rest of the file cannot be framed"
    )]
    LengthCrc {
        /// The record.
        at: RecordPos,
        /// The CRC in the file.
        stored: u32,
        /// The CRC of the length bytes.
        computed: u32,
    },
    /// The length exceeds the reader's maximum: the rest of the file is not read.
    #[error("{at}: record length {len} exceeds the maximum of {max} bytes")]
    TooLong {
        /// The record.
        at: RecordPos,
        /// The length in the header.
        len: u64,
        /// The reader's maximum.
        max: u64,
    },
    /// The data does not match its CRC. The framing is intact: the next record can be read.
    #[error(
        "{at}: data CRC mismatch over {len} bytes (stored {stored:#010x}, computed {computed:#010x})"
    )]
    DataCrc {
        /// The record.
        at: RecordPos,
        /// The payload length.
        len: u64,
        /// The CRC in the file.
        stored: u32,
        /// The CRC of the payload.
        computed: u32,
    },
    /// The file ends inside a record.
    #[error("{at}: the file ends inside the record ({part}: {got} of {need} bytes)")]
    Truncated {
        /// The record.
        at: RecordPos,
        /// Which part was cut short: `header`, `payload` or `data CRC`.
        part: &'static str,
        /// Bytes of that part present.
        got: u64,
        /// Bytes of that part expected.
        need: u64,
    },
    /// Reading failed (for gzip files this includes a corrupt compressed stream).
    #[error("{at}: read failed: {source}")]
    Io {
        /// The record being read.
        at: RecordPos,
        /// The underlying error.
        source: io::Error,
    },
}

impl TfRecordError {
    /// Whether the reader stops after this error (everything but a data CRC mismatch).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, TfRecordError::DataCrc { .. })
    }

    /// The record the error is about (`None` for [`TfRecordError::Open`]).
    pub fn position(&self) -> Option<&RecordPos> {
        match self {
            TfRecordError::Open { .. } => None,
            TfRecordError::LengthCrc { at, .. }
            | TfRecordError::TooLong { at, .. }
            | TfRecordError::DataCrc { at, .. }
            | TfRecordError::Truncated { at, .. }
            | TfRecordError::Io { at, .. } => Some(at),
        }
    }
}

/// Reads records from a TFRecord stream, reusing one payload buffer.
///
/// [`TfRecordReader::next_record`] lends each payload; the [`Iterator`] implementation copies
/// it into a `Vec`. The reader reads the header, payload and CRC of each record with separate
/// small reads, so give it a buffered reader (as [`TfRecordReader::open`] does).
pub struct TfRecordReader<R> {
    inner: R,
    path: Option<PathBuf>,
    verify: bool,
    max_len: u64,
    /// Payload buffer; only `buf[..len]` belongs to the current record. Never shrinks.
    buf: Vec<u8>,
    len: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Number of the record last started (0 before the first).
    record: u64,
    /// Offset where the record last started.
    record_offset: u64,
    /// Offset of the next record.
    offset: u64,
    done: bool,
}

impl<R> fmt::Debug for TfRecordReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TfRecordReader")
            .field("path", &self.path)
            .field("verify", &self.verify)
            .field("max_len", &self.max_len)
            .field("record", &self.record)
            .field("offset", &self.offset)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl TfRecordReader<Box<dyn Read + Send>> {
    /// Opens a TFRecord file, plain or gzip-compressed (detected from its first two bytes),
    /// buffered. Errors name the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TfRecordError> {
        let path = path.as_ref();
        let open_err = |source| TfRecordError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let (stream, _) = decompressed(file).map_err(open_err)?;
        Ok(TfRecordReader::new(stream).with_path(path))
    }
}

impl<R: Read> TfRecordReader<R> {
    /// A reader of `inner` (not decompressed: see [`decompressed`]), verifying CRCs, with the
    /// default maximum record length.
    pub fn new(inner: R) -> Self {
        TfRecordReader {
            inner,
            path: None,
            verify: true,
            max_len: DEFAULT_MAX_RECORD_LEN,
            buf: Vec::new(),
            len: 0,
            header: [0; HEADER_LEN],
            header_len: 0,
            record: 0,
            record_offset: 0,
            offset: 0,
            done: false,
        }
    }

    /// Whether to check the length and data CRCs (default `true`).
    pub fn with_verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// The largest record length accepted (default [`DEFAULT_MAX_RECORD_LEN`]); a longer one is
    /// [`TfRecordError::TooLong`].
    pub fn with_max_len(mut self, max_len: u64) -> Self {
        self.max_len = max_len;
        self
    }

    /// The file named in errors.
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The 1-based number of the record last returned or reported (0 before the first).
    pub fn record_number(&self) -> u64 {
        self.record
    }

    /// The byte offset (in the decompressed stream) where that record starts.
    pub fn record_offset(&self) -> u64 {
        self.record_offset
    }

    /// The payload of the last record read: the whole of it after a good record or a
    /// [`TfRecordError::DataCrc`], the part that was there after a
    /// [`TfRecordError::Truncated`], otherwise empty.
    pub fn payload(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The header bytes (length and length CRC, up to 12) of the last record read.
    pub fn header(&self) -> &[u8] {
        &self.header[..self.header_len]
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn at(&self) -> RecordPos {
        RecordPos {
            path: self.path.clone(),
            record: self.record,
            offset: self.record_offset,
        }
    }

    fn fail(&mut self, error: TfRecordError) -> Option<Result<&[u8], TfRecordError>> {
        if error.is_fatal() {
            self.done = true;
        }
        Some(Err(error))
    }

    /// The next record's payload, `None` at the end of the stream (or after a fatal error).
    pub fn next_record(&mut self) -> Option<Result<&[u8], TfRecordError>> {
        if self.done {
            return None;
        }
        self.len = 0;
        self.header_len = 0;
        let mut header = [0u8; HEADER_LEN];
        let got = match read_full(&mut self.inner, &mut header) {
            Ok(n) => n,
            Err(source) => {
                self.record += 1;
                self.record_offset = self.offset;
                let at = self.at();
                return self.fail(TfRecordError::Io { at, source });
            }
        };
        if got == 0 {
            self.done = true;
            return None;
        }
        self.record += 1;
        self.record_offset = self.offset;
        self.header = header;
        self.header_len = got;
        if got < HEADER_LEN {
            let at = self.at();
            return self.fail(TfRecordError::Truncated {
                at,
                part: "header",
                got: got as u64,
                need: HEADER_LEN as u64,
            });
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&header[..8]);
        let len = u64::from_le_bytes(len_bytes);
        if self.verify {
            let stored = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
            let computed = masked_crc32c(&len_bytes);
            if stored != computed {
                let at = self.at();
                return self.fail(TfRecordError::LengthCrc {
                    at,
                    stored,
                    computed,
                });
            }
        }
        let len_usize = match usize::try_from(len) {
            Ok(n) if len <= self.max_len => n,
            _ => {
                let (at, max) = (self.at(), self.max_len);
                return self.fail(TfRecordError::TooLong { at, len, max });
            }
        };
        // Read the payload, growing the buffer with the data actually read (at most doubling),
        // so a bogus length never allocates more than twice the bytes present.
        let mut filled = 0usize;
        while filled < len_usize {
            let want = len_usize.min(self.buf.len().max(filled.saturating_mul(2)).max(64 * 1024));
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            match read_full(&mut self.inner, &mut self.buf[filled..want]) {
                Ok(n) => {
                    filled += n;
                    if filled < want {
                        self.len = filled;
                        let at = self.at();
                        return self.fail(TfRecordError::Truncated {
                            at,
                            part: "payload",
                            got: filled as u64,
                            need: len,
                        });
                    }
                }
                Err(source) => {
                    let at = self.at();
                    return self.fail(TfRecordError::Io { at, source });
                }
            }
        }
        self.len = len_usize;
        let mut crc = [0u8; 4];
        match read_full(&mut self.inner, &mut crc) {
            Ok(4) => {}
            Ok(got) => {
                let at = self.at();
                return self.fail(TfRecordError::Truncated {
                    at,
                    part: "data CRC",
                    got: got as u64,
                    need: 4,
                });
            }
            Err(source) => {
                let at = self.at();
                return self.fail(TfRecordError::Io { at, source });
            }
        }
        self.offset += (HEADER_LEN + 4) as u64 + len;
        if self.verify {
            let stored = u32::from_le_bytes(crc);
            let computed = masked_crc32c(&self.buf[..len_usize]);
            if stored != computed {
                let at = self.at();
                return self.fail(TfRecordError::DataCrc {
                    at,
                    len,
                    stored,
                    computed,
                });
            }
        }
        Some(Ok(&self.buf[..len_usize]))
    }
}

impl<R: Read> Iterator for TfRecordReader<R> {
    type Item = Result<Vec<u8>, TfRecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().map(|r| r.map(<[u8]>::to_vec))
    }
}

impl<R: Read> std::iter::FusedIterator for TfRecordReader<R> {}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The record stream of `inner`, buffered: decompressed when it starts with the gzip magic
/// bytes `1f 8b` (then the `bool` is `true`), as is otherwise. Reads the first two bytes.
pub fn decompressed<R: Read + Send + 'static>(
    mut inner: R,
) -> io::Result<(Box<dyn Read + Send>, bool)> {
    let mut magic = [0u8; 2];
    let n = read_full(&mut inner, &mut magic)?;
    let whole = io::Cursor::new(magic).take(n as u64).chain(inner);
    if n == 2 && magic == [0x1f, 0x8b] {
        let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(READ_BUF, whole));
        Ok((Box::new(BufReader::with_capacity(READ_BUF, gz)), true))
    } else {
        Ok((Box::new(BufReader::with_capacity(READ_BUF, whole)), false))
    }
}

/// Writes TFRecord framing to any [`Write`]: plain files, gzip (through a
/// `flate2::write::GzEncoder`), TensorBoard event files.
///
/// Each record is written with three `write_all` calls; give it a buffered writer.
#[derive(Debug)]
pub struct TfRecordWriter<W: Write> {
    inner: W,
    records: u64,
}

impl<W: Write> TfRecordWriter<W> {
    /// A writer appending records to `inner`.
    pub fn new(inner: W) -> Self {
        TfRecordWriter { inner, records: 0 }
    }

    /// Writes one record: length, length CRC, `data`, data CRC.
    pub fn write_record(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(&len);
        header[8..].copy_from_slice(&masked_crc32c(&len).to_le_bytes());
        self.inner.write_all(&header)?;
        self.inner.write_all(data)?;
        self.inner.write_all(&masked_crc32c(data).to_le_bytes())?;
        self.records += 1;
        Ok(())
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// Records written so far.
    pub fn records_written(&self) -> u64 {
        self.records
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The underlying writer, not flushed (this writer buffers nothing itself). For gzip, call
    /// the encoder's `finish` on it.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

// ---------------------------------------------------------------------------------------------
// Spans

/// Opens a TFRecord span (plain or gzip) as a row source, verifying CRCs.
/// Opens a TFRecord span (plain or gzip, detected from the content) as a row source; with
/// `verify_crc` false, neither CRC is checked.
pub(crate) fn open_tfrecord_rows(
    file: crate::reader::InputFile,
    path: &Path,
    verify_crc: bool,
) -> Result<Box<dyn RowSource>, DataError> {
    let (stream, gzip) = decompressed(file).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Box::new(TfRecordRows {
        reader: TfRecordReader::new(stream).with_verify(verify_crc),
        gzip,
        fields_hint: 0,
        names: example::Interner::default(),
    }))
}

struct TfRecordRows {
    reader: TfRecordReader<Box<dyn Read + Send>>,
    gzip: bool,
    /// Feature count of the last good record, reserved for the next.
    fields_hint: usize,
    names: example::Interner,
}

/// Base64 of at most [`RAW_KEEP`] bytes.
fn raw_text(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(&bytes[..bytes.len().min(RAW_KEEP)])
}

impl RowSource for TfRecordRows {
    fn step(&mut self) -> Step {
        let error = match self.reader.next_record() {
            None => return Step::End,
            Some(Ok(payload)) => {
                return match example::decode_example_with(
                    payload,
                    self.fields_hint,
                    &mut self.names,
                ) {
                    Ok(record) => {
                        self.fields_hint = record.len();
                        Step::Record(SourceRecord {
                            line: self.reader.record_number(),
                            record,
                            raw: String::new(),
                        })
                    }
                    Err(e) => Step::Bad {
                        line: self.reader.record_number(),
                        reason: reason::MALFORMED_EXAMPLE,
                        detail: format!(
                            "record {} at byte {}: {e}",
                            self.reader.record_number(),
                            self.reader.record_offset()
                        ),
                        raw: raw_text(self.reader.payload()),
                    },
                };
            }
            Some(Err(e)) => e,
        };
        frame_error(&self.reader, error, self.gzip)
    }
}

/// A framing error of a TFRecord file as a reader step: a bad record with its reason (bad CRC,
/// bad length, truncated record, corrupt gzip) or, for a plain IO error, a failure.
pub(crate) fn frame_error<R: Read>(
    reader: &TfRecordReader<R>,
    error: TfRecordError,
    gzip: bool,
) -> Step {
    let line = reader.record_number();
    let (reason, raw, detail) = match &error {
        TfRecordError::DataCrc { .. } => (
            reason::BAD_CRC,
            raw_text(reader.payload()),
            error.to_string(),
        ),
        TfRecordError::LengthCrc { .. } | TfRecordError::TooLong { .. } => (
            reason::BAD_LENGTH,
            raw_text(reader.header()),
            error.to_string(),
        ),
        TfRecordError::Truncated { .. } => (
            reason::TRUNCATED_RECORD,
            raw_text(reader.payload()),
            error.to_string(),
        ),
        // flate2 reports a gzip stream cut short as UnexpectedEof, and a corrupt one (bad
        // header, deflate data or trailer checksum) as InvalidInput/InvalidData: both are
        // properties of the file, not read failures that a retry could get past.
        TfRecordError::Io { at, source } if gzip => match source.kind() {
            io::ErrorKind::UnexpectedEof => (
                reason::TRUNCATED_RECORD,
                String::new(),
                format!("{at}: the gzip stream ends early ({source}): the file is truncated"),
            ),
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => (
                reason::CORRUPT_GZIP,
                String::new(),
                format!("{at}: corrupt gzip stream ({source}): nothing after it can be read"),
            ),
            _ => return io_failed(line, error),
        },
        TfRecordError::Io { .. } | TfRecordError::Open { .. } => return io_failed(line, error),
    };
    Step::Bad {
        line,
        reason,
        detail,
        raw,
    }
}

fn io_failed(line: u64, error: TfRecordError) -> Step {
    match error {
        TfRecordError::Io { source, .. } | TfRecordError::Open { source, .. } => Step::Failed {
            line,
            error: source,
        },
        other => Step::Failed {
            line,
            error: io::Error::other(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_of_known_values() {
        // CRC-32C check value.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // Values computed by the `tfrecord` Python package's `TFRecordWriter.masked_crc`.
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc32c(&3u64.to_le_bytes()), 0x0e49_99b0);
    }

    #[test]
    fn writer_output_matches_the_format() {
        let mut w = TfRecordWriter::new(Vec::new());
        w.write_record(b"abc").unwrap();
        assert_eq!(w.records_written(), 1);
        let out = w.into_inner();
        assert_eq!(out.len(), 12 + 3 + 4);
        assert_eq!(&out[..8], &3u64.to_le_bytes());
        assert_eq!(
            &out[8..12],
            &masked_crc32c(&3u64.to_le_bytes()).to_le_bytes()
        );
        assert_eq!(&out[12..15], b"abc");
        assert_eq!(&out[15..], &masked_crc32c(b"abc").to_le_bytes());
    }

    #[test]
    fn oversized_length_is_an_error_without_allocation() {
        let len = u64::MAX.to_le_bytes();
        let mut data = len.to_vec();
        data.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        let mut r = TfRecordReader::new(&data[..]).with_path("x.tfrecord");
        let e = r.next_record().unwrap().unwrap_err();
        assert!(
            matches!(e, TfRecordError::TooLong { len: u64::MAX, .. }),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "x.tfrecord: record 1 at byte 0: record length {} exceeds the maximum of {} bytes",
                u64::MAX,
                DEFAULT_MAX_RECORD_LEN
            )
        );
        assert!(r.next_record().is_none());
        assert_eq!(r.header(), &data[..]);
    }

    #[test]
    fn lying_length_under_the_maximum_grows_with_the_data() {
        // Claims 200 MiB, holds 10 bytes: the buffer stays small.
        let len = (200u64 << 20).to_le_bytes();
        let mut data = len.to_vec();
        data.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        data.extend_from_slice(b"0123456789");
        let mut r = TfRecordReader::new(&data[..]);
        let e = r.next_record().unwrap().unwrap_err();
        assert!(
            matches!(
                e,
                TfRecordError::Truncated {
                    part: "payload",
                    got: 10,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(r.payload(), b"0123456789");
        assert!(r.buf.len() <= 64 * 1024);
    }

    #[test]
    fn max_len_and_skip_verify() {
        let mut w = TfRecordWriter::new(Vec::new());
        w.write_record(b"hello").unwrap();
        w.write_record(b"hello, world").unwrap();
        let mut data = w.into_inner();
        let r = TfRecordReader::new(&data[..]).with_max_len(5);
        let got: Vec<_> = r.collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap(), b"hello");
        assert!(matches!(
            got[1],
            Err(TfRecordError::TooLong {
                len: 12,
                max: 5,
                ..
            })
        ));
        // Corrupt both CRCs of the first record: ignored without verification.
        data[8] ^= 1;
        data[12 + 5] ^= 1;
        let got: Vec<_> = TfRecordReader::new(&data[..])
            .with_verify(false)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, vec![b"hello".to_vec(), b"hello, world".to_vec()]);
    }
}
