//! IDX files (MNIST's format, and what `tools/fetch-data` writes for Fashion-MNIST).
use std::string::String;
use std::vec::Vec;

/// Decoded images: pixels `[n, rows, cols]`, 0..=255.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    /// Pixels, row-major.
    pub pixels: Vec<u8>,
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
}

/// Parses an IDX3 unsigned-byte image file.
pub fn read_images(bytes: &[u8]) -> Result<IdxImages, String> {
    let dims = header(bytes, 0x0803, 3)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    let body = &bytes[16..];
    let want = count
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or("image dimensions overflow")?;
    if body.len() != want {
        return Err(std::format!(
            "expected {count} images of {rows}x{cols} ({want} bytes), found {} bytes",
            body.len()
        ));
    }
    Ok(IdxImages {
        pixels: body.to_vec(),
        count,
        rows,
        cols,
    })
}

/// Parses an IDX1 unsigned-byte label file.
pub fn read_labels(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let dims = header(bytes, 0x0801, 1)?;
    let body = &bytes[8..];
    if body.len() != dims[0] {
        return Err(std::format!(
            "expected {} labels, found {} bytes",
            dims[0],
            body.len()
        ));
    }
    Ok(body.to_vec())
}

/// Checks the magic number and returns the dimensions.
fn header(bytes: &[u8], magic: u32, rank: usize) -> Result<Vec<usize>, String> {
    let need = 4 + 4 * rank;
    if bytes.len() < need {
        return Err(std::format!(
            "file of {} bytes is shorter than its header",
            bytes.len()
        ));
    }
    let word = |i: usize| {
        u32::from_be_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    if word(0) != magic {
        return Err(std::format!(
            "magic number {:#x}, expected {magic:#x}",
            word(0)
        ));
    }
    Ok((1..=rank).map(|i| word(i) as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
        v.extend(body);
        v
    }

    #[test]
    fn parses_images_and_labels() {
        let img = read_images(&idx(0x803, &[2, 2, 3], &[7; 12])).unwrap();
        assert_eq!(
            (img.pixels.len(), img.count, img.rows, img.cols),
            (12, 2, 2, 3)
        );
        assert_eq!(
            read_labels(&idx(0x801, &[3], &[1, 2, 3])).unwrap(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn truncated_or_foreign_files_are_errors() {
        assert!(read_images(&idx(0x803, &[2, 2, 3], &[7; 11])).is_err());
        assert!(read_images(&idx(0x801, &[2, 2, 3], &[7; 12])).is_err());
        assert!(read_labels(&[0, 0]).is_err());
    }
}
