//! Scaled dot-product attention as exported node by node, `MatMul(Q, Kᵀ)` → `Mul(scale)` →
//! `Softmax` (last axis) → `MatMul(·, V)`, with the head-splitting Transposes before it and
//! the head-merging one after, run as one step: each image's matrices on one thread of the
//! team, each matrix read through the Transposes' strides into a small buffer of that thread,
//! its scores never written out as `[N, H, T, S]` tensors. Each operation is the node's own
//! (the same product loop, multiply and softmax row), so the step gives the same bits as the
//! nodes.
use std::cell::RefCell;

use mf_core::onnx;
use mf_kernels::layout::{Layout, copy_short, relayout};
use mf_kernels::{Isa, team};

use super::columns::Columns;
use super::{FloatPool, Planner};
use crate::ops;
use crate::tensor::{Shape, Value, element_count};

/// Multiply-adds of a call below which its matrices run on the calling thread alone.
const PARALLEL_MACS: usize = 1 << 16;

/// A fused attention: the scale, the absorbed Transposes and the nodes it stands for.
pub(super) struct Attention {
    /// The constant the scores are multiplied by (none when no Mul sits between).
    scale: Option<f32>,
    /// Per input (Q, Kᵀ, V), the Transpose it was read through, if absorbed, and its perm.
    input_transposes: [Option<(onnx::NodeProto, Vec<usize>)>; 3],
    /// Per input, the column range of a wider value it was sliced from and split into heads
    /// (Slice → Reshape before the Transpose), if absorbed.
    input_columns: [Option<Columns>; 3],
    /// The Transpose of the output, if absorbed, and its perm.
    output_transpose: Option<(onnx::NodeProto, Vec<usize>)>,
    /// The MatMul, Mul, Softmax and MatMul nodes it replaces, with the Transposes run one by
    /// one when the operands do not fit the fused path (batch dimensions that differ or
    /// broadcast, other ranks, a size 0).
    chain: Vec<onnx::NodeProto>,
}

