//! Ops that move elements without computing: Transpose, Slice and Expand, for any element type,
//! and images moved between planes and pixel rows.
use anyhow::{Context, bail, ensure};
use mf_kernels::Layout;
use mf_kernels::layout::relayout;

use super::{FloatBuffer, FreshBuffers, broadcast_shapes, strides};
use crate::tensor::{Shape, Value, element_count};

/// Starts or steps per axis, held inline up to rank 8.
type Offsets = smallvec::SmallVec<[i64; 8]>;

/// The values of `v` that the walk of [`blocks`] visits, in that order, with shape
/// `out_shape`; float data goes into a buffer from `buffer`.
fn gather(
    v: &Value,
    out_shape: Shape,
    [start, step]: [&[i64]; 2],
    stride: &[usize],
    buffer: FloatBuffer<'_>,
) -> Value {
    fn walk<T: Copy>(
        d: &[T],
        out_shape: &[usize],
        [start, step]: [&[i64]; 2],
        stride: &[usize],
        mut out: Vec<T>,
    ) -> Vec<T> {
        out.clear();
        blocks(out_shape, start, step, stride, |block| {
            if (block.len, block.delta, block.line_delta) == (2, 0, 1) {
                // Nearest 2× upsampling's rows: each input value twice, read in order.
                for &x in &d[block.at..block.at + block.lines] {
                    out.extend_from_slice(&[x, x]);
                }
                return;
            }
            for line in 0..block.lines {
                let at = (block.at as i64 + line as i64 * block.line_delta) as usize;
                let len = block.len;
                match block.delta {
                    // Contiguous rows (a Slice of the last axis, an untouched last axis) are
                    // copies; a stretched last axis (Expand, nearest upsampling) repeats one value.
                    1 => out.extend_from_slice(&d[at..at + len]),
                    0 => out.extend(std::iter::repeat_n(d[at], len)),
                    delta => {
                        out.extend((0..len as i64).map(|j| d[(at as i64 + j * delta) as usize]))
                    }
                }
            }
        });
        out
    }
    let len = out_shape.iter().product();
    let at = [start, step];
    match v {
        Value::F32(d, _) => Value::F32(walk(d, &out_shape, at, stride, buffer(len)), out_shape),
        Value::I64(d, _) => Value::I64(walk(d, &out_shape, at, stride, Vec::new()), out_shape),
        Value::I32(d, _) => Value::I32(walk(d, &out_shape, at, stride, Vec::new()), out_shape),
        Value::I8(d, _) => Value::I8(walk(d, &out_shape, at, stride, Vec::new()), out_shape),
        Value::U8(d, _) => Value::U8(walk(d, &out_shape, at, stride, Vec::new()), out_shape),
    }
}

/// The output's last two axes at one position of the others: `lines` rows, row `l` reading
/// input `at + l·line_delta + j·delta` for `j < len`.
struct Block {
    at: usize,
    lines: usize,
    line_delta: i64,
    len: usize,
    delta: i64,
}

/// Walks the input positions of every output element, visiting the output in order: output
/// index `o` reads input `Σ (start[d] + o[d]·step[d]) · stride[d]`. Calls `block` once per
/// position of all but the last two axes (the rows of an upsampled image are only a few values
/// long: handing out whole planes keeps the bookkeeping off the per-row path). The position is
/// carried from block to block (one add per carry).
fn blocks(
    out_shape: &[usize],
    start: &[i64],
    step: &[i64],
    stride: &[usize],
    mut block: impl FnMut(Block),
) {
    let count: usize = out_shape.iter().product();
    let rank = out_shape.len();
    let delta: Offsets = (0..rank).map(|d| step[d] * stride[d] as i64).collect();
    let at: i64 = (0..rank).map(|d| start[d] * stride[d] as i64).sum();
    let (len, delta_len) = match rank {
        0 => (1, 1),
        _ => (out_shape[rank - 1], delta[rank - 1]),
    };
    let (lines, line_delta) = match rank {
        0 | 1 => (1, 0),
        _ => (out_shape[rank - 2], delta[rank - 2]),
    };
    if count == 0 {
        return;
    }
    let outer_shape = &out_shape[..rank.saturating_sub(2)];
    let mut at = at;
    let mut index = Shape::from_elem(0, outer_shape.len());
    for _ in 0..count / (lines * len) {
        block(Block {
            at: at as usize,
            lines,
            line_delta,
            len,
            delta: delta_len,
        });
        for d in (0..outer_shape.len()).rev() {
            index[d] += 1;
            at += delta[d];
            if index[d] < outer_shape[d] {
                break;
            }
            at -= delta[d] * outer_shape[d] as i64;
            index[d] = 0;
        }
    }
}

