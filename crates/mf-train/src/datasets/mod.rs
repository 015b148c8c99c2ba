//! Training data: image sets (MNIST, Fashion-MNIST, a folder per class), a teacher's
//! couplings of noise and image, and toy 2-D sets. Pixels map to [-1, 1] as `p / 127.5 − 1`.
pub mod coupled;
pub mod folder;
mod idx;
mod toy;

use std::path::PathBuf;

use anyhow::{Context, bail, ensure};
use rand::RngExt;

use crate::config::DataConfig;
use crate::rng::Rng;

pub use coupled::Coupled;
pub use toy::Toy;

/// A batch of samples, flattened row-major: `x` is `[n, dims...]`, `labels` has `n` entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Sample values in [-1, 1] (images) or data units (toy sets).
    pub x: Vec<f32>,
    /// Class labels (0 for unconditional sets).
    pub labels: Vec<i64>,
    /// The noise each sample is coupled with, `[n, dims...]` (couplings only: other sets
    /// pair samples with fresh noise).
    pub noise: Option<Vec<f32>>,
}

/// Decoded images of one size with class labels.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Pixels, `[n, channels, height, width]`, 0..=255.
    pub pixels: Vec<u8>,
    /// One label per image, each below `class_names.len()`.
    pub labels: Vec<u16>,
    /// Channels per image (1 or 3).
    pub channels: usize,
    /// Image height and width.
    pub size: usize,
    /// Class names, indexed by label.
    pub class_names: Vec<String>,
    /// Where each class's images came from (a folder dataset's class folders; empty otherwise).
    pub class_folders: Vec<String>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image.
    pub fn dims(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// `n` image indices drawn with replacement.
    fn picks(&self, rng: &mut Rng, n: usize) -> Vec<usize> {
        (0..n).map(|_| rng.random_range(0..self.len())).collect()
    }

    /// The images `picks` with their labels, paired with `noise` if given.
    fn batch(&self, picks: &[usize], noise: Option<Vec<f32>>) -> Batch {
        Batch {
            x: picks.iter().flat_map(|&i| self.image(i)).collect(),
            labels: picks.iter().map(|&i| self.labels[i] as i64).collect(),
            noise,
        }
    }

    /// Image `i` mapped to [-1, 1].
    pub fn image(&self, i: usize) -> impl Iterator<Item = f32> + '_ {
        self.pixels[i * self.dims()..(i + 1) * self.dims()]
            .iter()
            .map(|&p| p as f32 / 127.5 - 1.0)
    }
}

/// A training set.
#[derive(Debug, Clone)]
pub enum Dataset {
    /// Images with labels.
    Images(ImageSet),
    /// A teacher's images, each with the noise it was drawn from.
    Coupled(Coupled),
    /// A 2-D distribution sampled afresh for every batch (unconditional).
    Toy(Toy),
}

/// The Fashion-MNIST class names, by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

impl Dataset {
    /// How the couplings were made, for a set of couplings.
    pub fn provenance(&self) -> Option<&coupled::Provenance> {
        match self {
            Dataset::Coupled(coupled) => Some(&coupled.provenance),
            _ => None,
        }
    }

    /// Opens the training split the config names.
    pub fn open(config: &DataConfig) -> anyhow::Result<Dataset> {
        Dataset::open_split(config, Split::Train)
    }

