//! A convolution and the Add after it as one step: a U-Net's residual connection (`h + x`) and
//! its time-and-class embedding (`h + e[n, c]`, one value per image and channel) are added by
//! the convolution's epilogue as it writes each tile ([`mf_kernels::Addend`]), instead of by a
//! pass of their own over the whole output on one thread. The epilogue rounds the sum once in
//! f32 after rounding the convolution's value, as the Add node does, so the step gives the
//! nodes' bits. An addend of another shape or type at run time runs the convolution, then the
//! Add node, with its errors.
use std::collections::HashMap;

use anyhow::Context;
use mf_core::onnx;
use mf_kernels::{Addend, ConvScratch, Isa, Layout, Layouts};

use super::{ConvCall, PackedConv, Pools, Slotted, Written, conv_label, convolve};
use crate::ops;
use crate::tensor::Value;

/// A convolution whose only reader is an Add, run as one step.
pub(super) struct ConvPlus {
    packed: PackedConv,
    written: Written,
    layouts: Layouts,
    /// The Add node, run after the convolution when the addend does not fit.
    add: onnx::NodeProto,
    /// Whether the convolution's output is the Add's first operand (else its second).
    conv_first: bool,
}

impl ConvPlus {
    /// What it does, for step times.
    pub(super) fn label(&self) -> String {
        format!("{} + Add", conv_label(&self.packed, self.layouts))
    }

    /// The packed convolution.
    pub(super) fn packed(&self) -> &PackedConv {
        &self.packed
    }

    /// The convolution of `input` plus `other`, as the Add node would give it.
    pub(super) fn run(
        &self,
        isa: Isa,
        [input, other]: [&Value; 2],
        (scratch, pools): (&mut ConvScratch, &mut Pools),
    ) -> anyhow::Result<Value> {
        let written = (self.written, self.layouts);
        let call = ConvCall::new(&self.packed, input, self.layouts)?;
        if let Some(addend) = self.addend(&call, other) {
            return convolve(&self.packed, input, written, Some(addend), (scratch, pools));
        }
        let conv = convolve(&self.packed, input, written, None, (scratch, pools))?;
        let operands = match self.conv_first {
            true => [&conv, other],
            false => [other, &conv],
        };
        let floats = &mut |len| pools.floats.take(len);
        let sum = ops::run_into(isa, &self.add, &operands, floats)
            .with_context(|| format!("Add node {:?}", self.add.name));
        pools.give(conv);
        sum
    }

    /// `other` as what the epilogue adds, when it is f32 and either of the convolution's
    /// float pixel-row output shape (`[N, OH, OW, M]`) or one row per image (`[N, 1, 1, M]`).
    fn addend<'a>(&self, call: &ConvCall<'_>, other: &'a Value) -> Option<Addend<'a>> {
        let Value::F32(values, shape) = other else {
            return None;
        };
        let out = call.out_shape.as_slice();
        let floats = !matches!(self.written, Written::Codes(_));
        if !floats || self.layouts.output != Layout::Nhwc || out.len() != 4 {
            return None;
        }
        if shape.as_slice() == out {
            Some(Addend::Each(values))
        } else if shape.as_slice() == [out[0], 1, 1, out[3]] {
            Some(Addend::PerImage(values))
        } else {
            None
        }
    }
}

