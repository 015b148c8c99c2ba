//! Sampling with any backend: one-step generation (and the multi-step schedules), and
//! one-step "paint" from a photo.
use anyhow::ensure;
use mf_core::card::ModelCard;
use mf_core::noise::Noise;
use mf_core::schedule::step;

use crate::backends::{Backend, Batch};

/// Generates `count` samples of `class` (None for unconditional models) from the noise seeded
/// with `seed`, in `steps` network evaluations. Returns `[count, dims]` model values.
pub fn generate(
    backend: &mut dyn Backend,
    card: &ModelCard,
    class: Option<usize>,
    count: usize,
    seed: u64,
    steps: usize,
) -> anyhow::Result<Vec<f32>> {
    ensure!(count > 0, "--count must be positive");
    let mut z = vec![0f32; count * card.dims()];
    Noise::new(seed).fill(&mut z);
    denoise(backend, card, class, z, steps)
}

/// Maps noise `z` (`[count, dims]` model values, drawn by the caller) to samples in `steps`
/// network evaluations: the part of [`generate`] that runs the model.
pub fn denoise(
    backend: &mut dyn Backend,
    card: &ModelCard,
    class: Option<usize>,
    mut z: Vec<f32>,
    steps: usize,
) -> anyhow::Result<Vec<f32>> {
    ensure!(steps > 0, "--steps must be positive");
    let dims = card.dims();
    ensure!(
        dims > 0 && !z.is_empty() && z.len().is_multiple_of(dims),
        "noise of {} values for samples of {dims}",
        z.len()
    );
    let count = z.len() / dims;
    let label = class.unwrap_or(card.null_class) as i64;
    for i in 0..steps {
        let (t, r) = card.sampler.times(i, steps);
        let inputs = Batch {
            z: z.clone(),
            sample_shape: card.sample_shape.clone(),
            t: vec![t; count],
            r: vec![r; count],
            class: vec![label; count],
        };
        let u = velocity(backend, &inputs)?;
        step(&mut z, &u, card.sampler.span(i, steps));
    }
    Ok(z)
}

/// One-step camera-art: the image `x` (model values) is noised to z_t = (1 − t)·x + t·ε at
/// t = `strength` and mapped in one evaluation to z_t − t·u(z_t, 0, t).
pub fn paint(
    backend: &mut dyn Backend,
    card: &ModelCard,
    x: &[f32],
    class: Option<usize>,
    strength: f32,
    seed: u64,
) -> anyhow::Result<Vec<f32>> {
    ensure!(
        strength > 0.0 && strength <= 1.0,
        "--strength must be in (0, 1], got {strength}"
    );
    ensure!(
        x.len() == card.dims(),
        "the image has {} values, the model takes {}",
        x.len(),
        card.dims()
    );
    let mut eps = vec![0f32; x.len()];
    Noise::new(seed).fill(&mut eps);
    let z: Vec<f32> = x
        .iter()
        .zip(&eps)
        .map(|(&x, &e)| (1.0 - strength) * x + strength * e)
        .collect();
    let inputs = Batch {
        z: z.clone(),
        sample_shape: card.sample_shape.clone(),
        t: vec![strength],
        r: vec![0.0],
        class: vec![class.unwrap_or(card.null_class) as i64],
    };
    let u = velocity(backend, &inputs)?;
    Ok(z.iter().zip(&u).map(|(&z, &u)| z - strength * u).collect())
}

/// u for a batch, checked to hold one value per value of z: the model file decides what a
/// backend returns, so a wrong size is an error here, never an index past the end.
fn velocity(backend: &mut dyn Backend, inputs: &Batch) -> anyhow::Result<Vec<f32>> {
    let u = backend.run(inputs)?;
    ensure!(
        u.len() == inputs.z.len(),
        "the backend returned {} values for {} inputs",
        u.len(),
        inputs.z.len()
    );
    Ok(u)
}
