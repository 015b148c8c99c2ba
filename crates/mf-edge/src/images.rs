//! Images in and out: PNG grids and single images (drawn and written atomically by
//! [`mf_core::images`]), photos and frames fitted to the model's input, and model values
//! turned back into pixels at any size.
use std::io::Read;
use std::path::Path;

use std::borrow::Cow;

use anyhow::{Context, bail, ensure};
use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::{U8, U8x3};
use fast_image_resize::{FilterType, PixelTrait, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GrayImage, RgbImage};
use mf_core::schedule::to_pixel;

pub use mf_core::images::{MAX_GRID_PIXELS, check_png_path, grid, grid_size, save_png};

/// The largest photo file read (256 MiB); decoding is bounded by the `image` crate's limits.
pub const MAX_PHOTO_BYTES: u64 = 256 << 20;

/// The photo formats this build reads (JPEG with the cargo feature `jpeg`).
pub const ACCEPTED: &str = if cfg!(feature = "jpeg") {
    "PNG and JPEG are"
} else {
    "PNG is (this build has no JPEG)"
};

/// The model's sample shape as an image: `(channels, height, width)` with 1 or 3 channels.
pub fn image_shape(shape: &[usize]) -> anyhow::Result<(usize, usize, usize)> {
    match *shape {
        [c @ (1 | 3), h, w] if h > 0 && w > 0 => Ok((c, h, w)),
        _ => bail!("the model takes {shape:?} samples, not images ([1 or 3, H, W])"),
    }
}

/// Reads a PNG or JPEG (`-` for standard input) and fits it to the model's input ([`fit`]).
pub fn read_photo(path: &Path, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
    image_shape(shape)?;
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_PHOTO_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_PHOTO_BYTES + 1).read_to_end(&mut bytes))
    };
    read.with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        bytes.len() as u64 <= MAX_PHOTO_BYTES,
        "{} is larger than the {MAX_PHOTO_BYTES} bytes a photo may have",
        path.display()
    );
    let img = image::load_from_memory(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "cannot decode image {}: {e} ({ACCEPTED} accepted)",
            path.display()
        )
    })?;
    fit(&img, shape)
}

/// Fits an image to `[C, H, W]` model values: resized (bilinear, [`resize_pixels`]) in its
/// own channels, then converted to grey or RGB (at the model's size, where it is cheap) and
/// mapped to [-1, 1].
pub fn fit(img: &DynamicImage, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
    let (c, h, w) = image_shape(shape)?;
    let own = if img.color().has_color() { 3 } else { 1 };
    let (sw, sh) = (w as u32, h as u32);
    let small = resize_pixels(
        &pixels_of(img, own),
        (img.width(), img.height()),
        own,
        (sw, sh),
    )?;
    let small = if own == 3 {
        DynamicImage::ImageRgb8(RgbImage::from_raw(sw, sh, small).expect("sized"))
    } else {
        DynamicImage::ImageLuma8(GrayImage::from_raw(sw, sh, small).expect("sized"))
    };
    let small = pixels_of(&small, c);
    let to_unit = |p: u8| p as f32 / 127.5 - 1.0;
    Ok((0..c)
        .flat_map(|ch| small.iter().skip(ch).step_by(c).map(|&p| to_unit(p)))
        .collect())
}

/// An image's pixels as `channels` (1 grey, 3 RGB) interleaved bytes, borrowed when the image
/// already has that layout.
pub fn pixels_of(img: &DynamicImage, channels: usize) -> Cow<'_, [u8]> {
    match (img, channels) {
        (DynamicImage::ImageLuma8(g), 1) => Cow::Borrowed(g.as_raw()),
        (DynamicImage::ImageRgb8(rgb), 3) => Cow::Borrowed(rgb.as_raw()),
        (_, 1) => Cow::Owned(img.to_luma8().into_raw()),
        _ => Cow::Owned(img.to_rgb8().into_raw()),
    }
}

/// Resizes interleaved 8-bit pixels of `channels` (1 or 3) from `from` to `to` (width,
/// height) with a bilinear (triangle) filter, in integer SIMD on x86 and ARM
/// (fast_image_resize, instantiated for these two pixel types only, which keeps the device
/// build small).
pub fn resize_pixels(
    pixels: &[u8],
    from: (u32, u32),
    channels: usize,
    to: (u32, u32),
) -> anyhow::Result<Vec<u8>> {
    let expected = from.0 as usize * from.1 as usize * channels;
    ensure!(
        pixels.len() == expected && to.0 > 0 && to.1 > 0,
        "{} bytes for a {}x{} image of {channels} channels ({expected} expected), resized to {}x{}",
        pixels.len(),
        from.0,
        from.1,
        to.0,
        to.1
    );
    if from == to {
        return Ok(pixels.to_vec());
    }
    let mut out = vec![0u8; to.0 as usize * to.1 as usize * channels];
    match channels {
        1 => resize_typed::<U8>(pixels, from, &mut out, to)?,
        3 => resize_typed::<U8x3>(pixels, from, &mut out, to)?,
        c => bail!("{c} channels cannot be resized (1 or 3 can)"),
    }
    Ok(out)
}

