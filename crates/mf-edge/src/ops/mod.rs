//! Reference implementations of every ONNX op the exported graphs use, over [`Value`]s. The
//! native engine runs them for everything it does not fuse into a dense kernel.
use anyhow::{Context, bail, ensure};
use mf_core::onnx;
use mf_kernels::Isa;
use mf_kernels::layout::copy_short;
use mf_kernels::trig::Wave;

use crate::tensor::{Shape, Value, element_count};

mod group_norm;
mod layout;
pub mod linear;
pub(crate) mod normalize;

pub use group_norm::GroupNormChain;
pub use layout::relayout_value;

/// The ops this runtime executes (the native engine fuses MatMul/Add/SiLU chains itself).
pub const SUPPORTED: [&str; 28] = [
    "Identity",
    "Reshape",
    "Unsqueeze",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Max",
    "Sin",
    "Cos",
    "Sigmoid",
    "Concat",
    "Gather",
    "MatMul",
    "Cast",
    "QuantizeLinear",
    "DequantizeLinear",
    "Tanh",
    "Transpose",
    "Slice",
    "Softmax",
    "LayerNormalization",
    "Conv",
    "InstanceNormalization",
    "Expand",
    "Gemm",
    "Constant",
    "Shape",
];

/// An integer attribute of a node, or `default`.
pub fn int_attr(node: &onnx::NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.i)
        .unwrap_or(default)
}

/// A float attribute of a node, or `default`.
pub fn float_attr(node: &onnx::NodeProto, name: &str, default: f32) -> f32 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.f)
}

/// An integer-list attribute of a node (empty when absent).
fn ints_attr<'a>(node: &'a onnx::NodeProto, name: &str) -> &'a [i64] {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(&[], |a| a.ints.as_slice())
}

/// Whether a node carries attribute `name`.
fn has_attr(node: &onnx::NodeProto, name: &str) -> bool {
    node.attribute.iter().any(|a| a.name == name)
}

/// The shape `Expand` gives `shape` for `target`: the two broadcast together.
pub(crate) fn expanded_shape(shape: &[usize], target: &[usize]) -> anyhow::Result<Shape> {
    Ok(broadcast_shapes(shape, target)?.2)
}

/// Numpy broadcasting of two shapes: both padded with leading 1s to one rank, and the
/// broadcast shape.
pub(crate) fn broadcast_shapes(
    sa: &[usize],
    sb: &[usize],
) -> anyhow::Result<(Shape, Shape, Shape)> {
    let rank = sa.len().max(sb.len());
    let pad = |s: &[usize]| -> Shape {
        std::iter::repeat_n(1, rank - s.len())
            .chain(s.iter().copied())
            .collect()
    };
    let (pa, pb) = (pad(sa), pad(sb));
    let mut out = Shape::with_capacity(rank);
    for (&x, &y) in pa.iter().zip(&pb) {
        ensure!(
            x == y || x == 1 || y == 1,
            "shapes {sa:?} and {sb:?} do not broadcast"
        );
        // A size of 1 stretches to the other, 0 included (max would turn [0] × [1] into 1).
        out.push(if x == 1 { y } else { x });
    }
    Ok((pa, pb, out))
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Shape {
    let mut strides = Shape::from_elem(1, shape.len());
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// `axis` (negative counts from the end) as an index into `rank` dimensions.
fn normalized_axis(axis: i64, rank: usize, op: &str) -> anyhow::Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    ensure!(
        (0..rank as i64).contains(&a),
        "{op} axis {axis} is out of range for a rank-{rank} input"
    );
    Ok(a as usize)
}

/// Input `position` of a node as ONNX numbers them (an omitted optional input is an empty
/// name, which the engine does not pass on): `None` when omitted.
fn optional_input<'a>(
    node: &onnx::NodeProto,
    inputs: &[&'a Value],
    position: usize,
) -> Option<&'a Value> {
    let name = node.input.get(position)?;
    if name.is_empty() {
        return None;
    }
    let passed = node.input[..position]
        .iter()
        .filter(|n| !n.is_empty())
        .count();
    inputs.get(passed).copied()
}

/// A node and its input values, for the messages that name them.
struct Args<'a> {
    node: &'a onnx::NodeProto,
    inputs: &'a [&'a Value],
}

/// "`Op` node "name" input i", for errors about that input: written out only when an error
/// shows it (a value's accessors take it on every call).
struct InputName<'a> {
    node: &'a onnx::NodeProto,
    input: usize,
}

impl std::fmt::Display for InputName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (op, name) = (&self.node.op_type, &self.node.name);
        write!(f, "{op} node {name:?} input {}", self.input)
    }
}

impl<'a> Args<'a> {
    /// The name of input `i` in errors about it.
    fn what(&self, i: usize) -> InputName<'a> {
        InputName {
            node: self.node,
            input: i,
        }
    }

    /// An error unless the node has at least `n` inputs.
    fn need(&self, n: usize) -> anyhow::Result<()> {
        ensure!(
            self.inputs.len() >= n,
            "{} node {:?} has {} inputs, needs {n}",
            self.node.op_type,
            self.node.name,
            self.inputs.len()
        );
        Ok(())
    }
}

/// Runs one node on its input values, with the best kernel family of this CPU where an op
/// has per-family loops (every family gives the same bits).
pub fn run(node: &onnx::NodeProto, inputs: &[&Value]) -> anyhow::Result<Value> {
    run_on(Isa::detect(), node, inputs)
}

/// [`run`] with the loops of kernel family `isa` (the engine's).
pub fn run_on(isa: Isa, node: &onnx::NodeProto, inputs: &[&Value]) -> anyhow::Result<Value> {
    run_into(isa, node, inputs, &mut Vec::with_capacity)
}

/// Where an op's f32 output goes: `buffer(len)` hands out a buffer that holds `len` values
/// (its length and contents do not matter; the op overwrites or clears it).
pub type FloatBuffer<'a> = &'a mut dyn FnMut(usize) -> Vec<f32>;

