//! libFuzzer's entry for the `patch` target (see `capstan_fuzz::patch`): built by
//! `cargo fuzz` with the `libfuzzer` feature only.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capstan_fuzz::patch(data));
