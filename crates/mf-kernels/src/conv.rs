//! 2-D convolution (group 1) on the packed GEMMs: the weights `[M, C, KH, KW]` are packed once,
//! tap-major (`[M, KH, KW, C]`), as a dense layer of `M` outputs over `KH·KW·C` depths, and each
//! call lays the input out as padded NHWC images and runs the GEMM with its fused epilogue. With
//! stride and dilation 1 the tile kernels read each kernel row's taps straight from those images
//! (an implicit GEMM: one run of the depth per kernel row, see `Implicit`). A kernel row must
//! then be whole depth steps of the int8 kernel: an image's 1 or 3 colour channels are staged
//! with zero-weight channels added to make it so (`staged_channels`), which costs a few more
//! multiply-adds and spares laying out 3-byte runs. Otherwise the
//! receptive fields are first copied out as rows (im2col: one row per output position, ordered
//! batch, y, x; columns ordered ky, kx, channel, as the weights are). Padding is the value 0,
//! which in uint8 codes is the input's zero point, so the integers summed are those of the
//! direct convolution in [`crate::reference::conv_i8`], and the int8 result is the same bit for
//! bit. Input and output are ONNX's planes (NCHW) or pixel rows (NHWC, [`crate::Layouts`]):
//! pixel rows in are copied into the padded images row by row (a 1×1 kernel reads them as
//! they are), and pixel rows out are the GEMM's own rows, written in place by its epilogue
//! (an implicit GEMM's rows in the padding dropped by its row map), with no transpose.
#[cfg(feature = "alloc")]
use alloc::vec::Vec;

use crate::error::KernelError;
#[cfg(feature = "alloc")]
use crate::{
    activation::Activation,
    arch::{AForm, Depth},
    epilogue::{RowAddend, RowMap},
    error::check_len,
    gemm::{
        GemmScratch, Input, Output, Share, check_depth, gemm_f32_rows, gemm_i8_rows, gemm_i8_shared,
    },
    isa::Isa,
    layout::{Layout, Layouts, copy_short},
    pack::convert_codes,
    pack::{PackedF32, PackedI8},
    reference::QuantizedLayer,
    transpose::{Transposable, transpose},
};

/// The shape of a 2-D convolution: input channels, kernel, padding, strides and dilations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels `C`.
    pub channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Padding at the top, left, bottom and right.
    pub pads: [usize; 4],
    /// Vertical and horizontal stride (at least 1).
    pub strides: [usize; 2],
    /// Vertical and horizontal dilation (at least 1).
    pub dilations: [usize; 2],
}

