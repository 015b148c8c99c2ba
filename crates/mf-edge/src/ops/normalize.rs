//! Normalizations: Softmax (the kernels' rows, summed in f32), LayerNormalization and
//! InstanceNormalization (in f32 with sums gathered in f64).
use std::sync::Mutex;

use anyhow::ensure;
use mf_kernels::norm::{self, PlaneAffine};
use mf_kernels::{Isa, QuantParams};

use super::{broadcast, normalized_axis};
use crate::tensor::Value;

/// Softmax (opset 13) along `axis`, with the kernels' softmax rows
/// ([`mf_kernels::pointwise::softmax_rows`]: `exp(x − max)` with the portable `exp`, summed
/// in f32 in a fixed order): rows along the last axis in place, other axes gathered into one.
pub fn softmax(isa: Isa, x: &[f32], shape: &[usize], axis: i64) -> anyhow::Result<Value> {
    let a = normalized_axis(axis, shape.len(), "Softmax")?;
    let (outer, len, inner) = split(shape, a, a + 1);
    let mut out = vec![0f32; x.len()];
    if inner == 1 {
        // The last axis (attention scores): contiguous rows.
        mf_kernels::pointwise::softmax_rows(isa, x, &mut out, len)?;
        return Ok(Value::F32(out, shape.into()));
    }
    let (mut row, mut y) = (vec![0f32; len], vec![0f32; len]);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * len * inner + j * inner + i;
            row.iter_mut().enumerate().for_each(|(j, v)| *v = x[at(j)]);
            mf_kernels::pointwise::softmax_rows(isa, &row, &mut y, len)?;
            y.iter().enumerate().for_each(|(j, &v)| out[at(j)] = v);
        }
    }
    Ok(Value::F32(out, shape.into()))
}

