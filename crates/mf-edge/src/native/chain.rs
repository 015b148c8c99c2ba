//! Element-wise chains: Add, Sub, Mul, Div and Sigmoid steps in a row, each intermediate value
//! read by the next alone, run as one step (the DiT's adaLN `x · (1 + scale) + shift` and
//! gated residuals, three and two nodes each). Each operation runs over the whole output (in
//! units of the rows that share a broadcast operand's row, that row tiled along the unit)
//! through mf-kernels' [`RowOps`], the first into a fresh buffer and every later one in place
//! in that buffer, which holds the previous result: one buffer per chain and one dispatch instead of a step per node. Each
//! value goes through the nodes' own operations in their order, so the step gives the same
//! bits as the nodes. Anything else (an operand that is not f32, shapes that do not
//! broadcast) runs the nodes one by one, with their errors.
use std::collections::HashMap;

use anyhow::Context;
use mf_core::onnx;
use mf_kernels::pointwise::{RowOp, RowOperand, RowOps};
use mf_kernels::{Isa, team};

use super::{FloatPool, Slotted};
use crate::ops;
use crate::tensor::{Shape, Value, element_count};

/// Outputs from which a chain's rows are shared out across the thread team.
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// The operation of an element-wise step reading `inputs` values, if it is one a chain takes.
fn row_op(node: &onnx::NodeProto, inputs: usize) -> Option<RowOp> {
    let op = match node.op_type.as_str() {
        "Add" => RowOp::Add,
        "Sub" => RowOp::Sub,
        "Mul" => RowOp::Mul,
        "Div" => RowOp::Div,
        "Sigmoid" => RowOp::Sigmoid,
        _ => return None,
    };
    let wanted = if op == RowOp::Sigmoid { 1 } else { 2 };
    (inputs == wanted && node.input.len() == wanted).then_some(op)
}

/// Where an operation reads a value: an input of the step, or the previous operation's result
/// (the only earlier result a chain's operation reads: each is read by the next alone).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Operand {
    Input(usize),
    Previous,
}

/// One operation: its node (run alone when the chain cannot be) and its operands.
struct Operation {
    op: RowOp,
    operands: Vec<Operand>,
    node: onnx::NodeProto,
}

/// A fused element-wise chain.
pub(super) struct Chain {
    operations: Vec<Operation>,
}

impl Chain {
    /// What it does, for step times.
    pub(super) fn label(&self) -> String {
        let ops: Vec<&str> = self
            .operations
            .iter()
            .map(|o| o.node.op_type.as_str())
            .collect();
        format!("Element-wise chain ({})", ops.join(", "))
    }

    /// The chain on its inputs (f32 values broadcasting to one shape), or the nodes one by one.
    pub(super) fn run(
        &self,
        isa: Isa,
        inputs: &[&Value],
        floats: &mut FloatPool,
    ) -> anyhow::Result<Value> {
        let Some((data, shape)) = fusable(inputs) else {
            return self.node_by_node(isa, inputs);
        };
        let total = element_count(&shape)?;
        let row_ops = RowOps::new(isa)?;
        // The first operation writes a fresh buffer; each later one runs in it, where the
        // previous result is.
        let mut out = floats.take(total);
        for op in &self.operations {
            let source = |position: usize| match op.operands.get(position) {
                Some(Operand::Input(i)) => Source::of(data[*i], inputs[*i].shape(), &shape),
                // Sigmoid reads its one operand.
                Some(Operand::Previous) | None => Source::Output,
            };
            apply(row_ops, op.op, [source(0), source(1)], &shape, &mut out)?;
        }
        Ok(Value::F32(out, shape))
    }

    /// The nodes one after the other on the step's inputs.
    fn node_by_node(&self, isa: Isa, inputs: &[&Value]) -> anyhow::Result<Value> {
        let mut previous: Option<Value> = None;
        for op in &self.operations {
            let args: Vec<&Value> = op
                .operands
                .iter()
                .map(|o| match o {
                    Operand::Input(i) => Some(inputs[*i]),
                    Operand::Previous => previous.as_ref(),
                })
                .collect::<Option<_>>()
                .expect("only operations after the first read the previous result");
            let value = ops::run_on(isa, &op.node, &args)
                .map_err(|e| e.context(format!("{} node {:?}", op.node.op_type, op.node.name)))?;
            previous = Some(value);
        }
        previous.context("a chain has operations")
    }
}

