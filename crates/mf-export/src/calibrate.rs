//! Activation calibration: real training data through the network at the (t, r) points the
//! samplers use, recording the input of every layer.
use std::collections::HashMap;

use anyhow::{bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use mf_core::batch::Batch;
use mf_kernels::QuantParams;
use mf_train::datasets::Dataset;

use crate::Network;
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

/// What every layer read, over all calibration samples and sampler points.
pub struct Recording {
    /// Per layer (by name): the values read (all, or an evenly strided subsample of at most
    /// `KEPT_VALUES`).
    pub values: HashMap<String, Vec<f32>>,
    /// Per layer: the smallest and largest value read.
    pub range: HashMap<String, (f32, f32)>,
}

/// Samples per traced forward (bounds the memory of a convolutional network's taps).
const CHUNK: usize = 64;

/// The most values kept per layer over the whole calibration: beyond it every other value is
/// dropped (evenly, deterministically), so memory stays bounded whatever the samples and the
/// network (a DiT-B layer reads millions of values per chunk); the percentile rule still sees
/// more than 10^6 values, 100 of them beyond the 99.99th percentile.
const KEPT_VALUES: usize = 1 << 21;

/// Runs `samples` training samples (labels kept, 10% dropped to the null class, as in
/// training) through `net` at each sampler point, with z_t = (1 − t)·x + t·ε, tapping the
/// input of every layer of the traced graph.
pub fn record(
    net: &dyn Network,
    data: &Dataset,
    samples: usize,
    seed: u64,
) -> anyhow::Result<Recording> {
    ensure!(samples > 0, "--calib-samples must be positive");
    let spec = net.spec();
    let mut rng = mf_train::rng::Rng::seed_from_u64(seed);
    let batch = data.batch(&mut rng, samples);
    let dims = spec.dims();
    let labels: Vec<i64> = batch
        .labels
        .iter()
        .map(|&l| {
            if spec.classes == 0 || rng.random::<f64>() < 0.1 {
                spec.null_class() as i64
            } else {
                l
            }
        })
        .collect();
    let chunks = samples.div_ceil(CHUNK);
    let bar = ProgressBar::new((POINTS.len() * chunks) as u64).with_style(
        ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} batches")
            .expect("a valid template"),
    );
    let mut recording = Recording {
        values: HashMap::new(),
        range: HashMap::new(),
    };
    for &(t, r) in &POINTS {
        let z: Vec<f32> = batch
            .x
            .iter()
            .map(|&x| (1.0 - t) * x + t * rng.sample::<f32, _>(StandardNormal))
            .collect();
        for start in (0..samples).step_by(CHUNK) {
            let n = CHUNK.min(samples - start);
            let chunk = Batch {
                sample_shape: spec.sample_shape.clone(),
                z: z[start * dims..(start + n) * dims].to_vec(),
                t: vec![t; n],
                r: vec![r; n],
                class: labels[start..start + n].to_vec(),
            };
            let (traced, _) = net.trace_batch(&chunk, true)?;
            for tap in traced.taps {
                let range = recording
                    .range
                    .entry(tap.layer.clone())
                    .or_insert((f32::INFINITY, f32::NEG_INFINITY));
                *range = (range.0.min(tap.min), range.1.max(tap.max));
                let values = recording.values.entry(tap.layer).or_default();
                values.extend(tap.values);
                while values.len() > KEPT_VALUES {
                    *values = values.iter().step_by(2).copied().collect();
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(recording)
}

impl Recording {
    /// The uint8 quantization of `layer`'s input under `rule` (none if it was not tapped).
    pub fn params(&self, layer: &str, rule: Rule) -> Option<QuantParams> {
        let (lo, hi) = *self.range.get(layer)?;
        Some(match rule {
            Rule::MinMax => QuantParams::from_range(lo, hi),
            Rule::Percentile(_) => params(self.values.get(layer)?, rule),
        })
    }
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
