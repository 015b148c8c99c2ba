//! A small U-Net for `[C, H, W]` images, conditioned on t, t − r and the class.
//!
//! `depth` levels with `width · 2^level` channels; each level is one residual block
//! (GroupNorm, SiLU, 3×3 conv, plus the conditioning vector per channel, GroupNorm, SiLU,
//! 3×3 conv, 1×1 skip when channels change). Levels are joined by stride-2 3×3 convs going
//! down and nearest-neighbour upsampling going up, with skip connections concatenated on the
//! way up. Conditioning: `SiLU(Linear([emb(t) | emb(t − r) | class]))`. Every op is a primitive
//! of [`super::dual`], with its dual rule and its ONNX form.
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig,
};
use burn::prelude::*;

use super::NetSpec;
use super::dual::{
    Dual, Labels, add_per_channel, conv2d, embedding, group_norm, linear, sinusoidal, upsample2,
};

/// Groups of every GroupNorm (channel counts are multiples of it).
pub const GROUPS: usize = 8;

/// One residual block with per-channel conditioning.
#[derive(Module, Debug)]
pub struct ResBlock {
    /// Norm before the first conv.
    pub norm1: GroupNorm,
    /// First 3×3 conv (in → out channels).
    pub conv1: Conv2d,
    /// Conditioning vector → per-channel shift.
    pub cond: Linear,
    /// Norm before the second conv.
    pub norm2: GroupNorm,
    /// Second 3×3 conv (out → out), zero at start.
    pub conv2: Conv2d,
    /// 1×1 conv on the skip path when in ≠ out channels.
    pub skip: Option<Conv2d>,
}

impl ResBlock {
    fn new(channels_in: usize, channels_out: usize, cond_dim: usize, device: &Device) -> Self {
        ResBlock {
            norm1: GroupNormConfig::new(GROUPS, channels_in).init(device),
            conv1: conv3x3(channels_in, channels_out, device),
            cond: LinearConfig::new(cond_dim, channels_out).init(device),
            norm2: GroupNormConfig::new(GROUPS, channels_out).init(device),
            conv2: Conv2dConfig::new([channels_out, channels_out], [3, 3])
                .with_initializer(Initializer::Zeros)
                .init(device),
            skip: (channels_in != channels_out)
                .then(|| Conv2dConfig::new([channels_in, channels_out], [1, 1]).init(device)),
        }
    }

    fn forward(&self, x: Dual<4>, cond: &Dual<2>) -> Dual<4> {
        let h = conv2d(group_norm(x.clone(), &self.norm1).silu(), &self.conv1, 1, 1);
        let h = add_per_channel(h, linear(cond.clone(), &self.cond));
        let h = conv2d(group_norm(h, &self.norm2).silu(), &self.conv2, 1, 1);
        let skip = match &self.skip {
            Some(conv) => conv2d(x, conv, 1, 0),
            None => x,
        };
        h + skip
    }
}

fn conv3x3(channels_in: usize, channels_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([channels_in, channels_out], [3, 3]).init(device)
}

/// The U-Net (see the module docs).
#[derive(Module, Debug)]
pub struct Unet {
    /// Class embeddings, one row per class plus the null class (last row).
    pub class_embed: Embedding,
    /// `[emb(t) | emb(t − r) | class]` → conditioning vector (SiLU after).
    pub cond: Linear,
    /// 3×3 conv from the image's channels to `width`.
    pub stem: Conv2d,
    /// One residual block per level on the way down.
    pub down: Vec<ResBlock>,
    /// Stride-2 3×3 convs between levels.
    pub downsample: Vec<Conv2d>,
    /// The block at the lowest resolution.
    pub middle: ResBlock,
    /// One residual block per level on the way up (index = level).
    pub up: Vec<ResBlock>,
    /// Norm before the output conv.
    pub out_norm: GroupNorm,
    /// 3×3 conv to the image's channels, zero at start.
    pub out_conv: Conv2d,
    /// Size of each time embedding.
    #[module(skip)]
    pub time_dim: usize,
    /// Multiplier of t in the time embedding.
    #[module(skip)]
    pub time_scale: f64,
    /// `[C, H, W]` of one sample.
    #[module(skip)]
    pub sample_shape: [usize; 3],
}

/// Channels at `level` for base width `width`.
pub fn level_channels(width: usize, level: usize) -> usize {
    width << level
}

impl Unet {
    /// A fresh U-Net; the caller has checked the spec (see [`NetSpec::new`]).
    pub fn new(spec: &NetSpec, device: &Device) -> Self {
        let (width, levels) = (spec.width, spec.depth);
        let channels = spec.sample_shape[0];
        let cond_dim = 4 * width;
        let ch = |level| level_channels(width, level);
        let down = (0..levels)
            .map(|l| {
                ResBlock::new(
                    if l == 0 { width } else { ch(l - 1) },
                    ch(l),
                    cond_dim,
                    device,
                )
            })
            .collect();
        let downsample = (0..levels - 1)
            .map(|l| conv3x3(ch(l), ch(l), device))
            .collect();
        let up = (0..levels)
            .map(|l| {
                let from_below = if l + 1 == levels { ch(l) } else { ch(l + 1) };
                ResBlock::new(from_below + ch(l), ch(l), cond_dim, device)
            })
            .collect();
        let deepest = ch(levels - 1);
        Unet {
            class_embed: EmbeddingConfig::new(spec.classes + 1, spec.class_dim).init(device),
            cond: LinearConfig::new(2 * spec.time_dim + spec.class_dim, cond_dim).init(device),
            stem: conv3x3(channels, width, device),
            down,
            downsample,
            middle: ResBlock::new(deepest, deepest, cond_dim, device),
            up,
            out_norm: GroupNormConfig::new(GROUPS, width).init(device),
            out_conv: Conv2dConfig::new([width, channels], [3, 3])
                .with_initializer(Initializer::Zeros)
                .init(device),
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
        let class = embedding(&self.class_embed, class);
        let emb_t = sinusoidal(t, self.time_dim, self.time_scale);
        let emb_h = sinusoidal(h, self.time_dim, self.time_scale);
        let cond = linear(Dual::cat(vec![emb_t, emb_h, class], 1), &self.cond).silu();

        let x = z.reshape([n, c, height, width]);
        let mut x = conv2d(x, &self.stem, 1, 1);
        let mut skips = Vec::with_capacity(self.down.len());
        for (level, block) in self.down.iter().enumerate() {
            x = block.forward(x, &cond);
            skips.push(x.clone());
            if let Some(conv) = self.downsample.get(level) {
                x = conv2d(x, conv, 2, 1);
            }
        }
        x = self.middle.forward(x, &cond);
        for (level, block) in self.up.iter().enumerate().rev() {
            if level + 1 < self.up.len() {
                x = upsample2(x);
            }
            let skip = skips.pop().expect("one skip per level");
            x = block.forward(Dual::cat(vec![x, skip], 1), &cond);
        }
        let x = conv2d(group_norm(x, &self.out_norm).silu(), &self.out_conv, 1, 1);
        x.reshape([n, c * height * width])
    }
}
