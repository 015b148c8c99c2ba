//! Element-wise chains: Add, Sub, Mul, Div and Sigmoid steps in a row, each intermediate value
//! read by the next alone, run as one step (the DiT's adaLN `x · (1 + scale) + shift` and
//! gated residuals, three and two nodes each). Each operation runs over the whole output (in
//! units of the rows that share a broadcast operand's row, that row tiled along the unit)
//! through mf-kernels' [`RowOps`], the first into a fresh buffer and every later one in place
//! in that buffer, which holds the previous result: one buffer per chain and one dispatch
//! instead of a step per node. An operand that is a Slice of a wider value, unsqueezed (the
//! adaLN rows of one modulation product), is read in place through [`Columns`], those two
//! steps gone too. Each value goes through the nodes' own operations in their order, so the
//! step gives the same bits as the nodes. Anything else (an operand that is not f32, shapes
//! that do not broadcast) runs the nodes one by one, with their errors.
use std::collections::HashMap;
use std::sync::{Mutex, TryLockError};

use anyhow::Context;
use mf_core::onnx;
use mf_kernels::pointwise::{RowOp, RowOperand, RowOps};
use mf_kernels::{Isa, team};

use super::columns::{Columns, View};
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
    /// Per input, the columns of it that the operations read, if absorbed (else the input
    /// itself); empty when none is.
    columns: Vec<Option<Columns>>,
    /// The last run's plan: a run's shapes repeat, and working out how each operation walks
    /// its operands costs more than the operations on a DiT's few thousand values.
    last: Mutex<Option<Plan>>,
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
        // The last run's plan, when its shapes are these (a concurrent run holding it works
        // out a plan of its own; a panic in an earlier run left it whole: a plan is stored
        // only once made).
        let mut kept = match self.last.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let mut own = None;
        let slot: &mut Option<Plan> = kept.as_deref_mut().unwrap_or(&mut own);
        let plan = match slot {
            Some(plan) if plan.made_for(inputs) => plan,
            _ => slot.insert(self.plan(isa, inputs)?),
        };
        let Some((shape, walks)) = &plan.walks else {
            return self.node_by_node(isa, inputs);
        };
        // Columns that strides cannot read row by row, sliced out by their nodes.
        let sliced: Vec<Option<Value>> = match plan.sliced.contains(&true) {
            true => (plan.sliced.iter().zip(inputs).enumerate())
                .map(
                    |(i, (&sliced, &input))| match (sliced, self.columns_of(i)) {
                        (true, Some(c)) => c.run_nodes(isa, input).map(Some),
                        _ => Ok(None),
                    },
                )
                .collect::<anyhow::Result<_>>()?,
            false => Vec::new(),
        };
        let data: Option<smallvec::SmallVec<[&[f32]; 4]>> = (inputs.iter().enumerate())
            .map(
                |(i, &input)| match sliced.get(i).and_then(Option::as_ref).unwrap_or(input) {
                    Value::F32(data, _) => Some(data.as_slice()),
                    _ => None,
                },
            )
            .collect();
        let Some(data) = data else {
            return self.node_by_node(isa, inputs);
        };
        let total = element_count(shape)?;
        let row_ops = RowOps::new(isa)?;
        // The first operation writes a fresh buffer; each later one runs in it, where the
        // previous result is.
        let mut out = floats.take(total);
        for (op, walk) in self.operations.iter().zip(walks) {
            apply(row_ops, op.op, walk, &data, &mut out)?;
        }
        Ok(Value::F32(out, shape.clone()))
    }

    /// How a run on `inputs` reads them and walks its output: absorbed columns through
    /// strides (or sliced out by their nodes where strides cannot read them row by row), and
    /// each operation's operands over the shape the reads broadcast to.
    fn plan(&self, isa: Isa, inputs: &[&Value]) -> anyhow::Result<Plan> {
        let mut sliced = smallvec::SmallVec::new();
        // Per input: how it is read; `None` when it is not f32.
        let mut reads: smallvec::SmallVec<[Option<Placed>; 4]> = smallvec::SmallVec::new();
        for (i, &input) in inputs.iter().enumerate() {
            let float = |value: &Value| matches!(value, Value::F32(..));
            let (slice, read) = match self.columns_of(i) {
                None => (false, float(input).then(|| Placed::whole(input))),
                Some(c) => match row_view(c, input) {
                    Some(view) => {
                        let read = Placed {
                            shape: view.shape,
                            strides: Some(view.strides),
                            offset: view.offset,
                        };
                        (false, Some(read))
                    }
                    None => {
                        let value = c.run_nodes(isa, input)?;
                        (true, float(&value).then(|| Placed::whole(&value)))
                    }
                },
            };
            sliced.push(slice);
            reads.push(read);
        }
        let walks = reads
            .iter()
            .map(Option::as_ref)
            .collect::<Option<smallvec::SmallVec<[_; 4]>>>()
            .and_then(|reads| self.walks(&reads));
        Ok(Plan {
            shapes: inputs.iter().map(|v| v.shape().into()).collect(),
            sliced,
            walks,
        })
    }

    /// The shape `reads` broadcast to and each operation's walk over it; `None` when they do
    /// not broadcast to one shape.
    fn walks(&self, reads: &[&Placed]) -> Option<(Shape, Vec<OpWalk>)> {
        let mut shape = Shape::new();
        for read in reads {
            shape = ops::broadcast_shapes(&shape, &read.shape).ok()?.2;
        }
        let walks = self
            .operations
            .iter()
            .map(|op| {
                let reading = |position: usize| match op.operands.get(position) {
                    Some(Operand::Input(i)) => {
                        let read = reads[*i];
                        let geometry = (&read.shape[..], read.strides.as_deref(), read.offset);
                        Reading::of(*i, geometry, &shape)
                    }
                    // Sigmoid reads its one operand.
                    Some(Operand::Previous) | None => (Reading::Output, None),
                };
                OpWalk::of([reading(0), reading(1)], &shape)
            })
            .collect();
        Some((shape, walks))
    }

    /// The columns input `i` is read through, if any.
    fn columns_of(&self, i: usize) -> Option<&Columns> {
        self.columns.get(i).and_then(Option::as_ref)
    }

    /// The nodes one after the other on the step's inputs (absorbed columns sliced out by
    /// their own nodes first).
    fn node_by_node(&self, isa: Isa, inputs: &[&Value]) -> anyhow::Result<Value> {
        let sliced: Vec<Option<Value>> = (0..inputs.len())
            .map(|i| {
                self.columns_of(i)
                    .map(|c| c.run_nodes(isa, inputs[i]))
                    .transpose()
            })
            .collect::<anyhow::Result<_>>()?;
        let inputs: Vec<&Value> = inputs
            .iter()
            .zip(&sliced)
            .map(|(&input, sliced)| sliced.as_ref().unwrap_or(input))
            .collect();
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

/// How a run reads its inputs and walks its output, worked out from the inputs' shapes and
/// kept for the next run on the same shapes.
struct Plan {
    /// The inputs' shapes it was made for.
    shapes: smallvec::SmallVec<[Shape; 4]>,
    /// Per input, whether its absorbed columns are sliced out by their nodes (strides cannot
    /// read them row by row); else it is read in place, through its columns' strides if any.
    sliced: smallvec::SmallVec<[bool; 4]>,
    /// The output's shape and each operation's walk; `None` when the reads are not all f32 or
    /// do not broadcast to one shape (the nodes then run one by one, with their errors).
    walks: Option<(Shape, Vec<OpWalk>)>,
}

impl Plan {
    /// Whether it was made for inputs of these shapes.
    fn made_for(&self, inputs: &[&Value]) -> bool {
        self.shapes.len() == inputs.len()
            && (self.shapes.iter().zip(inputs)).all(|(s, v)| s[..] == *v.shape())
    }
}

/// How an operation reads one operand across the output, given each input's data.
#[derive(Clone, Copy)]
enum Reading {
    /// Input `i`, one value per output, in the output's order.
    Full(usize),
    /// Input `i`'s value at this index, for every output.
    Repeated(usize, usize),
    /// Input `i` broadcast to the output (or read through strides): see its [`Walk`].
    Broadcast(usize),
    /// The output's own values (the operation runs in place).
    Output,
}

/// An f32 input as the operations read it: its shape, its strides (row-major when none) and
/// its first element.
struct Placed {
    shape: Shape,
    strides: Option<Shape>,
    offset: usize,
}

impl Placed {
    /// A whole value, row-major from its first element.
    fn whole(value: &Value) -> Placed {
        Placed {
            shape: value.shape().into(),
            strides: None,
            offset: 0,
        }
    }
}

/// A [`Placed`] input borrowed: shape, strides (row-major when none), first element.
type Geometry<'a> = (&'a [usize], Option<&'a [usize]>, usize);

impl Reading {
    /// How input `i` of `geometry` is read across an output of shape `out`, with that
    /// geometry when it is broadcast.
    fn of<'g>(i: usize, geometry: Geometry<'g>, out: &[usize]) -> (Reading, Option<Geometry<'g>>) {
        let (shape, strides, offset) = geometry;
        if shape.iter().product::<usize>() == 1 {
            (Reading::Repeated(i, offset), None)
        } else if strides.is_none() && shape == out {
            (Reading::Full(i), None)
        } else {
            (Reading::Broadcast(i), Some(geometry))
        }
    }

    /// The operand over outputs `range` when it is not broadcast.
    fn whole<'a>(
        self,
        data: &[&'a [f32]],
        range: core::ops::Range<usize>,
    ) -> Option<RowOperand<'a>> {
        match self {
            Reading::Full(i) => Some(RowOperand::Values(&data[i][range])),
            Reading::Repeated(i, at) => Some(RowOperand::Repeated(data[i][at])),
            Reading::Output => Some(RowOperand::Output),
            Reading::Broadcast(_) => None,
        }
    }
}

