//! The training objectives. MeanFlow, step by step as the reference implementations run it:
//! (t, r) from a sorted logit-normal pair (or py-meanflow's samplers: r from its own
//! logit-normal, t kept and r clipped below it) with a fraction forced to r = t; z_t = (1 − t)x + tε,
//! v = ε − x; classifier-free guidance folded into the target; the JVP of u along (v_g, 0, 1)
//! (or, as improved MeanFlow does, along the network's own velocity: [`Tangent`]);
//! u_tgt = v_g − clip(t − r, 0, 1)·du/dt under stop-gradient; per-sample squared error summed
//! over dimensions and divided by sg((L + c)^p). Flow matching (the baseline) regresses
//! u(z_t, t, t) onto v with the same weighting.
use burn::prelude::*;
use rand::RngExt;
use rand_distr::StandardNormal;

use crate::config::{JumpTarget, ObjectiveConfig, ObjectiveKind, Tangent, TimeSampler};
use crate::datasets::{Batch, Dataset};
use crate::model::{Dual, VelocityNet};
use crate::rng::Rng;

/// The host-side random draws of one training step.
#[derive(Debug, Clone, PartialEq)]
pub struct Draws {
    /// Samples `[n, dims]`.
    pub x: Vec<f32>,
    /// Labels after dropping, the null class for dropped ones.
    pub labels: Vec<i64>,
    /// Which labels were dropped (those samples keep v_g = v).
    pub dropped: Vec<bool>,
    /// Noise ε `[n, dims]`.
    pub noise: Vec<f32>,
    /// Times t ≥ r.
    pub t: Vec<f32>,
    /// Times r.
    pub r: Vec<f32>,
}

impl Draws {
    /// Samples in the draws.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// Whether the draws hold no sample.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// Shortens every interval to at most `max_gap`: r = max(r, t − max_gap) (the curriculum
    /// of [`ObjectiveConfig::gap_ramp_steps`]; with 0 every sample gets r = t).
    pub fn cap_gaps(&mut self, max_gap: f64) {
        for (r, &t) in self.r.iter_mut().zip(&self.t) {
            *r = r.max(t - max_gap as f32);
        }
    }

    /// The `part`-th of `parts` equal contiguous slices of the samples (what one device of a
    /// data-parallel group trains on). `parts` must divide the sample count.
    pub fn shard(&self, part: usize, parts: usize) -> Draws {
        let n = self.len();
        assert!(
            parts > 0 && n.is_multiple_of(parts) && part < parts,
            "{parts} shards of {n} samples"
        );
        let (rows, dims) = (n / parts, self.x.len() / n.max(1));
        let samples = part * rows..(part + 1) * rows;
        let values = samples.start * dims..samples.end * dims;
        Draws {
            x: self.x[values.clone()].to_vec(),
            labels: self.labels[samples.clone()].to_vec(),
            dropped: self.dropped[samples.clone()].to_vec(),
            noise: self.noise[values].to_vec(),
            t: self.t[samples.clone()].to_vec(),
            r: self.r[samples].to_vec(),
        }
    }
}

/// Draws a batch, label drops, noise and (t, r) for `n` samples.
pub fn draw(
    dataset: &Dataset,
    rng: &mut Rng,
    n: usize,
    obj: &ObjectiveConfig,
    null_class: usize,
) -> Draws {
    let Batch { x, labels, noise } = dataset.batch(rng, n);
    let conditional = dataset.classes() > 0;
    let dropped: Vec<bool> = (0..n)
        .map(|_| !conditional || rng.random::<f64>() < obj.label_drop)
        .collect();
    let labels = labels
        .iter()
        .zip(&dropped)
        .map(|(&l, &d)| if d { null_class as i64 } else { l })
        .collect();
    // Coupled samples bring their own noise; every other set's is drawn here.
    let noise = noise.unwrap_or_else(|| {
        (0..x.len())
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect()
    });
    let (mut t, mut r) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let r_mu = obj.r_mu.unwrap_or(obj.t_mu);
    let r_sigma = obj.r_sigma.unwrap_or(obj.t_sigma);
    for _ in 0..n {
        let mut logit_normal = |mu: f64, sigma: f64| {
            let g: f64 = rng.sample(StandardNormal);
            1.0 / (1.0 + (-(mu + sigma * g)).exp())
        };
        let a = logit_normal(obj.t_mu, obj.t_sigma);
        let b = logit_normal(r_mu, r_sigma);
        let hi = match obj.time_sampler {
            TimeSampler::Sorted => a.max(b),
            TimeSampler::Clipped => a,
        };
        let equal = rng.random::<f64>() >= obj.ratio_r_neq_t;
        // Drawn only when asked for, so that runs without it keep their random stream.
        let full_jump = obj.full_jump_share > 0.0 && rng.random::<f64>() < obj.full_jump_share;
        let (hi, lo) = match (full_jump, equal) {
            (true, _) => (1.0, 0.0),
            (false, true) => (hi, hi),
            (false, false) => (hi, a.min(b)),
        };
        t.push(hi as f32);
        r.push(lo as f32);
    }
    Draws {
        x,
        labels,
        dropped,
        noise,
        t,
        r,
    }
}

