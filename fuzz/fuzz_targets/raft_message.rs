//! libFuzzer's entry for the `raft_message` target (see `capstan_fuzz::raft_message`): built by
//! `cargo fuzz` with the `libfuzzer` feature only.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capstan_fuzz::raft_message(data));
