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
        let v = x / self.scale;
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

    /// `scale · (q − zp)`.
    #[inline]
    pub fn dequantize(self, q: u8) -> f32 {
        (q as i32 - self.zero_point as i32) as f32 * self.scale
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
    crate::error::check_len("weights", n * k, w.len())?;
    crate::error::check_len("weight codes", n * k, q.len())?;
    crate::error::check_len("weight scales", n, scales.len())?;
    for row in 0..n {
        let src = &w[row * k..(row + 1) * k];
        let max = src.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 && max.is_finite() {
            max / 127.0
        } else {
            1.0
        };
        scales[row] = scale;
        for (dst, &v) in q[row * k..(row + 1) * k].iter_mut().zip(src) {
            let code = (v / scale + ROUND_MAGIC) - ROUND_MAGIC;
            *dst = code.clamp(-127.0, 127.0) as i8;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
