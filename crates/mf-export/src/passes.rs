//! Precision passes over a traced float32 graph, blind to the architecture.
//!
//! A *layer* is any `MatMul` or `Conv` node whose weight (second input) is a float32
//! initializer; its name is the node's output name, which the trace sets to the layer's module
//! path. [`fp16`] stores those weights as float16 behind a `Cast`; [`int8`] wraps the chosen
//! layers in QuantizeLinear/DequantizeLinear: activations uint8 per tensor (calibrated),
//! weights int8 per output channel, symmetric (zero point 0, codes in [−127, 127], or [−64, 64]
//! for 7-bit weights), the convention of `mf-kernels`. A MatMul keeps its float bias (`Add`), the form the native
//! engine fuses into its int8 GEMM. A Conv also gets its output quantized (calibrated) and its
//! bias in int32 at the scale input × weight, the full QDQ form that ONNX Runtime turns into
//! `QLinearConv`.
use std::collections::{HashMap, HashSet};

use anyhow::{Context, bail, ensure};
use half::f16;
use mf_core::onnx::{self, AttributeType, DataType};
use mf_kernels::QuantParams;
use mf_kernels::quant::{WeightBits, quantize_weights_in};

/// A layer of the graph: a MatMul or Conv with constant float32 weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// The layer's name (its node's output).
    pub name: String,
    /// `MatMul` or `Conv`.
    pub op: String,
    /// The graph value it reads.
    pub input: String,
    /// Its weight initializer.
    pub weight: String,
}

/// The layers of a graph, in graph order.
pub fn layers(model: &onnx::ModelProto) -> Vec<Layer> {
    let Some(graph) = &model.graph else {
        return Vec::new();
    };
    let floats: HashSet<&str> = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == DataType::Float as i32)
        .map(|t| t.name.as_str())
        .collect();
    graph
        .node
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "MatMul" | "Conv"))
        .filter(|n| n.input.len() >= 2 && floats.contains(n.input[1].as_str()))
        .map(|n| Layer {
            name: n.output[0].clone(),
            op: n.op_type.clone(),
            input: n.input[0].clone(),
            weight: n.input[1].clone(),
        })
        .collect()
}

/// The largest float16 round-trip error of a layer's weights, relative to its largest
/// weight, that the fp16 pass accepts (float16 keeps 11 significant bits: 4.9e-4 for values in
/// its normal range).
pub const FP16_WEIGHT_TOLERANCE: f64 = 1e-3;

/// Stores the weights of `only` (every layer when `None`) as float16, each cast back to
/// float32 in the graph: half the bytes, float32 arithmetic on every runtime. A layer whose
/// weights float16 cannot hold (beyond its range, or so small that they flush towards zero:
/// round-trip error above [`FP16_WEIGHT_TOLERANCE`] of the largest weight) keeps float32
/// weights; the returned list names each such layer and why.
pub fn fp16(model: &mut onnx::ModelProto, only: Option<&HashSet<String>>) -> Vec<String> {
    let chosen: Vec<Layer> = layers(model)
        .into_iter()
        .filter(|l| only.is_none_or(|set| set.contains(&l.name)))
        .collect();
    let graph = model.graph.as_mut().expect("a traced model has a graph");
    let mut casts = Vec::new();
    let mut kept = Vec::new();
    for layer in chosen {
        let Some(t) = graph
            .initializer
            .iter_mut()
            .find(|t| t.name == layer.weight)
        else {
            continue;
        };
        let weights = f32s(t);
        let halves: Vec<f16> = weights.iter().map(|&v| f16::from_f32(v)).collect();
        let largest = weights.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
        let error = weights
            .iter()
            .zip(&halves)
            .fold(0f64, |m, (&w, h)| m.max((h.to_f64() - w as f64).abs()));
        // Infinite or NaN (overflow) counts as beyond the tolerance.
        let holds = error <= FP16_WEIGHT_TOLERANCE * largest;
        if !holds {
            kept.push(format!(
                "{} (largest |weight| {largest:.2e}: float16 round trip off by {:.0}%)",
                layer.name,
                100.0 * error / largest
            ));
            continue;
        }
        t.name = format!("{}.f16", layer.weight);
        t.data_type = DataType::Float16 as i32;
        t.raw_data = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        casts.push(node(
            "Cast",
            &[&t.name],
            &layer.weight,
            vec![int_attr("to", DataType::Float as i64)],
        ));
    }
    graph.node.splice(0..0, casts);
    kept
}