/// How one operation walks the output.
enum OpWalk {
    /// No operand broadcast: the whole output in one pass (in chunks across the team).
    Whole([Reading; 2]),
    /// In units of rows along the last axis (as many rows as share each broadcast operand's
    /// row or value).
    Units(Box<Units>),
}

/// An operation's walk over units of rows, each unit's found by an odometer over the leading
/// axes `outer`.
struct Units {
    walks: [Walk; 2],
    outer: Shape,
    cols: usize,
    unit: usize,
}

impl OpWalk {
    /// The walk of an operation reading `operands` over an output of `shape`.
    fn of(operands: [(Reading, Option<Geometry<'_>>); 2], shape: &[usize]) -> OpWalk {
        if operands
            .iter()
            .all(|(r, _)| !matches!(r, Reading::Broadcast(_)))
        {
            return OpWalk::Whole(operands.map(|(r, _)| r));
        }
        let cols = shape.last().copied().unwrap_or(1).max(1);
        let outer = &shape[..shape.len().saturating_sub(1)];
        let walks = operands.map(|(reading, geometry)| Walk::of(reading, geometry, outer, cols));
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
        OpWalk::Units(Box::new(Units {
            walks,
            outer: outer.into(),
            cols,
            unit: (cols * grouped.iter().product::<usize>()).max(1),
        }))
    }
}

/// `dst = op(a, b)` over the output as `walk` reads the operands from `data` (each input's).
fn apply(
    row_ops: RowOps,
    op: RowOp,
    walk: &OpWalk,
    data: &[&[f32]],
    dst: &mut [f32],
) -> Result<(), mf_kernels::KernelError> {
    let parallel = dst.len() >= PARALLEL_ELEMENTS;
    let failed = std::sync::atomic::AtomicBool::new(false);
    let fail = || failed.store(true, std::sync::atomic::Ordering::Relaxed);
    match walk {
        OpWalk::Whole([a, b]) => {
            let chunk = dst.len().div_ceil(team::threads()).max(1);
            team::for_each_chunk(dst, chunk, parallel, &|i, part| {
                let range = i * chunk..i * chunk + part.len();
                let (x, y) = (a.whole(data, range.clone()), b.whole(data, range));
                if let (Some(x), Some(y)) = (x, y)
                    && row_ops.apply(op, x, y, part).is_ok()
                {
                    return;
                }
                fail();
            });
        }
        OpWalk::Units(units) => {
            let Units {
                walks,
                outer,
                cols,
                unit,
            } = units.as_ref();
            let (cols, unit) = (*cols, *unit);
            team::for_each_run(dst, unit, parallel, &|first, run| {
                let mut index = Shape::from_elem(0, outer.len());
                unravel(first, outer, &mut index);
                let mut at = walks.each_ref().map(|w| w.offset(&index));
                for (r, out_row) in run.chunks_exact_mut(unit).enumerate() {
                    let start = (first + r) * unit;
                    let x = walks[0].row(data, at[0], start, [cols, unit]);
                    let y = walks[1].row(data, at[1], start, [cols, unit]);
                    if row_ops.apply(op, x, y, out_row).is_err() {
                        fail();
                    }
                    // The next unit: an odometer over the leading axes left.
                    for axis in (0..outer.len()).rev() {
                        index[axis] += 1;
                        for (a, w) in at.iter_mut().zip(walks) {
                            *a += w.strides.get(axis).copied().unwrap_or(0);
                        }
                        if index[axis] < outer[axis] {
                            break;
                        }
                        for (a, w) in at.iter_mut().zip(walks) {
                            *a -= w.strides.get(axis).copied().unwrap_or(0) * outer[axis];
                        }
                        index[axis] = 0;
                    }
                }
            });
        }
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
struct Walk {
    reading: Reading,
    strides: Shape,
    /// The operand's first element.
    base: usize,
    /// Whether a broadcast operand's rows hold a value per column (else one per row).
    columns: bool,
}

impl Walk {
    /// The walk of `reading` (of `geometry` when broadcast) over an output with leading axes
    /// `outer` and rows of `cols`.
    fn of(reading: Reading, geometry: Option<Geometry<'_>>, outer: &[usize], cols: usize) -> Walk {
        let Some((shape, strides, base)) = geometry else {
            return Walk {
                reading,
                strides: Shape::new(),
                base: 0,
                columns: true,
            };
        };
        let rank = outer.len() + 1;
        let pad = rank.saturating_sub(shape.len());
        let padded: Shape = std::iter::repeat_n(1, pad)
            .chain(shape.iter().copied())
            .collect();
        let padded_strides: Shape = match strides {
            Some(strides) => std::iter::repeat_n(0, pad)
                .chain(strides.iter().copied())
                .collect(),
            None => ops::strides(&padded),
        };
        Walk {
            reading,
            strides: (0..outer.len())
                .map(|a| if padded[a] == 1 { 0 } else { padded_strides[a] })
                .collect(),
            base,
            columns: padded.last() == Some(&cols) && cols != 1,
        }
    }

    /// The operand's offset at the leading index `index`.
    fn offset(&self, index: &[usize]) -> usize {
        self.base
            + index
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
    }

    /// Whether the operand reads the same row at every index along leading `axis` (true for
    /// every operand but a broadcast one that moves along it).
    fn still_along(&self, axis: usize) -> bool {
        !matches!(self.reading, Reading::Broadcast(_)) || self.strides[axis] == 0
    }

    /// The operand over the `unit` outputs starting at value `start` (rows of `cols`, along
    /// which a broadcast operand is still), its own at `at`, from `data` (each input's).
    fn row<'a>(
        &self,
        data: &[&'a [f32]],
        at: usize,
        start: usize,
        [cols, unit]: [usize; 2],
    ) -> RowOperand<'a> {
        match self.reading {
            Reading::Full(i) => RowOperand::Values(&data[i][start..start + unit]),
            Reading::Repeated(i, v) => RowOperand::Repeated(data[i][v]),
            Reading::Output => RowOperand::Output,
            Reading::Broadcast(i) if self.columns && unit == cols => {
                RowOperand::Values(&data[i][at..at + cols])
            }
            Reading::Broadcast(i) if self.columns => RowOperand::Tiled(&data[i][at..at + cols]),
            Reading::Broadcast(i) => RowOperand::Repeated(data[i][at]),
        }
    }
}

/// `value`'s view through `columns` when it is f32 and the view's rows are contiguous (its
/// last axis of stride 1, or of one value), as the row kernels read them.
fn row_view(columns: &Columns, value: &Value) -> Option<View> {
    let Value::F32(_, shape) = value else {
        return None;
    };
    let view = columns.view(shape)?;
    let rows = match (view.shape.last(), view.strides.last()) {
        (Some(&d), Some(&s)) => d == 1 || s == 1,
        _ => true,
    };
    rows.then_some(view)
}

/// `m`'s index in row-major `shape`.
fn unravel(mut m: usize, shape: &[usize], index: &mut [usize]) {
    for (i, &d) in index.iter_mut().zip(shape).rev() {
        *i = m % d;
        m /= d;
    }
}

/// The steps reading each slot, each step once, in order.
fn readers(steps: &[Slotted]) -> HashMap<usize, Vec<usize>> {
    let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for &slot in step.inputs() {
            let list = readers.entry(slot).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
    }
    readers
}

/// `steps` with every run of element-wise steps (two or more, each one's output read by the
/// next alone and not the graph's output) fused into one [`Slotted::Chain`], placed where its
/// last step was: each step's other operands are computed by then.
pub(super) fn fuse_chains(steps: Vec<Slotted>, graph_output: usize) -> Vec<Slotted> {
    let readers = readers(&steps);
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
            chain: Box::new(Chain {
                operations,
                columns: Vec::new(),
                last: Mutex::default(),
            }),
        });
    }
    steps.into_iter().flatten().collect()
}