    /// Opens a split of the dataset the config names (toy sets have no split); the training
    /// split of a config with `data.couplings` is the teacher's couplings.
    pub fn open_split(config: &DataConfig, split: Split) -> anyhow::Result<Dataset> {
        let name = config.dataset.as_str();
        if let Some(toy) = Toy::from_name(name) {
            ensure!(
                config.couplings.is_none(),
                "data.couplings pairs images with noise; {name} is a toy set"
            );
            return Ok(Dataset::Toy(toy));
        }
        if let (Some(path), Split::Train) = (&config.couplings, split) {
            let coupled = coupled::open(path, name)?;
            let (names, _) = Dataset::class_list(config)?;
            ensure!(
                coupled.images.class_names == names,
                "couplings file {} has classes {:?}; {name} has {:?}",
                path.display(),
                coupled.images.class_names,
                names
            );
            return Ok(Dataset::Coupled(coupled));
        }
        let root = config.root.clone().unwrap_or_else(|| default_root(name));
        match name {
            "mnist" | "fashion-mnist" => {
                let (names, _) = Dataset::class_list(config)?;
                Ok(Dataset::Images(idx::open(&root, split, names)?))
            }
            "folder" => {
                let size = config
                    .image_size
                    .context("data.image_size is required for a folder dataset")?;
                let channels = config.channels.unwrap_or(3);
                Ok(Dataset::Images(folder::open(&root, size, channels)?))
            }
            other => bail!(
                "unknown dataset {other:?}; accepted: mnist, fashion-mnist, folder, checkerboard, moons, gaussians8"
            ),
        }
    }

    /// The class names of the dataset a config names, and for a folder dataset its class
    /// folders, without decoding any image (a model card needs them, not the pixels).
    pub fn class_list(config: &DataConfig) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let name = config.dataset.as_str();
        match name {
            "mnist" => Ok(((0..10).map(|d| d.to_string()).collect(), Vec::new())),
            "fashion-mnist" => Ok((
                FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
                Vec::new(),
            )),
            "folder" => {
                let root = config.root.clone().unwrap_or_else(|| default_root(name));
                let classes = folder::classes(&root)?;
                Ok((classes.names, classes.folders))
            }
            _ => Ok((Vec::new(), Vec::new())),
        }
    }

    /// Shape of one sample: `[channels, size, size]` or `[2]`.
    pub fn sample_shape(&self) -> Vec<usize> {
        match self {
            Dataset::Images(set) | Dataset::Coupled(Coupled { images: set, .. }) => {
                vec![set.channels, set.size, set.size]
            }
            Dataset::Toy(_) => vec![2],
        }
    }

    /// Values per sample.
    pub fn dims(&self) -> usize {
        self.sample_shape().iter().product()
    }

    /// Class names (empty for unconditional sets).
    pub fn class_names(&self) -> Vec<String> {
        match self {
            Dataset::Images(set) | Dataset::Coupled(Coupled { images: set, .. }) => {
                set.class_names.clone()
            }
            Dataset::Toy(_) => Vec::new(),
        }
    }

    /// Number of classes (0 for unconditional sets).
    pub fn classes(&self) -> usize {
        self.class_names().len()
    }

    /// Draws `n` samples (images and couplings with replacement, toy points afresh).
    pub fn batch(&self, rng: &mut Rng, n: usize) -> Batch {
        match self {
            Dataset::Images(set) => set.batch(&set.picks(rng, n), None),
            Dataset::Coupled(coupled) => {
                let set = &coupled.images;
                let picks = set.picks(rng, n);
                let mut noise = vec![0f32; n * set.dims()];
                for (&i, out) in picks.iter().zip(noise.chunks_exact_mut(set.dims())) {
                    coupled.noise(i, out);
                }
                set.batch(&picks, Some(noise))
            }
            Dataset::Toy(toy) => Batch {
                x: toy.sample(rng, n),
                labels: vec![0; n],
                noise: None,
            },
        }
    }
}

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training images.
    Train,
    /// The held-out test images.
    Test,
}

/// `$MF_DATA_DIR/<name>`, else the first `data/<name>` folder in the working directory or one
/// above it (so a run from anywhere inside the repository finds `tools/fetch-data`'s folder),
/// else `data/<name>` under the working directory. Resolved when the program runs: a binary
/// copied to another machine looks where it runs, never at the build machine's paths.
pub fn default_root(name: &str) -> PathBuf {
    if let Some(base) = std::env::var_os("MF_DATA_DIR") {
        return PathBuf::from(base).join(name);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .map(|dir| dir.join("data").join(name))
        .find(|candidate| candidate.is_dir())
        .unwrap_or_else(|| cwd.join("data").join(name))
}
