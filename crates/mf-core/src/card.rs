//! The model card: a JSON document in every exported model (ONNX `metadata_props` key
//! [`CARD_KEY`]) from which a runtime learns everything it needs to feed the network.
use std::string::String;
use std::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::schedule::Sampler;

/// The `metadata_props` key that holds the card.
pub const CARD_KEY: &str = "meanflow.card";

/// The most values one sample may have (a 2048×2048 RGBA image): a card asking for more is
/// refused when read.
pub const MAX_SAMPLE_VALUES: usize = 1 << 24;

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
    /// For a folder dataset whose `classes.txt` named its folders (ImageNet's `n02099601`), the
    /// folder of each class; empty where the folders are the names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_folders: Vec<String>,
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
    /// What the exporter measured before writing the file: the graph's largest error on its
    /// check batch relative to mf-train's forward (absent in files written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_relative_error: Option<f64>,
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
    /// For a reflow student: the teacher whose couplings it trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<Teacher>,
    /// For a run started from another run's weights (`train.init_from`): that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
}

/// The run whose EMA weights another run started from, as it stood when that run began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// The run folder, as the config gives it.
    pub run: String,
    /// Hash of its training config.
    pub config_hash: String,
    /// Its optimizer steps.
    pub steps: u64,
    /// Its training wall time in seconds.
    pub seconds: f64,
}

/// The teacher of a reflow student, and how its couplings were drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Teacher {
    /// The teacher's run folder, as given to `mf-train couple`.
    pub run: String,
    /// Hash of the teacher's training config.
    pub config_hash: String,
    /// The teacher's optimizer steps.
    pub steps: u64,
    /// The teacher's training wall time in seconds.
    pub seconds: f64,
    /// Network evaluations per coupled image.
    pub coupling_steps: usize,
    /// The classifier-free guidance scale of those evaluations, where the teacher sampled with
    /// guidance (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupling_guidance: Option<f64>,
    /// Draws made.
    pub draws_made: u64,
    /// Draws kept (those that stayed in range): the pairs the student trained on.
    pub draws_kept: u64,
    /// Wall time of drawing the couplings, in seconds.
    pub coupling_seconds: f64,
}

/// Up to this many classes, an unknown class is answered with every name.
const LISTED_CLASSES: usize = 20;

/// How many names an unknown class is answered with on a model of many classes.
const SUGGESTED_CLASSES: usize = 3;

