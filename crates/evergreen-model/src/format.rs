//! The model file format: header, body, checksum. Spec in `docs/formats.md`.
//!
//! ```text
//! magic            8 bytes  "EVGMODEL"
//! format_version   u32 LE   (1)
//! kind             u16 LE   (ModelKind::code)
//! reserved         u16 LE   (0)
//! spec_fingerprint u64 LE   (FeatureSpec::fingerprint of the spec the model was trained with)
//! body_len         u64 LE
//! body             body_len bytes (kind-specific state)
//! checksum         u64 LE   xxh3-64 of every byte before it
//! ```

use crate::{Deep, Ffm, Fm, Ftrl, Model, ModelKind};

/// File magic.
pub const MAGIC: &[u8; 8] = b"EVGMODEL";
/// Current format version; older versions keep loading.
pub const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 8 + 4 + 2 + 2 + 8 + 8;

/// Parsed header of a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version the file was written with.
    pub format_version: u32,
    /// Model kind.
    pub kind: ModelKind,
    /// Fingerprint of the feature spec.
    pub spec_fingerprint: u64,
}

/// Why a model file could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// Shorter than a header plus checksum.
    #[error("model file truncated ({len} bytes)")]
    Truncated {
        /// Actual length.
        len: usize,
    },
    /// Wrong magic bytes.
    #[error("not an evergreen model file (bad magic)")]
    BadMagic,
    /// Written by a newer evergreen.
    #[error("model format version {0} is newer than this build supports ({FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    /// Unknown model kind code.
    #[error("unknown model kind code {0}")]
    UnknownKind(u16),
    /// Checksum mismatch: the file is corrupt or half-written.
    #[error("model checksum mismatch (file corrupt or incomplete)")]
    Checksum,
    /// Body inconsistent with its kind.
    #[error("model body malformed for kind {0}")]
    Body(&'static str),
}

