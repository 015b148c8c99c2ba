//! Normalizations: Softmax, LayerNormalization and InstanceNormalization, in f32 with f64 sums;
//! and tanh, the squashing of the DiT's GELU.
use anyhow::ensure;

use super::{broadcast, normalized_axis};
use crate::tensor::Value;

/// Softmax (opset 13) along `axis`.
pub fn softmax(x: &[f32], shape: &[usize], axis: i64) -> anyhow::Result<Value> {
    let a = normalized_axis(axis, shape.len(), "Softmax")?;
    let (outer, len, inner) = split(shape, a, a + 1);
    let mut out = vec![0f32; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * len * inner + j * inner + i;
            let max = (0..len).map(|j| x[at(j)]).fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = (0..len).map(|j| ((x[at(j)] - max) as f64).exp()).sum();
            for j in 0..len {
                out[at(j)] = (((x[at(j)] - max) as f64).exp() / sum) as f32;
            }
        }
    }
    Ok(Value::F32(out, shape.to_vec()))
}

/// LayerNormalization (opset 17): normalized over the axes from `axis` on, then
/// `· scale + bias` (broadcast to those axes).
pub fn layer_norm(
    x: &[f32],
    shape: &[usize],
    scale: (&[f32], &[usize]),
    bias: Option<(&[f32], &[usize])>,
    axis: i64,
    epsilon: f32,
) -> anyhow::Result<Value> {
    let a = normalized_axis(axis, shape.len(), "LayerNormalization")?;
    let (outer, len, _) = split(shape, a, shape.len());
    ensure!(len > 0, "LayerNormalization over an empty axis");
    let mut out = vec![0f32; x.len()];
    for o in 0..outer {
        let row = &x[o * len..(o + 1) * len];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
        let inv = 1.0 / (var + epsilon as f64).sqrt();
        for (y, &v) in out[o * len..(o + 1) * len].iter_mut().zip(row) {
            *y = ((v as f64 - mean) * inv) as f32;
        }
    }
    let scaled = broadcast(&out, shape, scale.0, scale.1, |x, s| x * s)?;
    match bias {
        None => Ok(scaled),
        Some((b, sb)) => {
            let (y, sy) = scaled.f32("LayerNormalization")?;
            broadcast(y, sy, b, sb, |y, b| y + b)
        }
    }
}

/// InstanceNormalization: every `[n, c]` plane of `x` `[N, C, D…]` normalized over its `D…`
/// values, then `· scale[c] + bias[c]`.
pub fn instance_norm(
    x: &[f32],
    shape: &[usize],
    scale: &[f32],
    bias: &[f32],
    epsilon: f32,
) -> anyhow::Result<Value> {
    ensure!(
        shape.len() >= 3,
        "InstanceNormalization of {shape:?}: inputs are [N, C, D1, …] with at least one spatial axis"
    );
    let (channels, plane) = (shape[1], split(shape, 2, shape.len()).1);
    ensure!(
        scale.len() == channels && bias.len() == channels,
        "InstanceNormalization of {channels} channels with {} scales and {} biases",
        scale.len(),
        bias.len()
    );
    ensure!(plane > 0, "InstanceNormalization over empty planes");
    let mut out = vec![0f32; x.len()];
    for (i, (row, y)) in x.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
        let c = i % channels;
        let (mean, gain) = plane_stats(row, scale[c], epsilon);
        for (y, &v) in y.iter_mut().zip(row) {
            *y = normalized(v, mean, gain, bias[c]);
        }
    }
    Ok(Value::F32(out, shape.to_vec()))
}

/// One InstanceNormalization plane's mean and gain `scale / √(var + ε)`, summed in f64 over
/// four interleaved partial sums (so that the loops vectorize).
fn plane_stats(row: &[f32], scale: f32, epsilon: f32) -> (f64, f64) {
    let sum4 = |f: &dyn Fn(f32) -> f64| {
        let mut acc = [0f64; 4];
        let mut quads = row.chunks_exact(4);
        for q in &mut quads {
            for (a, &v) in acc.iter_mut().zip(q) {
                *a += f(v);
            }
        }
        let tail: f64 = quads.remainder().iter().map(|&v| f(v)).sum();
        (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
    };
    let len = row.len() as f64;
    let mean = sum4(&|v| v as f64) / len;
    let var = sum4(&|v| (v as f64 - mean).powi(2)) / len;
    (mean, scale as f64 / (var + epsilon as f64).sqrt())
}

/// One normalized value, rounded to f32 once.
#[inline(always)]
fn normalized(v: f32, mean: f64, gain: f64, bias: f32) -> f32 {
    ((v as f64 - mean) * gain + bias as f64) as f32
}

/// The logistic function as the Sigmoid op computes it: `1 / (1 + exp(−x))` with the kernels'
/// portable `exp` (within a few ulp of libm's, the same bits on every target, and it
/// vectorizes where a libm call per element does not).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + mf_kernels::activation::exp(-x))
}

