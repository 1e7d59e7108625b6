//! `ReplayStore::decode` on arbitrary bytes (with the checksum recomputed too, since random
//! mutation never matches it): never panics, a decoded store re-encodes to the very bytes it was
//! read from (the format is canonical), stays within its capacity and draws without panicking.
#![no_main]

use evergreen_data::{ReplayConfig, ReplayStore};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let cfg = ReplayConfig {
        capacity: 1 << 20,
        ..ReplayConfig::default()
    };
    let Ok(store) = ReplayStore::decode(bytes, cfg) else {
        return;
    };
    assert_eq!(store.encode(), bytes, "a decoded store re-encodes differently");
    let _ = store.draw(64);
    let mut small = store.clone();
    small.set_config(ReplayConfig {
        capacity: 3,
        ..cfg
    });
    assert!(small.len() <= 3);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 8 {
        let content = &data[..data.len() - 8];
        let mut fixed = content.to_vec();
        fixed.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(content).to_le_bytes());
        check(&fixed);
    }
});
