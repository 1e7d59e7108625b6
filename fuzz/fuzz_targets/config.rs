//! `Config::parse` on the fuzz input as UTF-8 text (other inputs are skipped): never panics.
#![no_main]

use std::path::Path;

use evergreen_config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse(text, Path::new("fuzz.toml"));
});
