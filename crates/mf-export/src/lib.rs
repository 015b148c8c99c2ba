//! # mf-export
//!
//! Turns an `mf-train` run into the ONNX file every device runs, in fp32, fp16 or int8 QDQ,
//! with the model card in `metadata_props`. Burn cannot write ONNX, so [`graph`] writes it with
//! the protobuf types of `tract_onnx::pb`; [`check`] runs the result in tract against
//! mf-train's own forward before anything is written.
pub mod calibrate;
pub mod check;
pub mod classifier;
pub mod compact;
pub mod graph;
pub mod onnx;
pub mod unet;
pub mod weights;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use mf_core::card::{CARD_KEY, CARD_VERSION, Guidance, ModelCard, Quantization, Training};
use mf_core::noise::Noise;
use mf_core::schedule::Sampler;
use mf_train::burn::prelude::*;
use mf_train::checkpoint::{self, RunState};
use mf_train::config::ObjectiveKind;
use mf_train::datasets::Dataset;
use mf_train::model::{Prediction, VelocityNet};

use crate::calibrate::Rule;
use crate::check::{layer_error, one_step, psnr, relative_error, run_tract};
use crate::graph::{LayerMode, Precision, build};
use crate::unet::UnetWeights;
use crate::weights::MlpWeights;
use mf_core::batch::Batch;

/// The precision to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// float32 everywhere.
    Fp32,
    /// float16 weights and layer arithmetic.
    Fp16,
    /// int8 QDQ.
    Int8,
    /// The compact all-int8 format the firmware includes (not ONNX).
    Compact,
}

/// Which layers an int8 export keeps in float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloatLayers {
    /// All int8 when its one-step PSNR against fp32 reaches 30 dB, else first and last float.
    Auto,
    /// Every layer in int8.
    None,
    /// The first and last layers in float.
    FirstLast,
}

/// What to export and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The `mf-train` run folder.
    pub run: PathBuf,
    /// Precision of the graph.
    pub target: Target,
    /// Export the raw weights instead of the EMA.
    pub raw_weights: bool,
    /// Calibration samples (int8).
    pub calib_samples: usize,
    /// Calibration rule (int8).
    pub calibration: Rule,
    /// Float layers (int8).
    pub float_layers: FloatLayers,
    /// The ONNX file to write.
    pub out: PathBuf,
}

/// What an export measured.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The card written into the model (none for a classifier).
    pub card: Option<ModelCard>,
    /// Relative error of the graph (in tract) against mf-train's forward.
    pub max_relative_error: f64,
    /// Human-readable lines: checks and per-layer quantization errors.
    pub lines: Vec<String>,
    /// Bytes written.
    pub bytes: usize,
}

/// The accepted error of each precision against mf-train's fp32 forward.
fn tolerance(target: Target) -> Option<f64> {
    match target {
        Target::Fp32 => Some(1e-5),
        Target::Fp16 => Some(1e-2),
        Target::Int8 | Target::Compact => None,
    }
}

