//! Scaled dot-product attention as exported node by node, `MatMul(Q, Kᵀ)` → `Mul(scale)` →
//! `Softmax` (last axis) → `MatMul(·, V)`, run as one step: each (batch, head) matrix on one
//! thread of the team, its scores in a small buffer of that thread, never written out as
//! `[N, H, T, S]` tensors. Each operation is the node's own (the same product loop, multiply
//! and softmax row), so the step gives the same bits as the nodes.
use std::cell::RefCell;

use mf_core::onnx;
use mf_kernels::{Isa, team};

use super::{FloatPool, Planner};
use crate::ops::{self, normalize::softmax_row};
use crate::tensor::Value;

/// Multiply-adds of a call below which its matrices run on the calling thread alone.
const PARALLEL_MACS: usize = 1 << 16;

/// A fused attention: the scale and the nodes it stands for.
pub(super) struct Attention {
    /// The constant the scores are multiplied by (none when no Mul sits between).
    scale: Option<f32>,
    /// The nodes it replaces, run one by one when the operands do not fit the fused path
    /// (batch dimensions that differ or broadcast, a Softmax axis other than the last).
    nodes: Vec<onnx::NodeProto>,
}

impl Planner<'_> {
    /// The attention starting at the activation × activation MatMul `i`: the indices of its
    /// nodes, its three inputs (Q, Kᵀ, V) and output, and the step. `None` unless each node's
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
        let mut taken = vec![i];
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
            taken.push(mul);
            value = node.output.first()?;
        }
        let softmax = self.sole_consumer(value, "Softmax")?;
        if ops::int_attr(self.node(softmax), "axis", -1) != -1 {
            return None;
        }
        taken.push(softmax);
        let weights = self.node(softmax).output.first()?;
        let product = self.sole_consumer(weights, "MatMul")?;
        let node = self.node(product);
        if node.input.len() != 2 || node.input[0] != *weights || node.input[1] == *weights {
            return None;
        }
        taken.push(product);
        let hidden = taken[..taken.len() - 1]
            .iter()
            .map(|&t| &self.node(t).output[0]);
        let hidden_outputs = hidden
            .into_iter()
            .any(|h| self.graph.output.iter().any(|o| o.name == *h));
        if hidden_outputs {
            return None;
        }
        let inputs = [
            scores.input[0].clone(),
            scores.input[1].clone(),
            node.input[1].clone(),
        ];
        let nodes = taken.iter().map(|&t| self.node(t).clone()).collect();
        Some((
            taken,
            inputs,
            node.output.first()?.clone(),
            Attention { scale, nodes },
        ))
    }
}

std::thread_local! {
    /// A thread's scores and weights for one matrix.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Attention {
    /// `softmax(Q·Kᵀ · scale) · V` for `q` `[.., T, d]`, `kt` `[.., d, S]` and `v` `[.., S, e]`
    /// with the same batch dimensions; otherwise the nodes one by one.
    pub(super) fn run(
        &self,
        isa: Isa,
        [q, kt, v]: [&Value; 3],
        floats: &mut FloatPool,
    ) -> anyhow::Result<Value> {
        let fused = match (q, kt, v) {
            (Value::F32(q, sq), Value::F32(k, sk), Value::F32(v, sv)) => {
                Geometry::of(sq, sk, sv).map(|g| (g, [&q[..], &k[..], &v[..]]))
            }
            _ => None,
        };
        let Some((g, [q, kt, v])) = fused else {
            return self.node_by_node(isa, [q, kt, v]);
        };
        let mut out = floats.take(g.matrices * g.t * g.e);
        let macs = g.matrices * g.t * g.s * (g.d + g.e);
        let scale = self.scale;
        let mut failed = std::sync::atomic::AtomicBool::new(false);
        team::for_each_chunk(&mut out, g.t * g.e, macs >= PARALLEL_MACS, &|m, out| {
            let ok = SCORES.with_borrow_mut(|scratch| {
                scratch.resize(2 * g.t * g.s, 0.0);
                let (scores, weights) = scratch.split_at_mut(g.t * g.s);
                let q = &q[m * g.t * g.d..][..g.t * g.d];
                let kt = &kt[m * g.d * g.s..][..g.d * g.s];
                let v = &v[m * g.s * g.e..][..g.s * g.e];
                mf_kernels::pointwise::matmul(isa, q, kt, scores, [g.t, g.d, g.s]).is_ok() && {
                    if let Some(c) = scale {
                        scores.iter_mut().for_each(|x| *x *= c);
                    }
                    for (x, y) in scores.chunks(g.s).zip(weights.chunks_mut(g.s)) {
                        softmax_row(x, y);
                    }
                    mf_kernels::pointwise::matmul(isa, weights, v, out, [g.t, g.s, g.e]).is_ok()
                }
            });
            if !ok {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        anyhow::ensure!(!*failed.get_mut(), "attention products of mismatched sizes");
        let mut shape = g.batch;
        shape.extend([g.t, g.e]);
        Ok(Value::F32(out, shape))
    }

    /// The replaced nodes, one after the other.
    fn node_by_node(&self, isa: Isa, [q, kt, v]: [&Value; 3]) -> anyhow::Result<Value> {
        let mut value = ops::run_on(isa, &self.nodes[0], &[q, kt])?;
        for node in &self.nodes[1..] {
            value = match node.op_type.as_str() {
                "Mul" => {
                    let scale = Value::F32(vec![self.scale.unwrap_or(1.0)], vec![]);
                    ops::run_on(isa, node, &[&value, &scale])?
                }
                "Softmax" => ops::run_on(isa, node, &[&value])?,
                _ => ops::run_on(isa, node, &[&value, v])?,
            };
        }
        Ok(value)
    }
}

/// The sizes of a fused attention.
struct Geometry {
    batch: Vec<usize>,
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
        Some(Geometry {
            batch: batch.to_vec(),
            matrices: batch.iter().product(),
            t,
            d,
            s,
            e,
        })
    }
}
