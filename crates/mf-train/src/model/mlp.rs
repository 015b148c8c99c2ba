//! The MLP: `[z | emb(t) | emb(t − r) | class]` → `depth` × (Linear + SiLU) → Linear.
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;

use super::NetSpec;
use super::dual::{Dual, linear, sinusoidal};

/// A multilayer perceptron over flattened samples.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Class embeddings, one row per class plus the null class (last row).
    pub class_embed: Embedding,
    /// Input layer, hidden layers, output layer.
    pub layers: Vec<Linear>,
    /// Size of each time embedding.
    #[module(skip)]
    pub time_dim: usize,
    /// Multiplier of t in the time embedding.
    #[module(skip)]
    pub time_scale: f64,
}

impl Mlp {
    /// A fresh MLP; the output layer starts at zero, as in the reference code.
    pub fn new(spec: &NetSpec, device: &Device) -> Self {
        let (dims, width, time_dim, class_dim) =
            (spec.dims(), spec.width, spec.time_dim, spec.class_dim);
        let input = dims + 2 * time_dim + class_dim;
        let mut layers = vec![LinearConfig::new(input, width).init(device)];
        for _ in 1..spec.depth {
            layers.push(LinearConfig::new(width, width).init(device));
        }
        layers.push(
            LinearConfig::new(width, dims)
                .with_initializer(Initializer::Zeros)
                .init(device),
        );
        let class_embed = EmbeddingConfig::new(spec.classes + 1, class_dim).init(device);
        Mlp {
            class_embed,
            layers,
            time_dim,
            time_scale: spec.time_scale,
        }
    }

    /// The network's raw output for flattened `z` `[N, dims]`, times `t` and `h = t − r`.
    pub fn forward(&self, z: Dual<2>, t: Dual<1>, h: Dual<1>, class: Tensor<1, Int>) -> Dual<2> {
        self.forward_recording(z, t, h, class, None)
    }

    /// [`Mlp::forward`], pushing the input of every linear layer to `record` when given (what
    /// int8 calibration measures).
    pub fn forward_recording(
        &self,
        z: Dual<2>,
        t: Dual<1>,
        h: Dual<1>,
        class: Tensor<1, Int>,
        mut record: Option<&mut Vec<Tensor<2>>>,
    ) -> Dual<2> {
        let class = Dual::primal(self.class_embed.weight.val().select(0, class));
        let emb_t = sinusoidal(t, self.time_dim, self.time_scale);
        let emb_h = sinusoidal(h, self.time_dim, self.time_scale);
        let mut x = Dual::cat(vec![z, emb_t, emb_h, class], 1);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(record) = record.as_deref_mut() {
                record.push(x.value.clone());
            }
            x = linear(x, layer);
            if i < last {
                x = x.silu();
            }
        }
        x
    }
}