/// Where an output of either kind goes: `len` floats or `len` uint8 codes (any contents: all
/// are overwritten).
pub type FreshBuffers<'a> = (
    &'a mut dyn FnMut(usize) -> Vec<f32>,
    &'a mut dyn FnMut(usize) -> Vec<u8>,
);

/// [`run_on`] with every f32 output the engine computes at run time (element-wise ops,
/// layout moves, Concat, Gather, MatMul, LayerNormalization) in a buffer from `buffer` (the
/// engine's kept buffers: no allocation per call, and a fresh large allocation would be faulted
/// in page by page).
pub fn run_into(
    isa: Isa,
    node: &onnx::NodeProto,
    inputs: &[&Value],
    buffer: FloatBuffer<'_>,
) -> anyhow::Result<Value> {
    let op = node.op_type.as_str();
    let args = Args { node, inputs };
    let what = |i: usize| args.what(i);
    let need = |n: usize| args.need(n);
    if op == "Constant" {
        return constant(node);
    }
    need(1)?;
    Ok(match op {
        "Shape" => {
            // Opset 15's start and end: negative counts from the end, both clamped to the rank.
            let shape = inputs[0].shape();
            let rank = shape.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let start = clamp(int_attr(node, "start", 0));
            let end = clamp(int_attr(node, "end", rank));
            let dims: Vec<i64> = shape[start..end.max(start)]
                .iter()
                .map(|&d| d as i64)
                .collect();
            let len = dims.len();
            Value::I64(dims, smallvec::smallvec![len])
        }
        "Identity" | "Reshape" | "Unsqueeze" => {
            let shape = view_shape(node, inputs)?.expect("a view op");
            match inputs[0] {
                Value::F32(d, _) => Value::F32(copied(d, buffer), shape),
                other => with_shape(other.clone(), shape),
            }
        }
        "Cast" => match int_attr(node, "to", 1) {
            // float16 is computed in f32 by this runtime.
            1 | 10 => Value::F32(
                copied(inputs[0].f32(what(0))?.0, buffer),
                inputs[0].shape().into(),
            ),
            to => bail!("Cast to type {to} is not supported (float and float16 are)"),
        },
        "Add" | "Sub" | "Mul" | "Div" => {
            need(2)?;
            let (a, sa) = inputs[0].f32(what(0))?;
            let (b, sb) = inputs[1].f32(what(1))?;
            // One monomorphized loop per op, so that each inlines and vectorizes.
            match op {
                "Add" => broadcast_into(a, sa, b, sb, |x, y| x + y, buffer)?,
                "Sub" => broadcast_into(a, sa, b, sb, |x, y| x - y, buffer)?,
                "Mul" => broadcast_into(a, sa, b, sb, |x, y| x * y, buffer)?,
                _ => broadcast_into(a, sa, b, sb, |x, y| x / y, buffer)?,
            }
        }
        "Max" => {
            // Variadic: the element-wise maximum of every input, broadcast together.
            let (a, sa) = inputs[0].f32(what(0))?;
            let mut max = Value::F32(copied(a, buffer), sa.into());
            for (i, input) in inputs.iter().enumerate().skip(1) {
                let (a, sa) = max.f32(what(0))?;
                let (b, sb) = input.f32(what(i))?;
                max = broadcast_into(a, sa, b, sb, f32::max, &mut *buffer)?;
            }
            max
        }
        "Sin" | "Cos" | "Sigmoid" | "Tanh" => {
            // mf-kernels' sin, cos, tanh and sigmoid: the same bits on every target, the
            // Cortex-M7 included (`mf_kernels::trig`, whose `sin`/`cos` the firmware's embedding
            // calls); the first three as loops compiled for `isa`.
            let (a, s) = inputs[0].f32(what(0))?;
            let mut out = buffer(a.len());
            if op == "Sigmoid" {
                return Ok(map_f32(a, s, mf_kernels::norm::sigmoid, out));
            }
            out.resize(a.len(), 0.0);
            match op {
                "Sin" => mf_kernels::pointwise::sin_cos_slice(isa, a, &mut out, Wave::Sin)?,
                "Cos" => mf_kernels::pointwise::sin_cos_slice(isa, a, &mut out, Wave::Cos)?,
                _ => mf_kernels::pointwise::tanh_slice(isa, a, &mut out)?,
            }
            Value::F32(out, s.into())
        }
        "Concat" => concat(inputs, int_attr(node, "axis", 0), buffer)?,
        "Gather" => {
            need(2)?;
            let (table, shape) = inputs[0].f32(what(0))?;
            let (ids, id_shape) = inputs[1].i64(what(1))?;
            ensure!(
                !shape.is_empty(),
                "Gather from a scalar table: the table must have at least one dimension"
            );
            let axis = normalized_axis(int_attr(node, "axis", 0), shape.len(), "Gather")?;
            // [outer, rows, inner]: each id picks one of `rows` blocks of `inner` values.
            let (outer, rows) = (shape[..axis].iter().product::<usize>(), shape[axis]);
            let inner: usize = shape[axis + 1..].iter().product();
            let out_shape: Shape = shape[..axis]
                .iter()
                .chain(id_shape)
                .chain(&shape[axis + 1..])
                .copied()
                .collect();
            // Negative ids count from the end, as ONNX says.
            let pick = |id: i64| {
                let i = if id < 0 { id + rows as i64 } else { id };
                usize::try_from(i).ok().filter(|&i| i < rows).with_context(|| {
                    format!("index {id} out of range: axis {axis} has {rows} entries (class ids of a model are 0..{rows})")
                })
            };
            for &id in ids {
                pick(id)?;
            }
            let mut out = buffer(element_count(&out_shape)?);
            out.clear();
            for o in 0..outer {
                for &id in ids {
                    let at = (o * rows + pick(id)?) * inner;
                    out.extend_from_slice(&table[at..at + inner]);
                }
            }
            Value::F32(out, out_shape)
        }
        "MatMul" => {
            need(2)?;
            let operands = [inputs[0].f32(what(0))?, inputs[1].f32(what(1))?];
            linear::matmul(isa, operands, buffer)?
        }
        "Gemm" => {
            need(2)?;
            let operand = |i: usize, attr: &str| -> anyhow::Result<Value> {
                ensure!(
                    inputs[i].shape().len() == 2,
                    "Gemm input {i} of shape {:?}: matrices are accepted",
                    inputs[i].shape()
                );
                match int_attr(node, attr, 0) {
                    0 => Ok(inputs[i].clone()),
                    _ => layout::transpose(inputs[i], &[1, 0], &mut Vec::with_capacity),
                }
            };
            let (a, b) = (operand(0, "transA")?, operand(1, "transB")?);
            let operands = [a.f32(what(0))?, b.f32(what(1))?];
            let product = linear::matmul(isa, operands, &mut Vec::with_capacity)?;
            let (y, sy) = product.f32("Gemm")?;
            let alpha = float_attr(node, "alpha", 1.0);
            match optional_input(node, inputs, 2) {
                None => Value::F32(y.iter().map(|&v| alpha * v).collect(), sy.into()),
                Some(c) => {
                    let (c, sc) = c.f32(what(2))?;
                    let beta = float_attr(node, "beta", 1.0);
                    let out = broadcast(y, sy, c, sc, |y, c| alpha * y + beta * c)?;
                    ensure!(
                        out.shape() == sy,
                        "Gemm bias of shape {sc:?} does not broadcast to {sy:?}"
                    );
                    out
                }
            }
        }
        "Conv" => {
            need(2)?;
            let (x, sx) = inputs[0].f32(what(0))?;
            let (w, sw) = inputs[1].f32(what(1))?;
            let geometry = linear::conv_geometry(node, sw)?;
            let bias = optional_input(node, inputs, 2)
                .map(|b| b.f32(what(2)).map(|(b, _)| b))
                .transpose()?;
            linear::conv2d(x, sx, w, sw, bias, &geometry)?
        }
        "Transpose" => layout::transpose(inputs[0], ints_attr(node, "perm"), buffer)?,
        "Slice" => {
            ensure!(
                !has_attr(node, "starts"),
                "Slice with starts/ends attributes (opset 1 to 9) is not supported (opset 10+ inputs are)"
            );
            need(3)?;
            let ints = |i: usize| -> anyhow::Result<Option<&[i64]>> {
                optional_input(node, inputs, i)
                    .map(|v| v.i64(what(i)).map(|(d, _)| d))
                    .transpose()
            };
            let (starts, ends) = (inputs[1].i64(what(1))?.0, inputs[2].i64(what(2))?.0);
            layout::slice(inputs[0], [starts, ends], ints(3)?, ints(4)?, buffer)?
        }
        "Softmax" => {
            let (x, sx) = inputs[0].f32(what(0))?;
            normalize::softmax(isa, x, sx, int_attr(node, "axis", -1))?
        }
        "LayerNormalization" => {
            need(2)?;
            ensure!(
                int_attr(node, "stash_type", 1) == 1,
                "LayerNormalization stash_type {} is not supported (1, float, is)",
                int_attr(node, "stash_type", 1)
            );
            let (x, sx) = inputs[0].f32(what(0))?;
            let scale = inputs[1].f32(what(1))?;
            let bias = optional_input(node, inputs, 2)
                .map(|b| b.f32(what(2)))
                .transpose()?;
            normalize::layer_norm(
                isa,
                x,
                sx,
                scale,
                bias,
                (
                    int_attr(node, "axis", -1),
                    float_attr(node, "epsilon", 1e-5),
                ),
                buffer(x.len()),
            )?
        }
        "InstanceNormalization" => {
            need(3)?;
            let (x, sx) = inputs[0].f32(what(0))?;
            normalize::instance_norm(
                x,
                sx,
                inputs[1].f32(what(1))?.0,
                inputs[2].f32(what(2))?.0,
                float_attr(node, "epsilon", 1e-5),
            )?
        }
        "Expand" => {
            need(2)?;
            layout::expand(inputs[0], inputs[1].i64(what(1))?.0, buffer)?
        }
        "QuantizeLinear" => {
            need(3)?;
            let (x, s) = inputs[0].f32(what(0))?;
            let params = mf_kernels::QuantParams::new(
                inputs[1].scalar(what(1))? as f32,
                inputs[2].scalar(what(2))? as u8,
            )?;
            Value::U8(x.iter().map(|&v| params.quantize(v)).collect(), s.into())
        }
        "DequantizeLinear" => dequantize(node, inputs)?,
        other => bail!("unsupported op {other}"),
    })
}

