//! Couplings: images a trained model drew from known noise, each kept with the seed of its
//! noise, so that a student trains on (noise, image) pairs the teacher's flow joined instead of
//! on real images paired with fresh noise (the reflow of rectified flow, Liu et al. 2022).
//! Along a coupled pair the straight path is the teacher's own map from noise to image, so the
//! average velocity over [0, 1] that one-step sampling takes has a sharp target.
//!
//! A couplings file is safetensors: `pixels` (u8 `[n, channels, size, size]`, 0..=255 as
//! `p / 127.5 − 1` like every image set), `labels` (u16 `[n]`), `draws` (u64 `[n]`: which draw
//! each image is, since draws that diverged are left out), and metadata naming the dataset the
//! teacher modelled, its class names, the noise seed and how the images were drawn. Draw `d`
//! starts from mf-core's [`Noise`] seeded with `noise_seed + d`.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use mf_core::noise::Noise;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use super::ImageSet;

/// The largest couplings file read (4 GiB: 5 million MNIST-sized pairs).
const MAX_BYTES: u64 = 4 << 30;

/// How a couplings file was made, kept in its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The dataset the teacher was trained on (`mnist`, `fashion-mnist`, `folder`).
    pub dataset: String,
    /// The teacher's class names, by label.
    pub class_names: Vec<String>,
    /// Draw `d` starts from the noise seeded with `noise_seed + d`.
    pub noise_seed: u64,
    /// The teacher's run folder, as given.
    pub teacher: String,
    /// The teacher's config hash.
    pub teacher_config_hash: String,
    /// The teacher's training step.
    pub teacher_step: u64,
    /// The teacher's training wall time in seconds.
    pub teacher_seconds: f64,
    /// Network evaluations per image.
    pub steps: usize,
    /// The classifier-free guidance scale ω the teacher sampled with (1: none); left out of
    /// the metadata when 1, so that files written before it read as unguided.
    #[serde(default = "unguided", skip_serializing_if = "is_unguided")]
    pub guidance: f64,
    /// Draws made; those with a value beyond ±`keep_within` were left out.
    pub draws_made: u64,
    /// Draws kept: the file's pairs.
    pub kept: u64,
    /// The largest magnitude a kept image may reach before clipping.
    pub keep_within: f32,
    /// Wall time of drawing them, in seconds.
    pub seconds: f64,
}

/// The guidance scale of a teacher that sampled without guidance.
fn unguided() -> f64 {
    1.0
}

/// Whether `omega` is [`unguided`]'s.
fn is_unguided(omega: &f64) -> bool {
    *omega == 1.0
}

/// Coupled pairs: the teacher's images and the draws whose noise they came from.
#[derive(Debug, Clone)]
pub struct Coupled {
    /// The teacher's images, with the labels they were drawn for.
    pub images: ImageSet,
    /// Which draw each image is.
    pub draws: Vec<u64>,
    /// How they were made.
    pub provenance: Provenance,
}

impl Coupled {
    /// Fills `out` (one sample's values) with the noise image `i` was drawn from.
    pub fn noise(&self, i: usize, out: &mut [f32]) {
        Noise::new(noise_seed(self.provenance.noise_seed, self.draws[i])).fill(out);
    }
}

/// The seed of draw `d`'s noise.
pub fn noise_seed(base: u64, d: u64) -> u64 {
    base.wrapping_add(d)
}

/// Writes couplings atomically: `images[i]` is draw `draws[i]`.
pub fn write(
    path: &Path,
    images: &ImageSet,
    draws: &[u64],
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let n = images.len();
    ensure!(draws.len() == n, "couplings: one draw index per image");
    let shape = vec![n, images.channels, images.size, images.size];
    let labels: Vec<u8> = images.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let draws: Vec<u8> = draws.iter().flat_map(|d| d.to_le_bytes()).collect();
    let tensors = [
        (
            "pixels",
            TensorView::new(Dtype::U8, shape, &images.pixels)
                .context("couplings: pixels do not match their shape")?,
        ),
        (
            "labels",
            TensorView::new(Dtype::U16, vec![n], &labels)
                .context("couplings: one label per image")?,
        ),
        (
            "draws",
            TensorView::new(Dtype::U64, vec![n], &draws)
                .context("couplings: one draw index per image")?,
        ),
    ];
    let metadata = HashMap::from([("provenance".to_string(), serde_json::to_string(provenance)?)]);
    let bytes = safetensors::serialize(tensors, Some(metadata))
        .map_err(|e| anyhow::anyhow!("cannot encode couplings: {e}"))?;
    mf_core::atomic::write(path, &bytes)
}

/// Reads a couplings file made from `dataset` (the name the student's config gives), checking
/// its shapes, labels and class names.
pub fn open(path: &Path, dataset: &str) -> anyhow::Result<Coupled> {
    let bytes = mf_core::bounded::read(path, MAX_BYTES, "couplings file")?;
    let context = || format!("couplings file {}", path.display());
    decode(&bytes, dataset).with_context(context)
}