/// Exports a run; nothing is written unless every check passes. A classifier run (from
/// `mf-train classifier`) is written as the fp32 classifier graph `mf-edge eval` uses.
pub fn export(opts: &ExportOptions) -> anyhow::Result<ExportReport> {
    if opts.run.join("classifier.json").exists() {
        ensure!(
            opts.target == Target::Fp32,
            "a classifier is exported in fp32 only"
        );
        let bytes = classifier::export(&opts.run)?;
        write_atomically(&opts.out, &bytes)?;
        let lines = vec!["reference classifier graph (fp32)".to_string()];
        return Ok(ExportReport {
            card: None,
            max_relative_error: f64::NAN,
            lines,
            bytes: bytes.len(),
        });
    }
    let state = checkpoint::read_state(&opts.run)?;
    if !["mlp", "unet"].contains(&state.spec.arch.as_str()) {
        bail!(
            "unknown architecture {:?}: mf-export writes mlp and unet networks",
            state.spec.arch
        );
    }
    let device = Device::flex();
    let file = if opts.raw_weights {
        "model.safetensors"
    } else {
        "ema.safetensors"
    };
    let net = checkpoint::load_safetensors(
        &state.spec,
        &checkpoint::folder(&opts.run)?.join(file),
        &device,
    )
    .with_context(|| format!("cannot load the run in {}", opts.run.display()))?;
    let check = check_batch(&net);
    let reference = net_u(&net, &check, &device);
    let mut lines = Vec::new();
    let Some(weights) = MlpWeights::from_net(&net) else {
        return export_unet(&net, &state, opts, &check, &reference);
    };

    let (precision, quantization) = match opts.target {
        Target::Fp32 => (Precision::Fp32, None),
        Target::Fp16 => (Precision::Fp16, None),
        Target::Int8 => {
            let (modes, q) = int8_plan(&net, &weights, &state, opts, &mut lines)?;
            (Precision::Int8(modes), Some(q))
        }
        Target::Compact => {
            let all_int8 = ExportOptions {
                float_layers: FloatLayers::None,
                ..opts.clone()
            };
            let (modes, q) = int8_plan(&net, &weights, &state, &all_int8, &mut lines)?;
            let inputs: Vec<_> = modes
                .iter()
                .map(|m| match m {
                    LayerMode::Int8(p) => *p,
                    LayerMode::Float => unreachable!("every layer is int8 in the compact format"),
                })
                .collect();
            let bytes = compact::encode(&weights, &inputs)?;
            let psnr_db = check_compact(&bytes, &weights)?;
            lines.push(format!(
                "compact model: one-step samples PSNR {psnr_db:.1} dB against fp32 (same noise)"
            ));
            let card = card(
                &net,
                &state,
                "int8 (compact)",
                Some(Quantization {
                    psnr_db: finite(psnr_db),
                    ..q
                }),
            );
            write_atomically(&opts.out, &bytes)?;
            return Ok(ExportReport {
                card: Some(card),
                max_relative_error: f64::NAN,
                lines,
                bytes: bytes.len(),
            });
        }
    };
    let card = card(&net, &state, precision.name(), quantization);
    let bytes = build(&weights, &precision, &[(CARD_KEY, card.to_json())]);
    check_and_write(bytes, card, opts, &check, &reference, lines)
}

/// Exports a U-Net run: fp32, or fp16 weights (see [`unet`]); int8 forms take MLPs only.
fn export_unet(
    net: &VelocityNet,
    state: &RunState,
    opts: &ExportOptions,
    check: &Batch,
    reference: &[f32],
) -> anyhow::Result<ExportReport> {
    let fp16 = match opts.target {
        Target::Fp32 => false,
        Target::Fp16 => true,
        Target::Int8 | Target::Compact => bail!(
            "--precision {}: int8 and compact exports take mlp networks; a unet exports as \
             --precision fp32 or fp16",
            if opts.target == Target::Int8 {
                "int8"
            } else {
                "compact"
            }
        ),
    };
    let weights = UnetWeights::from_net(net).context("the run's network is not a unet")?;
    let card = card(net, state, if fp16 { "fp16" } else { "fp32" }, None);
    let bytes = unet::build(&weights, fp16, &[(CARD_KEY, card.to_json())]);
    check_and_write(bytes, card, opts, check, reference, Vec::new())
}

/// Runs the graph in tract against mf-train's forward, then writes it if within the
/// precision's tolerance.
fn check_and_write(
    bytes: Vec<u8>,
    card: ModelCard,
    opts: &ExportOptions,
    check: &Batch,
    reference: &[f32],
    mut lines: Vec<String>,
) -> anyhow::Result<ExportReport> {
    let got = run_tract(&bytes, check)?;
    let err = relative_error(&got, reference);
    lines.push(format!(
        "{} graph in tract vs mf-train forward: max relative error {err:.2e}",
        card.precision
    ));
    if let Some(tol) = tolerance(opts.target) {
        ensure!(
            err <= tol,
            "exported {} graph differs from mf-train by {err:.2e} (> {tol:e}); nothing written",
            card.precision
        );
    }
    write_atomically(&opts.out, &bytes)?;
    Ok(ExportReport {
        card: Some(card),
        max_relative_error: err,
        lines,
        bytes: bytes.len(),
    })
}