/// The inputs' data and the shape they broadcast to, when every input is f32 and they do.
fn fusable<'v>(inputs: &[&'v Value]) -> Option<(smallvec::SmallVec<[&'v [f32]; 4]>, Shape)> {
    let mut shape = Shape::new();
    let mut data = smallvec::SmallVec::new();
    for v in inputs {
        let Value::F32(d, s) = v else { return None };
        shape = ops::broadcast_shapes(&shape, s).ok()?.2;
        data.push(&d[..]);
    }
    Some((data, shape))
}

/// How an operation reads an operand across the output.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// One value per output, in the output's order.
    Full(&'a [f32]),
    /// One value for every output.
    Repeated(f32),
    /// A value of another shape broadcast to the output.
    Broadcast(&'a [f32], &'a [usize]),
    /// The output's own values (the operation runs in place).
    Output,
}

impl<'a> Source<'a> {
    /// How `data` of `shape` is read across an output of shape `out`.
    fn of(data: &'a [f32], shape: &'a [usize], out: &[usize]) -> Source<'a> {
        if data.len() == 1 {
            Source::Repeated(data[0])
        } else if shape == out {
            Source::Full(data)
        } else {
            Source::Broadcast(data, shape)
        }
    }

    /// The operand over outputs `range` when it is not broadcast.
    fn whole(self, range: core::ops::Range<usize>) -> Option<RowOperand<'a>> {
        match self {
            Source::Full(d) => Some(RowOperand::Values(&d[range])),
            Source::Repeated(v) => Some(RowOperand::Repeated(v)),
            Source::Output => Some(RowOperand::Output),
            Source::Broadcast(..) => None,
        }
    }
}

/// `dst = op(a, b)` over the output `shape`: in one pass when no operand is broadcast, else in
/// units of rows along the last axis (as many rows as share each broadcast operand's row or
/// value), each unit's found by an odometer over the leading axes.
fn apply(
    row_ops: RowOps,
    op: RowOp,
    [a, b]: [Source<'_>; 2],
    shape: &[usize],
    dst: &mut [f32],
) -> Result<(), mf_kernels::KernelError> {
    let parallel = dst.len() >= PARALLEL_ELEMENTS;
    let failed = std::sync::atomic::AtomicBool::new(false);
    let fail = || failed.store(true, std::sync::atomic::Ordering::Relaxed);
    if a.whole(0..0).is_some() && b.whole(0..0).is_some() {
        let chunk = dst.len().div_ceil(team::threads()).max(1);
        team::for_each_chunk(dst, chunk, parallel, &|i, part| {
            let range = i * chunk..i * chunk + part.len();
            let (x, y) = (a.whole(range.clone()), b.whole(range));
            if let (Some(x), Some(y)) = (x, y)
                && row_ops.apply(op, x, y, part).is_ok()
            {
                return;
            }
            fail();
        });
    } else {
        let cols = shape.last().copied().unwrap_or(1).max(1);
        let outer = &shape[..shape.len().saturating_sub(1)];
        let walks = [a, b].map(|s| Walk::of(s, outer, cols));
        // The trailing leading axes along which no broadcast operand moves (a sample's tokens
        // under its adaLN scale): their rows form one unit, each such operand's row tiled
        // along it, so that a unit is one call of the row kernel, not one per row.
        let still = outer
            .iter()
            .enumerate()
            .rev()
            .take_while(|&(axis, _)| walks.iter().all(|w| w.still_along(axis)))
            .count();
        let (outer, grouped) = outer.split_at(outer.len() - still);
        let unit = (cols * grouped.iter().product::<usize>()).max(1);
        team::for_each_run(dst, unit, parallel, &|first, run| {
            let mut index = Shape::from_elem(0, outer.len());
            unravel(first, outer, &mut index);
            let mut at = walks.each_ref().map(|w| w.offset(&index));
            for (r, out_row) in run.chunks_exact_mut(unit).enumerate() {
                let start = (first + r) * unit;
                let x = walks[0].row(at[0], start, [cols, unit]);
                let y = walks[1].row(at[1], start, [cols, unit]);
                if row_ops.apply(op, x, y, out_row).is_err() {
                    fail();
                }
                // The next unit: an odometer over the leading axes left.
                for axis in (0..outer.len()).rev() {
                    index[axis] += 1;
                    for (a, w) in at.iter_mut().zip(&walks) {
                        *a += w.strides.get(axis).copied().unwrap_or(0);
                    }
                    if index[axis] < outer[axis] {
                        break;
                    }
                    for (a, w) in at.iter_mut().zip(&walks) {
                        *a -= w.strides.get(axis).copied().unwrap_or(0) * outer[axis];
                    }
                    index[axis] = 0;
                }
            }
        });
    }
    match failed.into_inner() {
        true => Err(mf_kernels::KernelError::Operands(
            "an operand's row is not the output's length",
        )),
        false => Ok(()),
    }
}

/// An operand read row by row: an unbroadcast one at the output's own row, a broadcast one at
/// its own offset (`strides` along the output's leading axes, 0 where it is broadcast).
struct Walk<'a> {
    source: Source<'a>,
    strides: Shape,
    /// Whether a broadcast operand's rows hold a value per column (else one per row).
    columns: bool,
}

