//! Per-tensor uint8 activation quantization, exactly as ONNX `QuantizeLinear` defines it.
use crate::activation::ROUND_MAGIC;
use crate::error::{KernelError, check_scale};

/// Scale and zero point of a uint8 tensor: `x ≈ s · (q − zp)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    /// Step between two codes (positive, finite).
    pub scale: f32,
    /// The code that represents 0.0.
    pub zero_point: u8,
}

impl QuantParams {
    /// Checked constructor: the scale must be positive and finite.
    pub fn new(scale: f32, zero_point: u8) -> Result<Self, KernelError> {
        check_scale("activation", scale)?;
        Ok(QuantParams { scale, zero_point })
    }

    /// Parameters covering `[lo, hi]` (widened to include 0 so that 0.0 is exact), the min/max
    /// calibration rule of ONNX Runtime's static quantizer for uint8.
    pub fn from_range(lo: f32, hi: f32) -> Self {
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zp = (-lo / scale + ROUND_MAGIC) - ROUND_MAGIC;
        QuantParams {
            scale,
            zero_point: zp.clamp(0.0, 255.0) as u8,
        }
    }

    /// `clamp(round_half_even(x / scale) + zp, 0, 255)`; NaN maps to the zero point.
    #[inline(always)]
    pub fn quantize(self, x: f32) -> u8 {
        self.quantize_by::<Divided>(x, 1.0)
    }

    /// [`QuantParams::quantize`] with the quotient `x / scale` taken by `D`, given
    /// `inv = 1 / scale` (which [`Divided`] ignores).
    #[inline(always)]
    pub(crate) fn quantize_by<D: Divide>(self, x: f32, inv: f32) -> u8 {
        let v = D::quotient(x, self.scale, inv);
        // Clamping keeps the magic-number rounding exact; the rounded integer is then read
        // from the sum's mantissa bits, which vectorizes (a saturating `as i32` does not).
        let v = if v.is_nan() {
            0.0
        } else {
            v.clamp(-512.0, 512.0)
        };
        let rounded = (v + ROUND_MAGIC).to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
        let r = rounded + self.zero_point as i32;
        r.clamp(0, 255) as u8
    }

    /// `dequantize(quantize(x))`, what a QuantizeLinear → DequantizeLinear pair gives, taken in
    /// float arithmetic without the codes: the quotient rounded to an integer, clamped to the
    /// codes' range around the zero point, times the scale. Bit-identical to the pair (unit
    /// test), with the quotient taken by `D` given `inv = 1 / scale`.
    #[cfg(feature = "alloc")]
    #[inline(always)]
    pub(crate) fn round_to_grid<D: Divide>(self, x: f32, inv: f32) -> f32 {
        let v = D::quotient(x, self.scale, inv);
        let v = if v.is_nan() { 0.0 } else { v };
        // Below 2^22 in magnitude the magic sum rounds half to even; beyond it both sides are
        // far outside the codes' range and clamp alike.
        let rounded = (v + ROUND_MAGIC) - ROUND_MAGIC;
        let zp = self.zero_point as f32;
        // `0.0 - zp`, not `-zp`: a zero point of 0 must clamp to +0.0 (the pair's (0 − 0)·scale).
        rounded.clamp(0.0 - zp, 255.0 - zp) * self.scale
    }

    /// `scale · (q − zp)`.
    #[inline]
    pub fn dequantize(self, q: u8) -> f32 {
        (q as i32 - self.zero_point as i32) as f32 * self.scale
    }
}

/// How quantizing divides by the scale. Either way the code is ONNX's, `round(x / scale)` with
/// the quotient rounded once; the strategies differ only in the instructions they need.
pub(crate) trait Divide {
    /// `x / scale`, rounded to nearest, for `scale > 0` with `inv = 1 / scale` rounded to nearest.
    fn quotient(x: f32, scale: f32, inv: f32) -> f32;
}

/// An IEEE division (`vdivps`): what the scalar family, which may lack FMA, uses.
pub(crate) struct Divided;

