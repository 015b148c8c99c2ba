//! Tracing a forward into an ONNX graph: the one place a network's graph comes from.
//!
//! A network is written once, as a forward over [`Dual`] values. Run that forward on traced
//! inputs ([`Tracer::input`], [`Tracer::labels`]) and every primitive of [`super::dual`], next
//! to its value and tangent rule, also emits its ONNX nodes; the forward's concrete values fix
//! every shape except the batch, which stays symbolic (`N`). The result is a float32 graph
//! whose layers are named by their module paths (`body.layers.0`, `unet.down.1.conv2`), which
//! mf-export turns into fp16 and int8 by passes that know nothing of the architecture.
//!
//! With taps on ([`Tracer::new`]'s `record`), every layer records the values it read, which is
//! how int8 calibration sees real activations of any network.
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use mf_core::onnx::{self, AttributeType, DataType};

use super::dual::{Dual, Labels};

/// The opset every traced graph declares.
pub const OPSET: i64 = 17;

/// The most values a tap keeps per traced forward (a strided subsample beyond it).
const TAP_VALUES: usize = 1 << 22;

/// What one layer read during a traced forward.
#[derive(Debug, Clone)]
pub struct Tap {
    /// The layer's module path (also its node's name).
    pub layer: String,
    /// The values read (all of them, or an evenly strided subsample of [`TAP_VALUES`]).
    pub values: Vec<f32>,
    /// The smallest value read.
    pub min: f32,
    /// The largest value read.
    pub max: f32,
}

/// The graph under construction, shared by every traced value.
#[derive(Default)]
struct Graph {
    nodes: Vec<onnx::NodeProto>,
    initializers: Vec<onnx::TensorProto>,
    inputs: Vec<onnx::ValueInfoProto>,
    counts: HashMap<String, usize>,
    paths: HashMap<ParamId, String>,
    taps: Option<Vec<Tap>>,
    error: Option<String>,
}

impl Graph {
    /// A fresh value name starting with `stem`.
    fn name(&mut self, stem: &str) -> String {
        let n = self.counts.entry(stem.to_string()).or_default();
        *n += 1;
        if *n == 1 {
            stem.to_string()
        } else {
            format!("{stem}_{n}")
        }
    }
}

/// A traced value: the name of the graph value that holds it.
#[derive(Clone)]
pub struct Node {
    graph: Rc<RefCell<Graph>>,
    name: String,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({})", self.name)
    }
}

/// An attribute of an emitted node.
pub enum Attr {
    /// One integer.
    Int(i64),
    /// One float.
    Float(f32),
    /// A list of integers.
    Ints(Vec<i64>),
}

impl Node {
    /// The graph value's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Emits `op` over this value and `others`; the output is named after `stem`.
    pub fn op(&self, op: &str, others: &[&str], stem: &str, attrs: &[(&str, Attr)]) -> Node {
        let inputs: Vec<&str> = std::iter::once(self.name.as_str())
            .chain(others.iter().copied())
            .collect();
        self.emit(op, &inputs, stem, attrs)
    }

    /// Emits `op` over `inputs` (in this value's graph); the output is named after `stem`.
    pub fn emit(&self, op: &str, inputs: &[&str], stem: &str, attrs: &[(&str, Attr)]) -> Node {
        let mut g = self.graph.borrow_mut();
        let output = g.name(stem);
        let name = g.name(&format!("{op}:{stem}"));
        g.nodes.push(onnx::NodeProto {
            op_type: op.into(),
            name,
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute: attrs.iter().map(|(n, v)| attribute(n, v)).collect(),
            ..Default::default()
        });
        Node {
            graph: self.graph.clone(),
            name: output,
        }
    }

    /// Adds a float32 constant; returns its name.
    pub fn f32s(&self, stem: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(stem, DataType::Float, dims, raw)
    }

    /// Adds an int64 constant; returns its name.
    pub fn i64s(&self, stem: &str, data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(stem, DataType::Int64, &[data.len()], raw)
    }

    /// Adds a weight tensor as a float32 constant.
    pub fn tensor<const D: usize>(&self, stem: &str, t: Tensor<D>) -> String {
        let dims = t.dims();
        self.f32s(stem, &dims, &floats(t))
    }

