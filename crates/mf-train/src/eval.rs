//! Sample-quality measurements.
use burn::prelude::*;
use rand::SeedableRng;

use crate::datasets::Toy;
use crate::metrics::{mmd_rbf, sliced_wasserstein};
use crate::model::VelocityNet;
use crate::rng::Rng;
use crate::sample;

/// Distances between `n` samples of a toy model (in `steps` evaluations) and `n` fresh samples
/// of its distribution; fixed seeds, so repeatable.
#[derive(Debug, Clone, Copy)]
pub struct ToyDistance {
    /// Sliced Wasserstein-1 distance (256 projections).
    pub sliced_wasserstein: f64,
    /// Squared MMD with a Gaussian kernel of σ = 0.2 (a fifth of a checkerboard cell).
    pub mmd: f64,
}

/// Measures a toy model against its distribution.
pub fn toy_distance(
    net: &VelocityNet,
    toy: Toy,
    n: usize,
    steps: usize,
    device: &Device,
) -> ToyDistance {
    let labels = vec![net.spec.null_class() as i64; n];
    let generated = sample::sample(net, &labels, steps, 12345, device);
    let truth = toy.sample(&mut Rng::seed_from_u64(54321), n);
    ToyDistance {
        sliced_wasserstein: sliced_wasserstein(&generated, &truth, 2, 256, 7),
        mmd: mmd_rbf(&generated, &truth, 2, 0.2),
    }
}

/// The same distances between two independent true sample sets of `n` points: the floor.
pub fn toy_floor(toy: Toy, n: usize) -> ToyDistance {
    let a = toy.sample(&mut Rng::seed_from_u64(11), n);
    let b = toy.sample(&mut Rng::seed_from_u64(54321), n);
    ToyDistance {
        sliced_wasserstein: sliced_wasserstein(&a, &b, 2, 256, 7),
        mmd: mmd_rbf(&a, &b, 2, 0.2),
    }
}
