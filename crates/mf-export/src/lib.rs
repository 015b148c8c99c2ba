//! # mf-export
//!
//! Turns an `mf-train` run into the ONNX file every device runs, in fp32, fp16 or int8 QDQ,
//! with the model card in `metadata_props`. There is no graph writer per architecture: the
//! float32 graph is traced from the network's own forward (`mf_train::model::trace`), and
//! [`passes`] derive fp16 and int8 from it without knowing the architecture. Each export is
//! checked in tract against mf-train's forward before anything is written: fp32 within 1e-5
//! (relative), fp16 within 1e-2, int8 one-step samples above a PSNR floor.
pub mod calibrate;
pub mod check;
pub mod classifier;
pub mod compact;
pub mod passes;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use mf_core::batch::Batch;
use mf_core::card::{CARD_KEY, CARD_VERSION, Guidance, ModelCard, Quantization, Teacher, Training};
use mf_core::noise::Noise;
use mf_core::onnx;
use mf_core::schedule::Sampler;
use mf_kernels::QuantParams;
/// The span of an int8 export's weight codes (`--weight-bits`).
pub use mf_kernels::quant::WeightBits;
use mf_train::burn::prelude::*;
use mf_train::checkpoint::{self, RunState};
use mf_train::config::ObjectiveKind;
use mf_train::datasets::Dataset;
use mf_train::model::{NetSpec, Prediction, Traced, VelocityNet};
use prost::Message;

use crate::calibrate::Rule;
use crate::check::{one_step, psnr, relative_error, run_tract};

/// The precision to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// float32 everywhere.
    Fp32,
    /// float16 weights.
    Fp16,
    /// int8 QDQ.
    Int8,
    /// The compact all-int8 format the firmware includes (not ONNX).
    Compact,
}

/// Which layers an int8 export keeps in float.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FloatLayers {
    /// Every layer int8 when its one-step PSNR reaches 30 dB; else the layers that cost most
    /// alone, one by one, until it does (at most half of them).
    Auto,
    /// Every layer in int8.
    None,
    /// The first and last layers in float.
    FirstLast,
    /// These layers (by name, as the export lists them) in float.
    Named(Vec<String>),
}

impl FloatLayers {
    /// Parses `auto`, `none`, `first-last` or a comma-separated list of layer names.
    pub fn parse(text: &str) -> anyhow::Result<FloatLayers> {
        Ok(match text {
            "auto" => FloatLayers::Auto,
            "none" => FloatLayers::None,
            "first-last" => FloatLayers::FirstLast,
            "" => bail!("--float-layers: expected auto, none, first-last or layer names"),
            names => FloatLayers::Named(names.split(',').map(|n| n.trim().to_string()).collect()),
        })
    }
}

/// The default floor on an int8 export's one-step PSNR against fp32, in dB.
pub const MIN_PSNR_DB: f64 = 25.0;

/// The PSNR above which `--float-layers auto` keeps every layer in int8, in dB.
const AUTO_PSNR_DB: f64 = 30.0;

/// One-step samples behind the int8 PSNR (each layer alone is measured on an eighth of them).
const PSNR_SAMPLES: usize = 160;

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
    /// The floor on int8 one-step PSNR against fp32 (dB).
    pub min_psnr_db: f64,
    /// The span of int8 weight codes (int8).
    pub weight_bits: WeightBits,
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

/// A network the exporter can trace: its description and a traced forward on a batch.
pub trait Network {
    /// The network's description (sample shape, classes, prediction, objective).
    fn spec(&self) -> &NetSpec;
    /// The traced float32 graph on `batch` (taps on with `record`) and u on the batch.
    fn trace_batch(&self, batch: &Batch, record: bool) -> anyhow::Result<(Traced, Vec<f32>)>;
}

impl Network for VelocityNet {
    fn spec(&self) -> &NetSpec {
        &self.spec
    }

    fn trace_batch(&self, b: &Batch, record: bool) -> anyhow::Result<(Traced, Vec<f32>)> {
        let device = self.device();
        let n = b.len();
        let z =
            Tensor::<2>::from_data(TensorData::new(b.z.clone(), [n, self.spec.dims()]), &device);
        let t = Tensor::<1>::from_data(TensorData::new(b.t.clone(), [n]), &device);
        let r = Tensor::<1>::from_data(TensorData::new(b.r.clone(), [n]), &device);
        let class = Tensor::<1, Int>::from_data(TensorData::new(b.class.clone(), [n]), &device);
        let (traced, u) = self.trace(z, t, r, class, record)?;
        Ok((traced, floats(u)))
    }
}

