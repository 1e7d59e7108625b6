//! `open_span` on a `.tfrecord` file holding the fuzz input, read to the end: no panic, line
//! (record) numbers never decrease (see `evergreen_fuzz::read_span`).
#![no_main]

use evergreen_data::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    evergreen_fuzz::read_span(data, "tfrecord", Format::Tfrecord);
});
