//! One node of each supported op, with attributes and inputs drawn from the bytes.
//! Every input must give a result or an error, never a panic, a hang or an out-of-memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::single_op(data));
