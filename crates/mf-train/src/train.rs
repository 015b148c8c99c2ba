//! The training loop: MeanFlow steps with Adam and EMA, a loss curve, sample grids and
//! checkpoints, with an indicatif progress bar.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use mf_core::card::Start;
use rand::SeedableRng;

use crate::checkpoint::{self, RunState};
use crate::config::Config;
use crate::datasets::Dataset;
use crate::draw_ahead::{DrawAhead, Drawn};
use crate::model::{NetSpec, VelocityNet};
use crate::objective::{Draws, StepLoss, loss as objective_loss};
use crate::parallel::{self, DeviceGroup};
use crate::rng::{Rng, RngState};
use crate::{ema, plot, sample};

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// Burn's flex backend (pure Rust, all cores).
    Cpu,
    /// wgpu (Vulkan, Metal, DX12, or a software Vulkan such as lavapipe).
    Wgpu,
    /// CUDA (build with the `cuda` feature).
    Cuda,
}

impl DeviceKind {
    /// The Burn device (without autodiff): the first one of its kind.
    pub fn device(self) -> anyhow::Result<Device> {
        self.device_at(0)
    }

    /// The Burn device (without autodiff) of this kind with this index (CUDA's device
    /// numbering; the CPU and wgpu have one).
    pub fn device_at(self, index: usize) -> anyhow::Result<Device> {
        if self != DeviceKind::Cuda && index != 0 {
            bail!("device {index}: only CUDA has more than one device (index 0 elsewhere)");
        }
        match self {
            DeviceKind::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            DeviceKind::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(not(feature = "wgpu"))]
            DeviceKind::Wgpu => {
                bail!("this build has no wgpu support: rebuild with --features wgpu")
            }
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => {
                cuda_libraries_present()?;
                let count = Device::enumerate(burn::tensor::DeviceType::Cuda)
                    .into_vec()
                    .len();
                ensure!(
                    index < count,
                    "CUDA device {index} does not exist: this machine has {count} (0 to {})",
                    count.saturating_sub(1)
                );
                Ok(Device::cuda(index))
            }
            #[cfg(not(feature = "cuda"))]
            DeviceKind::Cuda => {
                bail!("this build has no CUDA support: rebuild with --features cuda")
            }
        }
    }
}

/// The CUDA driver and NVRTC, as cubecl-cuda loads them at run time.
#[cfg(feature = "cuda")]
const CUDA_LIBRARIES: [(&str, &[&str]); 2] = [
    ("the CUDA driver", &["libcuda.so.1", "libcuda.so"]),
    (
        "NVRTC",
        &[
            "libnvrtc.so",
            "libnvrtc.so.13",
            "libnvrtc.so.12",
            "libnvrtc.so.11.2",
        ],
    ),
];

/// Checks that the libraries CUDA training loads at run time are there, so that a machine
/// without them gets an error naming them instead of a panic in the device thread.
#[cfg(feature = "cuda")]
fn cuda_libraries_present() -> anyhow::Result<()> {
    CUDA_LIBRARIES
        .iter()
        .try_for_each(|(what, names)| library_present(what, names))
}

/// NCCL, which a data-parallel group loads for its all-reduce.
#[cfg(feature = "cuda")]
const NCCL: [&str; 2] = ["libnccl.so.2", "libnccl.so"];

/// Whether one of `names` loads; an error naming `what` and the names if none does.
#[cfg(feature = "cuda")]
fn library_present(what: &str, names: &[&str]) -> anyhow::Result<()> {
    // SAFETY: loading runs the library's initializers; these are NVIDIA's driver, compiler and
    // collective libraries, the ones cubecl-cuda itself loads a moment later.
    let found = names
        .iter()
        .any(|name| unsafe { libloading::Library::new(*name) }.is_ok());
    anyhow::ensure!(
        found,
        "--device cuda needs {what} ({}) on the library path (LD_LIBRARY_PATH); none was found",
        names.join(", ")
    );
    Ok(())
}

