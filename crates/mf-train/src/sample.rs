//! Sampling: x = z₁ − u(z₁, 0, 1) in one step, or the schedule t_i = 1 − i/n for n steps,
//! z_r = z_t − (t − r)·u(z_t, r, t). Flow-matching models (the baseline) take Euler steps with
//! the instantaneous velocity u(z_t, t, t) instead.
use burn::prelude::*;
use mf_core::noise::Noise;
use rand::RngExt;

use crate::config::ObjectiveKind;
use crate::model::VelocityNet;
use crate::rng::Rng;

/// Draws `labels.len()` samples from noise seeded with `seed`, in `steps` network evaluations.
/// The noise is mf-core's [`Noise`], the stream `mf-edge generate` draws, so one seed gives
/// one picture in both. Returns `[n, dims]` values (images in [-1, 1] before clipping).
pub fn sample(
    net: &VelocityNet,
    labels: &[i64],
    steps: usize,
    seed: u64,
    device: &Device,
) -> Vec<f32> {
    let mut noise = vec![0f32; labels.len() * net.spec.dims()];
    Noise::new(seed).fill(&mut noise);
    sample_from(net, noise, labels, steps, device)
}

/// Draws one sample per label from the given noise (`[n, dims]`, row `i` for `labels[i]`) in
/// `steps` network evaluations; returns `[n, dims]` values as [`sample`] does.
pub fn sample_from(
    net: &VelocityNet,
    noise: Vec<f32>,
    labels: &[i64],
    steps: usize,
    device: &Device,
) -> Vec<f32> {
    sample_guided(net, noise, labels, steps, 1.0, device)
}

/// [`sample_from`] with classifier-free guidance at each step: the velocity is
/// `u(∅) + ω·(u(c) − u(∅))`, the class-conditional and the null-class prediction from one
/// network call on both halves of a doubled batch. ω = 1 is the plain conditional model, one
/// call of the batch as [`sample_from`] makes it (the same values); so is a model without
/// classes, which has no null class to guide against.
pub fn sample_guided(
    net: &VelocityNet,
    noise: Vec<f32>,
    labels: &[i64],
    steps: usize,
    omega: f64,
    device: &Device,
) -> Vec<f32> {
    let (n, dims) = (labels.len(), net.spec.dims());
    assert_eq!(noise.len(), n * dims, "one noise row per label");
    let guided = omega != 1.0 && net.spec.classes > 0;
    let mut z = Tensor::<2>::from_data(TensorData::new(noise, [n, dims]), device);
    let class_rows: Vec<i64> = if guided {
        let null = net.spec.null_class() as i64;
        labels
            .iter()
            .copied()
            .chain(labels.iter().map(|_| null))
            .collect()
    } else {
        labels.to_vec()
    };
    let rows = class_rows.len();
    let class = Tensor::<1, Int>::from_data(TensorData::new(class_rows, [rows]), device);
    let steps = steps.max(1);
    for i in 0..steps {
        let t = 1.0 - i as f64 / steps as f64;
        let r = 1.0 - (i + 1) as f64 / steps as f64;
        let tt = Tensor::<1>::full([rows], t, device);
        let rr = match net.spec.objective {
            ObjectiveKind::MeanFlow => Tensor::<1>::full([rows], r, device),
            ObjectiveKind::FlowMatching => tt.clone(),
        };
        let input = if guided {
            Tensor::cat(vec![z.clone(), z.clone()], 0)
        } else {
            z.clone()
        };
        let u = net.u(input, tt, rr, class.clone());
        let u = if guided {
            let conditional = u.clone().slice([0..n, 0..dims]);
            let null = u.slice([n..2 * n, 0..dims]);
            null.clone() + (conditional - null) * omega
        } else {
            u
        };
        z = z - u * (t - r);
    }
    z.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 samples")
}

/// A grid with one row of `per_class` samples per class in `classes` (or one row of
/// unconditional samples when the model has no classes), row `i` drawn from seed `seed + i`:
/// the rows `mf-edge generate --class all` draws, and with one class its `--class c`.
pub fn sample_grid(
    net: &VelocityNet,
    classes: &[usize],
    per_class: usize,
    steps: usize,
    seed: u64,
    device: &Device,
) -> Vec<f32> {
    let rows: Vec<Vec<i64>> = if net.spec.classes == 0 {
        vec![grid_labels(net, &[], per_class)]
    } else {
        classes
            .iter()
            .map(|&c| grid_labels(net, &[c], per_class))
            .collect()
    };
    rows.iter()
        .enumerate()
        .flat_map(|(i, labels)| sample(net, labels, steps, seed.wrapping_add(i as u64), device))
        .collect()
}

/// Labels for a grid with `per_class` samples of each class in `classes` (row by row), or
/// `per_class` unconditional samples (null class) when the model has no classes.
pub fn grid_labels(net: &VelocityNet, classes: &[usize], per_class: usize) -> Vec<i64> {
    if net.spec.classes == 0 {
        return vec![net.spec.null_class() as i64; per_class];
    }
    classes
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c as i64, per_class))
        .collect()
}

/// A random choice of `n` labels among the model's classes (for evaluation sets).
pub fn random_labels(classes: usize, n: usize, rng: &mut Rng) -> Vec<i64> {
    (0..n)
        .map(|_| rng.random_range(0..classes.max(1)) as i64)
        .collect()
}
