//! Images kept as NHWC pixel rows between convolutions. A convolution's GEMM reads and writes
//! one row per pixel, so ONNX's planes (NCHW) cost two transposes per convolution; instead, a
//! convolution whose output some step can take as pixel rows writes them, and the steps that
//! can (a convolution, a fused GroupNorm, element-wise Add/Sub/Mul/Div, Sigmoid and Tanh,
//! per-tensor QuantizeLinear/DequantizeLinear, Concat) take and pass them on. Planes come back
//! only where a step needs them (a Reshape, a dense layer, the graph's output): a
//! [`Slotted::Relayout`] step moves the images there, once per value.
//!
//! A value held as pixel rows has the shape `[N, H, W, C]` of its layout, so element-wise ops
//! broadcast it as they are: their other operands are moved to pixel rows too (a constant here,
//! at load; a computed value by a relayout step, a per-channel `[N, C, 1, 1]` costing a copy).
use std::collections::{HashMap, HashSet};

use anyhow::bail;
use mf_core::onnx;
use mf_kernels::Layout;

use super::upsample::Upsample;
use super::{Pools, Slotted};
use crate::ops;
use crate::tensor::Value;

/// Which inputs of an op are images it can take as pixel rows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Operands {
    /// Every input (element-wise ops, Concat).
    All,
    /// The first (QuantizeLinear, DequantizeLinear: the others are its parameters).
    First,
}

impl Operands {
    /// Whether input `i` is an image operand.
    fn takes(self, i: usize) -> bool {
        self == Operands::All || i == 0
    }
}

/// How `node` (reading `inputs`) can take pixel rows, or `None` when it needs planes: a
/// constant operand of an element-wise op must have rank 4 at most (it is moved to pixel rows
/// here), and quantization parameters must be one per tensor.
fn operands(
    node: &onnx::NodeProto,
    inputs: &[usize],
    constants: &[Option<Value>],
) -> Option<Operands> {
    let constant = |slot: usize| constants[slot].as_ref();
    match node.op_type.as_str() {
        "Add" | "Sub" | "Mul" | "Div" | "Sigmoid" | "Tanh" | "Concat" => inputs
            .iter()
            .all(|&s| constant(s).is_none_or(|v| v.shape().len() <= 4))
            .then_some(Operands::All),
        "QuantizeLinear" | "DequantizeLinear" => inputs[1..]
            .iter()
            .all(|&s| constant(s).is_some_and(|v| v.shape().iter().product::<usize>() == 1))
            .then_some(Operands::First),
        _ => None,
    }
}

/// The axis of pixel rows that holds an axis of rank-4 planes (N, C, H, W → 0, 3, 1, 2), or
/// `None` for an axis outside rank 4.
fn pixel_axis(axis: i64) -> Option<i64> {
    let axis = if axis < 0 { axis + 4 } else { axis };
    [0, 3, 1, 2].get(usize::try_from(axis).ok()?).copied()
}

