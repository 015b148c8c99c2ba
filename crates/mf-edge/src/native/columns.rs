//! A slice of one axis of a wider value (Slice with constant bounds, step 1), reshaped or
//! unsqueezed, read in place through strides instead of copied out: the DiT's Q, K and V
//! columns of their one `qkv` product (Slice → Reshape into heads), and its adaLN shift,
//! scale and gate rows of one modulation product (Slice → Unsqueeze). Where strides cannot
//! describe the result, the two nodes run as they are.
use std::sync::Mutex;

use anyhow::Context;
use mf_core::onnx;
use mf_kernels::Isa;

use crate::ops;
use crate::tensor::{Shape, Value, element_count};

/// A Slice of one axis with step 1, then a Reshape or an Unsqueeze, their constant operands
/// taken at planning.
pub(super) struct Columns {
    /// The Slice's start and end.
    bounds: [i64; 2],
    /// The sliced axis (negative counts from the end).
    axis: i64,
    /// What the second node does to the slice's shape.
    then: Then,
    /// The Slice and the second node with their constant inputs, run as nodes where the view
    /// does not apply.
    nodes: [(onnx::NodeProto, Vec<Value>); 2],
    /// The last shape viewed and its view: a run's shapes repeat, and finding a view costs a
    /// small step's time.
    last: Mutex<Option<(Shape, View)>>,
}

/// The shape change after the slice.
enum Then {
    /// Reshape to this target (`0` keeps, `-1` infers).
    Reshape(Vec<i64>),
    /// Unsqueeze at these axes.
    Unsqueeze(Vec<i64>),
}

/// A value seen through a [`Columns`]: its shape, its strides into the wide value's data and
/// the index of its first element there.
#[derive(Clone)]
pub(super) struct View {
    pub shape: Shape,
    pub strides: Shape,
    pub offset: usize,
}

impl Columns {
    /// The view for `slice` (with its constant inputs after the data: starts, ends, axes and
    /// optionally steps) and `then` (a Reshape with its target, or an Unsqueeze with its
    /// axes); `None` for anything else (several axes, a step other than 1, `allowzero`).
    pub(super) fn new(
        slice: (onnx::NodeProto, Vec<Value>),
        then: (onnx::NodeProto, Vec<Value>),
    ) -> Option<Columns> {
        let one = |v: &Value| match v {
            Value::I64(d, _) if d.len() == 1 => Some(d[0]),
            _ => None,
        };
        let (node, constants) = &slice;
        if node.op_type != "Slice" || node.input.len() != constants.len() + 1 {
            return None;
        }
        let [start, end, axis] = [0, 1, 2].map(|i| constants.get(i).and_then(one));
        if constants.len() > 4 || constants.get(3).is_some_and(|s| one(s) != Some(1)) {
            return None;
        }
        let (then_node, then_constants) = &then;
        let target = match then_constants.as_slice() {
            [Value::I64(d, _)] if then_node.input.len() == 2 => d.clone(),
            _ => return None,
        };
        let then_op = match then_node.op_type.as_str() {
            "Reshape" if ops::int_attr(then_node, "allowzero", 0) == 0 => Then::Reshape(target),
            "Unsqueeze" => Then::Unsqueeze(target),
            _ => return None,
        };
        Some(Columns {
            bounds: [start?, end?],
            axis: axis?,
            then: then_op,
            nodes: [slice, then],
            last: Mutex::default(),
        })
    }

    /// The view of a (row-major) value of `shape`: `None` when the axis is out of range or the
    /// second node's shape cannot be read through strides (the nodes then run).
    pub(super) fn view(&self, shape: &[usize]) -> Option<View> {
        if let Ok(last) = self.last.try_lock()
            && let Some((seen, view)) = last.as_ref()
            && seen[..] == *shape
        {
            return Some(view.clone());
        }
        let view = self.find_view(shape)?;
        if let Ok(mut last) = self.last.try_lock() {
            *last = Some((Shape::from_slice(shape), view.clone()));
        }
        Some(view)
    }

    /// [`Columns::view`] worked out.
    fn find_view(&self, shape: &[usize]) -> Option<View> {
        let rank = i64::try_from(shape.len()).ok()?;
        let axis = if self.axis < 0 {
            self.axis + rank
        } else {
            self.axis
        };
        let axis = usize::try_from(axis).ok().filter(|&a| a < shape.len())?;
        let dim = i64::try_from(shape[axis]).ok()?;
        let wrap = |x: i64| if x < 0 { x.saturating_add(dim) } else { x };
        let [start, end] = self.bounds.map(|b| wrap(b).clamp(0, dim));
        let mut sliced = Shape::from_slice(shape);
        sliced[axis] = usize::try_from(end - start).ok()?;
        let strides = ops::strides(shape);
        let offset = usize::try_from(start).ok()? * strides[axis];
        element_count(&sliced).ok()?;
        let target = match &self.then {
            Then::Reshape(target) => ops::reshape(&sliced, target).ok()?,
            Then::Unsqueeze(axes) => ops::unsqueeze(&sliced, axes).ok()?,
        };
        let strides = restride(&sliced, &strides, &target)?;
        Some(View {
            shape: target,
            strides,
            offset,
        })
    }

