//! Flow-log text of any shape: header detection, tokenizing, every field's parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    zerogate_flow::record::fuzz_line(data);
});