    fn constant(&self, stem: &str, elem: DataType, dims: &[usize], raw_data: Vec<u8>) -> String {
        let mut g = self.graph.borrow_mut();
        let name = g.name(stem);
        g.initializers.push(onnx::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: elem as i32,
            raw_data,
            ..Default::default()
        });
        name
    }

    /// The path of the module that owns a parameter (`unet.down.0.conv1` for its weight), or
    /// `fallback` for the root module or a parameter outside the traced module.
    pub fn path_of(&self, id: ParamId, fallback: &str) -> String {
        let g = self.graph.borrow();
        g.paths
            .get(&id)
            .and_then(|p| p.rsplit_once('.'))
            .map(|(module, _)| module.to_string())
            .unwrap_or_else(|| fallback.to_string())
    }

    /// Records what the layer `layer` reads (when taps are on).
    pub fn tap<const D: usize>(&self, layer: &str, value: &Tensor<D>) {
        let mut g = self.graph.borrow_mut();
        let Some(taps) = g.taps.as_mut() else {
            return;
        };
        let all = floats(value.clone());
        let (min, max) = all
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let stride = all.len().div_ceil(TAP_VALUES).max(1);
        let values = all.into_iter().step_by(stride).collect();
        taps.push(Tap {
            layer: layer.to_string(),
            values,
            min,
            max,
        });
    }

    /// Notes that the forward did something the trace cannot express; [`Tracer::finish`]
    /// reports the first such note.
    pub fn fail(&self, why: impl Into<String>) {
        let mut g = self.graph.borrow_mut();
        g.error.get_or_insert_with(|| why.into());
    }
}

/// Emits a binary op when both operands are traced; notes an error when only one is.
pub fn binary(op: &str, a: &Option<Node>, b: &Option<Node>) -> Option<Node> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.op(op, &[&b.name], &op.to_lowercase(), &[])),
        (Some(n), None) | (None, Some(n)) => {
            n.fail(format!(
                "{op} mixes a traced value with one computed outside the dual primitives"
            ));
            Some(n.clone())
        }
        (None, None) => None,
    }
}

/// Emits an n-ary op over traced values (`Concat`), noting an error if any is untraced.
pub fn nary(op: &str, parts: &[Option<Node>], stem: &str, attrs: &[(&str, Attr)]) -> Option<Node> {
    let first = parts.iter().flatten().next()?;
    if parts.iter().any(Option::is_none) {
        first.fail(format!(
            "{op} joins a traced value with one computed outside the dual primitives"
        ));
        return Some(first.clone());
    }
    let rest: Vec<&str> = parts[1..]
        .iter()
        .flatten()
        .map(|n| n.name.as_str())
        .collect();
    let head = parts[0].as_ref().expect("checked above");
    Some(head.op(op, &rest, stem, attrs))
}

/// A tensor's values as f32, row-major.
fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensors convert to f32")
}

fn attribute(name: &str, value: &Attr) -> onnx::AttributeProto {
    let mut a = onnx::AttributeProto {
        name: name.into(),
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

fn value_info(name: &str, elem: DataType, dims: &[usize]) -> onnx::ValueInfoProto {
    let dim = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if i == 0 {
                onnx::Dimension {
                    dim_param: Some("N".into()),
                    ..Default::default()
                }
            } else {
                onnx::Dimension {
                    dim_value: Some(d as i64),
                    ..Default::default()
                }
            }
        })
        .collect();
    onnx::ValueInfoProto {
        name: name.into(),
        r#type: Some(onnx::TypeProto {
            tensor_type: Some(onnx::TensorTypeProto {
                elem_type: elem as i32,
                shape: Some(onnx::TensorShapeProto { dim }),
            }),
        }),
        ..Default::default()
    }
}

/// Collects every parameter's module path.
struct Paths {
    stack: Vec<String>,
    paths: HashMap<ParamId, String>,
}

impl ModuleVisitor for Paths {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.paths.insert(param.id, self.stack.join("."));
    }
}

/// A graph being traced from one forward of a module.
pub struct Tracer {
    graph: Rc<RefCell<Graph>>,
}

/// A traced graph and, with taps on, what each layer read.
pub struct Traced {
    /// The float32 graph.
    pub model: onnx::ModelProto,
    /// One tap per layer, in graph order (empty with taps off).
    pub taps: Vec<Tap>,
}

impl Tracer {
    /// Starts a trace of `module`'s forward; `record` turns the layer taps on.
    pub fn new<M: Module>(module: &M, record: bool) -> Tracer {
        let mut paths = Paths {
            stack: Vec::new(),
            paths: HashMap::new(),
        };
        module.visit(&mut paths);
        let graph = Graph {
            paths: paths.paths,
            taps: record.then(Vec::new),
            ..Default::default()
        };
        Tracer {
            graph: Rc::new(RefCell::new(graph)),
        }
    }

    /// A float graph input `name` of shape `[N, shape…]`, given flattened as `value`
    /// `[N, ∏shape]` (the form the networks take).
    pub fn input(&self, name: &str, shape: &[usize], value: Tensor<2>) -> Dual<2> {
        let dims: Vec<usize> = std::iter::once(value.dims()[0])
            .chain(shape.iter().copied())
            .collect();
        let node = self.declare(name, DataType::Float, &dims);
        let node = if shape.len() == 1 {
            node
        } else {
            let flat = node.i64s(&format!("{name}.flat_shape"), &[0, -1]);
            node.op("Reshape", &[&flat], &format!("{name}_flat"), &[])
        };
        Dual::traced(value, node)
    }

