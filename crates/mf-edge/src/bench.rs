//! `mf-edge bench`: latency percentiles, throughput and peak memory of one-step generation per
//! model, backend and batch size, and the frame rate of `paint --stream` per backend. Each case runs in a child process of its own, so that its
//! peak resident memory is its own.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::backends::{self, BackendKind, BackendOptions};
use crate::model::Model;
use crate::native::StepTime;
use crate::sampler::denoise;
use crate::stream::paint_frame;
use mf_core::noise::Noise;

/// The result of one case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// Model file.
    pub model: String,
    /// Its precision (from the card).
    pub precision: String,
    /// Backend, with kernel or device.
    pub backend: String,
    /// Images per network evaluation.
    pub batch: usize,
    /// Median latency of a one-step generation of the batch (network evaluation and update;
    /// the noise is drawn beforehand), in ms.
    pub p50_ms: f64,
    /// 95th-percentile latency, in ms.
    pub p95_ms: f64,
    /// Images per second at that batch size.
    pub images_per_s: f64,
    /// Peak resident memory of the process running the case, in MB.
    pub peak_rss_mb: f64,
    /// Frames per second of `paint --stream` on 128x128 grey frames (fit, one network
    /// evaluation, resize back), measured in batch-1 cases of image models.
    #[serde(default)]
    pub paint_fps: Option<f64>,
    /// With `--profile`, each step's mean time per timed generation (native backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepTime>>,
}

/// The side of the square grey frames `paint_fps` is measured on.
pub const PAINT_FRAME_SIDE: u32 = 128;

/// Frames per second of [`paint_frame`] on a 128x128 grey test card, over `iters` frames
/// after 3 untimed ones.
fn measure_paint(
    backend: &mut dyn crate::backends::Backend,
    card: &mf_core::card::ModelCard,
    class: Option<usize>,
    iters: usize,
) -> anyhow::Result<f64> {
    let side = PAINT_FRAME_SIDE;
    let frame = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(side, side, |x, y| {
        image::Luma([((x * 2) ^ (y * 3)) as u8])
    }));
    for _ in 0..3 {
        paint_frame(backend, card, &frame, class, 0.6, 0)?;
    }
    let start = Instant::now();
    for _ in 0..iters {
        paint_frame(backend, card, &frame, class, 0.6, 0)?;
    }
    Ok(iters as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// Noise batches drawn before timing and cycled through: drawing standard-normal noise is the
/// same work for every backend (about 4.6 µs per MNIST image here), so it stays out of the
/// timed network evaluation.
const NOISE_POOL: u64 = 8;

/// Runs one case in this process: 3 untimed one-step generations, then `iters` timed ones,
/// each timing the network evaluation and update on noise drawn beforehand; with `profile`,
/// the timed ones also time each step where the backend can.
pub fn measure_here(
    model_path: &Path,
    kind: BackendKind,
    opts: &BackendOptions,
    (batch, iters): (usize, usize),
    profile: bool,
) -> anyhow::Result<Measurement> {
    ensure!(
        batch > 0 && iters > 0,
        "batch and iterations must be positive"
    );
    let model = Model::open(model_path)?;
    let mut backend = backends::open(kind, &model, opts)?;
    let class = (!model.card.class_names.is_empty()).then_some(0);
    let noise: Vec<Vec<f32>> = (0..NOISE_POOL)
        .map(|seed| {
            let mut z = vec![0f32; batch * model.card.dims()];
            Noise::new(seed).fill(&mut z);
            z
        })
        .collect();
    let timed_steps = profile && backend.time_steps();
    for z in noise.iter().take(3) {
        denoise(backend.as_mut(), &model.card, class, z.clone(), 1)?;
    }
    // The untimed generations' step times are dropped.
    backend.take_step_times();
    let mut times = Vec::with_capacity(iters);
    for z in noise.iter().cycle().take(iters) {
        let z = z.clone();
        let start = Instant::now();
        denoise(backend.as_mut(), &model.card, class, z, 1)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let steps = timed_steps.then(|| backend.take_step_times()).flatten();
    let paints = batch == 1 && crate::images::image_shape(&model.card.sample_shape).is_ok();
    let paint_fps = if paints {
        Some(measure_paint(backend.as_mut(), &model.card, class, iters)?)
    } else {
        None
    };
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((p / 100.0) * (times.len() - 1) as f64).round() as usize];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    Ok(Measurement {
        model: model_path.display().to_string(),
        precision: model.card.precision.clone(),
        backend: backend.describe(),
        batch,
        p50_ms: pct(50.0),
        p95_ms: pct(95.0),
        images_per_s: batch as f64 / (mean / 1e3),
        peak_rss_mb: peak_rss_mb(),
        paint_fps,
        steps,
    })
}

/// This process's peak resident set size in MB.
fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0;
    if ok {
        usage.ru_maxrss as f64 / 1024.0
    } else {
        f64::NAN
    }
}

