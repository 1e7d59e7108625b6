//! `tf.train.Example` protobuf decoding (straight into a [`RawRecord`]) and encoding, written
//! by hand against the wire format: no generated code, no intermediate message objects.
//!
//! The messages (from TensorFlow's `example.proto` and `feature.proto`, proto3):
//!
//! ```text
//! Example   { Features features = 1; }
//! Features  { map<string, Feature> feature = 1; }      // entry: key = 1, value = 2
//! Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
//!                          Int64List int64_list = 3; } }
//! BytesList { repeated bytes value = 1; }
//! FloatList { repeated float value = 1 [packed = true]; }
//! Int64List { repeated int64 value = 1 [packed = true]; }
//! ```
//!
//! Decoding follows protobuf's parsing rules: packed and unpacked encodings of the float and
//! int64 lists are both accepted; unknown fields (and known field numbers with an unexpected
//! wire type) of every wire type, groups included, are skipped; a message field that occurs
//! twice is merged (lists concatenate); of a `oneof`, the last member wins; of a map key that
//! occurs twice, the last entry wins. Anything that cannot be parsed (a truncated or overlong
//! varint, a length past the end of its message, wire types 6 and 7, a mismatched group end, a
//! feature name that is not UTF-8) is an [`ExampleError`] with its byte offset: never a panic,
//! and no allocation larger than the input.
//!
//! Values map to [`RawValue`]s so: a list with exactly one value is that value
//! ([`RawValue::Bytes`], [`RawValue::Num`] (float32 widened exactly to f64) or
//! [`RawValue::Int`]), a list with several is a [`RawValue::List`] of them, an empty list or a
//! feature with no kind set is [`RawValue::Missing`].

use std::fmt;

use evergreen_core::{FieldName, RawRecord, RawValue};

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// How deeply groups may nest inside an unknown field (protobuf's own default limit is 100).
const MAX_GROUP_DEPTH: u32 = 64;

/// The values of one feature, for [`encode_example`] (and to state the mapping to
/// [`RawValue`] with [`FeatureValues::to_raw`]).
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValues {
    /// A `bytes_list`.
    Bytes(Vec<Vec<u8>>),
    /// A `float_list`.
    Float(Vec<f32>),
    /// An `int64_list`.
    Int64(Vec<i64>),
    /// A `Feature` whose `kind` is not set (an empty `Feature` message).
    NoKind,
}

impl FeatureValues {
    /// The value [`decode_example`] produces for this feature: one value as itself, several as
    /// a [`RawValue::List`], none (or no kind) as [`RawValue::Missing`].
    pub fn to_raw(&self) -> RawValue {
        fn collapse(mut v: Vec<RawValue>) -> RawValue {
            match v.len() {
                0 => RawValue::Missing,
                1 => v.pop().unwrap_or(RawValue::Missing),
                _ => RawValue::List(v),
            }
        }
        match self {
            FeatureValues::Bytes(v) => {
                collapse(v.iter().map(|b| RawValue::Bytes(b.clone())).collect())
            }
            FeatureValues::Float(v) => {
                collapse(v.iter().map(|&x| RawValue::Num(f64::from(x))).collect())
            }
            FeatureValues::Int64(v) => collapse(v.iter().map(|&x| RawValue::Int(x)).collect()),
            FeatureValues::NoKind => RawValue::Missing,
        }
    }
}

/// What is wrong with a serialized `tf.train.Example`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed tf.train.Example at byte {offset}: {kind}")]
pub struct ExampleError {
    /// Byte offset in the serialized example where the offending element starts.
    pub offset: usize,
    /// What is wrong there.
    pub kind: ExampleErrorKind,
}

