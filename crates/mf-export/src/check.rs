//! Checks built into the exporter: run the exported graph in tract and compare it with
//! mf-train's forward; PSNR of one-step samples; per-layer int8 error.
use std::io::Cursor;

use anyhow::Context;
use mf_core::schedule::to_pixel;
use mf_kernels::reference::{self, Output, QuantizedLayer};
use mf_kernels::{Activation, QuantParams};
use tract_onnx::prelude::*;

use crate::graph::quantize_layer;
use crate::weights::Dense;

/// The network's inputs for one batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Shape of z, batch first.
    pub z_shape: Vec<usize>,
    /// z, row-major.
    pub z: Vec<f32>,
    /// t per sample.
    pub t: Vec<f32>,
    /// r per sample.
    pub r: Vec<f32>,
    /// Class per sample.
    pub class: Vec<i64>,
}

/// Runs an ONNX model in tract on one batch and returns `u`, flattened.
pub fn run_tract(model: &[u8], batch: &Batch) -> anyhow::Result<Vec<f32>> {
    let n = batch.t.len();
    let model = tract_onnx::onnx()
        .model_for_read(&mut Cursor::new(model))
        .context("tract cannot read the model")?
        .with_input_fact(0, f32::fact(&batch.z_shape).into())?
        .with_input_fact(1, f32::fact([n]).into())?
        .with_input_fact(2, f32::fact([n]).into())?
        .with_input_fact(3, i64::fact([n]).into())?
        .into_optimized()?
        .into_runnable()?;
    let z = tract_ndarray::ArrayD::from_shape_vec(batch.z_shape.clone(), batch.z.clone())?;
    let t = tract_ndarray::Array1::from_vec(batch.t.clone());
    let r = tract_ndarray::Array1::from_vec(batch.r.clone());
    let class = tract_ndarray::Array1::from_vec(batch.class.clone());
    let out = model.run(tvec!(
        z.into_tensor().into(),
        t.into_tensor().into(),
        r.into_tensor().into(),
        class.into_tensor().into()
    ))?;
    Ok(out[0]
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect())
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

/// Relative RMS error of a layer's int8 output against its f32 output on recorded inputs
/// `[rows, k]`, computed with the kernels' reference (the runtime's exact arithmetic).
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
    let norm: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum();
    (err / norm.max(1e-30)).sqrt()
}