/// Decodes a couplings file's bytes.
fn decode(bytes: &[u8], dataset: &str) -> anyhow::Result<Coupled> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("not safetensors: {e}"))?;
    let text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("provenance"))
        .context("no provenance in the metadata (write couplings with `mf-train couple`)")?;
    let provenance: Provenance =
        serde_json::from_str(text).context("unreadable provenance in the metadata")?;
    ensure!(
        provenance.dataset == dataset,
        "made from a {:?} model, but the config trains on {dataset:?}: data.dataset must name \
         the dataset the teacher modelled",
        provenance.dataset
    );
    let classes = provenance.class_names.len();
    ensure!(
        classes > 0,
        "no class names: couplings need a class-conditional teacher"
    );
    let tensors = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("not safetensors: {e}"))?;
    let pixels = tensors.tensor("pixels").context("no `pixels` tensor")?;
    let labels = tensors.tensor("labels").context("no `labels` tensor")?;
    let draws = tensors.tensor("draws").context("no `draws` tensor")?;
    ensure!(
        pixels.dtype() == Dtype::U8 && labels.dtype() == Dtype::U16 && draws.dtype() == Dtype::U64,
        "`pixels`, `labels` and `draws` must be u8, u16 and u64 (found {:?}, {:?} and {:?})",
        pixels.dtype(),
        labels.dtype(),
        draws.dtype()
    );
    let shape = pixels.shape();
    let [count, channels, height, width] = shape[..] else {
        bail!("`pixels` is {shape:?}; [n, channels, size, size] expected");
    };
    ensure!(
        labels.shape() == [count] && draws.shape() == [count] && count > 0,
        "{count} images but labels of shape {:?} and draws of shape {:?}",
        labels.shape(),
        draws.shape()
    );
    ensure!(
        provenance.kept == count as u64,
        "{count} images, but the provenance says {} were kept",
        provenance.kept
    );
    ensure!(
        height == width && [1, 3, 4].contains(&channels),
        "images of {channels}x{height}x{width}; square images of 1, 3 or 4 channels expected"
    );
    let labels: Vec<u16> = labels
        .data()
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
        bail!("label {bad} out of range: expected 0..{classes}");
    }
    let draws = draws
        .data()
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    Ok(Coupled {
        draws,
        images: ImageSet {
            pixels: pixels.data().to_vec(),
            labels,
            channels,
            size: height,
            class_names: provenance.class_names.clone(),
            class_folders: Vec::new(),
        },
        provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provenance() -> Provenance {
        Provenance {
            dataset: "mnist".into(),
            class_names: vec!["a".into(), "b".into()],
            noise_seed: 9,
            teacher: "runs/t".into(),
            teacher_config_hash: "h".into(),
            teacher_step: 5,
            teacher_seconds: 12.5,
            steps: 10,
            guidance: 1.5,
            draws_made: 4,
            kept: 3,
            keep_within: 1.5,
            seconds: 0.25,
        }
    }

    fn images() -> ImageSet {
        ImageSet {
            pixels: (0..3 * 2 * 2).map(|p| (p * 20) as u8).collect(),
            labels: vec![1, 0, 1],
            channels: 1,
            size: 2,
            class_names: vec!["a".into(), "b".into()],
            class_folders: Vec::new(),
        }
    }

    #[test]
    fn written_couplings_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        write(&path, &images(), &[0, 2, 3], &provenance()).unwrap();
        let back = open(&path, "mnist").unwrap();
        assert_eq!(back.provenance, provenance());
        assert_eq!(back.images.pixels, images().pixels);
        assert_eq!(back.images.labels, images().labels);
        assert_eq!((back.images.channels, back.images.size), (1, 2));
        // Image 1 is draw 2: its noise is the stream seeded 9 + 2.
        let (mut got, mut want) = ([0f32; 4], [0f32; 4]);
        back.noise(1, &mut got);
        Noise::new(11).fill(&mut want);
        assert_eq!(got, want);
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        write(&path, &images(), &[0, 1, 2], &provenance()).unwrap();
        let err = open(&path, "fashion-mnist").unwrap_err();
        assert!(format!("{err:#}").contains("data.dataset"), "{err:#}");

        let mut wrong = images();
        wrong.labels[0] = 2;
        write(&path, &wrong, &[0, 1, 2], &provenance()).unwrap();
        let err = open(&path, "mnist").unwrap_err();
        assert!(
            format!("{err:#}").contains("label 2 out of range"),
            "{err:#}"
        );

        let mut miscounted = provenance();
        miscounted.kept = 2;
        write(&path, &images(), &[0, 1, 2], &miscounted).unwrap();
        let err = open(&path, "mnist").unwrap_err();
        assert!(
            format!("{err:#}").contains("provenance says 2 were kept"),
            "{err:#}"
        );

        std::fs::write(&path, b"not a couplings file").unwrap();
        let err = open(&path, "mnist").unwrap_err();
        assert!(format!("{err:#}").contains("not safetensors"), "{err:#}");
        let err = open(&dir.path().join("missing"), "mnist").unwrap_err();
        assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
    }
}
