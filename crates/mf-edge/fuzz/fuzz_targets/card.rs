//! Arbitrary text as a model card, parsed and queried.
//! Every input must give a result or an error, never a panic, a hang or an out-of-memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::card(data));
