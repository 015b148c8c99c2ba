//! Loading an exported model: the ONNX protobuf, checked, with its model card.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use mf_core::card::{CARD_KEY, ModelCard};
use mf_core::onnx;
use prost::Message;

/// An ONNX model written by mf-export.
#[derive(Debug, Clone)]
pub struct Model {
    /// The decoded protobuf.
    pub proto: onnx::ModelProto,
    /// Its model card.
    pub card: ModelCard,
    /// The encoded file (what tract and ONNX Runtime load).
    pub bytes: Vec<u8>,
}

/// The largest model file read (2 GiB, ONNX's protobuf limit).
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// The graph inputs every MeanFlow model takes, in order.
pub const INPUTS: [&str; 4] = ["z", "t", "r", "class"];

/// The one output every MeanFlow model has: the average velocity u (or the raw x-prediction).
pub const OUTPUT: &str = "u";

impl Model {
    /// Reads a model file.
    pub fn open(path: &Path) -> anyhow::Result<Model> {
        let bytes = mf_core::bounded::read(path, MAX_MODEL_BYTES, "model")?;
        Model::from_bytes(bytes).with_context(|| format!("cannot load model {}", path.display()))
    }

    /// Decodes and checks a model: an ONNX graph with inputs z, t, r, class, one output, and
    /// a MeanFlow model card.
    pub fn from_bytes(bytes: Vec<u8>) -> anyhow::Result<Model> {
        let proto = onnx::ModelProto::decode(bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("not an ONNX model (protobuf decoding failed: {e})"))?;
        let Some(graph) = &proto.graph else {
            bail!("the ONNX model has no graph")
        };
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
        ensure!(
            inputs == INPUTS,
            "graph inputs are {inputs:?}; a MeanFlow model takes z, t, r, class (was it written by mf-export?)"
        );
        let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        ensure!(
            outputs == [OUTPUT],
            "graph outputs are {outputs:?}; a MeanFlow model has one output, {OUTPUT}"
        );
        let text = proto
            .metadata_props
            .iter()
            .find(|p| p.key == CARD_KEY)
            .map(|p| p.value.as_str())
            .with_context(|| {
                format!(
                    "no MeanFlow model card (metadata key {CARD_KEY}): was it written by mf-export?"
                )
            })?;
        let card = ModelCard::from_json(text).map_err(anyhow::Error::msg)?;
        ensure!(
            card.dims() > 0,
            "the model card gives an empty sample shape"
        );
        Ok(Model { proto, card, bytes })
    }

    /// The graph (checked present at load).
    pub fn graph(&self) -> &onnx::GraphProto {
        self.proto.graph.as_ref().expect("checked at load")
    }

    /// How many nodes of each op the graph has.
    pub fn op_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for node in &self.graph().node {
            *counts.entry(node.op_type.clone()).or_default() += 1;
        }
        counts
    }

    /// Bytes of weights (initializers) in the file.
    pub fn weight_bytes(&self) -> usize {
        self.graph()
            .initializer
            .iter()
            .map(|t| t.raw_data.len() + 4 * t.float_data.len() + 8 * t.int64_data.len())
            .sum()
    }
}