/// The settings of an int8 lowering.
#[derive(Debug, Clone)]
pub struct Int8Settings<'a> {
    /// Real training data for calibration.
    pub data: &'a Dataset,
    /// Calibration samples.
    pub samples: usize,
    /// Calibration rule.
    pub rule: Rule,
    /// Seed of the calibration draw.
    pub seed: u64,
    /// Layers kept in float.
    pub float_layers: FloatLayers,
    /// The PSNR floor (dB).
    pub min_psnr_db: f64,
    /// The span of the weight codes.
    pub weight_bits: WeightBits,
}

/// A graph lowered to a precision and checked.
pub struct Lowered {
    /// The graph (no metadata yet).
    pub model: onnx::ModelProto,
    /// Max relative error against the network's forward on the check batch (tract).
    pub max_relative_error: f64,
    /// int8 only: the quantization the card records.
    pub quantization: Option<Quantization>,
    /// fp16 only: the layers whose weights stayed float32 (float16 cannot hold them), and why.
    pub fp32_weights: Vec<String>,
    /// What was measured, for the report.
    pub lines: Vec<String>,
}

/// Traces `net` and lowers its graph to `target` (not `Compact`), checking it against the
/// network's forward; fails, naming the figure and the layer that costs most, when the graph
/// misses its precision's floor.
pub fn lower(
    net: &dyn Network,
    target: Target,
    int8: Option<&Int8Settings>,
) -> anyhow::Result<Lowered> {
    let check = check_batch(net.spec());
    let (traced, reference) = net.trace_batch(&check, false)?;
    let float = traced.model;
    let mut lines = Vec::new();
    let mut fp32_weights = Vec::new();
    let (model, quantization) = match target {
        Target::Fp32 => (float.clone(), None),
        Target::Fp16 => {
            let mut m = float.clone();
            fp32_weights = passes::fp16(&mut m, None);
            for layer in &fp32_weights {
                lines.push(format!("weights kept float32: {layer}"));
            }
            (m, None)
        }
        Target::Int8 | Target::Compact => {
            let settings = int8.context("an int8 export needs calibration settings")?;
            let (m, q) = int8_plan(net, &float, settings, &mut lines)?;
            (m, Some(q))
        }
    };
    let got = run_tract(&model.encode_to_vec(), &check)?;
    let err = relative_error(&got, &reference);
    let name = match target {
        Target::Fp32 => "fp32",
        Target::Fp16 => "fp16",
        Target::Int8 | Target::Compact => "int8",
    };
    lines.push(format!(
        "{name} graph in tract vs mf-train forward: max relative error {err:.2e}"
    ));
    let tolerance = match target {
        Target::Fp32 => Some(1e-5),
        Target::Fp16 => Some(1e-2),
        Target::Int8 | Target::Compact => None,
    };
    if let Some(tol) = tolerance
        && (err > tol || err.is_nan())
    {
        let worst = if target == Target::Fp16 {
            worst_fp16_layer(&float, &check, &reference)?
        } else {
            "(no precision pass: the traced graph itself)".to_string()
        };
        bail!(
            "exported {name} graph differs from mf-train by {err:.2e} (> {tol:e}); the layer with the largest error: {worst}; nothing written"
        );
    }
    Ok(Lowered {
        model,
        max_relative_error: err,
        quantization,
        fp32_weights,
        lines,
    })
}

/// The fp16 layer whose float16 weights alone cost most, with that error.
fn worst_fp16_layer(
    float: &onnx::ModelProto,
    check: &Batch,
    reference: &[f32],
) -> anyhow::Result<String> {
    let mut worst = (String::from("none"), 0.0);
    for layer in passes::layers(float) {
        let mut m = float.clone();
        passes::fp16(&mut m, Some(&HashSet::from([layer.name.clone()])));
        let err = relative_error(&run_tract(&m.encode_to_vec(), check)?, reference);
        if err > worst.1 {
            worst = (layer.name, err);
        }
    }
    Ok(format!(
        "{} ({:.2e} with only its weights in float16)",
        worst.0, worst.1
    ))
}