/// For the ops that only relabel their first input's shape (Identity, Reshape, Unsqueeze):
/// the output's shape, so that a caller owning the input can reuse its data; `None` for every
/// other op.
pub fn view_shape(node: &onnx::NodeProto, inputs: &[&Value]) -> anyhow::Result<Option<Shape>> {
    let op = node.op_type.as_str();
    let args = Args { node, inputs };
    let what = |i: usize| args.what(i);
    let need = |n: usize| args.need(n);
    Ok(Some(match op {
        "Identity" => {
            need(1)?;
            inputs[0].shape().into()
        }
        "Reshape" => {
            need(2)?;
            let (target, _) = inputs[1].i64(what(1))?;
            reshape(inputs[0].shape(), target)?
        }
        "Unsqueeze" => {
            need(2)?;
            let (axes, _) = inputs[1].i64(what(1))?;
            unsqueeze(inputs[0].shape(), axes)?
        }
        _ => return Ok(None),
    }))
}

/// ONNX Unsqueeze: `shape` with a dimension of 1 inserted at each of `axes` (of the output;
/// negative counts from its end).
pub(crate) fn unsqueeze(shape: &[usize], axes: &[i64]) -> anyhow::Result<Shape> {
    let rank = shape.len() + axes.len();
    let mut positions: Shape = axes
        .iter()
        .map(|&a| {
            let at = if a < 0 { a + rank as i64 } else { a };
            usize::try_from(at)
                .ok()
                .filter(|&at| at < rank)
                .ok_or_else(|| anyhow::anyhow!("Unsqueeze axis {a} out of range for rank {rank}"))
        })
        .collect::<anyhow::Result<_>>()?;
    positions.sort_unstable();
    ensure!(
        positions.windows(2).all(|w| w[0] != w[1]),
        "Unsqueeze axes {axes:?} repeat an axis"
    );
    let mut out = Shape::from_slice(shape);
    for at in positions {
        out.insert(at, 1);
    }
    Ok(out)
}

