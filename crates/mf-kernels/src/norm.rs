//! Normalization planes (GroupNorm and InstanceNormalization as ONNX graphs write them): a
//! plane's moments (f32 lanes gathered into f64), and the pass that normalizes it in f32,
//! applies the per-channel affine and SiLU. The bodies are plain Rust; each kernel family compiles them with its target features
//! (wider vectors, the same operations in the same order), so every family gives the bits of
//! [`moments`] and [`affine`].
use crate::activation::exp;
use crate::epilogue::{AsIs, Coded, Store};
use crate::error::KernelError;
use crate::isa::Isa;
use crate::quant::QuantParams;

/// How one plane is normalized: `y = ((x − mean) · gain + bias) · gamma + beta` in f32, each
/// step rounded (no fused multiply-add) as separate ONNX nodes round it, then `y · sigmoid(y)`
/// when `silu`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaneAffine {
    /// The plane's mean.
    pub mean: f32,
    /// `scale / √(var + ε)`.
    pub gain: f32,
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

/// Partial sums kept side by side: one AVX-512 vector, two AVX2 ones, four NEON ones.
const LANES: usize = 16;

/// Values summed in the f32 lanes before the lanes are added into the f64 total, so that a
/// lane's sum never spans more than `BLOCK / LANES` values.
const BLOCK: usize = 1024;

/// A plane's mean and (biased) variance: the values (then their squared deviations from the
/// mean, rounded to f32) summed in [`LANES`] f32 partial sums per block of [`BLOCK`], each
/// block's lanes added into an f64 total. Every family runs the same additions in the same
/// order, so the bits do not depend on the vector width.
#[inline(always)]
pub fn moments(row: &[f32]) -> (f64, f64) {
    let len = row.len() as f64;
    let mean = lane_sum(row, |v| v) / len;
    let center = mean as f32;
    let var = lane_sum(row, |v| {
        let d = v - center;
        d * d
    }) / len;
    (mean, var)
}

/// `Σ f(v)` over `row`: [`LANES`] f32 partial sums per block of [`BLOCK`], each block's
/// lanes and its tail added into an f64 total.
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    for block in row.chunks(BLOCK) {
        let mut acc = [0f32; LANES];
        let mut lanes = block.chunks_exact(LANES);
        for values in &mut lanes {
            for (a, &v) in acc.iter_mut().zip(values) {
                *a += f(v);
            }
        }
        let tail = lanes.remainder().iter().map(|&v| f(v) as f64);
        total += gather(&acc) + tail.sum::<f64>();
    }
    total
}

/// The lanes' sum in f64, in lane order.
#[inline(always)]
fn gather(acc: &[f32; LANES]) -> f64 {
    acc.iter().map(|&a| a as f64).sum()
}

/// `out[i] = ` the plane affine of `x[i]` (over the shorter of the two).
#[inline(always)]
pub fn affine(x: &[f32], out: &mut [f32], p: &PlaneAffine) {
    affine_stored(x, out, p, AsIs)
}

/// [`affine`] with each value then quantized to `params`' uint8 code (what the int8 layer
/// reading it would do), the quotient taken by `D`.
#[inline(always)]
pub(crate) fn affine_codes<D: crate::quant::Divide>(
    x: &[f32],
    out: &mut [u8],
    p: &PlaneAffine,
    params: QuantParams,
) {
    affine_stored(x, out, p, Coded::<D>::new(params))
}

/// The plane affine of each `x[i]`, stored into `out[i]` as `store` says.
#[inline(always)]
fn affine_stored<S: Store>(x: &[f32], out: &mut [S::Value], p: &PlaneAffine, store: S) {
    let norm = |v: f32| ((v - p.mean) * p.gain + p.bias) * p.gamma + p.beta;
    if p.silu {
        for (y, &v) in out.iter_mut().zip(x) {
            let a = norm(v);
            *y = store.value(a * sigmoid(a));
        }
    } else {
        for (y, &v) in out.iter_mut().zip(x) {
            *y = store.value(norm(v));
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

/// [`affine`] compiled for `isa`, each value written as its uint8 code for `params`
/// (`params.quantize` of what [`plane_affine`] writes), or an error when this CPU lacks the
/// family or the lengths differ.
pub fn plane_affine_codes(
    isa: Isa,
    x: &[f32],
    out: &mut [u8],
    p: &PlaneAffine,
    params: QuantParams,
) -> Result<(), KernelError> {
    crate::error::check_len("normalized codes", x.len(), out.len())?;
    let f = crate::arch::f32_micro(isa.require()?).epilogue.affine_codes;
    // SAFETY: `require` checked that this CPU has the family's features.
    unsafe { f(x, out, p, params) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn moments_are_close_to_f64_ones() {
        // A large plane far from zero (the case f32 sums get wrong): mean 100, spread ~1.
        let x: Vec<f32> = (0..200_003)
            .map(|i| 100.0 + ((i * 7919) % 1000) as f32 / 500.0 - 1.0 + (i % 3) as f32 * 0.1)
            .collect();
        let len = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / len;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len;
        let (m, v) = moments(&x);
        assert!((m - mean).abs() < 1e-6 * mean, "mean {m} vs {mean}");
        assert!((v - var).abs() < 1e-5 * var, "variance {v} vs {var}");
    }

    #[test]
    fn every_family_gives_the_portable_bits() {
        // Odd lengths (a tail after the quads), spread and offset that differ per plane.
        for len in [1usize, 7, 64, 785, 3001] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1000) as f32 / 97.0 - 3.0 + (i % 5) as f32 * 0.37)
                .collect();
            let (mean, var) = moments(&x);
            for silu in [false, true] {
                let p = PlaneAffine {
                    mean: mean as f32,
                    gain: (0.8 / (var + 1e-5).sqrt()) as f32,
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
                    // Codes on a grid a little narrower than the values (some saturate).
                    let (lo, hi) = want
                        .iter()
                        .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                    let params = QuantParams::from_range(lo * 0.9, hi * 0.9);
                    let codes: Vec<u8> = want.iter().map(|&v| params.quantize(v)).collect();
                    let mut got = alloc::vec![0u8; len];
                    plane_affine_codes(isa, &x, &mut got, &p, params).unwrap();
                    assert_eq!(got, codes, "{isa}, silu {silu}, codes");
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
