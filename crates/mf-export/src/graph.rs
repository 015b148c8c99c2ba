//! The ONNX graph of an MLP velocity network, in fp32, fp16 or int8 QDQ form.
//!
//! Inputs `z` (float `[N, C, H, W]` or `[N, D]`), `t`, `r` (float `[N]`), `class` (int64 `[N]`);
//! output `u`, shaped like `z`. The time and class embeddings are in the graph:
//! `x = [z | sin/cos(t·ω) | sin/cos((t − r)·ω) | table[class]]`, then `MatMul + Add` layers with
//! SiLU (`Sigmoid`, `Mul`) between them, and for x-prediction `u = (z − x̂) / max(t, 0.05)`.
//! The int8 form wraps each quantized `MatMul` in QuantizeLinear/DequantizeLinear pairs:
//! activations uint8 per tensor, weights int8 per output channel, symmetric, f32 bias; the
//! convention of `mf-kernels`, and the pattern ONNX Runtime fuses into integer kernels.
use mf_kernels::QuantParams;
use mf_kernels::quant::quantize_weights_symmetric;
use mf_train::model::{NetSpec, Prediction, T_FLOOR};

use crate::onnx::{Attr, Dim, Elem, Graph};
use crate::weights::{Dense, MlpWeights};

/// How one layer is computed in the int8 graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerMode {
    /// Float weights and arithmetic.
    Float,
    /// QDQ with this activation quantization.
    Int8(QuantParams),
}

/// The graph's numeric form.
#[derive(Debug, Clone, PartialEq)]
pub enum Precision {
    /// Everything in float32.
    Fp32,
    /// Layers in float16 behind Casts; embeddings and the x-prediction division in float32.
    Fp16,
    /// Per-layer choice between float32 and int8 QDQ.
    Int8(Vec<LayerMode>),
}

impl Precision {
    /// The name the card uses.
    pub fn name(&self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8(_) => "int8",
        }
    }
}

/// ONNX `Cast` target codes.
const TO_FLOAT: i64 = 1;
const TO_FLOAT16: i64 = 10;

/// Builds the graph; `metadata` goes into `metadata_props`.
pub fn build(weights: &MlpWeights, precision: &Precision, metadata: &[(&str, String)]) -> Vec<u8> {
    let spec = &weights.spec;
    let dims = spec.dims();
    let mut g = Graph::default();
    let inputs = declare_inputs(&mut g, spec);
    let flat_shape = g.i64s("flat_shape", &[2], &[-1, dims as i64]);
    let z_flat = g.node("Reshape", &[&inputs.z, &flat_shape], "z_flat", &[]);
    let Conditioning {
        t_col,
        emb_t,
        emb_h,
        class_emb: cls,
    } = conditioning(
        &mut g,
        &inputs,
        spec,
        &weights.frequencies,
        &weights.class_table,
    );
    let mut x = g.node(
        "Concat",
        &[&z_flat, &emb_t, &emb_h, &cls],
        "features",
        &[("axis", Attr::Int(1))],
    );

    if *precision == Precision::Fp16 {
        x = g.node(
            "Cast",
            &[&x],
            "features_f16",
            &[("to", Attr::Int(TO_FLOAT16))],
        );
    }
    let last = weights.layers.len() - 1;
    for (i, layer) in weights.layers.iter().enumerate() {
        let stem = format!("layers.{i}");
        let mode = match precision {
            Precision::Int8(modes) => modes[i],
            _ => LayerMode::Float,
        };
        x = dense(
            &mut g,
            &x,
            layer,
            mode,
            *precision == Precision::Fp16,
            &stem,
        );
        if i < last {
            let s = g.node("Sigmoid", &[&x], &format!("{stem}.sigmoid"), &[]);
            x = g.node("Mul", &[&x, &s], &format!("{stem}.silu"), &[]);
        }
    }
    if *precision == Precision::Fp16 {
        x = g.node("Cast", &[&x], "out_f32", &[("to", Attr::Int(TO_FLOAT))]);
    }
    let u_flat = match spec.prediction {
        Prediction::U => x,
        Prediction::X => x_to_u(&mut g, &z_flat, &x, &t_col),
    };
    let out_shape: Vec<i64> = std::iter::once(-1)
        .chain(spec.sample_shape.iter().map(|&d| d as i64))
        .collect();
    let out_shape = g.i64s("out_shape", &[out_shape.len()], &out_shape);
    let u = g.node("Reshape", &[&u_flat, &out_shape], "u_shaped", &[]);
    g.output(&u, "u", Elem::F32, &inputs.z_dims);
    g.encode("meanflow", metadata)
}

