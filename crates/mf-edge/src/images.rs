//! Images in and out: PNG grids and single images (drawn and written atomically by
//! [`mf_core::images`]), photos and frames fitted to the model's input, and model values
//! turned back into pixels at any size.
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, RgbImage};
use mf_core::schedule::to_pixel;

pub use mf_core::images::{MAX_GRID_PIXELS, grid, grid_size, save_png};

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

/// Fits an image to `[C, H, W]` model values: resized (triangle filter), converted to grey or
/// RGB, mapped to [-1, 1].
pub fn fit(img: &DynamicImage, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
    let (c, h, w) = image_shape(shape)?;
    let img = img.resize_exact(w as u32, h as u32, FilterType::Triangle);
    let to_unit = |p: u8| p as f32 / 127.5 - 1.0;
    Ok(if c == 1 {
        img.to_luma8().into_raw().into_iter().map(to_unit).collect()
    } else {
        let rgb = img.to_rgb8();
        (0..3)
            .flat_map(|ch| rgb.pixels().map(move |p| to_unit(p.0[ch])))
            .collect()
    })
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
