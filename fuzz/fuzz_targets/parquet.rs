//! `open_span` on a `.parquet` file holding the fuzz input, read to the end: no panic escapes
//! the reader, row numbers never decrease (see `evergreen_fuzz::read_span`).
//!
//! The `parquet` crate panics on some malformed inputs; the span reader catches those panics
//! (turning them into an open error or a `corrupt_row_group` record). libFuzzer's panic hook
//! would abort on them even so, so this target restores the default hook: a caught panic is
//! printed and fuzzing goes on, a panic that escapes `read_span` still aborts (libfuzzer-sys
//! aborts on any panic reaching it).
#![no_main]

use evergreen_data::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    evergreen_fuzz::allow_caught_panics();
    evergreen_fuzz::read_span(data, "parquet", Format::Parquet);
});
