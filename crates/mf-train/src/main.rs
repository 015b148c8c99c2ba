//! `mf-train`: train MeanFlow models and sample from them.
use std::path::PathBuf;

use anyhow::{Context, bail, ensure};
use clap::{Parser, Subcommand};
use mf_train::bench::BenchOptions;
use mf_train::checkpoint;
use mf_train::config::Config;
use mf_train::datasets::Dataset;
use mf_train::eval::{toy_distance, toy_floor};
use mf_train::train::{DeviceKind, FitOptions, fit};
use mf_train::{plot, sample};

/// Train one-step MeanFlow generators.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (or resume a run).
    Fit {
        /// The TOML config (ignored with --resume, which uses the run's own).
        #[arg(long, required_unless_present = "resume")]
        config: Option<PathBuf>,
        /// The run folder.
        #[arg(long)]
        out: PathBuf,
        /// Where to train.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
        /// Train data-parallel over these CUDA devices, e.g. `0,1,2,3` (with --device cuda):
        /// the config's batch is split evenly between them and gradients are averaged (NCCL).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<usize>,
        /// Continue the run in --out from its checkpoint.
        #[arg(long)]
        resume: bool,
        /// Stop after this many minutes, a positive number (a checkpoint is written).
        #[arg(long, value_parser = minutes)]
        max_minutes: Option<f64>,
        /// Train to this many steps instead of the config's (with --resume: extend a run).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        steps: Option<u64>,
    },
    /// Sample a grid from a run's EMA weights.
    Sample {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// Class index (all classes, one row each, when absent).
        #[arg(long)]
        class: Option<usize>,
        /// Network evaluations per sample, 1 to 1000.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        steps: u32,
        /// Samples per class, 1 to 10000.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
        /// Noise seed: the same seed gives the same images as `mf-edge generate --seed`.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Draw a trained run's couplings: images from known noise, for a student to train on
    /// (`data.couplings`), so that its one step learns the teacher's many-step map.
    Couple {
        /// The teacher's run folder.
        #[arg(long)]
        run: PathBuf,
        /// Draws to make, 1 to 5000000 (labels cycle through the classes).
        #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u32).range(1..=5_000_000))]
        count: u32,
        /// Network evaluations per image, 1 to 1000.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        steps: u32,
        /// Noise seed: draw d starts from the noise seeded with seed + d.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Classifier-free guidance scale ω of the teacher's steps, 0 or more (1: none; above 1
        /// two network evaluations a step).
        #[arg(long, default_value_t = 1.0)]
        guidance: f64,
        /// Leave out draws with a value beyond ±this before clipping, 1 or more: the data lie
        /// in [-1, 1], strokes overshoot to ±2, a diverged solve runs far beyond.
        #[arg(long, default_value_t = 3.0)]
        keep_within: f32,
        /// Images per network call, 1 to 65536.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=65_536))]
        batch: u32,
        /// The couplings file to write (safetensors).
        #[arg(long)]
        out: PathBuf,
    },
    /// Train the reference classifier on a dataset's test split (for `mf-edge eval`).
    Classifier {
        /// mnist or fashion-mnist.
        #[arg(long)]
        dataset: String,
        /// The design: an MLP, or the small CNN of the stricter evaluation.
        #[arg(long, value_enum, default_value = "mlp")]
        arch: mf_train::classifier::ClassifierArch,
        /// Epochs over the test split, 1 to 100000.
        #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        epochs: u32,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The run folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Time training steps: flow matching against MeanFlow (exact JVP) on the same network,
    /// batch and device, with guidance reported apart.
    Bench {
        /// The TOML config (network, data, objective, batch).
        #[arg(long)]
        config: PathBuf,
        /// Where to train.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
        /// Samples per step instead of the config's, 1 to 65536.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65_536))]
        batch: Option<u32>,
        /// Untimed steps before timing, 0 to 10000.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=10_000))]
        warmup: u64,
        /// Timed steps per objective, 1 to 100000.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        steps: u64,
        /// Print JSON (one object per objective, in an array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Measure one- and few-step sample quality of a toy run's EMA weights (an image run is
    /// measured by `mf-edge eval` on its export).
    Eval {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// Samples to draw, 1 to 1000000 (toy sets: compared with as many fresh true samples).
        #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        count: u32,
        /// Network evaluations per sample (comma separated), each 1 to 1000.
        #[arg(long, value_delimiter = ',', default_value = "1,2",
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        steps: Vec<u32>,
    },
}

fn main() -> std::process::ExitCode {
    mf_core::cli::exit(run())
}

/// Parses the command line and does the work.
fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Fit {
            config,
            out,
            device,
            devices,
            resume,
            max_minutes,
            steps,
        } => {
            if device == DeviceKind::Cpu && std::env::var_os("BURN_DEVICE").is_none() {
                // Burn materializes restored optimizer state on its default device, which is the
                // GPU when one is compiled in; pin it to the CPU backend for CPU runs.
                // SAFETY: no other thread exists yet.
                unsafe { std::env::set_var("BURN_DEVICE", "flex") };
            }
            let mut config = match (&config, resume) {
                (_, true) => checkpoint::read_state(&out)?.config,
                (Some(path), false) => Config::load(path)?,
                (None, false) => bail!("--config is required unless --resume"),
            };
            if let Some(steps) = steps {
                ensure!(steps > 0, "--steps must be positive");
                config.train.steps = steps;
            }
            if !resume && checkpoint::dir(&out).exists() {
                bail!(
                    "{} already holds a run: pass --resume to continue it, or choose another --out",
                    out.display()
                );
            }
            let report = fit(&FitOptions {
                config,
                out: out.clone(),
                device,
                devices,
                resume,
                max_minutes,
                progress: true,
            })?;
            if report.samples_per_s == 0.0 {
                // No step this session: a finished run resumed.
                println!(
                    "{} steps in {:.0} s, none more this session; run in {}",
                    report.step,
                    report.elapsed_s,
                    out.display()
                );
            } else {
                println!(
                    "{} steps in {:.0} s ({:.0} samples/s this session), last mse {:.4}; run in {}",
                    report.step,
                    report.elapsed_s,
                    report.samples_per_s,
                    report.last_mse,
                    out.display()
                );
            }
        }
        Command::Sample {
            run,
            class,
            steps,
            count,
            seed,
            out,
        } => {
            let device = burn::prelude::Device::flex();
            let (_, ema) = checkpoint::load_ema(&run, &device)?;
            let spec = &ema.spec;
            let classes: Vec<usize> = match class {
                Some(c) if c >= spec.classes.max(1) => {
                    bail!(
                        "class {c} out of range: the model has classes 0..{}",
                        spec.classes
                    )
                }
                Some(c) => vec![c],
                None => (0..spec.classes.max(1)).collect(),
            };
            let (count, steps) = (count as usize, steps as usize);
            let x = sample::sample_grid(&ema, &classes, count, steps, seed, &device);
            if spec.sample_shape.len() == 3 {
                plot::image_grid(&out, &x, &spec.sample_shape, count, 2)
            } else {
                plot::scatter(&out, &x, 3.0)
            }
            .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {}", out.display());
        }
        Command::Couple {
            run,
            count,
            steps,
            seed,
            guidance,
            keep_within,
            batch,
            out,
        } => {
            let made = mf_train::couple::couple(&mf_train::couple::CoupleOptions {
                run,
                count: count as usize,
                steps: steps as usize,
                guidance,
                seed,
                keep_within,
                batch: batch as usize,
                out: out.clone(),
            })?;
            println!(
                "{} of {count} draws of {} ({} steps each) kept within ±{keep_within} in {:.0} s; in {}",
                made.kept,
                made.teacher,
                made.steps,
                made.seconds,
                out.display()
            );
        }
        Command::Classifier {
            dataset,
            arch,
            epochs,
            seed,
            out,
        } => {
            let data = mf_train::config::DataConfig {
                dataset,
                root: None,
                image_size: None,
                channels: None,
                couplings: None,
            };
            let info = mf_train::classifier::train(&data, arch, epochs as usize, seed, &out)?;
            println!(
                "classifier for {} trained on the test split: {:.2}% accuracy on the training split; in {}",
                info.dataset,
                100.0 * info.held_out_accuracy,
                out.display()
            );
        }
        Command::Bench {
            config,
            device,
            batch,
            warmup,
            steps,
            json,
        } => {
            let mut config = Config::load(&config)?;
            if let Some(batch) = batch {
                config.train.batch = batch as usize;
            }
            let rows = mf_train::bench::run(&BenchOptions {
                config,
                device,
                warmup,
                steps,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "objective        omega  batch  ms/step  samples/s  × flow matching  peak RSS MiB  first warm-up step ms"
                );
                for r in &rows {
                    let rss = r
                        .peak_rss_mib
                        .map_or("-".to_string(), |m| format!("{m:.0}"));
                    let first = r
                        .warmup_ms
                        .first()
                        .map_or("-".to_string(), |ms| format!("{ms:.1}"));
                    println!(
                        "{:<16} {:>5.2} {:>6} {:>8.2} {:>10.0} {:>16.3} {:>13} {:>22}",
                        r.objective,
                        r.omega,
                        r.batch,
                        r.ms_per_step,
                        r.samples_per_s,
                        r.step_ratio_to_flow_matching,
                        rss,
                        first
                    );
                }
            }
        }
        Command::Eval { run, count, steps } => {
            let count = count as usize;
            let device = burn::prelude::Device::flex();
            let (state, ema) = checkpoint::load_ema(&run, &device)?;
            let Dataset::Toy(toy) = Dataset::open(&state.config.data)? else {
                bail!(
                    "mf-train eval measures toy datasets (sliced Wasserstein distance and MMD \
                     against true samples); {} is an image run: export it and measure it with \
                     the reference classifier: mf-export --run {} --precision fp32 --out m.onnx \
                     && mf-edge eval --model m.onnx",
                    run.display(),
                    run.display()
                );
            };
            let floor = toy_floor(toy, count);
            println!(
                "floor (two true sets): sliced Wasserstein {:.4}, MMD² {:.5}",
                floor.sliced_wasserstein, floor.mmd
            );
            for s in steps.into_iter().map(|s| s as usize) {
                let d = toy_distance(&ema, toy, count, s, &device);
                println!(
                    "{s} step(s): sliced Wasserstein {:.4}, MMD² {:.5}",
                    d.sliced_wasserstein, d.mmd
                );
            }
        }
    }
    Ok(())
}

/// Parses `--max-minutes`: a positive, finite number of minutes.
fn minutes(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(m) if m > 0.0 && m.is_finite() => Ok(m),
        _ => Err(format!("{text:?} is not a positive number of minutes")),
    }
}
