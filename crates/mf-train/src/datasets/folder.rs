//! A folder per class (`root/<class>/*.png|jpg`, the ImageNet layout), resized to fill a square
//! and centre-cropped. Class names come from the folder names, or from `root/classes.txt`
//! (`n02099601 golden_retriever` per line: a folder and its name), whose line order is then the
//! class order.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use image::imageops::FilterType;
use indicatif::{ProgressBar, ProgressStyle};

use super::ImageSet;

/// The most classes a folder dataset may have (labels are 16-bit).
pub const MAX_CLASSES: usize = u16::MAX as usize;

/// The file beside the class folders that names them.
pub const CLASSES_FILE: &str = "classes.txt";

/// The classes of a folder dataset, in label order.
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    /// The folder of each class, under the root.
    pub folders: Vec<String>,
    /// The name of each class (the folder name when no `classes.txt` names it).
    pub names: Vec<String>,
}

/// Lists the classes of `root` without decoding any image.
pub fn classes(root: &Path) -> anyhow::Result<Classes> {
    let mut folders: Vec<String> = std::fs::read_dir(root)
        .with_context(|| format!("cannot read image folder {}", root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    ensure!(
        !folders.is_empty(),
        "{} holds no class folders (expected root/<class>/*.png)",
        root.display()
    );
    let listed = root.join(CLASSES_FILE);
    let classes = if listed.is_file() {
        let text = mf_core::bounded::read_text(&listed, 64 << 20, "class list")?;
        named_classes(&text, &folders).with_context(|| format!("in {}", listed.display()))?
    } else {
        Classes {
            names: folders.clone(),
            folders,
        }
    };
    ensure!(
        classes.folders.len() <= MAX_CLASSES,
        "{} classes in {}; at most {MAX_CLASSES} are supported",
        classes.folders.len(),
        root.display()
    );
    Ok(classes)
}

/// Parses `classes.txt` against the folders found: one `<folder> <name>` per line (the name may
/// hold spaces; a line with a folder alone keeps the folder as name), every folder once.
fn named_classes(text: &str, found: &[String]) -> anyhow::Result<Classes> {
    let mut folders = Vec::new();
    let mut names = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (folder, name) = match line.split_once(char::is_whitespace) {
            Some((folder, name)) => (folder, name.trim()),
            None => (line, line),
        };
        ensure!(
            found.binary_search_by(|f| f.as_str().cmp(folder)).is_ok(),
            "line {number} names folder {folder:?}, which is not a class folder here"
        );
        ensure!(
            !folders.iter().any(|f| f == folder),
            "line {number} names folder {folder:?} a second time"
        );
        ensure!(
            !names.iter().any(|n| n == name),
            "line {number} gives the name {name:?} a second time (names must be unique)"
        );
        folders.push(folder.to_string());
        names.push(name.to_string());
    }
    if let Some(missing) = found.iter().find(|f| !folders.contains(f)) {
        bail!(
            "class folder {missing:?} is not listed ({} folders, {} lines): list every folder, one \
             '<folder> <name>' per line",
            found.len(),
            folders.len()
        );
    }
    Ok(Classes { folders, names })
}

/// Loads every PNG/JPEG under `root/<class>/`, resized to fill `size`×`size` and centre-cropped.
pub(super) fn open(root: &Path, size: usize, channels: usize) -> anyhow::Result<ImageSet> {
    ensure!(
        matches!(channels, 1 | 3 | 4),
        "data.channels must be 1 (grey), 3 (RGB) or 4 (RGBA), not {channels}"
    );
    ensure!(
        (1..=4096).contains(&size),
        "data.image_size must be 1..=4096, not {size}"
    );
    let classes = classes(root)?;
    let mut files: Vec<(PathBuf, u16)> = Vec::new();
    for (label, folder) in classes.folders.iter().enumerate() {
        let dir = root.join(folder);
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read class folder {}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| is_image(p))
            .collect();
        found.sort();
        let label = u16::try_from(label).expect("class count checked against MAX_CLASSES");
        files.extend(found.into_iter().map(|p| (p, label)));
    }
    if files.is_empty() {
        bail!("no PNG or JPEG images under {}", root.display());
    }
    let bar = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template("decoding {pos}/{len} images {wide_bar} {eta}")
            .expect("a valid template"),
    );
    let mut pixels = Vec::new();
    let mut labels = Vec::with_capacity(files.len());
    for (file, label) in &files {
        let img =
            image::open(file).with_context(|| format!("cannot decode image {}", file.display()))?;
        let img = img.resize_to_fill(size as u32, size as u32, FilterType::Triangle);
        match channels {
            1 => pixels.extend(img.to_luma8().into_raw()),
            3 => channels_first(&img.to_rgb8(), &mut pixels),
            _ => channels_first(&img.to_rgba8(), &mut pixels),
        }
        labels.push(*label);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(ImageSet {
        pixels,
        labels,
        channels,
        size,
        class_names: classes.names,
        class_folders: classes.folders,
    })
}

