//! Images in and out: PNG grids and single images (written atomically), photos read from
//! PNG/JPEG files or standard input and fitted to the model's input.
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use image::imageops::FilterType;
use image::{DynamicImage, Rgb, RgbImage};
use mf_core::schedule::to_pixel;

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

/// Reads a PNG or JPEG (`-` for standard input) and fits it to `[C, H, W]` model values:
/// resized (triangle filter), converted to grey or RGB, mapped to [-1, 1].
pub fn read_photo(path: &Path, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
    ensure!(
        shape.len() == 3 && (shape[0] == 1 || shape[0] == 3),
        "the model takes {shape:?} samples, not images"
    );
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
    };
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