/// The graph inputs every velocity network takes.
pub(crate) struct Inputs {
    /// `z`, float `[N, sample_shape…]`.
    pub z: String,
    /// `z`'s dimensions (also the output's).
    pub z_dims: Vec<Dim>,
    /// `t`, float `[N]`.
    t: String,
    /// `r`, float `[N]`.
    r: String,
    /// `class`, int64 `[N]`.
    class: String,
}

/// Declares `z`, `t`, `r` and `class`.
pub(crate) fn declare_inputs(g: &mut Graph, spec: &NetSpec) -> Inputs {
    let z_dims: Vec<Dim> = std::iter::once(Dim::Batch)
        .chain(spec.sample_shape.iter().map(|&d| Dim::Fixed(d)))
        .collect();
    Inputs {
        z: g.input("z", Elem::F32, &z_dims),
        z_dims,
        t: g.input("t", Elem::F32, &[Dim::Batch]),
        r: g.input("r", Elem::F32, &[Dim::Batch]),
        class: g.input("class", Elem::I64, &[Dim::Batch]),
    }
}

/// What the network is conditioned on, as graph values.
pub(crate) struct Conditioning {
    /// `t` as a column `[N, 1]`.
    pub t_col: String,
    /// Sinusoidal embedding of t `[N, time_dim]`.
    pub emb_t: String,
    /// Sinusoidal embedding of h = t − r `[N, time_dim]`.
    pub emb_h: String,
    /// The class's row of the embedding table `[N, class_dim]`.
    pub class_emb: String,
}

/// The time embeddings (`frequencies`, `time_dim / 2` of them) and the class embedding
/// (`class_table`, `[classes + 1, class_dim]`).
pub(crate) fn conditioning(
    g: &mut Graph,
    inputs: &Inputs,
    spec: &NetSpec,
    frequencies: &[f32],
    class_table: &[f32],
) -> Conditioning {
    let axes = g.i64s("axis1", &[1], &[1]);
    let t_col = g.node("Unsqueeze", &[&inputs.t, &axes], "t_col", &[]);
    let h = g.node("Sub", &[&inputs.t, &inputs.r], "h", &[]);
    let h_col = g.node("Unsqueeze", &[&h, &axes], "h_col", &[]);
    let freqs = g.f32s("time_frequencies", &[1, frequencies.len()], frequencies);
    let emb_t = embedding(g, &t_col, &freqs, "emb_t");
    let emb_h = embedding(g, &h_col, &freqs, "emb_h");
    let table = g.f32s(
        "class_table",
        &[spec.classes + 1, spec.class_dim],
        class_table,
    );
    let class_emb = g.node(
        "Gather",
        &[&table, &inputs.class],
        "class_emb",
        &[("axis", Attr::Int(0))],
    );
    Conditioning {
        t_col,
        emb_t,
        emb_h,
        class_emb,
    }
}

/// x-prediction's output: u = (z − x̂) / max(t, T_FLOOR) on flattened `[N, dims]` values.
pub(crate) fn x_to_u(g: &mut Graph, z_flat: &str, xhat_flat: &str, t_col: &str) -> String {
    let floor = g.f32s("t_floor", &[1], &[T_FLOOR as f32]);
    let tau = g.node("Max", &[t_col, &floor], "tau", &[]);
    let diff = g.node("Sub", &[z_flat, xhat_flat], "z_minus_x", &[]);
    g.node("Div", &[&diff, &tau], "u_flat", &[])
}

