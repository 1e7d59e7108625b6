//! Example files (`.evgx`): `decode_example_record` on arbitrary bytes never panics, and a record
//! it accepts re-encodes to the same bytes when its values are canonical (tag 0 for 1.0); the
//! header parser never panics either.
#![no_main]

use evergreen_data::examples::{ExamplesHeader, decode_example_record, encode_example_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ExamplesHeader::decode(data);
    let header = ExamplesHeader {
        spec_fingerprint: 1,
        hash_bits: 16,
        fields: 8,
    };
    if let Ok((x, y)) = decode_example_record(data, &header) {
        assert!(y == 0.0 || y == 1.0);
        assert!(x.values.iter().all(|v| v.is_finite()));
        let mut again = Vec::new();
        encode_example_record(&x, y, &mut again);
        let (x2, y2) = decode_example_record(&again, &header).expect("re-encoded record decodes");
        assert_eq!((x2, y2), (x, y));
    }
});
