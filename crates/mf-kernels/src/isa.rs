//! The one dispatch point: which kernel family runs, detected at run time or forced.
use core::fmt;

use crate::error::KernelError;

/// A kernel family, named by the instruction set it is built on. The int8 kernel is the
/// family's own; the fp32 kernel is the best float kernel of the same ISA level
/// (AVX-512 for `Avx512Vnni` and `Amx`, NEON for the three ARM levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, the twin every SIMD kernel is tested against; the Cortex-M path.
    Scalar,
    /// x86_64 AVX2 + FMA: `vpmaddwd` on sign-extended bytes (exact, no 16-bit saturation).
    Avx2,
    /// x86_64 AVX-512 VNNI: `vpdpbusd` (u8 × s8, four products per 32-bit lane).
    Avx512Vnni,
    /// x86_64 AMX (Sapphire Rapids and later, Linux): `tdpbusd` on 16-row tiles (u8 × s8,
    /// 16 × 16 sums of 64 products per instruction); short tiles, fp32 and the element-wise
    /// loops are AVX-512's.
    Amx,
    /// aarch64 NEON: `smull`/`smlal` + `sadalp` widening multiply-accumulate.
    Neon,
    /// aarch64 dot product extension: `sdot` (Cortex-A76/A78, Jetson Orin).
    NeonDotprod,
    /// aarch64 int8 matrix multiply extension: `smmla` (2×8 · 8×2 per instruction).
    NeonI8mm,
}

impl Isa {
    /// Every family, from the most portable to the most specialised.
    pub const ALL: [Isa; 7] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512Vnni,
        Isa::Amx,
        Isa::Neon,
        Isa::NeonDotprod,
        Isa::NeonI8mm,
    ];

    /// The name `MF_KERNEL` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "dotprod",
            Isa::NeonI8mm => "i8mm",
        }
    }

    /// Parses a name as [`Isa::name`] writes it.
    pub fn from_name(name: &str) -> Result<Isa, KernelError> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == name)
            .ok_or(KernelError::UnknownKernel)
    }

    /// Whether this CPU can run the family (run-time detection with `std`, the compile-time
    /// target features without it).
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => has_avx2(),
            Isa::Avx512Vnni => has_avx512vnni(),
            Isa::Amx => has_avx512vnni() && has_amx(),
            Isa::Neon => has_neon(),
            Isa::NeonDotprod => has_neon() && has_dotprod(),
            Isa::NeonI8mm => has_neon() && has_i8mm(),
        }
    }

    /// The fastest available family.
    pub fn detect() -> Isa {
        const PREFERENCE: [Isa; 7] = [
            Isa::Amx,
            Isa::Avx512Vnni,
            Isa::Avx2,
            Isa::NeonI8mm,
            Isa::NeonDotprod,
            Isa::Neon,
            Isa::Scalar,
        ];
        PREFERENCE
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// The family to use: the one `MF_KERNEL` names (an error if unknown or unavailable,
    /// never a silent fallback), else [`Isa::detect`].
    pub fn select() -> Result<Isa, KernelError> {
        match forced() {
            Some(isa) => isa?.require(),
            None => Ok(Isa::detect()),
        }
    }

    /// `Ok(self)` when available, else [`KernelError::Unavailable`].
    pub fn require(self) -> Result<Isa, KernelError> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(KernelError::Unavailable(self))
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Displays the available families, comma separated (for error messages).
pub(crate) struct AvailableList;

impl fmt::Display for AvailableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for isa in Isa::ALL.into_iter().filter(|isa| isa.is_available()) {
            if !first {
                f.write_str(", ")?;
            }
            f.write_str(isa.name())?;
            first = false;
        }
        Ok(())
    }
}

/// The family `MF_KERNEL` names, if it is set and not empty.
#[cfg(feature = "std")]
fn forced() -> Option<Result<Isa, KernelError>> {
    let name = std::env::var("MF_KERNEL").ok().filter(|v| !v.is_empty())?;
    Some(Isa::from_name(&name))
}

/// Without `std` there is no environment: nothing is forced.
#[cfg(not(feature = "std"))]
fn forced() -> Option<Result<Isa, KernelError>> {
    None
}

#[cfg(all(target_arch = "x86_64", feature = "std"))]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}
#[cfg(all(target_arch = "x86_64", feature = "std"))]
fn has_avx512vnni() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni")
}
#[cfg(all(target_arch = "x86_64", not(feature = "std")))]
fn has_avx2() -> bool {
    cfg!(all(target_feature = "avx2", target_feature = "fma"))
}
#[cfg(all(target_arch = "x86_64", not(feature = "std")))]
fn has_avx512vnni() -> bool {
    cfg!(all(
        target_feature = "avx512f",
        target_feature = "avx512bw",
        target_feature = "avx512vnni"
    ))
}
/// AMX needs Linux's permission for the tile state, asked for at run time (so with `std`).
#[cfg(all(target_arch = "x86_64", target_os = "linux", feature = "std"))]
fn has_amx() -> bool {
    crate::arch::x86_64::amx::enable()
}
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", feature = "std")))]
fn has_amx() -> bool {
    false
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx512vnni() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn has_neon() -> bool {
    cfg!(target_feature = "neon")
}
#[cfg(all(target_arch = "aarch64", feature = "std"))]
fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}
#[cfg(all(target_arch = "aarch64", feature = "std"))]
fn has_i8mm() -> bool {
    std::arch::is_aarch64_feature_detected!("i8mm")
}
#[cfg(all(target_arch = "aarch64", not(feature = "std")))]
fn has_dotprod() -> bool {
    cfg!(target_feature = "dotprod")
}
#[cfg(all(target_arch = "aarch64", not(feature = "std")))]
fn has_i8mm() -> bool {
    cfg!(target_feature = "i8mm")
}
#[cfg(not(target_arch = "aarch64"))]
fn has_neon() -> bool {
    false
}
#[cfg(not(target_arch = "aarch64"))]
fn has_dotprod() -> bool {
    false
}
#[cfg(not(target_arch = "aarch64"))]
fn has_i8mm() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Ok(isa));
        }
        assert_eq!(Isa::from_name("sse9"), Err(KernelError::UnknownKernel));
    }

    #[test]
    fn detect_picks_an_available_family() {
        assert!(Isa::detect().is_available());
        assert!(Isa::Scalar.is_available());
    }
}
