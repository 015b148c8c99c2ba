//! The ONNX graph of a U-Net velocity network (`mf_train::model::Unet`), fp32 or with float16
//! weights.
//!
//! Same inputs and output as the MLP graph (`z` `[N, C, H, W]`, `t`, `r`, `class` → `u`). Ops:
//! `Conv` (3×3, stride 1 or 2; 1×1 skips), GroupNorm as `Reshape → InstanceNormalization →
//! Reshape → Mul → Add` (the form ONNX Runtime and tract both run), SiLU as `Sigmoid · x`,
//! nearest upsampling as `Reshape → Expand → Reshape`, `Concat` for the skips, and the MLP
//! graph's time and class embeddings. In the fp16 form every conv and linear weight is stored
//! as float16 and cast to float32 in the graph: half the file, float32 arithmetic (convs and
//! InstanceNormalization in float16 are not available on every CPU runtime).
use mf_train::burn::nn::GroupNorm;
use mf_train::burn::nn::conv::Conv2d;
use mf_train::model::dual::embedding_frequencies;
use mf_train::model::unet::{ResBlock, level_channels};
use mf_train::model::{NetSpec, Prediction, VelocityNet};

use crate::graph::{Conditioning, conditioning, declare_inputs, x_to_u};
use crate::onnx::{Attr, Elem, Graph};
use crate::weights::{Dense, floats};

/// ONNX `Cast` target code for float32.
const TO_FLOAT: i64 = 1;

/// A conv layer: weight `[out, in, k, k]` and bias `[out]`.
#[derive(Debug, Clone)]
pub struct ConvWeights {
    /// Row-major `[out, in, k, k]`.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
    /// `[out, in, k, k]`.
    pub shape: [usize; 4],
}

impl ConvWeights {
    fn from_conv(conv: &Conv2d) -> Self {
        let w = conv.weight.val();
        let shape = w.dims();
        ConvWeights {
            weight: floats(w),
            bias: conv
                .bias
                .as_ref()
                .map(|b| floats(b.val()))
                .unwrap_or_else(|| vec![0.0; shape[0]]),
            shape,
        }
    }
}

/// A GroupNorm's affine parameters and settings.
#[derive(Debug, Clone)]
pub struct NormWeights {
    /// Per-channel scale γ.
    pub gamma: Vec<f32>,
    /// Per-channel shift β.
    pub beta: Vec<f32>,
    /// Number of groups.
    pub groups: usize,
    /// ε added to the variance.
    pub epsilon: f32,
}

impl NormWeights {
    fn from_norm(norm: &GroupNorm) -> Self {
        let c = norm.num_channels;
        NormWeights {
            gamma: norm
                .gamma
                .as_ref()
                .map(|g| floats(g.val()))
                .unwrap_or_else(|| vec![1.0; c]),
            beta: norm
                .beta
                .as_ref()
                .map(|b| floats(b.val()))
                .unwrap_or_else(|| vec![0.0; c]),
            groups: norm.num_groups,
            epsilon: norm.epsilon as f32,
        }
    }
}

/// One residual block's weights.
#[derive(Debug, Clone)]
pub struct BlockWeights {
    norm1: NormWeights,
    conv1: ConvWeights,
    cond: Dense,
    norm2: NormWeights,
    conv2: ConvWeights,
    skip: Option<ConvWeights>,
}

impl BlockWeights {
    fn from_block(b: &ResBlock) -> Self {
        BlockWeights {
            norm1: NormWeights::from_norm(&b.norm1),
            conv1: ConvWeights::from_conv(&b.conv1),
            cond: Dense::from_linear(&b.cond),
            norm2: NormWeights::from_norm(&b.norm2),
            conv2: ConvWeights::from_conv(&b.conv2),
            skip: b.skip.as_ref().map(ConvWeights::from_conv),
        }
    }
}

/// Everything the graph needs from a trained U-Net.
#[derive(Debug, Clone)]
pub struct UnetWeights {
    /// The network's description.
    pub spec: NetSpec,
    class_table: Vec<f32>,
    frequencies: Vec<f32>,
    cond: Dense,
    stem: ConvWeights,
    down: Vec<BlockWeights>,
    downsample: Vec<ConvWeights>,
    middle: BlockWeights,
    up: Vec<BlockWeights>,
    out_norm: NormWeights,
    out_conv: ConvWeights,
}

impl UnetWeights {
    /// Reads the weights of a U-Net network (any device); `None` for other architectures.
    pub fn from_net(net: &VelocityNet) -> Option<Self> {
        let u = net.unet.as_ref()?;
        Some(UnetWeights {
            spec: net.spec.clone(),
            class_table: floats(u.class_embed.weight.val()),
            frequencies: embedding_frequencies(net.spec.time_dim, net.spec.time_scale)
                .iter()
                .map(|&f| f as f32)
                .collect(),
            cond: Dense::from_linear(&u.cond),
            stem: ConvWeights::from_conv(&u.stem),
            down: u.down.iter().map(BlockWeights::from_block).collect(),
            downsample: u.downsample.iter().map(ConvWeights::from_conv).collect(),
            middle: BlockWeights::from_block(&u.middle),
            up: u.up.iter().map(BlockWeights::from_block).collect(),
            out_norm: NormWeights::from_norm(&u.out_norm),
            out_conv: ConvWeights::from_conv(&u.out_conv),
        })
    }
}