/// The kinds of [`ExampleError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExampleErrorKind {
    /// The data ends inside a varint.
    TruncatedVarint,
    /// A varint longer than 10 bytes.
    OverlongVarint,
    /// A field key with field number 0 or above 2^29 - 1.
    InvalidTag(u64),
    /// Wire type 6 or 7, or an end-group marker that closes nothing.
    InvalidWireType(u8),
    /// A length-delimited or fixed-size field that runs past the end of its message.
    Truncated {
        /// Bytes the field needs.
        need: u64,
        /// Bytes left in the enclosing message.
        have: u64,
    },
    /// A group that is not closed, or closed with another field number.
    UnterminatedGroup(u32),
    /// Groups nested more deeply than 64 levels.
    TooDeep,
    /// A packed float list whose length is not a multiple of 4.
    PackedFloatLength(u64),
    /// A feature name that is not valid UTF-8 (the offset is that of the first invalid byte).
    InvalidUtf8Key,
}

impl fmt::Display for ExampleErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TruncatedVarint => f.write_str("the data ends inside a varint"),
            Self::OverlongVarint => f.write_str("varint longer than 10 bytes"),
            Self::InvalidTag(t) => write!(f, "invalid field key {t} (field number 0 or too large)"),
            Self::InvalidWireType(w) => write!(f, "invalid wire type {w}"),
            Self::Truncated { need, have } => write!(
                f,
                "field needs {need} bytes but its message has {have} left"
            ),
            Self::UnterminatedGroup(n) => write!(f, "group of field {n} is not closed"),
            Self::TooDeep => write!(f, "groups nested more than {MAX_GROUP_DEPTH} deep"),
            Self::PackedFloatLength(n) => {
                write!(f, "packed float list of {n} bytes (not a multiple of 4)")
            }
            Self::InvalidUtf8Key => f.write_str("feature name is not valid UTF-8"),
        }
    }
}

/// A read position inside one message: `b[pos..end]` is what is left of it. Offsets in errors
/// are positions in `b`, the whole serialized example.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
    end: usize,
}

type Res<T> = Result<T, ExampleError>;

fn err<T>(offset: usize, kind: ExampleErrorKind) -> Res<T> {
    Err(ExampleError { offset, kind })
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cur {
            b,
            pos: 0,
            end: b.len(),
        }
    }

    fn more(&self) -> bool {
        self.pos < self.end
    }

    #[inline]
    fn varint(&mut self) -> Res<u64> {
        // Fast path: field keys, lengths and small values fit in one byte.
        if let Some(&byte) = self.b[..self.end].get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Res<u64> {
        let start = self.pos;
        let mut x = 0u64;
        for i in 0..10 {
            if self.pos >= self.end {
                return err(start, ExampleErrorKind::TruncatedVarint);
            }
            let byte = self.b[self.pos];
            self.pos += 1;
            // The 10th byte contributes its lowest bit only; higher bits overflow and are
            // dropped, as protobuf's own parsers do.
            x |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(x);
            }
        }
        err(start, ExampleErrorKind::OverlongVarint)
    }

    /// A field key: (field number, wire type).
    #[inline]
    fn tag(&mut self) -> Res<(u32, u8)> {
        let start = self.pos;
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > (1 << 29) - 1 {
            return err(start, ExampleErrorKind::InvalidTag(key));
        }
        Ok((field as u32, (key & 7) as u8))
    }

    fn take(&mut self, n: u64) -> Res<usize> {
        let have = (self.end - self.pos) as u64;
        if n > have {
            return err(self.pos, ExampleErrorKind::Truncated { need: n, have });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(start)
    }

    /// A length-delimited field's content, as a cursor over it.
    fn len_delimited(&mut self) -> Res<Cur<'a>> {
        let n = self.varint()?;
        let start = self.take(n)?;
        Ok(Cur {
            b: self.b,
            pos: start,
            end: self.pos,
        })
    }

    fn bytes(&self) -> &'a [u8] {
        &self.b[self.pos..self.end]
    }

    fn fixed32(&mut self) -> Res<[u8; 4]> {
        let start = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.b[start..start + 4]);
        Ok(a)
    }

    /// Skips the value of a field whose key (at `key_at`) was just read.
    fn skip(&mut self, key_at: usize, field: u32, wire: u8, depth: u32) -> Res<()> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return err(key_at, ExampleErrorKind::TooDeep);
                }
                while self.more() {
                    let at = self.pos;
                    let (f, w) = self.tag()?;
                    if w == END_GROUP {
                        if f == field {
                            return Ok(());
                        }
                        return err(at, ExampleErrorKind::UnterminatedGroup(field));
                    }
                    self.skip(at, f, w, depth + 1)?;
                }
                err(key_at, ExampleErrorKind::UnterminatedGroup(field))
            }
            other => err(key_at, ExampleErrorKind::InvalidWireType(other)),
        }
    }
}