/// LayerNormalization (opset 17): normalized over the axes from `axis` on (with `epsilon`),
/// then `· scale + bias` (broadcast to those axes); written into `out` (any length and
/// contents).
pub fn layer_norm(
    isa: Isa,
    x: &[f32],
    shape: &[usize],
    scale: (&[f32], &[usize]),
    bias: Option<(&[f32], &[usize])>,
    (axis, epsilon): (i64, f32),
    mut out: Vec<f32>,
) -> anyhow::Result<Value> {
    let a = normalized_axis(axis, shape.len(), "LayerNormalization")?;
    let len = split(shape, a, shape.len()).1;
    ensure!(len > 0, "LayerNormalization over an empty axis");
    // Scale and bias over exactly the normalized axes (the usual case) are applied in the
    // same pass; anything else broadcasts afterwards. Either way each value is rounded to f32
    // after normalizing, after scaling and after shifting.
    let over_axes = |s: &[usize]| {
        let s = &s[s.iter().take_while(|&&d| d == 1).count()..];
        s.len() <= shape.len() - a && s.iter().product::<usize>() == len && {
            let tail = &shape[shape.len() - s.len()..];
            s == tail && shape[a..shape.len() - s.len()].iter().all(|&d| d == 1)
        }
    };
    let fused = over_axes(scale.1) && bias.is_none_or(|(_, sb)| over_axes(sb));
    let (row_scale, row_bias) = match fused {
        true => (Some(scale.0), bias.map(|(b, _)| b)),
        false => (None, None),
    };
    out.resize(x.len(), 0.0);
    // Rows are independent: runs of them are shared out across the team when there are many
    // values. Each run's rows go through the kernels of `isa` (the portable bits), their
    // moments a few rows at a time.
    let parallel = x.len() >= PARALLEL_VALUES;
    let failed = std::sync::atomic::AtomicBool::new(false);
    mf_kernels::team::for_each_run(&mut out, len, parallel, &|first, ys| {
        let rows = &x[first * len..][..ys.len()];
        if norm::layer_norm_rows(isa, rows, ys, (len, epsilon), row_scale, row_bias).is_err() {
            failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    if failed.into_inner() {
        isa.require()?;
        anyhow::bail!("LayerNormalization: the scale or bias does not match the normalized axes");
    }
    if fused {
        return Ok(Value::F32(out, shape.into()));
    }
    let scaled = broadcast(&out, shape, scale.0, scale.1, |x, s| x * s)?;
    match bias {
        None => Ok(scaled),
        Some((b, sb)) => {
            let (y, sy) = scaled.f32("LayerNormalization")?;
            broadcast(y, sy, b, sb, |y, b| y + b)
        }
    }
}

/// InstanceNormalization: every `[n, c]` plane of `x` `[N, C, D…]` normalized over its `D…`
/// values, then `· scale[c] + bias[c]`.
pub fn instance_norm(
    x: &[f32],
    shape: &[usize],
    scale: &[f32],
    bias: &[f32],
    epsilon: f32,
) -> anyhow::Result<Value> {
    ensure!(
        shape.len() >= 3,
        "InstanceNormalization of {shape:?}: inputs are [N, C, D1, …] with at least one spatial axis"
    );
    let (channels, plane) = (shape[1], split(shape, 2, shape.len()).1);
    ensure!(
        scale.len() == channels && bias.len() == channels,
        "InstanceNormalization of {channels} channels with {} scales and {} biases",
        scale.len(),
        bias.len()
    );
    ensure!(plane > 0, "InstanceNormalization over empty planes");
    let mut out = vec![0f32; x.len()];
    for (i, (row, y)) in x.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
        let c = i % channels;
        let p = plane_affine(norm::moments(row), scale[c], bias[c], epsilon, None);
        norm::affine(row, y, &p);
    }
    Ok(Value::F32(out, shape.into()))
}

/// InstanceNormalization's pass over one plane of these moments, with a following
/// per-channel `(γ, β)` and SiLU if given.
fn plane_affine(
    (mean, var): (f64, f64),
    scale: f32,
    bias: f32,
    epsilon: f32,
    then: Option<(f32, f32, bool)>,
) -> PlaneAffine {
    let (gamma, beta, silu) = then.unwrap_or((1.0, 0.0, false));
    PlaneAffine {
        mean: mean as f32,
        gain: (scale as f64 / (var + epsilon as f64).sqrt()) as f32,
        bias,
        gamma,
        beta,
        silu,
    }
}

/// GroupNorm as mf-export writes it, in one pass over the data with the kernels of `isa`:
/// `InstanceNormalization` of `x` viewed as `grouped` (`[N, G, …]`, with its per-group `scale`,
/// `bias` and `epsilon`), the result viewed as `shape` (`[N, C, …]`) times `gamma[c]` plus
/// `beta[c]`, then SiLU (`y · sigmoid(y)`) if `silu`. Every value is rounded as the separate
/// nodes round it, so the result is theirs bit for bit. `None` when a channel plane of `shape`
/// straddles two groups' planes (the caller then runs the nodes one by one). The output is
/// written into `buffer(x.len())`, whose contents do not matter, as [`NormOutput`] says.
#[allow(clippy::too_many_arguments)]
pub fn group_norm<T: NormOutput>(
    isa: Isa,
    x: &[f32],
    grouped: &[usize],
    (scale, bias, epsilon): (&[f32], &[f32], f32),
    (shape, (gamma, beta)): (&[usize], (&[f32], &[f32])),
    silu: bool,
    buffer: &mut dyn FnMut(usize) -> Vec<T>,
    form: T::Form,
) -> anyhow::Result<Option<Vec<T>>> {
    let (Some(&groups), Some(&channels)) = (grouped.get(1), shape.get(1)) else {
        return Ok(None);
    };
    let (group_plane, plane) = (
        split(grouped, 2, grouped.len()).1,
        split(shape, 2, shape.len()).1,
    );
    let fits = grouped.len() >= 3
        && plane > 0
        && group_plane > 0
        && group_plane.is_multiple_of(plane)
        && scale.len() == groups
        && bias.len() == groups
        && gamma.len() == channels
        && beta.len() == channels;
    if !fits {
        return Ok(None);
    }
    // Each group's plane is normalized where its moments were just read (it is still in
    // cache), and runs of group planes are shared out across the kernels' thread team.
    let mut out = buffer(x.len());
    ensure!(
        out.len() == x.len(),
        "GroupNorm output buffer of {} values for {}",
        out.len(),
        x.len()
    );
    let failure = Failure::default();
    let parallel = x.len() >= PARALLEL_VALUES;
    mf_kernels::team::for_each_run(&mut out, group_plane, parallel, &|first, y| {
        let x = &x[first * group_plane..][..y.len()];
        let planes = x.chunks(group_plane).zip(y.chunks_mut(group_plane));
        for (j, (xg, yg)) in planes.enumerate() {
            let g = first + j;
            let done = norm::plane_moments(isa, xg).and_then(|moments| {
                let cells = xg.chunks(plane).zip(yg.chunks_mut(plane));
                for (k, (row, y)) in cells.enumerate() {
                    let c = (g * group_plane / plane + k) % channels;
                    let then = Some((gamma[c], beta[c], silu));
                    let (s, b) = (scale[g % groups], bias[g % groups]);
                    T::write(
                        isa,
                        row,
                        y,
                        &plane_affine(moments, s, b, epsilon, then),
                        form,
                    )?;
                }
                Ok(())
            });
            if let Err(e) = done {
                failure.record(e);
                return;
            }
        }
    });
    failure.into_result()?;
    Ok(Some(out))
}

/// What a GroupNorm over pixel rows keeps between calls: each (image, channel)'s shift, each
/// block of pixels' sums, each (image, group)'s moments and each (image, channel)'s mean, gain
/// and bias.
#[derive(Default)]
pub struct NormScratch {
    shifts: Vec<f32>,
    sums: Vec<f64>,
    moments: Vec<[f64; 2]>,
    coefficients: Vec<f32>,
}

/// The size of a batch of NHWC images: `[images, pixels per image, channels]`.
pub type PixelRows = [usize; 3];

/// GroupNorm of NHWC images `x` (the layout the engine keeps between convolutions) into `out`:
/// each (image, group)'s moments from per-channel sums over the pixel rows of the values'
/// deviations from one of the group's values and of their squares (blocks of pixels summed in
/// f32, totals in f64: `pixel_moments`), then every pixel's channels through their group's
/// normalization, `gamma[c]`, `beta[c]` and SiLU if `silu`
/// ([`norm::ChannelAffine`]): each value rounded as the separate nodes round it, with moments
/// summed in another order than [`group_norm`]'s planes (so within rounding of it, not its
/// bits). Both passes are shared out across the thread team when large.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_pixels<T: NormOutput>(
    isa: Isa,
    x: &[f32],
    [images, pixels, channels]: PixelRows,
    groups: usize,
    (scale, bias, epsilon): (&[f32], &[f32], f32),
    (gamma, beta, silu): (&[f32], &[f32], bool),
    (out, form): (&mut [T], T::Form),
    scratch: &mut NormScratch,
) -> anyhow::Result<()> {
    ensure!(
        groups > 0 && channels > 0 && channels.is_multiple_of(groups) && pixels > 0,
        "GroupNorm of {groups} groups over {channels} channels of {pixels} pixels"
    );
    ensure!(
        x.len() == images * pixels * channels && out.len() == x.len(),
        "GroupNorm of {} values into {} for {images} images of {pixels} pixels × {channels}",
        x.len(),
        out.len()
    );
    ensure!(
        scale.len() == groups
            && bias.len() == groups
            && gamma.len() == channels
            && beta.len() == channels,
        "GroupNorm constants: one scale and bias per group, one γ and β per channel"
    );
    let per_group = channels / groups;
    let parallel = x.len() >= PARALLEL_PIXEL_VALUES;
    let rows = [images, pixels, channels];
    pixel_moments(isa, x, rows, groups, parallel, scratch)?;
    // Every image's per-channel means, then their gains, then the per-channel biases.
    let NormScratch {
        moments,
        coefficients,
        ..
    } = scratch;
    let len = images * channels;
    coefficients.clear();
    coefficients.resize(2 * len + channels, 0.0);
    for (i, &[mean, var]) in moments.iter().enumerate() {
        let g = i % groups;
        let plane = plane_affine((mean, var), scale[g], bias[g], epsilon, None);
        let at = i * per_group;
        coefficients[at..at + per_group].fill(plane.mean);
        coefficients[len + at..len + at + per_group].fill(plane.gain);
    }
    for (g, &b) in bias.iter().enumerate() {
        coefficients[2 * len + g * per_group..][..per_group].fill(b);
    }
    let (means, rest) = coefficients.split_at(len);
    let (gains, biases) = rest.split_at(len);
    let failure = Failure::default();
    mf_kernels::team::for_each_run(out, channels, parallel, &|first, ys| {
        // Runs of the pixels of one image at a time.
        let mut done = 0;
        while done < ys.len() / channels {
            let (n, p) = ((first + done) / pixels, (first + done) % pixels);
            let count = (pixels - p).min(ys.len() / channels - done);
            let at = (first + done) * channels;
            let a = norm::ChannelAffine {
                mean: &means[n * channels..][..channels],
                gain: &gains[n * channels..][..channels],
                bias: biases,
                gamma,
                beta,
                silu,
            };
            let y = &mut ys[done * channels..(done + count) * channels];
            if let Err(e) = T::write_pixels(isa, &x[at..at + y.len()], y, &a, form) {
                failure.record(e);
                return;
            }
            done += count;
        }
    });
    Ok(failure.into_result()?)
}

/// Each (image, group)'s `[mean, variance]` of NHWC images `x` into `scratch.moments`: each
/// group's values summed as deviations from one of them (its first channel's first pixel),
/// per block of pixels ([`norm::shifted_sums`]); each block's sums go to a place of their own
/// (shared out across the team when `parallel`), so the totals, added up in block order, do
/// not depend on how the blocks were shared out.
fn pixel_moments(
    isa: Isa,
    x: &[f32],
    [images, pixels, channels]: PixelRows,
    groups: usize,
    parallel: bool,
    scratch: &mut NormScratch,
) -> Result<(), mf_kernels::KernelError> {
    let (per_group, image) = (channels / groups, pixels * channels);
    let NormScratch {
        shifts,
        sums,
        moments,
        ..
    } = scratch;
    shifts.clear();
    for n in 0..images {
        for g in 0..groups {
            let first = x[n * image + g * per_group];
            shifts.extend(std::iter::repeat_n(first, per_group));
        }
    }
    let blocks = pixels.div_ceil(norm::PIXEL_BLOCK);
    let unit = 2 * channels;
    sums.clear();
    sums.resize(images * blocks * unit, 0.0);
    let failure = Failure::default();
    let shifts = &shifts[..];
    mf_kernels::team::for_each_run(sums, unit, parallel, &|first, run| {
        for (i, block) in run.chunks_mut(unit).enumerate() {
            let (n, b) = ((first + i) / blocks, (first + i) % blocks);
            let from = b * norm::PIXEL_BLOCK;
            let rows = (norm::PIXEL_BLOCK.min(pixels - from), channels);
            let at = n * image + from * channels;
            for start in (0..channels).step_by(norm::CHANNEL_CHUNK) {
                let width = (channels - start).min(norm::CHANNEL_CHUNK);
                let shift = &shifts[n * channels + start..][..width];
                let mut part = [0f64; 2 * norm::CHANNEL_CHUNK];
                let part = &mut part[..2 * width];
                if let Err(e) = norm::pixel_shifted_sums(isa, &x[at + start..], rows, shift, part) {
                    failure.record(e);
                    return;
                }
                block[start..start + width].copy_from_slice(&part[..width]);
                block[channels + start..][..width].copy_from_slice(&part[width..]);
            }
        }
    });
    failure.into_result()?;
    moments.clear();
    let count = (pixels * per_group) as f64;
    for (n, image_sums) in sums.chunks(blocks * unit).enumerate() {
        for g in 0..groups {
            let (mut d, mut q) = (0f64, 0f64);
            let channels_of = g * per_group..(g + 1) * per_group;
            for block in image_sums.chunks(unit) {
                d += block[channels_of.clone()].iter().sum::<f64>();
                q += block[channels..][channels_of.clone()].iter().sum::<f64>();
            }
            let (mean, square) = (d / count, q / count);
            let shift = shifts[n * channels + g * per_group] as f64;
            moments.push([shift + mean, (square - mean * mean).max(0.0)]);
        }
    }
    Ok(())
}

/// The first error a task of the team met (the others' are dropped): tasks record it and
/// return, the caller reads it once the team is done.
#[derive(Default)]
struct Failure(Mutex<Option<mf_kernels::KernelError>>);

impl Failure {
    /// Keeps `e` unless an error is kept already.
    fn record(&self, e: mf_kernels::KernelError) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
    }

    /// The kept error, if any.
    fn into_result(self) -> Result<(), mf_kernels::KernelError> {
        match self.0.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// What a fused GroupNorm writes: f32 values, or uint8 codes for the int8 layer that reads
/// them (each the code that layer would give the f32 value).
pub trait NormOutput: Copy + Send + Sync {
    /// What the writing needs beyond the plane (the codes' parameters).
    type Form: Copy + Send + Sync;
    /// Normalizes one plane `x` into `out`.
    fn write(
        isa: Isa,
        x: &[f32],
        out: &mut [Self],
        plane: &PlaneAffine,
        form: Self::Form,
    ) -> Result<(), mf_kernels::KernelError>;
    /// Normalizes whole pixel rows `x` into `out`.
    fn write_pixels(
        isa: Isa,
        x: &[f32],
        out: &mut [Self],
        a: &norm::ChannelAffine,
        form: Self::Form,
    ) -> Result<(), mf_kernels::KernelError>;
}

impl NormOutput for f32 {
    type Form = ();
    fn write(
        isa: Isa,
        x: &[f32],
        out: &mut [f32],
        plane: &PlaneAffine,
        _: (),
    ) -> Result<(), mf_kernels::KernelError> {
        norm::plane_affine(isa, x, out, plane)
    }
    fn write_pixels(
        isa: Isa,
        x: &[f32],
        out: &mut [f32],
        a: &norm::ChannelAffine,
        _: (),
    ) -> Result<(), mf_kernels::KernelError> {
        norm::pixel_affine_into(isa, x, out, a)
    }
}

impl NormOutput for u8 {
    type Form = QuantParams;
    fn write(
        isa: Isa,
        x: &[f32],
        out: &mut [u8],
        plane: &PlaneAffine,
        params: QuantParams,
    ) -> Result<(), mf_kernels::KernelError> {
        norm::plane_affine_codes(isa, x, out, plane, params)
    }
    fn write_pixels(
        isa: Isa,
        x: &[f32],
        out: &mut [u8],
        a: &norm::ChannelAffine,
        params: QuantParams,
    ) -> Result<(), mf_kernels::KernelError> {
        norm::pixel_affine_codes_into(isa, x, out, a, params)
    }
}

/// From this many values on, a LayerNormalization or a GroupNorm of planes is shared out across
/// the thread team: the batch-1 U-Net's GroupNorms of 6K-25K values ran 6% faster shared
/// (int8, AMD EPYC Zen 4: 0.401 → 0.376 ms for the network; fp32 level) than below 2^15.
/// 2^11 shared the batch-1 DiT's layer norms of 16 tokens × 128, which then ran faster and
/// made the Adds after them slower, reading what the other core wrote (int8 1% slower).
const PARALLEL_VALUES: usize = 1 << 12;

/// [`PARALLEL_VALUES`] for a GroupNorm of pixel rows, whose neighbours (convolutions) are
/// shared out from fewer values too: the batch-1 U-Net's 14×14 GroupNorm of 3,136 values went
/// from 3.6 to 2.7 µs shared.
const PARALLEL_PIXEL_VALUES: usize = 1 << 11;

/// `(product of dims before from, product of dims from..to, product of dims after to)`.
fn split(shape: &[usize], from: usize, to: usize) -> (usize, usize, usize) {
    (
        shape[..from].iter().product(),
        shape[from..to].iter().product(),
        shape[to..].iter().product(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_f64_along_any_axis() {
        let x: Vec<f32> = (0..30)
            .map(|i| ((i * 53) % 17) as f32 * 1.3 - 9.0)
            .collect();
        // [5, 6] along the last axis, and its transpose [6, 5] along the first.
        let isa = Isa::detect();
        let Value::F32(last, _) = softmax(isa, &x, &[5, 6], -1).unwrap() else {
            panic!("float output")
        };
        let xt: Vec<f32> = (0..30).map(|i| x[(i % 5) * 6 + i / 5]).collect();
        let Value::F32(first, _) = softmax(isa, &xt, &[6, 5], 0).unwrap() else {
            panic!("float output")
        };
        for (r, row) in x.chunks(6).enumerate() {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            for (j, &v) in row.iter().enumerate() {
                let want = (v as f64 - max).exp() / sum;
                assert!((last[r * 6 + j] as f64 - want).abs() < 1e-6 * want.max(1e-3));
                assert_eq!(first[j * 5 + r], last[r * 6 + j]);
            }
        }
    }

    #[test]
    fn layer_norm_gives_the_same_bits_on_every_kernel_family() {
        // Rows of 37 (two lane sets and a tail), far from zero mean, with scale and bias.
        let x: Vec<f32> = (0..5 * 37)
            .map(|i| 3.0 + ((i * 7919) % 1000) as f32 / 300.0)
            .collect();
        let s: Vec<f32> = (0..37).map(|i| 0.5 + i as f32 * 0.03).collect();
        let b: Vec<f32> = (0..37).map(|i| i as f32 * -0.01).collect();
        let run = |isa| {
            let shape = [5, 37];
            layer_norm(
                isa,
                &x,
                &shape,
                (&s, &[37]),
                Some((&b, &[37])),
                (-1, 1e-5),
                Vec::new(),
            )
            .unwrap()
        };
        let want = run(Isa::Scalar);
        let Value::F32(rows, _) = &want else {
            panic!("float output")
        };
        for row in rows.chunks(37) {
            // Normalized, then scaled and shifted: undo the affine and the row has mean 0.
            let mean: f32 = row
                .iter()
                .zip(&s)
                .zip(&b)
                .map(|((y, s), b)| (y - b) / s)
                .sum();
            assert!(mean.abs() < 1e-4, "{mean}");
        }
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            assert_eq!(run(isa), want, "{isa}");
        }
    }

    #[test]
    fn layer_norm_in_one_pass_equals_broadcasting_afterwards() {
        let x: Vec<f32> = (0..24)
            .map(|i| ((i * 37) % 11) as f32 * 0.7 - 2.0)
            .collect();
        let (s, b) = ([0.5f32, -1.0, 2.0, 1.5], [0.1f32, 0.2, -0.3, 0.0]);
        // [1, 4] is over the normalized axis (one pass); the same values repeated as [3, 4]
        // broadcast afterwards.
        let rep = |v: &[f32]| v.repeat(3);
        let one_pass = layer_norm(
            Isa::detect(),
            &x,
            &[2, 3, 4],
            (&s, &[1, 4]),
            Some((&b, &[4])),
            (-1, 1e-5),
            Vec::new(),
        );
        let (rs, rb) = (rep(&s), rep(&b));
        let after = layer_norm(
            Isa::detect(),
            &x,
            &[2, 3, 4],
            (&rs, &[3, 4]),
            Some((&rb, &[3, 4])),
            (-1, 1e-5),
            Vec::new(),
        );
        assert_eq!(one_pass.unwrap(), after.unwrap());
        let one_pass = layer_norm(
            Isa::detect(),
            &x,
            &[2, 3, 4],
            (&s, &[4]),
            None,
            (-1, 1e-5),
            Vec::new(),
        )
        .unwrap();
        let after = layer_norm(
            Isa::detect(),
            &x,
            &[2, 3, 4],
            (&rs, &[3, 4]),
            None,
            (-1, 1e-5),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(one_pass, after);
        // Each normalized row has mean 0 and variance 1 before the affine.
        let Value::F32(y, _) = layer_norm(
            Isa::detect(),
            &x,
            &[6, 4],
            (&[1.0; 4], &[4]),
            None,
            (-1, 0.0),
            vec![7.0; 3],
        )
        .unwrap() else {
            panic!("float output")
        };
        for row in y.chunks(4) {
            let mean = row.iter().sum::<f32>() / 4.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{row:?}");
        }
    }
}
