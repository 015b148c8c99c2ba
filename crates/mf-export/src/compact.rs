//! Lowers an all-int8 QDQ graph to the compact model format of `mf_core::compact` (what the
//! firmware includes). The format holds one shape of network: the time and class embeddings,
//! concatenated with the flattened sample, then a chain of dense layers; the lowering reads
//! that shape off the graph, with the weights already quantized by the int8 pass, and refuses
//! any other graph by naming the node that does not fit.
use std::collections::HashMap;

use anyhow::{Context, bail, ensure};
use mf_core::compact::{HEADER, MAGIC, VERSION, fnv1a};
use mf_core::onnx;
use mf_kernels::QuantParams;
use mf_train::model::T_FLOOR;

use crate::passes::f32s;

/// One dense layer as the compact format stores it.
struct DenseInt8 {
    n: usize,
    k: usize,
    silu: bool,
    input: QuantParams,
    scales: Vec<f32>,
    bias: Vec<f32>,
    /// `[n, k]` row-major.
    codes: Vec<i8>,
}

/// The graph indexed by value name.
struct Index<'a> {
    producer: HashMap<&'a str, &'a onnx::NodeProto>,
    consumers: HashMap<&'a str, Vec<&'a onnx::NodeProto>>,
    constants: HashMap<&'a str, &'a onnx::TensorProto>,
}

impl<'a> Index<'a> {
    fn new(graph: &'a onnx::GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<_>> = HashMap::new();
        for n in &graph.node {
            for o in &n.output {
                producer.insert(o.as_str(), n);
            }
            for i in &n.input {
                consumers.entry(i.as_str()).or_default().push(n);
            }
        }
        let constants = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        Index {
            producer,
            consumers,
            constants,
        }
    }

    fn made_by(&self, value: &str, op: &str) -> anyhow::Result<&'a onnx::NodeProto> {
        let node = self
            .producer
            .get(value)
            .with_context(|| format!("value {value:?} has no producer"))?;
        ensure!(
            node.op_type == op,
            "the compact format holds a chain of int8 dense layers over [z | emb(t) | emb(t - r) | \
             class]; {value:?} comes from {} (node {:?}), where {op} was expected",
            node.op_type,
            node.name
        );
        Ok(node)
    }

    fn only_consumer(&self, value: &str) -> Option<&'a onnx::NodeProto> {
        match self.consumers.get(value).map(Vec::as_slice) {
            Some([one]) => Some(one),
            _ => None,
        }
    }

    fn constant(&self, name: &str) -> anyhow::Result<&'a onnx::TensorProto> {
        self.constants
            .get(name)
            .copied()
            .with_context(|| format!("{name:?} is not a constant"))
    }

    fn quant(&self, q: &onnx::NodeProto) -> anyhow::Result<QuantParams> {
        let scale = f32s(self.constant(&q.input[1])?);
        let zero = &self.constant(&q.input[2])?.raw_data;
        ensure!(
            scale.len() == 1 && zero.len() == 1,
            "{}: per-tensor activations",
            q.name
        );
        Ok(QuantParams {
            scale: scale[0],
            zero_point: zero[0],
        })
    }
}

