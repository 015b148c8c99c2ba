//! The reference classifiers that measure sample quality, trained on the *test* split so they
//! have never seen the images the generators train on: an MLP, and a small CNN whose
//! convolutional features separate what pixel-wise MLP features blur together (the stricter
//! evaluation). Their penultimate features feed the Fréchet distance and
//! precision/recall.
use std::path::Path;

use anyhow::{Context, ensure};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::DataConfig;
use crate::datasets::{Dataset, ImageSet, Split};
use crate::model::dual::{conv2d, linear};
use crate::model::{Dual, Traced, Tracer};
use crate::rng::Rng;

/// Hidden widths of the MLP: the last one is its feature size.
pub const HIDDEN: [usize; 2] = [256, 128];

/// Channels of the CNN's 3×3 convolutions (the first at stride 1, the others at stride 2:
/// 28×28 → 28, 14, 7, 4). Small enough that both shipped CNNs stay within `models/`' budget
/// (193,000 parameters on MNIST).
pub const CNN_CHANNELS: [usize; 4] = [16, 32, 64, 64];

/// The CNN's feature size (the dense layer after its convolutions).
pub const CNN_FEATURES: usize = 128;

/// The classifier's design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierArch {
    /// dims → 256 → 128 → classes, SiLU (128 features).
    #[default]
    Mlp,
    /// 3×3 convs of 16 (stride 1), 32, 64 and 64 channels (stride 2), SiLU, then a dense
    /// layer of 128 features and the logits.
    Cnn,
}

/// The classifier network.
#[derive(Module, Debug)]
pub struct Classifier {
    /// The convolutions (none for the MLP).
    pub convs: Vec<Conv2d>,
    /// The dense layers; the input of the last is the feature vector.
    pub layers: Vec<Linear>,
    /// `[C, H, W]` of one image.
    shape: [usize; 3],
}

/// What a trained classifier is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    /// Dataset name.
    pub dataset: String,
    /// Its design (`mlp` in files written before the CNN existed).
    #[serde(default)]
    pub arch: ClassifierArch,
    /// Shape of one image.
    pub sample_shape: Vec<usize>,
    /// Class names.
    pub class_names: Vec<String>,
    /// Accuracy on the training split (held out for the classifier).
    pub held_out_accuracy: f64,
}

impl Classifier {
    /// A fresh classifier for images of `shape` `[C, H, W]`.
    pub fn new(arch: ClassifierArch, shape: [usize; 3], classes: usize, device: &Device) -> Self {
        let dense = |widths: &[usize]| -> Vec<Linear> {
            widths
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect()
        };
        match arch {
            ClassifierArch::Mlp => Classifier {
                convs: Vec::new(),
                layers: dense(&[shape.iter().product(), HIDDEN[0], HIDDEN[1], classes]),
                shape,
            },
            ClassifierArch::Cnn => {
                let ins = std::iter::once(shape[0]).chain(CNN_CHANNELS);
                let convs = ins
                    .zip(CNN_CHANNELS)
                    .map(|(i, o)| {
                        Conv2dConfig::new([i, o], [3, 3])
                            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                            .init(device)
                    })
                    .collect();
                // Each stride-2 conv with padding 1 maps a side s to ceil(s / 2).
                let side = |s: usize| (1..CNN_CHANNELS.len()).fold(s, |s, _| s.div_ceil(2));
                let flat = CNN_CHANNELS[CNN_CHANNELS.len() - 1] * side(shape[1]) * side(shape[2]);
                Classifier {
                    convs,
                    layers: dense(&[flat, CNN_FEATURES, classes]),
                    shape,
                }
            }
        }
    }

    /// Size of the feature vector.
    pub fn features(&self) -> usize {
        self.layers[self.layers.len() - 1].weight.dims()[0]
    }

    /// Penultimate features `[N, features]` and logits `[N, classes]` of flattened images.
    pub fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let (features, logits) = self.features_and_logits(Dual::primal(x));
        (features.value, logits.value)
    }

    /// [`Classifier::forward`] over dual values (so that it can be traced).
    pub fn features_and_logits(&self, x: Dual<2>) -> (Dual<2>, Dual<2>) {
        let mut h = x;
        if !self.convs.is_empty() {
            let n = h.value.dims()[0];
            let [c, height, width] = self.shape;
            let mut maps = h.reshape([n, c, height, width]);
            for (i, conv) in self.convs.iter().enumerate() {
                maps = conv2d(maps, conv, if i == 0 { 1 } else { 2 }, 1).silu();
            }
            let [_, c, height, width] = maps.value.dims();
            h = maps.reshape([n, c * height * width]);
        }
        let last = self.layers.len() - 1;
        for layer in &self.layers[..last] {
            h = linear(h, layer).silu();
        }
        (h.clone(), linear(h, &self.layers[last]))
    }

    /// Traces the classifier into its float32 graph: input `image` `[N, sample shape…]`,
    /// output `scores` `[N, features + classes]` (penultimate features, then logits).
    pub fn trace(&self, image: Tensor<2>, sample_shape: &[usize]) -> anyhow::Result<Traced> {
        let tracer = Tracer::new(self, false);
        let (features, logits) =
            self.features_and_logits(tracer.input("image", sample_shape, image));
        let scores = Dual::cat(vec![features, logits], 1);
        let width = scores.value.dims()[1];
        tracer.finish(scores, "scores", &[width])
    }
}