/// Calibrates, chooses the float layers, quantizes the rest and holds the PSNR floor.
fn int8_plan(
    net: &dyn Network,
    float: &onnx::ModelProto,
    s: &Int8Settings,
    lines: &mut Vec<String>,
) -> anyhow::Result<(onnx::ModelProto, Quantization)> {
    let layers = passes::layers(float);
    ensure!(
        !layers.is_empty(),
        "the network has no MatMul or Conv layer to quantize"
    );
    let recording = calibrate::record(net, s.data, s.samples, s.seed)?;
    let mut params: Vec<(String, QuantParams)> = Vec::new();
    let mut outputs: HashMap<String, QuantParams> = HashMap::new();
    for l in &layers {
        let p = recording
            .params(&l.name, s.rule)
            .with_context(|| format!("layer {} was not seen by calibration", l.name))?;
        params.push((l.name.clone(), p));
        let out = format!("{}.output", l.name);
        if let Some(p) = recording.params(&out, s.rule) {
            outputs.insert(out, p);
        }
    }
    let quantized = |float_set: &HashSet<String>| -> anyhow::Result<onnx::ModelProto> {
        let mut chosen: HashMap<String, QuantParams> = params
            .iter()
            .filter(|(n, _)| !float_set.contains(n))
            .cloned()
            .collect();
        for (name, p) in &outputs {
            let layer = name.strip_suffix(".output").unwrap_or(name);
            if chosen.contains_key(layer) {
                chosen.insert(name.clone(), *p);
            }
        }
        let mut m = float.clone();
        passes::int8(&mut m, &chosen, s.weight_bits)?;
        Ok(m)
    };
    let noise = noise_batch(net.spec(), PSNR_SAMPLES);
    let reference = one_step(&float.encode_to_vec(), &noise)?;
    let measure = |m: &onnx::ModelProto| -> anyhow::Result<f64> {
        Ok(psnr(&one_step(&m.encode_to_vec(), &noise)?, &reference))
    };
    // What each layer costs alone, on fewer samples.
    let few = noise_batch(net.spec(), PSNR_SAMPLES / 8);
    let few_reference = one_step(&float.encode_to_vec(), &few)?;
    let names: HashSet<String> = layers.iter().map(|l| l.name.clone()).collect();
    let mut alone = Vec::new();
    for (name, p) in &params {
        let others: HashSet<String> = names.iter().filter(|n| *n != name).cloned().collect();
        let db = psnr(
            &one_step(&quantized(&others)?.encode_to_vec(), &few)?,
            &few_reference,
        );
        lines.push(format!(
            "{name:<28} input scale {:.5} zero point {:>3}  alone in int8: one-step PSNR {db:.1} dB",
            p.scale, p.zero_point
        ));
        alone.push((name.clone(), db));
    }
    alone.sort_by(|a, b| a.1.total_cmp(&b.1));

    let all_int8 = HashSet::new();
    let psnr_all = measure(&quantized(&all_int8)?)?;
    lines.push(format!(
        "one-step samples, all layers int8: PSNR {psnr_all:.1} dB against fp32"
    ));
    let (float_set, why) = match &s.float_layers {
        FloatLayers::None => (all_int8, ""),
        FloatLayers::Auto if psnr_all >= AUTO_PSNR_DB => (all_int8, ""),
        FloatLayers::Auto => {
            let mut set = HashSet::new();
            for (name, _) in alone.iter().take(layers.len().div_ceil(2)) {
                set.insert(name.clone());
                let db = measure(&quantized(&set)?)?;
                lines.push(format!(
                    "one-step samples, {} in float: PSNR {db:.1} dB against fp32",
                    set.len()
                ));
                if db >= AUTO_PSNR_DB {
                    break;
                }
            }
            (set, "all-int8 PSNR below 30 dB")
        }
        FloatLayers::FirstLast => (
            HashSet::from([
                layers[0].name.clone(),
                layers[layers.len() - 1].name.clone(),
            ]),
            "requested",
        ),
        FloatLayers::Named(names) => {
            passes::check_names(float, names)?;
            (names.iter().cloned().collect(), "requested")
        }
    };
    let model = quantized(&float_set)?;
    let psnr_db = if float_set.is_empty() {
        psnr_all
    } else {
        let db = measure(&model)?;
        lines.push(format!(
            "one-step samples, {} layer(s) in float: PSNR {db:.1} dB against fp32",
            float_set.len()
        ));
        db
    };
    if psnr_db < s.min_psnr_db || psnr_db.is_nan() {
        let worst = alone
            .iter()
            .find(|(n, _)| !float_set.contains(n))
            .map_or("none".to_string(), |(n, db)| {
                format!("{n} ({db:.1} dB alone in int8)")
            });
        bail!(
            "int8 one-step PSNR {psnr_db:.1} dB against fp32 is below the floor of {} dB; the layer with the largest error is {worst}: keep it in float (--float-layers) or lower the floor (--min-psnr); nothing written",
            s.min_psnr_db
        );
    }
    let float_layers = layers
        .iter()
        .filter(|l| float_set.contains(&l.name))
        .map(|l| format!("{} ({why})", l.name))
        .collect();
    let q = Quantization {
        scheme: format!(
            "QDQ on every MatMul and Conv with constant weights: activations uint8 per tensor (asymmetric, round half to even), weights int8 per output channel (symmetric, zero point 0, codes in [-{m}, {m}]{bits}), MatMul bias f32; Conv output uint8 per tensor and bias int32 at input x weight scale; mf-kernels convention",
            m = s.weight_bits.max_code(),
            bits = match s.weight_bits {
                WeightBits::Eight => "",
                WeightBits::Seven => ": 7-bit weights",
            },
        ),
        calibration: s.rule.name(),
        calibration_samples: s.samples,
        float_layers,
        psnr_db: psnr_db.is_finite().then_some(psnr_db),
    };
    Ok((model, q))
}

