//! `parse_predict_records`, the REST `:predict` body parser, on arbitrary bytes: never panics,
//! and never returns more records than a request may carry.
#![no_main]

use evergreen_serve::{MAX_BATCH, parse_predict_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = parse_predict_records(data) {
        assert!(records.len() <= MAX_BATCH, "{} records", records.len());
    }
});