/// [`resize_pixels`] for one pixel type.
fn resize_typed<P: PixelTrait>(
    pixels: &[u8],
    from: (u32, u32),
    out: &mut [u8],
    to: (u32, u32),
) -> anyhow::Result<()> {
    let src = TypedImageRef::<P>::from_buffer(from.0, from.1, pixels)?;
    let mut dst = TypedImage::<P>::from_buffer(to.0, to.1, out)?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize_typed(&src, &mut dst, &options)?;
    Ok(())
}

/// Turns one sample of `[C, H, W]` model values into an image of the model's size (grey for
/// one channel, RGB for three), pixel by pixel as the PNG grids draw it.
pub fn to_image(values: &[f32], shape: &[usize]) -> anyhow::Result<DynamicImage> {
    let (c, h, w) = image_shape(shape)?;
    ensure!(
        values.len() == c * h * w,
        "{} values for one image of shape {shape:?}",
        values.len()
    );
    let plane = h * w;
    Ok(if c == 1 {
        let pixels = values.iter().map(|&v| to_pixel(v)).collect();
        DynamicImage::ImageLuma8(GrayImage::from_raw(w as u32, h as u32, pixels).expect("sized"))
    } else {
        let pixels = (0..plane)
            .flat_map(|i| (0..3).map(move |ch| to_pixel(values[ch * plane + i])))
            .collect();
        DynamicImage::ImageRgb8(RgbImage::from_raw(w as u32, h as u32, pixels).expect("sized"))
    })
}

/// Samples (`[n, C, H, W]` model values) as interleaved pixels, `n × H × W × C` bytes: what
/// apps draw, and what `generate --out-dir --zoom 1` writes inside each image's border.
pub fn interleaved_pixels(samples: &[f32], shape: &[usize]) -> anyhow::Result<Vec<u8>> {
    let (c, h, w) = image_shape(shape)?;
    let per = c * h * w;
    ensure!(
        samples.len().is_multiple_of(per),
        "{} values are not whole images of shape {shape:?}",
        samples.len()
    );
    let plane = h * w;
    Ok(samples
        .chunks(per)
        .flat_map(|s| {
            (0..plane).flat_map(move |i| (0..c).map(move |ch| to_pixel(s[ch * plane + i])))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_keeps_flat_images_flat_and_ramps_ordered() {
        let flat = vec![77u8; 40 * 30 * 3];
        let small = resize_pixels(&flat, (40, 30), 3, (7, 5)).unwrap();
        assert_eq!(small, vec![77u8; 7 * 5 * 3]);
        let ramp: Vec<u8> = (0..30).flat_map(|_| (0..40u8).map(|x| x * 6)).collect();
        let small = resize_pixels(&ramp, (40, 30), 1, (8, 3)).unwrap();
        let row = &small[8..16];
        assert!(row.windows(2).all(|p| p[0] < p[1]), "{row:?}");
        let big = resize_pixels(&small, (8, 3), 1, (80, 30)).unwrap();
        assert_eq!(big.len(), 80 * 30);
        assert!(big[80 * 15..80 * 16].windows(2).all(|p| p[0] <= p[1]));
    }

    #[test]
    fn resizing_names_a_wrong_buffer_or_channel_count() {
        let err = resize_pixels(&[0; 10], (4, 4), 1, (2, 2))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10 bytes") && err.contains("16 expected"),
            "{err}"
        );
        let err = resize_pixels(&[0; 32], (4, 4), 2, (2, 2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 or 3"), "{err}");
    }

    #[test]
    fn a_grey_frame_fits_the_same_in_grey_and_in_rgb() {
        let grey = GrayImage::from_fn(64, 48, |x, y| image::Luma([(x * 3 + y) as u8]));
        let rgb = DynamicImage::ImageLuma8(grey.clone()).to_rgb8();
        let a = fit(&DynamicImage::ImageLuma8(grey), &[1, 28, 28]).unwrap();
        let b = fit(&DynamicImage::ImageRgb8(rgb), &[1, 28, 28]).unwrap();
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 2.0 / 127.5, "{worst}");
        assert_eq!(
            fit(&DynamicImage::ImageLuma8(GrayImage::new(5, 5)), &[3, 4, 4])
                .unwrap()
                .len(),
            48
        );
    }
}
