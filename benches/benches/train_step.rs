//! The cost of one training step (forward, loss, backward, Adam) on Burn's flex CPU backend:
//! MeanFlow with its exact JVP against plain flow matching on the same network and batch, the
//! ratio issue #4 bounds at 1.3x (the official JAX code measures 1.16x).
//! - `train_step/<net>/flow-matching`: u(z_t, t, t) regressed onto v.
//! - `train_step/<net>/meanflow`: the dual forward (u and du/dt in one pass), ω = 1.
//! - `train_step/<net>/meanflow-cfg`: the same with guidance in the target (ω 2.5): one more
//!   forward of u(z_t, t, t | ∅) without tangents.
//!
//! Networks: the shipped MNIST MLP (`configs/mnist.toml`, 5.02M parameters) and the MNIST U-Net
//! (`configs/mnist-unet.toml`), each at its config's batch (256 and 64), on MNIST-shaped draws
//! (random pixels: the cost does not depend on the values).
//!
//! Run: `cargo bench -p mf-benches --bench train_step`, then `tools/bench-summary train_step`.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mf_train::burn::prelude::*;
use mf_train::config::{Config, ObjectiveKind};
use mf_train::model::{NetSpec, VelocityNet};
use mf_train::objective::Draws;
use mf_train::train::{adam, step};
use rand::{RngExt, SeedableRng};

const MLP: &str = include_str!("../../crates/mf-train/configs/mnist.toml");
const UNET: &str = include_str!("../../crates/mf-train/configs/mnist-unet.toml");

/// MNIST-shaped draws: pixels in [-1, 1], noise, labels and (t, r) with 25% r ≠ t.
fn draws(n: usize) -> Draws {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let dims = 784;
    let mut uniform = |lo: f32, hi: f32| rng.random_range(lo..hi);
    let x = (0..n * dims).map(|_| uniform(-1.0, 1.0)).collect();
    let noise = (0..n * dims).map(|_| uniform(-2.0, 2.0)).collect();
    let t: Vec<f32> = (0..n).map(|_| uniform(0.05, 1.0)).collect();
    let r = t
        .iter()
        .enumerate()
        .map(|(i, &t)| if i % 4 == 0 { t * 0.3 } else { t })
        .collect();
    Draws {
        x,
        labels: (0..n as i64)
            .map(|i| if i % 10 == 9 { 10 } else { i % 10 })
            .collect(),
        dropped: (0..n).map(|i| i % 10 == 9).collect(),
        noise,
        t,
        r,
    }
}

fn train_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    for (net, text) in [("mlp", MLP), ("unet", UNET)] {
        let base = Config::parse(text).expect("a shipped config");
        let batch = base.train.batch;
        let variants = [
            ("flow-matching", ObjectiveKind::FlowMatching, 1.0),
            ("meanflow", ObjectiveKind::MeanFlow, 1.0),
            ("meanflow-cfg", ObjectiveKind::MeanFlow, 2.5),
        ];
        let draws = draws(batch);
        group.throughput(Throughput::Elements(batch as u64));
        for (name, kind, omega) in variants {
            let mut config = base.clone();
            config.objective.kind = kind;
            config.objective.omega = omega;
            let spec = NetSpec::new(&config.model, kind, vec![1, 28, 28], 10).expect("a spec");
            let device = Device::flex().autodiff();
            let mut model = Some(VelocityNet::new(&spec, &device));
            let mut optim = adam(&config).init();
            group.bench_function(BenchmarkId::new(net, name), |b| {
                b.iter(|| {
                    let (next, stats) = step(
                        model.take().expect("a model"),
                        &mut optim,
                        &draws,
                        &config,
                        1e-4,
                    )
                    .expect("a finite step");
                    model = Some(next);
                    stats.loss
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