/// Builds the graph with float16 weights when `fp16`; `metadata` goes into `metadata_props`.
pub fn build(weights: &UnetWeights, fp16: bool, metadata: &[(&str, String)]) -> Vec<u8> {
    let spec = &weights.spec;
    let [c, height, width] = [
        spec.sample_shape[0],
        spec.sample_shape[1],
        spec.sample_shape[2],
    ];
    let dims = c * height * width;
    let mut b = Builder {
        g: Graph::default(),
        fp16,
    };
    let g = &mut b.g;
    let inputs = declare_inputs(g, spec);
    let Conditioning {
        t_col,
        emb_t,
        emb_h,
        class_emb,
    } = conditioning(g, &inputs, spec, &weights.frequencies, &weights.class_table);
    let features = g.node(
        "Concat",
        &[&emb_t, &emb_h, &class_emb],
        "cond_features",
        &[("axis", Attr::Int(1))],
    );
    let cond = b.linear(&features, &weights.cond, "cond");
    let cond = b.silu(&cond, "cond");

    let mut x = b.conv(&inputs.z, &weights.stem, 1, "stem");
    let mut skips = Vec::new();
    let levels = weights.down.len();
    for (level, block) in weights.down.iter().enumerate() {
        let size = [height >> level, width >> level];
        x = b.block(&x, &cond, block, size, &format!("down.{level}"));
        skips.push(x.clone());
        if let Some(conv) = weights.downsample.get(level) {
            x = b.conv(&x, conv, 2, &format!("downsample.{level}"));
        }
    }
    let deepest = [height >> (levels - 1), width >> (levels - 1)];
    x = b.block(&x, &cond, &weights.middle, deepest, "middle");
    for (level, block) in weights.up.iter().enumerate().rev() {
        let size = [height >> level, width >> level];
        if level + 1 < levels {
            let channels = level_channels(spec.width, level + 1);
            x = b.upsample(
                &x,
                channels,
                [size[0] / 2, size[1] / 2],
                &format!("up.{level}"),
            );
        }
        let skip = skips.pop().expect("one skip per level");
        let joined = b.g.node(
            "Concat",
            &[&x, &skip],
            &format!("up.{level}.concat"),
            &[("axis", Attr::Int(1))],
        );
        x = b.block(&joined, &cond, block, size, &format!("up.{level}"));
    }
    let x = b.group_norm(&x, &weights.out_norm, [height, width], "out_norm");
    let x = b.silu(&x, "out_norm");
    let x = b.conv(&x, &weights.out_conv, 1, "out_conv");

    let g = &mut b.g;
    let u = match spec.prediction {
        Prediction::U => x,
        Prediction::X => {
            let flat = g.i64s("flat_shape", &[2], &[-1, dims as i64]);
            let z_flat = g.node("Reshape", &[&inputs.z, &flat], "z_flat", &[]);
            let x_flat = g.node("Reshape", &[&x, &flat], "xhat_flat", &[]);
            let u_flat = x_to_u(g, &z_flat, &x_flat, &t_col);
            let shape = g.i64s(
                "out_shape",
                &[4],
                &[-1, c as i64, height as i64, width as i64],
            );
            g.node("Reshape", &[&u_flat, &shape], "u_shaped", &[])
        }
    };
    g.output(&u, "u", Elem::F32, &inputs.z_dims);
    b.g.encode("meanflow", metadata)
}

/// The graph under construction and the weight precision.
struct Builder {
    g: Graph,
    fp16: bool,
}

impl Builder {
    /// A weight initializer: float32, or float16 cast to float32 in the graph.
    fn weight(&mut self, stem: &str, dims: &[usize], data: &[f32]) -> String {
        if self.fp16 {
            let w = self.g.f16s(&format!("{stem}_f16"), dims, data);
            self.g
                .node("Cast", &[&w], stem, &[("to", Attr::Int(TO_FLOAT))])
        } else {
            self.g.f32s(stem, dims, data)
        }
    }

    fn conv(&mut self, x: &str, w: &ConvWeights, stride: i64, stem: &str) -> String {
        let k = w.shape[2];
        let pad = (k / 2) as i64;
        let weight = self.weight(&format!("{stem}.weight"), &w.shape, &w.weight);
        let bias = self.g.f32s(&format!("{stem}.bias"), &[w.shape[0]], &w.bias);
        self.g.node(
            "Conv",
            &[x, &weight, &bias],
            &format!("{stem}.conv"),
            &[
                ("kernel_shape", Attr::Ints(vec![k as i64, k as i64])),
                ("pads", Attr::Ints(vec![pad; 4])),
                ("strides", Attr::Ints(vec![stride, stride])),
            ],
        )
    }

