//! Images in and out: PNG grids and single images (drawn and written atomically by
//! [`mf_core::images`]), photos read from PNG/JPEG files or standard input and fitted to the
//! model's input.
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use image::DynamicImage;
use image::imageops::FilterType;
pub use mf_core::images::{MAX_GRID_PIXELS, grid, grid_size, save_png};

/// The largest photo file read (256 MiB); decoding is bounded by the `image` crate's limits.
pub const MAX_PHOTO_BYTES: u64 = 256 << 20;

/// Reads a PNG or JPEG (`-` for standard input) and fits it to `[C, H, W]` model values:
/// resized (triangle filter), converted to grey or RGB, mapped to [-1, 1].
pub fn read_photo(path: &Path, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
    ensure!(
        shape.len() == 3 && (shape[0] == 1 || shape[0] == 3),
        "the model takes {shape:?} samples, not images"
    );
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
            "cannot decode image {}: {e} (PNG and JPEG are accepted)",
            path.display()
        )
    })?;
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let img: DynamicImage = img.resize_exact(w as u32, h as u32, FilterType::Triangle);
    let to_unit = |p: u8| p as f32 / 127.5 - 1.0;
    Ok(match c {
        1 => img.to_luma8().into_raw().into_iter().map(to_unit).collect(),
        3 => {
            let rgb = img.to_rgb8();
            (0..3)
                .flat_map(|ch| {
                    rgb.pixels()
                        .map(move |p| to_unit(p.0[ch]))
                        .collect::<Vec<_>>()
                })
                .collect()
        }
        _ => bail!("unsupported channel count {c}"),
    })
}