/// The loss of one step and what to log about it.
pub struct StepLoss {
    /// The adaptively weighted loss to differentiate (on the model's device).
    pub loss: Tensor<1>,
    /// Mean over the batch of the unweighted per-sample squared error (detached).
    pub mse: Tensor<1>,
}

/// A step's draws as tensors on one device, with z_t = (1 − t)·x + t·ε and v = ε − x.
pub struct Inputs {
    /// Noisy samples z_t `[n, dims]`.
    pub z: Tensor<2>,
    /// Conditional velocities v `[n, dims]`.
    pub v: Tensor<2>,
    /// Times t `[n]`.
    pub t: Tensor<1>,
    /// Times r `[n]`.
    pub r: Tensor<1>,
    /// Labels `[n]` (null class where dropped).
    pub labels: Tensor<1, Int>,
}

impl Inputs {
    /// Uploads the draws to `device` and forms z_t and v.
    pub fn new(draws: &Draws, device: &Device) -> Self {
        let n = draws.t.len();
        let dims = draws.x.len() / n;
        let matrix =
            |v: &[f32]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [n, dims]), device);
        let vector = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [n]), device);
        let (x, e) = (matrix(&draws.x), matrix(&draws.noise));
        let (t, r) = (vector(&draws.t), vector(&draws.r));
        let labels =
            Tensor::<1, Int>::from_data(TensorData::new(draws.labels.clone(), [n]), device);
        let tc = t.clone().reshape([n, 1]);
        let z = x.clone() * (tc.clone().neg() + 1.0) + e.clone() * tc;
        Inputs {
            z,
            v: e - x,
            t,
            r,
            labels,
        }
    }
}

/// The training loss of `model` (on an autodiff device) for one step's draws, as the config's
/// objective defines it.
pub fn loss(model: &VelocityNet, draws: &Draws, obj: &ObjectiveConfig) -> StepLoss {
    let device = model.device();
    let inputs = Inputs::new(draws, &device);
    let (u, target) = match obj.kind {
        ObjectiveKind::MeanFlow => {
            let (vg, tangent) = if guided(obj) || obj.tangent == Tangent::Model {
                let inner = Inputs::new(draws, &device.clone().inner());
                let (vg, tangent) = velocity_and_tangent(&model.valid(), draws, obj, &inner);
                (Tensor::from_inner(vg), Tensor::from_inner(tangent))
            } else {
                (inputs.v.clone(), inputs.v.clone())
            };
            u_and_target(model, &inputs, vg, tangent, obj.full_jump_target)
        }
        ObjectiveKind::FlowMatching => {
            let u = model.u(inputs.z, inputs.t.clone(), inputs.t, inputs.labels);
            (u, inputs.v)
        }
    };
    let n = draws.t.len();
    let err = (u - target).square().sum_dim(1).reshape([n]);
    let detached = err.clone().detach();
    let weight = (detached.clone() + obj.c).powf_scalar(-obj.p);
    StepLoss {
        loss: (err * weight).mean(),
        mse: detached.mean(),
    }
}

