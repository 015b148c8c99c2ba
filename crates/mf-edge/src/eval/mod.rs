//! `mf-edge eval`: one-step sample quality measured with a reference classifier (trained on
//! the test split): the share of samples classified as the requested class, the Fréchet
//! distance of the classifier's penultimate features to real training images with the same
//! class mix, beside the same distance between two disjoint real sets (the floor), and
//! precision/recall in the same features (Kynkäänniemi et al. 2019: the share of samples
//! inside the real images' k-NN manifold, and of real images inside the samples'), which tell
//! samples off the real images' manifold (ghost strokes, artefacts: precision falls) from lost
//! diversity (dropped modes, and blur, which pulls features together: recall falls); measured
//! on altered real images by `tools/probe-precision-recall`.
use std::path::Path;

use anyhow::{Context, ensure};
use mf_core::onnx;
use mf_kernels::Isa;
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use prost::Message;
use serde::Deserialize;

use crate::backends::Backend;
use crate::model::Model;
use crate::native::NativeEngine;
use crate::sampler::generate;
use crate::tensor::Value;

mod manifold;

pub use manifold::{Manifold, NEIGHBOURS};

/// The metadata key of a classifier graph (written by mf-export).
pub const CLASSIFIER_KEY: &str = "meanflow.classifier";

#[derive(Deserialize)]
struct ClassifierMeta {
    #[serde(default = "mlp")]
    arch: String,
    sample_shape: Vec<usize>,
    class_names: Vec<String>,
    features: usize,
}

fn mlp() -> String {
    "mlp".into()
}

/// The largest IDX file read (1 GiB: MNIST's training images are 47 MB).
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// The largest feature vector a classifier may declare (its covariance is features² values).
pub const MAX_FEATURES: usize = 4096;

impl ClassifierMeta {
    /// What `classify` relies on: an image shape with positive sizes, classes and features.
    fn check(&self) -> anyhow::Result<()> {
        let values = self
            .sample_shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n > 0 && n <= mf_core::card::MAX_SAMPLE_VALUES);
        ensure!(
            !self.sample_shape.is_empty() && values.is_some(),
            "sample shape {:?}: positive sizes and at most {} values are accepted",
            self.sample_shape,
            mf_core::card::MAX_SAMPLE_VALUES
        );
        ensure!(
            !self.class_names.is_empty(),
            "no class names: a classifier has at least one class"
        );
        ensure!(
            (1..=MAX_FEATURES).contains(&self.features),
            "{} features: 1 to {MAX_FEATURES} are accepted",
            self.features
        );
        Ok(())
    }
}

/// The reference classifier in fp32, MLP or CNN, on the native engine.
pub struct Classifier {
    engine: NativeEngine,
    arch: String,
    shape: Vec<usize>,
    classes: usize,
    features: usize,
}

impl Classifier {
    /// Loads a classifier graph written by `mf-export` from an `mf-train classifier` run.
    pub fn open(path: &Path) -> anyhow::Result<Classifier> {
        let bytes = mf_core::bounded::read(path, crate::model::MAX_MODEL_BYTES, "classifier")?;
        let proto = onnx::ModelProto::decode(bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("not an ONNX model: {e}"))?;
        let meta = proto
            .metadata_props
            .iter()
            .find(|p| p.key == CLASSIFIER_KEY)
            .with_context(|| {
                format!(
                    "{} is not a reference classifier (no {CLASSIFIER_KEY})",
                    path.display()
                )
            })?;
        let meta: ClassifierMeta = serde_json::from_str(&meta.value)
            .with_context(|| format!("{}: invalid {CLASSIFIER_KEY} metadata", path.display()))?;
        meta.check()
            .with_context(|| format!("{}: invalid {CLASSIFIER_KEY} metadata", path.display()))?;
        let graph = proto
            .graph
            .as_ref()
            .context("the classifier has no graph")?;
        let engine = NativeEngine::from_graph(graph, Isa::select()?)?;
        Ok(Classifier {
            engine,
            arch: meta.arch,
            shape: meta.sample_shape,
            classes: meta.class_names.len(),
            features: meta.features,
        })
    }