/// Decodes a serialized `tf.train.Example` into a record (features in wire order).
pub fn decode_example(bytes: &[u8]) -> Result<RawRecord, ExampleError> {
    decode_example_with(bytes, 0, &mut Interner::default())
}

/// Shares feature names across the records of one reader: a name seen before is an `Arc`
/// clone instead of a new string. Bounded: past [`Interner::MAX`] names, new ones are not kept.
#[derive(Debug, Default)]
pub struct Interner {
    names: std::collections::HashMap<Box<str>, FieldName>,
}

impl Interner {
    /// Most names kept.
    pub const MAX: usize = 4096;

    /// The shared name for `s`.
    pub fn get(&mut self, s: &str) -> FieldName {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n: FieldName = FieldName::from(s);
        if self.names.len() < Self::MAX {
            self.names.insert(s.into(), n.clone());
        }
        n
    }
}

/// [`decode_example`] with room for `fields` features reserved up front and names interned.
pub fn decode_example_with(
    bytes: &[u8],
    fields: usize,
    names: &mut Interner,
) -> Result<RawRecord, ExampleError> {
    let mut record = RawRecord::with_capacity(fields);
    let mut c = Cur::new(bytes);
    while c.more() {
        let at = c.pos;
        match c.tag()? {
            (1, LEN) => decode_features(c.len_delimited()?, &mut record, names)?,
            (f, w) => c.skip(at, f, w, 0)?,
        }
    }
    Ok(record)
}

fn decode_features(mut c: Cur<'_>, record: &mut RawRecord, names: &mut Interner) -> Res<()> {
    while c.more() {
        let at = c.pos;
        match c.tag()? {
            (1, LEN) => decode_entry(c.len_delimited()?, record, names)?,
            (f, w) => c.skip(at, f, w, 0)?,
        }
    }
    Ok(())
}

/// Which list a feature holds so far (`oneof kind`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    Bytes,
    Float,
    Int64,
}

fn decode_entry(mut c: Cur<'_>, record: &mut RawRecord, names: &mut Interner) -> Res<()> {
    let mut key = "";
    let mut kind = Kind::None;
    let mut value = RawValue::Missing;
    while c.more() {
        let at = c.pos;
        match c.tag()? {
            (1, LEN) => {
                let k = c.len_delimited()?;
                key = std::str::from_utf8(k.bytes()).map_err(|e| ExampleError {
                    offset: k.pos + e.valid_up_to(),
                    kind: ExampleErrorKind::InvalidUtf8Key,
                })?;
            }
            (2, LEN) => decode_feature(c.len_delimited()?, &mut kind, &mut value)?,
            (f, w) => c.skip(at, f, w, 0)?,
        }
    }
    record.insert(names.get(key), value);
    Ok(())
}

fn decode_feature(mut c: Cur<'_>, kind: &mut Kind, value: &mut RawValue) -> Res<()> {
    while c.more() {
        let at = c.pos;
        let (f, w) = c.tag()?;
        let k = match (f, w) {
            (1, LEN) => Kind::Bytes,
            (2, LEN) => Kind::Float,
            (3, LEN) => Kind::Int64,
            _ => {
                c.skip(at, f, w, 0)?;
                continue;
            }
        };
        // Another member of the oneof replaces the value; the same one merges into it.
        if *kind != k {
            *kind = k;
            *value = RawValue::Missing;
        }
        let list = c.len_delimited()?;
        match k {
            Kind::Bytes => decode_bytes_list(list, value)?,
            Kind::Float => decode_float_list(list, value)?,
            Kind::Int64 => decode_int64_list(list, value)?,
            Kind::None => {}
        }
    }
    Ok(())
}