/// Transpose with permutation `perm` (reversed dimensions when empty); float data goes into a
/// buffer from `buffer`.
pub fn transpose(v: &Value, perm: &[i64], buffer: FloatBuffer<'_>) -> anyhow::Result<Value> {
    let shape = v.shape();
    let rank = shape.len();
    let perm: Shape = if perm.is_empty() {
        (0..rank).rev().collect()
    } else {
        perm.iter().map(|&p| p as usize).collect()
    };
    let mut seen = smallvec::SmallVec::<[bool; 8]>::from_elem(false, rank);
    ensure!(
        perm.len() == rank
            && perm
                .iter()
                .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true)),
        "Transpose perm {perm:?} is not a permutation of the {rank} dimensions of {shape:?}"
    );
    let stride = strides(shape);
    let out_shape: Shape = perm.iter().map(|&p| shape[p]).collect();
    let out_stride: Shape = perm.iter().map(|&p| stride[p]).collect();
    let (start, step) = (Offsets::from_elem(0, rank), Offsets::from_elem(1, rank));
    Ok(gather(v, out_shape, [&start, &step], &out_stride, buffer))
}

/// Slice (opset 10+): `starts`, `ends`, optional `axes` and `steps`, with ONNX's clamping of
/// negative and out-of-range bounds; float data goes into a buffer from `buffer`.
pub fn slice(
    v: &Value,
    [starts, ends]: [&[i64]; 2],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
    buffer: FloatBuffer<'_>,
) -> anyhow::Result<Value> {
    let shape = v.shape();
    let rank = shape.len() as i64;
    ensure!(
        starts.len() == ends.len(),
        "Slice has {} starts and {} ends",
        starts.len(),
        ends.len()
    );
    let default_axes: Offsets = (0..starts.len() as i64).collect();
    let axes = axes.unwrap_or(&default_axes);
    let ones = Offsets::from_elem(1, starts.len());
    let steps = steps.unwrap_or(&ones);
    ensure!(
        axes.len() == starts.len() && steps.len() == starts.len(),
        "Slice: starts, ends, axes and steps differ in length"
    );
    let mut start = Offsets::from_elem(0, shape.len());
    let mut step = Offsets::from_elem(1, shape.len());
    let mut out_shape = Shape::from_slice(shape);
    let mut done = smallvec::SmallVec::<[bool; 8]>::from_elem(false, shape.len());
    for i in 0..starts.len() {
        let axis = if axes[i] < 0 { axes[i] + rank } else { axes[i] };
        ensure!(
            (0..rank).contains(&axis) && !done[axis as usize],
            "Slice axis {} is out of range or repeated for a rank-{rank} input",
            axes[i]
        );
        let a = axis as usize;
        done[a] = true;
        let dim = shape[a] as i64;
        let s = steps[i];
        ensure!(s != 0, "Slice step 0 on axis {axis}");
        let wrap = |x: i64| if x < 0 { x.saturating_add(dim) } else { x };
        let (b, e) = if dim == 0 {
            (0, 0)
        } else if s > 0 {
            (wrap(starts[i]).clamp(0, dim), wrap(ends[i]).clamp(0, dim))
        } else {
            (
                wrap(starts[i]).clamp(0, dim - 1),
                wrap(ends[i]).clamp(-1, dim - 1),
            )
        };
        let (span, stride) = if s > 0 { (e - b, s) } else { (b - e, -s) };
        let len = (span.max(0) as u64).div_ceil(stride.unsigned_abs());
        start[a] = b;
        step[a] = s;
        out_shape[a] = len as usize;
    }
    element_count(&out_shape).context("Slice output")?;
    Ok(gather(
        v,
        out_shape,
        [&start, &step],
        &strides(shape),
        buffer,
    ))
}