/// `steps` with images kept as pixel rows wherever every step on their way takes them, and
/// relayout steps where planes are needed; new values (the relayouts' outputs, constants moved
/// to pixel rows) get new slots in `constants`. `graph_output` stays planes.
pub(super) fn keep_pixel_rows(
    steps: Vec<Slotted>,
    constants: &mut Vec<Option<Value>>,
    graph_output: usize,
) -> anyhow::Result<Vec<Slotted>> {
    // The values some step could take as pixel rows: a convolution writes its output as pixel
    // rows only for such a reader.
    let mut wanted = HashSet::new();
    for step in &steps {
        match step {
            Slotted::Conv { input, .. } | Slotted::Norm { input, .. } => {
                wanted.insert(*input);
            }
            Slotted::Op { node, inputs, .. } => {
                if let Some(which) = operands(node, inputs, constants) {
                    let images = inputs.iter().enumerate().filter(|&(i, _)| which.takes(i));
                    wanted.extend(images.map(|(_, &s)| s));
                }
            }
            _ => {}
        }
    }
    // Which steps read each value (the graph's output read once more, by the caller).
    let mut readers: HashMap<usize, Vec<usize>> = HashMap::from([(graph_output, vec![usize::MAX])]);
    for (i, step) in steps.iter().enumerate() {
        for &slot in step.inputs() {
            readers.entry(slot).or_default().push(i);
        }
    }
    let mut steps: Vec<Option<Slotted>> = steps.into_iter().map(Some).collect();
    let mut rows: HashSet<usize> = HashSet::new();
    let mut planes_of: HashMap<usize, usize> = HashMap::new();
    let mut rows_of: HashMap<usize, usize> = HashMap::new();
    let mut out = Vec::with_capacity(steps.len());
    for i in 0..steps.len() {
        let Some(mut step) = steps[i].take() else {
            continue; // Fused into an upsampling before it.
        };
        if let Some(fused) = upsampling(&mut steps, &step, (&rows, constants), &readers) {
            step = fused;
        }
        let takes = match &mut step {
            Slotted::Conv {
                input,
                output,
                layouts,
                ..
            } => {
                if rows.contains(input) {
                    layouts.input = Layout::Nhwc;
                }
                if *output != graph_output && wanted.contains(output) {
                    layouts.output = Layout::Nhwc;
                    rows.insert(*output);
                }
                true
            }
            Slotted::Norm {
                input,
                output,
                pixel_rows,
                chain,
                ..
            } => {
                // A GroupNorm that keeps rank 4 (as exported) passes pixel rows on.
                *pixel_rows = rows.contains(input) && chain.ungrouped.len() == 4;
                if *pixel_rows {
                    rows.insert(*output);
                }
                *pixel_rows
            }
            Slotted::Upsample { output, .. } => {
                rows.insert(*output);
                true
            }
            Slotted::Op {
                node,
                inputs,
                output,
            } => match operands(node, inputs, constants) {
                Some(which)
                    if inputs
                        .iter()
                        .enumerate()
                        .any(|(i, s)| which.takes(i) && rows.contains(s)) =>
                {
                    for (i, slot) in inputs.iter_mut().enumerate() {
                        if !which.takes(i) || rows.contains(slot) {
                            continue;
                        }
                        *slot = match rows_of.get(slot) {
                            Some(&moved) => moved,
                            None => {
                                let moved = constants.len();
                                match &constants[*slot] {
                                    Some(c) => {
                                        let c = Pools::default().relayout(c, Layout::Nhwc)?;
                                        constants.push(Some(c));
                                    }
                                    None => {
                                        constants.push(None);
                                        out.push(Slotted::Relayout {
                                            input: *slot,
                                            output: moved,
                                            to: Layout::Nhwc,
                                        });
                                    }
                                }
                                rows_of.insert(*slot, moved);
                                moved
                            }
                        };
                        rows.insert(*slot);
                    }
                    if node.op_type == "Concat" {
                        let axis = ops::int_attr(node, "axis", 0);
                        let Some(axis) = pixel_axis(axis) else {
                            bail!(
                                "Concat node {:?}: axis {axis} of images of rank 4",
                                node.name
                            );
                        };
                        if let Some(a) = node.attribute.iter_mut().find(|a| a.name == "axis") {
                            a.i = axis;
                        }
                    }
                    rows.insert(*output);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !takes {
            // This step needs planes.
            for slot in step.inputs_mut() {
                if !rows.contains(slot) {
                    continue;
                }
                *slot = *planes_of.entry(*slot).or_insert_with(|| {
                    constants.push(None);
                    let planes = constants.len() - 1;
                    out.push(Slotted::Relayout {
                        input: *slot,
                        output: planes,
                        to: Layout::Nchw,
                    });
                    planes
                });
            }
        }
        let output = step.output_mut();
        if *output == graph_output && rows.remove(&graph_output) {
            // The graph's output is given as planes.
            constants.push(None);
            let written = constants.len() - 1;
            *output = written;
            rows.insert(written);
            out.push(step);
            out.push(Slotted::Relayout {
                input: written,
                output: graph_output,
                to: Layout::Nchw,
            });
            continue;
        }
        out.push(step);
    }
    Ok(out)
}

/// The upsampling that `step` starts when it is the Reshape of pixel rows that mf-export's
/// nearest upsampling begins with, and the Expand and Reshape after it alone read what it and
/// the Expand write: those two are taken out of `steps`. `None` otherwise.
fn upsampling(
    steps: &mut [Option<Slotted>],
    step: &Slotted,
    (rows, constants): (&HashSet<usize>, &[Option<Value>]),
    readers: &HashMap<usize, Vec<usize>>,
) -> Option<Slotted> {
    let sole_reader = |slot: &usize| match readers.get(slot).map(Vec::as_slice) {
        Some(&[i]) => Some(i),
        _ => None,
    };
    let op = |i: usize, op_type: &str, input: usize| match &steps[i] {
        Some(Slotted::Op {
            node,
            inputs,
            output,
        }) if node.op_type == op_type && inputs.len() == 2 && inputs[0] == input => {
            Some((node.clone(), inputs[1], *output))
        }
        _ => None,
    };
    let Slotted::Op {
        node,
        inputs,
        output,
    } = step
    else {
        return None;
    };
    let (&[input, cells], true) = (inputs.as_slice(), node.op_type == "Reshape") else {
        return None;
    };
    if !rows.contains(&input) {
        return None;
    }
    let expand_at = sole_reader(output)?;
    let (expand, repeat, expanded) = op(expand_at, "Expand", *output)?;
    let joined_at = sole_reader(&expanded)?;
    let (join, joined, written) = op(joined_at, "Reshape", expanded)?;
    let shapes = [cells, repeat, joined].map(|s| constants[s].as_ref());
    let upsample = Upsample::new([node.clone(), expand, join], shapes)?;
    steps[expand_at] = None;
    steps[joined_at] = None;
    Some(Slotted::Upsample {
        input,
        output: written,
        upsample: Box::new(upsample),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_axes_of_planes_map_to_pixel_rows() {
        assert_eq!(pixel_axis(1), Some(3));
        assert_eq!(pixel_axis(-3), Some(3));
        assert_eq!(pixel_axis(2), Some(1));
        assert_eq!(pixel_axis(-1), Some(2));
        assert_eq!(pixel_axis(0), Some(0));
        assert_eq!(pixel_axis(4), None);
        assert_eq!(pixel_axis(-5), None);
    }
}