impl ConvGeometry {
    /// Depth of one output's dot product: `C·KH·KW`.
    pub fn depth(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// Checks what holds for any input: a kernel of at least one tap and channel, strides and
    /// dilations of at least 1.
    pub fn check(&self) -> Result<(), KernelError> {
        if self.kernel.contains(&0) || self.channels == 0 {
            return Err(KernelError::Geometry("the kernel is empty"));
        }
        if self.strides.contains(&0) || self.dilations.contains(&0) {
            return Err(KernelError::Geometry(
                "strides and dilations must be at least 1",
            ));
        }
        Ok(())
    }

    /// Output height and width for an input of `height × width`, or an error when the
    /// geometry fails [`ConvGeometry::check`] or the dilated kernel does not fit the padded
    /// input.
    pub fn output_size(&self, height: usize, width: usize) -> Result<[usize; 2], KernelError> {
        self.check()?;
        let side = |size: usize, before: usize, after: usize, axis: usize| {
            let span = (self.kernel[axis] - 1)
                .checked_mul(self.dilations[axis])?
                .checked_add(1)?;
            let padded = size.checked_add(before)?.checked_add(after)?;
            padded.checked_sub(span).map(|v| v / self.strides[axis] + 1)
        };
        match (
            side(height, self.pads[0], self.pads[2], 0),
            side(width, self.pads[1], self.pads[3], 1),
        ) {
            (Some(oh), Some(ow)) => Ok([oh, ow]),
            _ => Err(KernelError::Geometry(
                "the dilated kernel does not fit the padded input",
            )),
        }
    }

    /// The input position `(y, x)` read by output `(oy, ox)` at kernel tap `(ky, kx)`, or
    /// `None` in the padding.
    #[inline]
    pub(crate) fn tap(
        &self,
        [height, width]: [usize; 2],
        [oy, ox]: [usize; 2],
        [ky, kx]: [usize; 2],
    ) -> Option<usize> {
        let y = (oy * self.strides[0] + ky * self.dilations[0]).checked_sub(self.pads[0])?;
        let x = (ox * self.strides[1] + kx * self.dilations[1]).checked_sub(self.pads[1])?;
        (y < height && x < width).then_some(y * width + x)
    }
}

/// A batch of `[N, C, H, W]` images: its size as `[N, H, W]` (channels are the geometry's).
pub type ImageSize = [usize; 3];

/// Checks an NCHW buffer against its size and returns the output `[OH, OW]`.
pub(crate) fn check_images(
    g: &ConvGeometry,
    [n, h, w]: ImageSize,
    len: usize,
) -> Result<[usize; 2], KernelError> {
    let expected = n
        .checked_mul(g.channels)
        .and_then(|v| v.checked_mul(h))
        .and_then(|v| v.checked_mul(w))
        .ok_or(KernelError::Geometry("the input size overflows"))?;
    if expected != len {
        return Err(KernelError::Shape {
            what: "input",
            expected,
            got: len,
        });
    }
    g.output_size(h, w)
}

/// The receptive fields of `x` (`[N, C, H, W]` or `[N, H, W, C]`, as `layout` says) as rows
/// `[N·OH·OW, KH·KW·C]`, `pad` outside, columns in tap-major order (ky, kx, then channel: see
/// [`tap_major`]), each row `pitch` values apart (its values past the depth hold `pad`).
///
/// The input is first laid out once as padded NHWC images (`staging`), so that a kernel row
/// of taps is one contiguous run of `KW·C` values (undilated) or `KW` runs of `C`: every row is
/// a few short copies, with no bounds test per tap. A 1×1 kernel with stride 1 and no padding
/// is the NCHW → NHWC transpose alone, and NHWC input itself (when `pitch` is the depth).
#[cfg(feature = "alloc")]
#[allow(clippy::too_many_arguments)]
fn im2col<'a, T: Transposable + Sync + Send>(
    g: &ConvGeometry,
    (x, layout): (&'a [T], Layout),
    [n, h, w]: ImageSize,
    [oh, ow]: [usize; 2],
    (pad, pitch): (T, usize),
    (staging, tables): (&mut Vec<T>, &mut PixelStarts),
    rows: &'a mut Vec<T>,
) -> Result<&'a [T], KernelError> {
    let [kh, kw] = g.kernel;
    let (positions, depth, channels) = (oh * ow, g.depth(), g.channels);
    debug_assert!(pitch >= depth, "a row holds the whole depth");
    let len = n
        .checked_mul(positions)
        .and_then(|v| v.checked_mul(pitch))
        .ok_or(KernelError::Geometry("the receptive fields overflow"))?;
    let plain = g.kernel == [1, 1] && g.strides == [1, 1] && g.pads == [0; 4] && pitch == depth;
    if plain && layout == Layout::Nhwc {
        return Ok(x);
    }
    if plain {
        let rows = grown(rows, len, pad);
        let starts = tables.get(channels, [h, w], [0, 0], w);
        per_image(
            (x, channels * h * w),
            (rows, positions * depth),
            n,
            &|image, out| to_nhwc(image, channels, h * w, starts, out),
        );
        return Ok(rows);
    }
    let size = ([n, h, w], channels);
    let (staging, pw) = stage_padded(g, (x, layout), size, pad, (staging, tables), 0)?;
    let padded_image = staging.len() / n.max(1);
    // Every element is written below, so a buffer kept from another convolution is not
    // cleared first.
    let rows = grown(rows, len, pad);
    let [sy, sx] = g.strides;
    let [dy, dx] = g.dilations;
    let run = kw * channels;
    if len == 0 {
        return Ok(rows); // No output positions (or no images): nothing to lay out.
    }
    let staged: &[T] = staging;
    // Runs of rows shared out across the team (one image's rows included), each row's output
    // position followed from the run's first.
    let fields = |first: usize, fields: &mut [T]| {
        let (mut image, mut oy, mut ox) = (first / positions, first % positions / ow, first % ow);
        for row in fields.chunks_exact_mut(pitch) {
            let padded = &staged[image * padded_image..(image + 1) * padded_image];
            let (taps, beyond) = row.split_at_mut(depth);
            beyond.fill(pad);
            for (ky, taps) in taps.chunks_exact_mut(run).take(kh).enumerate() {
                // In the padded image: output_size guarantees every tap lies inside it.
                let at = ((oy * sy + ky * dy) * pw + ox * sx) * channels;
                if dx == 1 {
                    copy_short(taps, &padded[at..at + run]);
                } else {
                    for (kx, tap) in taps.chunks_exact_mut(channels).enumerate() {
                        let from = at + kx * dx * channels;
                        copy_short(tap, &padded[from..from + channels]);
                    }
                }
            }
            ox += 1;
            if ox == ow {
                (ox, oy) = (0, oy + 1);
                if oy == oh {
                    (oy, image) = (0, image + 1);
                }
            }
        }
    };
    #[cfg(feature = "std")]
    crate::team::for_each_run(rows, pitch, len >= PARALLEL_VALUES, &fields);
    #[cfg(not(feature = "std"))]
    fields(0, rows);
    Ok(rows)
}

