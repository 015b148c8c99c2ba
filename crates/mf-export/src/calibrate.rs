//! Activation calibration: real training data through the network at the (t, r) points the
//! samplers use, recording the input of every layer.
use anyhow::{bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use mf_kernels::QuantParams;
use mf_train::burn::prelude::*;
use mf_train::datasets::Dataset;
use mf_train::model::VelocityNet;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

/// How a layer input's range is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// The observed minimum and maximum.
    MinMax,
    /// The `p`-th and `(100 − p)`-th percentiles (robust to rare outliers).
    Percentile(f64),
}

impl Rule {
    /// Parses `minmax` or `percentile:<p>` with 50 < p ≤ 100.
    pub fn parse(text: &str) -> anyhow::Result<Rule> {
        match text.split_once(':') {
            None if text == "minmax" => Ok(Rule::MinMax),
            Some(("percentile", p)) => {
                let p: f64 = p
                    .parse()
                    .map_err(|_| anyhow::anyhow!("percentile {p:?} is not a number"))?;
                ensure!(
                    p > 50.0 && p <= 100.0,
                    "percentile must be in (50, 100], got {p}"
                );
                Ok(Rule::Percentile(p))
            }
            _ => bail!(
                "unknown calibration {text:?}: expected minmax or percentile:<p>, e.g. percentile:99.99"
            ),
        }
    }

    /// The name the card records.
    pub fn name(&self) -> String {
        match self {
            Rule::MinMax => "minmax".into(),
            Rule::Percentile(p) => format!("percentile:{p}"),
        }
    }
}

/// The (t, r) points of the one- and two-step samplers.
pub const POINTS: [(f32, f32); 3] = [(1.0, 0.0), (1.0, 0.5), (0.5, 0.0)];

/// Recorded inputs of every layer: `[rows, k]` per layer, rows = samples × points.
pub struct Recording {
    /// One matrix per layer, row-major.
    pub inputs: Vec<Vec<f32>>,
    /// Rows recorded.
    pub rows: usize,
}

/// Runs `samples` training samples (labels kept, 10% dropped to the null class, as in
/// training) through `net` at each sampler point, with z_t = (1 − t)·x + t·ε.
pub fn record(
    net: &VelocityNet,
    data: &Dataset,
    samples: usize,
    seed: u64,
) -> anyhow::Result<Recording> {
    ensure!(samples > 0, "--calib-samples must be positive");
    let device = net.device();
    let mut rng = mf_train::rng::Rng::seed_from_u64(seed);
    let batch = data.batch(&mut rng, samples);
    let dims = net.spec.dims();
    let labels: Vec<i64> = batch
        .labels
        .iter()
        .map(|&l| {
            if net.spec.classes == 0 || rng.random::<f64>() < 0.1 {
                net.spec.null_class() as i64
            } else {
                l
            }
        })
        .collect();
    let bar = ProgressBar::new(POINTS.len() as u64).with_style(
        ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} sampler points")
            .expect("a valid template"),
    );
    let mut inputs: Vec<Vec<f32>> = Vec::new();
    for &(t, r) in &POINTS {
        let z: Vec<f32> = batch
            .x
            .iter()
            .map(|&x| (1.0 - t) * x + t * rng.sample::<f32, _>(StandardNormal))
            .collect();
        let z = Tensor::<2>::from_data(TensorData::new(z, [samples, dims]), &device);
        let tt = Tensor::<1>::full([samples], t, &device);
        let rr = Tensor::<1>::full([samples], r, &device);
        let class =
            Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [samples]), &device);
        let layers = net.layer_inputs(z, tt, rr, class);
        inputs.resize(layers.len(), Vec::new());
        for (store, x) in inputs.iter_mut().zip(layers) {
            store.extend(
                x.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32 activations"),
            );
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Recording {
        inputs,
        rows: samples * POINTS.len(),
    })
}

/// The uint8 quantization of one layer input under `rule` (zero always exactly representable).
pub fn params(values: &[f32], rule: Rule) -> QuantParams {
    let (lo, hi) = match rule {
        Rule::MinMax => values
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v))),
        Rule::Percentile(p) => {
            let mut sorted = values.to_vec();
            sorted.sort_by(f32::total_cmp);
            let at = |q: f64| sorted[((q / 100.0) * (sorted.len() - 1) as f64).round() as usize];
            (at(100.0 - p), at(p))
        }
    };
    QuantParams::from_range(lo, hi)
}
