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
/// mean, rounded to f32) summed in `LANES` f32 partial sums per block of `BLOCK`, each
/// block's lanes added into an f64 total. Every family runs the same additions in the same
/// order, so the bits do not depend on the vector width.
#[inline(always)]
pub fn moments(row: &[f32]) -> (f64, f64) {
    let [moments] = row_moments::<1>(row, row.len());
    moments
}

/// [`moments`] of each of the `R` rows of `len` values in `rows`, their steps interleaved
/// ([`lane_sums`]): the same bits as each row alone.
#[inline(always)]
fn row_moments<const R: usize>(rows: &[f32], len: usize) -> [(f64, f64); R] {
    let n = len as f64;
    let means = lane_sums::<R>(rows, len, |_, v| v).map(|s| s / n);
    let centers = means.map(|m| m as f32);
    let vars = lane_sums::<R>(rows, len, |r, v| {
        let d = v - centers[r];
        d * d
    });
    core::array::from_fn(|r| (means[r], vars[r] / n))
}

/// `Σ f(r, v)` over each of the `R` rows `r` of `len` values in `rows`: [`LANES`] f32
/// partial sums per block of [`BLOCK`], each block's lanes and its tail added into an f64
/// total. The rows' steps are interleaved, so that their chains of dependent additions
/// overlap; each row's additions are the same, in the same order, as alone.
#[inline(always)]
fn lane_sums<const R: usize>(rows: &[f32], len: usize, f: impl Fn(usize, f32) -> f32) -> [f64; R] {
    let mut total = [0f64; R];
    let mut start = 0;
    while start < len {
        let end = (start + BLOCK).min(len);
        let full = start + (end - start) / LANES * LANES;
        let mut acc = [[0f32; LANES]; R];
        for at in (start..full).step_by(LANES) {
            for (r, acc) in acc.iter_mut().enumerate() {
                let values = &rows[r * len + at..][..LANES];
                for (a, &v) in acc.iter_mut().zip(values) {
                    *a += f(r, v);
                }
            }
        }
        for (r, (total, acc)) in total.iter_mut().zip(&acc).enumerate() {
            let tail = rows[r * len + full..r * len + end].iter();
            *total += gather(acc) + tail.map(|&v| f(r, v) as f64).sum::<f64>();
        }
        start = end;
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

/// Pixels whose values a channel sums in f32 before the sum is added into its f64 total.
pub const PIXEL_BLOCK: usize = 64;

/// Channels summed side by side (the partial sums live on the stack).
pub const CHANNEL_CHUNK: usize = 64;

/// Per-channel sums over pixel rows (NHWC) of the values' deviations from `shift[j]` and of
/// their squares: `sums[j] += Σ_p d` and `sums[w + j] += Σ_p d²`, `d = x[p·stride + j] −
/// shift[j]`, over `pixels` pixels of `w = shift.len()` channels (at most [`CHANNEL_CHUNK`];
/// `sums` holds `2w`). Each channel sums in pixel order in f32, in blocks of [`PIXEL_BLOCK`]
/// pixels, each block's sums added into the f64 totals: the same additions in the same order
/// whatever the vector width, so every family gives the same bits. With a shift near the
/// values (a value of the same group), `Σd²/n − (Σd/n)²` is their variance without the
/// cancellation of `E[x²] − E[x]²`.
#[inline(always)]
pub fn shifted_sums(x: &[f32], (pixels, stride): (usize, usize), shift: &[f32], sums: &mut [f64]) {
    let width = shift.len().min(CHANNEL_CHUNK);
    let (total, squared) = sums.split_at_mut(width);
    // Blocks of PIXEL_LANES channels with their sums in registers, then the channels left.
    let full = width - width % PIXEL_LANES;
    for first in (0..pixels).step_by(PIXEL_BLOCK) {
        let block = first..pixels.min(first + PIXEL_BLOCK);
        for lane0 in (0..full).step_by(PIXEL_LANES) {
            let lanes = lane0..lane0 + PIXEL_LANES;
            let s: &[f32; PIXEL_LANES] = shift[lanes.clone()].try_into().expect("a block");
            let (mut acc, mut acc_sq) = ([0f32; PIXEL_LANES], [0f32; PIXEL_LANES]);
            for p in block.clone() {
                let row: &[f32; PIXEL_LANES] = x[p * stride + lane0..][..PIXEL_LANES]
                    .try_into()
                    .expect("a block");
                for k in 0..PIXEL_LANES {
                    let d = row[k] - s[k];
                    acc[k] += d;
                    acc_sq[k] += d * d;
                }
            }
            for (t, &a) in total[lanes.clone()].iter_mut().zip(&acc) {
                *t += a as f64;
            }
            for (t, &a) in squared[lanes].iter_mut().zip(&acc_sq) {
                *t += a as f64;
            }
        }
        for j in full..width {
            let (mut acc, mut acc_sq) = (0f32, 0f32);
            for p in block.clone() {
                let d = x[p * stride + j] - shift[j];
                acc += d;
                acc_sq += d * d;
            }
            total[j] += acc as f64;
            squared[j] += acc_sq as f64;
        }
    }
}

/// The plane affine of pixel rows (NHWC): channel `j` of every pixel goes through
/// [`PlaneAffine`] with `mean[j]`, `gain[j]`, `bias[j]`, `gamma[j]` and `beta[j]` (each as
/// long as a pixel has channels), the same operations in the same order, so a value gives the
/// bits [`affine`] gives it with those coefficients.
#[derive(Debug, Clone, Copy)]
pub struct ChannelAffine<'a> {
    /// Each channel's group mean.
    pub mean: &'a [f32],
    /// Each channel's `scale / √(var + ε)`.
    pub gain: &'a [f32],
    /// Each channel's normalization bias.
    pub bias: &'a [f32],
    /// Each channel's scale.
    pub gamma: &'a [f32],
    /// Each channel's shift.
    pub beta: &'a [f32],
    /// Whether SiLU follows.
    pub silu: bool,
}

/// Channels of a pixel normalized side by side with their coefficients held in registers.
const PIXEL_LANES: usize = 16;

/// [`ChannelAffine`] over whole pixels of `x`, written into `out` as `store` says: blocks of
/// [`PIXEL_LANES`] channels down all the pixels (each block's coefficients loaded once), then
/// the channels left over. With the SiLU, two pixels at a time: two independent chains of the
/// long exp → division → code sequence side by side (AVX2, 28×28 pixels of 16 and 48 channels:
/// 16.8 → 15.2 and 50.4 → 40.6 µs; AVX-512 unchanged, its two vector ports already full;
/// `cargo bench -p mf-benches --bench kernels -- pixel_affine`).
#[inline(always)]
fn pixel_affine_stored<S: Store>(x: &[f32], out: &mut [S::Value], a: &ChannelAffine, store: S) {
    if a.silu {
        pixel_affine_with::<S, true>(x, out, a, store)
    } else {
        pixel_affine_with::<S, false>(x, out, a, store)
    }
}

/// [`pixel_affine_stored`] with or without the SiLU.
#[inline(always)]
fn pixel_affine_with<S: Store, const SILU: bool>(
    x: &[f32],
    out: &mut [S::Value],
    a: &ChannelAffine,
    store: S,
) {
    let channels = a.mean.len();
    if channels == 0 {
        return;
    }
    let value = |v: f32, [mean, gain, bias, gamma, beta]: [f32; 5]| {
        let n = ((v - mean) * gain + bias) * gamma + beta;
        store.value(if SILU { n * sigmoid(n) } else { n })
    };
    let full = channels - channels % PIXEL_LANES;
    for first in (0..full).step_by(PIXEL_LANES) {
        let lanes = |c: &[f32]| -> [f32; PIXEL_LANES] {
            c[first..first + PIXEL_LANES]
                .try_into()
                .expect("a block of lanes")
        };
        let (mean, gain, bias) = (lanes(a.mean), lanes(a.gain), lanes(a.bias));
        let (gamma, beta) = (lanes(a.gamma), lanes(a.beta));
        let block = |xs: &[f32], ys: &mut [S::Value]| {
            let xs: &[f32; PIXEL_LANES] = xs[first..first + PIXEL_LANES]
                .try_into()
                .expect("a block of lanes");
            let ys = &mut ys[first..first + PIXEL_LANES];
            for k in 0..PIXEL_LANES {
                ys[k] = value(xs[k], [mean[k], gain[k], bias[k], gamma[k], beta[k]]);
            }
        };
        if !SILU {
            // One pixel at a time: no exp chain to overlap, and one copy of the body less in
            // the device build.
            for (xs, ys) in x.chunks_exact(channels).zip(out.chunks_exact_mut(channels)) {
                block(xs, ys);
            }
            continue;
        }
        // With the SiLU, two pixels at a time.
        let pairs = x
            .chunks_exact(2 * channels)
            .zip(out.chunks_exact_mut(2 * channels));
        for (xs, ys) in pairs {
            let (x0, x1) = xs.split_at(channels);
            let (y0, y1) = ys.split_at_mut(channels);
            block(x0, y0);
            block(x1, y1);
        }
        if x.len() / channels % 2 == 1 {
            let at = x.len() - channels;
            block(&x[at..], &mut out[at..]);
        }
    }
    if full == channels {
        return;
    }
    for (xs, ys) in x.chunks_exact(channels).zip(out.chunks_exact_mut(channels)) {
        for j in full..channels {
            ys[j] = value(
                xs[j],
                [a.mean[j], a.gain[j], a.bias[j], a.gamma[j], a.beta[j]],
            );
        }
    }
}

/// [`ChannelAffine`] over whole pixels of `x` into f32 `out`.
#[inline(always)]
pub fn pixel_affine(x: &[f32], out: &mut [f32], a: &ChannelAffine) {
    pixel_affine_stored(x, out, a, AsIs)
}

/// [`pixel_affine`] with each value then quantized to `params`' uint8 code.
#[inline(always)]
pub(crate) fn pixel_affine_codes<D: crate::quant::Divide>(
    x: &[f32],
    out: &mut [u8],
    a: &ChannelAffine,
    params: QuantParams,
) {
    pixel_affine_stored(x, out, a, Coded::<D>::new(params))
}

/// [`shifted_sums`] compiled for `isa`, or an error when this CPU lacks it, there are more
/// than [`CHANNEL_CHUNK`] channels, `sums` does not hold two per channel or `x` is too short
/// for `pixels` rows of `stride`.
pub fn pixel_shifted_sums(
    isa: Isa,
    x: &[f32],
    (pixels, stride): (usize, usize),
    shift: &[f32],
    sums: &mut [f64],
) -> Result<(), KernelError> {
    let width = shift.len();
    if width > CHANNEL_CHUNK || width > stride || sums.len() != 2 * width {
        return Err(KernelError::Geometry(
            "shifted sums take at most 64 channels of a pixel, with two sums each",
        ));
    }
    let needed = match pixels {
        0 => 0,
        p => (p - 1) * stride + width,
    };
    if x.len() < needed {
        return Err(KernelError::Shape {
            what: "pixel rows",
            expected: needed,
            got: x.len(),
        });
    }
    let f = crate::arch::f32_micro(isa.require()?).epilogue.shifted_sums;
    // SAFETY: `require` checked that this CPU has the family's features.
    unsafe { f(x, (pixels, stride), shift, sums) };
    Ok(())
}

/// Checks that `a`'s coefficients are one per channel and `x` and `out` whole pixels of them.
fn check_pixels(x: usize, out: usize, a: &ChannelAffine) -> Result<(), KernelError> {
    let c = a.mean.len();
    let lens = [a.gain.len(), a.bias.len(), a.gamma.len(), a.beta.len()];
    if lens.iter().any(|&l| l != c) || (c > 0 && !x.is_multiple_of(c)) {
        return Err(KernelError::Geometry(
            "pixel rows take one coefficient of each kind per channel",
        ));
    }
    crate::error::check_len("normalized pixel rows", x, out)
}

/// [`pixel_affine`] compiled for `isa`, or an error when this CPU lacks it or the lengths
/// differ.
pub fn pixel_affine_into(
    isa: Isa,
    x: &[f32],
    out: &mut [f32],
    a: &ChannelAffine,
) -> Result<(), KernelError> {
    check_pixels(x.len(), out.len(), a)?;
    let f = crate::arch::f32_micro(isa.require()?).epilogue.pixel_affine;
    // SAFETY: `require` checked that this CPU has the family's features.
    unsafe { f(x, out, a) };
    Ok(())
}

/// [`pixel_affine`] compiled for `isa`, each value written as its uint8 code for `params`,
/// or an error when this CPU lacks the family or the lengths differ.
pub fn pixel_affine_codes_into(
    isa: Isa,
    x: &[f32],
    out: &mut [u8],
    a: &ChannelAffine,
    params: QuantParams,
) -> Result<(), KernelError> {
    check_pixels(x.len(), out.len(), a)?;
    let f = crate::arch::f32_micro(isa.require()?)
        .epilogue
        .pixel_affine_codes;
    // SAFETY: `require` checked that this CPU has the family's features.
    unsafe { f(x, out, a, params) };
    Ok(())
}

/// [`moments`] compiled for `isa`, or an error when this CPU lacks it.
pub fn plane_moments(isa: Isa, row: &[f32]) -> Result<(f64, f64), KernelError> {
    let f = crate::arch::f32_micro(isa.require()?).epilogue.moments;
    // SAFETY: `require` checked that this CPU has the family's features.
    Ok(unsafe { f(row) })
}

/// One LayerNormalization row from its mean and `inv = 1 / √(var + ε)`: `(v − mean) · inv`
/// rounded to f32, then times `scale` and plus `bias` (each step rounded) when given.
#[inline(always)]
pub(crate) fn layer_norm_row_into(
    row: &[f32],
    out: &mut [f32],
    (mean, inv): (f32, f32),
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
) {
    let normalized = |v: f32| (v - mean) * inv;
    match (scale, bias) {
        (Some(s), Some(b)) => {
            for (((y, &v), &s), &b) in out.iter_mut().zip(row).zip(s).zip(b) {
                *y = normalized(v) * s + b;
            }
        }
        (Some(s), None) => {
            for ((y, &v), &s) in out.iter_mut().zip(row).zip(s) {
                *y = normalized(v) * s;
            }
        }
        _ => {
            for (y, &v) in out.iter_mut().zip(row) {
                *y = normalized(v);
            }
        }
    }
}

/// Rows that [`layer_norm_rows_into`] normalizes at once on x86: a row's moments are chains
/// of dependent additions (16 lanes, one AVX-512 vector, then the lanes in f64), and a group's
/// chains overlap (the DiT's rows of 128: 3.5% of its batch-1 time on an AMD EPYC Zen 4).
#[cfg(target_arch = "x86_64")]
const NORM_ROWS: usize = 4;

/// Elsewhere, one: on Arm four rows at a time took 4% more instructions for the int8 DiT than
/// one (qemu-aarch64: 4.21M against 4.05M per evaluation), a row's 16 lanes being four NEON
/// vectors, four chains already.
#[cfg(not(target_arch = "x86_64"))]
const NORM_ROWS: usize = 1;

/// LayerNormalization of each `len`-value row of `x` into `out` ([`layer_norm_row_into`]
/// with the row's [`moments`]: mean, and `1 / √(var + ε)` in f64, each rounded to f32),
/// [`NORM_ROWS`] rows' moments at a time.
#[inline(always)]
pub(crate) fn layer_norm_rows_into(
    x: &[f32],
    out: &mut [f32],
    (len, epsilon): (usize, f32),
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
) {
    let stats = |(mean, var): (f64, f64)| (mean as f32, (1.0 / sqrt(var + epsilon as f64)) as f32);
    let group = len * NORM_ROWS;
    let mut groups = x.chunks_exact(group);
    let mut outs = out.chunks_exact_mut(group);
    for (xs, ys) in (&mut groups).zip(&mut outs) {
        let moments = row_moments::<NORM_ROWS>(xs, len);
        for ((row, y), m) in xs
            .chunks_exact(len)
            .zip(ys.chunks_exact_mut(len))
            .zip(moments)
        {
            layer_norm_row_into(row, y, stats(m), scale, bias);
        }
    }
    let rest = groups.remainder().chunks_exact(len);
    for (row, y) in rest.zip(outs.into_remainder().chunks_exact_mut(len)) {
        layer_norm_row_into(row, y, stats(moments(row)), scale, bias);
    }
}

/// `√x` correctly rounded (IEEE 754 squareRoot): the CPU's instruction with std, the `libm`
/// crate's without; the same bits either way.
#[inline(always)]
fn sqrt(x: f64) -> f64 {
    #[cfg(feature = "std")]
    let root = x.sqrt();
    #[cfg(not(feature = "std"))]
    let root = libm::sqrt(x);
    root
}

/// [`layer_norm_rows_into`] compiled for `isa`: each `len`-value row of `x` normalized (with
/// `epsilon`) into `out`, then scaled and shifted per value when `scale` (and `bias`) are
/// given; an error when this CPU lacks the family, `x` is not whole rows of `out`'s length, a
/// scale or bias is not a row long, or a bias comes without a scale.
pub fn layer_norm_rows(
    isa: Isa,
    x: &[f32],
    out: &mut [f32],
    (len, epsilon): (usize, f32),
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
) -> Result<(), KernelError> {
    crate::error::check_len("normalized rows", x.len(), out.len())?;
    if len == 0 || !x.len().is_multiple_of(len) {
        return Err(KernelError::Operands(
            "LayerNormalization rows: the values are not whole rows of a nonzero length",
        ));
    }
    if let Some(s) = scale {
        crate::error::check_len("row scale", len, s.len())?;
    }
    if let Some(b) = bias {
        crate::error::check_len("row bias", len, b.len())?;
        if scale.is_none() {
            return Err(KernelError::Operands("a row bias without a scale"));
        }
    }
    let f = crate::arch::f32_micro(isa.require()?)
        .epilogue
        .layer_norm_rows;
    // SAFETY: `require` checked that this CPU has the family's features.
    unsafe { f(x, out, (len, epsilon), scale, bias) };
    Ok(())
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
    fn pixel_rows_give_the_plane_bits_in_every_family() {
        let got_sums = || [0f64; 38];
        // 19 channels (a block of 16 and 3 more) of a 23-wide pixel (a channel range inside the
        // row), 200 pixels: more than one block of pixels.
        let (pixels, stride, width) = (200usize, 23usize, 19usize);
        let x: Vec<f32> = (0..pixels * stride)
            .map(|i| ((i * 7919) % 1000) as f32 / 97.0 - 3.0 + (i % 5) as f32 * 0.37)
            .collect();
        let at = 1; // the range's first channel
        let shift: Vec<f32> = (0..width).map(|j| j as f32 * 0.3 - 2.0).collect();
        let mut sums = [0f64; 38];
        shifted_sums(&x[at..], (pixels, stride), &shift, &mut sums);
        for j in 0..width {
            let column = (0..pixels).map(|p| x[p * stride + at + j] as f64 - shift[j] as f64);
            let sum: f64 = column.clone().sum();
            let square: f64 = column.map(|d| d * d).sum();
            assert!((sums[j] - sum).abs() < 1e-4 * sum.abs().max(1.0), "{j}");
            assert!((sums[width + j] - square).abs() < 1e-4 * square, "{j}");
        }
        // Whole pixels of 19 channels (a block of 16 and 3 more), each with its own
        // coefficients; 241 of them, pairs of pixels and one more.
        let width = 19;
        let values = &x[..241 * width];
        let ramp = |a: f32, b: f32| (0..width).map(|j| a + b * j as f32).collect::<Vec<_>>();
        let (mean, gain, bias) = (ramp(0.1, -0.05), ramp(1.5, -0.07), ramp(0.0, 0.01));
        let (gamma, beta) = (ramp(1.0, -0.1), ramp(0.2, -0.03));
        for silu in [false, true] {
            let a = ChannelAffine {
                mean: &mean,
                gain: &gain,
                bias: &bias,
                gamma: &gamma,
                beta: &beta,
                silu,
            };
            let mut want = alloc::vec![0f32; values.len()];
            pixel_affine(values, &mut want, &a);
            // Channel j's values give what the plane pass gives them with its coefficients.
            for j in 0..width {
                let column: Vec<f32> = values.iter().skip(j).step_by(width).copied().collect();
                let p = PlaneAffine {
                    mean: mean[j],
                    gain: gain[j],
                    bias: bias[j],
                    gamma: gamma[j],
                    beta: beta[j],
                    silu,
                };
                let mut plane = alloc::vec![0f32; column.len()];
                affine(&column, &mut plane, &p);
                let got: Vec<f32> = want.iter().skip(j).step_by(width).copied().collect();
                assert_eq!(got, plane, "channel {j}, silu {silu}");
            }
            let params = QuantParams::from_range(-3.0, 3.0);
            let codes: Vec<u8> = want.iter().map(|&v| params.quantize(v)).collect();
            for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                let mut got = [0f64; 38];
                pixel_shifted_sums(isa, &x[at..], (pixels, stride), &shift, &mut got).unwrap();
                assert_eq!(got, sums, "{isa}");
                let mut got = alloc::vec![0f32; values.len()];
                pixel_affine_into(isa, values, &mut got, &a).unwrap();
                assert_eq!(got, want, "{isa}, silu {silu}");
                let mut got = alloc::vec![0u8; values.len()];
                pixel_affine_codes_into(isa, values, &mut got, &a, params).unwrap();
                assert_eq!(got, codes, "{isa}, silu {silu}, codes");
                // Pixel rows that are not whole pixels, and too many channels, are refused.
                assert!(
                    pixel_affine_into(
                        isa,
                        &values[1..],
                        &mut alloc::vec![0.0; values.len() - 1],
                        &a
                    )
                    .is_err()
                );
                let wide = [0f32; CHANNEL_CHUNK + 1];
                let mut sums = [0f64; 2 * CHANNEL_CHUNK + 2];
                assert!(pixel_shifted_sums(isa, &x, (1, 100), &wide, &mut sums).is_err());
                assert!(
                    pixel_shifted_sums(isa, &x[..7], (2, 23), &shift, &mut got_sums()).is_err()
                );
            }
        }
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

    #[test]
    fn layer_norm_rows_give_each_row_alone_its_bits_in_every_family() {
        // Row counts around the group of four (a remainder of 0 to 3 rows), lengths with a
        // tail after the lanes and one over a block, rows far from zero and each its own.
        for len in [1usize, 7, 16, 128, 1030] {
            for rows in [1usize, 3, 4, 6, 9] {
                let x: Vec<f32> = (0..rows * len)
                    .map(|i| ((i * 7919) % 1000) as f32 / 97.0 + (i / len) as f32 * 3.5 - 4.0)
                    .collect();
                let scale: Vec<f32> = (0..len).map(|i| 0.5 + i as f32 * 0.01).collect();
                let bias: Vec<f32> = (0..len).map(|i| i as f32 * -0.02).collect();
                for affine in [None, Some((&scale[..], &bias[..]))] {
                    let (s, b) = (affine.map(|a| a.0), affine.map(|a| a.1));
                    // Each row alone: its moments, then the row pass.
                    let mut want = alloc::vec![0f32; x.len()];
                    for (row, y) in x.chunks(len).zip(want.chunks_mut(len)) {
                        let (mean, var) = moments(row);
                        let stats = (mean as f32, (1.0 / (var + 1e-5f32 as f64).sqrt()) as f32);
                        layer_norm_row_into(row, y, stats, s, b);
                    }
                    // Without an affine, a normalized row has mean 0 and variance 1.
                    if affine.is_none() {
                        let (mean, var) = moments(&want[..len]);
                        assert!(mean.abs() < 1e-5 && (len == 1 || (var - 1.0).abs() < 1e-3));
                    }
                    for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                        let mut got = alloc::vec![0f32; x.len()];
                        layer_norm_rows(isa, &x, &mut got, (len, 1e-5), s, b).unwrap();
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&got), bits(&want), "{isa}, {rows} rows of {len}");
                    }
                }
            }
        }
        // Values that are not whole rows, and a bias without a scale: errors.
        let mut out = [0f32; 6];
        assert!(layer_norm_rows(Isa::Scalar, &[1.0; 6], &mut out, (4, 1e-5), None, None).is_err());
        assert!(layer_norm_rows(Isa::Scalar, &[1.0; 6], &mut out, (0, 1e-5), None, None).is_err());
        let b = [0.0f32; 3];
        assert!(
            layer_norm_rows(Isa::Scalar, &[1.0; 6], &mut out, (3, 1e-5), None, Some(&b)).is_err()
        );
    }
}
