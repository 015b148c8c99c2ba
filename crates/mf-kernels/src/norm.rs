//! Normalization planes (GroupNorm and InstanceNormalization as ONNX graphs write them): a
//! plane's moments in f64, and the pass that normalizes it, applies the per-channel affine and
//! SiLU. The bodies are plain Rust; each kernel family compiles them with its target features
//! (wider vectors, the same operations in the same order), so every family gives the bits of
//! [`moments`] and [`affine`].
use crate::activation::exp;
use crate::error::KernelError;
use crate::isa::Isa;

/// How one plane is normalized: `y = f32((x − mean) · gain + bias) · gamma + beta` (each step
/// rounded as separate ONNX nodes round it: the normalization in f64 then to f32, the product
/// and the sum in f32), then `y · sigmoid(y)` when `silu`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaneAffine {
    /// The plane's mean.
    pub mean: f64,
    /// `scale / √(var + ε)`.
    pub gain: f64,
    /// The normalization's own bias.
    pub bias: f32,
    /// The channel's scale (1 for none).
    pub gamma: f32,
    /// The channel's shift (0 for none).
    pub beta: f32,
    /// Whether SiLU follows.
    pub silu: bool,
}

/// The logistic function `1 / (1 + exp(−x))` with [`exp`].
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// A plane's mean and (biased) variance, summed in f64 over four interleaved partial sums.
#[inline(always)]
pub fn moments(row: &[f32]) -> (f64, f64) {
    let sum4 = |f: &dyn Fn(f32) -> f64| {
        let mut acc = [0f64; 4];
        let mut quads = row.chunks_exact(4);
        for q in &mut quads {
            for (a, &v) in acc.iter_mut().zip(q) {
                *a += f(v);
            }
        }
        let tail: f64 = quads.remainder().iter().map(|&v| f(v)).sum();
        (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
    };
    let len = row.len() as f64;
    let mean = sum4(&|v| v as f64) / len;
    let var = sum4(&|v| {
        let d = v as f64 - mean;
        d * d
    }) / len;
    (mean, var)
}

/// `out[i] = ` the plane affine of `x[i]` (over the shorter of the two).
#[inline(always)]
pub fn affine(x: &[f32], out: &mut [f32], p: &PlaneAffine) {
    let norm = |v: f32| ((v as f64 - p.mean) * p.gain + p.bias as f64) as f32 * p.gamma + p.beta;
    if p.silu {
        for (y, &v) in out.iter_mut().zip(x) {
            let a = norm(v);
            *y = a * sigmoid(a);
        }
    } else {
        for (y, &v) in out.iter_mut().zip(x) {
            *y = norm(v);
        }
    }
}

/// [`moments`] compiled for `isa`, or an error when this CPU lacks it.
pub fn plane_moments(isa: Isa, row: &[f32]) -> Result<(f64, f64), KernelError> {
    let f = crate::arch::f32_micro(isa.require()?).epilogue.moments;
    // SAFETY: `require` checked that this CPU has the family's features.
    Ok(unsafe { f(row) })
}

/// [`affine`] compiled for `isa`, or an error when this CPU lacks it or the lengths differ.
pub fn plane_affine(
    isa: Isa,
    x: &[f32],
    out: &mut [f32],
    p: &PlaneAffine,
) -> Result<(), KernelError> {
    crate::error::check_len("normalized output", x.len(), out.len())?;
    let f = crate::arch::f32_micro(isa.require()?).epilogue.affine;
    // SAFETY: `require` checked that this CPU has the family's features.
    unsafe { f(x, out, p) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn every_family_gives_the_portable_bits() {
        // Odd lengths (a tail after the quads), spread and offset that differ per plane.
        for len in [1usize, 7, 64, 785] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1000) as f32 / 97.0 - 3.0 + (i % 5) as f32 * 0.37)
                .collect();
            let (mean, var) = moments(&x);
            for silu in [false, true] {
                let p = PlaneAffine {
                    mean,
                    gain: 0.8 / (var + 1e-5).sqrt(),
                    bias: 0.25,
                    gamma: 1.5,
                    beta: -0.75,
                    silu,
                };
                let mut want = alloc::vec![0f32; len];
                affine(&x, &mut want, &p);
                for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                    assert_eq!(plane_moments(isa, &x).unwrap(), (mean, var), "{isa}");
                    let mut got = alloc::vec![0f32; len];
                    plane_affine(isa, &x, &mut got, &p).unwrap();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{isa}, silu {silu}");
                }
            }
        }
        // The SiLU's known values through the whole pass (mean 0, gain 1, no affine).
        let p = PlaneAffine {
            mean: 0.0,
            gain: 1.0,
            bias: 0.0,
            gamma: 1.0,
            beta: 0.0,
            silu: true,
        };
        let mut y = [0f32; 3];
        affine(&[0.0, 1.0, -1.0], &mut y, &p);
        assert_eq!(y[0], 0.0);
        assert!((y[1] - 0.731_058_6).abs() < 1e-6 && (y[2] + 0.268_941_4).abs() < 1e-6);
        assert!(plane_affine(Isa::Scalar, &[1.0; 3], &mut [0.0; 2], &p).is_err());
    }
}
