//! Images out: sample grids and atomic PNG writes, shared by mf-train's plots and mf-edge.
use std::format;
use std::path::Path;

use anyhow::{Context, ensure};
use image::{Rgb, RgbImage};

use crate::schedule::to_pixel;

/// The largest grid drawn, in pixels (64 Mi pixels, 192 MiB of RGB).
pub const MAX_GRID_PIXELS: u64 = 1 << 26;

/// The width and height in pixels of a grid of `n` samples of `shape` in `cols` columns at
/// `zoom`, or an error naming the size when it is not drawable: a shape that is not `[C, H, W]`
/// with C = 1, 3 or 4, a zoom of 0, or more than [`MAX_GRID_PIXELS`].
pub fn grid_size(n: usize, shape: &[usize], cols: usize, zoom: u32) -> anyhow::Result<(u32, u32)> {
    ensure!(
        shape.len() == 3 && matches!(shape[0], 1 | 3 | 4) && shape[1] > 0 && shape[2] > 0,
        "images of shape {shape:?} cannot be drawn ([1, 3 or 4, H, W] can)"
    );
    ensure!(
        zoom > 0,
        "a zoom of 0 draws nothing (1 or more is accepted)"
    );
    let cols = cols.clamp(1, n.max(1)) as u64;
    let rows = (n as u64).div_ceil(cols);
    let cell = |side: usize| (side as u64).checked_mul(u64::from(zoom))?.checked_add(2);
    let size = cell(shape[2])
        .zip(cell(shape[1]))
        .and_then(|(cw, ch)| Some((cols.checked_mul(cw)?, rows.checked_mul(ch)?)));
    let pixels = size.and_then(|(w, h)| w.checked_mul(h));
    match (size, pixels) {
        (Some((w, h)), Some(p)) if p <= MAX_GRID_PIXELS => Ok((w as u32, h as u32)),
        _ => anyhow::bail!(
            "a grid of {n} images of {}x{} at zoom {zoom} in {cols} columns is larger than the \
             {MAX_GRID_PIXELS} pixels drawn at most: lower the count or the zoom",
            shape[2],
            shape[1]
        ),
    }
}

/// Renders `[n, C, H, W]` model values as an RGB image of `cols` columns, each sample scaled by
/// `zoom`, with a 1-pixel border (at most [`MAX_GRID_PIXELS`]). C = 1 is grey, C = 3 RGB; of
/// C = 4 (RGBA, or a 4-channel latent) the first three channels are drawn.
pub fn grid(samples: &[f32], shape: &[usize], cols: usize, zoom: u32) -> anyhow::Result<RgbImage> {
    let per: usize = shape.iter().product();
    ensure!(
        per > 0 && samples.len().is_multiple_of(per),
        "{} values are not whole images of shape {shape:?}",
        samples.len()
    );
    let n = samples.len() / per;
    let (width, height) = grid_size(n, shape, cols, zoom)?;
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let cols = cols.clamp(1, n.max(1));
    let (cw, ch) = (w as u32 * zoom + 2, h as u32 * zoom + 2);
    let mut img = RgbImage::from_pixel(width, height, Rgb([40, 40, 40]));
    for k in 0..n {
        let (gx, gy) = ((k % cols) as u32 * cw + 1, (k / cols) as u32 * ch + 1);
        let px =
            |ci: usize, y: usize, x: usize| to_pixel(samples[k * per + ci * h * w + y * w + x]);
        for y in 0..h {
            for x in 0..w {
                let rgb = if c == 1 {
                    [px(0, y, x); 3]
                } else {
                    [px(0, y, x), px(1, y, x), px(2, y, x)]
                };
                for dy in 0..zoom {
                    for dx in 0..zoom {
                        img.put_pixel(
                            gx + x as u32 * zoom + dx,
                            gy + y as u32 * zoom + dy,
                            Rgb(rgb),
                        );
                    }
                }
            }
        }
    }
    Ok(img)
}

/// Checks that `path` names a PNG file: its extension, if it has one, is `png` (any case), so
/// that PNG bytes never land in a file named `.jpg` or `.txt`.
pub fn check_png_path(path: &Path) -> anyhow::Result<()> {
    match path.extension() {
        Some(ext) if !ext.eq_ignore_ascii_case("png") => anyhow::bail!(
            "cannot write {}: images are written as PNG only; give a path ending in .png",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// Writes a PNG atomically ([`crate::atomic::write`]): encoded in memory, then written
/// whole, flushed and renamed into place. The path must pass [`check_png_path`].
pub fn save_png(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    check_png_path(path)?;
    let mut png = std::vec::Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    crate::atomic::write(path, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_png_paths_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let img = grid(&[0.0; 4], &[1, 2, 2], 1, 1).unwrap();
        for name in ["a.png", "b.PNG", "c"] {
            save_png(&img, &dir.path().join(name)).unwrap();
        }
        for name in ["d.jpg", "e.txt", "f.png.tmp"] {
            let err = save_png(&img, &dir.path().join(name)).unwrap_err();
            assert!(format!("{err}").contains("PNG only"), "{err}");
            assert!(!dir.path().join(name).exists(), "{name} was written");
        }
    }

    #[test]
    fn four_channels_draw_their_first_three_and_two_are_refused() {
        // One 1×2 sample, channels R = -1, G = 0, B = 1, fourth = 1 (not drawn).
        let sample = [-1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let img = grid(&sample, &[4, 1, 2], 1, 1).unwrap();
        assert_eq!((img.width(), img.height()), (4, 3));
        let Rgb([r, g, b]) = *img.get_pixel(1, 1);
        assert_eq!((r, g, b), (0, to_pixel(0.0), 255));
        let err = grid(&sample, &[2, 2, 2], 1, 1).unwrap_err();
        assert!(format!("{err}").contains("[1, 3 or 4, H, W]"), "{err}");
    }
}