impl Planner<'_> {
    /// The attention whose scores are the activation × activation MatMul `i`: the indices of
    /// its nodes, its three inputs and its output, and the step. `None` unless each node's
    /// output is read by the next node alone and is not a graph output.
    pub(super) fn attention(
        &self,
        i: usize,
    ) -> Option<(Vec<usize>, [String; 3], String, Attention)> {
        let scores = self.node(i);
        let is_constant = |name: &String| self.constants.contains_key(name);
        if scores.input.len() != 2 || scores.input.iter().any(is_constant) {
            return None;
        }
        let mut chain = vec![i];
        let mut value = scores.output.first()?;
        let mut scale = None;
        if let Some(mul) = self.sole_consumer(value, "Mul") {
            let node = self.node(mul);
            let other = node.input.iter().find(|v| *v != value)?;
            match self.constants.get(other) {
                Some(Value::F32(c, _)) if c.len() == 1 && node.input.len() == 2 => {
                    scale = Some(c[0]);
                }
                _ => return None,
            }
            chain.push(mul);
            value = node.output.first()?;
        }
        let softmax = self.sole_consumer(value, "Softmax")?;
        if ops::int_attr(self.node(softmax), "axis", -1) != -1 {
            return None;
        }
        chain.push(softmax);
        let weights = self.node(softmax).output.first()?;
        let product = self.sole_consumer(weights, "MatMul")?;
        let node = self.node(product);
        if node.input.len() != 2 || node.input[0] != *weights || node.input[1] == *weights {
            return None;
        }
        chain.push(product);
        let mut output = node.output.first()?.clone();
        let hidden = &chain[..chain.len() - 1];
        if hidden
            .iter()
            .any(|&h| self.is_graph_output(&self.node(h).output[0]))
        {
            return None;
        }
        let mut nodes = chain.clone();
        let mut output_transpose = None;
        if let Some(t) = self.sole_consumer(&output, "Transpose")
            && let Some(perm) = self.batch_keeping_perm(t)
            && !self.is_graph_output(&output)
        {
            nodes.push(t);
            output = self.node(t).output.first()?.clone();
            output_transpose = Some((self.node(t).clone(), perm));
        }
        // Q, Kᵀ and V, each through the Transpose that alone reads it, if any.
        let mut inputs = [&scores.input[0], &scores.input[1], &node.input[1]].map(|n| n.clone());
        let mut input_transposes = [None, None, None];
        let mut input_columns = [None, None, None];
        for ((input, transpose), columns) in inputs
            .iter_mut()
            .zip(&mut input_transposes)
            .zip(&mut input_columns)
        {
            if let Some(t) = self.sole_producer(input, "Transpose", 1)
                && let Some(perm) = self.batch_keeping_perm(t)
            {
                nodes.push(t);
                *input = self.node(t).input[0].clone();
                *transpose = Some((self.node(t).clone(), perm));
            }
            if let Some((absorbed, wide, found)) = self.columns(input) {
                nodes.extend(absorbed);
                *input = wide;
                *columns = Some(found);
            }
        }
        nodes.sort_unstable();
        let attention = Attention {
            scale,
            input_transposes,
            input_columns,
            output_transpose,
            chain: chain.iter().map(|&c| self.node(c).clone()).collect(),
        };
        Some((nodes, inputs, output, attention))
    }

    /// `value` as a Reshape (its shape a constant) of a Slice of one axis with step 1 (its
    /// bounds constants), each read by the next alone: the two nodes, the sliced value and
    /// the view.
    fn columns(&self, value: &str) -> Option<([usize; 2], String, Columns)> {
        let r = self.sole_producer(value, "Reshape", 1)?;
        let s = self.sole_producer(&self.node(r).input[0], "Slice", 1)?;
        let with_constants = |node: &onnx::NodeProto| -> Option<(onnx::NodeProto, Vec<Value>)> {
            let constants = node.input[1..]
                .iter()
                .map(|n| self.constants.get(n).cloned())
                .collect::<Option<_>>()?;
            Some((node.clone(), constants))
        };
        let (slice, reshape) = (self.node(s), self.node(r));
        let columns = Columns::new(with_constants(slice)?, with_constants(reshape)?)?;
        Some(([r, s], slice.input[0].clone(), columns))
    }

    /// The explicit perm of Transpose `t` if it keeps axis 0 in place.
    fn batch_keeping_perm(&self, t: usize) -> Option<Vec<usize>> {
        let node = self.node(t);
        let perm = node.attribute.iter().find(|a| a.name == "perm")?;
        let perm: Vec<usize> = perm
            .ints
            .iter()
            .map(|&p| usize::try_from(p).ok())
            .collect::<Option<_>>()?;
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        let is_permutation = sorted.iter().enumerate().all(|(i, &p)| i == p);
        (is_permutation && perm.first() == Some(&0) && node.input.len() == 1).then_some(perm)
    }
}

std::thread_local! {
    /// A thread's gathered operands, scores and weights for one matrix.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A thread's product of one matrix, before it is placed in the output.
    static PRODUCT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A tensor read through a permutation: logical axis `a` is the source's axis `perm[a]`,
/// starting at value `offset`.
struct View<'a> {
    data: &'a [f32],
    shape: Shape,
    strides: Shape,
    offset: usize,
}

