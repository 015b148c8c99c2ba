//! Int8 and fp32 matrix kernels for MeanFlow Edge: the only crate with SIMD `unsafe`.
//!
//! # What it computes
//! A dense layer `y = act(x · Wᵀ + b)` with `x` of shape `[M, K]` (activations, one row per
//! sample), `W` of shape `[N, K]` (PyTorch layout `[out, in]`) and `b` of length `N`; and a 2-D
//! convolution ([`conv`]) as that dense layer over the input's receptive fields.
//!
//! # The quantization convention (shared with mf-export's ONNX QDQ graphs)
//! - **Weights**: int8, symmetric, one scale per output channel: `W[n, k] ≈ s_w[n] · q_w[n, k]`,
//!   zero point 0 (ONNX `DequantizeLinear` with `axis = 0` on `[N, K]`). mf-export writes
//!   `q_w ∈ [-127, 127]`; every kernel is exact over the whole range `[-128, 127]`, since QDQ
//!   files from other quantizers hold −128.
//! - **Activations**: uint8, asymmetric, one scale and zero point per tensor, calibrated ahead
//!   of time: `q_a = clamp(round_half_even(x / s_a) + zp_a, 0, 255)` (ONNX `QuantizeLinear`).
//! - **Accumulation** is exact in i32: `acc[m, n] = Σ_k (q_a[m, k] − zp_a) · q_w[n, k]`.
//!   Kernels compute `Σ_k (q_a − o) · q_w` with a kernel offset `o` (0 for the u8×s8 x86 kernels,
//!   128 for the s8×s8 ARM kernels, which flip the sign bit of `q_a`); the zero point is folded
//!   at pack time into one i32 per column, `corr[n] = (o − zp_a) · Σ_k q_w[n, k]`, which the
//!   epilogue adds back. Every kernel therefore yields the same integers, bit for bit.
//! - **Epilogue**: `y = f32(acc) · (s_a · s_w[n]) + b[n]` as one f32 multiply then one f32 add
//!   (never fused), then the activation ([`activation`]), then either f32 output or a
//!   requantized uint8 for the next layer with that layer's input parameters. The combined scale
//!   `s_a · s_w[n]` is rounded to f32 once, at pack time.
//!
//! The fp32 path packs weights the same way and shares the epilogue (`y = acc + b[n]`), so the
//! float and int8 models are measured with the same machinery.
//!
//! # Kernels and dispatch
//! [`Isa`] names each kernel family; [`Isa::detect`] picks the best one the CPU has and
//! [`Isa::select`] honours the `MF_KERNEL` environment variable (`scalar`, `avx2`,
//! `avx512vnni`, `amx`, `neon`, `dotprod`, `i8mm`). Every SIMD kernel has the scalar kernel as
//! its twin and [`reference`](mod@reference) as the truth the tests hold it to. The AVX-512, AVX2
//! and NEON fp32 tiles are one generic body (`arch/broadcast.rs`) over each family's handful of
//! vector operations; NEON int8, dotprod and i8mm, which read their activations otherwise,
//! have bodies of their own, and AMX (`arch/x86_64/amx.rs`) runs its 16-row int8 tiles on the
//! tile registers with VNNI's packing, epilogue and short tiles.
#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod activation;
#[cfg(feature = "alloc")]
mod arch;
pub mod conv;
#[cfg(feature = "alloc")]
mod epilogue;
mod error;
#[cfg(feature = "alloc")]
mod gemm;
mod isa;
pub mod layout;
#[cfg(feature = "alloc")]
pub mod norm;
#[cfg(feature = "alloc")]
mod pack;
#[cfg(feature = "std")]
pub mod peak;
#[cfg(feature = "alloc")]
pub mod pointwise;
pub mod quant;
pub mod reference;
#[cfg(feature = "std")]
pub mod team;
#[cfg(feature = "alloc")]
mod transpose;
pub mod trig;

pub use activation::Activation;
#[cfg(feature = "alloc")]
pub use conv::{Addend, ConvScratch, PackedConv, PackedConvF32, PackedConvI8, conv_f32, conv_i8};
pub use conv::{ConvGeometry, ImageSize};
pub use error::KernelError;
#[cfg(feature = "alloc")]
pub use gemm::{GemmScratch, Input, Output, gemm_f32, gemm_i8, gemm_i8_reusing};
pub use isa::Isa;
pub use layout::{Layout, Layouts};
#[cfg(feature = "alloc")]
pub use pack::{PackedF32, PackedI8};
pub use quant::QuantParams;
