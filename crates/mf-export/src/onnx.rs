//! A small ONNX graph builder over the protobuf types `tract_onnx::pb` exposes.
use std::collections::HashMap;

use half::f16;
use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

/// The opset every exported graph declares.
pub const OPSET: i64 = 17;

/// Element types the exporter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// float32
    F32,
    /// float16
    F16,
    /// int64
    I64,
    /// int8
    I8,
    /// uint8
    U8,
}

impl Elem {
    fn data_type(self) -> DataType {
        match self {
            Elem::F32 => DataType::Float,
            Elem::F16 => DataType::Float16,
            Elem::I64 => DataType::Int64,
            Elem::I8 => DataType::Int8,
            Elem::U8 => DataType::Uint8,
        }
    }
}

/// A dimension of a graph input or output: fixed, or the symbolic batch `N`.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    /// The dynamic batch size.
    Batch,
    /// A fixed size.
    Fixed(usize),
}

/// Accumulates nodes, initializers, inputs and outputs, with unique value names.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    counts: HashMap<String, usize>,
}

/// An attribute value.
pub enum Attr {
    /// A single integer.
    Int(i64),
    /// A single float.
    Float(f32),
    /// A list of integers.
    Ints(Vec<i64>),
}

impl Graph {
    /// A fresh name starting with `stem`.
    pub fn name(&mut self, stem: &str) -> String {
        let n = self.counts.entry(stem.to_string()).or_default();
        *n += 1;
        if *n == 1 {
            stem.to_string()
        } else {
            format!("{stem}_{n}")
        }
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem, dims));
        name.to_string()
    }

    /// Declares a graph output (an existing value renamed through Identity).
    pub fn output(&mut self, value: &str, name: &str, elem: Elem, dims: &[Dim]) {
        self.node("Identity", &[value], name, &[]);
        self.outputs.push(value_info(name, elem, dims));
    }

    /// Adds an f32 initializer.
    pub fn f32s(&mut self, stem: &str, dims: &[usize], data: &[f32]) -> String {
        self.raw(
            stem,
            Elem::F32,
            dims,
            data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// Adds an f16 initializer from f32 values (rounded to nearest).
    pub fn f16s(&mut self, stem: &str, dims: &[usize], data: &[f32]) -> String {
        let bytes = data
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        self.raw(stem, Elem::F16, dims, bytes)
    }

    /// Adds an int64 initializer.
    pub fn i64s(&mut self, stem: &str, dims: &[usize], data: &[i64]) -> String {
        self.raw(
            stem,
            Elem::I64,
            dims,
            data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// Adds an int8 initializer.
    pub fn i8s(&mut self, stem: &str, dims: &[usize], data: &[i8]) -> String {
        self.raw(
            stem,
            Elem::I8,
            dims,
            data.iter().map(|&v| v as u8).collect(),
        )
    }

    /// Adds a uint8 initializer.
    pub fn u8s(&mut self, stem: &str, dims: &[usize], data: &[u8]) -> String {
        self.raw(stem, Elem::U8, dims, data.to_vec())
    }

    fn raw(&mut self, stem: &str, elem: Elem, dims: &[usize], raw_data: Vec<u8>) -> String {
        let name = self.name(stem);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: elem.data_type() as i32,
            raw_data,
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output named after `stem`; returns the output's name.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        stem: &str,
        attrs: &[(&str, Attr)],
    ) -> String {
        let out = self.name(stem);
        let node_name = self.name(&format!("{op}_{stem}"));
        self.nodes.push(pb::NodeProto {
            op_type: op.to_string(),
            name: node_name,
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs
                .iter()
                .map(|(name, value)| attribute(name, value))
                .collect(),
            ..Default::default()
        });
        out
    }

    /// Serializes the model with the given metadata.
    pub fn encode(self, graph_name: &str, metadata: &[(&str, String)]) -> Vec<u8> {
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "mf-export".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(pb::GraphProto {
                name: graph_name.into(),
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto {
                    key: k.to_string(),
                    value: v.clone(),
                })
                .collect(),
            ..Default::default()
        };
        model.encode_to_vec()
    }
}

fn attribute(name: &str, value: &Attr) -> pb::AttributeProto {
    use pb::attribute_proto::AttributeType;
    let mut a = pb::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.i = *i;
            a.r#type = AttributeType::Int as i32;
        }
        Attr::Float(f) => {
            a.f = *f;
            a.r#type = AttributeType::Float as i32;
        }
        Attr::Ints(v) => {
            a.ints = v.clone();
            a.r#type = AttributeType::Ints as i32;
        }
    }
    a
}

fn value_info(name: &str, elem: Elem, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => Value::DimParam("N".into()),
                Dim::Fixed(n) => Value::DimValue(*n as i64),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem.data_type() as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
