//! IDX files (MNIST's format, also what `tools/fetch-data` writes for Fashion-MNIST).
use std::path::Path;

use anyhow::{bail, ensure};

use super::{ImageSet, Split};

/// Reads `<root>/{train,t10k}-{images-idx3,labels-idx1}-ubyte`.
pub(super) fn open(
    root: &Path,
    split: Split,
    class_names: Vec<String>,
) -> anyhow::Result<ImageSet> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_path = root.join(format!("{prefix}-images-idx3-ubyte"));
    let labels_path = root.join(format!("{prefix}-labels-idx1-ubyte"));
    for path in [&images_path, &labels_path] {
        if !path.exists() {
            bail!(
                "missing dataset file {}: run tools/fetch-data first",
                path.display()
            );
        }
    }
    let images = mf_core::idx::read_images(&std::fs::read(&images_path)?)
        .map_err(|e| anyhow::anyhow!("bad IDX image file {}: {e}", images_path.display()))?;
    let labels = mf_core::idx::read_labels(&std::fs::read(&labels_path)?)
        .map_err(|e| anyhow::anyhow!("bad IDX label file {}: {e}", labels_path.display()))?;
    let (pixels, n, height, width) = (images.pixels, images.count, images.rows, images.cols);
    ensure!(
        height == width,
        "images are {height}x{width}; square images expected"
    );
    ensure!(labels.len() == n, "{n} images but {} labels", labels.len());
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= class_names.len()) {
        bail!(
            "label {bad} out of range: expected 0..{}",
            class_names.len()
        );
    }
    Ok(ImageSet {
        pixels,
        labels: labels.into_iter().map(u16::from).collect(),
        channels: 1,
        size: height,
        class_names,
        class_folders: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_fetch_script() {
        let err = open(Path::new("/nonexistent"), Split::Train, vec!["0".into()]).unwrap_err();
        assert!(err.to_string().contains("tools/fetch-data"), "{err}");
    }
}
