//! Arbitrary bytes as a `paint --stream` input (PNG or raw frames), painted with the default
//! model. Every input must give a result or an error, never a panic, a hang or an
//! out-of-memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::stream(data));