/// Expand: `v` broadcast against `target` (numpy rules in both directions, as ONNX says);
/// float data goes into a buffer from `buffer`.
pub fn expand(v: &Value, target: &[i64], buffer: FloatBuffer<'_>) -> anyhow::Result<Value> {
    let shape = v.shape();
    let target: Shape = target
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .with_context(|| format!("Expand to {target:?}: dimensions must not be negative"))?;
    let (padded, _, out_shape) = broadcast_shapes(shape, &target)
        .with_context(|| format!("Expand of {shape:?} to {target:?}"))?;
    element_count(&out_shape)?;
    // A stretched dimension reads the same input element along it: stride 0.
    let stride: Shape = strides(&padded)
        .into_iter()
        .zip(&padded)
        .map(|(s, &d)| if d == 1 { 0 } else { s })
        .collect();
    let rank = out_shape.len();
    let (start, step) = (Offsets::from_elem(0, rank), Offsets::from_elem(1, rank));
    Ok(gather(v, out_shape, [&start, &step], &stride, buffer))
}

/// `value` moved between planes and pixel rows: to pixel rows `[N, H, W, C]` from planes of
/// rank 4 at most (a lower rank taken as `[1, …]`-padded planes, as broadcasting does), or to
/// planes `[N, C, H, W]` from pixel rows. Float and code buffers come from `floats` and
/// `bytes`.
pub fn relayout_value(
    value: &Value,
    to: Layout,
    (floats, bytes): FreshBuffers<'_>,
) -> anyhow::Result<Value> {
    let shape = value.shape();
    let ([n, c, h, w], from) = match to {
        Layout::Nhwc => {
            ensure!(
                shape.len() <= 4,
                "an operand of shape {shape:?} meets images that the native engine keeps as \
                 pixel rows, which broadcast operands of rank 4 at most; run this model with \
                 --backend tract or --backend ort"
            );
            let mut planes = [1; 4];
            planes[4 - shape.len()..].copy_from_slice(shape);
            (planes, Layout::Nchw)
        }
        Layout::Nchw => {
            let &[n, h, w, c] = shape else {
                bail!("pixel rows of shape {shape:?}: [N, H, W, C] expected");
            };
            ([n, c, h, w], Layout::Nhwc)
        }
    };
    let out_shape: Shape = match to {
        Layout::Nhwc => smallvec::smallvec![n, h, w, c],
        Layout::Nchw => smallvec::smallvec![n, c, h, w],
    };
    let dims = [n, c, h * w];
    Ok(match value {
        Value::F32(x, _) => {
            let mut out = floats(x.len());
            relayout(x, dims, from, &mut out);
            Value::F32(out, out_shape)
        }
        Value::U8(x, _) => {
            let mut out = bytes(x.len());
            relayout(x, dims, from, &mut out);
            Value::U8(out, out_shape)
        }
        Value::I8(x, _) => Value::I8(moved(x, dims, from), out_shape),
        Value::I32(x, _) => Value::I32(moved(x, dims, from), out_shape),
        Value::I64(x, _) => Value::I64(moved(x, dims, from), out_shape),
    })
}

