//! A trained MLP's weights pulled out of Burn into plain arrays, in PyTorch layout.
use mf_train::burn::prelude::*;
use mf_train::model::dual::embedding_frequencies;
use mf_train::model::{NetSpec, VelocityNet};

/// One dense layer: `y = x·Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Dense {
    /// `[out, in]` row-major.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
}

/// Everything the graph needs from a trained MLP.
#[derive(Debug, Clone)]
pub struct MlpWeights {
    /// The network's description.
    pub spec: NetSpec,
    /// Class embeddings `[classes + 1, class_dim]` (last row: null class).
    pub class_table: Vec<f32>,
    /// The time embedding's frequencies (`time_dim / 2`).
    pub frequencies: Vec<f32>,
    /// Input, hidden and output layers.
    pub layers: Vec<Dense>,
}

/// A tensor's values as f32, row-major.
pub(crate) fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 weights")
}

impl Dense {
    /// Reads a Burn linear layer (Burn stores `[in, out]`; PyTorch and the kernels `[out, in]`).
    pub fn from_linear(layer: &mf_train::burn::nn::Linear) -> Self {
        let w = layer.weight.val();
        let [k, n] = w.dims();
        Dense {
            weight: floats(w.transpose()),
            bias: layer
                .bias
                .as_ref()
                .map(|b| floats(b.val()))
                .unwrap_or_else(|| vec![0.0; n]),
            n,
            k,
        }
    }
}

impl MlpWeights {
    /// Reads the weights of an MLP network (any device); `None` for other architectures.
    pub fn from_net(net: &VelocityNet) -> Option<Self> {
        let mlp = net.mlp()?;
        let layers = mlp.layers.iter().map(Dense::from_linear).collect();
        Some(MlpWeights {
            spec: net.spec.clone(),
            class_table: floats(mlp.class_embed.weight.val()),
            frequencies: embedding_frequencies(net.spec.time_dim, net.spec.time_scale)
                .iter()
                .map(|&f| f as f32)
                .collect(),
            layers,
        })
    }

    /// Layer names as the card and reports use them.
    pub fn layer_name(&self, i: usize) -> String {
        match i {
            0 => "layers.0 (input)".into(),
            i if i + 1 == self.layers.len() => format!("layers.{i} (output)"),
            i => format!("layers.{i}"),
        }
    }
}