/// A Constant node's value: a tensor, or one float or integer (list).
fn constant(node: &onnx::NodeProto) -> anyhow::Result<Value> {
    let [attr] = node.attribute.as_slice() else {
        bail!(
            "Constant node {:?} must have exactly one value attribute",
            node.name
        )
    };
    Ok(match attr.name.as_str() {
        "value" => {
            let t = attr.t.as_ref().context("Constant value without a tensor")?;
            Value::from_proto(t).with_context(|| format!("Constant node {:?}", node.name))?
        }
        "value_float" => Value::F32(vec![attr.f], smallvec::smallvec![]),
        "value_floats" => Value::F32(attr.floats.clone(), smallvec::smallvec![attr.floats.len()]),
        "value_int" => Value::I64(vec![attr.i], smallvec::smallvec![]),
        "value_ints" => Value::I64(attr.ints.clone(), smallvec::smallvec![attr.ints.len()]),
        other => {
            bail!("Constant {other} is not supported (value, value_float(s) and value_int(s) are)")
        }
    })
}

/// `v`'s data with shape `shape` (the caller checked the element count).
pub fn with_shape(v: Value, shape: Shape) -> Value {
    match v {
        Value::F32(d, _) => Value::F32(d, shape),
        Value::I64(d, _) => Value::I64(d, shape),
        Value::I32(d, _) => Value::I32(d, shape),
        Value::I8(d, _) => Value::I8(d, shape),
        Value::U8(d, _) => Value::U8(d, shape),
    }
}

/// ONNX Reshape target resolution (`0` keeps a dimension, one `-1` is inferred).
pub(crate) fn reshape(from: &[usize], target: &[i64]) -> anyhow::Result<Shape> {
    let total = element_count(from)?;
    let fail = || anyhow::anyhow!("cannot reshape {from:?} to {target:?}");
    ensure!(
        target.iter().all(|&d| d >= -1) && target.iter().filter(|&&d| d == -1).count() <= 1,
        "cannot reshape {from:?} to {target:?}: dimensions are 0 (keep), -1 (once, inferred) or positive"
    );
    let mut shape: Shape = target
        .iter()
        .enumerate()
        .map(|(i, &d)| match d {
            0 => from.get(i).copied().ok_or_else(fail),
            -1 => Ok(1),
            d => usize::try_from(d).map_err(|_| fail()),
        })
        .collect::<anyhow::Result<_>>()?;
    let known = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(fail)?;
    match target.iter().position(|&d| d == -1) {
        Some(pos) if known > 0 && total.is_multiple_of(known) => shape[pos] = total / known,
        None if known == total => {}
        _ => return Err(fail()),
    }
    Ok(shape)
}

/// Element-wise `f(a)` into the buffer `out` (its length and contents do not matter).
fn map_f32(a: &[f32], shape: &[usize], f: impl Fn(f32) -> f32, mut out: Vec<f32>) -> Value {
    out.clear();
    out.extend(a.iter().map(|&x| f(x)));
    Value::F32(out, shape.into())
}

/// `a`'s values in a buffer from `buffer`.
fn copied(a: &[f32], buffer: FloatBuffer<'_>) -> Vec<f32> {
    let mut out = buffer(a.len());
    out.clear();
    out.extend_from_slice(a);
    out
}

/// Element-wise `f(a, b)` with NumPy broadcasting.
pub(crate) fn broadcast(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> anyhow::Result<Value> {
    broadcast_into(a, sa, b, sb, f, &mut |len| vec![0.0; len])
}

/// Outputs from which an element-wise op is shared out across the kernels' thread team
/// (below it, waking the team costs about what the pass does).
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// [`broadcast`] into a buffer of the output's length from `buffer` (its contents do not
/// matter: every value is written).
fn broadcast_into(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
    buffer: FloatBuffer<'_>,
) -> anyhow::Result<Value> {
    let walk = Broadcast::new(sa, sb)?;
    let mut out = buffer(walk.total);
    out.resize(walk.total, 0.0);
    walk.rows_of(&mut out, &|run, dst| {
        let Run {
            a: ia,
            a_step,
            b: ib,
            b_step,
            len,
        } = run;
        // Contiguous rows and scalars get slice loops; other strides the general walk.
        match (a_step, b_step) {
            (1, 1) => {
                let rows = dst.iter_mut().zip(&a[ia..ia + len]).zip(&b[ib..ib + len]);
                rows.for_each(|((d, &x), &y)| *d = f(x, y));
            }
            (1, 0) => {
                let rows = dst.iter_mut().zip(&a[ia..ia + len]);
                rows.for_each(|(d, &x)| *d = f(x, b[ib]));
            }
            (0, 1) => {
                let rows = dst.iter_mut().zip(&b[ib..ib + len]);
                rows.for_each(|(d, &y)| *d = f(a[ia], y));
            }
            _ => {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = f(a[ia + j * a_step], b[ib + j * b_step]);
                }
            }
        }
    });
    Ok(Value::F32(out, walk.shape))
}