/// Appends one value: the first stays a scalar, the second turns it into a list.
fn push(value: &mut RawValue, x: RawValue) {
    match value {
        RawValue::Missing => *value = x,
        RawValue::List(v) => v.push(x),
        single => {
            let first = std::mem::replace(single, RawValue::Missing);
            *single = RawValue::List(vec![first, x]);
        }
    }
}

/// Makes room for `n` more values (`n` is bounded by the input length).
fn reserve(value: &mut RawValue, n: usize) {
    match value {
        RawValue::Missing if n > 1 => *value = RawValue::List(Vec::with_capacity(n)),
        RawValue::Missing => {}
        RawValue::List(v) => v.reserve(n),
        single if n > 0 => {
            let first = std::mem::replace(single, RawValue::Missing);
            let mut v = Vec::with_capacity(n + 1);
            v.push(first);
            *single = RawValue::List(v);
        }
        _ => {}
    }
}

fn decode_bytes_list(mut c: Cur<'_>, value: &mut RawValue) -> Res<()> {
    while c.more() {
        let at = c.pos;
        match c.tag()? {
            (1, LEN) => push(value, RawValue::Bytes(c.len_delimited()?.bytes().to_vec())),
            (f, w) => c.skip(at, f, w, 0)?,
        }
    }
    Ok(())
}

fn decode_float_list(mut c: Cur<'_>, value: &mut RawValue) -> Res<()> {
    while c.more() {
        let at = c.pos;
        match c.tag()? {
            (1, FIXED32) => push(
                value,
                RawValue::Num(f64::from(f32::from_le_bytes(c.fixed32()?))),
            ),
            (1, LEN) => {
                let packed = c.len_delimited()?;
                let data = packed.bytes();
                if data.len() % 4 != 0 {
                    return err(
                        packed.pos,
                        ExampleErrorKind::PackedFloatLength(data.len() as u64),
                    );
                }
                reserve(value, data.len() / 4);
                for chunk in data.chunks_exact(4) {
                    let x = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    push(value, RawValue::Num(f64::from(x)));
                }
            }
            (f, w) => c.skip(at, f, w, 0)?,
        }
    }
    Ok(())
}

