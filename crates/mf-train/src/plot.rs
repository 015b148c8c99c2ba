//! Small PNG renderings: image grids, 2-D scatter plots and the loss curve.
use std::path::Path;

use image::{ImageBuffer, Rgb, RgbImage};
use mf_core::images::{grid, save_png};

/// Writes `images` (`[n, c, s, s]` values in [-1, 1]) as a grid of `cols` columns, each image
/// scaled up by `zoom`. Written to a temp file, then renamed.
pub fn image_grid(
    path: &Path,
    images: &[f32],
    shape: &[usize],
    cols: usize,
    zoom: u32,
) -> anyhow::Result<()> {
    save_png(&grid(images, shape, cols, zoom)?, path)
}

/// Writes 2-D points (`[n, 2]`, within [-lim, lim]²) as a 512×512 scatter plot.
pub fn scatter(path: &Path, points: &[f32], lim: f32) -> anyhow::Result<()> {
    const SIZE: u32 = 512;
    let mut img = RgbImage::from_pixel(SIZE, SIZE, Rgb([255, 255, 255]));
    let to_px = |v: f32| ((v + lim) / (2.0 * lim) * (SIZE - 1) as f32).round();
    for p in points.chunks_exact(2) {
        let (x, y) = (to_px(p[0]), to_px(-p[1]));
        if (0.0..SIZE as f32).contains(&x) && (0.0..SIZE as f32).contains(&y) {
            img.put_pixel(x as u32, y as u32, Rgb([20, 60, 160]));
        }
    }
    save_png(&img, path)
}

/// Writes a line plot of `values` (log scale, min to max) as a 640×320 PNG with a frame.
pub fn curve(path: &Path, values: &[f64]) -> anyhow::Result<()> {
    const W: u32 = 640;
    const H: u32 = 320;
    let mut img: RgbImage = ImageBuffer::from_pixel(W, H, Rgb([255, 255, 255]));
    for x in 0..W {
        img.put_pixel(x, H - 1, Rgb([0, 0, 0]));
    }
    for y in 0..H {
        img.put_pixel(0, y, Rgb([0, 0, 0]));
    }
    let logs: Vec<f64> = values
        .iter()
        .filter(|v| v.is_finite() && **v > 0.0)
        .map(|v| v.ln())
        .collect();
    if logs.len() >= 2 {
        let (lo, hi) = logs
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let span = (hi - lo).max(1e-12);
        let point = |i: usize, v: f64| {
            let x = 1.0 + i as f64 / (logs.len() - 1) as f64 * (W - 3) as f64;
            let y = 1.0 + (hi - v) / span * (H - 3) as f64;
            (x, y)
        };
        for i in 1..logs.len() {
            let (x0, y0) = point(i - 1, logs[i - 1]);
            let (x1, y1) = point(i, logs[i]);
            let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
            for s in 0..=steps {
                let f = s as f64 / steps as f64;
                let (x, y) = (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f);
                img.put_pixel(x.round() as u32, y.round() as u32, Rgb([200, 30, 30]));
            }
        }
    }
    save_png(&img, path)
}