/// `steps` with every chain input that is a Reshape or Unsqueeze of a Slice of one axis
/// (their other operands constants, each read by the next step alone, neither the graph's
/// output) read by the chain through [`Columns`] from the sliced value: the two steps gone.
pub(super) fn absorb_columns(
    steps: Vec<Slotted>,
    constants: &[Option<Value>],
    graph_output: usize,
) -> Vec<Slotted> {
    let readers = readers(&steps);
    let producer: HashMap<usize, usize> = (steps.iter().enumerate())
        .filter_map(|(i, step)| match step {
            Slotted::Op { output, .. } => Some((*output, i)),
            _ => None,
        })
        .collect();
    // The Op step writing `slot` with `op_type`, read by one step alone, and its node with
    // its constant operands (every input but the first).
    let sole_op = |steps: &[Option<Slotted>], slot: usize, op_type: &str| {
        if slot == graph_output || readers.get(&slot).map(Vec::len) != Some(1) {
            return None;
        }
        let at = *producer.get(&slot)?;
        let Some(Slotted::Op { node, inputs, .. }) = &steps[at] else {
            return None;
        };
        if node.op_type != op_type || inputs.len() != node.input.len() {
            return None;
        }
        let operands = inputs[1..]
            .iter()
            .map(|&c| constants[c].clone())
            .collect::<Option<Vec<Value>>>()?;
        Some((at, inputs[0], (node.clone(), operands)))
    };
    let mut steps: Vec<Option<Slotted>> = steps.into_iter().map(Some).collect();
    for c in 0..steps.len() {
        let Some(Slotted::Chain { inputs, .. }) = &steps[c] else {
            continue;
        };
        let mut found = Vec::new();
        for (position, &slot) in inputs.iter().enumerate() {
            let then = ["Unsqueeze", "Reshape"]
                .into_iter()
                .find_map(|op| sole_op(&steps, slot, op));
            let Some((then_at, sliced, then)) = then else {
                continue;
            };
            let Some((slice_at, wide, slice)) = sole_op(&steps, sliced, "Slice") else {
                continue;
            };
            if let Some(columns) = Columns::new(slice, then) {
                found.push((position, [then_at, slice_at], wide, columns));
            }
        }
        let Some(Slotted::Chain { inputs, chain, .. }) = &mut steps[c] else {
            unreachable!("step {c} is a chain")
        };
        let mut gone = Vec::new();
        for (position, absorbed, wide, columns) in found {
            inputs[position] = wide;
            chain.columns.resize_with(inputs.len(), || None);
            chain.columns[position] = Some(columns);
            gone.extend(absorbed);
        }
        for at in gone {
            steps[at] = None;
        }
    }
    steps.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::NativeEngine;
    use crate::native::tests::{assert_bits_of_nodes, floats, info, ints, op, run_nodes};

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
        // Each case twice: the second run reads through the plan the first one kept.
        for [sx, ss, sr] in cases.into_iter().flat_map(|case| [case, case]) {
            let (x, s, r) = (tensor(sx, 1), tensor(ss, 2), tensor(sr, 3));
            let inputs = [("x", &x), ("s", &s), ("r", &r)];
            assert_bits_of_nodes(&engine, &graph, &inputs, &format!("{sx:?} {ss:?} {sr:?}"));
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

    /// The DiT's adaLN: `x · (1 + scale) + shift` with the scale and shift each a Slice of
    /// columns of one modulation row `m`, unsqueezed to broadcast over the tokens.
    fn modulation_graph(unsqueeze_axis: i64) -> onnx::GraphProto {
        let slice = |name: &str, [start, end]: [i64; 2]| {
            let mut node = op(
                "Slice",
                &[
                    "m",
                    &format!("{name}.start"),
                    &format!("{name}.end"),
                    "last",
                ],
                name,
            );
            node.name = name.into();
            (
                node,
                [
                    ints(&format!("{name}.start"), &[start]),
                    ints(&format!("{name}.end"), &[end]),
                ],
            )
        };
        let (shift, shift_bounds) = slice("shift", [0, 8]);
        let (scale, scale_bounds) = slice("scale", [8, 16]);
        let mut initializer = vec![ints("last", &[-1]), ints("axis", &[unsqueeze_axis])];
        initializer.extend(shift_bounds);
        initializer.extend(scale_bounds);
        onnx::GraphProto {
            node: vec![
                shift,
                scale,
                op("Unsqueeze", &["scale", "axis"], "scale_row"),
                op("Mul", &["x", "scale_row"], "t0"),
                op("Add", &["x", "t0"], "t1"),
                op("Unsqueeze", &["shift", "axis"], "shift_row"),
                op("Add", &["t1", "shift_row"], "y"),
            ],
            initializer,
            input: ["x", "m"].map(info).to_vec(),
            output: vec![info("y")],
            ..Default::default()
        }
    }

    #[test]
    fn columns_of_a_modulation_row_are_read_in_place_with_the_nodes_bits() {
        let graph = modulation_graph(1);
        let engine = NativeEngine::from_graph(&graph, Isa::detect()).unwrap();
        let labels: Vec<String> = engine.steps.iter().map(|s| s.label()).collect();
        assert_eq!(labels, ["Element-wise chain (Mul, Add, Add)"], "{labels:?}");
        // One image, several (their rows 24 apart in `m`), tokens over the threads' share, and
        // shapes again (a kept plan) and back (a new one).
        for [n, tokens] in [[1, 5], [3, 4], [3, 4], [2, 2048], [1, 5]] {
            let (x, m) = (tensor(&[n, tokens, 8], 1), tensor(&[n, 24], 2));
            let inputs = [("x", &x), ("m", &m)];
            assert_bits_of_nodes(&engine, &graph, &inputs, &format!("{n} images of {tokens}"));
        }
        // Runs at once on one engine, each of its own shapes: one holds the kept plan, the
        // others work out their own, and every run gets the nodes' bits.
        std::thread::scope(|scope| {
            for (n, tokens) in [(1, 5), (3, 4), (2, 7), (1, 5)] {
                let (engine, graph) = (&engine, &graph);
                scope.spawn(move || {
                    for _ in 0..20 {
                        let (x, m) = (tensor(&[n, tokens, 8], 1), tensor(&[n, 24], 2));
                        let inputs = [("x", &x), ("m", &m)];
                        assert_bits_of_nodes(engine, graph, &inputs, "a concurrent run");
                    }
                });
            }
        });
        // An Unsqueeze axis out of range: the node's own error, naming it.
        let engine = NativeEngine::from_graph(&modulation_graph(7), Isa::detect()).unwrap();
        let inputs = vec![("x", tensor(&[1, 5, 8], 1)), ("m", tensor(&[1, 24], 2))];
        let err = format!("{:#}", engine.run(inputs).unwrap_err());
        assert!(
            err.contains("Unsqueeze node") && err.contains("axis 7 out of range"),
            "{err}"
        );
    }

    #[test]
    fn columns_strides_cannot_read_are_sliced_out_by_their_nodes() {
        // The scale is columns 8..16 of each of m's rows, flattened: for one row a contiguous
        // run (read in place), for several rows runs 24 apart that a flat Reshape cannot view
        // (sliced out by the two nodes, then read as a whole).
        let initializer = vec![
            ints("start", &[8]),
            ints("end", &[16]),
            ints("last", &[-1]),
            ints("flat", &[-1]),
        ];
        let graph = onnx::GraphProto {
            node: vec![
                op("Slice", &["m", "start", "end", "last"], "sliced"),
                op("Reshape", &["sliced", "flat"], "scale"),
                op("Mul", &["x", "scale"], "t0"),
                op("Add", &["x", "t0"], "y"),
            ],
            initializer,
            input: ["x", "m"].map(info).to_vec(),
            output: vec![info("y")],
            ..Default::default()
        };
        let engine = NativeEngine::from_graph(&graph, Isa::detect()).unwrap();
        let labels: Vec<String> = engine.steps.iter().map(|s| s.label()).collect();
        assert_eq!(labels, ["Element-wise chain (Mul, Add)"], "{labels:?}");
        for rows in [1, 3, 1, 3] {
            let (x, m) = (tensor(&[rows * 8], 1), tensor(&[rows, 24], 2));
            let inputs = [("x", &x), ("m", &m)];
            assert_bits_of_nodes(&engine, &graph, &inputs, &format!("{rows} rows"));
        }
    }
}