    /// A float graph input `name` of shape `[N]`.
    pub fn scalars(&self, name: &str, value: Tensor<1>) -> Dual<1> {
        let node = self.declare(name, DataType::Float, &value.dims());
        Dual::traced(value, node)
    }

    /// An int64 graph input `name` of shape `[N]` holding class indices.
    pub fn labels(&self, name: &str, value: Tensor<1, Int>) -> Labels {
        let node = self.declare(name, DataType::Int64, &value.dims());
        Labels::traced(value, node)
    }

    fn declare(&self, name: &str, elem: DataType, dims: &[usize]) -> Node {
        let mut g = self.graph.borrow_mut();
        g.counts.insert(name.into(), 1);
        g.inputs.push(value_info(name, elem, dims));
        drop(g);
        Node {
            graph: self.graph.clone(),
            name: name.into(),
        }
    }

    /// Ends the trace with `out` (flattened `[N, ∏shape]`) as the output `name` of shape
    /// `[N, shape…]`; fails if the forward used anything the trace cannot express.
    pub fn finish(self, out: Dual<2>, name: &str, shape: &[usize]) -> anyhow::Result<Traced> {
        let Some(node) = out.node else {
            anyhow::bail!("the forward's output was not traced from the graph's inputs");
        };
        let shaped = if shape.len() == 1 {
            node
        } else {
            let dims: Vec<i64> = std::iter::once(0)
                .chain(shape.iter().map(|&d| d as i64))
                .collect();
            let s = node.i64s(&format!("{name}.shape"), &dims);
            node.op("Reshape", &[&s], &format!("{name}_shaped"), &[])
        };
        shaped.op("Identity", &[], name, &[]);
        let graph = std::mem::take(&mut *self.graph.borrow_mut());
        if let Some(why) = graph.error {
            anyhow::bail!("the forward cannot be exported: {why}");
        }
        let batch = out.value.dims()[0];
        let dims: Vec<usize> = std::iter::once(batch)
            .chain(shape.iter().copied())
            .collect();
        let model = onnx::ModelProto {
            ir_version: 8,
            opset_import: vec![onnx::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "mf-train trace".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(onnx::GraphProto {
                name: "meanflow".into(),
                node: graph.nodes,
                initializer: graph.initializers,
                input: graph.inputs,
                output: vec![value_info(name, DataType::Float, &dims)],
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(Traced {
            model,
            taps: graph.taps.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};

    use super::*;
    use crate::model::dual::linear;

    fn input(tracer: &Tracer) -> Dual<2> {
        let x = Tensor::<2>::ones([4, 6], &Device::flex());
        tracer.input("x", &[6], x)
    }

    #[test]
    fn a_traced_layer_is_named_by_its_module_path() {
        let layer: Linear = LinearConfig::new(6, 3).init(&Device::flex());
        let tracer = Tracer::new(&layer, true);
        let y = linear(input(&tracer), &layer).silu();
        let traced = tracer.finish(y, "y", &[3]).unwrap();
        let graph = traced.model.graph.unwrap();
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["MatMul", "Add", "Sigmoid", "Mul", "Identity"]);
        // A lone Linear is the root module: its path is empty, so the fallback name is used.
        assert_eq!(graph.node[0].output[0], "linear");
        assert_eq!(traced.taps.len(), 1);
        assert_eq!(traced.taps[0].values.len(), 24);
        assert_eq!(graph.input[0].name, "x");
    }

    #[test]
    fn what_a_trace_cannot_express_is_an_error() {
        let layer: Linear = LinearConfig::new(6, 3).init(&Device::flex());
        let tracer = Tracer::new(&layer, false);
        let y = input(&tracer).map_linear(|v| v * 2.0);
        let err = tracer.finish(y, "y", &[6]).err().unwrap();
        assert!(format!("{err}").contains("map_linear"), "{err}");

        let tracer = Tracer::new(&layer, false);
        let y = input(&tracer).reshape([8, 3]).reshape([4, 6]);
        let err = tracer.finish(y, "y", &[6]).err().unwrap();
        assert!(format!("{err}").contains("moves the batch axis"), "{err}");

        let tracer = Tracer::new(&layer, false);
        let untraced = Dual::primal(Tensor::<2>::ones([4, 6], &Device::flex()));
        let y = input(&tracer) + untraced;
        let err = tracer.finish(y, "y", &[6]).err().unwrap();
        assert!(
            format!("{err}").contains("outside the dual primitives"),
            "{err}"
        );
    }
}
