//! `mf-train couple`: a trained run draws images from known noise, several network evaluations
//! each, and writes them as couplings ([`crate::datasets::coupled`]) for a student to train
//! on with `data.couplings`. Draws whose values run far outside the data range (a many-step
//! solve that diverged: a white square from a digit's noise) are left out, so that the student
//! does not learn to blur them into their neighbours.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, ensure};
use burn::prelude::Device;
use indicatif::{ProgressBar, ProgressStyle};
use mf_core::noise::Noise;

use crate::checkpoint;
use crate::datasets::coupled::{self, Provenance, noise_seed};
use crate::datasets::{Dataset, ImageSet};
use crate::sample::sample_guided;

/// What to draw and where to write it.
#[derive(Debug, Clone)]
pub struct CoupleOptions {
    /// The teacher's run folder (its EMA weights draw the images).
    pub run: PathBuf,
    /// Draws to make; labels cycle through the classes, so each class gets its share.
    pub count: usize,
    /// Network evaluations per image.
    pub steps: usize,
    /// Classifier-free guidance scale ω of each step (`u(∅) + ω·(u(c) − u(∅))`, two network
    /// evaluations a step); 1 samples the conditional model alone.
    pub guidance: f64,
    /// Draw `d` starts from the noise seeded with `seed + d`.
    pub seed: u64,
    /// Keep a draw only if every value stays within ±this before clipping (the data lie in
    /// [-1, 1]).
    pub keep_within: f32,
    /// Images drawn per network call.
    pub batch: usize,
    /// The couplings file to write.
    pub out: PathBuf,
}

/// Draws the couplings and writes them; returns how they were made.
pub fn couple(opts: &CoupleOptions) -> anyhow::Result<Provenance> {
    let started = Instant::now();
    ensure!(
        opts.count > 0 && opts.batch > 0,
        "count and batch must be positive"
    );
    ensure!(
        opts.keep_within >= 1.0 && opts.keep_within.is_finite(),
        "keep-within {} would drop real-looking images: the data lie in [-1, 1]; give 1 or more",
        opts.keep_within
    );
    ensure!(
        opts.guidance.is_finite() && opts.guidance >= 0.0,
        "guidance {} is not a scale: give 0 or more (1 draws without guidance)",
        opts.guidance
    );
    let device = Device::flex();
    let (state, teacher) = checkpoint::load_ema(&opts.run, &device)?;
    let spec = &teacher.spec;
    let [channels, size, width] = spec.sample_shape[..] else {
        anyhow::bail!(
            "{} models a {}-D toy set; couplings are images",
            opts.run.display(),
            spec.sample_shape.len()
        );
    };
    ensure!(size == width, "the teacher's images are not square");
    ensure!(
        spec.classes > 0,
        "{} is unconditional; couplings need a class-conditional teacher",
        opts.run.display()
    );
    let (class_names, _) = Dataset::class_list(&state.config.data)?;
    ensure!(
        class_names.len() == spec.classes,
        "the teacher has {} classes but its dataset lists {}",
        spec.classes,
        class_names.len()
    );
    let dims = spec.dims();
    let labels: Vec<i64> = (0..opts.count).map(|i| (i % spec.classes) as i64).collect();
    let bar = ProgressBar::new(opts.count as u64).with_style(
        ProgressStyle::with_template("couple {bar:40} {pos}/{len} pairs, {eta} left")
            .context("progress template")?,
    );
    let (mut pixels, mut kept) = (Vec::with_capacity(opts.count * dims), Vec::new());
    for (chunk, start) in labels.chunks(opts.batch).zip((0u64..).step_by(opts.batch)) {
        let mut noise = vec![0f32; chunk.len() * dims];
        for (d, row) in (start..).zip(noise.chunks_exact_mut(dims)) {
            Noise::new(noise_seed(opts.seed, d)).fill(row);
        }
        let x = sample_guided(&teacher, noise, chunk, opts.steps, opts.guidance, &device);
        for (d, image) in (start..).zip(x.chunks_exact(dims)) {
            if image.iter().all(|v| v.abs() <= opts.keep_within) {
                pixels.extend(image.iter().map(|&v| to_pixel(v)));
                kept.push(d);
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    ensure!(
        !kept.is_empty(),
        "every one of the {} draws left ±{}: the teacher diverges",
        opts.count,
        opts.keep_within
    );
    let provenance = Provenance {
        dataset: state.config.data.dataset.clone(),
        class_names: class_names.clone(),
        noise_seed: opts.seed,
        teacher: opts.run.display().to_string(),
        teacher_config_hash: state.config_hash.clone(),
        teacher_step: state.step,
        teacher_seconds: state.elapsed_s,
        steps: opts.steps,
        guidance: opts.guidance,
        draws_made: opts.count as u64,
        kept: kept.len() as u64,
        keep_within: opts.keep_within,
        seconds: started.elapsed().as_secs_f64(),
    };
    let images = ImageSet {
        pixels,
        labels: kept.iter().map(|&d| labels[d as usize] as u16).collect(),
        channels,
        size,
        class_names,
        class_folders: Vec::new(),
    };
    coupled::write(&opts.out, &images, &kept, &provenance)?;
    Ok(provenance)
}

/// A sample value in [-1, 1] (clipped) as the 8-bit pixel `p` with `p / 127.5 − 1` nearest.
fn to_pixel(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_round_trip_through_the_image_scale() {
        for p in 0..=255u8 {
            assert_eq!(to_pixel(p as f32 / 127.5 - 1.0), p);
        }
        assert_eq!((to_pixel(-3.0), to_pixel(7.0)), (0, 255));
    }
}
