//! `mf-train bench`: the cost of a training step, as `fit` runs it (draw a batch, forward,
//! loss, backward, Adam, EMA), for plain flow matching and for MeanFlow with its exact JVP on
//! the same network, batch and device; MeanFlow once without guidance and once with the
//! config's guidance (ω, κ) when it has any, so that the guidance forward is reported apart.
//! Batches are drawn ahead on a thread of their own, as `fit` draws them.
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use burn::prelude::*;
use rand::SeedableRng;
use serde::Serialize;

use crate::config::{Config, ObjectiveKind};
use crate::datasets::Dataset;
use crate::draw_ahead::DrawAhead;
use crate::ema;
use crate::model::{NetSpec, VelocityNet};
use crate::rng::Rng;
use crate::train::{DeviceKind, adam, step};

/// What to time.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The network, data, objective and batch (`train.batch`).
    pub config: Config,
    /// Where to train.
    pub device: DeviceKind,
    /// Untimed steps first (kernel compilation, autotuning, allocator warm-up).
    pub warmup: u64,
    /// Timed steps per objective.
    pub steps: u64,
}

/// One objective's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `flow-matching`, `meanflow` (ω = 1, no guidance forward) or `meanflow-guided`.
    pub objective: String,
    /// The guidance scale in the target.
    pub omega: f64,
    /// Samples per step.
    pub batch: usize,
    /// Timed steps.
    pub steps: u64,
    /// Mean wall time of one step, milliseconds.
    pub ms_per_step: f64,
    /// Wall time of each untimed warm-up step, milliseconds, in order: what kernel
    /// compilation, autotuning and allocator warm-up cost, and whether they have settled.
    pub warmup_ms: Vec<f64>,
    /// Training samples per second.
    pub samples_per_s: f64,
    /// This row's step time over flow matching's.
    pub step_ratio_to_flow_matching: f64,
    /// The process's peak resident memory while this objective trained, MiB (the dataset and
    /// the program included; host memory only on a GPU device; `None` off Linux).
    pub peak_rss_mib: Option<f64>,
}

/// Times `steps` training steps per objective after `warmup` untimed ones. Every step reads
/// its loss back, so GPU work is finished when the clock stops.
pub fn run(opts: &BenchOptions) -> anyhow::Result<Vec<BenchRow>> {
    if opts.steps == 0 {
        bail!("--steps must be positive");
    }
    let base = opts.device.device()?;
    let device = base.clone().autodiff();
    let dataset = Arc::new(Dataset::open(&opts.config.data)?);
    let mut variants = vec![
        ("flow-matching", ObjectiveKind::FlowMatching, 1.0),
        ("meanflow", ObjectiveKind::MeanFlow, 1.0),
    ];
    if opts.config.objective.omega != 1.0 || opts.config.objective.kappa != 0.0 {
        variants.push((
            "meanflow-guided",
            ObjectiveKind::MeanFlow,
            opts.config.objective.omega,
        ));
    }
    let mut rows: Vec<BenchRow> = Vec::new();
    for (name, kind, omega) in variants {
        let mut config = opts.config.clone();
        config.objective.kind = kind;
        config.objective.omega = omega;
        if name != "meanflow-guided" {
            config.objective.kappa = 0.0;
        }
        let spec = NetSpec::new(
            &config.model,
            kind,
            dataset.sample_shape(),
            dataset.classes(),
        )?;
        base.seed(config.train.seed);
        let mut model = VelocityNet::new(&spec, &device);
        let mut average = model.valid();
        let mut optim = adam(&config).init();
        let batch = config.train.batch;
        let null = spec.null_class();
        let batches = DrawAhead::start(
            dataset.clone(),
            Rng::seed_from_u64(config.train.seed),
            config.train.seed,
            batch,
            config.objective.clone(),
            null,
        );
        reset_peak_rss();
        let mut warmup_ms = Vec::with_capacity(opts.warmup as usize);
        let mut started = Instant::now();
        for i in 0..opts.warmup + opts.steps {
            if i <= opts.warmup {
                if i > 0 {
                    let ms = 1e3 * started.elapsed().as_secs_f64();
                    // As it happens, so that a run stopped in its warm-up still shows where
                    // the time went.
                    eprintln!("{name}: warm-up step {i}/{}: {ms:.1} ms", opts.warmup);
                    warmup_ms.push(ms);
                }
                started = Instant::now();
            }
            let draws = batches.next()?.draws;
            let stats;
            (model, stats) = step(model, &mut optim, &draws, &config, config.optim.lr)?;
            if !stats.loss.is_finite() {
                bail!("{name}: the loss is {} at step {}", stats.loss, i + 1);
            }
            average = ema::update(average, &model, config.optim.ema_decay);
        }
        let seconds = started.elapsed().as_secs_f64();
        let ms_per_step = 1e3 * seconds / opts.steps as f64;
        let reference = rows.first().map_or(ms_per_step, |r| r.ms_per_step);
        rows.push(BenchRow {
            objective: name.into(),
            omega,
            batch,
            steps: opts.steps,
            ms_per_step,
            warmup_ms,
            samples_per_s: (opts.steps as usize * batch) as f64 / seconds,
            step_ratio_to_flow_matching: ms_per_step / reference,
            peak_rss_mib: peak_rss_mib(),
        });
    }
    Ok(rows)
}

/// Starts a new peak of resident memory (Linux: `5` into `/proc/self/clear_refs`; elsewhere,
/// or where it is not allowed, the peak stays the process's).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory since [`reset_peak_rss`], MiB (`VmHWM` of `/proc/self/status`).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
