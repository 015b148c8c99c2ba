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

/// The reference classifier in fp32: an MLP on the native engine, a CNN on tract (the native
/// engine does not run convolutions yet).
pub struct Classifier {
    runner: Runner,
    arch: String,
    shape: Vec<usize>,
    classes: usize,
    features: usize,
}

/// What runs the classifier graph.
enum Runner {
    Native(Box<NativeEngine>),
    #[cfg(feature = "tract")]
    Tract(tract::Plans),
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
        let runner = if graph.node.iter().any(|n| n.op_type == "Conv") {
            convolutional(bytes, path)?
        } else {
            Runner::Native(Box::new(NativeEngine::from_graph(graph, Isa::select()?)?))
        };
        Ok(Classifier {
            runner,
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
            let shape: Vec<usize> = std::iter::once(n)
                .chain(self.shape.iter().copied())
                .collect();
            let scores = match &self.runner {
                Runner::Native(engine) => {
                    let out = engine.run(vec![("image", Value::F32(chunk.to_vec(), shape))])?;
                    out.f32("classifier scores")?.0.to_vec()
                }
                #[cfg(feature = "tract")]
                Runner::Tract(plans) => plans.run(chunk, &shape)?,
            };
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

/// The runner of a convolutional classifier: tract where it is built in.
#[cfg(feature = "tract")]
fn convolutional(bytes: Vec<u8>, _path: &Path) -> anyhow::Result<Runner> {
    Ok(Runner::Tract(tract::Plans::new(bytes)))
}

/// Without tract nothing here runs convolutions: say so.
#[cfg(not(feature = "tract"))]
fn convolutional(_bytes: Vec<u8>, path: &Path) -> anyhow::Result<Runner> {
    anyhow::bail!(
        "{} is a convolutional classifier: it runs on tract, which this build leaves out (build \
         mf-edge with the `tract` feature, or pass an MLP classifier with --classifier)",
        path.display()
    )
}

#[cfg(feature = "tract")]
mod tract {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::io::Cursor;

    use anyhow::Context;
    use tract_onnx::prelude::*;

    /// The classifier graph optimized by tract once per batch size it meets.
    pub(super) struct Plans {
        bytes: Vec<u8>,
        plans: RefCell<HashMap<Vec<usize>, std::sync::Arc<TypedRunnableModel>>>,
    }

    impl Plans {
        pub(super) fn new(bytes: Vec<u8>) -> Plans {
            Plans {
                bytes,
                plans: RefCell::new(HashMap::new()),
            }
        }

        /// Scores `[N, features + classes]` of `images` of `shape` `[N, C, H, W]`.
        pub(super) fn run(&self, images: &[f32], shape: &[usize]) -> anyhow::Result<Vec<f32>> {
            let mut plans = self.plans.borrow_mut();
            if !plans.contains_key(shape) {
                let plan = tract_onnx::onnx()
                    .model_for_read(&mut Cursor::new(&self.bytes))
                    .context("tract cannot read the classifier")?
                    .with_input_fact(0, f32::fact(shape).into())?
                    .into_optimized()
                    .context("tract cannot optimize the classifier")?
                    .into_runnable()?;
                plans.insert(shape.to_vec(), plan);
            }
            let input = tract_ndarray::ArrayD::from_shape_vec(shape, images.to_vec())?;
            let out = plans[shape].run(tvec!(input.into_tensor().into()))?;
            Ok(out[0]
                .to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect())
        }
    }
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
    let read = |name: &str| {
        let path = root.join(name);
        mf_core::bounded::read(&path, MAX_IDX_BYTES, "dataset file").with_context(|| {
            format!(
                "missing or unreadable {}: run tools/fetch-data",
                path.display()
            )
        })
    };
    let images =
        mf_core::idx::read_images(&read("train-images-idx3-ubyte")?).map_err(anyhow::Error::msg)?;
    let labels =
        mf_core::idx::read_labels(&read("train-labels-idx1-ubyte")?).map_err(anyhow::Error::msg)?;
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

/// Neighbours that set each point's manifold radius (Kynkäänniemi et al. 2019 use 3).
pub const NEIGHBOURS: usize = 3;

/// Rows per block of the pairwise distances (a block of 512 × 10,000 distances is 41 MB).
const BLOCK: usize = 512;

/// A feature set and the squared distance of each point to its k-th nearest neighbour: the
/// union of those balls estimates the set's manifold.
pub struct Manifold {
    points: DMatrix<f64>,
    norms: Vec<f64>,
    radii: Vec<f64>,
}

impl Manifold {
    /// The manifold of `features` `[n, d]` (n > [`NEIGHBOURS`]).
    pub fn new(features: &[f64], d: usize) -> anyhow::Result<Manifold> {
        let n = features.len() / d;
        ensure!(
            n > NEIGHBOURS,
            "precision/recall need more than {NEIGHBOURS} samples, got {n}"
        );
        let points = DMatrix::from_row_slice(n, d, features);
        let norms: Vec<f64> = points.row_iter().map(|r| r.norm_squared()).collect();
        let mut manifold = Manifold {
            points,
            norms,
            radii: Vec::with_capacity(n),
        };
        let mut radii = Vec::with_capacity(n);
        manifold.each_block(&manifold.points, |distances| {
            for row in distances.row_iter() {
                let mut row: Vec<f64> = row.iter().copied().collect();
                // The point itself is its nearest neighbour, at distance zero.
                let (_, kth, _) = row.select_nth_unstable_by(NEIGHBOURS, f64::total_cmp);
                radii.push(*kth);
            }
        });
        manifold.radii = radii;
        Ok(manifold)
    }

    /// The share of `features` `[m, d]` inside the manifold (within some point's radius).
    pub fn coverage(&self, features: &[f64]) -> f64 {
        let d = self.points.ncols();
        let m = features.len() / d;
        let queries = DMatrix::from_row_slice(m, d, features);
        let mut inside = 0usize;
        self.each_block(&queries, |distances| {
            inside += distances
                .row_iter()
                .filter(|row| row.iter().zip(&self.radii).any(|(x, r)| x <= r))
                .count();
        });
        inside as f64 / m as f64
    }

    /// Calls `f(squared distances [rows, n])` for blocks of `queries`' rows against
    /// every point.
    fn each_block(&self, queries: &DMatrix<f64>, mut f: impl FnMut(DMatrix<f64>)) {
        for start in (0..queries.nrows()).step_by(BLOCK) {
            let rows = BLOCK.min(queries.nrows() - start);
            let block = queries.rows(start, rows);
            let mut distances = block * self.points.transpose();
            for (i, q) in block.row_iter().enumerate() {
                let qn = q.norm_squared();
                for (j, &pn) in self.norms.iter().enumerate() {
                    distances[(i, j)] = (qn + pn - 2.0 * distances[(i, j)]).max(0.0);
                }
            }
            f(distances);
        }
    }
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
    let read = |name: &str| {
        let path = dir.join(name);
        mf_core::bounded::read(&path, MAX_IDX_BYTES, "samples file").with_context(|| {
            format!(
                "cannot read {}: --samples takes a folder with images-idx3-ubyte and labels-idx1-ubyte",
                path.display()
            )
        })
    };
    let images =
        mf_core::idx::read_images(&read("images-idx3-ubyte")?).map_err(anyhow::Error::msg)?;
    let labels =
        mf_core::idx::read_labels(&read("labels-idx1-ubyte")?).map_err(anyhow::Error::msg)?;
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

    /// `n` points of a 2-D Gaussian (σ = 1) around `(x, y)`.
    fn cluster(noise: &mut mf_core::noise::Noise, n: usize, x: f64, y: f64) -> Vec<f64> {
        (0..n)
            .flat_map(|_| [x + noise.gaussian() as f64, y + noise.gaussian() as f64])
            .collect()
    }

    #[test]
    fn precision_and_recall_tell_dropped_modes_from_samples_off_the_manifold() {
        let mut noise = mf_core::noise::Noise::new(7);
        let mut real = cluster(&mut noise, 500, -6.0, 0.0);
        real.extend(cluster(&mut noise, 500, 6.0, 0.0));
        let reference = Reference::new(real.clone(), 2).unwrap();
        let score = |samples: &[f64]| {
            let manifold = Manifold::new(samples, 2).unwrap();
            (
                reference.manifold.coverage(samples),
                manifold.coverage(&reference.features),
            )
        };
        // The real set against itself: every point inside its own ball.
        assert_eq!(score(&real), (1.0, 1.0));
        // Fresh samples of both modes: most inside, both ways.
        let mut fresh = cluster(&mut noise, 500, -6.0, 0.0);
        fresh.extend(cluster(&mut noise, 500, 6.0, 0.0));
        let (p, r) = score(&fresh);
        assert!(
            p > 0.85 && r > 0.85,
            "fresh samples: precision {p}, recall {r}"
        );
        // One mode dropped: precise, but half the real set is not covered.
        let (p, r) = score(&cluster(&mut noise, 1000, -6.0, 0.0));
        assert!(
            p > 0.85 && (0.4..0.55).contains(&r),
            "one mode: precision {p}, recall {r}"
        );
        // Samples between the modes (a blur of the two): off the manifold.
        let (p, r) = score(&cluster(&mut noise, 1000, 0.0, 0.0));
        assert!(
            p < 0.1 && r < 0.2,
            "between modes: precision {p}, recall {r}"
        );
    }
}