/// One dual forward of `model` at (z, r, t) along (`tangent`, 0, 1): u (with its gradient graph
/// on an autodiff device) and the target u_tgt = v_g − clip(t − r, 0, 1)·du/dt (a constant);
/// with [`JumpTarget::Velocity`] the samples at (r, t) = (0, 1) take their plain v = ε − x.
pub fn u_and_target(
    model: &VelocityNet,
    inputs: &Inputs,
    vg: Tensor<2>,
    tangent: Tensor<2>,
    jump_target: JumpTarget,
) -> (Tensor<2>, Tensor<2>) {
    let (t, r) = (inputs.t.clone(), inputs.r.clone());
    let out = model.forward(
        Dual::new(inputs.z.clone(), tangent),
        Dual::new(t.clone(), t.ones_like()),
        Dual::new(r.clone(), r.zeros_like()),
        inputs.labels.clone(),
    );
    let dudt = out.tangent.expect("the JVP carries a tangent");
    let n = inputs.t.dims()[0];
    let span = (t - r).clamp(0.0, 1.0).reshape([n, 1]);
    let mut target = vg - span.clone() * dudt;
    if jump_target == JumpTarget::Velocity {
        // The whole jump is the only interval of length 1.
        let jump = span.greater_equal_elem(1.0).float();
        target = target * (jump.clone().neg() + 1.0) + inputs.v.clone() * jump;
    }
    (out.value, target.detach())
}

/// The MeanFlow target for a model without autodiff (what the tests check against finite
/// differences): guidance and the tangent, then [`u_and_target`].
pub fn target(net: &VelocityNet, draws: &Draws, obj: &ObjectiveConfig) -> Tensor<2> {
    let inputs = Inputs::new(draws, &net.device());
    let (vg, tangent) = velocity_and_tangent(net, draws, obj, &inputs);
    u_and_target(net, &inputs, vg, tangent, obj.full_jump_target).1
}

/// The target velocity v_g (guided where the config guides) and the JVP's tangent in z: v_g
/// itself, or the network's own u(z, t, t | c) ([`Tangent::Model`]); computed by `net` without
/// gradients.
fn velocity_and_tangent(
    net: &VelocityNet,
    draws: &Draws,
    obj: &ObjectiveConfig,
    inputs: &Inputs,
) -> (Tensor<2>, Tensor<2>) {
    let vg = if guided(obj) {
        guided_velocity(net, draws, obj, inputs)
    } else {
        inputs.v.clone()
    };
    let tangent = match obj.tangent {
        Tangent::Conditional => vg.clone(),
        Tangent::Model => {
            let Inputs { z, t, labels, .. } = inputs;
            net.u(z.clone(), t.clone(), t.clone(), labels.clone())
        }
    };
    (vg, tangent)
}

/// Whether the config folds guidance into the target.
fn guided(obj: &ObjectiveConfig) -> bool {
    obj.omega != 1.0 || obj.kappa != 0.0
}

