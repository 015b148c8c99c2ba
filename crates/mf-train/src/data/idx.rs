//! IDX files (MNIST's format, also what `tools/fetch-data` writes for Fashion-MNIST).
use std::path::Path;

use anyhow::{Context, bail, ensure};

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
    let (pixels, n, height, width) = read_idx_images(&std::fs::read(&images_path)?)
        .with_context(|| format!("bad IDX image file {}", images_path.display()))?;
    let labels = read_idx_labels(&std::fs::read(&labels_path)?)
        .with_context(|| format!("bad IDX label file {}", labels_path.display()))?;
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
        labels,
        channels: 1,
        size: height,
        class_names,
    })
}

/// Parses an IDX3 unsigned-byte image file: pixels, count, rows, columns.
pub fn read_idx_images(bytes: &[u8]) -> anyhow::Result<(Vec<u8>, usize, usize, usize)> {
    let dims = header(bytes, 0x0803, 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    let body = &bytes[16..];
    ensure!(
        body.len() == n * rows * cols,
        "expected {n} images of {rows}x{cols} ({} bytes), found {} bytes",
        n * rows * cols,
        body.len()
    );
    Ok((body.to_vec(), n, rows, cols))
}

/// Parses an IDX1 unsigned-byte label file.
pub fn read_idx_labels(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let dims = header(bytes, 0x0801, 1)?;
    let body = &bytes[8..];
    ensure!(
        body.len() == dims[0],
        "expected {} labels, found {} bytes",
        dims[0],
        body.len()
    );
    Ok(body.to_vec())
}

/// Checks the magic number and returns the dimensions.
fn header(bytes: &[u8], magic: u32, rank: usize) -> anyhow::Result<Vec<usize>> {
    let need = 4 + 4 * rank;
    ensure!(
        bytes.len() >= need,
        "file of {} bytes is shorter than its header",
        bytes.len()
    );
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    ensure!(
        word(0) == magic,
        "magic number {:#x}, expected {magic:#x}",
        word(0)
    );
    Ok((1..=rank).map(|i| word(i) as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
        v.extend(body);
        v
    }

    #[test]
    fn parses_images_and_labels() {
        let (px, n, r, c) = read_idx_images(&idx(0x803, &[2, 2, 3], &[7; 12])).unwrap();
        assert_eq!((px.len(), n, r, c), (12, 2, 2, 3));
        assert_eq!(
            read_idx_labels(&idx(0x801, &[3], &[1, 2, 3])).unwrap(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn truncated_or_foreign_files_are_errors() {
        assert!(read_idx_images(&idx(0x803, &[2, 2, 3], &[7; 11])).is_err());
        assert!(read_idx_images(&idx(0x801, &[2, 2, 3], &[7; 12])).is_err());
        assert!(read_idx_labels(&[0, 0]).is_err());
    }

    #[test]
    fn missing_files_name_the_fetch_script() {
        let err = open(Path::new("/nonexistent"), Split::Train, vec!["0".into()]).unwrap_err();
        assert!(err.to_string().contains("tools/fetch-data"), "{err}");
    }
}