/// Chooses per-layer int8 modes from calibration and measures them.
fn int8_plan(
    net: &VelocityNet,
    weights: &MlpWeights,
    state: &RunState,
    opts: &ExportOptions,
    lines: &mut Vec<String>,
) -> anyhow::Result<(Vec<LayerMode>, Quantization)> {
    let data = Dataset::open(&state.config.data).context("calibration needs the training data")?;
    let recording = calibrate::record(
        net,
        &data,
        opts.calib_samples,
        state.config.train.seed ^ 0xCA11,
    )?;
    let params: Vec<_> = recording
        .inputs
        .iter()
        .map(|x| calibrate::params(x, opts.calibration))
        .collect();
    let rows = recording.rows.min(512);
    for (i, layer) in weights.layers.iter().enumerate() {
        let err = layer_error(layer, params[i], &recording.inputs[i], rows);
        lines.push(format!(
            "{:<22} input scale {:.5} zero point {:>3}  int8 output error (RMS, of its range) {:.2}%",
            weights.layer_name(i),
            params[i].scale,
            params[i].zero_point,
            100.0 * err
        ));
    }
    let all: Vec<LayerMode> = params.iter().map(|&p| LayerMode::Int8(p)).collect();
    let mut first_last = all.clone();
    let last = first_last.len() - 1;
    first_last[0] = LayerMode::Float;
    first_last[last] = LayerMode::Float;

    let noise = noise_batch(net);
    let float_samples = one_step(&build(weights, &Precision::Fp32, &[]), &noise)?;
    let measure = |modes: &[LayerMode]| -> anyhow::Result<f64> {
        Ok(psnr(
            &one_step(
                &build(weights, &Precision::Int8(modes.to_vec()), &[]),
                &noise,
            )?,
            &float_samples,
        ))
    };
    let psnr_all = measure(&all)?;
    lines.push(format!(
        "one-step samples, all layers int8: PSNR {psnr_all:.1} dB against fp32"
    ));
    let (modes, psnr_db, float_layers) = match opts.float_layers {
        FloatLayers::None => (all, psnr_all, vec![]),
        FloatLayers::Auto if psnr_all >= 30.0 => (all, psnr_all, vec![]),
        FloatLayers::Auto | FloatLayers::FirstLast => {
            let p = measure(&first_last)?;
            lines.push(format!(
                "one-step samples, first and last layers float: PSNR {p:.1} dB against fp32"
            ));
            let why = if opts.float_layers == FloatLayers::Auto {
                "all-int8 PSNR below 30 dB"
            } else {
                "requested"
            };
            let names = vec![
                format!("{} ({why})", weights.layer_name(0)),
                format!("{} ({why})", weights.layer_name(last)),
            ];
            (first_last, p, names)
        }
    };
    let q = Quantization {
        scheme: "QDQ: activations uint8 per tensor (asymmetric, round half to even), weights int8 per output \
                 channel (symmetric, zero point 0, codes in [-127, 127]), f32 bias; mf-kernels convention"
            .into(),
        calibration: opts.calibration.name(),
        calibration_samples: opts.calib_samples,
        float_layers,
        psnr_db: finite(psnr_db),
    };
    Ok((modes, q))
}

/// A PSNR for the card: infinite (identical images) becomes `None`.
fn finite(psnr_db: f64) -> Option<f64> {
    psnr_db.is_finite().then_some(psnr_db)
}