/// `x` (`[N, C, H, W]` or `[N, H, W, C]`, as `layout` says) as padded NHWC images of
/// `staged ≥ C` channels a pixel (`pad` in the border and in each pixel's channels past `C`)
/// in `staging`, each image followed by `slack` further elements (unspecified: read only by
/// rows whose results are dropped). Returns the images and the padded width.
#[cfg(feature = "alloc")]
fn stage_padded<'a, T: Transposable + Sync + Send>(
    g: &ConvGeometry,
    (x, layout): (&[T], Layout),
    ([n, h, w], staged): (ImageSize, usize),
    pad: T,
    (staging, tables): (&'a mut Vec<T>, &mut PixelStarts),
    slack: usize,
) -> Result<(&'a [T], usize), KernelError> {
    let channels = g.channels;
    let [top, left, bottom, right] = g.pads;
    // output_size has checked that these sums do not overflow.
    let (ph, pw) = (h + top + bottom, w + left + right);
    let padded_image = ph
        .checked_mul(pw)
        .and_then(|v| v.checked_mul(staged))
        .ok_or(KernelError::Geometry("the padded input overflows"))?;
    let image = padded_image
        .checked_add(slack)
        .ok_or(KernelError::Geometry("the padded input overflows"))?;
    let total = n
        .checked_mul(image)
        .ok_or(KernelError::Geometry("the padded input overflows"))?;
    let staging = grown(staging, total, pad);
    if layout == Layout::Nhwc {
        // Pixel rows are staged line by line: one image's lines shared across the team when it
        // is large (each thread then stages the lines its share of the GEMM mostly reads).
        let line_len = pw * staged;
        let lines = |image: &[T], first: usize, padded: &mut [T]| {
            for (y, line) in (first..).zip(padded.chunks_exact_mut(line_len)) {
                match y.checked_sub(top).filter(|&iy| iy < h) {
                    None => line.fill(pad),
                    Some(iy) => {
                        let from = &image[iy * w * channels..][..w * channels];
                        stage_line(line, from, (left, channels, staged), pad);
                    }
                }
            }
        };
        #[cfg(feature = "std")]
        if n == 1 && padded_image >= PARALLEL_VALUES {
            let padded = &mut staging[..padded_image];
            crate::team::for_each_run(padded, line_len, true, &|first, run| lines(x, first, run));
            return Ok((staging, pw));
        }
        per_image(
            (x, channels * h * w),
            (staging, image),
            n,
            &|image, padded| lines(image, 0, &mut padded[..padded_image]),
        );
        return Ok((staging, pw));
    }
    let starts = tables.get(staged, [h, w], [top, left], pw);
    per_image(
        (x, channels * h * w),
        (staging, image),
        n,
        &|image, padded| {
            let padded = &mut padded[..padded_image];
            if staged > channels {
                // Pixels of padded channels: every value the input does not overwrite is pad.
                padded.fill(pad);
            } else {
                // The interior is overwritten, so only the border is filled with the pad value
                // (a buffer kept from another convolution may hold another zero point there).
                let (above, rest) = padded.split_at_mut(top * pw * channels);
                above.fill(pad);
                let (lines, below) = rest.split_at_mut(h * pw * channels);
                below.fill(pad);
                for line in lines.chunks_exact_mut(pw * channels) {
                    line[..left * channels].fill(pad);
                    line[(left + w) * channels..].fill(pad);
                }
            }
            to_nhwc(image, channels, h * w, starts, padded)
        },
    );
    Ok((staging, pw))
}

/// One padded line of `staged`-channel pixels from a line of `channels`-channel pixel rows
/// `from`: `left` pixels of `pad`, the pixels (their channels past `channels` `pad`), then
/// `pad` to the line's end.
#[cfg(feature = "alloc")]
fn stage_line<T: Copy>(
    line: &mut [T],
    from: &[T],
    (left, channels, staged): (usize, usize, usize),
    pad: T,
) {
    let (before, rest) = line.split_at_mut(left * staged);
    before.fill(pad);
    let inside = from.len() / channels.max(1) * staged;
    let (inside, after) = rest.split_at_mut(inside);
    after.fill(pad);
    if staged == channels {
        inside.copy_from_slice(from);
        return;
    }
    for (pixel, values) in inside
        .chunks_exact_mut(staged)
        .zip(from.chunks_exact(channels))
    {
        let (head, tail) = pixel.split_at_mut(channels);
        copy_short(head, values);
        tail.fill(pad);
    }
}

/// The channels a pixel is staged with for an implicit GEMM in depth steps of `ku`: `C`
/// itself when a kernel row's `KW·C` taps are whole steps, else the fewest channels above it
/// that make them so, when that at most doubles the depth or stays within one step (an image's
/// 1 or 3 colour channels). The added channels have zero weights. `None`: no implicit GEMM
/// (a stride or dilation above 1, a 1×1 kernel, or too much padding).
#[cfg(feature = "alloc")]
fn staged_channels(g: &ConvGeometry, ku: usize) -> Option<usize> {
    let implicit = g.strides == [1, 1] && g.dilations == [1, 1] && g.kernel != [1, 1];
    let c = g.channels;
    let staged = (c..).find(|s| (g.kernel[1] * s).is_multiple_of(ku))?;
    (implicit && (staged <= 2 * c || staged <= ku)).then_some(staged)
}

/// A convolution that reads its receptive fields straight from the padded NHWC images (an
/// implicit GEMM): with stride and dilation 1, output `(oy, ox)`'s taps of kernel row `ky` are
/// the `KW·C` consecutive values from padded pixel `(oy + ky, ox)`, so the outputs of an image,
/// taken as `OH` rows of the padded width `PW` (the last `KW − 1` of each row are dropped),
/// are GEMM rows `C` values apart, and each kernel row is one run of the depth.
#[cfg(feature = "alloc")]
struct Implicit {
    /// GEMM rows per image: `(OH − 1)·PW + OW`.
    rows: usize,
    /// The padded width `PW`.
    padded_width: usize,
}

#[cfg(feature = "alloc")]
impl Implicit {
    /// The layout for `g` (its channels as staged) on images of `[h, w]` read in depth steps
    /// of `ku` values, or `None` when the receptive fields must be laid out (a stride or
    /// dilation above 1, a 1×1 kernel, or kernel rows that are not whole steps).
    fn new(g: &ConvGeometry, [oh, ow]: [usize; 2], w: usize, ku: usize) -> Option<Self> {
        let takes = staged_channels(g, ku) == Some(g.channels) && oh > 0 && ow > 0;
        let padded_width = w + g.pads[1] + g.pads[3];
        takes.then(|| Implicit {
            rows: (oh - 1) * padded_width + ow,
            padded_width,
        })
    }

