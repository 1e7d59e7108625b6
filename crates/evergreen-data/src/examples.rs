//! Example files (`.evgx`): already-transformed examples (hashed feature vectors and labels),
//! the binary input that skips parsing and hashing, like Vowpal Wabbit's cache files.
//!
//! `evergreen data cache` writes them from any input through the pipeline; the pipeline reads
//! them back (on its reader threads, straight into examples) when a span or `evergreen train`
//! input has the `.evgx` extension or `data.format = "examples"`. A file is tied to the feature
//! spec it was written with: its header carries the spec's fingerprint, and a file written with
//! another spec is refused as a whole (bad input, the span is held back), never misread.
//!
//! Layout: TFRecord framing (`tfrecord.rs`; CRCs checked unless `data.verify_checksums = false`;
//! the file may be gzip-compressed, detected from its first bytes). Record 1 is the header:
//! magic `EVGX`, u32 version (1), u64 spec fingerprint, u8 `hash_bits`, u16 field count, all
//! little-endian. Every later record is one example: u8 label (0 or 1), LEB128 entry count, then
//! per entry LEB128 bucket index, LEB128 field id, and a value tag: `0` = value 1.0, `1` = an f32
//! (little-endian) follows. Positions (for quarantine and exactly-once accounting) number the
//! examples from 1, the header excluded.

use crate::pipeline::{Example, FeaturePool, Rejected};
use crate::reader::{InputFile, Step};
use crate::tfrecord::{TfRecordError, TfRecordReader, TfRecordWriter, decompressed, frame_error};
use crate::{BadRecord, reason};
use evergreen_core::FeatureVector;
use std::io::{self, Read, Write};

/// Header magic.
pub const EXAMPLES_MAGIC: &[u8; 4] = b"EVGX";
/// Current version of the example-file layout.
pub const EXAMPLES_VERSION: u32 = 1;
const HEADER_LEN: usize = 4 + 4 + 8 + 1 + 2;
/// Largest entry count of one example (as the transform's own bounds allow).
const MAX_ENTRIES: u64 = 1 << 20;

/// What an example file was written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExamplesHeader {
    /// `FeatureSpec::fingerprint` of the spec the examples were transformed with.
    pub spec_fingerprint: u64,
    /// The spec's `hash_bits`: every bucket index is below `2^hash_bits`.
    pub hash_bits: u8,
    /// The spec's field count: every field id is below it.
    pub fields: u16,
}

impl ExamplesHeader {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(EXAMPLES_MAGIC);
        out.extend_from_slice(&EXAMPLES_VERSION.to_le_bytes());
        out.extend_from_slice(&self.spec_fingerprint.to_le_bytes());
        out.push(self.hash_bits);
        out.extend_from_slice(&self.fields.to_le_bytes());
        out
    }

    /// Parses a header record.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != HEADER_LEN || &b[..4] != EXAMPLES_MAGIC {
            return Err("not an evergreen example file (no EVGX header record)".into());
        }
        let version = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
        if version == 0 || version > EXAMPLES_VERSION {
            return Err(format!(
                "example file version {version} is not supported (this build reads up to \
                 {EXAMPLES_VERSION})"
            ));
        }
        let hash_bits = b[16];
        if hash_bits == 0 || hash_bits > 32 {
            return Err(format!("header hash_bits {hash_bits} out of range"));
        }
        Ok(Self {
            spec_fingerprint: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            hash_bits,
            fields: u16::from_le_bytes(b[17..19].try_into().expect("2 bytes")),
        })
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &mut &[u8]) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            if shift == 63 && byte > 1 {
                return Err("varint overflows 64 bits");
            }
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes")
}