/// Parses a compact model back and compares its one-step images (generated the way the
/// firmware generates them) with the fp32 graph's on the same noise: returns the PSNR.
fn check_compact(bytes: &[u8], weights: &MlpWeights) -> anyhow::Result<f64> {
    let model = mf_core::compact::CompactModel::parse(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut scratch = mf_core::compact::Scratch::new(model.max_width());
    let mut ws = scratch.workspace();
    let classes = weights.spec.classes.max(1);
    let dims = model.dims();
    let (mut ours, mut noise) = (vec![0f32; classes * dims], vec![0f32; classes * dims]);
    for c in 0..classes {
        let seed = 1000 + c as u64;
        model
            .generate(c, seed, &mut ws, &mut ours[c * dims..(c + 1) * dims])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Noise::new(seed).fill(&mut noise[c * dims..(c + 1) * dims]);
    }
    let batch = Batch {
        sample_shape: weights.spec.sample_shape.clone(),
        z: noise,
        t: vec![1.0; classes],
        r: vec![0.0; classes],
        class: (0..classes as i64).collect(),
    };
    let reference = one_step(&build(weights, &Precision::Fp32, &[]), &batch)?;
    Ok(psnr(&ours, &reference))
}

/// The model card of a network from a run.
fn card(
    net: &VelocityNet,
    state: &RunState,
    precision: &str,
    quantization: Option<Quantization>,
) -> ModelCard {
    let spec = &net.spec;
    let data = Dataset::open(&state.config.data).ok();
    let class_names = data
        .map(|d| d.class_names())
        .unwrap_or_else(|| (0..spec.classes).map(|c| c.to_string()).collect());
    let o = &state.config.objective;
    ModelCard {
        version: CARD_VERSION,
        architecture: spec.arch.clone(),
        parameters: net.parameters(),
        dataset: state.config.data.dataset.clone(),
        sample_shape: spec.sample_shape.clone(),
        pixel_mapping: if spec.sample_shape.len() == 3 {
            "x = p / 127.5 - 1 for pixels p in 0..=255; outputs clipped to [-1, 1], p = round((x + 1) * 127.5); \
             channels first"
                .into()
        } else {
            "identity (data units)".into()
        },
        class_names,
        null_class: spec.null_class(),
        time_convention: "inputs t and r in [0, 1] with t >= r; z_t = (1 - t) x + t eps (t = 1 noise, t = 0 data); \
                          the network sees t and t - r"
            .into(),
        prediction: match spec.prediction {
            Prediction::U => "u: the graph outputs the average velocity".into(),
            Prediction::X => "x: the network predicts a clean sample x; the graph outputs u = (z - x) / max(t, 0.05)".into(),
        },
        sampler: match spec.objective {
            ObjectiveKind::MeanFlow => Sampler::MeanFlow,
            ObjectiveKind::FlowMatching => Sampler::Euler,
        },
        guidance: Guidance { omega: o.omega, kappa: o.kappa, interval: o.guidance_interval },
        precision: precision.into(),
        io: match precision {
            "fp16" if spec.arch == "unet" => "inputs and outputs float32 (class int64); conv and linear weights stored \
                                              as float16 and cast to float32 in the graph; arithmetic float32"
                .into(),
            "fp16" => "inputs and outputs float32 (class int64); Cast to float16 after the embeddings and back before \
                       the output; layer weights and arithmetic float16, time embedding and x-prediction in float32"
                .into(),
            _ => "inputs and outputs float32 (class int64)".into(),
        },
        quantization,
        training: Training { steps: state.step, config_hash: state.config_hash.clone(), seconds: state.elapsed_s },
    }
}

/// A fixed batch covering the sampler points and every class.
fn check_batch(net: &VelocityNet) -> Batch {
    let spec = &net.spec;
    let n = 24;
    let mut noise = Noise::new(0xC4EC);
    let mut z = vec![0f32; n * spec.dims()];
    noise.fill(&mut z);
    let points = [(1.0, 0.0), (1.0, 0.5), (0.5, 0.0), (0.7, 0.2)];
    Batch {
        sample_shape: spec.sample_shape.clone(),
        z,
        t: (0..n).map(|i| points[i % 4].0).collect(),
        r: (0..n).map(|i| points[i % 4].1).collect(),
        class: (0..n).map(|i| (i % (spec.classes + 1)) as i64).collect(),
    }
}

/// Noise at t = 1, r = 0 for one-step samples of every class.
fn noise_batch(net: &VelocityNet) -> Batch {
    let spec = &net.spec;
    let per_class = 16;
    let classes = spec.classes.max(1);
    let n = per_class * classes;
    let mut z = vec![0f32; n * spec.dims()];
    Noise::new(0x5A3D).fill(&mut z);
    let class = if spec.classes == 0 {
        vec![spec.null_class() as i64; n]
    } else {
        (0..n).map(|i| (i / per_class) as i64).collect()
    };
    Batch {
        sample_shape: spec.sample_shape.clone(),
        z,
        t: vec![1.0; n],
        r: vec![0.0; n],
        class,
    }
}

/// mf-train's forward on a batch.
fn net_u(net: &VelocityNet, b: &Batch, device: &Device) -> Vec<f32> {
    let n = b.t.len();
    let z = Tensor::<2>::from_data(TensorData::new(b.z.clone(), [n, net.spec.dims()]), device);
    let t = Tensor::<1>::from_data(TensorData::new(b.t.clone(), [n]), device);
    let r = Tensor::<1>::from_data(TensorData::new(b.r.clone(), [n]), device);
    let class = Tensor::<1, Int>::from_data(TensorData::new(b.class.clone(), [n]), device);
    net.u(z, t, r, class)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 output")
}

/// Creates the output's folder if needed, then writes the file atomically
/// ([`mf_core::atomic::write`]: temp file, fsync, rename; nothing left behind on failure).
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = mf_core::atomic::folder(path);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    mf_core::atomic::write(path, bytes)
}