/// v_g = ω·v + (1 − ω − κ)·u(z, t, t | ∅) + κ·u(z, t, t | c) inside the guidance interval for
/// samples that kept their label, plain v elsewhere; computed by `net` without gradients.
fn guided_velocity(
    net: &VelocityNet,
    draws: &Draws,
    obj: &ObjectiveConfig,
    inputs: &Inputs,
) -> Tensor<2> {
    let Inputs {
        z, v, t, labels, ..
    } = inputs;
    let n = draws.t.len();
    let null = labels.full_like(net.spec.null_class() as i64);
    let u_null = net.u(z.clone(), t.clone(), t.clone(), null);
    let mut guided = v.clone() * obj.omega + u_null * (1.0 - obj.omega - obj.kappa);
    if obj.kappa != 0.0 {
        guided = guided + net.u(z.clone(), t.clone(), t.clone(), labels.clone()) * obj.kappa;
    }
    let [lo, hi] = obj.guidance_interval;
    let mask: Vec<f32> = draws
        .t
        .iter()
        .zip(&draws.dropped)
        .map(|(&t, &dropped)| (!dropped && (t as f64) >= lo && (t as f64) <= hi) as u8 as f32)
        .collect();
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [n, 1]), &z.device());
    guided * mask.clone() + v.clone() * (mask.neg() + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use rand::SeedableRng;

    fn draws_of(objective: &str, n: usize) -> Draws {
        let text = format!(
            "[data]\ndataset = \"moons\"\n[model]\narch = \"mlp\"\nwidth = 8\ndepth = 1\n[train]\nsteps = 1\n\
             batch = 8\nseed = 1\n[objective]\n{objective}\n"
        );
        let config = Config::parse(&text).unwrap();
        let dataset = Dataset::open(&config.data).unwrap();
        draw(
            &dataset,
            &mut Rng::seed_from_u64(5),
            n,
            &config.objective,
            0,
        )
    }

    /// Coupled samples keep the noise their image was drawn from; images drawn twice carry the
    /// same noise both times.
    #[test]
    fn coupled_draws_carry_each_images_own_noise() {
        use crate::datasets::ImageSet;
        use crate::datasets::coupled::{Coupled, Provenance};
        let images = ImageSet {
            pixels: (0..5u8).flat_map(|i| [i * 50; 4]).collect(),
            labels: vec![0, 1, 0, 1, 0],
            channels: 1,
            size: 2,
            class_names: vec!["a".into(), "b".into()],
            class_folders: Vec::new(),
        };
        let provenance = Provenance {
            dataset: "folder".into(),
            class_names: images.class_names.clone(),
            noise_seed: 70,
            teacher: String::new(),
            teacher_config_hash: String::new(),
            teacher_step: 0,
            teacher_seconds: 0.0,
            steps: 1,
            guidance: 1.0,
            draws_made: 6,
            kept: 5,
            keep_within: 1.5,
            seconds: 0.0,
        };
        // Draw 3 diverged and was left out: images 3 and 4 are draws 4 and 5.
        let indices = vec![0, 1, 2, 4, 5];
        let dataset = Dataset::Coupled(Coupled {
            images,
            draws: indices.clone(),
            provenance,
        });
        let obj = ObjectiveConfig::default();
        let draws = draw(&dataset, &mut Rng::seed_from_u64(2), 40, &obj, 2);
        let mut seen = [false; 5];
        for (x, noise) in draws.x.chunks(4).zip(draws.noise.chunks(4)) {
            let i = ((x[0] + 1.0) * 127.5 / 50.0).round() as usize;
            let mut own = [0f32; 4];
            mf_core::noise::Noise::new(70 + indices[i]).fill(&mut own);
            assert_eq!(noise, own, "image {i}");
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s), "40 draws of 5 images: {seen:?}");
    }

    /// Capping keeps t, lifts r to at most `max_gap` below it, and leaves r = t and short
    /// intervals alone.
    #[test]
    fn capped_gaps_keep_t_and_shorten_only_the_long_intervals() {
        let mut draws = draws_of("", 256);
        let before = draws.clone();
        assert!(before.t.iter().zip(&before.r).any(|(t, r)| t - r > 0.2));
        draws.cap_gaps(0.2);
        assert_eq!(draws.t, before.t);
        for ((&t, &r), &r0) in draws.t.iter().zip(&draws.r).zip(&before.r) {
            assert!(t - r <= 0.2 + 1e-6 && r >= r0, "t {t} r {r} was {r0}");
            if t - r0 <= 0.2 {
                assert_eq!(r, r0);
            }
        }
        draws.cap_gaps(0.0);
        assert_eq!(draws.r, draws.t);
    }

    fn median(mut v: Vec<f32>) -> f32 {
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    }

    /// The default draws what runs before the samplers existed drew, value for value (a sorted
    /// pair from t's logit-normal, then the r = t share), so older runs reproduce.
    #[test]
    fn the_sorted_sampler_draws_what_older_runs_drew() {
        let n = 64;
        let draws = draws_of("", n);
        // The earlier code, step by step, on a copy of the stream after the batch and labels.
        let obj = ObjectiveConfig::default();
        let text = "[data]\ndataset = \"moons\"\n[model]\narch = \"mlp\"\nwidth = 8\ndepth = 1\n[train]\nsteps = 1\n\
                    batch = 8\nseed = 1\n";
        let dataset = Dataset::open(&Config::parse(text).unwrap().data).unwrap();
        let mut rng = Rng::seed_from_u64(5);
        let _ = dataset.batch(&mut rng, n);
        assert_eq!(
            dataset.classes(),
            0,
            "unconditional: no label drops are drawn"
        );
        for _ in 0..draws.x.len() {
            let _: f32 = rng.sample(StandardNormal);
        }
        for i in 0..n {
            let mut logit_normal = || {
                let g: f64 = rng.sample(StandardNormal);
                1.0 / (1.0 + (-(obj.t_mu + obj.t_sigma * g)).exp())
            };
            let (a, b) = (logit_normal(), logit_normal());
            let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
            let equal = rng.random::<f64>() >= obj.ratio_r_neq_t;
            assert_eq!(draws.t[i], hi as f32);
            assert_eq!(draws.r[i], if equal { hi } else { lo } as f32);
        }
    }

    /// py-meanflow's CIFAR v1 preset: t keeps its own distribution (median sigmoid(−0.6)),
    /// r comes from near 0 and is clipped below t; r = t for the 25% share plus the draws
    /// whose r landed above t (Φ(−3.4 / 2.26) ≈ 6.6% of the rest).
    #[test]
    fn the_clipped_sampler_keeps_t_and_draws_r_near_zero() {
        let n = 20_000;
        let d = draws_of(
            "time_sampler = \"clipped\"\nt_mu = -0.6\nt_sigma = 1.6\nr_mu = -4.0\n\
             r_sigma = 1.6\nratio_r_neq_t = 0.75",
            n,
        );
        assert!(d.t.iter().zip(&d.r).all(|(t, r)| r <= t));
        let t_median = median(d.t.clone());
        assert!((t_median - 0.3543).abs() < 0.015, "median t {t_median}");
        let equal = d.t.iter().zip(&d.r).filter(|(t, r)| t == r).count() as f64 / n as f64;
        assert!((equal - 0.30).abs() < 0.015, "r = t for {equal}");
        let apart: Vec<f32> =
            d.r.iter()
                .zip(&d.t)
                .filter(|(r, t)| r != t)
                .map(|(r, _)| *r)
                .collect();
        let r_median = median(apart);
        assert!(r_median < 0.03, "median r {r_median}");
        // Sorted, with the same distributions, t is the larger of the two: its median rises.
        let sorted = draws_of("t_mu = -0.6\nt_sigma = 1.6\nr_mu = 0.6\nr_sigma = 1.6", n);
        assert!(median(sorted.t) > 0.5);
    }

    /// A full-jump share puts about that fraction of samples at (r, t) = (0, 1) and draws the
    /// rest as before; the logit-normal alone never gets there.
    #[test]
    fn the_full_jump_share_draws_the_one_step_jump() {
        let n = 20_000;
        let jumps = |d: &Draws| {
            d.t.iter()
                .zip(&d.r)
                .filter(|&(&t, &r)| t == 1.0 && r == 0.0)
                .count() as f64
                / n as f64
        };
        assert_eq!(jumps(&draws_of("", n)), 0.0);
        let d = draws_of("full_jump_share = 0.3", n);
        assert!((jumps(&d) - 0.3).abs() < 0.015, "share {}", jumps(&d));
        let rest: Vec<f32> =
            d.t.iter()
                .zip(&d.r)
                .filter(|&(&t, &r)| !(t == 1.0 && r == 0.0))
                .map(|(&t, _)| t)
                .collect();
        // The others keep the sorted pair's t: the larger of two logit-normal(−0.4, 1) draws.
        let t_median = median(rest);
        let plain = median(draws_of("", n).t);
        assert!(
            (t_median - plain).abs() < 0.02,
            "median t {t_median} against {plain}"
        );
        for bad in ["-0.1", "1.5", "nan"] {
            let text = format!(
                "[data]\ndataset = \"moons\"\n[model]\narch = \"mlp\"\nwidth = 8\ndepth = 1\n\
                 [train]\nsteps = 1\nbatch = 8\nseed = 1\n[objective]\nfull_jump_share = {bad}\n"
            );
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains("full_jump_share"), "{bad}: {err}");
        }
        // The velocity target needs coupled data and some jumps to apply to.
        for objective in [
            "full_jump_target = \"velocity\"",
            "full_jump_share = 0.25\nfull_jump_target = \"velocity\"",
        ] {
            let text = format!(
                "[data]\ndataset = \"moons\"\n[model]\narch = \"mlp\"\nwidth = 8\ndepth = 1\n\
                 [train]\nsteps = 1\nbatch = 8\nseed = 1\n[objective]\n{objective}\n"
            );
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains("data.couplings"), "{objective}: {err}");
        }
    }
}