impl<'a> Walk<'a> {
    /// The walk of `source` over an output with leading axes `outer` and rows of `cols`.
    fn of(source: Source<'a>, outer: &[usize], cols: usize) -> Walk<'a> {
        let Source::Broadcast(_, shape) = source else {
            return Walk {
                source,
                strides: Shape::new(),
                columns: true,
            };
        };
        let rank = outer.len() + 1;
        let padded: Shape = std::iter::repeat_n(1, rank.saturating_sub(shape.len()))
            .chain(shape.iter().copied())
            .collect();
        let contiguous = ops::strides(&padded);
        Walk {
            source,
            strides: (0..outer.len())
                .map(|a| if padded[a] == 1 { 0 } else { contiguous[a] })
                .collect(),
            columns: padded.last() == Some(&cols) && cols != 1,
        }
    }

    /// The operand's offset at the leading index `index`.
    fn offset(&self, index: &[usize]) -> usize {
        index.iter().zip(&self.strides).map(|(i, s)| i * s).sum()
    }

    /// Whether the operand reads the same row at every index along leading `axis` (true for
    /// every operand but a broadcast one that moves along it).
    fn still_along(&self, axis: usize) -> bool {
        !matches!(self.source, Source::Broadcast(..)) || self.strides[axis] == 0
    }

    /// The operand over the `unit` outputs starting at value `start` (rows of `cols`, along
    /// which a broadcast operand is still), its own at `at`.
    fn row(&self, at: usize, start: usize, [cols, unit]: [usize; 2]) -> RowOperand<'a> {
        match self.source {
            Source::Full(d) => RowOperand::Values(&d[start..start + unit]),
            Source::Repeated(v) => RowOperand::Repeated(v),
            Source::Output => RowOperand::Output,
            Source::Broadcast(d, _) if self.columns && unit == cols => {
                RowOperand::Values(&d[at..at + cols])
            }
            Source::Broadcast(d, _) if self.columns => RowOperand::Tiled(&d[at..at + cols]),
            Source::Broadcast(d, _) => RowOperand::Repeated(d[at]),
        }
    }
}

/// `m`'s index in row-major `shape`.
fn unravel(mut m: usize, shape: &[usize], index: &mut [usize]) {
    for (i, &d) in index.iter_mut().zip(shape).rev() {
        *i = m % d;
        m /= d;
    }
}