    /// The design its metadata names (`mlp` or `cnn`).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Size of the feature vector.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Features `[n, features]` and predicted classes of `n` images in model values.
    pub fn classify(&self, images: &[f32]) -> anyhow::Result<(Vec<f64>, Vec<usize>)> {
        let dims: usize = self.shape.iter().product();
        let (mut features, mut predicted) = (Vec::new(), Vec::new());
        for chunk in images.chunks(500 * dims) {
            let n = chunk.len() / dims;
            let shape: crate::tensor::Shape = std::iter::once(n)
                .chain(self.shape.iter().copied())
                .collect();
            let out = self
                .engine
                .run(vec![("image", Value::F32(chunk.to_vec(), shape))])?;
            let scores = out.f32("classifier scores")?.0;
            let width = self.features + self.classes;
            ensure!(
                scores.len() == n * width,
                "the classifier returned {} scores for {n} images; its metadata promises {} \
                 features and {} classes ({width} per image)",
                scores.len(),
                self.features,
                self.classes
            );
            for row in scores.chunks(width) {
                features.extend(row[..self.features].iter().map(|&v| v as f64));
                let logits = &row[self.features..];
                let best = (0..self.classes)
                    .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                    .unwrap_or(0);
                predicted.push(best);
            }
        }
        Ok((features, predicted))
    }
}

/// An IDX image file and its label file from `dir` (`[images, labels]`), each at most
/// [`MAX_IDX_BYTES`]; a missing or unreadable one names its path, `what` it is and `hint`.
fn read_idx(
    dir: &Path,
    [images, labels]: [&str; 2],
    what: &str,
    hint: &str,
) -> anyhow::Result<(mf_core::idx::IdxImages, Vec<u8>)> {
    let read = |name: &str| {
        let path = dir.join(name);
        mf_core::bounded::read(&path, MAX_IDX_BYTES, what)
            .with_context(|| format!("missing or unreadable {}: {hint}", path.display()))
    };
    let images = mf_core::idx::read_images(&read(images)?).map_err(anyhow::Error::msg)?;
    let labels = mf_core::idx::read_labels(&read(labels)?).map_err(anyhow::Error::msg)?;
    Ok((images, labels))
}

/// Real training images: `per_class` of each class for the reference set, and the next
/// `per_class` for the floor set (disjoint), in model values.
pub struct RealSets {
    /// Reference images, class by class.
    pub reference: Vec<f32>,
    /// Disjoint images with the same class mix.
    pub floor: Vec<f32>,
}

/// Reads the training split of an IDX dataset folder.
pub fn real_sets(root: &Path, classes: usize, per_class: usize) -> anyhow::Result<RealSets> {
    let (images, labels) = read_idx(
        root,
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        "dataset file",
        "run tools/fetch-data",
    )?;
    let dims = images.rows * images.cols;
    let (mut reference, mut floor) = (Vec::new(), Vec::new());
    for class in 0..classes {
        let picked: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == class)
            .take(2 * per_class)
            .collect();
        ensure!(
            picked.len() == 2 * per_class,
            "class {class} has fewer than {} training images",
            2 * per_class
        );
        for (j, &i) in picked.iter().enumerate() {
            let px = images.pixels[i * dims..(i + 1) * dims]
                .iter()
                .map(|&p| p as f32 / 127.5 - 1.0);
            if j < per_class {
                reference.extend(px)
            } else {
                floor.extend(px)
            }
        }
    }
    Ok(RealSets { reference, floor })
}

/// Fréchet distance between two feature sets `[n, d]`:
/// |μ₁ − μ₂|² + Tr(Σ₁ + Σ₂ − 2(Σ₁^½ Σ₂ Σ₁^½)^½).
pub fn frechet_distance(a: &[f64], b: &[f64], d: usize) -> f64 {
    let stats = |x: &[f64]| {
        let n = x.len() / d;
        let m = DMatrix::from_row_slice(n, d, x);
        let mean = DVector::from_iterator(d, (0..d).map(|j| m.column(j).mean()));
        let centered = DMatrix::from_fn(n, d, |i, j| m[(i, j)] - mean[j]);
        let cov = centered.transpose() * &centered / (n as f64 - 1.0);
        (mean, cov)
    };
    let ((mu1, s1), (mu2, s2)) = (stats(a), stats(b));
    let sqrt_psd = |m: DMatrix<f64>| {
        let e = SymmetricEigen::new(m);
        let root = e.eigenvalues.map(|v| v.max(0.0).sqrt());
        &e.eigenvectors * DMatrix::from_diagonal(&root) * e.eigenvectors.transpose()
    };
    let r1 = sqrt_psd(s1.clone());
    let inner = &r1 * &s2 * &r1;
    let inner = (&inner + inner.transpose()) * 0.5;
    let trace_sqrt: f64 = SymmetricEigen::new(inner)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum();
    (mu1 - mu2).norm_squared() + s1.trace() + s2.trace() - 2.0 * trace_sqrt
}