    /// One run per kernel row, for depth steps of `ku` elements of `size` bytes (1 for fp32
    /// rows, whose stride counts values).
    fn depth(&self, g: &ConvGeometry, (ku, size): (usize, usize)) -> Depth {
        Depth {
            runs: g.kernel[0],
            steps: g.kernel[1] * g.channels / ku,
            stride: self.padded_width * g.channels * size,
        }
    }

    /// `[N, rows, M]` GEMM rows → `[N, M, OH, OW]` planes: each output row's `OW` GEMM rows
    /// transposed straight into place, the `KW − 1` rows past its end dropped.
    fn to_planes<T: Transposable + Sync + Send>(
        &self,
        rows: &[T],
        (n, m, [oh, ow]): (usize, usize, [usize; 2]),
        out: &mut [T],
    ) {
        let (virtual_rows, pw, plane) = (self.rows, self.padded_width, oh * ow);
        per_image(
            (rows, virtual_rows * m),
            (out, plane * m),
            n,
            &|rows, planes| {
                for oy in 0..oh {
                    let line = &rows[oy * pw * m..];
                    transpose(line, m, [ow, m], planes, |j| j * plane + oy * ow);
                }
            },
        );
    }

    /// Where its GEMM rows go in pixel rows `[OH, OW, M]`: of each padded line, the first `OW`.
    fn pixel_rows(&self, ow: usize) -> RowMap {
        RowMap::Lines {
            width: self.padded_width,
            kept: ow,
        }
    }
}

/// The tables kept between calls.
#[cfg(feature = "alloc")]
const PIXEL_TABLES: usize = 32;

/// Where each pixel of an image goes in padded NHWC rows (no division per pixel), for the
/// last few geometries asked for: a network's convolutions come back to the same few, so a
/// table is built once, not per call.
#[cfg(feature = "alloc")]
#[derive(Default)]
pub(crate) struct PixelStarts {
    /// `[channels, h, w, top, left, stride]` and its table.
    tables: Vec<([usize; 6], Vec<usize>)>,
}

#[cfg(feature = "alloc")]
impl PixelStarts {
    /// Where pixel `p` of an `[h, w]` image goes in NHWC rows `stride` pixels wide at offset
    /// `[top, left]`: `((y + top)·stride + left + x)·channels`.
    fn get(
        &mut self,
        channels: usize,
        [h, w]: [usize; 2],
        [top, left]: [usize; 2],
        stride: usize,
    ) -> &[usize] {
        let key = [channels, h, w, top, left, stride];
        let at = match self.tables.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let mut table = Vec::with_capacity(h * w);
                for y in 0..h {
                    let row = (y + top) * stride + left;
                    table.extend((row..row + w).map(|pixel| pixel * channels));
                }
                if self.tables.len() == PIXEL_TABLES {
                    self.tables.remove(0);
                }
                self.tables.push((key, table));
                self.tables.len() - 1
            }
        };
        &self.tables[at].1
    }
}

/// Writes one NCHW image (`channels` planes of `plane` values) as NHWC pixel rows into `out`,
/// pixel `p`'s channels from `starts[p]`, leaving the rest of `out` as it is.
#[cfg(feature = "alloc")]
fn to_nhwc<T: Transposable>(
    image: &[T],
    channels: usize,
    plane: usize,
    starts: &[usize],
    out: &mut [T],
) {
    transpose(image, plane, [channels, plane], out, |p| starts[p]);
}

/// From this many output values on, a convolution's layout work (its input staged or its
/// receptive fields laid out, one image's rows included) and its input's quantization are
/// shared out across the thread team. 2^13 against 2^15 shares the batch-1 U-Net's 28×28
/// staging of 16 channels and 14×14 quantization of 64 (12.5K values each), with the
/// products after them ([`SHARE`]).
#[cfg(feature = "alloc")]
const PARALLEL_VALUES: usize = 1 << 13;

/// How a convolution over the whole batch at once (its receptive fields laid out) shares its
/// product: from 2^12 outputs or 2^18 multiply-adds, less than a dense layer
/// ([`Share::Dense`]), since its input is laid out shared too and each core then reads the
/// rows it wrote. The batch-1 int8 U-Net's stride-2 convolution (3,136 outputs, 470K
/// multiply-adds over whole tiles) went from 10.0 to 6.9 µs, its 14×14 1×1 convolutions of
/// 6,272 outputs from 6.6 to 4.1 and 3.6 to 2.7 µs. The DiT's patch convolution (2,048
/// outputs, 100K multiply-adds) stays on one thread: sharing from 2^11 outputs, which shared
/// it and the DiT's dense layers, made the batch-1 DiT 3% slower.
#[cfg(feature = "alloc")]
const SHARE: Share = Share::Above {
    outputs: 1 << 12,
    macs: 1 << 18,
};

/// How a convolution run image by image (the implicit GEMM) shares each image's product: one
/// image's as [`SHARE`]; several images are shared out whole instead ([`per_image`]).
#[cfg(feature = "alloc")]
fn per_image_share(images: usize) -> Share {
    match images {
        1 => SHARE,
        _ => Share::Never,
    }
}

