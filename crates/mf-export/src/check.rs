//! Checks built into the exporter: run the exported graph in tract and compare it with
//! mf-train's forward; PSNR of one-step samples.
use mf_core::batch::Batch;
use mf_core::schedule::to_pixel;
use mf_core::tract::TractPlan;

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