    /// `x·Wᵀ + b` with `[in, out]` weights.
    fn linear(&mut self, x: &str, layer: &Dense, stem: &str) -> String {
        let (n, k) = (layer.n, layer.k);
        let transposed: Vec<f32> = (0..k * n)
            .map(|i| layer.weight[(i % n) * k + i / n])
            .collect();
        let w = self.weight(&format!("{stem}.weight"), &[k, n], &transposed);
        let y = self
            .g
            .node("MatMul", &[x, &w], &format!("{stem}.matmul"), &[]);
        let b = self.g.f32s(&format!("{stem}.bias"), &[n], &layer.bias);
        self.g.node("Add", &[&y, &b], &format!("{stem}.out"), &[])
    }

    fn silu(&mut self, x: &str, stem: &str) -> String {
        let s = self
            .g
            .node("Sigmoid", &[x], &format!("{stem}.sigmoid"), &[]);
        self.g.node("Mul", &[x, &s], &format!("{stem}.silu"), &[])
    }

    /// GroupNorm of `[N, C, H, W]` as InstanceNormalization over `[N, G, C/G·H·W]`.
    fn group_norm(&mut self, x: &str, n: &NormWeights, size: [usize; 2], stem: &str) -> String {
        let (c, groups) = (n.gamma.len(), n.groups);
        let g = &mut self.g;
        let grouped = g.i64s(&format!("{stem}.grouped"), &[3], &[0, groups as i64, -1]);
        let xr = g.node("Reshape", &[x, &grouped], &format!("{stem}.groups"), &[]);
        let ones = g.f32s(&format!("{stem}.unit_scale"), &[groups], &vec![1.0; groups]);
        let zeros = g.f32s(&format!("{stem}.zero_bias"), &[groups], &vec![0.0; groups]);
        let normed = g.node(
            "InstanceNormalization",
            &[&xr, &ones, &zeros],
            &format!("{stem}.normalized"),
            &[("epsilon", Attr::Float(n.epsilon))],
        );
        let shape = g.i64s(
            &format!("{stem}.shape"),
            &[4],
            &[0, c as i64, size[0] as i64, size[1] as i64],
        );
        let back = g.node(
            "Reshape",
            &[&normed, &shape],
            &format!("{stem}.ungroup"),
            &[],
        );
        let gamma = g.f32s(&format!("{stem}.gamma"), &[c, 1, 1], &n.gamma);
        let beta = g.f32s(&format!("{stem}.beta"), &[c, 1, 1], &n.beta);
        let scaled = g.node("Mul", &[&back, &gamma], &format!("{stem}.scaled"), &[]);
        g.node("Add", &[&scaled, &beta], &format!("{stem}.out"), &[])
    }

    /// Nearest-neighbour ×2 of `[N, C, H, W]` (`size` = [H, W]).
    fn upsample(&mut self, x: &str, channels: usize, size: [usize; 2], stem: &str) -> String {
        let (c, h, w) = (channels as i64, size[0] as i64, size[1] as i64);
        let g = &mut self.g;
        let split = g.i64s(&format!("{stem}.split"), &[6], &[0, c, h, 1, w, 1]);
        let wide = g.i64s(&format!("{stem}.expand"), &[6], &[1, c, h, 2, w, 2]);
        let joined = g.i64s(&format!("{stem}.joined"), &[4], &[0, c, 2 * h, 2 * w]);
        let a = g.node("Reshape", &[x, &split], &format!("{stem}.cells"), &[]);
        let b = g.node("Expand", &[&a, &wide], &format!("{stem}.repeat"), &[]);
        g.node("Reshape", &[&b, &joined], &format!("{stem}.upsampled"), &[])
    }

    /// A residual block at spatial `size`.
    fn block(
        &mut self,
        x: &str,
        cond: &str,
        w: &BlockWeights,
        size: [usize; 2],
        stem: &str,
    ) -> String {
        let h = self.group_norm(x, &w.norm1, size, &format!("{stem}.norm1"));
        let h = self.silu(&h, &format!("{stem}.norm1"));
        let h = self.conv(&h, &w.conv1, 1, &format!("{stem}.conv1"));
        let shift = self.linear(cond, &w.cond, &format!("{stem}.cond"));
        let axes = self.g.i64s(&format!("{stem}.spatial_axes"), &[2], &[2, 3]);
        let shift = self
            .g
            .node("Unsqueeze", &[&shift, &axes], &format!("{stem}.shift"), &[]);
        let h = self
            .g
            .node("Add", &[&h, &shift], &format!("{stem}.conditioned"), &[]);
        let h = self.group_norm(&h, &w.norm2, size, &format!("{stem}.norm2"));
        let h = self.silu(&h, &format!("{stem}.norm2"));
        let h = self.conv(&h, &w.conv2, 1, &format!("{stem}.conv2"));
        let skip = match &w.skip {
            Some(conv) => self.conv(x, conv, 1, &format!("{stem}.skip")),
            None => x.to_string(),
        };
        self.g
            .node("Add", &[&h, &skip], &format!("{stem}.out"), &[])
    }
}