/// Another run's EMA weights as a new run's starting point, with what that run was; its network
/// must be `spec`'s, trained with any objective (a flow-matching teacher starts a MeanFlow student).
fn initial_weights(
    run: &Path,
    spec: &NetSpec,
    device: &Device,
) -> anyhow::Result<(VelocityNet, Start)> {
    let state = checkpoint::read_state(run).context("train.init_from")?;
    let network = NetSpec {
        objective: spec.objective,
        ..state.spec.clone()
    };
    ensure!(
        network == *spec,
        "train.init_from: {} trained another network ({:?}); this config's is {:?}",
        run.display(),
        state.spec,
        spec
    );
    let weights = checkpoint::folder(run)?.join("ema.safetensors");
    let start = Start {
        run: run.display().to_string(),
        config_hash: state.config_hash,
        steps: state.step,
        seconds: state.elapsed_s,
    };
    Ok((checkpoint::load_safetensors(spec, &weights, device)?, start))
}

/// How to run `fit`.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// The run's config.
    pub config: Config,
    /// The run folder (checkpoint, loss curve, samples).
    pub out: PathBuf,
    /// Where to train.
    pub device: DeviceKind,
    /// Train data-parallel over these CUDA devices (empty: on device 0 of `device` alone).
    pub devices: Vec<usize>,
    /// Continue from the run folder's checkpoint.
    pub resume: bool,
    /// Stop (with a checkpoint) after this many minutes of training.
    pub max_minutes: Option<f64>,
    /// Show a progress bar.
    pub progress: bool,
}

/// What a finished `fit` reports.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// Steps done in total.
    pub step: u64,
    /// Training seconds in total.
    pub elapsed_s: f64,
    /// Mean per-sample squared error over the last logging window.
    pub last_mse: f64,
    /// Samples per second over this invocation.
    pub samples_per_s: f64,
}