/// `a = f(a, b)` in place when `b` broadcasts to `a`'s own shape (the engine's path for an
/// operand no later step reads); `false`, with `a` untouched, when the result would be larger.
pub fn broadcast_in_place(
    op: &str,
    a: &mut [f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
) -> anyhow::Result<bool> {
    // One monomorphized loop per op, as in `run`.
    match op {
        "Add" => in_place(a, sa, b, sb, |x, y| x + y),
        "Sub" => in_place(a, sa, b, sb, |x, y| x - y),
        "Mul" => in_place(a, sa, b, sb, |x, y| x * y),
        "Div" => in_place(a, sa, b, sb, |x, y| x / y),
        _ => Ok(false),
    }
}

fn in_place(
    a: &mut [f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> anyhow::Result<bool> {
    let walk = Broadcast::new(sa, sb)?;
    if walk.shape.as_slice() != sa || a.len() != walk.total {
        return Ok(false);
    }
    if let Some((rows, len, b_step)) = walk.repeated_row().filter(|_| a.len() < PARALLEL_ELEMENTS) {
        // A row of `b` down each block of `rows` rows (a per-channel operand of pixel rows):
        // plain loops, no walk per row.
        for (k, block) in a.chunks_mut(rows * len).enumerate() {
            let b_row = &b[k * b_step..][..len];
            for row in block.chunks_exact_mut(len) {
                for (x, &y) in row.iter_mut().zip(b_row) {
                    *x = f(*x, y);
                }
            }
        }
        return Ok(true);
    }
    // `a` has the output's shape: each output row is `a`'s own row, read and written in place.
    walk.rows_of(a, &|run, row| match run.b_step {
        0 => row.iter_mut().for_each(|x| *x = f(*x, b[run.b])),
        1 => row
            .iter_mut()
            .zip(&b[run.b..run.b + run.len])
            .for_each(|(x, &y)| *x = f(*x, y)),
        step => row
            .iter_mut()
            .enumerate()
            .for_each(|(j, x)| *x = f(*x, b[run.b + j * step])),
    });
    Ok(true)
}

/// One run of a broadcast's output: `len` values, operand `a` read from index `a` by steps of
/// `a_step` (0 repeats one value), `b` likewise.
struct Run {
    a: usize,
    a_step: usize,
    b: usize,
    b_step: usize,
    len: usize,
}

/// The walk over the output of `sa` broadcast against `sb` in row-major order, one [`Run`] per
/// row of its innermost (merged) axis.
struct Broadcast {
    /// The output's shape.
    shape: Shape,
    /// Its element count.
    total: usize,
    /// The merged output shape the rows walk, and each operand's strides along it.
    merged: Shape,
    strides: [Shape; 2],
}

impl Broadcast {
    /// The walk, or an error when the shapes do not broadcast or the output is too large.
    fn new(sa: &[usize], sb: &[usize]) -> anyhow::Result<Broadcast> {
        let (full_a, full_b, shape) = broadcast_shapes(sa, sb)?;
        let total = element_count(&shape)?;
        // Neighbouring axes that each operand either spans or repeats alike walk as one axis
        // (a per-channel [C, 1, 1] against [N, C, H, W] becomes [1, C, 1] against
        // [N, C, H·W]), and axes of size 1 drop out: longer rows for the loops.
        let (mut pa, mut pb, mut merged) = (Shape::new(), Shape::new(), Shape::new());
        let mut last = None;
        for d in (0..shape.len()).filter(|&d| shape[d] > 1) {
            let spans = (full_a[d] > 1, full_b[d] > 1);
            if last == Some(spans) {
                let n = shape[d];
                *merged.last_mut().expect("an axis before") *= n;
                *pa.last_mut().expect("an axis before") *= if spans.0 { n } else { 1 };
                *pb.last_mut().expect("an axis before") *= if spans.1 { n } else { 1 };
            } else {
                merged.push(shape[d]);
                pa.push(full_a[d]);
                pb.push(full_b[d]);
                last = Some(spans);
            }
        }
        if merged.is_empty() {
            let one = || Shape::from_slice(&[1]);
            (pa, pb, merged) = (one(), one(), one());
        }
        let rank = merged.len();
        let strides = |s: &[usize]| -> Shape {
            let mut st = Shape::from_elem(0, rank);
            let mut acc = 1;
            for i in (0..rank).rev() {
                st[i] = if s[i] == 1 { 0 } else { acc };
                acc *= s[i];
            }
            st
        };
        let strides = [strides(&pa), strides(&pb)];
        Ok(Broadcast {
            shape,
            total,
            merged,
            strides,
        })
    }

    /// `(rows, len, step)` when the output is blocks of `rows` rows of `len` values and `b`
    /// gives each block one row of `len` values, `step` apart (`b` a per-channel `[N, 1, 1, C]`
    /// against pixel rows `[N, H, W, C]`), and `a` spans the output.
    fn repeated_row(&self) -> Option<(usize, usize, usize)> {
        let [st_a, st_b] = &self.strides;
        let rank = self.merged.len();
        let (len, rows) = (
            self.merged[rank - 1],
            *self.merged.get(rank.checked_sub(2)?)?,
        );
        let spans_a = st_a[rank - 1] == 1 && st_a[rank - 2] == len;
        let row_of_b = st_b[rank - 1] == 1 && st_b[rank - 2] == 0;
        match rank {
            2 if spans_a && row_of_b => Some((rows, len, 0)),
            3 if spans_a && row_of_b && st_a[0] == rows * len && st_b[0] == len => {
                Some((rows, len, len))
            }
            _ => None,
        }
    }

    /// The length of a row.
    fn row_len(&self) -> usize {
        self.merged[self.merged.len() - 1]
    }

    /// Calls `row(run, dst)` for every row of the output, `dst` being that row's part of `out`
    /// (the output's `total` values, in order). A large output is shared out across the
    /// thread team in equal runs of values, a row cut where a run ends (a same-shape op is one
    /// long row).
    fn rows_of(&self, out: &mut [f32], row: &(dyn Fn(Run, &mut [f32]) + Sync)) {
        let len = self.row_len();
        if self.total == 0 || len == 0 {
            return;
        }
        let per_task = if self.total >= PARALLEL_ELEMENTS {
            self.total.div_ceil(mf_kernels::team::threads())
        } else {
            self.total
        };
        let parallel = self.total > per_task;
        mf_kernels::team::for_each_chunk(out, per_task, parallel, &|t, part| {
            let (mut at, mut done) = (t * per_task, 0);
            while done < part.len() {
                let (r, j) = (at / len, at % len);
                let n = (len - j).min(part.len() - done);
                let whole = self.run(r);
                let run = Run {
                    a: whole.a + j * whole.a_step,
                    b: whole.b + j * whole.b_step,
                    len: n,
                    ..whole
                };
                row(run, &mut part[done..done + n]);
                (at, done) = (at + n, done + n);
            }
        });
    }

    /// Row `r`'s run.
    fn run(&self, mut r: usize) -> Run {
        let rank = self.merged.len();
        let [st_a, st_b] = &self.strides;
        let (mut a, mut b) = (0, 0);
        // Row `r`'s index over the outer axes, innermost first.
        for d in (0..rank - 1).rev() {
            let i = r % self.merged[d];
            r /= self.merged[d];
            a += i * st_a[d];
            b += i * st_b[d];
        }
        Run {
            a,
            a_step: st_a[rank - 1],
            b,
            b_step: st_b[rank - 1],
            len: self.row_len(),
        }
    }
}

/// Concat of float inputs along `axis`, into a buffer from `buffer`.
fn concat(inputs: &[&Value], axis: i64, buffer: FloatBuffer<'_>) -> anyhow::Result<Value> {
    let rank = inputs[0].shape().len();
    let axis = if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    };
    ensure!(
        axis < rank,
        "Concat axis {axis} out of range for rank {rank}"
    );
    let outer: usize = inputs[0].shape()[..axis].iter().product();
    let mut out_shape = Shape::from_slice(inputs[0].shape());
    out_shape[axis] = 0;
    // Held inline: a Concat has a few inputs.
    let mut parts = smallvec::SmallVec::<[(&[f32], usize); 4]>::new();
    for v in inputs {
        let (d, s) = v.f32("Concat input")?;
        ensure!(
            s.len() == rank
                && s[..axis] == out_shape[..axis]
                && s[axis + 1..] == out_shape[axis + 1..],
            "Concat of incompatible shapes"
        );
        out_shape[axis] += s[axis];
        parts.push((d, s[axis..].iter().product::<usize>()));
    }
    let len = out_shape.iter().product();
    let mut out = buffer(len);
    out.resize(len, 0.0);
    let mut at = 0;
    for o in 0..outer {
        for (d, chunk) in &parts {
            // A channel Concat of pixel rows copies a pixel's channels: a few dozen values.
            copy_short(&mut out[at..at + chunk], &d[o * chunk..(o + 1) * chunk]);
            at += chunk;
        }
    }
    Ok(Value::F32(out, out_shape))
}

/// `(x − zero_point) · scale`, per tensor or along `axis`.
fn dequantize(node: &onnx::NodeProto, inputs: &[&Value]) -> anyhow::Result<Value> {
    ensure!(inputs.len() >= 2, "DequantizeLinear needs a scale");
    // Zero points as i64: (q − zp) is exact for every type, then rounded to f32 once, as
    // ONNX computes it.
    let zeros: Vec<i64> = match inputs.get(2) {
        Some(z) if z.type_name() == inputs[0].type_name() => match z {
            Value::I32(d, _) => d.iter().map(|&v| i64::from(v)).collect(),
            Value::I8(d, _) => d.iter().map(|&v| i64::from(v)).collect(),
            Value::U8(d, _) => d.iter().map(|&v| i64::from(v)).collect(),
            _ => bail!(
                "DequantizeLinear of {} data (int32, int8 or uint8 is accepted)",
                inputs[0].type_name()
            ),
        },
        Some(z) => bail!(
            "DequantizeLinear zero point of {} data for {} codes (the codes' type is accepted)",
            z.type_name(),
            inputs[0].type_name()
        ),
        None => vec![0],
    };
    let shape = Shape::from_slice(inputs[0].shape());
    let (scales, _) = inputs[1].f32("DequantizeLinear scale")?;
    ensure!(!scales.is_empty(), "DequantizeLinear with no scale");
    // One zero point for every channel (a scalar), or one per scale.
    ensure!(
        zeros.len() == 1 || zeros.len() == scales.len(),
        "DequantizeLinear: {} zero points for {} scales (1 or {} is accepted)",
        zeros.len(),
        scales.len(),
        scales.len()
    );
    let inner = if scales.len() == 1 {
        usize::MAX // one run: every code shares the scale
    } else {
        let axis = int_attr(node, "axis", 1);
        let axis = if axis < 0 {
            (axis + shape.len() as i64) as usize
        } else {
            axis as usize
        };
        ensure!(
            shape.get(axis) == Some(&scales.len()),
            "DequantizeLinear: {} scales for axis {axis} of {shape:?}",
            scales.len()
        );
        shape[axis + 1..].iter().product()
    };
    let channel = |c: usize| (zeros[c.min(zeros.len() - 1)], scales[c]);
    let out = match inputs[0] {
        Value::I32(d, _) => dequantize_runs(d, inner, scales.len(), channel),
        Value::I8(d, _) => dequantize_runs(d, inner, scales.len(), channel),
        Value::U8(d, _) => dequantize_runs(d, inner, scales.len(), channel),
        other => bail!(
            "DequantizeLinear of {} data (int32, int8 or uint8 is accepted)",
            other.type_name()
        ),
    };
    Ok(Value::F32(out, shape))
}

/// `(q − zero_point) · scale` over runs of `inner` codes that share a channel (run `i` has
/// channel `i mod channels`), each run in one tight loop.
fn dequantize_runs<T: Copy + Into<i64>>(
    codes: &[T],
    inner: usize,
    channels: usize,
    channel: impl Fn(usize) -> (i64, f32),
) -> Vec<f32> {
    let mut out = Vec::with_capacity(codes.len());
    for (i, run) in codes.chunks(inner.max(1)).enumerate() {
        let (zero, scale) = channel(i % channels);
        out.extend(run.iter().map(|&q| (q.into() - zero) as f32 * scale));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_broadcasting_equals_the_allocating_one() {
        let data = |n: usize| (0..n).map(|i| i as f32 * 0.37 - 2.0).collect::<Vec<f32>>();
        let cases: [(&[usize], &[usize]); 11] = [
            (&[2, 3, 4], &[2, 3, 4]),
            // A per-channel operand of pixel rows, for one image and for two.
            (&[1, 7, 9, 16], &[1, 1, 1, 16]),
            (&[2, 7, 9, 16], &[2, 1, 1, 16]),
            (&[2, 3, 4], &[3, 1]),
            (&[2, 3, 4], &[1, 1, 4]),
            (&[2, 3, 4], &[2, 1, 4]),
            (&[2, 3, 4], &[]),
            (&[4, 3], &[1, 3]),
            // Large enough to be shared out across the team (runs cut mid-row).
            (&[33_001], &[33_001]),
            (&[5, 67, 101], &[5, 1, 101]),
            (&[3, 11, 1_009], &[11, 1]),
        ];
        for op in ["Add", "Sub", "Mul", "Div"] {
            for (sa, sb) in cases {
                let (a, b) = (data(sa.iter().product()), data(sb.iter().product()));
                let want = run(
                    &node(op, &[]),
                    &[
                        &Value::F32(a.clone(), sa.into()),
                        &Value::F32(b.clone(), sb.into()),
                    ],
                )
                .unwrap();
                let mut got = a.clone();
                assert!(broadcast_in_place(op, &mut got, sa, &b, sb).unwrap());
                assert_eq!(Value::F32(got, sa.into()), want, "{op} {sa:?} {sb:?}");
            }
        }
        // A result larger than the operand is left to the allocating path.
        let mut a = data(3);
        assert!(!broadcast_in_place("Add", &mut a, &[3], &data(6), &[2, 3]).unwrap());
        assert_eq!(a, data(3));
        assert!(broadcast_in_place("Add", &mut a, &[3], &data(2), &[2]).is_err());
    }

    #[test]
    fn outputs_written_into_given_buffers_ignore_what_they_held() {
        let data = |n: usize| (0..n).map(|i| i as f32 * 0.37 - 2.0).collect::<Vec<f32>>();
        let (a, b) = (
            Value::F32(data(24), smallvec::smallvec![2, 3, 4]),
            Value::F32(data(4), smallvec::smallvec![4]),
        );
        let scale = Value::F32(vec![0.5, 1.0, 2.0, -1.0], smallvec::smallvec![4]);
        let cases: [(onnx::NodeProto, Vec<&Value>); 4] = [
            (node("Add", &[]), vec![&a, &b]),
            (node("Sub", &[]), vec![&a, &a]),
            (node("Div", &[]), vec![&b, &a]),
            (node("LayerNormalization", &[]), vec![&a, &scale]),
        ];
        for (node, inputs) in cases {
            let want = run_on(Isa::Scalar, &node, &inputs).unwrap();
            // Stale values, shorter and longer than the output.
            for len in [0, 5, 24, 100] {
                let mut stale = |_: usize| vec![f32::NAN; len];
                let got = run_into(Isa::Scalar, &node, &inputs, &mut stale).unwrap();
                assert_eq!(got, want, "{} into {len} stale values", node.op_type);
            }
        }
    }

    #[test]
    fn broadcasting_matches_numpy() {
        let v = broadcast(
            &[1.0, 2.0],
            &[2, 1],
            &[10.0, 20.0, 30.0],
            &[1, 3],
            |a, b| a + b,
        )
        .unwrap();
        assert_eq!(
            v,
            Value::F32(
                vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0],
                smallvec::smallvec![2, 3]
            )
        );
        assert!(broadcast(&[1.0, 2.0], &[2], &[1.0, 2.0, 3.0], &[3], |a, b| a + b).is_err());
    }

    /// Fuzz finding (single_op): an empty tensor against a scalar took the broadcast size
    /// max(0, 1) = 1 and read past the empty data.
    #[test]
    fn an_empty_dimension_broadcasts_to_empty() {
        let empty = Value::F32(vec![], smallvec::smallvec![0, 0, 0]);
        let scalar = Value::F32(vec![2.0], smallvec::smallvec![]);
        let got = run(&node("Div", &[]), &[&empty, &scalar]).unwrap();
        assert_eq!(got, Value::F32(vec![], smallvec::smallvec![0, 0, 0]));
        let got = run(&node("Add", &[]), &[&scalar, &empty]).unwrap();
        assert_eq!(got, Value::F32(vec![], smallvec::smallvec![0, 0, 0]));
        let col = Value::F32(vec![1.0, 2.0], smallvec::smallvec![2, 1]);
        let none = Value::F32(vec![], smallvec::smallvec![2, 0]);
        assert_eq!(
            run(&node("Mul", &[]), &[&col, &none]).unwrap(),
            Value::F32(vec![], smallvec::smallvec![2, 0])
        );
        let row = Value::F32(vec![1.0, 2.0], smallvec::smallvec![1, 2]);
        assert!(run(&node("Mul", &[]), &[&row, &none]).is_err());
    }

    #[test]
    fn every_broadcast_path_matches_the_index_formula() {
        // Row-contiguous both, scalar per row on either side, a broadcast row, and a
        // middle-axis broadcast (the general strided walk).
        for (sa, sb) in [
            (vec![3, 4], vec![3, 4]),
            (vec![3, 4], vec![3, 1]),
            (vec![3, 1], vec![3, 4]),
            (vec![3, 4], vec![4]),
            (vec![2, 3, 4], vec![2, 1, 4]),
            (vec![2, 1, 4], vec![3, 1]),
            // Past PARALLEL_ELEMENTS, shared out across the team in runs that cut rows at odd
            // places: one long same-shape row, long rows, a per-row scalar, a strided walk.
            (vec![33_001], vec![33_001]),
            (vec![5, 67, 101], vec![5, 1, 101]),
            (vec![7, 4_801], vec![7, 1]),
            (vec![3, 11, 1_009], vec![11, 1]),
            (vec![3, 1, 1_009], vec![3, 11, 1]),
        ] {
            let a: Vec<f32> = (0..sa.iter().product::<usize>())
                .map(|i| i as f32)
                .collect();
            let b: Vec<f32> = (0..sb.iter().product::<usize>())
                .map(|i| 100.0 * i as f32 + 1.0)
                .collect();
            let Value::F32(got, shape) = broadcast(&a, &sa, &b, &sb, |x, y| x - y).unwrap() else {
                panic!("f32 in, f32 out")
            };
            let rank = shape.len();
            let at = |data: &[f32], s: &[usize], idx: &[usize]| {
                let off = rank - s.len();
                let flat = s.iter().enumerate().fold(0, |acc, (d, &n)| {
                    acc * n + if n == 1 { 0 } else { idx[off + d] }
                });
                data[flat]
            };
            for (flat, &v) in got.iter().enumerate() {
                let mut idx = vec![0; rank];
                let mut rest = flat;
                for d in (0..rank).rev() {
                    idx[d] = rest % shape[d];
                    rest /= shape[d];
                }
                assert_eq!(
                    v,
                    at(&a, &sa, &idx) - at(&b, &sb, &idx),
                    "{sa:?} - {sb:?} at {idx:?}"
                );
            }
        }
    }

    fn node(op: &str, attrs: &[(&str, i64)]) -> onnx::NodeProto {
        onnx::NodeProto {
            op_type: op.into(),
            name: "n".into(),
            output: vec!["y".into()],
            attribute: attrs
                .iter()
                .map(|&(name, i)| onnx::AttributeProto {
                    name: name.into(),
                    i,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn gather_from_a_scalar_table_is_an_error() {
        let table = Value::F32(vec![1.0], smallvec::smallvec![]);
        let ids = Value::I64(vec![0], smallvec::smallvec![1]);
        let err = run(&node("Gather", &[]), &[&table, &ids]).unwrap_err();
        assert!(format!("{err:#}").contains("scalar table"), "{err:#}");
        let table = Value::F32(vec![1.0, 2.0, 3.0, 4.0], smallvec::smallvec![2, 2]);
        let got = run(&node("Gather", &[]), &[&table, &ids]).unwrap();
        assert_eq!(got, Value::F32(vec![1.0, 2.0], smallvec::smallvec![1, 2]));
    }

    #[test]
    fn per_axis_dequantize_takes_a_scalar_or_per_channel_zero_point() {
        let codes = Value::U8(vec![10, 20, 30, 40], smallvec::smallvec![2, 2]);
        let scales = Value::F32(vec![0.5, 2.0], smallvec::smallvec![2]);
        let dq = node("DequantizeLinear", &[("axis", 0)]);
        let scalar_zero = Value::U8(vec![10], smallvec::smallvec![]);
        let got = run(&dq, &[&codes, &scales, &scalar_zero]).unwrap();
        assert_eq!(
            got,
            Value::F32(vec![0.0, 5.0, 40.0, 60.0], smallvec::smallvec![2, 2])
        );
        let per_channel = Value::U8(vec![10, 30], smallvec::smallvec![2]);
        let got = run(&dq, &[&codes, &scales, &per_channel]).unwrap();
        assert_eq!(
            got,
            Value::F32(vec![0.0, 5.0, 0.0, 20.0], smallvec::smallvec![2, 2])
        );
        let three = Value::U8(vec![1, 2, 3], smallvec::smallvec![3]);
        let err = run(&dq, &[&codes, &scales, &three]).unwrap_err();
        assert!(
            format!("{err:#}").contains("3 zero points for 2 scales"),
            "{err:#}"
        );
    }

    #[test]
    fn outputs_past_the_element_limit_are_errors_not_allocations() {
        let a = Value::F32(vec![0.0; 1 << 15], smallvec::smallvec![1 << 15, 1]);
        let b = Value::F32(vec![0.0; 1 << 15], smallvec::smallvec![1, 1 << 15]);
        let err = run(&node("Mul", &[]), &[&a, &b]).unwrap_err();
        assert!(format!("{err:#}").contains("elements"), "{err:#}");
        let a = Value::F32(vec![], smallvec::smallvec![1 << 20, 0]);
        let b = Value::F32(vec![], smallvec::smallvec![0, 1 << 20]);
        let err = run(&node("MatMul", &[]), &[&a, &b]).unwrap_err();
        assert!(format!("{err:#}").contains("elements"), "{err:#}");
        let err = reshape(&[2, 3], &[i64::MAX, i64::MAX]).unwrap_err();
        assert!(format!("{err:#}").contains("cannot reshape"), "{err:#}");
    }

    #[test]
    fn reshape_infers_minus_one() {
        assert_eq!(reshape(&[4, 1, 2, 3], &[-1, 6]).unwrap().as_slice(), [4, 6]);
        assert!(reshape(&[4, 5], &[-1, 3]).is_err());
    }
}
