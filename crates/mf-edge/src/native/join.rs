//! A channel Concat of pixel rows that upsamples some of its inputs on the way, as one step:
//! mf-export's U-Net decoder joins a nearest-upsampled value with a skip connection, and
//! reading the small value once per output pixel spares writing its upsampled copy and reading
//! that back.
use std::collections::HashMap;

use anyhow::Context;
use mf_core::onnx;

use super::upsample::Upsample;
use super::{Pools, Slotted};
use crate::ops;
use crate::tensor::{Shape, Value};
use mf_kernels::Isa;
use mf_kernels::layout::copy_short;

/// From this many output values on, the joined rows are shared across the thread team (each
/// thread then writes the pixels that its share of the next normalization reads).
const PARALLEL_VALUES: usize = 1 << 15;

/// A join's inputs, held inline.
type Parts<'a> = smallvec::SmallVec<[Part<'a>; 4]>;

/// The Concat node and, per input, the upsampling it absorbed.
pub(super) struct Join {
    /// The Concat, its axis that of pixel rows.
    node: onnx::NodeProto,
    /// Per input, the upsampling applied to it first.
    upsampled: Vec<Option<Box<Upsample>>>,
}

/// An input as the join reads it: pixel rows `[N, h, w, c]` and the factors `(s, t)` it is
/// upsampled by.
struct Part<'a> {
    data: &'a [f32],
    size: [usize; 4],
    factors: (usize, usize),
}

impl Join {
    /// `[N, sh, tw, Σc]`: the inputs' pixels side by side, each upsampled input's source pixel
    /// repeated. Inputs that do not fit this (another type or axis, a pattern that is not an
    /// upsampling of its input) are upsampled on their own and joined by the Concat node.
    pub(super) fn run(
        &self,
        inputs: &[&Value],
        isa: Isa,
        pools: &mut Pools,
    ) -> anyhow::Result<Value> {
        match self.parts(inputs) {
            Some(parts) => self.join(&parts, pools),
            None => self.node_by_node(inputs, isa, pools),
        }
    }

    /// The inputs as parts of one output shape, or `None` when they are not (held inline: a
    /// Concat has a few inputs, and this runs every call).
    fn parts<'a>(&self, inputs: &[&'a Value]) -> Option<Parts<'a>> {
        let axis = ops::int_attr(&self.node, "axis", 0);
        if axis != 3 && axis != -1 {
            return None;
        }
        let parts = inputs.iter().zip(&self.upsampled).map(|(value, upsample)| {
            let (&[n, h, w, c], Value::F32(data, _)) = (value.shape(), value) else {
                return None;
            };
            let factors = match upsample {
                Some(up) => up.factors([n, c, h, w])?,
                None => (1, 1),
            };
            Some(Part {
                data,
                size: [n, h, w, c],
                factors,
            })
        });
        let parts: Parts<'a> = parts.collect::<Option<_>>()?;
        let out = |p: &Part| {
            let [n, h, w, _] = p.size;
            [n, h * p.factors.0, w * p.factors.1]
        };
        let first = out(parts.first()?);
        parts.iter().all(|p| out(p) == first).then_some(parts)
    }

    /// The parts joined into a pooled buffer, or an error when the result would be too large.
    fn join(&self, parts: &[Part], pools: &mut Pools) -> anyhow::Result<Value> {
        let [n, h, w, _] = parts[0].size;
        let (oh, ow) = (h * parts[0].factors.0, w * parts[0].factors.1);
        let channels: usize = parts.iter().map(|p| p.size[3]).sum();
        let shape = Shape::from_slice(&[n, oh, ow, channels]);
        let len = crate::tensor::element_count(&shape)?;
        let mut out = pools.floats.take(len);
        let line = ow * channels;
        if line > 0 {
            let parallel = len >= PARALLEL_VALUES;
            mf_kernels::team::for_each_run(&mut out, line, parallel, &|first, lines| {
                for (l, dst) in (first..).zip(lines.chunks_exact_mut(line)) {
                    let (image, y) = (l / oh, l % oh);
                    let mut at = 0;
                    for p in parts {
                        // The part's source line, each pixel written t times side by side.
                        let [_, ph, pw, c] = p.size;
                        let (s, t) = p.factors;
                        let source = &p.data[(image * ph + y / s) * pw * c..][..pw * c];
                        let mut pixels = dst.chunks_exact_mut(channels);
                        for from in source.chunks_exact(c) {
                            for pixel in (&mut pixels).take(t) {
                                copy_short(&mut pixel[at..at + c], from);
                            }
                        }
                        at += c;
                    }
                }
            });
        }
        Ok(Value::F32(out, shape))
    }

    /// Each upsampling on its own, then the Concat node.
    fn node_by_node(
        &self,
        inputs: &[&Value],
        isa: Isa,
        pools: &mut Pools,
    ) -> anyhow::Result<Value> {
        let mut owned = Vec::with_capacity(inputs.len());
        for (value, upsample) in inputs.iter().zip(&self.upsampled) {
            owned.push(match upsample {
                Some(up) => Some(up.run(value, isa, pools).context("nearest upsampling")?),
                None => None,
            });
        }
        let args: Vec<&Value> = (owned.iter().zip(inputs))
            .map(|(own, &input)| own.as_ref().unwrap_or(input))
            .collect();
        let floats = &mut |len| pools.floats.take(len);
        let out = ops::run_into(isa, &self.node, &args, floats);
        for value in owned.into_iter().flatten() {
            pools.give(value);
        }
        out
    }
}