/// [`relayout`] one element at a time, for the element types images rarely have.
fn moved<T: Copy>(x: &[T], [_, c, p]: [usize; 3], from: Layout) -> Vec<T> {
    (0..x.len())
        .map(|i| {
            let (image, rest) = (i / (c * p), i % (c * p));
            let at = match from {
                // Output pixel rows: `rest` is pixel · c + channel.
                Layout::Nchw => rest % c * p + rest / c,
                // Output planes: `rest` is channel · p + pixel.
                Layout::Nhwc => rest % p * c + rest / p,
            };
            x[image * c * p + at]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `v` moved to layout `to` in fresh buffers.
    fn relaid(v: &Value, to: Layout) -> anyhow::Result<Value> {
        relayout_value(
            v,
            to,
            (&mut |len| vec![0.0; len], &mut |len| vec![0u8; len]),
        )
    }

    #[test]
    fn every_element_type_moves_to_pixel_rows_and_back() {
        let (n, c, h, w) = (2, 3, 2, 5);
        let planes: Vec<i64> = (0..(n * c * h * w) as i64).collect();
        let value = Value::I64(planes.clone(), smallvec::smallvec![n, c, h, w]);
        let rows = relaid(&value, Layout::Nhwc).unwrap();
        let floats = Value::F32(
            planes.iter().map(|&v| v as f32).collect(),
            value.shape().into(),
        );
        let float_rows = relaid(&floats, Layout::Nhwc).unwrap();
        let Value::I64(r, shape) = &rows else {
            panic!("int64 rows")
        };
        assert_eq!(shape.as_slice(), [n, h, w, c]);
        assert_eq!(
            float_rows,
            Value::F32(r.iter().map(|&v| v as f32).collect(), shape.clone())
        );
        // Pixel (y, x)'s channels side by side.
        assert_eq!(&r[..3], [0, 10, 20]);
        assert_eq!(relaid(&rows, Layout::Nchw).unwrap(), value);
        // A per-channel operand of rank 3 is padded to rank 4.
        let bias = Value::F32(vec![1.0, 2.0, 3.0], smallvec::smallvec![3, 1, 1]);
        let moved = relaid(&bias, Layout::Nhwc).unwrap();
        assert_eq!(moved.shape(), [1, 1, 1, 3]);
        let five = Value::F32(vec![0.0; 2], smallvec::smallvec![1, 1, 1, 1, 2]);
        let refused = relaid(&five, Layout::Nhwc).unwrap_err();
        assert!(refused.to_string().contains("rank 4 at most"), "{refused}");
    }

    #[test]
    fn an_empty_axis_slices_to_nothing_whatever_the_step() {
        let v = Value::F32(Vec::new(), smallvec::smallvec![0, 3]);
        for step in [1, -1, 3, -3] {
            let out = slice(
                &v,
                [&[5], &[-5]],
                Some(&[0]),
                Some(&[step]),
                &mut Vec::with_capacity,
            )
            .unwrap();
            assert_eq!(out.shape(), &[0, 3]);
        }
    }

    #[test]
    fn expand_repeats_each_value_along_its_stretched_axes() {
        // Nearest 2× upsampling as exported ([.., H, 1, W, 1] → [.., H, 2, W, 2]: rows of two
        // equal values), a stretch of 3 and a stretched middle axis alone.
        let cases: [(&[usize], &[i64]); 3] = [
            (&[2, 3, 1, 4, 1], &[2, 3, 2, 4, 2]),
            (&[2, 3, 1, 4, 1], &[2, 3, 3, 4, 3]),
            (&[2, 1, 5], &[2, 4, 5]),
        ];
        for (shape, target) in cases {
            let count: usize = shape.iter().product();
            let v = Value::F32((0..count).map(|i| i as f32).collect(), shape.into());
            let Value::F32(got, out_shape) = expand(&v, target, &mut Vec::with_capacity).unwrap()
            else {
                panic!("float output")
            };
            let want_shape: Vec<usize> = target.iter().map(|&d| d as usize).collect();
            assert_eq!(out_shape.as_slice(), want_shape);
            // Each output reads the input at its index, 0 along the stretched axes.
            let out_strides = strides(&want_shape);
            let in_strides = strides(shape);
            for (o, &y) in got.iter().enumerate() {
                let at: usize = (0..shape.len())
                    .map(|d| {
                        if shape[d] == 1 {
                            0
                        } else {
                            o / out_strides[d] % want_shape[d] * in_strides[d]
                        }
                    })
                    .sum();
                assert_eq!(y, at as f32, "{shape:?} → {target:?} at {o}");
            }
        }
    }

    #[test]
    fn transpose_refuses_what_is_not_a_permutation() {
        let v = Value::F32(vec![0.0; 6], smallvec::smallvec![2, 3]);
        for perm in [&[0, 0][..], &[0, 2], &[-1, 0], &[1]] {
            assert!(
                transpose(&v, perm, &mut Vec::with_capacity).is_err(),
                "{perm:?}"
            );
        }
        assert_eq!(
            transpose(&v, &[1, 0], &mut Vec::with_capacity)
                .unwrap()
                .shape(),
            &[3, 2]
        );
    }
}
