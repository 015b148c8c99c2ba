//! aarch64 kernels: plain NEON, the dot product extension (`sdot`) and the int8 matrix
//! multiply extension (`smmla`). The two extensions' intrinsics are unstable in Rust 1.95, so
//! their one instruction each is written with `asm!` inside `#[target_feature]` functions.
pub(crate) mod dotprod;
pub(crate) mod i8mm;
pub(crate) mod neon;
