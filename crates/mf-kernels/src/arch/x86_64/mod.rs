//! x86_64 kernels: AVX2 + FMA, AVX-512 (VNNI for int8) and AMX tiles for int8.
pub(crate) mod amx;
pub(crate) mod avx2;
pub(crate) mod avx512;
