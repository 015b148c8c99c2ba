//! Arbitrary bytes into the model loader and the native engine's compiler: every input must
//! give a model or an error, never a panic, a hang or an out-of-memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mf_edge::model::Model;
use mf_edge::native::NativeEngine;
use mf_kernels::Isa;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = Model::from_bytes(data.to_vec()) {
        let _ = NativeEngine::new(&model, Isa::Scalar);
    }
});