/// Appends the payload of one example record.
pub fn encode_example_record(x: &FeatureVector, label: f32, out: &mut Vec<u8>) {
    out.push(u8::from(label > 0.5));
    put_varint(out, x.len() as u64);
    for ((&i, &v), &f) in x.indices.iter().zip(&x.values).zip(&x.fields) {
        put_varint(out, u64::from(i));
        put_varint(out, u64::from(f));
        if v == 1.0 {
            out.push(0);
        } else {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Parses the payload of one example record written for `header`: every index below
/// `2^hash_bits`, every field below the field count, every value finite.
pub fn decode_example_record(
    b: &[u8],
    header: &ExamplesHeader,
) -> Result<(FeatureVector, f32), String> {
    let mut x = FeatureVector::default();
    let label = decode_example_record_into(b, header, &mut x)?;
    Ok((x, label))
}

/// [`decode_example_record`] into `x` (cleared first; its allocations are reused): returns the
/// label. `x` is unspecified after an error.
pub fn decode_example_record_into(
    mut b: &[u8],
    header: &ExamplesHeader,
    x: &mut FeatureVector,
) -> Result<f32, String> {
    x.clear();
    let (&label, rest) = b.split_first().ok_or("empty record")?;
    b = rest;
    if label > 1 {
        return Err(format!("label byte {label} is neither 0 nor 1"));
    }
    let n = get_varint(&mut b)?;
    // An entry takes at least 3 bytes: no allocation beyond what the record can hold.
    if n > MAX_ENTRIES || n > (b.len() / 3) as u64 {
        return Err(format!("entry count {n} does not fit the record"));
    }
    let dim = 1u64 << header.hash_bits;
    x.indices.reserve(n as usize);
    x.values.reserve(n as usize);
    x.fields.reserve(n as usize);
    for e in 0..n {
        let i = get_varint(&mut b)?;
        let f = get_varint(&mut b)?;
        if i >= dim {
            return Err(format!(
                "entry {e}: bucket {i} outside 2^{} buckets",
                header.hash_bits
            ));
        }
        if f >= u64::from(header.fields) {
            return Err(format!(
                "entry {e}: field {f} outside the {} fields",
                header.fields
            ));
        }
        let (&tag, rest) = b.split_first().ok_or("truncated entry")?;
        b = rest;
        let v = match tag {
            0 => 1.0,
            1 => {
                let (v, rest) = b.split_at_checked(4).ok_or("truncated value")?;
                b = rest;
                let v = f32::from_le_bytes(v.try_into().expect("4 bytes"));
                if !v.is_finite() {
                    return Err(format!("entry {e}: value {v} is not finite"));
                }
                v
            }
            t => return Err(format!("entry {e}: unknown value tag {t}")),
        };
        x.push_field(f as u16, i as u32, v);
    }
    if !b.is_empty() {
        return Err(format!("{} trailing bytes", b.len()));
    }
    Ok(f32::from(label))
}

/// Writes an example file: the header record first, then one record per example.
#[derive(Debug)]
pub struct ExamplesWriter<W: Write> {
    inner: TfRecordWriter<W>,
    buf: Vec<u8>,
    written: u64,
}

impl<W: Write> ExamplesWriter<W> {
    /// Starts a file for examples transformed with the spec described by `header`.
    pub fn new(inner: W, header: ExamplesHeader) -> io::Result<Self> {
        let mut inner = TfRecordWriter::new(inner);
        inner.write_record(&header.encode())?;
        Ok(Self {
            inner,
            buf: Vec::with_capacity(256),
            written: 0,
        })
    }

    /// Appends one example.
    pub fn write(&mut self, x: &FeatureVector, label: f32) -> io::Result<()> {
        self.buf.clear();
        encode_example_record(x, label, &mut self.buf);
        self.written += 1;
        self.inner.write_record(&self.buf)
    }

    /// Examples written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The underlying writer (flush it, or finish the gzip stream, before closing).
    pub fn into_inner(self) -> W {
        self.inner.into_inner()
    }
}

/// What reading one example-file shard produces, chunk by chunk.
pub(crate) enum ShardStep {
    /// Up to `chunk` examples and the bad records among them.
    Chunk(Vec<Example>, Vec<Rejected>),
    /// The end; `records` examples (good and bad) were read.
    Done(u64),
    /// The file cannot be used: `bad_input` for a content problem (header, spec), else IO.
    Failed { error: String, bad_input: bool },
}

/// Reads an example-file shard for the pipeline.
pub(crate) struct ExamplesShard {
    reader: TfRecordReader<Box<dyn Read + Send>>,
    gzip: bool,
    header: ExamplesHeader,
    shard: usize,
    name: String,
    records: u64,
}

impl ExamplesShard {
    /// Opens a shard and checks its header against the spec the pipeline transforms with.
    pub(crate) fn open(
        file: InputFile,
        path: &std::path::Path,
        name: &str,
        shard: usize,
        verify_crc: bool,
        expected: ExamplesHeader,
    ) -> Result<Self, (String, bool)> {
        let at = path.display();
        let (stream, gzip) = decompressed(file).map_err(|e| (format!("{at}: {e}"), false))?;
        let mut reader = TfRecordReader::new(stream).with_verify(verify_crc);
        let header = match reader.next_record() {
            None => return Err((format!("{at}: empty file: no example-file header"), true)),
            Some(Ok(h)) => ExamplesHeader::decode(h).map_err(|e| (format!("{at}: {e}"), true))?,
            Some(Err(TfRecordError::Io { source, .. })) if !gzip => {
                return Err((format!("{at}: {source}"), false));
            }
            Some(Err(e)) => return Err((format!("{at}: header record: {e}"), true)),
        };
        if header != expected {
            return Err((
                format!(
                    "{at}: written for another feature spec (fingerprint {:016x}, hash_bits {}, \
                     {} fields; the config's spec: {:016x}, {}, {}): rewrite it with \
                     `evergreen data cache` and this config",
                    header.spec_fingerprint,
                    header.hash_bits,
                    header.fields,
                    expected.spec_fingerprint,
                    expected.hash_bits,
                    expected.fields
                ),
                true,
            ));
        }
        Ok(Self {
            reader,
            gzip,
            header,
            shard,
            name: name.to_string(),
            records: 0,
        })
    }

    /// Passes over the first `n` records (good or bad) without decoding them: resuming after
    /// records delivered before. Errors only on an IO failure.
    pub(crate) fn skip(&mut self, n: u64) -> Result<(), String> {
        while self.records < n {
            match self.reader.next_record() {
                None => break,
                Some(Ok(_)) => self.records += 1,
                Some(Err(e)) => match frame_error(&self.reader, e, self.gzip) {
                    Step::Failed { error, .. } => return Err(format!("{}: {error}", self.name)),
                    Step::Bad { .. } => self.records += 1,
                    Step::End | Step::Record(_) => {}
                },
            }
        }
        Ok(())
    }

    /// The next chunk of at most `chunk` records.
    pub(crate) fn step(&mut self, chunk: usize, pool: &mut FeaturePool) -> ShardStep {
        let mut good = Vec::with_capacity(chunk);
        let mut bad = Vec::new();
        while good.len() + bad.len() < chunk {
            let error = match self.reader.next_record() {
                None => break,
                Some(Ok(payload)) => {
                    self.records += 1;
                    let position = self.records;
                    let mut features = pool.take();
                    match decode_example_record_into(payload, &self.header, &mut features) {
                        Ok(label) => good.push(Example {
                            shard: self.shard,
                            position,
                            features,
                            label,
                        }),
                        Err(detail) => bad.push(Rejected::Parse(BadRecord {
                            span: self.name.clone(),
                            line: position,
                            reason: reason::MALFORMED_RECORD,
                            detail: format!("example {position}: {detail}"),
                            raw: String::new(),
                        })),
                    }
                    continue;
                }
                Some(Err(e)) => e,
            };
            match frame_error(&self.reader, error, self.gzip) {
                Step::Bad {
                    reason,
                    detail,
                    raw,
                    ..
                } => {
                    self.records += 1;
                    bad.push(Rejected::Parse(BadRecord {
                        span: self.name.clone(),
                        line: self.records,
                        reason,
                        detail,
                        raw,
                    }));
                }
                Step::Failed { error, .. } => {
                    return ShardStep::Failed {
                        error: format!("{}: {error}", self.name),
                        bad_input: false,
                    };
                }
                Step::End | Step::Record(_) => {}
            }
        }
        if good.is_empty() && bad.is_empty() {
            ShardStep::Done(self.records)
        } else {
            ShardStep::Chunk(good, bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> ExamplesHeader {
        ExamplesHeader {
            spec_fingerprint: 42,
            hash_bits: 10,
            fields: 4,
        }
    }

    #[test]
    fn records_round_trip_exactly() {
        let mut x = FeatureVector::default();
        x.push_field(0, 5, 1.0);
        x.push_field(3, 1023, -0.25);
        x.push_field(2, 5, 1.0);
        let mut b = Vec::new();
        encode_example_record(&x, 1.0, &mut b);
        assert_eq!(decode_example_record(&b, &header()).unwrap(), (x, 1.0));
        let h = header();
        assert_eq!(ExamplesHeader::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn out_of_range_and_malformed_records_are_refused() {
        let mut x = FeatureVector::default();
        x.push_field(0, 1024, 1.0);
        let mut b = Vec::new();
        encode_example_record(&x, 0.0, &mut b);
        assert!(
            decode_example_record(&b, &header())
                .unwrap_err()
                .contains("bucket")
        );
        let mut x = FeatureVector::default();
        x.push_field(4, 1, 1.0);
        b.clear();
        encode_example_record(&x, 0.0, &mut b);
        assert!(
            decode_example_record(&b, &header())
                .unwrap_err()
                .contains("field")
        );
        for bad in [
            &[][..],
            &[2, 0][..],
            &[0, 1][..],
            &[0, 0, 9][..],
            &[0, 200, 200, 200][..],
        ] {
            assert!(decode_example_record(bad, &header()).is_err(), "{bad:?}");
        }
        let mut x = FeatureVector::default();
        x.push_field(1, 1, f32::NAN);
        b.clear();
        encode_example_record(&x, 0.0, &mut b);
        assert!(decode_example_record(&b, &header()).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_example_record(&b, &header());
            let _ = ExamplesHeader::decode(&b);
        }

        #[test]
        fn any_vector_round_trips(
            entries in proptest::collection::vec((0u32..1024, 0u16..4, -1e6f32..1e6), 0..40),
            label in any::<bool>(),
        ) {
            let mut x = FeatureVector::default();
            for (i, f, v) in entries {
                x.push_field(f, i, v);
            }
            let y = if label { 1.0 } else { 0.0 };
            let mut b = Vec::new();
            encode_example_record(&x, y, &mut b);
            prop_assert_eq!(decode_example_record(&b, &header()).unwrap(), (x, y));
        }
    }
}
