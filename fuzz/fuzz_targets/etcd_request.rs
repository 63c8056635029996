//! libFuzzer's entry for the `etcd_request` target (see `capstan_fuzz::etcd_request`): built by
//! `cargo fuzz` with the `libfuzzer` feature only.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capstan_fuzz::etcd_request(data));