/// Lowers `model` (every layer int8) to compact bytes; `euler` marks a flow-matching model.
pub fn lower(model: &onnx::ModelProto, euler: bool) -> anyhow::Result<Vec<u8>> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let ix = Index::new(graph);
    let sample_shape: Vec<usize> = graph
        .input
        .iter()
        .find(|i| i.name == "z")
        .and_then(|i| i.r#type.as_ref()?.tensor_type.as_ref()?.shape.as_ref())
        .map(|s| {
            s.dim
                .iter()
                .skip(1)
                .map(|d| d.dim_value.unwrap_or(0) as usize)
                .collect()
        })
        .context("the graph has no input z")?;
    ensure!(
        sample_shape.len() == 3,
        "the compact format holds image models; this one's samples are {sample_shape:?}"
    );

    let mut layers = Vec::new();
    let mut outputs = Vec::new();
    for m in graph.node.iter().filter(|n| n.op_type == "MatMul") {
        let dq = ix.made_by(&m.input[0], "DequantizeLinear")?;
        let q = ix.made_by(&dq.input[0], "QuantizeLinear")?;
        let wdq = ix.made_by(&m.input[1], "DequantizeLinear")?;
        let w = ix.constant(&wdq.input[0])?;
        let &[k, n] = w.dims.as_slice() else {
            bail!("{}: a MatMul weight of shape {:?}", m.name, w.dims);
        };
        let (k, n) = (k as usize, n as usize);
        let add = ix
            .only_consumer(&m.output[0])
            .filter(|a| a.op_type == "Add")
            .with_context(|| format!("{}: no bias Add after the MatMul", m.name))?;
        let bias = f32s(ix.constant(&add.input[1])?);
        let sigmoid = ix
            .consumers
            .get(add.output[0].as_str())
            .and_then(|c| c.iter().find(|n| n.op_type == "Sigmoid"));
        let out = match sigmoid {
            Some(s) => {
                let mul = ix
                    .only_consumer(&s.output[0])
                    .filter(|m| m.op_type == "Mul")
                    .with_context(|| format!("{}: Sigmoid without Mul", s.name))?;
                mul.output[0].clone()
            }
            None => add.output[0].clone(),
        };
        let codes = (0..n * k)
            .map(|i| w.raw_data[(i % k) * n + i / k] as i8)
            .collect();
        layers.push((
            q.input[0].clone(),
            DenseInt8 {
                n,
                k,
                silu: sigmoid.is_some(),
                input: ix.quant(q)?,
                scales: f32s(ix.constant(&wdq.input[1])?),
                bias,
                codes,
            },
        ));
        outputs.push(out);
    }
    ensure!(!layers.is_empty(), "the graph has no int8 dense layers");
    if let Some(conv) = graph.node.iter().find(|n| n.op_type == "Conv") {
        bail!(
            "the compact format holds dense layers only; this graph has a Conv ({:?})",
            conv.name
        );
    }
    for (i, (input, _)) in layers.iter().enumerate().skip(1) {
        ensure!(
            *input == outputs[i - 1],
            "the compact format holds a chain of dense layers; layer {i} does not read layer {}",
            i - 1
        );
    }

    // The features: Concat(z_flat, emb(t), emb(t − r), class table row).
    let features = ix.made_by(&layers[0].0, "Concat")?;
    ensure!(
        features.input.len() == 4,
        "the first layer reads {} concatenated parts, not [z | emb(t) | emb(t - r) | class]",
        features.input.len()
    );
    ix.made_by(&features.input[0], "Reshape")?;
    let emb_t = ix.made_by(&features.input[1], "Concat")?;
    let sin = ix.made_by(&emb_t.input[0], "Sin")?;
    let angle = ix.made_by(&sin.input[0], "Mul")?;
    let freqs = f32s(ix.constant(&angle.input[1])?);
    let gather = ix.made_by(&features.input[3], "Gather")?;
    let table = ix.constant(&gather.input[0])?;
    let &[rows, class_dim] = table.dims.as_slice() else {
        bail!("the class table has shape {:?}", table.dims);
    };
    let classes = rows as usize - 1;
    let last_out = outputs.last().expect("at least one layer");
    let x_prediction = ix
        .only_consumer(last_out)
        .is_some_and(|n| n.op_type == "Sub");

    let u16 = |v: usize, what: &str| -> anyhow::Result<[u8; 2]> {
        Ok(u16::try_from(v)
            .map_err(|_| anyhow::anyhow!("{what} {v} does not fit the compact format"))?
            .to_le_bytes())
    };
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&u16(layers.len(), "layer count")?);
    for &d in &sample_shape {
        out.extend_from_slice(&u16(d, "sample dimension")?);
    }
    out.extend_from_slice(&u16(classes, "class count")?);
    out.extend_from_slice(&u16(class_dim as usize, "class embedding size")?);
    out.extend_from_slice(&u16(freqs.len(), "time embedding size")?);
    out.push(u8::from(x_prediction));
    out.push(u8::from(euler));
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(T_FLOOR as f32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // payload length, filled below
    debug_assert_eq!(out.len(), HEADER);
    let f32s = |out: &mut Vec<u8>, v: &[f32]| {
        v.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
    };
    f32s(&mut out, &freqs);
    f32s(&mut out, &crate::passes::f32s(table));
    for (_, layer) in &layers {
        out.extend_from_slice(&u16(layer.n, "layer width")?);
        out.extend_from_slice(&u16(layer.k, "layer width")?);
        out.push(u8::from(layer.silu));
        out.push(layer.input.zero_point);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&layer.input.scale.to_le_bytes());
        f32s(&mut out, &layer.scales);
        f32s(&mut out, &layer.bias);
        out.extend(layer.codes.iter().map(|&c| c as u8));
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    let payload = (out.len() - HEADER) as u32;
    out[28..32].copy_from_slice(&payload.to_le_bytes());
    let checksum = fnv1a(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    Ok(out)
}