    /// The Slice and the second node run as nodes on `value`.
    pub(super) fn run_nodes(&self, isa: Isa, value: &Value) -> anyhow::Result<Value> {
        let mut value = value.clone();
        for (node, constants) in &self.nodes {
            let mut args = vec![&value];
            args.extend(constants);
            value = ops::run_on(isa, node, &args)
                .with_context(|| format!("{} node {:?}", node.op_type, node.name))?;
        }
        Ok(value)
    }
}

/// Strides that read `shape` (with `strides`) as `target`, a shape of as many elements, when
/// one exists (as PyTorch's `view` decides: each run of target axes covers a run of source
/// axes that is contiguous within itself); axes of size 1 get any stride.
pub(super) fn restride(shape: &[usize], strides: &[usize], target: &[usize]) -> Option<Shape> {
    let mut out = Shape::from_elem(0, target.len());
    if shape.contains(&0) {
        return Some(ops::strides(target));
    }
    let mut view_axis = target.len();
    let mut base = strides.last().copied().unwrap_or(1);
    let (mut source_count, mut view_count) = (1usize, 1usize);
    for axis in (0..shape.len()).rev() {
        source_count *= shape[axis];
        let chunk_ends =
            axis == 0 || (shape[axis - 1] != 1 && strides[axis - 1] != source_count * base);
        if !chunk_ends {
            continue;
        }
        while view_axis > 0 && (view_count < source_count || target[view_axis - 1] == 1) {
            view_axis -= 1;
            out[view_axis] = view_count * base;
            view_count *= target[view_axis];
        }
        if view_count != source_count {
            return None;
        }
        if axis > 0 {
            base = strides[axis - 1];
            source_count = 1;
            view_count = 1;
        }
    }
    (view_axis == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restride_reads_reshapes_and_unsqueezes_of_column_slices() {
        // [2, 8] columns 2..6 of a [2, 12]: rows 12 apart.
        assert_eq!(
            restride(&[2, 4], &[12, 1], &[2, 1, 4]).as_deref(),
            Some(&[12, 4, 1][..])
        );
        assert_eq!(
            restride(&[2, 4], &[12, 1], &[2, 2, 2]).as_deref(),
            Some(&[12, 2, 1][..])
        );
        assert_eq!(
            restride(&[2, 4], &[12, 1], &[2, 4, 1]).as_deref(),
            Some(&[12, 1, 1][..])
        );
        // Merging the rows is not a view of non-contiguous rows.
        assert_eq!(restride(&[2, 4], &[12, 1], &[8]), None);
        assert_eq!(restride(&[2, 4], &[12, 1], &[4, 2]), None);
        // A contiguous value reshapes freely.
        assert_eq!(
            restride(&[2, 3, 4], &[12, 4, 1], &[6, 4]).as_deref(),
            Some(&[4, 1][..])
        );
    }

    fn node(op: &str, inputs: usize) -> onnx::NodeProto {
        onnx::NodeProto {
            op_type: op.into(),
            input: (0..inputs).map(|i| format!("in{i}")).collect(),
            output: vec!["out".into()],
            ..Default::default()
        }
    }

    fn ints(v: &[i64]) -> Value {
        Value::I64(v.to_vec(), smallvec::smallvec![v.len()])
    }

    #[test]
    fn a_view_equals_the_nodes_it_stands_for() {
        let isa = Isa::detect();
        let wide: Vec<f32> = (0..3 * 2 * 12).map(|i| i as f32 * 0.5 - 7.0).collect();
        let value = Value::F32(wide.clone(), smallvec::smallvec![3, 2, 12]);
        let slices = [([4, 8], -1), ([-9, 100], 2), ([1, 2], 1), ([0, 2], 0)];
        let thens = [
            ("Unsqueeze", vec![1]),
            ("Unsqueeze", vec![-1, 0]),
            ("Reshape", vec![0, 0, -1, 2]),
            ("Reshape", vec![-1]),
        ];
        let mut viewed = 0;
        for ([start, end], axis) in slices {
            for (op, target) in &thens {
                let slice = (
                    node("Slice", 4),
                    vec![ints(&[start]), ints(&[end]), ints(&[axis])],
                );
                let columns = Columns::new(slice, (node(op, 2), vec![ints(target)])).unwrap();
                let want = columns.run_nodes(isa, &value);
                let Some(view) = columns.view(&[3, 2, 12]) else {
                    assert!(op == &"Reshape", "{op} {target:?} of a slice is a view");
                    continue;
                };
                viewed += 1;
                let Ok(Value::F32(want, want_shape)) = want else {
                    panic!("the nodes ran: {want:?}")
                };
                assert_eq!(view.shape, want_shape, "{start}..{end} of {axis}, {op}");
                let mut index = Shape::from_elem(0, view.shape.len());
                for &w in &want {
                    let at: usize = view.offset
                        + index
                            .iter()
                            .zip(&view.strides)
                            .map(|(i, s)| i * s)
                            .sum::<usize>();
                    assert_eq!(wide[at], w, "{start}..{end} of {axis}, {op} at {index:?}");
                    for a in (0..index.len()).rev() {
                        index[a] += 1;
                        if index[a] < view.shape[a] {
                            break;
                        }
                        index[a] = 0;
                    }
                }
            }
        }
        assert_eq!(viewed, 12, "views");
        // Two axes, or a step of 2, are not columns.
        let slice = (
            node("Slice", 5),
            vec![ints(&[0]), ints(&[4]), ints(&[2]), ints(&[2])],
        );
        assert!(Columns::new(slice, (node("Unsqueeze", 2), vec![ints(&[0])])).is_none());
    }
}