/// `steps` with every run of element-wise steps (two or more, each one's output read by the
/// next alone and not the graph's output) fused into one [`Slotted::Chain`], placed where its
/// last step was: each step's other operands are computed by then.
pub(super) fn fuse_chains(steps: Vec<Slotted>, graph_output: usize) -> Vec<Slotted> {
    let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for &slot in step.inputs() {
            let list = readers.entry(slot).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
    }
    let arith = |step: &Slotted| match step {
        Slotted::Op {
            node,
            inputs,
            output,
        } => row_op(node, inputs.len()).map(|op| (op, *output)),
        _ => None,
    };
    let mut steps: Vec<Option<Slotted>> = steps.into_iter().map(Some).collect();
    for first in 0..steps.len() {
        let Some((_, mut value)) = steps[first].as_ref().and_then(arith) else {
            continue;
        };
        let mut members = vec![first];
        while value != graph_output
            && let Some(&[next]) = readers.get(&value).map(Vec::as_slice)
            && let Some((_, output)) = steps[next].as_ref().and_then(arith)
        {
            members.push(next);
            value = output;
        }
        if members.len() < 2 {
            continue;
        }
        let mut inputs: Vec<usize> = Vec::new();
        let mut operations = Vec::with_capacity(members.len());
        let mut previous = None;
        for &m in &members {
            let Some(Slotted::Op {
                node,
                inputs: reads,
                output,
            }) = steps[m].take()
            else {
                unreachable!("members are element-wise steps")
            };
            let operands = reads
                .iter()
                .map(|slot| match inputs.iter().position(|s| s == slot) {
                    _ if previous == Some(*slot) => Operand::Previous,
                    Some(i) => Operand::Input(i),
                    None => {
                        inputs.push(*slot);
                        Operand::Input(inputs.len() - 1)
                    }
                })
                .collect();
            let op = row_op(&node, reads.len()).expect("checked when chosen");
            operations.push(Operation { op, operands, node });
            previous = Some(output);
        }
        let last = *members.last().expect("two members at least");
        steps[last] = Some(Slotted::Chain {
            inputs,
            output: value,
            chain: Box::new(Chain { operations }),
        });
    }
    steps.into_iter().flatten().collect()
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::NativeEngine;
    use crate::native::tests::{floats, info, op, run_nodes};

    /// `x · (1 + s)`-like steps and more: every kind of operand (the output's shape, a row
    /// broadcast over rows, a value per row, a scalar constant, an earlier result twice),
    /// each operation's result read by the next alone.
    fn chain_graph() -> onnx::GraphProto {
        onnx::GraphProto {
            node: vec![
                op("Mul", &["x", "s"], "t0"),
                op("Add", &["x", "t0"], "t1"),
                op("Mul", &["t1", "t1"], "t2"),
                op("Sub", &["c", "t2"], "t3"),
                op("Div", &["r", "t3"], "t4"),
                op("Sigmoid", &["t4"], "t5"),
                op("Add", &["t5", "x"], "y"),
            ],
            initializer: vec![floats("c", &[], vec![0.75])],
            input: ["x", "s", "r"].map(info).to_vec(),
            output: vec![info("y")],
            ..Default::default()
        }
    }

    fn tensor(shape: &[usize], seed: usize) -> Value {
        let count: usize = shape.iter().product();
        let data = (0..count)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        Value::F32(data, shape.into())
    }

    #[test]
    fn a_fused_chain_equals_its_nodes_bit_for_bit() {
        let isa = Isa::detect();
        let graph = chain_graph();
        let engine = NativeEngine::from_graph(&graph, isa).unwrap();
        assert_eq!(engine.summary().other_ops, 1, "one fused step");
        // Small, shared across threads (2^15 outputs and more), leading axes broadcast from
        // both sides, a row of one value, and a row broadcast along an inner axis but not
        // along the one before it (units of four rows, its row tiled along them).
        let cases: [[&[usize]; 3]; 5] = [
            [&[2, 3, 8], &[2, 1, 8], &[2, 3, 1]],
            [&[4, 64, 128], &[4, 1, 128], &[1, 64, 1]],
            [&[3, 5], &[5], &[3, 1]],
            [&[2, 3, 1], &[1, 1, 1], &[2, 1, 1]],
            [&[2, 3, 4, 8], &[1, 3, 1, 8], &[2, 1, 4, 1]],
        ];
        for [sx, ss, sr] in cases {
            let (x, s, r) = (tensor(sx, 1), tensor(ss, 2), tensor(sr, 3));
            let inputs = [("x", &x), ("s", &s), ("r", &r)];
            let got = engine
                .run(inputs.iter().map(|(n, v)| (*n, (*v).clone())).collect())
                .unwrap();
            let want = run_nodes(&graph, &inputs);
            let (Value::F32(g, gs), Value::F32(w, ws)) = (&got, &want) else {
                panic!("float outputs expected")
            };
            assert_eq!(gs, ws, "{sx:?}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(g), bits(w), "{sx:?} {ss:?} {sr:?}");
        }
        // Shapes that do not broadcast: the nodes' own error, naming the node.
        let inputs = vec![
            ("x", tensor(&[2, 3, 8], 1)),
            ("s", tensor(&[2, 1, 5], 2)),
            ("r", tensor(&[2, 3, 1], 3)),
        ];
        let err = format!("{:#}", engine.run(inputs).unwrap_err());
        assert!(
            err.contains("Mul node \"t0\"") && err.contains("broadcast"),
            "{err}"
        );
    }

    #[test]
    fn a_value_read_twice_ends_a_chain() {
        // t0 is read by two steps: the Mul stays a step of its own, the Add and Sub fuse.
        let mut graph = chain_graph();
        graph.node = vec![
            op("Mul", &["x", "s"], "t0"),
            op("Add", &["t0", "r"], "t1"),
            op("Sub", &["t0", "t1"], "y"),
        ];
        let engine = NativeEngine::from_graph(&graph, Isa::detect()).unwrap();
        let labels: Vec<String> = engine.steps.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            ["Mul \"t0\"", "Element-wise chain (Add, Sub)"],
            "{labels:?}"
        );
        let (x, s, r) = (
            tensor(&[2, 3, 8], 1),
            tensor(&[8], 2),
            tensor(&[2, 3, 1], 3),
        );
        let inputs = [("x", &x), ("s", &s), ("r", &r)];
        let got = engine
            .run(inputs.iter().map(|(n, v)| (*n, (*v).clone())).collect())
            .unwrap();
        assert_eq!(got, run_nodes(&graph, &inputs));
    }
}
