//! Arbitrary bytes as a compact firmware model, parsed and run.
//! Every input must give a result or an error, never a panic, a hang or an out-of-memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::compact(data));