impl<'a> View<'a> {
    /// `data` of `shape`, through its absorbed `columns` if any, seen through `perm`; `None`
    /// when the ranks differ or the columns do not apply.
    fn new(
        data: &'a [f32],
        shape: &[usize],
        columns: Option<&Columns>,
        perm: Option<&[usize]>,
    ) -> Option<View<'a>> {
        let (shape, strides, offset) = match columns {
            None => (Shape::from_slice(shape), ops::strides(shape), 0),
            Some(c) => {
                let view = c.view(shape)?;
                (view.shape, view.strides, view.offset)
            }
        };
        match perm {
            None => Some(View {
                data,
                shape,
                strides,
                offset,
            }),
            Some(perm) if perm.len() == shape.len() => Some(View {
                data,
                shape: perm.iter().map(|&p| shape[p]).collect(),
                strides: perm.iter().map(|&p| strides[p]).collect(),
                offset,
            }),
            Some(_) => None,
        }
    }

    /// The `[rows, cols]` matrix at batch index `batch` (its leading axes) copied into `out`;
    /// a transposed one (Kᵀ: its columns contiguous in `data`) copied column by column into
    /// `temp` (as long as `out`) and transposed from there.
    fn matrix_into(&self, batch: &[usize], out: &mut [f32], temp: &mut [f32]) {
        let rank = self.shape.len();
        let start: usize = self.offset
            + batch
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        let (rows, cols) = (self.shape[rank - 2], self.shape[rank - 1]);
        let (row_step, col_step) = (self.strides[rank - 2], self.strides[rank - 1]);
        let out = &mut out[..rows * cols];
        if col_step != 1 && row_step == 1 && rows > 1 {
            let columns = &mut temp[..rows * cols];
            for (c, column) in columns.chunks_exact_mut(rows).enumerate() {
                let at = start + c * col_step;
                copy_short(column, &self.data[at..at + rows]);
            }
            relayout(columns, [1, cols, rows], Layout::Nchw, out);
            return;
        }
        for (r, line) in out.chunks_exact_mut(cols).enumerate() {
            let at = start + r * row_step;
            if col_step == 1 {
                copy_short(line, &self.data[at..at + cols]);
            } else {
                for (c, y) in line.iter_mut().enumerate() {
                    *y = self.data[at + c * col_step];
                }
            }
        }
    }
}

