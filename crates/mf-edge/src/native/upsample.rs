//! Nearest upsampling as mf-export writes it (`Reshape [N, C, H, 1, W, 1] → Expand
//! [N, C, H, s, W, t] → Reshape [N, C, sH, tW]`), run on pixel rows as one step: each output
//! pixel row is a copy of its source pixel's channels, with no move to planes and back.
use anyhow::{Context, ensure};
use mf_core::onnx;

use super::Pools;
use crate::ops;
use crate::tensor::{Shape, Value};
use mf_kernels::{Isa, Layout};

/// The three nodes and their constant shapes.
pub(super) struct Upsample {
    /// Reshape, Expand, Reshape, as in the graph.
    nodes: [onnx::NodeProto; 3],
    /// Their second inputs: the cells' shape, the repeat, the joined shape.
    shapes: [Value; 3],
}

impl Upsample {
    /// The pattern from its nodes and their constant second inputs, or `None` when a shape is
    /// not an int64 constant.
    pub(super) fn new(nodes: [onnx::NodeProto; 3], shapes: [Option<&Value>; 3]) -> Option<Self> {
        let [a, b, c] = shapes;
        let shapes = [a?.clone(), b?.clone(), c?.clone()];
        shapes
            .iter()
            .all(|s| matches!(s, Value::I64(..)))
            .then_some(Upsample { nodes, shapes })
    }

    /// The factors `(s, t)` when the nodes upsample planes `[n, c, h, w]` by them, else `None`.
    pub(super) fn factors(&self, [n, c, h, w]: [usize; 4]) -> Option<(usize, usize)> {
        let [cells, repeat, joined] = [0, 1, 2].map(|i| self.shapes[i].i64("shape").ok());
        let cells = ops::reshape(&[n, c, h, w], cells?.0).ok()?;
        let repeat: Shape = (repeat?.0.iter())
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<_>>()?;
        let expanded = ops::expanded_shape(&cells, &repeat).ok()?;
        let joined = ops::reshape(&expanded, joined?.0).ok()?;
        let &[_, _, _, s, _, t] = expanded.as_slice() else {
            return None;
        };
        let fits = cells.as_slice() == [n, c, h, 1, w, 1]
            && expanded.as_slice() == [n, c, h, s, w, t]
            && joined.as_slice() == [n, c, h * s, w * t];
        fits.then_some((s, t))
    }

    /// Pixel rows `[N, H, W, C]` upsampled to `[N, sH, tW, C]` (floats into a buffer of
    /// `pools`); a pattern that does not upsample these runs its nodes on planes instead.
    pub(super) fn run(&self, x: &Value, isa: Isa, pools: &mut Pools) -> anyhow::Result<Value> {
        let shape = x.shape();
        let (&[n, h, w, c], Value::F32(data, _)) = (shape, x) else {
            return self.on_planes(x, isa, pools);
        };
        let Some((s, t)) = self.factors([n, c, h, w]) else {
            return self.on_planes(x, isa, pools);
        };
        let out_shape: Shape = smallvec::smallvec![n, h * s, w * t, c];
        let len = crate::tensor::element_count(&out_shape)?;
        let mut out = pools.floats.take(len);
        let line = w * t * c;
        if line > 0 {
            for (i, rows) in out.chunks_exact_mut(line * s).enumerate() {
                // Input row i (image i / h, row i % h) widened once, then repeated s times.
                let source = &data[i * w * c..(i + 1) * w * c];
                let (first, rest) = rows.split_at_mut(line);
                for (pixels, pixel) in first.chunks_exact_mut(t * c).zip(source.chunks_exact(c)) {
                    for copy in pixels.chunks_exact_mut(c) {
                        copy.copy_from_slice(pixel);
                    }
                }
                for row in rest.chunks_exact_mut(line) {
                    row.copy_from_slice(first);
                }
            }
        }
        Ok(Value::F32(out, out_shape))
    }

    /// The nodes one by one on `x` moved to planes, the result moved back to pixel rows.
    fn on_planes(&self, x: &Value, isa: Isa, pools: &mut Pools) -> anyhow::Result<Value> {
        let mut value = pools.relayout(x, Layout::Nchw)?;
        for (node, shape) in self.nodes.iter().zip(&self.shapes) {
            let floats = &mut |len| pools.floats.take(len);
            value = ops::run_into(isa, node, &[&value, shape], floats)
                .with_context(|| format!("{} node {:?}", node.op_type, node.name))?;
        }
        ensure!(
            value.shape().len() <= 4,
            "upsampling gave {:?}",
            value.shape()
        );
        pools.relayout(&value, Layout::Nhwc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str) -> onnx::NodeProto {
        onnx::NodeProto {
            op_type: op.into(),
            ..Default::default()
        }
    }

    fn ints(v: &[i64]) -> Value {
        Value::I64(v.to_vec(), smallvec::smallvec![v.len()])
    }

    /// The nodes run on planes `x`, the result as pixel rows.
    fn by_nodes(x: &Value, shapes: &[Value; 3], pools: &mut Pools) -> Value {
        let mut v = x.clone();
        for (op, shape) in ["Reshape", "Expand", "Reshape"].into_iter().zip(shapes) {
            v = ops::run(&node(op), &[&v, shape]).unwrap();
        }
        pools.relayout(&v, Layout::Nhwc).unwrap()
    }

    #[test]
    fn pixel_rows_upsample_as_the_nodes_do_on_planes() {
        let (n, c, h, w) = (2, 3, 4, 5);
        let data: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
        let planes = Value::F32(data, smallvec::smallvec![n, c, h, w]);
        let mut pools = Pools::default();
        let rows = pools.relayout(&planes, Layout::Nhwc).unwrap();
        let cases = [
            // mf-export's 2× (and a 3 × 2), batch and channels left to the graph (0, -1).
            [
                ints(&[0, 0, 4, 1, 5, 1]),
                ints(&[1, 1, 1, 2, 1, 2]),
                ints(&[0, 0, 8, 10]),
            ],
            [
                ints(&[2, -1, 4, 1, 5, 1]),
                ints(&[1, 1, 1, 3, 1, 2]),
                ints(&[2, 3, 12, 10]),
            ],
            // Not an upsampling: each pixel becomes a 2×2 block elsewhere (nodes on planes).
            [
                ints(&[2, 3, 4, 5, 1, 1]),
                ints(&[1, 1, 1, 1, 2, 2]),
                ints(&[2, 3, 8, 10]),
            ],
        ];
        for (i, shapes) in cases.into_iter().enumerate() {
            let nodes = [node("Reshape"), node("Expand"), node("Reshape")];
            let up = Upsample::new(nodes, [0, 1, 2].map(|k| Some(&shapes[k]))).unwrap();
            let fits = up.factors([n, c, h, w]).is_some();
            assert_eq!(fits, i < 2, "case {i}");
            let got = up.run(&rows, Isa::Scalar, &mut pools).unwrap();
            assert_eq!(got, by_nodes(&planes, &shapes, &mut pools), "case {i}");
        }
        let float_shape = Value::F32(vec![1.0], smallvec::smallvec![1]);
        let nodes = [node("Reshape"), node("Expand"), node("Reshape")];
        assert!(Upsample::new(nodes, [Some(&float_shape), None, None]).is_none());
    }
}