/// Values a run of the input's quantization starts on a multiple of.
#[cfg(feature = "alloc")]
const CODE_RUN: usize = 64;

/// Runs `f` on each of `images` images: its `in_len` values of `input` and its `out_len`
/// values of `output`, shared out across the thread team (contiguous runs of images) when
/// there is enough to do.
#[cfg(feature = "alloc")]
pub(crate) fn per_image<A: Sync, B: Send>(
    input: (&[A], usize),
    output: (&mut [B], usize),
    images: usize,
    f: &(dyn Fn(&[A], &mut [B]) + Sync),
) {
    per_image_at(input, output, images, &|_, a, b| f(a, b))
}

/// [`per_image`] telling `f` which image it is given: `f(i, input_i, output_i)`.
#[cfg(feature = "alloc")]
pub(crate) fn per_image_at<A: Sync, B: Send, F: Fn(usize, &[A], &mut [B]) + Sync>(
    (input, in_len): (&[A], usize),
    (output, out_len): (&mut [B], usize),
    images: usize,
    f: &F,
) {
    if images == 0 || in_len == 0 || out_len == 0 {
        return; // Nothing to lay out (an empty batch).
    }
    let images = images.min(input.len() / in_len).min(output.len() / out_len);
    let output = &mut output[..images * out_len];
    let image = |i: usize, out: &mut [B]| f(i, &input[i * in_len..(i + 1) * in_len], out);
    #[cfg(feature = "std")]
    crate::team::for_each_chunk(output, out_len, output.len() >= PARALLEL_VALUES, &image);
    #[cfg(not(feature = "std"))]
    output
        .chunks_mut(out_len)
        .enumerate()
        .for_each(|(i, out)| image(i, out));
}

/// The element count of `[outputs, depth]` weights, or an error when it overflows.
#[cfg(feature = "alloc")]
fn weight_count(outputs: usize, depth: usize) -> Result<usize, KernelError> {
    outputs
        .checked_mul(depth)
        .ok_or(KernelError::Geometry("the weights' size overflows"))
}

/// ONNX's weights `[M, C, KH, KW]` reordered to `[M, KH, KW, S]`, the column order of
/// [`im2col`]'s rows, each tap's channels past `C` up to `staged = S` zero.
#[cfg(feature = "alloc")]
fn tap_major<T: Copy + Default>(weights: &[T], g: &ConvGeometry, staged: usize) -> Vec<T> {
    let [kh, kw] = g.kernel;
    let (c, depth) = (g.channels, g.depth());
    let mut out = Vec::with_capacity(weights.len() / c * staged);
    for filter in weights.chunks_exact(depth) {
        for tap in 0..kh * kw {
            out.extend((0..c).map(|ch| filter[ch * kh * kw + tap]));
            out.extend((c..staged).map(|_| T::default()));
        }
    }
    out
}

/// Buffers a convolution reuses from call to call: the padded NHWC input (and where each pixel
/// goes in it), the receptive fields, the input's codes and the GEMM's output rows (large, and
/// faulted in page by page when freshly allocated).
#[cfg(feature = "alloc")]
#[derive(Default)]
pub struct ConvScratch {
    f32_staging: Vec<f32>,
    u8_staging: Vec<u8>,
    pixel_starts: PixelStarts,
    f32_fields: Vec<f32>,
    u8_fields: Vec<u8>,
    codes: Vec<u8>,
    f32_rows: Vec<f32>,
    u8_rows: Vec<u8>,
    /// The padded codes in the kernel's element form, when it is not the codes themselves.
    a_form_staging: Vec<u8>,
    /// The receptive fields in the kernel's element form (im2col's product).
    gemm: GemmScratch,
}

/// The first `len` elements of `buf`, which grows (filled with `fill`) when shorter; never
/// shrunk, so that convolutions of other sizes sharing it do not refill it call after call.
/// The contents are unspecified: the caller overwrites every element it reads.
#[cfg(feature = "alloc")]
fn grown<T: Copy>(buf: &mut Vec<T>, len: usize, fill: T) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, fill);
    }
    &mut buf[..len]
}

/// `[N·P, M]` rows (one per output position) → `[N, M, P]` planes.
#[cfg(feature = "alloc")]
fn to_planes<T: Transposable + Sync + Send>(
    rows: &[T],
    n: usize,
    m: usize,
    positions: usize,
    out: &mut [T],
) {
    let image = positions * m;
    per_image((rows, image), (out, image), n, &|rows, planes| {
        transpose(rows, m, [positions, m], planes, |o| o * positions)
    });
}

/// A convolution packed for one kernel family: its geometry and the packed GEMM `G` that runs
/// over the receptive fields ([`PackedConvI8`] or [`PackedConvF32`]).
#[cfg(feature = "alloc")]
pub struct PackedConv<G> {
    gemm: G,
    geometry: ConvGeometry,
    outputs: usize,
    /// The channels an input pixel is staged with (see [`staged_channels`]): the geometry's,
    /// or more, whose weights are zero.
    staged: usize,
}

/// An int8 convolution: per-output-channel int8 weights, uint8 input codes of one scale and
/// zero point, the dense layers' epilogue.
#[cfg(feature = "alloc")]
pub type PackedConvI8 = PackedConv<PackedI8>;