/// `steps` with each float pixel-row convolution whose output an Add alone reads (and is not
/// the graph's output) fused with that Add, the step placed where the Add was (its other
/// operand may be computed after the convolution).
pub(super) fn absorb_adds(steps: Vec<Slotted>, graph_output: usize) -> Vec<Slotted> {
    let mut readers: HashMap<usize, usize> = HashMap::from([(graph_output, 1)]);
    let mut producer: HashMap<usize, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for &slot in step.inputs() {
            *readers.entry(slot).or_default() += 1;
        }
        if let Slotted::Conv { output, .. } = step {
            producer.insert(*output, i);
        }
    }
    let fusable = |slot: usize, steps: &[Option<Slotted>]| -> Option<usize> {
        let &i = producer.get(&slot)?;
        let conv = steps[i].as_ref()?;
        let Slotted::Conv {
            written, layouts, ..
        } = conv
        else {
            return None;
        };
        let floats = !matches!(written, Written::Codes(_));
        (floats && layouts.output == Layout::Nhwc && readers.get(&slot) == Some(&1)).then_some(i)
    };
    let mut steps: Vec<Option<Slotted>> = steps.into_iter().map(Some).collect();
    for j in 0..steps.len() {
        let Some(Slotted::Op { node, inputs, .. }) = &steps[j] else {
            continue;
        };
        if node.op_type != "Add" || inputs.len() != 2 || node.input.len() != 2 {
            continue;
        }
        let inputs = [inputs[0], inputs[1]];
        let Some((side, i)) = (0..2).find_map(|k| Some((k, fusable(inputs[k], &steps)?))) else {
            continue;
        };
        let (
            Some(Slotted::Conv {
                input,
                packed,
                written,
                layouts,
                ..
            }),
            Some(Slotted::Op { node, output, .. }),
        ) = (steps[i].take(), steps[j].take())
        else {
            unreachable!("a convolution and an Add were found there")
        };
        steps[j] = Some(Slotted::ConvPlus {
            inputs: [input, inputs[1 - side]],
            output,
            conv: Box::new(ConvPlus {
                packed,
                written,
                layouts,
                add: node,
                conv_first: side == 0,
            }),
        });
    }
    steps.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::tests::{op, values};
    use mf_kernels::reference::QuantizedLayer;
    use mf_kernels::{Activation, ConvGeometry, PackedConvF32, PackedConvI8, QuantParams};

    /// A packed int8 or fp32 convolution of `c` to `m` channels by `geometry`.
    fn packed(int8: bool, geometry: ConvGeometry, m: usize) -> PackedConv {
        let isa = Isa::select().expect("a kernel family");
        let depth = geometry.depth();
        if !int8 {
            let (w, b) = (values(m * depth, 4), values(m, 5));
            let conv = PackedConvF32::new(isa, &w, &b, m, geometry, Activation::None);
            return PackedConv::F32(conv.unwrap());
        }
        let weights: Vec<i8> = (0..m * depth).map(|i| (i * 37 % 255) as i8).collect();
        let scales: Vec<f32> = (0..m).map(|j| 0.01 + 0.004 * j as f32).collect();
        let layer = QuantizedLayer {
            weights: &weights,
            weight_scales: &scales,
            bias: &values(m, 2),
            input: QuantParams::from_range(-1.0, 1.0),
            activation: Activation::None,
            n: m,
            k: depth,
        };
        PackedConv::I8(PackedConvI8::new(isa, &layer, geometry).unwrap())
    }

    #[test]
    fn the_fused_add_gives_the_bits_of_the_convolution_then_the_add_node() {
        let isa = Isa::select().expect("a kernel family");
        let (n, c, h, w, m) = (2, 4, 6, 5, 5);
        let rows = Layouts {
            input: Layout::Nhwc,
            output: Layout::Nhwc,
        };
        let x = Value::F32(values(n * h * w * c, 3), smallvec::smallvec![n, h, w, c]);
        let grid = QuantParams::from_range(-2.0, 3.0);
        // A padded 3×3 (the implicit GEMM) and a stride-2 one (receptive fields laid out).
        for stride in [1, 2] {
            let geometry = ConvGeometry {
                channels: c,
                kernel: [3, 3],
                pads: [1, 1, 1, 1],
                strides: [stride, stride],
                dilations: [1, 1],
            };
            let [oh, ow] = geometry.output_size(h, w).unwrap();
            let shape = |dims: [usize; 4]| smallvec::SmallVec::from_slice(&dims);
            let addends = [
                // One value per output, one row per image, and one row for the whole batch
                // (not an addend the epilogue takes: the Add node runs after the convolution).
                Value::F32(values(n * oh * ow * m, 6), shape([n, oh, ow, m])),
                Value::F32(values(n * m, 7), shape([n, 1, 1, m])),
                Value::F32(values(m, 8), shape([1, 1, 1, m])),
            ];
            let cases = [
                (true, Written::Float),
                (true, Written::Rounded(grid)),
                (false, Written::Float),
            ];
            for (int8, written) in cases {
                for (other, conv_first) in addends.iter().flat_map(|a| [(a, true), (a, false)]) {
                    let mut buffers = (ConvScratch::default(), Pools::default());
                    let conv = packed(int8, geometry, m);
                    let plain = (written, rows);
                    let (scratch, pools) = (&mut buffers.0, &mut buffers.1);
                    let y = convolve(&conv, &x, plain, None, (scratch, pools)).unwrap();
                    let add = op("Add", &["a", "b"], "sum");
                    let operands = if conv_first { [&y, other] } else { [other, &y] };
                    let floats = &mut |len| vec![0.0; len];
                    let want = ops::run_into(isa, &add, &operands, floats).unwrap();
                    let fused = ConvPlus {
                        packed: conv,
                        written,
                        layouts: rows,
                        add,
                        conv_first,
                    };
                    let got = fused.run(isa, [&x, other], (scratch, pools)).unwrap();
                    let bits = |v: &Value| {
                        let (data, shape) = v.f32("sum").unwrap();
                        (
                            data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            shape.to_vec(),
                        )
                    };
                    let case = format!("int8 {int8}, {written:?}, stride {stride}");
                    assert_eq!(bits(&got), bits(&want), "{case}, {:?}", other.shape());
                }
            }
        }
    }

    #[test]
    fn only_a_float_pixel_row_convolution_read_by_the_add_alone_is_fused() {
        let geometry = ConvGeometry {
            channels: 2,
            kernel: [1, 1],
            pads: [0; 4],
            strides: [1, 1],
            dilations: [1, 1],
        };
        let conv = |written, output| Slotted::Conv {
            input: 0,
            output: 2,
            packed: packed(true, geometry, 3),
            written,
            layouts: Layouts {
                input: Layout::Nhwc,
                output,
            },
        };
        let add = |inputs: Vec<usize>| Slotted::Op {
            node: op("Add", &["a", "b"], "sum"),
            inputs,
            output: 3,
        };
        let grid = QuantParams::from_range(-1.0, 1.0);
        let fused = |steps: Vec<Slotted>| {
            absorb_adds(steps, 3)
                .iter()
                .map(|s| matches!(s, Slotted::ConvPlus { .. }))
                .collect::<Vec<_>>()
        };
        let rows = Layout::Nhwc;
        assert_eq!(
            fused(vec![conv(Written::Float, rows), add(vec![2, 1])]),
            [true]
        );
        assert_eq!(
            fused(vec![conv(Written::Rounded(grid), rows), add(vec![1, 2])]),
            [true]
        );
        // Codes, planes, or a second reader of the convolution's output: left alone.
        let codes = Written::Codes(grid);
        assert_eq!(
            fused(vec![conv(codes, rows), add(vec![2, 1])]),
            [false, false]
        );
        let planes = Layout::Nchw;
        assert_eq!(
            fused(vec![conv(Written::Float, planes), add(vec![2, 1])]),
            [false, false]
        );
        let twice = vec![conv(Written::Float, rows), add(vec![2, 2])];
        assert_eq!(fused(twice), [false, false]);
    }
}