/// Appends an image's pixels channel by channel (HWC → CHW).
fn channels_first<P: image::Pixel<Subpixel = u8>>(
    img: &image::ImageBuffer<P, Vec<u8>>,
    out: &mut Vec<u8>,
) {
    for c in 0..P::CHANNEL_COUNT as usize {
        out.extend(img.pixels().map(|p| p.channels()[c]));
    }
}

/// Whether a path ends in .png, .jpg or .jpeg (any case).
fn is_image(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(ext.as_str(), "png" | "jpg" | "jpeg")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(classes: &[(&str, u8)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (class, shade) in classes {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            let img = image::RgbImage::from_pixel(40, 30, image::Rgb([*shade, *shade, *shade]));
            img.save(dir.path().join(class).join("a.png")).unwrap();
        }
        dir
    }

    #[test]
    fn reads_classes_and_resizes() {
        let dir = folder(&[("cat", 10), ("dog", 200)]);
        let set = open(dir.path(), 8, 3).unwrap();
        assert_eq!(set.class_names, vec!["cat", "dog"]);
        assert_eq!(set.labels, vec![0, 1]);
        assert_eq!(set.pixels.len(), 2 * 3 * 64);
        assert_eq!(set.pixels[0], 10);
        assert_eq!(set.pixels[3 * 64], 200);
    }

    #[test]
    fn a_wide_image_is_centre_cropped_not_squeezed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bars")).unwrap();
        // 30 wide, 10 high: black left third, white middle third, black right third.
        let img = image::GrayImage::from_fn(30, 10, |x, _| {
            image::Luma([if (10..20).contains(&x) { 255 } else { 0 }])
        });
        img.save(dir.path().join("bars").join("a.png")).unwrap();
        let set = open(dir.path(), 4, 1).unwrap();
        // The centre crop is the white third: every pixel white (a squeeze would keep black edges).
        assert!(set.pixels.iter().all(|&p| p > 200), "{:?}", set.pixels);
    }

    #[test]
    fn classes_txt_orders_and_names_the_classes() {
        let dir = folder(&[("n01", 10), ("n02", 200)]);
        std::fs::write(
            dir.path().join(CLASSES_FILE),
            "n02 golden retriever\nn01 tench\n",
        )
        .unwrap();
        let set = open(dir.path(), 8, 1).unwrap();
        assert_eq!(set.class_names, vec!["golden retriever", "tench"]);
        assert_eq!(set.class_folders, vec!["n02", "n01"]);
        // Label 0 is n02's image (shade 200), label 1 n01's (shade 10).
        assert_eq!(set.labels, vec![0, 1]);
        assert!(set.pixels[..64].iter().all(|&p| p == 200));
        assert!(set.pixels[64..].iter().all(|&p| p == 10));
    }

    #[test]
    fn a_classes_txt_that_disagrees_with_the_folders_is_named() {
        let dir = folder(&[("n01", 10), ("n02", 200)]);
        for (text, expected) in [
            ("n01 tench\n", "class folder \"n02\" is not listed"),
            ("n01 tench\nn03 goldfish\n", "line 2 names folder \"n03\""),
            ("n01 tench\nn01 tench again\n", "\"n01\" a second time"),
            ("n01 tench\nn02 tench\n", "name \"tench\" a second time"),
        ] {
            std::fs::write(dir.path().join(CLASSES_FILE), text).unwrap();
            let err = format!("{:#}", open(dir.path(), 8, 1).unwrap_err());
            assert!(
                err.contains(expected) && err.contains(CLASSES_FILE),
                "{text:?}: {err}"
            );
        }
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