/// An fp32 convolution.
#[cfg(feature = "alloc")]
pub type PackedConvF32 = PackedConv<PackedF32>;

#[cfg(feature = "alloc")]
impl PackedConvI8 {
    /// The scale and zero point its input is quantized with.
    pub fn input(&self) -> crate::QuantParams {
        self.gemm.input()
    }
}

#[cfg(feature = "alloc")]
impl<G> PackedConv<G> {
    /// Output channels `M`.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
    /// The geometry it was packed with.
    pub fn geometry(&self) -> &ConvGeometry {
        &self.geometry
    }
}

#[cfg(feature = "alloc")]
impl PackedConvI8 {
    /// Packs `layer` (weights `[M, C·KH·KW]`, i.e. ONNX's `[M, C, KH, KW]` flattened) for `isa`.
    pub fn new(
        isa: Isa,
        layer: &QuantizedLayer<'_>,
        geometry: ConvGeometry,
    ) -> Result<Self, KernelError> {
        check_len("convolution depth", geometry.depth(), layer.k)?;
        geometry.check()?;
        check_len(
            "weights",
            weight_count(layer.n, layer.k)?,
            layer.weights.len(),
        )?;
        let micro = crate::arch::i8_micro(isa.require()?, layer.n, layer.activation);
        let ku = crate::arch::for_weights(micro, layer.weights).ku;
        let staged = staged_channels(&geometry, ku).unwrap_or(geometry.channels);
        let weights = tap_major(layer.weights, &geometry, staged);
        let layer = QuantizedLayer {
            weights: &weights,
            k: weights.len() / layer.n.max(1),
            ..*layer
        };
        Ok(PackedConv {
            gemm: PackedI8::new(isa, &layer)?,
            geometry,
            outputs: layer.n,
            staged,
        })
    }
}

/// A value added to a convolution's output as it is written: a residual connection, or a
/// per-image bias (a time or class embedding) that the graph adds after the convolution. Each
/// output `y` becomes `y + a`, rounded once in f32: an Add node after the convolution gives
/// the same bits. Float pixel-row (NHWC) output only.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy)]
pub enum Addend<'a> {
    /// One value per output value, laid out as the output: `[N, OH, OW, M]`.
    Each(&'a [f32]),
    /// One row of the `M` output channels per image, `[N, M]`, added at each of its pixels.
    PerImage(&'a [f32]),
}

#[cfg(feature = "alloc")]
impl<'a> Addend<'a> {
    /// Checks that it fits `n` images of `positions` output pixels of `m` channels written as
    /// `layout` (or says what is accepted).
    fn check(
        self,
        (n, positions, m): (usize, usize, usize),
        layout: Layout,
    ) -> Result<(), KernelError> {
        if layout != Layout::Nhwc {
            return Err(KernelError::Geometry(
                "an addend goes with pixel-row (NHWC) output, not planes",
            ));
        }
        match self {
            Addend::Each(v) => {
                check_len("addend (one value per output)", n * positions * m, v.len())
            }
            Addend::PerImage(v) => check_len("addend (one row per image)", n * m, v.len()),
        }
    }

    /// What image `i`'s output rows (`positions` rows of `m`) get, once checked.
    fn of_image(self, i: usize, (positions, m): (usize, usize)) -> RowAddend<'a> {
        match self {
            Addend::Each(v) => RowAddend::Rows(&v[i * positions * m..][..positions * m]),
            Addend::PerImage(v) => RowAddend::Row(&v[i * m..][..m]),
        }
    }

    /// What the output rows of the whole batch get, `positions` rows an image, once checked.
    fn of_batch(self, positions: usize) -> RowAddend<'a> {
        match self {
            Addend::Each(values) => RowAddend::Rows(values),
            Addend::PerImage(values) => RowAddend::PerRun {
                values,
                rows: positions,
            },
        }
    }
}