/// Trains (or resumes) a run.
pub fn fit(opts: &FitOptions) -> anyhow::Result<FitReport> {
    // The devices first: a machine that cannot train there gets its error before any folder.
    if !opts.devices.is_empty() {
        ensure!(
            opts.device == DeviceKind::Cuda,
            "--devices trains over several CUDA devices: it needs --device cuda"
        );
        parallel::check_group(&opts.devices, opts.config.train.batch)?;
        #[cfg(feature = "cuda")]
        library_present("NCCL for --devices", &NCCL)?;
    }
    let group_devices = opts
        .devices
        .iter()
        .map(|&i| Ok(opts.device.device_at(i)?.autodiff()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let base = opts
        .device
        .device_at(opts.devices.first().copied().unwrap_or(0))?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let device = base.clone().autodiff();
    let (config, dataset, mut model, mut ema, mut optim, rng, mut state) = if opts.resume {
        let mut loaded = checkpoint::load(&opts.out, &device)?;
        // The run's own config; only the step count may change (extending a run).
        loaded.state.config.train.steps = opts.config.train.steps;
        let config = loaded.state.config.clone();
        let dataset = Dataset::open(&config.data)?;
        let optim = adam(&config)
            .init()
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(loaded.optimizer))
            .map_err(|e| anyhow::anyhow!("cannot restore the optimizer state: {e:?}"))?;
        let rng = loaded.state.rng.restore();
        // Runs from before the couplings' provenance was recorded get it on resuming.
        loaded.state.teacher = dataset.provenance().cloned();
        (
            config,
            dataset,
            loaded.model,
            loaded.ema,
            optim,
            rng,
            loaded.state,
        )
    } else {
        let config = opts.config.clone();
        let dataset = Dataset::open(&config.data)?;
        let spec = NetSpec::new(
            &config.model,
            config.objective.kind,
            dataset.sample_shape(),
            dataset.classes(),
        )?;
        base.seed(config.train.seed);
        let (model, start) = match &config.train.init_from {
            Some(run) => {
                let (model, start) = initial_weights(run, &spec, &device)?;
                (model, Some(start))
            }
            None => (VelocityNet::new(&spec, &device), None),
        };
        let ema = model.valid();
        let rng = Rng::seed_from_u64(config.train.seed);
        let state = RunState {
            step: 0,
            rng: RngState::capture(config.train.seed, &rng),
            elapsed_s: 0.0,
            spec,
            config_hash: config.hash(),
            config: config.clone(),
            teacher: dataset.provenance().cloned(),
            start,
        };
        mf_core::atomic::write(
            &opts.out.join("config.toml"),
            toml::to_string(&config)?.as_bytes(),
        )?;
        let optim = adam(&config).init();
        (config, dataset, model, ema, optim, rng, state)
    };
    let (obj, train) = (&config.objective, &config.train);
    let group = if group_devices.is_empty() {
        None
    } else {
        // A resumed run's batch is its own config's: check it again.
        parallel::check_group(&opts.devices, train.batch)?;
        let (group, marked) = DeviceGroup::start(&group_devices, model, &optim, &config)?;
        model = marked;
        Some(group)
    };
    let null = state.spec.null_class();
    let batches = DrawAhead::start(
        Arc::new(dataset),
        rng,
        state.rng.seed,
        train.batch,
        obj.clone(),
        null,
    );
    let mut log = LossLog::open(&opts.out, state.step)?;
    let bar = progress(opts.progress, train.steps, state.step);
    let started = Instant::now();
    let start_step = state.step;
    let (mut window_loss, mut window_mse, mut window_n) = (0.0, 0.0, 0u64);
    let mut last_mse = f64::NAN;

    while state.step < train.steps {
        if let Some(limit) = opts.max_minutes
            && started.elapsed().as_secs_f64() >= limit * 60.0
        {
            break;
        }
        let Drawn { mut draws, after } = batches.next()?;
        draws.cap_gaps(config.objective.max_gap_at(state.step));
        let stats;
        let lr = config.optim.lr_at(state.step, train.steps);
        (model, stats) = match &group {
            None => step(model, &mut optim, &draws, &config, lr)?,
            Some(group) => group.step(model, &mut optim, &draws, &config, lr)?,
        };
        if !(stats.loss.is_finite() && stats.mse.is_finite()) {
            bail!(
                "the loss is {} at step {}: training stopped; the last good checkpoint in {} is intact",
                stats.loss,
                state.step + 1,
                checkpoint::dir(&opts.out).display()
            );
        }
        ema = ema::update(ema, &model, config.optim.ema_decay);
        state.step += 1;
        state.rng = after;
        (window_loss, window_mse, window_n) = (
            window_loss + stats.loss,
            window_mse + stats.mse,
            window_n + 1,
        );

        let done = state.step == train.steps;
        if state.step % train.log_every == 0 || done {
            let elapsed = state.elapsed_s + started.elapsed().as_secs_f64();
            last_mse = window_mse / window_n as f64;
            log.row(state.step, window_loss / window_n as f64, last_mse, elapsed)?;
            bar.set_message(format!(
                "mse {last_mse:.4}  {:.0} samples/s",
                (state.step - start_step) as f64 * train.batch as f64
                    / started.elapsed().as_secs_f64()
            ));
            (window_loss, window_mse, window_n) = (0.0, 0.0, 0);
        }
        bar.set_position(state.step);
        if train.sample_every > 0 && state.step % train.sample_every == 0 && !done {
            write_samples(
                &ema,
                &opts
                    .out
                    .join("samples")
                    .join(format!("step_{:07}.png", state.step)),
            )?;
        }
        if train.checkpoint_every > 0 && state.step % train.checkpoint_every == 0 && !done {
            save_checkpoint(&opts.out, &model, &ema, &optim, &mut state, &started)?;
        }
    }
    bar.finish();
    let report = FitReport {
        step: state.step,
        elapsed_s: state.elapsed_s + started.elapsed().as_secs_f64(),
        last_mse,
        samples_per_s: (state.step - start_step) as f64 * train.batch as f64
            / started.elapsed().as_secs_f64(),
    };
    save_checkpoint(&opts.out, &model, &ema, &optim, &mut state, &started)?;
    write_samples(&ema, &opts.out.join("samples.png"))?;
    plot::curve(&opts.out.join("loss.png"), &log.mse_history()?)?;
    Ok(report)
}

/// The numbers one step reports.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// The weighted loss that was differentiated.
    pub loss: f64,
    /// The batch's mean per-sample squared error.
    pub mse: f64,
}

