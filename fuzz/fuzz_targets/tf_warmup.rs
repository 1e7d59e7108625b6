//! `parse_tf_warmup_file`, TF Serving's warm-up file reader (TFRecord framing of
//! `PredictionLog` protos), on arbitrary bytes: never panics, never returns more requests than
//! records allowed (a streamed-predict log may hold several) or a request over the batch limit.
#![no_main]

use evergreen_serve::{MAX_BATCH, parse_tf_warmup_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(requests) = parse_tf_warmup_file(data, 16) {
        for records in &requests {
            assert!(records.len() <= MAX_BATCH, "{} records", records.len());
        }
    }
});
