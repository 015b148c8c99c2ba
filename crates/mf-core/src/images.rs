//! Images out: sample grids and atomic PNG writes, shared by mf-train's plots and mf-edge.
use std::format;
use std::path::Path;

use anyhow::{Context, ensure};
use image::{Rgb, RgbImage};

use crate::schedule::to_pixel;

/// Renders `[n, C, H, W]` model values (C = 1 or 3) as an RGB image of `cols` columns, each
/// sample scaled by `zoom`, with a 1-pixel border.
pub fn grid(samples: &[f32], shape: &[usize], cols: usize, zoom: u32) -> anyhow::Result<RgbImage> {
    ensure!(
        shape.len() == 3 && (shape[0] == 1 || shape[0] == 3),
        "images of shape {shape:?} cannot be drawn"
    );
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let per = c * h * w;
    let n = samples.len() / per;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let (cw, ch) = (w as u32 * zoom + 2, h as u32 * zoom + 2);
    let mut img = RgbImage::from_pixel(cols as u32 * cw, rows as u32 * ch, Rgb([40, 40, 40]));
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

/// Writes a PNG through a temp file in the same folder and a rename.
pub fn save_png(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure!(
        dir.is_dir(),
        "cannot write {}: folder {} does not exist",
        path.display(),
        dir.display()
    );
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out")
    ));
    let result = img
        .save_with_format(&tmp, image::ImageFormat::Png)
        .with_context(|| format!("cannot write {}", path.display()))
        .and_then(|_| {
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