/// One row of a bench: a case or the error that stopped it.
pub type Row = Result<Measurement, String>;

/// Runs every (model, backend, batch) case in a child `mf-edge bench-case` process.
pub fn run_all(
    models: &[PathBuf],
    kinds: &[BackendKind],
    (batches, iters): (&[usize], usize),
    opts: &BackendOptions,
    profile: bool,
) -> anyhow::Result<Vec<Row>> {
    let exe = std::env::current_exe().context("cannot find the mf-edge executable")?;
    let total = (models.len() * kinds.len() * batches.len()) as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("benchmarking {bar:30} {pos}/{len} {msg}")
            .expect("a valid template"),
    );
    let mut rows = Vec::new();
    for model in models {
        for &kind in kinds {
            for &batch in batches {
                bar.set_message(format!("{} {kind:?} batch {batch}", model.display()));
                let mut cmd = Command::new(&exe);
                cmd.arg("bench-case")
                    .arg("--model")
                    .arg(model)
                    .arg("--backend")
                    .arg(format!("{kind:?}").to_lowercase())
                    .arg("--batch")
                    .arg(batch.to_string())
                    .arg("--iters")
                    .arg(iters.to_string());
                if let Some(n) = opts.threads {
                    cmd.arg("--threads").arg(n.to_string());
                }
                if let Some(lib) = &opts.ort_lib {
                    cmd.arg("--ort-lib").arg(lib);
                }
                if profile {
                    cmd.arg("--profile");
                }
                let out = cmd.output().context("cannot start a benchmark process")?;
                let row = if out.status.success() {
                    serde_json::from_slice::<Measurement>(&out.stdout)
                        .map_err(|e| format!("bad report: {e}"))
                } else {
                    let err = String::from_utf8_lossy(&out.stderr);
                    Err(format!(
                        "{} {kind:?} batch {batch}: {}",
                        model.display(),
                        err.lines().next().unwrap_or("failed")
                    ))
                };
                rows.push(row);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(rows)
}

/// The steps that take longest per generation, per case with step times: at most `top` of
/// them, slowest first, each with its mean time and share of the steps' total.
pub fn step_table(rows: &[Row], top: usize) -> String {
    let mut s = String::new();
    for m in rows.iter().flatten() {
        let Some(steps) = &m.steps else { continue };
        let total: f64 = steps.iter().map(|t| t.mean_us).sum();
        s.push_str(&format!(
            "\n{} on {}, batch {}: {} steps, {:.1} µs per generation\n",
            m.model,
            m.backend,
            m.batch,
            steps.len(),
            total
        ));
        s.push_str(&format!("{:>5} {:>10} {:>6}  step\n", "#", "µs", "share"));
        let mut slowest: Vec<&StepTime> = steps.iter().collect();
        slowest.sort_by(|a, b| b.mean_us.total_cmp(&a.mean_us));
        for t in slowest.into_iter().take(top) {
            let share = 100.0 * t.mean_us / total.max(f64::MIN_POSITIVE);
            s.push_str(&format!(
                "{:>5} {:>10.2} {:>5.1}%  {}\n",
                t.index, t.mean_us, share, t.step
            ));
        }
    }
    s
}

/// Formats rows as a table.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<28} {:<6} {:<44} {:>5} {:>9} {:>9} {:>10} {:>9} {:>9}\n",
        "model", "prec", "backend", "batch", "p50 ms", "p95 ms", "images/s", "peak MB", "paint fps"
    );
    for row in rows {
        match row {
            Ok(m) => {
                let name = Path::new(&m.model)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let paint = m.paint_fps.map_or("-".into(), |f| format!("{f:.0}"));
                s.push_str(&format!(
                    "{:<28} {:<6} {:<44} {:>5} {:>9.3} {:>9.3} {:>10.0} {:>9.1} {:>9}\n",
                    name,
                    m.precision,
                    m.backend,
                    m.batch,
                    m.p50_ms,
                    m.p95_ms,
                    m.images_per_s,
                    m.peak_rss_mb,
                    paint
                ));
            }
            Err(e) => s.push_str(&format!("error: {e}\n")),
        }
    }
    s
}