/// `out = act(conv(dequant(input)) + b)` (`+ addend` when given), `input` `[N, C, H, W]` as
/// f32 values (quantized with the layer's input parameters) or uint8 codes, `out`
/// `[N, M, OH, OW]` (or each NHWC, as `layouts` says); `scratch` holds the buffers between
/// calls.
#[cfg(feature = "alloc")]
pub fn conv_i8(
    conv: &PackedConvI8,
    input: Input<'_>,
    size: ImageSize,
    (out, addend): (Output<'_>, Option<Addend<'_>>),
    layouts: Layouts,
    scratch: &mut ConvScratch,
) -> Result<(), KernelError> {
    let g = &conv.geometry;
    let params = conv.gemm.input();
    if addend.is_some() && matches!(out, Output::U8(..)) {
        return Err(KernelError::Geometry(
            "an addend goes with float output, not uint8 codes",
        ));
    }
    let ConvScratch {
        u8_staging,
        pixel_starts,
        u8_fields,
        codes,
        f32_rows,
        u8_rows,
        a_form_staging,
        gemm: gemm_scratch,
        ..
    } = scratch;
    let codes: &[u8] = match input {
        Input::U8(c) => c,
        Input::F32(x) => {
            check_images(g, size, x.len())?;
            let codes = grown(codes, x.len(), 0);
            let quantize = conv.gemm.micro.epilogue.quantize;
            // Value by value: runs of the batch (one image's halves included) shared across
            // the team when there are many.
            let parallel = x.len() >= PARALLEL_VALUES;
            crate::pack::for_row_runs(codes, CODE_RUN, parallel, &|first, run| {
                let from = &x[first * CODE_RUN..][..run.len()];
                // SAFETY: the epilogue belongs to the family the weights were packed for, which
                // was checked available then; `run` is as long as `from`.
                unsafe { quantize(from, params, run) }
            });
            codes
        }
    };
    let [oh, ow] = check_images(g, size, codes.len())?;
    let (n, m, positions) = (size[0], conv.gemm.n(), oh * ow);
    out.check(n * positions, m)?;
    if let Some(addend) = addend {
        addend.check((n, positions, m), layouts.output)?;
    }
    let micro = conv.gemm.micro;
    let input = (codes, layouts.input);
    // The geometry as the packed weights see it: pixels of the staged channels.
    let gs = &ConvGeometry {
        channels: conv.staged,
        ..*g
    };
    if let Some(layout) = Implicit::new(gs, [oh, ow], size[2], micro.ku).filter(|_| n > 0) {
        // The padded codes in the kernel's form. The last GEMM row of an image reads up to the
        // image's end; a kernel that takes rows in pairs reads row_align − 1 rows past it.
        let (form, bytes) = (micro.a_form, micro.a_form.size());
        let slack = (micro.row_align - 1) * gs.channels;
        let staging = (&mut *u8_staging, &mut *pixel_starts);
        let sized = (size, gs.channels);
        let (staged, _) = stage_padded(g, input, sized, params.zero_point, staging, slack)?;
        let image = staged.len() / n.max(1);
        let a: &[u8] = if form == AForm::U8 {
            staged
        } else {
            let converted = grown(a_form_staging, staged.len() * bytes, 0);
            per_image(
                (staged, image),
                (converted, image * bytes),
                n,
                &|codes, dst| convert_codes(form, codes, dst),
            );
            converted
        };
        let depth = layout.depth(gs, (micro.ku, bytes));
        let lda = gs.channels * bytes;
        check_depth(
            depth,
            (image * bytes, lda),
            layout.rows,
            (micro.row_align, micro.ku * bytes, conv.gemm.steps),
        )?;
        let share = per_image_share(n);
        let gemm = |a: &[u8], out: (Output<'_>, RowMap, Option<RowAddend<'_>>)| {
            gemm_i8_rows(&conv.gemm, (a, lda), layout.rows, depth, out, share)
                .expect("rows, depth and addend checked above");
        };
        let a = (a, image * bytes);
        if layouts.output == Layout::Nhwc {
            // The GEMM writes the output's pixel rows itself, dropping the padding's rows.
            let (map, image_out) = (layout.pixel_rows(ow), positions * m);
            let plus = |i| addend.map(|add| add.of_image(i, (positions, m)));
            match out {
                Output::F32(dst) => per_image_at(a, (dst, image_out), n, &|i, a, d| {
                    gemm(a, (Output::F32(d), map, plus(i)))
                }),
                Output::U8(dst, next) => per_image(a, (dst, image_out), n, &|a, d| {
                    gemm(a, (Output::U8(d, next), map, None))
                }),
                Output::Requantized(dst, grid) => {
                    per_image_at(a, (dst, image_out), n, &|i, a, d| {
                        gemm(a, (Output::Requantized(d, grid), map, plus(i)))
                    })
                }
            }
            return Ok(());
        }
        let (rows_len, image_rows) = (n * layout.rows * m, layout.rows * m);
        let dims = (n, m, [oh, ow]);
        let all = RowMap::All;
        match out {
            Output::F32(dst) => {
                let rows = grown(f32_rows, rows_len, 0.0);
                per_image(a, (rows, image_rows), n, &|a, r| {
                    gemm(a, (Output::F32(r), all, None))
                });
                layout.to_planes(rows, dims, dst);
            }
            Output::U8(dst, next) => {
                let rows = grown(u8_rows, rows_len, 0);
                per_image(a, (rows, image_rows), n, &|a, r| {
                    gemm(a, (Output::U8(r, next), all, None))
                });
                layout.to_planes(rows, dims, dst);
            }
            Output::Requantized(dst, grid) => {
                let rows = grown(f32_rows, rows_len, 0.0);
                per_image(a, (rows, image_rows), n, &|a, r| {
                    gemm(a, (Output::Requantized(r, grid), all, None))
                });
                layout.to_planes(rows, dims, dst);
            }
        }
        return Ok(());
    }
    // Codes the kernel reads as they are get rows padded to whole depth steps here (no copy
    // into the kernel's form after); other forms are converted from plain rows.
    let in_place = micro.a_form == AForm::U8 && micro.row_align == 1;
    let pitch = match in_place {
        true => g.depth().next_multiple_of(micro.ku),
        false => g.depth(),
    };
    let fields = im2col(
        g,
        input,
        size,
        [oh, ow],
        (params.zero_point, pitch),
        (u8_staging, pixel_starts),
        u8_fields,
    )?;
    let rows = n * positions;
    let steps = conv.gemm.steps;
    if in_place {
        check_depth(
            Depth::whole(steps),
            (fields.len(), pitch),
            rows,
            (1, micro.ku, steps),
        )?;
    }
    let mut product = |out: Output<'_>, addend| match in_place {
        true => gemm_i8_rows(
            &conv.gemm,
            (fields, pitch),
            rows,
            Depth::whole(steps),
            (out, RowMap::All, addend),
            SHARE,
        ),
        false => gemm_i8_shared(
            &conv.gemm,
            Input::U8(fields),
            rows,
            (out, addend),
            gemm_scratch,
            SHARE,
        ),
    };
    if layouts.output == Layout::Nhwc {
        // The GEMM's rows are the output's pixel rows.
        return product(out, addend.map(|add| add.of_batch(positions)));
    }
    match out {
        Output::F32(dst) => {
            let tmp = grown(f32_rows, dst.len(), 0.0);
            product(Output::F32(tmp), None)?;
            to_planes(tmp, n, m, positions, dst);
        }
        Output::U8(dst, next) => {
            let tmp = grown(u8_rows, dst.len(), 0);
            product(Output::U8(tmp, next), None)?;
            to_planes(tmp, n, m, positions, dst);
        }
        Output::Requantized(dst, grid) => {
            let tmp = grown(f32_rows, dst.len(), 0.0);
            product(Output::Requantized(tmp, grid), None)?;
            to_planes(tmp, n, m, positions, dst);
        }
    }
    Ok(())
}