impl Attention {
    /// `softmax(Q·Kᵀ · scale) · V` for Q `[.., T, d]`, Kᵀ `[.., d, S]` and V `[.., S, e]` (as
    /// seen through the absorbed Transposes) with the same batch dimensions, then the output
    /// Transpose; otherwise the nodes one by one.
    pub(super) fn run(
        &self,
        isa: Isa,
        inputs: [&Value; 3],
        floats: &mut FloatPool,
    ) -> anyhow::Result<Value> {
        let views = match inputs {
            [Value::F32(q, sq), Value::F32(k, sk), Value::F32(v, sv)] => {
                let [pq, pk, pv] = self
                    .input_transposes
                    .each_ref()
                    .map(|t| t.as_ref().map(|(_, perm)| &perm[..]));
                let [cq, ck, cv] = self.input_columns.each_ref().map(Option::as_ref);
                View::new(q, sq, cq, pq)
                    .zip(View::new(k, sk, ck, pk))
                    .zip(View::new(v, sv, cv, pv))
                    .map(|((q, k), v)| [q, k, v])
            }
            _ => None,
        };
        let fused = views.and_then(|views| {
            let g = Geometry::of(&views[0].shape, &views[1].shape, &views[2].shape)?;
            let perm = self.output_transpose.as_ref().map(|(_, perm)| &perm[..]);
            let out = Placement::new(&g, perm)?;
            Some((views, g, out))
        });
        let Some((views, g, place)) = fused else {
            return self.node_by_node(isa, inputs);
        };
        let mut out = floats.take(place.len);
        let macs = [g.matrices, g.t, g.s, g.d + g.e]
            .into_iter()
            .fold(1usize, usize::saturating_mul);
        let parallel = macs >= PARALLEL_MACS;
        let images = g.batch.first().copied().unwrap_or(1).max(1);
        let per_image = g.matrices / images;
        let failed = std::sync::atomic::AtomicBool::new(false);
        let attend = |m: usize, index: &mut [usize], product: &mut [f32]| {
            unravel(m, &g.batch, index);
            if !self.attend(isa, &views, &g, index, product) {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        if parallel && images < team::threads() {
            // Fewer images than threads: the matrices (heads) are shared out instead, each
            // product kept apart, then placed (a head's rows are not contiguous in the output).
            let mut products = floats.take(g.matrices * g.t * g.e);
            team::for_each_chunk(&mut products, g.t * g.e, true, &|m, product| {
                attend(m, &mut Shape::from_elem(0, g.batch.len()), product);
            });
            let mut index = Shape::from_elem(0, g.batch.len());
            for (m, product) in products.chunks_exact(g.t * g.e).enumerate() {
                unravel(m, &g.batch, &mut index);
                place.write(&index, 0, product, &mut out);
            }
            floats.give(products);
        } else {
            let image_len = place.len / images;
            team::for_each_chunk(&mut out, image_len, parallel, &|n, out| {
                let mut index = Shape::from_elem(0, g.batch.len());
                PRODUCT.with_borrow_mut(|product| {
                    product.resize(g.t * g.e, 0.0);
                    for m in n * per_image..(n + 1) * per_image {
                        attend(m, &mut index, product);
                        place.write(&index, n * image_len, product, out);
                    }
                });
            });
        }
        anyhow::ensure!(
            !failed.into_inner(),
            "attention products of mismatched sizes"
        );
        Ok(Value::F32(out, place.shape))
    }

    /// Writes `softmax(Q·Kᵀ · scale) · V` of the matrices at batch index `index` into
    /// `product` (`[T, e]`); false when the products' sizes do not match.
    fn attend(
        &self,
        isa: Isa,
        [q, kt, v]: &[View<'_>; 3],
        g: &Geometry,
        index: &[usize],
        product: &mut [f32],
    ) -> bool {
        SCRATCH.with_borrow_mut(|scratch| {
            let largest = (g.t * g.d).max(g.d * g.s).max(g.s * g.e);
            let sizes = [g.t * g.d, g.d * g.s, g.s * g.e, g.t * g.s, g.t * g.s];
            scratch.resize(sizes.iter().sum::<usize>() + largest, 0.0);
            let (qm, rest) = scratch.split_at_mut(sizes[0]);
            let (km, rest) = rest.split_at_mut(sizes[1]);
            let (vm, rest) = rest.split_at_mut(sizes[2]);
            let (scores, rest) = rest.split_at_mut(sizes[3]);
            let (weights, temp) = rest.split_at_mut(sizes[4]);
            q.matrix_into(index, qm, temp);
            kt.matrix_into(index, km, temp);
            v.matrix_into(index, vm, temp);
            let ok = mf_kernels::pointwise::matmul(isa, qm, km, scores, [g.t, g.d, g.s]).is_ok();
            if let Some(c) = self.scale {
                scores.iter_mut().for_each(|x| *x *= c);
            }
            let ok = ok && mf_kernels::pointwise::softmax_rows(isa, scores, weights, g.s).is_ok();
            ok && mf_kernels::pointwise::matmul(isa, weights, vm, product, [g.t, g.s, g.e]).is_ok()
        })
    }

    /// The replaced nodes, one after the other, on the step's inputs.
    fn node_by_node(&self, isa: Isa, inputs: [&Value; 3]) -> anyhow::Result<Value> {
        let operand = |i: usize| {
            let value = match &self.input_columns[i] {
                Some(columns) => columns.run_nodes(isa, inputs[i])?,
                None => inputs[i].clone(),
            };
            match &self.input_transposes[i] {
                Some((node, _)) => ops::run_on(isa, node, &[&value]),
                None => Ok(value),
            }
        };
        let (q, kt, v) = (&operand(0)?, &operand(1)?, &operand(2)?);
        let mut value = ops::run_on(isa, &self.chain[0], &[q, kt])?;
        for node in &self.chain[1..] {
            value = match node.op_type.as_str() {
                "Mul" => {
                    let scale = Value::F32(vec![self.scale.unwrap_or(1.0)], smallvec::smallvec![]);
                    ops::run_on(isa, node, &[&value, &scale])?
                }
                "Softmax" => ops::run_on(isa, node, &[&value])?,
                _ => ops::run_on(isa, node, &[&value, v])?,
            };
        }
        match &self.output_transpose {
            Some((node, _)) => ops::run_on(isa, node, &[&value]),
            None => Ok(value),
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

/// The sizes of a fused attention.
struct Geometry {
    batch: Shape,
    matrices: usize,
    t: usize,
    d: usize,
    s: usize,
    e: usize,
}

impl Geometry {
    /// Q `[.., T, d]`, Kᵀ `[.., d, S]`, V `[.., S, e]` with equal batch dimensions and no
    /// size 0; `None` otherwise.
    fn of(sq: &[usize], sk: &[usize], sv: &[usize]) -> Option<Geometry> {
        let rank = sq.len();
        if rank < 2 || sk.len() != rank || sv.len() != rank {
            return None;
        }
        let batch = &sq[..rank - 2];
        if sk[..rank - 2] != *batch || sv[..rank - 2] != *batch {
            return None;
        }
        let (t, d, s, e) = (sq[rank - 2], sq[rank - 1], sk[rank - 1], sv[rank - 1]);
        if sk[rank - 2] != d || sv[rank - 2] != s || [t, d, s, e].contains(&0) {
            return None;
        }
        // A matrix's scores, and the output, within what one value may hold (larger ones go
        // node by node, which refuses them with the error naming the shape).
        let mut output = Shape::from_slice(batch);
        output.extend([t, e]);
        if batch.contains(&0) || element_count(&[t, s]).is_err() || element_count(&output).is_err()
        {
            return None;
        }
        Some(Geometry {
            batch: batch.into(),
            matrices: batch.iter().product(),
            t,
            d,
            s,
            e,
        })
    }
}

/// Where the product `[.., T, e]` lands in the step's output (through the absorbed output
/// Transpose, if any).
struct Placement {
    /// The output's shape.
    shape: Shape,
    /// The output's values.
    len: usize,
    /// Per axis of the product, its stride in the output.
    strides: Shape,
    /// The product's row length.
    cols: usize,
}

impl Placement {
    /// `None` when the Transpose's rank is not the product's.
    fn new(g: &Geometry, perm: Option<&[usize]>) -> Option<Placement> {
        let mut product = g.batch.clone();
        product.extend([g.t, g.e]);
        let len = product.iter().product();
        let (shape, strides) = match perm {
            None => (product.clone(), ops::strides(&product)),
            Some(perm) if perm.len() == product.len() => {
                let shape: Shape = perm.iter().map(|&p| product[p]).collect();
                let out_strides = ops::strides(&shape);
                let mut strides = Shape::from_elem(0, perm.len());
                for (a, &p) in perm.iter().enumerate() {
                    strides[p] = out_strides[a];
                }
                (shape, strides)
            }
            Some(_) => return None,
        };
        Some(Placement {
            shape,
            len,
            strides,
            cols: g.e,
        })
    }

    /// Writes the `[T, e]` product at batch index `batch` into `out`, the part of the output
    /// that starts at value `offset`.
    fn write(&self, batch: &[usize], offset: usize, product: &[f32], out: &mut [f32]) {
        let rank = self.strides.len();
        let start: usize = batch
            .iter()
            .zip(&self.strides)
            .map(|(i, s)| i * s)
            .sum::<usize>()
            - offset;
        let (row_step, col_step) = (self.strides[rank - 2], self.strides[rank - 1]);
        let cols = self.cols;
        for (r, line) in product.chunks_exact(cols).enumerate() {
            let at = start + r * row_step;
            if col_step == 1 {
                copy_short(&mut out[at..at + cols], line);
            } else {
                for (c, &y) in line.iter().enumerate() {
                    out[at + c * col_step] = y;
                }
            }
        }
    }
}
