//! A folder per class (`root/<class>/*.png|jpg`, the ImageNet layout), resized to one size.
use std::path::Path;

use anyhow::{Context, bail, ensure};
use image::imageops::FilterType;

use super::ImageSet;

/// Loads every PNG/JPEG under `root/<class>/`, classes sorted by folder name.
pub(super) fn open(root: &Path, size: usize, channels: usize) -> anyhow::Result<ImageSet> {
    ensure!(
        channels == 1 || channels == 3,
        "data.channels must be 1 or 3, not {channels}"
    );
    ensure!(size > 0, "data.image_size must be positive");
    let mut classes: Vec<_> = std::fs::read_dir(root)
        .with_context(|| format!("cannot read image folder {}", root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    ensure!(
        !classes.is_empty(),
        "{} holds no class folders (expected root/<class>/*.png)",
        root.display()
    );
    ensure!(
        classes.len() <= 255,
        "{} classes; at most 255 are supported",
        classes.len()
    );
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<_> = std::fs::read_dir(root.join(class))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let ext = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("")
                    .to_ascii_lowercase();
                matches!(ext.as_str(), "png" | "jpg" | "jpeg")
            })
            .collect();
        files.sort();
        for file in files {
            let img = image::open(&file)
                .with_context(|| format!("cannot decode image {}", file.display()))?;
            let img = img.resize_exact(size as u32, size as u32, FilterType::Triangle);
            if channels == 1 {
                pixels.extend(img.to_luma8().into_raw());
            } else {
                let rgb = img.to_rgb8();
                // HWC → CHW
                for c in 0..3 {
                    pixels.extend(rgb.pixels().map(|p| p.0[c]));
                }
            }
            labels.push(label as u8);
        }
    }
    if labels.is_empty() {
        bail!("no PNG or JPEG images under {}", root.display());
    }
    Ok(ImageSet {
        pixels,
        labels,
        channels,
        size,
        class_names: classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_classes_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        for (class, shade) in [("cat", 10u8), ("dog", 200u8)] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            let img = image::RgbImage::from_pixel(40, 30, image::Rgb([shade, shade, shade]));
            img.save(dir.path().join(class).join("a.png")).unwrap();
        }
        let set = open(dir.path(), 8, 3).unwrap();
        assert_eq!(set.class_names, vec!["cat", "dog"]);
        assert_eq!(set.labels, vec![0, 1]);
        assert_eq!(set.pixels.len(), 2 * 3 * 64);
        assert_eq!(set.pixels[0], 10);
        assert_eq!(set.pixels[3 * 64], 200);
    }

    #[test]
    fn undecodable_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("x")).unwrap();
        std::fs::write(dir.path().join("x").join("bad.png"), b"not a png").unwrap();
        let err = format!("{:#}", open(dir.path(), 8, 1).unwrap_err());
        assert!(err.contains("bad.png"), "{err}");
    }
}
