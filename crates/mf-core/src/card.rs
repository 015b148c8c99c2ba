//! The model card: a JSON document in every exported model (ONNX `metadata_props` key
//! [`CARD_KEY`]) from which a runtime learns everything it needs to feed the network.
use std::string::String;
use std::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::schedule::Sampler;

/// The `metadata_props` key that holds the card.
pub const CARD_KEY: &str = "meanflow.card";

/// The card format this code writes and reads.
pub const CARD_VERSION: u32 = 1;

/// What a model is and how to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// [`CARD_VERSION`] of the writer.
    pub version: u32,
    /// Network architecture (`mlp`).
    pub architecture: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// Dataset it was trained on (`mnist`, `fashion-mnist`, a toy set, `folder`).
    pub dataset: String,
    /// Shape of one sample: `[C, H, W]` for images, `[D]` for vectors.
    pub sample_shape: Vec<usize>,
    /// How stored pixels map to the model's values.
    pub pixel_mapping: String,
    /// Class names, indexed by class id (empty for unconditional models).
    pub class_names: Vec<String>,
    /// The class id that means "no class" (classifier-free guidance's ∅).
    pub null_class: usize,
    /// What the time inputs mean.
    pub time_convention: String,
    /// Whether the raw network output is u or a clean sample.
    pub prediction: String,
    /// How to sample it.
    pub sampler: Sampler,
    /// Classifier-free guidance folded into training: `(ω, κ)` and its t-interval.
    pub guidance: Guidance,
    /// `fp32`, `fp16` or `int8`.
    pub precision: String,
    /// Types of the graph's inputs and outputs, and where casts happen.
    pub io: String,
    /// For int8 models: how and where the graph is quantized.
    pub quantization: Option<Quantization>,
    /// The training run it comes from.
    pub training: Training,
}

/// Guidance as trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guidance {
    /// Scale ω.
    pub omega: f64,
    /// Mix κ.
    pub kappa: f64,
    /// Interval of t where it applied.
    pub interval: [f64; 2],
}

/// How an int8 model was quantized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    /// The convention (weights, activations, rounding).
    pub scheme: String,
    /// Activation calibration rule (`minmax` or `percentile:<p>`).
    pub calibration: String,
    /// Calibration samples used.
    pub calibration_samples: usize,
    /// Layers kept in float, by name, and why.
    pub float_layers: Vec<String>,
    /// PSNR (dB) of one-step samples against the fp32 model, same noise and labels; `None`
    /// when the 8-bit images are identical (infinite PSNR, which JSON cannot hold).
    pub psnr_db: Option<f64>,
}

/// Provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Training {
    /// Optimizer steps.
    pub steps: u64,
    /// Hash of the training config.
    pub config_hash: String,
    /// Training wall time in seconds.
    pub seconds: f64,
}

impl ModelCard {
    /// The card as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a card serializes")
    }

    /// Parses a card, refusing other versions.
    pub fn from_json(text: &str) -> Result<ModelCard, String> {
        let card: ModelCard =
            serde_json::from_str(text).map_err(|e| std::format!("invalid model card: {e}"))?;
        if card.version != CARD_VERSION {
            return Err(std::format!(
                "model card version {} (this build reads {CARD_VERSION})",
                card.version
            ));
        }
        Ok(card)
    }

    /// Values per sample.
    pub fn dims(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Number of real classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// Resolves a class given as an index or a name, or explains what is accepted.
    pub fn class_id(&self, class: &str) -> Result<usize, String> {
        if self.class_names.is_empty() {
            return Err(String::from(
                "this model is unconditional: it takes no class",
            ));
        }
        let by_index = class.parse::<usize>().ok().filter(|&i| i < self.classes());
        let by_name = self
            .class_names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(class));
        by_index.or(by_name).ok_or_else(|| {
            std::format!(
                "unknown class {class:?}: expected an index 0..{} or one of {}",
                self.classes(),
                self.class_names.join(", ")
            )
        })
    }
}
