//! Instruction peak microbenchmarks: independent multiply-accumulates on registers only, so
//! a benchmark can state every kernel's throughput as a fraction of what the core can issue.

use crate::isa::Isa;

/// Runs `iters` steps of the family's int8 multiply-accumulate instruction on registers and
/// returns the operations done (2 per multiply-add), or `None` when the family has no peak
/// loop here (scalar and the ARM families) or is unavailable.
pub fn i8_ops(isa: Isa, iters: u64) -> Option<u64> {
    if !isa.is_available() {
        return None;
    }
    match isa {
        // SAFETY: availability was checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Some(unsafe { crate::arch::x86_64::avx512::peak_i8(iters) }),
        // SAFETY: availability (which includes the tiles' permission) was checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Amx => Some(unsafe { crate::arch::x86_64::amx::peak_i8(iters) }),
        // SAFETY: availability was checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(unsafe { crate::arch::x86_64::avx2::peak_i8(iters) }),
        _ => {
            let _ = iters;
            None
        }
    }
}

/// As [`i8_ops`] for the family's fp32 FMA; returns the flops done.
pub fn f32_flops(isa: Isa, iters: u64) -> Option<u64> {
    if !isa.is_available() {
        return None;
    }
    match isa {
        // SAFETY: availability was checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Amx => Some(unsafe { crate::arch::x86_64::avx512::peak_f32(iters) }),
        // SAFETY: availability was checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(unsafe { crate::arch::x86_64::avx2::peak_f32(iters) }),
        _ => {
            let _ = iters;
            None
        }
    }
}