/// Wraps every layer named in `activations` in QDQ, with that layer's input quantization
/// (key: the layer's name) and, for a Conv, its output quantization (key: `<name>.output`);
/// weight codes span `bits`.
pub fn int8(
    model: &mut onnx::ModelProto,
    activations: &HashMap<String, QuantParams>,
    bits: WeightBits,
) -> anyhow::Result<()> {
    let chosen: Vec<Layer> = layers(model)
        .into_iter()
        .filter(|l| activations.contains_key(&l.name))
        .collect();
    let graph = model.graph.as_mut().expect("a traced model has a graph");
    for layer in chosen {
        let input = activations[&layer.name];
        let at = graph
            .node
            .iter()
            .position(|n| n.output.first() == Some(&layer.name))
            .context("a layer's node")?;
        let weight = graph
            .initializer
            .iter()
            .find(|t| t.name == layer.weight)
            .context("a layer's weight")?;
        let (codes, scales, axis) = quantize(&layer, weight, bits)?;
        let dims = weight.dims.clone();
        let name = &layer.name;
        let channels = vec![scales.len() as i64];
        let (a_scale, a_zero) = per_tensor(graph, name, "input", input);
        let w_q = constant(
            graph,
            name,
            "weight_q",
            DataType::Int8,
            dims,
            codes.iter().map(|&c| c as u8).collect(),
        );
        let w_scale = constant(
            graph,
            name,
            "weight_scale",
            DataType::Float,
            channels.clone(),
            bytes(&scales),
        );
        let w_zero = constant(
            graph,
            name,
            "weight_zero_point",
            DataType::Int8,
            channels,
            vec![0; scales.len()],
        );
        let (q, dq, wdq) = (
            format!("{name}.input_q"),
            format!("{name}.input_dq"),
            format!("{name}.weight_dq"),
        );
        let mut before = vec![
            node(
                "QuantizeLinear",
                &[&layer.input, &a_scale, &a_zero],
                &q,
                vec![],
            ),
            node("DequantizeLinear", &[&q, &a_scale, &a_zero], &dq, vec![]),
            node(
                "DequantizeLinear",
                &[&w_q, &w_scale, &w_zero],
                &wdq,
                vec![int_attr("axis", axis)],
            ),
        ];
        let mut after = Vec::new();
        if layer.op == "Conv"
            && let Some(&out) = activations.get(&format!("{name}.output"))
        {
            before.extend(int32_bias(graph, at, name, input.scale, &scales)?);
            after = quantized_output(graph, at, name, out);
        }
        let target = &mut graph.node[at];
        target.input[0] = dq;
        target.input[1] = wdq;
        graph.node.splice(at + 1..at + 1, after);
        graph.node.splice(at..at, before);
        let still_used = graph.node.iter().any(|n| n.input.contains(&layer.weight));
        if !still_used {
            graph.initializer.retain(|t| t.name != layer.weight);
        }
    }
    Ok(())
}

