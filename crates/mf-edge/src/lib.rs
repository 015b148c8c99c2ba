//! # mf-edge
//!
//! The on-device runtime for one-step MeanFlow generators: load an ONNX model written by
//! `mf-export`, run it with the native engine ([`native`], built on `mf-kernels`), tract or
//! ONNX Runtime ([`backends`]), sample images in one network evaluation ([`sampler`]), and
//! paint a stream of camera frames ([`stream`]).
pub mod backends;
pub mod bench;
pub mod cards;
pub mod eval;
pub mod images;
pub mod model;
pub mod native;
pub mod ops;
pub mod sampler;
pub mod stream;
pub mod tensor;

/// The shipped default model (class-conditional MNIST, int8), embedded in the binary so that
/// `mf-edge generate --class 7` needs nothing else on disk.
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../../../models/mnist-int8.onnx");