/// Each Concat that reads upsampling steps' outputs (and is their only reader) made one
/// [`Slotted::Join`] with them; other steps as they are.
pub(super) fn join_upsampled(steps: Vec<Slotted>, graph_output: usize) -> Vec<Slotted> {
    let mut readers: HashMap<usize, usize> = HashMap::from([(graph_output, 1)]);
    for step in &steps {
        for &slot in step.inputs() {
            *readers.entry(slot).or_default() += 1;
        }
    }
    // The upsampling steps whose output only a Concat reads, by their output.
    let mut absorbable: HashMap<usize, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        if let Slotted::Upsample { output, .. } = step
            && readers.get(output) == Some(&1)
        {
            absorbable.insert(*output, i);
        }
    }
    // Each Concat that reads such an output takes its upsampling step (an earlier one) in.
    let mut steps: Vec<Option<Slotted>> = steps.into_iter().map(Some).collect();
    for i in 0..steps.len() {
        let Some(Slotted::Op { node, inputs, .. }) = &steps[i] else {
            continue;
        };
        if node.op_type != "Concat" || !inputs.iter().any(|s| absorbable.contains_key(s)) {
            continue;
        }
        let Some(Slotted::Op {
            node,
            inputs,
            output,
        }) = steps[i].take()
        else {
            unreachable!("matched above")
        };
        let (inputs, upsampled) = inputs
            .iter()
            .map(
                |&slot| match absorbable.get(&slot).map(|&at| steps[at].take()) {
                    Some(Some(Slotted::Upsample {
                        input, upsample, ..
                    })) => (input, Some(upsample)),
                    _ => (slot, None),
                },
            )
            .unzip();
        steps[i] = Some(Slotted::Join {
            inputs,
            output,
            join: Box::new(Join { node, upsampled }),
        });
    }
    steps.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, axis: Option<i64>) -> onnx::NodeProto {
        onnx::NodeProto {
            op_type: op.into(),
            attribute: axis
                .map(|i| onnx::AttributeProto {
                    name: "axis".into(),
                    i,
                    r#type: onnx::AttributeType::Int as i32,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn ints(v: &[i64]) -> Value {
        Value::I64(v.to_vec(), smallvec::smallvec![v.len()])
    }

    /// mf-export's nearest upsampling by (s, t), batch and channels left to the graph.
    fn upsampling([h, w]: [i64; 2], [s, t]: [i64; 2]) -> Box<Upsample> {
        let shapes = [
            ints(&[0, 0, h, 1, w, 1]),
            ints(&[1, 1, 1, s, 1, t]),
            ints(&[0, 0, h * s, w * t]),
        ];
        let nodes = ["Reshape", "Expand", "Reshape"].map(|op| node(op, None));
        Box::new(Upsample::new(nodes, [0, 1, 2].map(|k| Some(&shapes[k]))).unwrap())
    }

    /// A join of a Concat along `axis` with these upsamplings.
    fn concat(axis: i64, upsampled: Vec<Option<Box<Upsample>>>) -> Join {
        Join {
            node: node("Concat", Some(axis)),
            upsampled,
        }
    }

    fn rows(n: usize, h: usize, w: usize, c: usize, seed: usize) -> Value {
        let data = (0..n * h * w * c).map(|i| ((i * 7 + seed) % 23) as f32 - 11.0);
        Value::F32(data.collect(), smallvec::smallvec![n, h, w, c])
    }

    #[test]
    fn a_join_equals_upsampling_then_concat() {
        let (n, h, w) = (2, 3, 4);
        // A 2×2 upsampled 5-channel input between plain 3- and 1-channel ones, a 3×1 one last.
        let upsampled = vec![
            None,
            Some(upsampling([3, 4], [2, 2])),
            None,
            Some(upsampling([2, 8], [3, 1])),
        ];
        let join = concat(3, upsampled);
        let inputs = [
            rows(n, 2 * h, 2 * w, 3, 1),
            rows(n, h, w, 5, 2),
            rows(n, 2 * h, 2 * w, 1, 3),
            rows(n, 2, 8, 2, 4),
        ];
        let args: Vec<&Value> = inputs.iter().collect();
        let mut pools = Pools::default();
        assert!(join.parts(&args).is_some(), "the inputs join as parts");
        let got = join.run(&args, Isa::Scalar, &mut pools).unwrap();
        let want = join.node_by_node(&args, Isa::Scalar, &mut pools).unwrap();
        assert_eq!(got.shape(), &[n, 2 * h, 2 * w, 11]);
        assert_eq!(got, want);
        // Spot check: pixel (1, 5, 7)'s upsampled channels are source pixel (1, 2, 3)'s.
        let (Value::F32(out, _), Value::F32(source, _)) = (&got, &inputs[1]) else {
            unreachable!()
        };
        let at = ((h * 2 + 5) * 2 * w + 7) * 11 + 3;
        let from = ((h + 2) * w + 3) * 5;
        assert_eq!(out[at..at + 5], source[from..from + 5]);
    }

    #[test]
    fn inputs_that_do_not_fit_are_joined_node_by_node() {
        let mut pools = Pools::default();
        // Sizes that do not meet after upsampling: the Concat node's own error.
        let join = concat(3, vec![Some(upsampling([3, 4], [2, 2])), None]);
        let inputs = [rows(1, 3, 4, 2, 0), rows(1, 5, 8, 2, 1)];
        let args: Vec<&Value> = inputs.iter().collect();
        assert!(join.parts(&args).is_none());
        let err = join.run(&args, Isa::Scalar, &mut pools).unwrap_err();
        assert!(format!("{err:#}").contains("Concat"), "{err:#}");
        // Another axis: joined by the node, as planes of pixel rows would be.
        let join = concat(1, vec![Some(upsampling([3, 4], [2, 2])), None]);
        let inputs = [rows(1, 3, 4, 2, 0), rows(1, 2, 8, 2, 1)];
        let args: Vec<&Value> = inputs.iter().collect();
        assert!(join.parts(&args).is_none());
        let got = join.run(&args, Isa::Scalar, &mut pools).unwrap();
        assert_eq!(got.shape(), &[1, 8, 8, 2]);
    }
}