/// A class name as compared: lower case, with `_`, `-` and spaces as one separator.
fn class_key(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            '_' | '-' | ' ' => ' ',
            c => c.to_ascii_lowercase(),
        })
        .collect()
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
        card.check()?;
        Ok(card)
    }

    /// Checks what a runtime relies on: a sample shape of 1 to 3 positive dimensions holding
    /// at most [`MAX_SAMPLE_VALUES`] values, and a null class that is a class id or the one
    /// after the last.
    pub fn check(&self) -> Result<(), String> {
        let shape = &self.sample_shape;
        let values = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_SAMPLE_VALUES);
        if shape.is_empty() || shape.len() > 3 || shape.contains(&0) || values.is_none() {
            return Err(std::format!(
                "the model card's sample shape {shape:?} is not accepted: [D] or [C, H, W] with \
                 positive sizes and at most {MAX_SAMPLE_VALUES} values"
            ));
        }
        if self.null_class > self.classes() {
            return Err(std::format!(
                "the model card's null class {} is past its {} classes (0..={} is accepted)",
                self.null_class,
                self.classes(),
                self.classes()
            ));
        }
        Ok(())
    }

    /// Values per sample (a checked card's shape; saturates on an unchecked one).
    pub fn dims(&self) -> usize {
        self.sample_shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// Number of real classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// Resolves a class given as an index, a name or a class folder (case, `_`, `-` and spaces
    /// do not matter), or explains what is accepted: every name for a few classes, the nearest
    /// few names for many.
    pub fn class_id(&self, class: &str) -> Result<usize, String> {
        if self.class_names.is_empty() {
            return Err(String::from(
                "this model is unconditional: it takes no class",
            ));
        }
        let by_index = class.parse::<usize>().ok().filter(|&i| i < self.classes());
        let key = class_key(class);
        let position = |list: &[String]| list.iter().position(|n| class_key(n) == key);
        let found = by_index
            .or_else(|| position(&self.class_names))
            .or_else(|| position(&self.class_folders).filter(|&i| i < self.classes()));
        found.ok_or_else(|| {
            if self.classes() <= LISTED_CLASSES {
                std::format!(
                    "unknown class {class:?}: expected an index 0..{} or one of {}",
                    self.classes(),
                    self.class_names.join(", ")
                )
            } else {
                std::format!(
                    "unknown class {class:?}: did you mean {}? (an index 0..{} or one of the {} \
                     class names is accepted; `mf-edge info` lists them)",
                    self.nearest_names(&key, SUGGESTED_CLASSES).join(", "),
                    self.classes(),
                    self.classes()
                )
            }
        })
    }

    /// The `count` class names nearest to a normalized key: names containing it first, then by
    /// Jaro-Winkler similarity.
    fn nearest_names(&self, key: &str, count: usize) -> Vec<String> {
        let score = |name: &str| {
            let name = class_key(name);
            let contains = !key.is_empty() && name.contains(key);
            (contains, strsim::jaro_winkler(key, &name))
        };
        let mut scored: Vec<_> = self.class_names.iter().map(|n| (score(n), n)).collect();
        scored.sort_by(|(a, _), (b, _)| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
        scored
            .into_iter()
            .take(count)
            .map(|(_, n)| n.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec;

    fn card(sample_shape: Vec<usize>, classes: usize, null_class: usize) -> ModelCard {
        ModelCard {
            version: CARD_VERSION,
            architecture: "mlp".to_string(),
            parameters: 1,
            dataset: "mnist".to_string(),
            sample_shape,
            pixel_mapping: String::new(),
            class_names: (0..classes).map(|c| c.to_string()).collect(),
            class_folders: Vec::new(),
            null_class,
            time_convention: String::new(),
            prediction: "u".to_string(),
            sampler: Sampler::MeanFlow,
            guidance: Guidance {
                omega: 1.0,
                kappa: 0.0,
                interval: [0.0, 1.0],
            },
            precision: "fp32".to_string(),
            io: String::new(),
            quantization: None,
            training: Training {
                steps: 1,
                config_hash: String::new(),
                seconds: 0.0,
                teacher: None,
                start: None,
            },
            check_relative_error: None,
        }
    }

    #[test]
    fn a_good_card_round_trips() {
        let mut c = card(vec![1, 28, 28], 10, 10);
        assert_eq!(ModelCard::from_json(&c.to_json()).unwrap(), c);
        assert_eq!(c.dims(), 784);
        // A reflow student's teacher travels with it; a card without one reads as before.
        assert!(!c.to_json().contains("teacher"));
        c.training.teacher = Some(Teacher {
            run: "runs/t".into(),
            config_hash: "abc".into(),
            steps: 9000,
            seconds: 1800.5,
            coupling_steps: 10,
            coupling_guidance: Some(1.5),
            draws_made: 200,
            draws_kept: 199,
            coupling_seconds: 150.0,
        });
        assert_eq!(ModelCard::from_json(&c.to_json()).unwrap(), c);
        // So does the run a student started from.
        assert!(!c.to_json().contains("start"));
        c.training.start = Some(Start {
            run: "runs/s".into(),
            config_hash: "def".into(),
            steps: 16000,
            seconds: 1565.0,
        });
        assert!(c.to_json().contains("runs/s"));
        assert_eq!(ModelCard::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn an_overflowing_sample_shape_is_refused_by_name() {
        for shape in [
            vec![usize::MAX / 2, 4],
            vec![1 << 20, 1 << 20],
            vec![],
            vec![1, 0, 28],
            vec![1, 1, 1, 1],
        ] {
            let err = ModelCard::from_json(&card(shape.clone(), 10, 10).to_json()).unwrap_err();
            assert!(err.contains("sample shape"), "{shape:?}: {err}");
        }
    }

    #[test]
    fn classes_resolve_by_index_name_or_folder_and_misses_suggest_names() {
        let mut c = card(vec![3, 8, 8], 300, 300);
        c.class_names = (0..300).map(|i| std::format!("class_{i}")).collect();
        c.class_names[207] = "golden_retriever".to_string();
        c.class_names[208] = "Labrador_retriever".to_string();
        c.class_folders = (0..300).map(|i| std::format!("n{i:08}")).collect();
        assert_eq!(c.class_id("207"), Ok(207));
        assert_eq!(c.class_id("golden_retriever"), Ok(207));
        assert_eq!(c.class_id("Golden Retriever"), Ok(207));
        assert_eq!(c.class_id("n00000208"), Ok(208));
        let err = c.class_id("retriever").unwrap_err();
        assert!(
            err.contains("did you mean golden_retriever, Labrador_retriever"),
            "{err}"
        );
        assert!(
            err.contains("0..300") && !err.contains("class_17,"),
            "{err}"
        );
        let err = c.class_id("goldne_retriever").unwrap_err();
        assert!(err.contains("did you mean golden_retriever"), "{err}");
        assert_eq!(err.matches(", ").count(), SUGGESTED_CLASSES - 1, "{err}");
        // A few classes are all listed.
        let err = card(vec![2], 10, 10).class_id("12").unwrap_err();
        assert!(err.contains("0, 1, 2, 3, 4, 5, 6, 7, 8, 9"), "{err}");
    }

    #[test]
    fn a_null_class_past_the_classes_is_refused() {
        let err = ModelCard::from_json(&card(vec![2], 10, 11).to_json()).unwrap_err();
        assert!(err.contains("null class 11"), "{err}");
        assert!(ModelCard::from_json(&card(vec![2], 0, 0).to_json()).is_ok());
    }
}
