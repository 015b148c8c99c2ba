//! Activations applied in the epilogue, defined with plain IEEE operations only (no FMA, no
//! library `exp`) so that every target, the Cortex-M7 included, computes the same bits.

/// The activation a layer's epilogue applies after scale and bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// SiLU (swish): `y / (1 + exp(−y))`.
    Silu,
}

impl Activation {
    /// Applies the activation to one value.
    #[inline(always)]
    pub fn apply(self, y: f32) -> f32 {
        match self {
            Activation::None => y,
            Activation::Silu => silu(y),
        }
    }
}

/// `x / (1 + exp(−x))` with [`exp`].
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// 1.5 · 2^23: adding and subtracting it rounds an f32 of magnitude below 2^22 to the nearest
/// integer, ties to even, under the default rounding mode.
pub(crate) const ROUND_MAGIC: f32 = 12_582_912.0;

/// `exp(x)` within about 2 ulp on [−87.3, 88.3] (clamped outside), from Cephes' `expf`:
/// `x = n·ln 2 + r`, a degree-7 polynomial in `r`, then `2^n` through the exponent bits.
/// Every step is a single IEEE operation, so the result is the same on every target.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    // The integer n, read from the mantissa bits (vectorizes, unlike a saturating cast).
    let n_int = shifted.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
    let r = x - n * LN2_HI;
    let r = r - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    let pow2n = f32::from_bits(((n_int + 127) as u32) << 23);
    y * pow2n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_within_a_few_ulp() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = libm_exp(x);
            let got = exp(x);
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
            assert!(ulp <= 3, "exp({x}) = {got}, want {want} ({ulp} ulp)");
            x += 0.0137;
        }
    }

    #[test]
    fn silu_has_its_known_values() {
        assert_eq!(silu(0.0), 0.0);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((silu(-1.0) + 0.268_941_4).abs() < 1e-6);
        assert!(silu(-100.0).abs() < 1e-30);
        assert_eq!(silu(100.0), 100.0);
    }

    fn libm_exp(x: f32) -> f32 {
        extern crate std;
        (x as f64).exp() as f32
    }
}
