//! libFuzzer's entry for the `rest_body` target (see `capstan_fuzz::rest_body`): built by
//! `cargo fuzz` with the `libfuzzer` feature only.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capstan_fuzz::rest_body(data));