/// Serializes a model with its header and checksum.
pub fn save(model: &dyn Model, spec_fingerprint: u64) -> Vec<u8> {
    let mut body = Vec::new();
    model.encode(&mut body);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&model.kind().code().to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&spec_fingerprint.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Parses and verifies a model file.
pub fn load(bytes: &[u8]) -> Result<(Header, Box<dyn Model>), ModelError> {
    let head: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(ModelError::Truncated { len: bytes.len() })?;
    let header = parse_header(head, bytes.len() as u64)?;
    let (content, sum) = bytes.split_at(bytes.len() - 8);
    let sum = u64::from_le_bytes(sum.try_into().expect("8 bytes"));
    if xxhash_rust::xxh3::xxh3_64(content) != sum {
        return Err(ModelError::Checksum);
    }
    let body = &content[HEADER_LEN..];
    let model: Box<dyn Model> = match header.kind {
        ModelKind::Ftrl => Box::new(Ftrl::decode(body).ok_or(ModelError::Body("ftrl"))?),
        ModelKind::Fm => Box::new(Fm::decode(body).ok_or(ModelError::Body("fm"))?),
        ModelKind::Ffm => Box::new(Ffm::decode(body).ok_or(ModelError::Body("ffm"))?),
        ModelKind::Deep => Box::new(Deep::decode(body).ok_or(ModelError::Body("deep"))?),
        ModelKind::Forest => {
            Box::new(crate::forest::decode(body).ok_or(ModelError::Body("forest"))?)
        }
    };
    Ok((header, model))
}

/// Parses the header of a file of `file_len` bytes and checks that its body length accounts
/// for exactly the file (header, body, checksum). The body is `HEADER_LEN..file_len - 8`.
pub(crate) fn parse_header(head: &[u8; HEADER_LEN], file_len: u64) -> Result<Header, ModelError> {
    let truncated = ModelError::Truncated {
        len: usize::try_from(file_len).unwrap_or(usize::MAX),
    };
    if file_len < (HEADER_LEN + 8) as u64 {
        return Err(truncated);
    }
    if &head[..8] != MAGIC {
        return Err(ModelError::BadMagic);
    }
    let mut r = Reader::new(&head[8..]);
    let format_version = r.u32().ok_or(ModelError::BadMagic)?;
    if format_version > FORMAT_VERSION || format_version == 0 {
        return Err(ModelError::UnsupportedVersion(format_version));
    }
    let code = r.u16().ok_or(ModelError::BadMagic)?;
    let _reserved = r.u16();
    let spec_fingerprint = r.u64().ok_or(ModelError::BadMagic)?;
    let body_len = r.u64().ok_or(ModelError::BadMagic)?;
    let expected = (HEADER_LEN as u64)
        .checked_add(body_len)
        .and_then(|x| x.checked_add(8));
    if expected != Some(file_len) {
        return Err(truncated);
    }
    let kind = ModelKind::from_code(code).ok_or(ModelError::UnknownKind(code))?;
    Ok(Header {
        format_version,
        kind,
        spec_fingerprint,
    })
}

/// Little-endian cursor over a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.buf.split_at_checked(N)?;
        self.buf = rest;
        head.try_into().ok()
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take::<2>().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    pub(crate) fn f64(&mut self) -> Option<f64> {
        self.take::<8>().map(f64::from_le_bytes)
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.buf.split_at_checked(n)?;
        self.buf = rest;
        Some(head)
    }
    pub(crate) fn f32s(&mut self, n: usize) -> Option<Vec<f32>> {
        let bytes = n.checked_mul(4)?;
        let (head, rest) = self.buf.split_at_checked(bytes)?;
        self.buf = rest;
        Some(
            head.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FtrlParams;
    use evergreen_core::FeatureVector;

    fn trained() -> Ftrl {
        let mut m = Ftrl::new(FtrlParams::default(), 64);
        let mut x = FeatureVector::default();
        x.push(3, 1.0);
        x.push(7, 0.5);
        for i in 0..50 {
            m.learn(&x, (i % 3 == 0) as u8 as f32);
        }
        m
    }

    #[test]
    fn round_trip_keeps_optimizer_state() {
        let m = trained();
        let bytes = save(&m, 42);
        let (h, back) = load(&bytes).unwrap();
        assert_eq!(h.kind, ModelKind::Ftrl);
        assert_eq!(h.spec_fingerprint, 42);
        assert_eq!(h.format_version, FORMAT_VERSION);
        let mut re = Vec::new();
        back.encode(&mut re);
        let mut orig = Vec::new();
        m.encode(&mut orig);
        assert_eq!(re, orig);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_detected() {
        let bytes = save(&trained(), 1);
        for len in 0..bytes.len() {
            assert!(load(&bytes[..len]).is_err(), "truncated at {len} loaded");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(load(&b).is_err(), "bit flip at {i} loaded");
        }
    }

    #[test]
    fn golden_v1_file_still_loads() {
        // test-data/ftrl-v1.bin was written by format version 1; it must load forever.
        let bytes = include_bytes!("../test-data/ftrl-v1.bin");
        let (h, m) = load(bytes).expect("golden v1 model loads");
        assert_eq!(h.format_version, 1);
        assert_eq!(m.kind(), ModelKind::Ftrl);
        assert_eq!(m.dim(), 64);
        assert_eq!(m.examples_seen(), 50);
        let mut x = FeatureVector::default();
        x.push(3, 1.0);
        x.push(7, 0.5);
        let p = m.predict(&x);
        let expected = trained().predict(&x);
        assert!((p - expected).abs() < 1e-12, "{p} vs {expected}");
        // Saved again, the state is byte for byte the file (the in-memory layout may change,
        // the encoded one does not).
        assert_eq!(save(m.as_ref(), h.spec_fingerprint), bytes);
    }

    /// The recipe of `examples/write_golden.rs` for `fm` and `ffm`.
    fn factor_golden(mut m: Box<dyn Model>) -> (Box<dyn Model>, [FeatureVector; 3]) {
        let mut a = FeatureVector::default();
        a.push_field(0, 3, 1.0);
        a.push_field(1, 7, 0.5);
        a.push_field(2, 11, 1.0);
        let mut b = FeatureVector::default();
        b.push_field(0, 3, 1.0);
        b.push_field(1, 8, 1.0);
        b.push_field(2, 12, -0.5);
        for i in 0..50 {
            m.learn(if i % 2 == 0 { &a } else { &b }, (i % 3 == 0) as u8 as f32);
        }
        // A vector not trained on, with a repeated index and an out-of-range field.
        let mut c = FeatureVector::default();
        c.push_field(0, 3, 1.0);
        c.push_field(1, 7, 0.25);
        c.push_field(7, 12, 2.0);
        c.push_field(1, 7, 0.25);
        (m, [a, b, c])
    }

    fn check_golden(bytes: &[u8], kind: ModelKind, fresh: Box<dyn Model>, expected: [f64; 3]) {
        let (h, m) = load(bytes).expect("golden model loads");
        assert_eq!(h.format_version, 1);
        assert_eq!(h.kind, kind);
        assert_eq!(m.examples_seen(), 50);
        let (retrained, xs) = factor_golden(fresh);
        let mut re = Vec::new();
        retrained.encode(&mut re);
        assert_eq!(
            &re[..],
            &bytes[32..bytes.len() - 8],
            "training is no longer deterministic"
        );
        for (x, want) in xs.iter().zip(expected) {
            let p = m.predict(x);
            assert!((p - want).abs() < 1e-12, "{kind:?}: {p} vs {want}");
            assert_eq!(p, retrained.predict(x));
        }
    }

    #[test]
    fn golden_fm_v1_file_loads_and_predicts() {
        check_golden(
            include_bytes!("../test-data/fm-v1.bin"),
            ModelKind::Fm,
            Box::new(crate::Fm::new(crate::FmParams::default(), 16, 3)),
            [0.4202635309135763, 0.41219818250098894, 0.46656044544207265],
        );
    }

    #[test]
    fn golden_ffm_v1_file_loads_and_predicts() {
        check_golden(
            include_bytes!("../test-data/ffm-v1.bin"),
            ModelKind::Ffm,
            Box::new(crate::Ffm::new(crate::FfmParams::default(), 16, 3)),
            [0.36343387514649556, 0.31866210739896955, 0.4540676982227644],
        );
    }

    #[test]
    fn out_of_range_hyperparameters_are_refused_despite_a_valid_checksum() {
        let ok = FtrlParams::default();
        let bad = [
            FtrlParams {
                alpha: f64::NAN,
                ..ok
            },
            FtrlParams { alpha: 0.0, ..ok },
            FtrlParams { alpha: -0.1, ..ok },
            FtrlParams {
                alpha: f64::INFINITY,
                ..ok
            },
            FtrlParams { beta: -1.0, ..ok },
            FtrlParams {
                beta: f64::NAN,
                ..ok
            },
            FtrlParams {
                l1: f64::INFINITY,
                ..ok
            },
            FtrlParams { l1: -0.5, ..ok },
            FtrlParams { l2: f64::NAN, ..ok },
            FtrlParams {
                l2: f64::NEG_INFINITY,
                ..ok
            },
        ];
        for params in bad {
            // `save` writes a correct checksum over whatever state the model holds.
            let bytes = save(&Ftrl::new(params, 8), 1);
            assert_eq!(
                load(&bytes).unwrap_err(),
                ModelError::Body("ftrl"),
                "{params:?} loaded"
            );
        }
        let edge = FtrlParams {
            alpha: 1e-12,
            beta: 0.0,
            l1: 0.0,
            l2: 0.0,
            ..FtrlParams::default()
        };
        load(&save(&Ftrl::new(edge, 8), 1)).expect("boundary values load");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = load(&bytes);
        }
    }
}
