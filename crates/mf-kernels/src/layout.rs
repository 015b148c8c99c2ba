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
/// a kernel row's taps: a few to a few dozen values), in pieces of 16 values of a size known
/// at compile time: a `memcpy` call per run costs more than the copy itself.
///
/// # Panics
/// When the lengths differ.
#[inline]
pub fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "copy_short of unequal lengths");
    let mut to = dst.chunks_exact_mut(16);
    let mut from = src.chunks_exact(16);
    for (d, s) in (&mut to).zip(&mut from) {
        let s: &[T; 16] = s.try_into().expect("16 values");
        d.copy_from_slice(s);
    }
    for (d, &s) in to.into_remainder().iter_mut().zip(from.remainder()) {
        *d = s;
    }
}
