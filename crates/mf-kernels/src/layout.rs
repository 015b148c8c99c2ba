//! How a batch of images lies in memory (planes or pixel rows), and the move from one layout to
//! the other: the engine keeps a network's activations as pixel rows between convolutions, so
//! that a convolution reads and writes its GEMM's rows as they are.
#[cfg(feature = "alloc")]
use crate::transpose::{Transposable, transpose};

/// How a batch of images lies in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[N, C, H, W]`: each channel a plane (ONNX's layout).
    Nchw,
    /// `[N, H, W, C]`: each pixel's channels side by side (channels last: a GEMM row per
    /// pixel).
    Nhwc,
}

/// The layouts of a convolution's input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layouts {
    /// The input's.
    pub input: Layout,
    /// The output's.
    pub output: Layout,
}

impl Layouts {
    /// Planes in and out, as ONNX lays images out.
    pub const ONNX: Layouts = Layouts {
        input: Layout::Nchw,
        output: Layout::Nchw,
    };
}

/// An element the layout moves handle: `u8` codes and `f32` values.
#[cfg(feature = "alloc")]
pub trait Element: Transposable + Sync + Send {}
#[cfg(feature = "alloc")]
impl Element for u8 {}
#[cfg(feature = "alloc")]
impl Element for f32 {}

/// `x`, `images` images of `channels` channels and `pixels` pixels each in layout `from`,
/// written into `out` (as long as `x`) in the other layout; shared out across the thread team
/// when large.
///
/// # Panics
/// When `x` or `out` does not hold exactly `images · channels · pixels` elements.
#[cfg(feature = "alloc")]
pub fn relayout<T: Element>(
    x: &[T],
    [images, channels, pixels]: [usize; 3],
    from: Layout,
    out: &mut [T],
) {
    let image = channels * pixels;
    assert!(
        x.len() == images * image && out.len() == x.len(),
        "relayout of {} values into {} for {images} images of {channels} × {pixels}",
        x.len(),
        out.len()
    );
    let (rows, cols) = match from {
        Layout::Nchw => (channels, pixels),
        Layout::Nhwc => (pixels, channels),
    };
    crate::conv::per_image((x, image), (out, image), images, &|x, out| {
        transpose(x, cols, [rows, cols], out, |j| j * rows)
    });
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn copy_short_copies_every_length_exactly() {
        // Every piece size and the overlapping last piece of each, bytes and floats alike;
        // the values around the copied run must stay as they were.
        for len in 0..=100 {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut dst = alloc::vec![0xAAu8; len + 2];
            copy_short(&mut dst[1..len + 1], &src);
            assert_eq!(&dst[1..len + 1], &src[..], "{len} bytes");
            assert_eq!(
                (dst[0], dst[len + 1]),
                (0xAA, 0xAA),
                "{len} bytes: outside the run"
            );
            let floats: Vec<f32> = src.iter().map(|&b| b as f32 * 0.5).collect();
            let mut out = alloc::vec![-1.0f32; len];
            copy_short(&mut out, &floats);
            assert_eq!(out, floats, "{len} floats");
        }
    }

    #[test]
    fn planes_and_pixel_rows_go_back_and_forth() {
        // Odd sizes around the 16-byte and 4-float blocks.
        for [n, c, p] in [[1, 1, 1], [2, 3, 5], [1, 17, 33], [3, 32, 49]] {
            let x: Vec<f32> = (0..n * c * p).map(|i| i as f32).collect();
            let mut nhwc = alloc::vec![0.0; x.len()];
            relayout(&x, [n, c, p], Layout::Nchw, &mut nhwc);
            for (i, &v) in x.iter().enumerate() {
                let (image, ch, pixel) = (i / (c * p), i / p % c, i % p);
                assert_eq!(nhwc[image * c * p + pixel * c + ch], v);
            }
            let mut back = alloc::vec![0.0; x.len()];
            relayout(&nhwc, [n, c, p], Layout::Nhwc, &mut back);
            assert_eq!(back, x);
            let codes: Vec<u8> = x.iter().map(|&v| v as u8).collect();
            let mut moved = alloc::vec![0u8; x.len()];
            relayout(&codes, [n, c, p], Layout::Nchw, &mut moved);
            let want: Vec<u8> = nhwc.iter().map(|&v| v as u8).collect();
            assert_eq!(moved, want);
        }
    }
}

/// `dst.copy_from_slice(src)` for the short runs that layout moves copy (a pixel's channels,
/// a kernel row's taps: a few to a few dozen values), in pieces of a size known at compile
/// time: a `memcpy` call per run costs more than the copy itself. The pieces overlap at the
/// end (16 values at a time, or two of 8, 4 or 2) so that no loop of whole pieces is left for
/// LLVM to recognize as a `memcpy` of the run's length (a loop of 16-value pieces and a
/// remainder was turned back into a `memcpy` call, 16% of a stride-2 convolution).
///
/// # Panics
/// When the lengths differ.
#[inline]
pub fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "copy_short of unequal lengths");
    let len = dst.len();
    match len {
        16.. => {
            for piece in 0..len.div_ceil(16) {
                let at = (piece * 16).min(len - 16);
                copy_piece::<T, 16>(dst, src, at);
            }
        }
        8.. => pieces::<T, 8>(dst, src),
        4.. => pieces::<T, 4>(dst, src),
        2.. => pieces::<T, 2>(dst, src),
        1 => dst[0] = src[0],
        0 => {}
    }
}

/// Copies a run of `N..=2N` values as two pieces of `N`, the second ending at the run's end.
#[inline(always)]
fn pieces<T: Copy, const N: usize>(dst: &mut [T], src: &[T]) {
    copy_piece::<T, N>(dst, src, 0);
    copy_piece::<T, N>(dst, src, dst.len() - N);
}

/// Copies the `N` values from `at`.
#[inline(always)]
fn copy_piece<T: Copy, const N: usize>(dst: &mut [T], src: &[T], at: usize) {
    let from: &[T; N] = src[at..at + N].try_into().expect("N values");
    dst[at..at + N].copy_from_slice(from);
}