impl Divide for Divided {
    #[inline(always)]
    fn quotient(x: f32, scale: f32, _inv: f32) -> f32 {
        x / scale
    }
}

/// Markstein's correction: `q = x · inv`, then `q + (x − q · scale) · inv` with both steps
/// fused, which is the correctly rounded quotient whenever `q` is within an ulp of it and the
/// residual does not underflow (Muller et al., *Handbook of Floating-Point Arithmetic*, the
/// division theorems of ch. 4). Underflow happens only for quotients far below 0.5, whose code
/// is the zero point either way; quotients beyond ±512 saturate either way, so `q` is clamped
/// there first (an infinite `q` would turn the residual into NaN). Three multiply-adds instead
/// of a division: only for families compiled with FMA (a libm `fmaf` call would be slower).
/// The unit test holds it to [`Divided`] on every code. `f32::mul_add` needs std, so builds
/// without it divide ([`FastDivide`]).
#[cfg(all(feature = "std", any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) struct Fused;

/// The quotient the SIMD families use: [`Fused`] with std, [`Divided`] without.
#[cfg(all(feature = "std", any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) type FastDivide = Fused;
/// The quotient the SIMD families use: [`Fused`] with std, [`Divided`] without.
#[cfg(all(
    not(feature = "std"),
    feature = "alloc",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub(crate) type FastDivide = Divided;

#[cfg(all(feature = "std", any(target_arch = "x86_64", target_arch = "aarch64")))]
impl Divide for Fused {
    #[inline(always)]
    fn quotient(x: f32, scale: f32, inv: f32) -> f32 {
        let q = (x * inv).clamp(-512.0, 512.0);
        let residual = (-q).mul_add(scale, x);
        residual.mul_add(inv, q)
    }
}

/// How many bits an int8 layer's weight codes span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightBits {
    /// Codes in `[-127, 127]`: the full int8 range of a symmetric quantizer.
    #[default]
    Eight,
    /// Codes in `[-64, 64]` (ONNX Runtime's `reduce_range`): half the resolution, and AVX2
    /// multiplies such layers two products at a time in i16 (`vpmaddubsw`), exactly.
    Seven,
}

impl WeightBits {
    /// The largest code magnitude.
    pub const fn max_code(self) -> i8 {
        match self {
            WeightBits::Eight => 127,
            WeightBits::Seven => 64,
        }
    }
}

