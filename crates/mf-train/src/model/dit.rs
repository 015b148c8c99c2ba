//! The paper's network: a DiT with adaLN-Zero (Peebles & Xie, 2023, as Gsunshine/meanflow's
//! `models_dit.py` builds it), on `[C, H, W]` images.
//!
//! Patches of `p×p` pixels become tokens (a stride-p conv) with fixed 2-D sin-cos position
//! embeddings; `depth` blocks each run LayerNorm (no affine, ε 1e-6) → modulation → multi-head
//! self-attention and LayerNorm → modulation → GELU(tanh) MLP, both gated, with shift, scale and
//! gate from SiLU → Linear(6·D) of the conditioning vector (zero at start). The conditioning
//! vector is the sum of two timestep embedders (t and h = t − r: sinusoidal, then Linear → SiLU
//! → Linear) and a class embedding with a null class. A final adaLN layer and a zero-initialised
//! Linear give `p·p·C` values per token, rearranged into the image. Every op is a primitive of
//! [`super::dual`], with its dual rule and its ONNX form.
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;

use super::NetSpec;
use super::dual::{
    Dual, Labels, add_constant, attention, conv2d, embedding, layer_norm, linear, modulate,
    sinusoidal, tokens, untokens,
};

/// LayerNorm's ε in every block.
pub const LAYER_NORM_EPS: f64 = 1e-6;

/// A timestep embedder: sinusoidal features → Linear → SiLU → Linear.
#[derive(Module, Debug)]
pub struct TimeEmbedder {
    /// Frequencies → width.
    pub fc1: Linear,
    /// Width → width.
    pub fc2: Linear,
}

impl TimeEmbedder {
    fn new(time_dim: usize, width: usize, device: &Device) -> Self {
        TimeEmbedder {
            fc1: LinearConfig::new(time_dim, width).init(device),
            fc2: LinearConfig::new(width, width).init(device),
        }
    }

    fn forward(&self, t: Dual<1>, time_dim: usize, time_scale: f64) -> Dual<2> {
        linear(
            linear(sinusoidal(t, time_dim, time_scale), &self.fc1).silu(),
            &self.fc2,
        )
    }
}

/// A linear layer whose weight and bias start at zero (adaLN-Zero's modulations, the output).
fn zero_linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Zeros)
        .init(device)
}

/// One adaLN-Zero transformer block.
#[derive(Module, Debug)]
pub struct DitBlock {
    /// Conditioning → shift, scale, gate for attention and for the MLP (6·D, zero at start).
    pub modulation: Linear,
    /// Tokens → queries, keys, values.
    pub qkv: Linear,
    /// Attention output projection.
    pub proj: Linear,
    /// MLP expansion.
    pub fc1: Linear,
    /// MLP projection back to the width.
    pub fc2: Linear,
}

impl DitBlock {
    fn new(width: usize, mlp_ratio: usize, device: &Device) -> Self {
        DitBlock {
            modulation: zero_linear(width, 6 * width, device),
            qkv: LinearConfig::new(width, 3 * width).init(device),
            proj: LinearConfig::new(width, width).init(device),
            fc1: LinearConfig::new(width, mlp_ratio * width).init(device),
            fc2: LinearConfig::new(mlp_ratio * width, width).init(device),
        }
    }

    fn forward(&self, x: Dual<3>, cond: &Dual<2>, heads: usize) -> Dual<3> {
        let width = x.value.dims()[2];
        let m = linear(cond.clone().silu(), &self.modulation);
        let part = |i: usize| m.clone().columns(i * width, width);
        let gate = |g: Dual<2>, y: Dual<3>| super::dual::per_token(g, y.value.dims()[1]) * y;
        let h = modulate(layer_norm(x.clone(), LAYER_NORM_EPS), part(0), part(1));
        let h = linear(attention(linear(h, &self.qkv), heads), &self.proj);
        let x = x + gate(part(2), h);
        let h = modulate(layer_norm(x.clone(), LAYER_NORM_EPS), part(3), part(4));
        let h = linear(linear(h, &self.fc1).gelu_tanh(), &self.fc2);
        x + gate(part(5), h)
    }
}