/// Replaces the float bias of the Conv at `at` by int32 codes at scale `s_x · s_w[c]` behind a
/// DequantizeLinear (the form QLinearConv takes); returns that node (none without a bias).
fn int32_bias(
    graph: &mut onnx::GraphProto,
    at: usize,
    name: &str,
    input_scale: f32,
    weight_scales: &[f32],
) -> anyhow::Result<Option<onnx::NodeProto>> {
    let Some(bias) = graph.node[at]
        .input
        .get(2)
        .filter(|b| !b.is_empty())
        .cloned()
    else {
        return Ok(None);
    };
    let values = f32s(
        graph
            .initializer
            .iter()
            .find(|t| t.name == bias)
            .context("a conv bias")?,
    );
    let scales: Vec<f32> = weight_scales.iter().map(|s| s * input_scale).collect();
    let codes: Vec<u8> = values
        .iter()
        .zip(&scales)
        .map(|(v, s)| {
            if *s > 0.0 {
                (v / s).round_ties_even() as i32
            } else {
                0
            }
        })
        .flat_map(i32::to_le_bytes)
        .collect();
    let c = vec![scales.len() as i64];
    let b_q = constant(graph, name, "bias_q", DataType::Int32, c.clone(), codes);
    let b_scale = constant(
        graph,
        name,
        "bias_scale",
        DataType::Float,
        c.clone(),
        bytes(&scales),
    );
    let b_zero = constant(
        graph,
        name,
        "bias_zero_point",
        DataType::Int32,
        c,
        vec![0; 4 * scales.len()],
    );
    let b_dq = format!("{name}.bias_dq");
    graph.node[at].input[2] = b_dq.clone();
    Ok(Some(node(
        "DequantizeLinear",
        &[&b_q, &b_scale, &b_zero],
        &b_dq,
        vec![int_attr("axis", 0)],
    )))
}

/// Renames the output of the node at `at` to `<name>.raw` and returns the QuantizeLinear →
/// DequantizeLinear pair that gives `name` back, quantized with `out`.
fn quantized_output(
    graph: &mut onnx::GraphProto,
    at: usize,
    name: &str,
    out: QuantParams,
) -> Vec<onnx::NodeProto> {
    let (o_scale, o_zero) = per_tensor(graph, name, "output", out);
    let raw = format!("{name}.raw");
    let oq = format!("{name}.output_q");
    graph.node[at].output[0] = raw.clone();
    vec![
        node("QuantizeLinear", &[&raw, &o_scale, &o_zero], &oq, vec![]),
        node("DequantizeLinear", &[&oq, &o_scale, &o_zero], name, vec![]),
    ]
}

/// Adds a per-tensor uint8 quantization as `<layer>.<what>_scale` and
/// `<layer>.<what>_zero_point`; returns their names.
fn per_tensor(
    graph: &mut onnx::GraphProto,
    layer: &str,
    what: &str,
    p: QuantParams,
) -> (String, String) {
    let scale = constant(
        graph,
        layer,
        &format!("{what}_scale"),
        DataType::Float,
        vec![],
        bytes(&[p.scale]),
    );
    let zero = constant(
        graph,
        layer,
        &format!("{what}_zero_point"),
        DataType::Uint8,
        vec![],
        vec![p.zero_point],
    );
    (scale, zero)
}

/// Adds the initializer `<layer>.<suffix>`; returns its name.
fn constant(
    graph: &mut onnx::GraphProto,
    layer: &str,
    suffix: &str,
    elem: DataType,
    dims: Vec<i64>,
    raw_data: Vec<u8>,
) -> String {
    let name = format!("{layer}.{suffix}");
    graph.initializer.push(onnx::TensorProto {
        name: name.clone(),
        dims,
        data_type: elem as i32,
        raw_data,
        ..Default::default()
    });
    name
}

/// Little-endian bytes of f32 values.
fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A layer's int8 weight codes (in the weight's own layout), per-output-channel scales and
/// the axis of those channels (1 for MatMul's `[in, out]`, 0 for Conv's `[out, in, kh, kw]`).
pub fn quantize(
    layer: &Layer,
    weight: &onnx::TensorProto,
    bits: WeightBits,
) -> anyhow::Result<(Vec<i8>, Vec<f32>, i64)> {
    let values = f32s(weight);
    let dims: Vec<usize> = weight.dims.iter().map(|&d| d as usize).collect();
    match (layer.op.as_str(), dims.as_slice()) {
        ("MatMul", &[k, n]) => {
            // Rows per output channel for the kernels' rule, then back to [in, out].
            let rows: Vec<f32> = (0..n * k).map(|i| values[(i % k) * n + i / k]).collect();
            let (codes, scales) = per_row(&rows, n, k, bits)?;
            let codes = (0..k * n).map(|i| codes[(i % n) * k + i / n]).collect();
            Ok((codes, scales, 1))
        }
        ("Conv", &[o, ..]) => {
            let k = values.len() / o.max(1);
            let (codes, scales) = per_row(&values, o, k, bits)?;
            Ok((codes, scales, 0))
        }
        (op, d) => bail!(
            "layer {}: cannot quantize a {op} weight of shape {d:?}",
            layer.name
        ),
    }
}