/// Images `idx` as a batch, each shifted by the given offsets (augmentation; zero for none).
fn batch(
    set: &ImageSet,
    idx: &[usize],
    shifts: &[(i32, i32)],
    device: &Device,
) -> (Tensor<2>, Tensor<1, Int>) {
    let s = set.size as i32;
    let x: Vec<f32> = idx
        .iter()
        .zip(shifts)
        .flat_map(|(&i, &(dx, dy))| {
            let img: Vec<f32> = set.image(i).collect();
            let plane = (s * s) as usize;
            (0..set.channels).flat_map(move |c| {
                let img = img.clone();
                (0..s * s).map(move |p| {
                    let (y, x) = (p / s - dy, p % s - dx);
                    if (0..s).contains(&y) && (0..s).contains(&x) {
                        img[c * plane + (y * s + x) as usize]
                    } else {
                        -1.0
                    }
                })
            })
        })
        .collect();
    let y: Vec<i64> = idx.iter().map(|&i| set.labels[i] as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [idx.len(), set.dims()]), device),
        Tensor::from_data(TensorData::new(y, [idx.len()]), device),
    )
}

/// Trains on the test split for `epochs` (random shifts of up to 2 pixels, cosine learning
/// rate), measures accuracy on the training split, and writes
/// `classifier.safetensors` (PyTorch layout) and `classifier.json` into `out`.
pub fn train(
    data: &DataConfig,
    arch: ClassifierArch,
    epochs: usize,
    seed: u64,
    out: &Path,
) -> anyhow::Result<ClassifierInfo> {
    let (Dataset::Images(test), Dataset::Images(train)) = (
        Dataset::open_split(data, Split::Test)?,
        Dataset::open_split(data, Split::Train)?,
    ) else {
        anyhow::bail!("the classifier needs an image dataset");
    };
    ensure!(epochs > 0, "--epochs must be positive");
    let device = Device::flex().autodiff();
    device.seed(seed);
    let shape = [test.channels, test.size, test.size];
    let mut model = Classifier::new(arch, shape, test.class_names.len(), &device);
    let mut optim = AdamConfig::new().init();
    let mut rng = Rng::seed_from_u64(seed);
    let batch_size = 128;
    let steps = epochs * test.len().div_ceil(batch_size);
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("training classifier {bar:30} {pos}/{len}")
            .expect("a valid template"),
    );
    for step in 0..steps {
        let idx: Vec<usize> = (0..batch_size)
            .map(|_| rng.random_range(0..test.len()))
            .collect();
        let shifts: Vec<(i32, i32)> = (0..batch_size)
            .map(|_| (rng.random_range(-2..=2), rng.random_range(-2..=2)))
            .collect();
        let (x, y) = batch(&test, &idx, &shifts, &device);
        let (_, logits) = model.forward(x);
        let loss = burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits, y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        // Cosine decay from 1e-3 to 0 over the run.
        let lr = 0.5e-3 * (1.0 + (std::f64::consts::PI * step as f64 / steps as f64).cos());
        model = optim.step(lr, model, grads);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let model = model.valid();
    let inner = device.inner();
    let mut correct = 0usize;
    for chunk in (0..train.len()).collect::<Vec<_>>().chunks(1000) {
        let (x, y) = batch(&train, chunk, &vec![(0, 0); chunk.len()], &inner);
        let (_, logits) = model.forward(x);
        let pred = logits.argmax(1).reshape([chunk.len()]);
        correct += pred.equal(y).int().sum().into_scalar::<i64>() as usize;
    }
    let info = ClassifierInfo {
        dataset: data.dataset.clone(),
        arch,
        sample_shape: shape.to_vec(),
        class_names: test.class_names.clone(),
        held_out_accuracy: correct as f64 / train.len() as f64,
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut store = SafetensorsStore::from_bytes(None).with_to_adapter(BurnToPyTorchAdapter);
    model
        .save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot encode the classifier: {e}"))?;
    let weights = store
        .get_bytes()
        .map_err(|e| anyhow::anyhow!("cannot encode the classifier: {e}"))?;
    mf_core::atomic::write(&out.join("classifier.safetensors"), &weights)?;
    mf_core::atomic::write(
        &out.join("classifier.json"),
        &serde_json::to_vec_pretty(&info)?,
    )?;
    Ok(info)
}

/// Loads a classifier written by [`train`].
pub fn load(run: &Path, device: &Device) -> anyhow::Result<(Classifier, ClassifierInfo)> {
    let info: ClassifierInfo = serde_json::from_slice(
        &std::fs::read(run.join("classifier.json"))
            .with_context(|| format!("no classifier in {}", run.display()))?,
    )?;
    let shape: [usize; 3] = info.sample_shape.as_slice().try_into().with_context(|| {
        format!(
            "{}: sample shape {:?} is not [C, H, W]",
            run.display(),
            info.sample_shape
        )
    })?;
    let mut model = Classifier::new(info.arch, shape, info.class_names.len(), device);
    let mut store = SafetensorsStore::from_file(run.join("classifier.safetensors"))
        .with_from_adapter(PyTorchToBurnAdapter);
    model
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot read the classifier: {e}"))?;
    Ok((model, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_design_gives_its_features_and_logits_for_any_image_size() {
        let device = Device::flex();
        for (arch, features) in [
            (ClassifierArch::Mlp, HIDDEN[1]),
            (ClassifierArch::Cnn, CNN_FEATURES),
        ] {
            // 28 → 14 → 7 → 4 and 32 → 16 → 8 → 4 per side; 30 → 15 → 8 → 4.
            for shape in [[1, 28, 28], [3, 32, 32], [1, 30, 30]] {
                let model = Classifier::new(arch, shape, 7, &device);
                let dims: usize = shape.iter().product();
                let x = Tensor::<2>::zeros([5, dims], &device);
                let (f, logits) = model.forward(x);
                assert_eq!(f.dims(), [5, features], "{arch:?} {shape:?}");
                assert_eq!(logits.dims(), [5, 7], "{arch:?} {shape:?}");
                assert_eq!(model.features(), features);
            }
        }
    }
}