/// Exports a run; nothing is written unless every check passes. A classifier run (from
/// `mf-train classifier`) is written as the fp32 classifier graph `mf-edge eval` uses.
pub fn export(opts: &ExportOptions) -> anyhow::Result<ExportReport> {
    ensure!(
        opts.weight_bits == WeightBits::Eight || opts.target == Target::Int8,
        "--weight-bits 7 applies to --precision int8 only (the firmware's compact format keeps \
         8-bit weights, fp32 and fp16 have no codes); this export is {:?}",
        opts.target
    );
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
    let data;
    let int8 = if matches!(opts.target, Target::Int8 | Target::Compact) {
        data = Dataset::open(&state.config.data).context("calibration needs the training data")?;
        Some(Int8Settings {
            data: &data,
            samples: opts.calib_samples,
            rule: opts.calibration,
            seed: state.config.train.seed ^ 0xCA11,
            float_layers: if opts.target == Target::Compact {
                FloatLayers::None
            } else {
                opts.float_layers.clone()
            },
            min_psnr_db: opts.min_psnr_db,
            weight_bits: opts.weight_bits,
        })
    } else {
        None
    };
    let mut lowered = lower(&net, opts.target, int8.as_ref())?;
    let precision = match opts.target {
        Target::Fp32 => "fp32",
        Target::Fp16 => "fp16",
        Target::Int8 => "int8",
        Target::Compact => "int8 (compact)",
    };
    let mut card = card(&net, &state, precision, lowered.quantization.take());
    if !lowered.fp32_weights.is_empty() {
        card.io = format!(
            "{}; except the weights of {}, kept float32",
            card.io,
            lowered.fp32_weights.join(", ")
        );
    }
    card.check_relative_error = Some(lowered.max_relative_error);
    let bytes = if opts.target == Target::Compact {
        let euler = net.spec.objective == ObjectiveKind::FlowMatching;
        let bytes = compact::lower(&lowered.model, euler)?;
        let psnr_db = check_compact(&bytes, &net, &lowered.model)?;
        lowered.lines.push(format!(
            "compact model: one-step samples PSNR {psnr_db:.1} dB against the int8 graph (same noise)"
        ));
        bytes
    } else {
        lowered
            .model
            .metadata_props
            .push(onnx::StringStringEntryProto {
                key: CARD_KEY.into(),
                value: card.to_json(),
            });
        lowered.model.producer_name = "mf-export".into();
        lowered.model.encode_to_vec()
    };
    write_atomically(&opts.out, &bytes)?;
    Ok(ExportReport {
        card: Some(card),
        max_relative_error: lowered.max_relative_error,
        lines: lowered.lines,
        bytes: bytes.len(),
    })
}