/// One optimizer step on one step's draws: loss, gradients, Adam at learning rate `lr`.
/// Returns the updated model.
pub fn step(
    model: VelocityNet,
    optim: &mut ModuleOptimizer,
    draws: &Draws,
    config: &Config,
    lr: f64,
) -> anyhow::Result<(VelocityNet, StepStats)> {
    let StepLoss { loss, mse } = objective_loss(&model, draws, &config.objective);
    let stats = Tensor::cat(vec![loss.clone().detach().inner(), mse.inner()], 0)
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .map_err(|e| anyhow::anyhow!("cannot read the loss: {e:?}"))?;
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = optim.step(lr, model, grads);
    Ok((
        model,
        StepStats {
            loss: stats[0],
            mse: stats[1],
        },
    ))
}

/// Adam with the config's betas and ε.
pub fn adam(config: &Config) -> AdamConfig {
    AdamConfig::new()
        .with_beta_1(config.optim.beta1)
        .with_beta_2(config.optim.beta2)
        .with_epsilon(config.optim.eps)
}

fn save_checkpoint(
    out: &Path,
    model: &VelocityNet,
    ema: &VelocityNet,
    optim: &ModuleOptimizer,
    state: &mut RunState,
    started: &Instant,
) -> anyhow::Result<()> {
    let snapshot = RunState {
        elapsed_s: state.elapsed_s + started.elapsed().as_secs_f64(),
        ..state.clone()
    };
    let bytes = optim
        .into_bytes()
        .map_err(|e| anyhow::anyhow!("cannot serialize the optimizer: {e:?}"))?;
    checkpoint::save(out, model, ema, &bytes, &snapshot)
}

/// The most rows of a sample grid: a model of more classes shows this many, evenly spread.
const GRID_CLASSES: usize = 16;

/// The classes a sample grid shows: all of them, or [`GRID_CLASSES`] evenly spread over many.
fn grid_classes(classes: usize) -> Vec<usize> {
    let classes = classes.max(1);
    let rows = classes.min(GRID_CLASSES);
    (0..rows).map(|i| i * classes / rows).collect()
}

/// A sample grid (images: one row per class, at most [`GRID_CLASSES`]) or scatter plot (toy
/// data) from the EMA weights.
pub fn write_samples(ema: &VelocityNet, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let device = ema.device();
    let spec = &ema.spec;
    if spec.sample_shape.len() == 3 {
        let classes = grid_classes(spec.classes);
        let x = sample::sample_grid(ema, &classes, 10, 1, 0, &device);
        plot::image_grid(path, &x, &spec.sample_shape, 10, 2)
    } else {
        let labels = sample::grid_labels(ema, &[], 4000);
        let x = sample::sample(ema, &labels, 1, 0, &device);
        plot::scatter(path, &x, 3.0)
    }
}

/// `loss.csv`: one row per logging window.
struct LossLog {
    path: PathBuf,
}

impl LossLog {
    /// Opens the log, dropping rows past `step` (left by a run that crashed after its last
    /// checkpoint), or starts it with a header.
    fn open(run: &Path, step: u64) -> anyhow::Result<Self> {
        let path = run.join("loss.csv");
        let header = "step,loss,mse,elapsed_s";
        let kept: Vec<String> = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .skip(1)
                .filter(|l| {
                    l.split(',')
                        .next()
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_some_and(|s| s <= step)
                })
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut text = format!("{header}\n");
        kept.iter().for_each(|l| text.push_str(&format!("{l}\n")));
        mf_core::atomic::write(&path, text.as_bytes())?;
        Ok(LossLog { path })
    }

    fn row(&mut self, step: u64, loss: f64, mse: f64, elapsed: f64) -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        writeln!(file, "{step},{loss:.6},{mse:.6},{elapsed:.1}")?;
        Ok(())
    }

    fn mse_history(&self) -> anyhow::Result<Vec<f64>> {
        let text = std::fs::read_to_string(&self.path)?;
        Ok(text
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').nth(2)?.parse().ok())
            .collect())
    }
}

fn progress(show: bool, steps: u64, at: u64) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(steps)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .expect("a valid template"),
    );
    bar.set_position(at);
    bar
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_grid_shows_every_class_or_sixteen_spread_over_many() {
        assert_eq!(super::grid_classes(10), (0..10).collect::<Vec<_>>());
        assert_eq!(super::grid_classes(0), vec![0]);
        let many = super::grid_classes(1000);
        assert_eq!(many.len(), 16);
        assert_eq!((many[0], many[1], many[15]), (0, 62, 937));
    }
}
