//! `SpanPattern::parse` on the fuzz input as UTF-8 text: never panics, and a pattern that
//! parses keeps its text and parses again.
#![no_main]

use std::path::Path;

use evergreen_data::SpanPattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = SpanPattern::parse(text, Path::new(".")) {
        assert_eq!(p.as_str(), text);
        assert!(SpanPattern::parse(p.as_str(), Path::new(".")).is_ok());
    }
});