/// Symmetric per-output-channel int8 quantization of a `[N, K]` weight matrix: the scale of
/// row `n` is `max|W[n, :]| / 127` (1.0 for an all-zero row), codes in `[-127, 127]`.
/// Writes the codes into `q` and the scales into `scales`.
pub fn quantize_weights_symmetric(
    w: &[f32],
    n: usize,
    k: usize,
    q: &mut [i8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    quantize_weights_in(WeightBits::Eight, w, n, k, q, scales)
}

/// [`quantize_weights_symmetric`] with codes in `[-m, m]`, `m` = `bits.max_code()`: the scale
/// of row `n` is `max|W[n, :]| / m`.
pub fn quantize_weights_in(
    bits: WeightBits,
    w: &[f32],
    n: usize,
    k: usize,
    q: &mut [i8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    let max_code = bits.max_code() as f32;
    crate::error::check_len("weights", n * k, w.len())?;
    crate::error::check_len("weight codes", n * k, q.len())?;
    crate::error::check_len("weight scales", n, scales.len())?;
    for row in 0..n {
        let src = &w[row * k..(row + 1) * k];
        let max = src.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 && max.is_finite() {
            max / max_code
        } else {
            1.0
        };
        scales[row] = scale;
        for (dst, &v) in q[row * k..(row + 1) * k].iter_mut().zip(src) {
            let code = (v / scale + ROUND_MAGIC) - ROUND_MAGIC;
            *dst = code.clamp(-max_code, max_code) as i8;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 7-bit codes span ±64, each row's largest weight at the edge, and keep the row's shape.
    #[test]
    fn seven_bit_weights_span_64() {
        let w = [0.5, -1.0, 0.25, 0.0, 2.0, -0.5];
        for (bits, codes, m) in [
            (WeightBits::Seven, [32, -64, 16, 0, 64, -16], 64.0),
            (WeightBits::Eight, [64, -127, 32, 0, 127, -32], 127.0),
        ] {
            let (mut q, mut scales) = ([0i8; 6], [0f32; 2]);
            quantize_weights_in(bits, &w, 2, 3, &mut q, &mut scales).unwrap();
            assert_eq!((q, scales), (codes, [1.0 / m, 2.0 / m]), "{bits:?}");
        }
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let p = QuantParams::new(0.5, 10).unwrap();
        assert_eq!(p.quantize(0.25), 10); // 0.5 -> 0
        assert_eq!(p.quantize(0.75), 12); // 1.5 -> 2
        assert_eq!(p.quantize(1.25), 12); // 2.5 -> 2
        assert_eq!(p.quantize(-100.0), 0);
        assert_eq!(p.quantize(1e30), 255);
        assert_eq!(p.quantize(f32::NAN), 10);
        assert_eq!(p.dequantize(12), 1.0);
    }

    #[test]
    #[cfg(all(feature = "std", any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn fused_quotient_and_float_rounding_give_the_division_s_codes() {
        // Scales over 24 binades, values spread over the codes, on the half-way points between
        // them (where a quotient one ulp off would round the other way), tiny, huge and
        // non-finite.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            // xorshift64: reproducible draws without a dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let specials = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, 1e-40];
        let mut checked = 0;
        for _ in 0..2_000 {
            let scale = f32::from_bits(0x3380_0000 + (next() % 0x0c00_0000) as u32);
            let zero_point = if next() % 4 == 0 { 0 } else { next() as u8 };
            let p = QuantParams::new(scale, zero_point).unwrap();
            let inv = 1.0 / scale;
            for _ in 0..500 {
                let draw = next();
                let x = match draw % 4 {
                    0 => ((draw >> 8) as u32 as f32 / u32::MAX as f32 - 0.5) * 700.0 * scale,
                    1 => (((draw >> 8) % 1400) as f32 - 699.5) * scale,
                    2 => f32::from_bits((draw >> 8) as u32),
                    _ => specials[(draw >> 8) as usize % specials.len()],
                };
                let want = p.quantize(x);
                assert_eq!(
                    p.quantize_by::<Fused>(x, inv),
                    want,
                    "x {x:e}, scale {scale:e}"
                );
                let grid = p.dequantize(want).to_bits();
                for got in [
                    p.round_to_grid::<Divided>(x, inv),
                    p.round_to_grid::<Fused>(x, inv),
                ] {
                    assert_eq!(
                        got.to_bits(),
                        grid,
                        "x {x:e}, scale {scale:e}, zp {}",
                        p.zero_point
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 1_000_000);
    }

    #[test]
    fn range_keeps_zero_exact() {
        let p = QuantParams::from_range(-0.3, 5.0);
        assert_eq!(p.dequantize(p.quantize(0.0)), 0.0);
        assert!((p.dequantize(p.quantize(5.0)) - 5.0).abs() <= p.scale);
    }

    #[test]
    fn bad_scale_is_refused() {
        assert!(QuantParams::new(0.0, 0).is_err());
        assert!(QuantParams::new(f32::NAN, 0).is_err());
    }

    #[test]
    fn weights_quantize_per_row() {
        let w = [1.0, -0.5, 0.0, 0.0, 0.254, -0.127];
        let mut q = [0i8; 6];
        let mut s = [0f32; 3];
        quantize_weights_symmetric(&w, 3, 2, &mut q, &mut s).unwrap();
        assert_eq!(q, [127, -64, 0, 0, 127, -64]);
        assert_eq!(s[1], 1.0);
    }
}