/// Runs a compact model the way the firmware does (its reader's forward, the one interpreter
/// the firmware and this check share) and compares its one-step images with the int8 graph's
/// in tract on the same noise: returns the PSNR. They compute the same integer arithmetic, so
/// anything but a near-identical image is an error of the lowering.
fn check_compact(bytes: &[u8], net: &VelocityNet, int8: &onnx::ModelProto) -> anyhow::Result<f64> {
    let model = mf_core::compact::CompactModel::parse(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut scratch = mf_core::compact::Scratch::new(model.max_width());
    let mut ws = scratch.workspace();
    let classes = net.spec.classes.max(1);
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
        sample_shape: net.spec.sample_shape.clone(),
        z: noise,
        t: vec![1.0; classes],
        r: vec![0.0; classes],
        class: (0..classes as i64).collect(),
    };
    let reference = one_step(&int8.encode_to_vec(), &batch)?;
    let db = psnr(&ours, &reference);
    ensure!(
        db >= 40.0,
        "the compact model's one-step images differ from the int8 graph's (PSNR {db:.1} dB): the lowering is wrong; nothing written"
    );
    Ok(db)
}

/// A tensor's values as f32.
fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 output")
}

/// The model card of a network from a run.
fn card(
    net: &VelocityNet,
    state: &RunState,
    precision: &str,
    quantization: Option<Quantization>,
) -> ModelCard {
    let spec = &net.spec;
    let (class_names, class_folders) = Dataset::class_list(&state.config.data)
        .ok()
        .filter(|(names, _)| names.len() == spec.classes)
        .unwrap_or_else(|| {
            (
                (0..spec.classes).map(|c| c.to_string()).collect(),
                Vec::new(),
            )
        });
    // Folders are worth carrying only where they differ from the names (ImageNet's wnids).
    let class_folders = if class_folders == class_names {
        Vec::new()
    } else {
        class_folders
    };
    let o = &state.config.objective;
    ModelCard {
        version: CARD_VERSION,
        architecture: spec.arch.name().into(),
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
        class_folders,
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
            "fp16" => "inputs and outputs float32 (class int64); MatMul and Conv weights stored as float16 and cast \
                       to float32 in the graph; arithmetic float32"
                .into(),
            _ => "inputs and outputs float32 (class int64)".into(),
        },
        quantization,
        training: Training {
            steps: state.step,
            config_hash: state.config_hash.clone(),
            seconds: state.elapsed_s,
            teacher: state.teacher.as_ref().map(|p| Teacher {
                run: p.teacher.clone(),
                config_hash: p.teacher_config_hash.clone(),
                steps: p.teacher_step,
                seconds: p.teacher_seconds,
                coupling_steps: p.steps,
                coupling_guidance: (p.guidance != 1.0).then_some(p.guidance),
                draws_made: p.draws_made,
                draws_kept: p.kept,
                coupling_seconds: p.seconds,
            }),
            start: state.start.clone(),
        },
        check_relative_error: None,
    }
}

/// A fixed batch covering the sampler points and every class.
fn check_batch(spec: &NetSpec) -> Batch {
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

/// Noise at t = 1, r = 0 for `n` one-step samples, their classes spread evenly over the
/// model's (consecutive runs of `n / classes` per class when `n` is a multiple of them): a fixed
/// size whatever the class count, so a 1,000-class model is checked on as many samples as
/// MNIST.
fn noise_batch(spec: &NetSpec, n: usize) -> Batch {
    let mut z = vec![0f32; n * spec.dims()];
    Noise::new(0x5A3D).fill(&mut z);
    let class = if spec.classes == 0 {
        vec![spec.null_class() as i64; n]
    } else {
        (0..n).map(|i| (i * spec.classes / n) as i64).collect()
    };
    Batch {
        sample_shape: spec.sample_shape.clone(),
        z,
        t: vec![1.0; n],
        r: vec![0.0; n],
        class,
    }
}

/// Creates the output's folder if needed, then writes the file atomically
/// ([`mf_core::atomic::write`]: temp file, fsync, rename; nothing left behind on failure).
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = mf_core::atomic::folder(path);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    mf_core::atomic::write(path, bytes)
}
