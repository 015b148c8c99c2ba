//! Checks built into the exporter: run the exported graph in tract and compare it with
//! mf-train's forward; PSNR of one-step samples; per-layer int8 error.
use mf_core::batch::Batch;
use mf_core::schedule::to_pixel;
use mf_core::tract::TractPlan;
use mf_kernels::reference::{self, Output, QuantizedLayer};
use mf_kernels::{Activation, QuantParams};

use crate::graph::quantize_layer;
use crate::weights::Dense;

/// Runs an ONNX model in tract on one batch and returns `u`, flattened.
pub fn run_tract(model: &[u8], batch: &Batch) -> anyhow::Result<Vec<f32>> {
    TractPlan::new(model, batch.len(), &batch.sample_shape)?.run(batch)
}

/// max |a − b| / max |b|.
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let scale = b
        .iter()
        .fold(0.0f64, |m, &v| m.max(v.abs() as f64))
        .max(1e-12);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x - y).abs() as f64))
        / scale
}

/// PSNR in dB between two sample sets after mapping to 8-bit pixels (∞ when identical).
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (to_pixel(x) as f64 - to_pixel(y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// One-step samples x = z − u(z, 0, 1) for the batch's noise.
pub fn one_step(model: &[u8], noise: &Batch) -> anyhow::Result<Vec<f32>> {
    let u = run_tract(model, noise)?;
    Ok(noise.z.iter().zip(&u).map(|(z, u)| z - u).collect())
}

/// RMS error of a layer's int8 output against its f32 output on recorded inputs `[rows, k]`,
/// as a fraction of the f32 output's range (max − min; one uint8 step is 1/255 of a range),
/// computed with the kernels' reference (the runtime's exact arithmetic). Relative to the
/// output's range rather than its RMS, so that a layer whose outputs sit near zero does not
/// read as broken.
pub fn layer_error(layer: &Dense, input: QuantParams, x: &[f32], rows: usize) -> f64 {
    let (n, k) = (layer.n, layer.k);
    let (codes, scales) = quantize_layer(layer);
    let q = QuantizedLayer {
        weights: &codes,
        weight_scales: &scales,
        bias: &layer.bias,
        input,
        activation: Activation::None,
        n,
        k,
    };
    let xq: Vec<u8> = x[..rows * k].iter().map(|&v| input.quantize(v)).collect();
    let mut got = vec![0f32; rows * n];
    let mut want = vec![0f32; rows * n];
    reference::gemm_i8(&q, &xq, rows, Output::F32(&mut got)).expect("consistent shapes");
    reference::gemm_f32(
        &x[..rows * k],
        &layer.weight,
        &layer.bias,
        Activation::None,
        rows,
        n,
        k,
        &mut want,
    )
    .expect("consistent shapes");
    let err: f64 = got
        .iter()
        .zip(&want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let (lo, hi) = want
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let rms = (err / want.len().max(1) as f64).sqrt();
    rms / ((hi - lo) as f64).max(1e-30)
}
