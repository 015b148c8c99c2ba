//! The MLP: `[z | emb(t) | emb(t − r) | class]` → `depth` × (Linear + SiLU) → Linear.
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;

use super::NetSpec;
use super::dual::{Dual, Labels, embedding, linear, sinusoidal};

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
    pub fn forward(&self, z: Dual<2>, t: Dual<1>, h: Dual<1>, class: &Labels) -> Dual<2> {
        let class = embedding(&self.class_embed, class);
        let emb_t = sinusoidal(t, self.time_dim, self.time_scale);
        let emb_h = sinusoidal(h, self.time_dim, self.time_scale);
        let mut x = Dual::cat(vec![z, emb_t, emb_h, class], 1);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = linear(x, layer);
            if i < last {
                x = x.silu();
            }
        }
        x
    }
}
