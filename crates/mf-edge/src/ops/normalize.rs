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
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / plane as f64;
        let gain = scale[c] as f64 / (var + epsilon as f64).sqrt();
        for (y, &v) in y.iter_mut().zip(row) {
            *y = ((v as f64 - mean) * gain + bias[c] as f64) as f32;
        }
    }
    Ok(Value::F32(out, shape.to_vec()))
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