fn per_row(
    rows: &[f32],
    n: usize,
    k: usize,
    bits: WeightBits,
) -> anyhow::Result<(Vec<i8>, Vec<f32>)> {
    let mut codes = vec![0i8; n * k];
    let mut scales = vec![0f32; n];
    quantize_weights_in(bits, rows, n, k, &mut codes, &mut scales)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((codes, scales))
}

/// A float32 initializer's values.
pub fn f32s(t: &onnx::TensorProto) -> Vec<f32> {
    if t.raw_data.is_empty() {
        return t.float_data.clone();
    }
    t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Checks the names of `--float-layers` against the graph's layers.
pub fn check_names(model: &onnx::ModelProto, names: &[String]) -> anyhow::Result<()> {
    let all: Vec<String> = layers(model).into_iter().map(|l| l.name).collect();
    for name in names {
        ensure!(
            all.contains(name),
            "--float-layers: no layer {name:?}; this network's layers are {}",
            all.join(", ")
        );
    }
    Ok(())
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<onnx::AttributeProto>,
) -> onnx::NodeProto {
    onnx::NodeProto {
        op_type: op.into(),
        name: format!("{op}:{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn int_attr(name: &str, value: i64) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph of two MatMul layers reading `x`, with the given weights (2×2 each).
    fn two_layers(a: [f32; 4], b: [f32; 4]) -> onnx::ModelProto {
        let weight = |name: &str, w: [f32; 4]| onnx::TensorProto {
            name: name.into(),
            dims: vec![2, 2],
            data_type: DataType::Float as i32,
            raw_data: bytes(&w),
            ..Default::default()
        };
        onnx::ModelProto {
            graph: Some(onnx::GraphProto {
                node: vec![
                    node("MatMul", &["x", "a.w"], "a", vec![]),
                    node("MatMul", &["a", "b.w"], "b", vec![]),
                ],
                initializer: vec![weight("a.w", a), weight("b.w", b)],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn types(model: &onnx::ModelProto) -> Vec<(String, i32)> {
        let graph = model.graph.as_ref().unwrap();
        graph
            .initializer
            .iter()
            .map(|t| (t.name.clone(), t.data_type))
            .collect()
    }

    #[test]
    fn fp16_halves_weights_it_can_hold_and_keeps_the_rest() {
        // Layer a: ordinary weights. Layer b: an EMA barely off its zero initialisation
        // (1e-8, under float16's smallest subnormal 6e-8): it would flush to zero.
        let mut m = two_layers([0.5, -1.25, 3.0, 0.001], [1e-8, -2e-8, 3e-8, 0.0]);
        let kept = fp16(&mut m, None);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(
            kept[0].starts_with("b (largest |weight| 3.00e-8"),
            "{kept:?}"
        );
        let types = types(&m);
        assert!(types.contains(&("a.w.f16".into(), DataType::Float16 as i32)));
        assert!(types.contains(&("b.w".into(), DataType::Float as i32)));
        let casts: Vec<_> = m
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter(|n| n.op_type == "Cast")
            .collect();
        assert_eq!(casts.len(), 1);
        assert_eq!(casts[0].output, vec!["a.w".to_string()]);

        // Beyond float16's range (65504) is kept too; within it, halved.
        let mut big = two_layers([1e5, 1.0, 1.0, 1.0], [6e4, 1.0, -1.0, 0.0]);
        let kept = fp16(&mut big, None);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].starts_with("a "), "{kept:?}");
    }
}