fn decode_int64_list(mut c: Cur<'_>, value: &mut RawValue) -> Res<()> {
    while c.more() {
        let at = c.pos;
        match c.tag()? {
            (1, VARINT) => push(value, RawValue::Int(c.varint()? as i64)),
            (1, LEN) => {
                let mut packed = c.len_delimited()?;
                // Every varint ends with exactly one byte below 0x80.
                reserve(value, packed.bytes().iter().filter(|&&b| b < 0x80).count());
                while packed.more() {
                    push(value, RawValue::Int(packed.varint()? as i64));
                }
            }
            (f, w) => c.skip(at, f, w, 0)?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn varint_len(x: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Length of a length-delimited field (one-byte key) holding `n` bytes.
fn field_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

fn put_field_header(out: &mut Vec<u8>, field: u8, n: usize) {
    out.push((field << 3) | LEN);
    put_varint(out, n as u64);
}

fn packed_int64_len(v: &[i64]) -> usize {
    v.iter().map(|&x| varint_len(x as u64)).sum()
}

/// Length of the list message (`BytesList`, `FloatList`, `Int64List`) of a feature.
fn list_len(values: &FeatureValues) -> usize {
    match values {
        FeatureValues::Bytes(v) => v.iter().map(|b| field_len(b.len())).sum(),
        FeatureValues::Float(v) if v.is_empty() => 0,
        FeatureValues::Float(v) => field_len(4 * v.len()),
        FeatureValues::Int64(v) if v.is_empty() => 0,
        FeatureValues::Int64(v) => field_len(packed_int64_len(v)),
        FeatureValues::NoKind => 0,
    }
}

/// Length of the `Feature` message.
fn feature_len(values: &FeatureValues) -> usize {
    match values {
        FeatureValues::NoKind => 0,
        v => field_len(list_len(v)),
    }
}

fn entry_len(key: &str, values: &FeatureValues) -> usize {
    field_len(key.len()) + field_len(feature_len(values))
}

/// Encodes a `tf.train.Example` as TensorFlow serializes it (packed float and int64 lists),
/// features in the given order. A name given twice yields two map entries; readers keep the
/// last.
pub fn encode_example<S: AsRef<str>>(features: &[(S, FeatureValues)]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_example_into(features, &mut out);
    out
}

/// [`encode_example`] appending to `out` (to reuse one buffer for many examples).
pub fn encode_example_into<S: AsRef<str>>(features: &[(S, FeatureValues)], out: &mut Vec<u8>) {
    let features_len: usize = features
        .iter()
        .map(|(k, v)| field_len(entry_len(k.as_ref(), v)))
        .sum();
    out.reserve(field_len(features_len));
    put_field_header(out, 1, features_len);
    for (key, values) in features {
        let key = key.as_ref();
        put_field_header(out, 1, entry_len(key, values));
        put_field_header(out, 1, key.len());
        out.extend_from_slice(key.as_bytes());
        put_field_header(out, 2, feature_len(values));
        let field = match values {
            FeatureValues::Bytes(_) => 1,
            FeatureValues::Float(_) => 2,
            FeatureValues::Int64(_) => 3,
            FeatureValues::NoKind => continue,
        };
        put_field_header(out, field, list_len(values));
        match values {
            FeatureValues::Bytes(v) => {
                for b in v {
                    put_field_header(out, 1, b.len());
                    out.extend_from_slice(b);
                }
            }
            FeatureValues::Float(v) if !v.is_empty() => {
                put_field_header(out, 1, 4 * v.len());
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            FeatureValues::Int64(v) if !v.is_empty() => {
                put_field_header(out, 1, packed_int64_len(v));
                for &x in v {
                    put_varint(out, x as u64);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, RawValue)]) -> RawRecord {
        pairs.iter().cloned().collect()
    }

    #[test]
    fn varint_len_matches_encoding() {
        for x in [
            0,
            1,
            127,
            128,
            16383,
            16384,
            u64::MAX,
            1 << 63,
            (1 << 63) - 1,
        ] {
            let mut v = Vec::new();
            put_varint(&mut v, x);
            assert_eq!(v.len(), varint_len(x), "{x}");
            let mut c = Cur::new(&v);
            assert_eq!(c.varint().unwrap(), x);
            assert!(!c.more());
        }
    }

    #[test]
    fn encodes_like_tensorflow() {
        // tf.train.Example(features=tf.train.Features(feature={"a": tf.train.Feature(
        //   int64_list=tf.train.Int64List(value=[-5]))})).SerializeToString()
        let want =
            b"\n\x15\n\x13\n\x01a\x12\x0e\x1a\x0c\n\n\xfb\xff\xff\xff\xff\xff\xff\xff\xff\x01";
        assert_eq!(
            encode_example(&[("a", FeatureValues::Int64(vec![-5]))]),
            want.to_vec()
        );
        assert_eq!(
            decode_example(want).unwrap(),
            rec(&[("a", RawValue::Int(-5))])
        );
    }

    #[test]
    fn empty_input_is_an_empty_example() {
        assert!(decode_example(b"").unwrap().is_empty());
        assert!(
            decode_example(&encode_example::<&str>(&[]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn maps_lists_to_values() {
        let bytes = encode_example(&[
            ("one", FeatureValues::Bytes(vec![b"x".to_vec()])),
            ("two", FeatureValues::Bytes(vec![b"x".to_vec(), vec![]])),
            ("none", FeatureValues::Bytes(vec![])),
            ("f", FeatureValues::Float(vec![0.1])),
            ("fs", FeatureValues::Float(vec![0.1, -2.0])),
            ("fe", FeatureValues::Float(vec![])),
            ("i", FeatureValues::Int64(vec![i64::MIN])),
            ("is", FeatureValues::Int64(vec![1, i64::MAX])),
            ("ie", FeatureValues::Int64(vec![])),
            ("k", FeatureValues::NoKind),
        ]);
        let r = decode_example(&bytes).unwrap();
        assert_eq!(
            r,
            rec(&[
                ("one", RawValue::Bytes(b"x".to_vec())),
                (
                    "two",
                    RawValue::List(vec![
                        RawValue::Bytes(b"x".to_vec()),
                        RawValue::Bytes(vec![])
                    ])
                ),
                ("none", RawValue::Missing),
                ("f", RawValue::Num(f64::from(0.1f32))),
                (
                    "fs",
                    RawValue::List(vec![RawValue::Num(f64::from(0.1f32)), RawValue::Num(-2.0)])
                ),
                ("fe", RawValue::Missing),
                ("i", RawValue::Int(i64::MIN)),
                (
                    "is",
                    RawValue::List(vec![RawValue::Int(1), RawValue::Int(i64::MAX)])
                ),
                ("ie", RawValue::Missing),
                ("k", RawValue::Missing),
            ])
        );
    }

    /// Hand-built wire bytes.
    fn ld(field: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_field_header(&mut v, field, body.len());
        v.extend_from_slice(body);
        v
    }

    fn example_with_feature(name: &str, feature: &[u8]) -> Vec<u8> {
        let entry = [ld(1, name.as_bytes()), ld(2, feature)].concat();
        ld(1, &ld(1, &entry))
    }

    #[test]
    fn accepts_unpacked_lists() {
        // FloatList with two unpacked floats (key 0x0d) and one packed run.
        let mut floats = vec![0x0d];
        floats.extend_from_slice(&1.5f32.to_le_bytes());
        floats.push(0x0d);
        floats.extend_from_slice(&(-3.0f32).to_le_bytes());
        floats.extend(ld(1, &[0, 0, 0x80, 0x3f]));
        let ex = example_with_feature("f", &ld(2, &floats));
        assert_eq!(
            decode_example(&ex).unwrap().get("f"),
            Some(&RawValue::List(vec![
                RawValue::Num(1.5),
                RawValue::Num(-3.0),
                RawValue::Num(1.0)
            ]))
        );
        // Int64List: unpacked 7 (key 0x08), then packed [300, -1].
        let mut packed = Vec::new();
        put_varint(&mut packed, 300);
        put_varint(&mut packed, u64::MAX);
        let ints = [vec![0x08, 7], ld(1, &packed)].concat();
        let ex = example_with_feature("i", &ld(3, &ints));
        assert_eq!(
            decode_example(&ex).unwrap().get("i"),
            Some(&RawValue::List(vec![
                RawValue::Int(7),
                RawValue::Int(300),
                RawValue::Int(-1)
            ]))
        );
    }

    #[test]
    fn skips_unknown_fields_of_every_wire_type() {
        let unknown: Vec<u8> = [
            vec![(9 << 3) | VARINT, 0x96, 0x01],
            vec![(10 << 3) | FIXED64, 1, 2, 3, 4, 5, 6, 7, 8],
            ld(11, b"junk"),
            vec![(12 << 3) | FIXED32, 1, 2, 3, 4],
            // group 13 { varint field 1; nested group 14 { } }
            vec![
                (13 << 3) | START_GROUP,
                0x08,
                0x01,
                (14 << 3) | START_GROUP,
                (14 << 3) | END_GROUP,
                (13 << 3) | END_GROUP,
            ],
            // Known field number, unexpected wire type: skipped as unknown.
            vec![0x08, 0x05],
        ]
        .concat();
        let list = [unknown.clone(), ld(1, b"v"), unknown.clone()].concat();
        let feature = [unknown.clone(), ld(1, &list), unknown.clone()].concat();
        let entry = [
            unknown.clone(),
            ld(1, b"name"),
            unknown.clone(),
            ld(2, &feature),
        ]
        .concat();
        let features = [unknown.clone(), ld(1, &entry), unknown.clone()].concat();
        let ex = [unknown.clone(), ld(1, &features), unknown].concat();
        assert_eq!(
            decode_example(&ex).unwrap(),
            rec(&[("name", RawValue::Bytes(b"v".to_vec()))])
        );
    }

    #[test]
    fn oneof_last_member_wins_and_same_member_merges() {
        let ints = ld(1, &[1, 2]);
        let feature = [ld(1, &ld(1, b"a")), ld(3, &ints), ld(3, &ld(1, &[3]))].concat();
        let ex = example_with_feature("x", &feature);
        assert_eq!(
            decode_example(&ex).unwrap().get("x"),
            Some(&RawValue::List(vec![
                RawValue::Int(1),
                RawValue::Int(2),
                RawValue::Int(3)
            ]))
        );
    }

    #[test]
    fn later_entry_and_features_merge() {
        let a = encode_example(&[
            ("a", FeatureValues::Int64(vec![1])),
            ("b", FeatureValues::Int64(vec![2])),
        ]);
        let b = encode_example(&[("a", FeatureValues::Int64(vec![3]))]);
        let r = decode_example(&[a, b].concat()).unwrap();
        assert_eq!(r, rec(&[("a", RawValue::Int(3)), ("b", RawValue::Int(2))]));
    }

    #[test]
    fn entry_without_key_or_value() {
        let ex = ld(1, &ld(1, &[]));
        assert_eq!(
            decode_example(&ex).unwrap(),
            rec(&[("", RawValue::Missing)])
        );
    }

    #[test]
    fn rejects_malformed_input_with_offsets() {
        use ExampleErrorKind as K;
        let kind = |b: &[u8]| decode_example(b).unwrap_err().kind;
        assert_eq!(kind(&[0x0a]), K::TruncatedVarint);
        assert_eq!(kind(&[0x0a, 0x05, 0x0a]), K::Truncated { need: 5, have: 1 });
        assert_eq!(kind(&[0x0a, 0xff]), K::TruncatedVarint);
        assert_eq!(
            kind(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            K::OverlongVarint
        );
        assert_eq!(kind(&[0x00]), K::InvalidTag(0));
        assert_eq!(kind(&[0x0e]), K::InvalidWireType(6));
        assert_eq!(kind(&[0x0f]), K::InvalidWireType(7));
        assert_eq!(kind(&[0x0c]), K::InvalidWireType(4));
        assert_eq!(kind(&[0x0b]), K::UnterminatedGroup(1));
        assert_eq!(kind(&[0x0b, 0x14]), K::UnterminatedGroup(1));
        assert_eq!(kind(&[0x09, 1, 2]), K::Truncated { need: 8, have: 2 });
        assert_eq!(kind(&[0x0d, 1, 2]), K::Truncated { need: 4, have: 2 });
        assert_eq!(kind(&[0x0b].repeat(100)), K::TooDeep);
        let mut bad_key = example_with_feature("k\u{7f}", &[]);
        let at = bad_key.iter().position(|&b| b == 0x7f).unwrap();
        bad_key[at] = 0xff;
        let e = decode_example(&bad_key).unwrap_err();
        assert_eq!(e.kind, K::InvalidUtf8Key);
        assert_eq!(e.offset, at);
        let floats = example_with_feature("f", &ld(2, &ld(1, &[0, 0, 0])));
        assert_eq!(kind(&floats), K::PackedFloatLength(3));
        // Packed varints cut short inside their own field.
        let ints = example_with_feature("i", &ld(3, &ld(1, &[0x80])));
        assert_eq!(kind(&ints), K::TruncatedVarint);
        // A nested length that runs past its parent (not just past the input).
        let mut ex = example_with_feature("n", &ld(1, &ld(1, b"abc")));
        let inner = ex.len() - 4;
        ex[inner] = 9;
        assert!(matches!(kind(&ex), K::Truncated { .. }));
        let msg = decode_example(&[0x0a, 0x05]).unwrap_err().to_string();
        assert_eq!(
            msg,
            "malformed tf.train.Example at byte 2: field needs 5 bytes but its message has 0 left"
        );
    }
}
