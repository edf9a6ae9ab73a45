//! `cargo fuzz run parsers`: every parser of outside input, fed arbitrary bytes.
#![no_main]

include!("../../tests/fuzz_input.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| exercise(data));