/// The real set samples are compared with: its features and its manifold.
pub struct Reference {
    /// Features `[n, d]`.
    pub features: Vec<f64>,
    /// Its k-NN manifold.
    pub manifold: Manifold,
}

impl Reference {
    /// The reference set of `features` `[n, d]`.
    pub fn new(features: Vec<f64>, d: usize) -> anyhow::Result<Reference> {
        let manifold = Manifold::new(&features, d)?;
        Ok(Reference { features, manifold })
    }
}

/// One evaluation result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Score {
    /// Share of samples classified as the requested class.
    pub accuracy: f64,
    /// Fréchet distance to the reference real set.
    pub frechet: f64,
    /// Share of samples inside the real set's manifold (falls with artefacts, ghost strokes).
    pub precision: f64,
    /// Share of real images inside the samples' manifold (falls with dropped modes).
    pub recall: f64,
}

/// Generates `per_class` samples of every class with `steps` evaluations (seed = class) and
/// scores them against the reference set.
pub fn score(
    backend: &mut dyn Backend,
    model: &Model,
    classifier: &Classifier,
    reference: &Reference,
    per_class: usize,
    steps: usize,
) -> anyhow::Result<Score> {
    let classes = model.card.classes();
    ensure!(classes > 0, "eval needs a class-conditional model");
    let mut samples = Vec::new();
    for class in 0..classes {
        let x = generate(
            backend,
            &model.card,
            Some(class),
            per_class,
            1000 + class as u64,
            steps,
        )?;
        // Score what a user sees: the 8-bit image, mapped back to model values.
        samples.extend(
            x.iter()
                .map(|&v| mf_core::schedule::to_pixel(v) as f32 / 127.5 - 1.0),
        );
    }
    let labels: Vec<usize> = (0..classes * per_class).map(|i| i / per_class).collect();
    score_samples(classifier, &samples, &labels, reference)
}

/// Scores given samples (model values, `[n, dims]`) labelled with the class each was asked
/// for, against the reference set: how a generator outside this toolkit is measured.
pub fn score_samples(
    classifier: &Classifier,
    samples: &[f32],
    labels: &[usize],
    reference: &Reference,
) -> anyhow::Result<Score> {
    let (features, predicted) = classifier.classify(samples)?;
    ensure!(
        predicted.len() == labels.len(),
        "{} samples but {} labels",
        predicted.len(),
        labels.len()
    );
    score_features(
        &features,
        &predicted,
        labels,
        reference,
        classifier.features,
    )
}

/// Scores classified features against the reference set.
pub fn score_features(
    features: &[f64],
    predicted: &[usize],
    labels: &[usize],
    reference: &Reference,
    d: usize,
) -> anyhow::Result<Score> {
    let correct = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(Score {
        accuracy: correct as f64 / predicted.len() as f64,
        frechet: frechet_distance(features, &reference.features, d),
        precision: reference.manifold.coverage(features),
        recall: Manifold::new(features, d)?.coverage(&reference.features),
    })
}

/// Reads samples written elsewhere (e.g. by the PyTorch peer, converted with
/// `tools/npz-to-idx`): a folder with `images-idx3-ubyte` (uint8 pixels) and
/// `labels-idx1-ubyte` (the class each image was generated for), in model values.
pub fn read_samples(dir: &Path) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    let (images, labels) = read_idx(
        dir,
        ["images-idx3-ubyte", "labels-idx1-ubyte"],
        "samples file",
        "--samples takes a folder with images-idx3-ubyte and labels-idx1-ubyte",
    )?;
    ensure!(
        images.count == labels.len(),
        "{}: {} images but {} labels",
        dir.display(),
        images.count,
        labels.len()
    );
    let samples = images
        .pixels
        .iter()
        .map(|&p| p as f32 / 127.5 - 1.0)
        .collect();
    Ok((samples, labels.iter().map(|&l| l as usize).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frechet_distance_of_shifted_gaussians_is_the_squared_shift() {
        let mut noise = mf_core::noise::Noise::new(1);
        let a: Vec<f64> = (0..4000 * 3).map(|_| noise.gaussian() as f64).collect();
        let b: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i % 3 == 0 { 2.0 } else { 0.0 })
            .collect();
        assert!(frechet_distance(&a, &a, 3).abs() < 1e-9);
        assert!((frechet_distance(&a, &b, 3) - 4.0).abs() < 1e-6);
    }
}