/// GroupNorm as mf-export writes it, in one pass over the data:
/// `InstanceNormalization` of `x` viewed as `grouped` (`[N, G, …]`, with its per-group `scale`,
/// `bias` and `epsilon`), the result viewed as `shape` (`[N, C, …]`) times `gamma[c]` plus
/// `beta[c]`, then SiLU (`y · sigmoid(y)`) if `silu`. Every value is rounded as the separate
/// nodes round it, so the result is theirs bit for bit. `None` when a channel plane of `shape`
/// straddles two groups' planes (the caller then runs the nodes one by one).
pub fn group_norm(
    x: &[f32],
    grouped: &[usize],
    (scale, bias, epsilon): (&[f32], &[f32], f32),
    shape: &[usize],
    gamma: &[f32],
    beta: &[f32],
    silu: bool,
) -> Option<Vec<f32>> {
    let (groups, group_plane) = (*grouped.get(1)?, split(grouped, 2, grouped.len()).1);
    let (channels, plane) = (*shape.get(1)?, split(shape, 2, shape.len()).1);
    let fits = grouped.len() >= 3
        && plane > 0
        && group_plane > 0
        && group_plane.is_multiple_of(plane)
        && scale.len() == groups
        && bias.len() == groups
        && gamma.len() == channels
        && beta.len() == channels;
    if !fits {
        return None;
    }
    let stats: Vec<(f64, f64)> = x
        .chunks(group_plane)
        .enumerate()
        .map(|(i, row)| plane_stats(row, scale[i % groups], epsilon))
        .collect();
    let mut out = vec![0f32; x.len()];
    for (i, (row, y)) in x.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
        let c = i % channels;
        let g = i * plane / group_plane;
        let (mean, gain) = stats[g];
        let (b, gm, bt) = (bias[g % groups], gamma[c], beta[c]);
        if silu {
            for (y, &v) in y.iter_mut().zip(row) {
                let a = normalized(v, mean, gain, b) * gm + bt;
                *y = a * sigmoid(a);
            }
        } else {
            for (y, &v) in y.iter_mut().zip(row) {
                *y = normalized(v, mean, gain, b) * gm + bt;
            }
        }
    }
    Some(out)
}

/// tanh in f32 arithmetic alone: the odd 13/6 rational approximation Eigen uses (its
/// `generic_fast_tanh_float`), within a few float rounding steps of the true value, clamped
/// where tanh rounds to ±1, and `x` itself below 4e-4. Plain multiplies and adds, so the same
/// bits on every target and no call into a libm per element.
pub fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const ALPHA: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    if x.abs() < 4e-4 {
        return x;
    }
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let p = ALPHA.iter().rev().fold(0.0f32, |acc, &a| acc * x2 + a) * x;
    let q = BETA.iter().rev().fold(0.0f32, |acc, &b| acc * x2 + b);
    p / q
}

/// `(product of dims before from, product of dims from..to, product of dims after to)`.
fn split(shape: &[usize], from: usize, to: usize) -> (usize, usize, usize) {
    (
        shape[..from].iter().product(),
        shape[from..to].iter().product(),
        shape[to..].iter().product(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_is_within_a_few_rounding_steps_of_the_true_value() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 5e-5;
            let want = (x as f64).tanh();
            let err = (tanh(x) as f64 - want).abs() / want.abs().max(1e-30);
            worst = worst.max(if want == 0.0 {
                tanh(x).abs() as f64
            } else {
                err
            });
        }
        assert!(worst < 1e-6, "relative error {worst:e}");
        assert_eq!(tanh(40.0), tanh(7.905_311));
        assert!((tanh(40.0) - 1.0).abs() < 1e-6 && (tanh(-40.0) + 1.0).abs() < 1e-6);
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(1e-30), 1e-30);
    }
}