#[cfg(feature = "alloc")]
impl PackedConvF32 {
    /// Packs weights `[M, C, KH, KW]` (flattened) and bias `[M]` for `isa`.
    pub fn new(
        isa: Isa,
        weights: &[f32],
        bias: &[f32],
        outputs: usize,
        geometry: ConvGeometry,
        activation: Activation,
    ) -> Result<Self, KernelError> {
        geometry.check()?;
        let depth = geometry.depth();
        check_len("weights", weight_count(outputs, depth)?, weights.len())?;
        let weights = tap_major(weights, &geometry, geometry.channels);
        Ok(PackedConv {
            gemm: PackedF32::new(isa, &weights, bias, outputs, depth, activation)?,
            geometry,
            outputs,
            staged: geometry.channels,
        })
    }
}

/// `out = act(conv(x) + b)` (`+ addend` when given) for `x` `[N, C, H, W]`, `out`
/// `[N, M, OH, OW]` (or each NHWC, as `layouts` says); `scratch` holds the buffers between
/// calls.
#[cfg(feature = "alloc")]
pub fn conv_f32(
    conv: &PackedConvF32,
    x: &[f32],
    size: ImageSize,
    (out, addend): (&mut [f32], Option<Addend<'_>>),
    layouts: Layouts,
    scratch: &mut ConvScratch,
) -> Result<(), KernelError> {
    let g = &conv.geometry;
    let [oh, ow] = check_images(g, size, x.len())?;
    let (n, m, positions) = (size[0], conv.gemm.n(), oh * ow);
    check_len("output", n * m * positions, out.len())?;
    if let Some(addend) = addend {
        addend.check((n, positions, m), layouts.output)?;
    }
    let input = (x, layouts.input);
    if let Some(layout) = Implicit::new(g, [oh, ow], size[2], 1).filter(|_| n > 0) {
        let ConvScratch {
            f32_staging,
            pixel_starts,
            f32_rows,
            ..
        } = scratch;
        // fp32 tiles take any row count: the last GEMM row reads up to the image's end.
        let sized = (size, g.channels);
        let (staged, _) = stage_padded(g, input, sized, 0.0, (f32_staging, pixel_starts), 0)?;
        let image = staged.len() / n.max(1);
        let depth = layout.depth(g, (1, 1));
        let lda = g.channels;
        check_depth(depth, (image, lda), layout.rows, (1, 1, conv.gemm.k()))?;
        let share = per_image_share(n);
        let gemm = |a: &[f32], out: (&mut [f32], RowMap, Option<RowAddend<'_>>)| {
            gemm_f32_rows(&conv.gemm, (a, lda), layout.rows, depth, out, share)
                .expect("rows, depth and addend checked above");
        };
        if layouts.output == Layout::Nhwc {
            // The GEMM writes the output's pixel rows itself, dropping the padding's rows.
            let map = layout.pixel_rows(ow);
            let plus = |i| addend.map(|add| add.of_image(i, (positions, m)));
            per_image_at((staged, image), (out, positions * m), n, &|i, a, d| {
                gemm(a, (d, map, plus(i)))
            });
            return Ok(());
        }
        let rows = grown(f32_rows, n * layout.rows * m, 0.0);
        per_image((staged, image), (rows, layout.rows * m), n, &|a, r| {
            gemm(a, (r, RowMap::All, None))
        });
        layout.to_planes(rows, (n, m, [oh, ow]), out);
        return Ok(());
    }
    let fields = im2col(
        g,
        input,
        size,
        [oh, ow],
        (0.0, g.depth()),
        (&mut scratch.f32_staging, &mut scratch.pixel_starts),
        &mut scratch.f32_fields,
    )?;
    let (k, rows) = (conv.gemm.k, n * positions);
    check_len("receptive fields", rows * k, fields.len())?;
    let product = |out| gemm_f32_rows(&conv.gemm, (fields, k), rows, Depth::whole(k), out, SHARE);
    if layouts.output == Layout::Nhwc {
        // The GEMM's rows are the output's pixel rows.
        let addend = addend.map(|add| add.of_batch(positions));
        return product((out, RowMap::All, addend));
    }
    let tmp = grown(&mut scratch.f32_rows, out.len(), 0.0);
    product((&mut *tmp, RowMap::All, None))?;
    to_planes(tmp, n, m, positions, out);
    Ok(())
}
