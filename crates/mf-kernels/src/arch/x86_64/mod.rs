//! x86_64 kernels: AVX2 + FMA and AVX-512 (VNNI for int8).
pub(crate) mod avx2;
pub(crate) mod avx512;
