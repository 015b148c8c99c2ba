//! Sampling: x = z₁ − u(z₁, 0, 1) in one step, or the schedule t_i = 1 − i/n for n steps,
//! z_r = z_t − (t − r)·u(z_t, r, t). Flow-matching models (the baseline) take Euler steps with
//! the instantaneous velocity u(z_t, t, t) instead.
use burn::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

use crate::config::ObjectiveKind;
use crate::model::VelocityNet;
use crate::rng::Rng;

/// Draws `labels.len()` samples from noise seeded with `seed`, in `steps` network evaluations.
/// Returns `[n, dims]` values (images in [-1, 1] before clipping).
pub fn sample(
    net: &VelocityNet,
    labels: &[i64],
    steps: usize,
    seed: u64,
    device: &Device,
) -> Vec<f32> {
    let n = labels.len();
    let dims = net.spec.dims();
    let mut rng = Rng::seed_from_u64(seed);
    let noise: Vec<f32> = (0..n * dims).map(|_| rng.sample(StandardNormal)).collect();
    let mut z = Tensor::<2>::from_data(TensorData::new(noise, [n, dims]), device);
    let class = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), device);
    let steps = steps.max(1);
    for i in 0..steps {
        let t = 1.0 - i as f64 / steps as f64;
        let r = 1.0 - (i + 1) as f64 / steps as f64;
        let tt = Tensor::<1>::full([n], t, device);
        let rr = match net.spec.objective {
            ObjectiveKind::MeanFlow => Tensor::<1>::full([n], r, device),
            ObjectiveKind::FlowMatching => tt.clone(),
        };
        let u = net.u(z.clone(), tt, rr, class.clone());
        z = z - u * (t - r);
    }
    z.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 samples")
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