/// `[sin(x·ω) | cos(x·ω)]` for a column `x` `[N, 1]` and frequencies `[1, half]`.
fn embedding(g: &mut Graph, x: &str, freqs: &str, stem: &str) -> String {
    let a = g.node("Mul", &[x, freqs], &format!("{stem}.angle"), &[]);
    let s = g.node("Sin", &[&a], &format!("{stem}.sin"), &[]);
    let c = g.node("Cos", &[&a], &format!("{stem}.cos"), &[]);
    g.node("Concat", &[&s, &c], stem, &[("axis", Attr::Int(1))])
}

/// `x·Wᵀ + b` as MatMul + Add with `[in, out]` weights, float or QDQ.
fn dense(g: &mut Graph, x: &str, layer: &Dense, mode: LayerMode, fp16: bool, stem: &str) -> String {
    let (n, k) = (layer.n, layer.k);
    let transposed =
        |w: &[f32]| -> Vec<f32> { (0..k * n).map(|i| w[(i % n) * k + i / n]).collect() };
    let y = match mode {
        LayerMode::Float => {
            let w = if fp16 {
                g.f16s(
                    &format!("{stem}.weight"),
                    &[k, n],
                    &transposed(&layer.weight),
                )
            } else {
                g.f32s(
                    &format!("{stem}.weight"),
                    &[k, n],
                    &transposed(&layer.weight),
                )
            };
            g.node("MatMul", &[x, &w], &format!("{stem}.matmul"), &[])
        }
        LayerMode::Int8(input) => {
            let (codes, scales) = quantize_layer(layer);
            let codes_t: Vec<i8> = (0..k * n).map(|i| codes[(i % n) * k + i / n]).collect();
            let a_scale = g.f32s(&format!("{stem}.input_scale"), &[], &[input.scale]);
            let a_zero = g.u8s(
                &format!("{stem}.input_zero_point"),
                &[],
                &[input.zero_point],
            );
            let xq = g.node(
                "QuantizeLinear",
                &[x, &a_scale, &a_zero],
                &format!("{stem}.input_q"),
                &[],
            );
            let xd = g.node(
                "DequantizeLinear",
                &[&xq, &a_scale, &a_zero],
                &format!("{stem}.input_dq"),
                &[],
            );
            let wq = g.i8s(&format!("{stem}.weight_q"), &[k, n], &codes_t);
            let w_scale = g.f32s(&format!("{stem}.weight_scale"), &[n], &scales);
            let w_zero = g.i8s(&format!("{stem}.weight_zero_point"), &[n], &vec![0; n]);
            let wd = g.node(
                "DequantizeLinear",
                &[&wq, &w_scale, &w_zero],
                &format!("{stem}.weight_dq"),
                &[("axis", Attr::Int(1))],
            );
            g.node("MatMul", &[&xd, &wd], &format!("{stem}.matmul"), &[])
        }
    };
    let b = if fp16 {
        g.f16s(&format!("{stem}.bias"), &[n], &layer.bias)
    } else {
        g.f32s(&format!("{stem}.bias"), &[n], &layer.bias)
    };
    g.node("Add", &[&y, &b], &format!("{stem}.out"), &[])
}

/// int8 codes `[out, in]` and per-output-channel scales, by `mf-kernels`' rule.
pub fn quantize_layer(layer: &Dense) -> (Vec<i8>, Vec<f32>) {
    let mut codes = vec![0i8; layer.n * layer.k];
    let mut scales = vec![0f32; layer.n];
    quantize_weights_symmetric(&layer.weight, layer.n, layer.k, &mut codes, &mut scales)
        .expect("shapes match");
    (codes, scales)
}
