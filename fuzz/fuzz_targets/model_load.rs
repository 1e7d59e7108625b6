//! `evergreen_model::load` on arbitrary bytes.
//!
//! The file ends in an xxh3 checksum of everything before it, which random mutation never
//! matches, so each input is tried three ways: as it is; with the checksum recomputed (what a
//! corrupt file whose checksum was rewritten looks like); and with `body_len` fixed up too. Then:
//!
//! - `load` never panics;
//! - a loaded model re-encodes to the very body it was loaded from (the format is canonical),
//!   and `save` reproduces the file when it was written at the current version; the one
//!   exception, a forest body of layout 1 (upgraded to the current layout on load), re-encodes
//!   to a body that itself loads and re-encodes unchanged;
//! - a loaded model can predict over every one of its buckets, and over vectors spanning
//!   several fields with odd values (what the forest reads), without panicking, and the result
//!   is a probability (never NaN), as `Ftrl::decode`'s documentation promises.
#![no_main]

use evergreen_core::FeatureVector;
use evergreen_model::{FORMAT_VERSION, ModelKind, load, save};
use libfuzzer_sys::fuzz_target;

/// magic, format_version, kind, reserved, spec_fingerprint, body_len.
const HEADER_LEN: usize = 8 + 4 + 2 + 2 + 8 + 8;

fn with_checksum(content: &[u8]) -> Vec<u8> {
    let mut out = content.to_vec();
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(content).to_le_bytes());
    out
}

fn check(bytes: &[u8]) {
    let Ok((header, model)) = load(bytes) else {
        return;
    };
    let body = &bytes[HEADER_LEN..bytes.len() - 8];
    let mut re = Vec::new();
    model.encode(&mut re);
    if model.kind() == ModelKind::Forest && body.starts_with(&1u32.to_le_bytes()) {
        let (_, again) = load(&save(model.as_ref(), header.spec_fingerprint))
            .expect("an upgraded forest loads");
        let mut re2 = Vec::new();
        again.encode(&mut re2);
        assert_eq!(re2, re, "an upgraded forest body is not canonical");
        assert_ne!(re, body, "a layout 1 forest body is re-encoded at the current layout");
        return;
    }
    assert_eq!(re, body, "a loaded model re-encodes to a different body");
    if header.format_version == FORMAT_VERSION && bytes[14..16] == [0, 0] {
        assert_eq!(
            save(model.as_ref(), header.spec_fingerprint),
            bytes,
            "save does not reproduce the file"
        );
    }

    let dim = model.dim();
    let cap = dim.min(1 << 12);
    let mut all = FeatureVector::with_capacity(cap);
    for i in 0..cap {
        let mut one = FeatureVector::with_capacity(1);
        one.push(i as u32, 1.0);
        let p = model.predict(&one);
        assert!(
            (0.0..=1.0).contains(&p),
            "prediction {p} for bucket {i} of a loaded model ({model:?})"
        );
        all.push(i as u32, 1.0);
    }
    if dim > 0 {
        let mut last = FeatureVector::with_capacity(1);
        last.push((dim - 1) as u32, 1.0);
        let _ = model.predict(&last);
    }
    let p = model.predict(&all);
    assert!(
        (0.0..=1.0).contains(&p),
        "prediction {p} over all buckets of a loaded model ({model:?})"
    );
    // Entries over several fields with odd values: the forest reads numeric values and
    // category ids by field (raw features), so a bucket sweep of field 0 alone would miss it.
    const VALUES: [f32; 8] = [1.0, -3.5, 0.0, f32::NAN, f32::INFINITY, 1e30, -1e-30, 0.25];
    for seed in 0..8u32 {
        let mut v = FeatureVector::with_capacity(16);
        for f in 0..16u16 {
            let idx = seed
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u32::from(f) * 40_503);
            let idx = if dim > 0 { idx % dim.min(u32::MAX as usize) as u32 } else { 0 };
            v.push_field(f, idx, VALUES[(seed as usize + usize::from(f)) % 8]);
        }
        let p = model.predict(&v);
        assert!(
            (0.0..=1.0).contains(&p),
            "prediction {p} for a multi-field vector of a loaded model ({model:?})"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 8 {
        let content = &data[..data.len() - 8];
        check(&with_checksum(content));
        if content.len() >= HEADER_LEN {
            let mut fixed = content.to_vec();
            let body_len = (content.len() - HEADER_LEN) as u64;
            fixed[24..32].copy_from_slice(&body_len.to_le_bytes());
            check(&with_checksum(&fixed));
        }
    }
});