/// The DiT (see the module docs).
#[derive(Module, Debug)]
pub struct Dit {
    /// Patches → tokens: a `p×p` conv of stride `p`.
    pub patch_embed: Conv2d,
    /// Embedder of t.
    pub t_embed: TimeEmbedder,
    /// Embedder of h = t − r.
    pub h_embed: TimeEmbedder,
    /// Class embeddings, one row per class plus the null class (last row).
    pub class_embed: Embedding,
    /// The transformer blocks.
    pub blocks: Vec<DitBlock>,
    /// Final adaLN: conditioning → shift and scale (zero at start).
    pub final_modulation: Linear,
    /// Tokens → `p·p·C` pixel values each (zero at start).
    pub final_linear: Linear,
    /// Heads of every attention.
    #[module(skip)]
    pub heads: usize,
    /// Patch side.
    #[module(skip)]
    pub patch: usize,
    /// Size of each sinusoidal time embedding.
    #[module(skip)]
    pub time_dim: usize,
    /// Multiplier of t in the time embeddings.
    #[module(skip)]
    pub time_scale: f64,
    /// `[C, H, W]` of one sample.
    #[module(skip)]
    pub sample_shape: [usize; 3],
}

impl Dit {
    /// A fresh DiT; the caller has checked the spec (see [`NetSpec::new`]).
    pub fn new(spec: &NetSpec, device: &Device) -> Self {
        let (width, p) = (spec.width, spec.patch);
        let channels = spec.sample_shape[0];
        Dit {
            patch_embed: Conv2dConfig::new([channels, width], [p, p])
                .with_stride([p, p])
                .init(device),
            t_embed: TimeEmbedder::new(spec.time_dim, width, device),
            h_embed: TimeEmbedder::new(spec.time_dim, width, device),
            class_embed: EmbeddingConfig::new(spec.classes + 1, width).init(device),
            blocks: (0..spec.depth)
                .map(|_| DitBlock::new(width, spec.mlp_ratio, device))
                .collect(),
            final_modulation: zero_linear(width, 2 * width, device),
            final_linear: zero_linear(width, p * p * channels, device),
            heads: spec.heads,
            patch: p,
            time_dim: spec.time_dim,
            time_scale: spec.time_scale,
            sample_shape: [
                spec.sample_shape[0],
                spec.sample_shape[1],
                spec.sample_shape[2],
            ],
        }
    }

    /// The network's raw output for flattened `z` `[N, C·H·W]`, times `t` and `h = t − r`.
    pub fn forward(&self, z: Dual<2>, t: Dual<1>, h: Dual<1>, class: &Labels) -> Dual<2> {
        let n = z.value.dims()[0];
        let [c, height, width] = self.sample_shape;
        let grid = [height / self.patch, width / self.patch];
        let cond = self.t_embed.forward(t, self.time_dim, self.time_scale)
            + self.h_embed.forward(h, self.time_dim, self.time_scale)
            + embedding(&self.class_embed, class);

        let x = conv2d(
            z.reshape([n, c, height, width]),
            &self.patch_embed,
            self.patch,
            0,
        );
        let dim = self.patch_embed.weight.dims()[0];
        let positions = position_embedding(dim, grid, &x.value.device()).cast(x.value.dtype());
        let mut x = add_constant(tokens(x), positions, "position_embedding");
        for block in &self.blocks {
            x = block.forward(x, &cond, self.heads);
        }
        let m = linear(cond.silu(), &self.final_modulation);
        let (shift, scale) = (m.clone().columns(0, dim), m.columns(dim, dim));
        let x = modulate(layer_norm(x, LAYER_NORM_EPS), shift, scale);
        untokens(linear(x, &self.final_linear), c, self.patch, grid)
    }
}

/// The fixed 2-D sin-cos position embedding `[h·w, D]` (MAE's `get_2d_sincos_pos_embed`, as
/// DiT uses it): for the token in row i, column j, the first D/2 values embed j and the last
/// D/2 embed i, each as `[sin(pos·ω_k), cos(pos·ω_k)]` with ω_k = 10000^(−k/(D/4)).
pub fn position_embedding(dim: usize, grid: [usize; 2], device: &Device) -> Tensor<2> {
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 10000f64.powf(-(k as f64) / quarter as f64))
        .collect();
    let embed = |pos: usize| -> Vec<f64> {
        let angles = omega.iter().map(|w| pos as f64 * w);
        angles
            .clone()
            .map(f64::sin)
            .chain(angles.map(f64::cos))
            .collect()
    };
    let [h, w] = grid;
    let values: Vec<f64> = (0..h)
        .flat_map(|i| (0..w).map(move |j| (i, j)))
        .flat_map(|(i, j)| embed(j).into_iter().chain(embed(i)))
        .collect();
    Tensor::<1>::from_data(TensorData::new(values, [h * w * 4 * quarter]), device)
        .reshape([h * w, 4 * quarter])
}
