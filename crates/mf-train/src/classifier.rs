//! The reference classifier that measures sample quality: an MLP trained on the *test* split,
//! so it has never seen the images the generators train on. Its penultimate features feed the
//! Fréchet distance.
use std::path::Path;

use anyhow::{Context, ensure};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::DataConfig;
use crate::datasets::{Dataset, ImageSet, Split};
use crate::model::dual::linear;
use crate::model::{Dual, Traced, Tracer};
use crate::rng::Rng;

/// Hidden widths: the last one is the feature size.
pub const HIDDEN: [usize; 2] = [256, 128];

/// The classifier network.
#[derive(Module, Debug)]
pub struct Classifier {
    /// dims → 256 → 128 → classes.
    pub layers: Vec<Linear>,
}

/// What a trained classifier is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    /// Dataset name.
    pub dataset: String,
    /// Shape of one image.
    pub sample_shape: Vec<usize>,
    /// Class names.
    pub class_names: Vec<String>,
    /// Accuracy on the training split (held out for the classifier).
    pub held_out_accuracy: f64,
}

impl Classifier {
    /// A fresh classifier.
    pub fn new(dims: usize, classes: usize, device: &Device) -> Self {
        let widths = [dims, HIDDEN[0], HIDDEN[1], classes];
        Classifier {
            layers: widths
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
        }
    }

    /// Penultimate features `[N, 128]` and logits `[N, classes]`.
    pub fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let (features, logits) = self.features_and_logits(Dual::primal(x));
        (features.value, logits.value)
    }

    /// [`Classifier::forward`] over dual values (so that it can be traced).
    pub fn features_and_logits(&self, x: Dual<2>) -> (Dual<2>, Dual<2>) {
        let mut h = x;
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
    let mut model = Classifier::new(test.dims(), test.class_names.len(), &device);
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
        sample_shape: vec![test.channels, test.size, test.size],
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
    let dims = info.sample_shape.iter().product();
    let mut model = Classifier::new(dims, info.class_names.len(), device);
    let mut store = SafetensorsStore::from_file(run.join("classifier.safetensors"))
        .with_from_adapter(PyTorchToBurnAdapter);
    model
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot read the classifier: {e}"))?;
    Ok((model, info))
}
