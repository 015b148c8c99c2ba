//! `mf-edge`: generate images with a one-step MeanFlow model on this device.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mf_edge::backends::{self, BackendKind, BackendOptions, Device};
use mf_edge::bench::{self, measure_here};
use mf_edge::model::Model;
use mf_edge::stream::{FrameFormat, PixelFormat};
use mf_edge::{DEFAULT_MODEL, images, sampler};

/// The most images one `generate` makes (per class with `--class all`).
const MAX_COUNT: i64 = 100_000;
/// The most network evaluations per image.
const MAX_STEPS: i64 = 1000;
/// The largest pixel scale.
const MAX_ZOOM: i64 = 64;
/// The most threads a backend is asked for.
const MAX_THREADS: i64 = 1024;
/// The largest bench batch.
const MAX_BATCH: i64 = 4096;
/// The most timed generations per bench case.
const MAX_ITERS: i64 = 100_000;
/// The slowest steps `bench --profile` lists per case.
const STEPS_LISTED: usize = 20;
/// The most eval samples per class.
const MAX_PER_CLASS: i64 = 10_000;
/// The most model values one `generate` holds in memory (2 GiB of f32).
const MAX_SAMPLE_VALUES: usize = 1 << 29;

/// One-step image generation with MeanFlow models on small devices.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where and how the model runs.
#[derive(Args, Clone)]
struct Run {
    /// The ONNX model (default: the shipped MNIST int8 model embedded in this binary).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The backend.
    #[arg(long, value_enum, default_value = "native")]
    backend: BackendKind,
    /// Threads, 1 to 1024; the native engine uses at most one per core (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_THREADS))]
    threads: Option<u32>,
    /// ONNX Runtime's execution device (with --backend ort).
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// ONNX Runtime's library (default: $ORT_DYLIB_PATH).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

impl Run {
    fn model(&self) -> anyhow::Result<Model> {
        match &self.model {
            Some(path) => Model::open(path),
            None => Model::from_bytes(DEFAULT_MODEL.to_vec()).context("the embedded default model"),
        }
    }

    fn options(&self) -> BackendOptions {
        BackendOptions {
            threads: self.threads.map(|n| n as usize),
            device: self.device,
            ort_lib: self.ort_lib.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Generate images of a class in one network evaluation.
    Generate {
        /// Class index or name (required for class-conditional models), or `all` for a grid
        /// with one row of --count images per class (seed + class for each row).
        #[arg(long)]
        class: Option<String>,
        /// Images to generate, 1 to 100000 (per class with `--class all`).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=MAX_COUNT))]
        count: u32,
        /// Noise seed: the same seed gives the same images.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Network evaluations per image, 1 to 1000.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_STEPS))]
        steps: u32,
        /// Pixel scale of the written images, 1 to 64.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=MAX_ZOOM))]
        zoom: u32,
        /// The PNG grid to write.
        #[arg(long, default_value = "out.png", conflicts_with = "out_dir")]
        out: PathBuf,
        /// Write one PNG per image into this folder instead of a grid.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        #[command(flatten)]
        run: Run,
    },
    /// Turn a photo into one-step art: noise it to t = strength, map it back in one step.
    /// With --stream, paint every frame of standard input onto standard output.
    Paint {
        /// A PNG or JPEG file, or - for standard input.
        #[arg(long, required_unless_present = "stream", conflicts_with = "stream")]
        input: Option<PathBuf>,
        /// Class index or name to steer toward (required for class-conditional models).
        #[arg(long)]
        class: Option<String>,
        /// How far toward noise the photo goes before the step back, in (0, 1].
        #[arg(long, default_value_t = 0.6, value_parser = strength)]
        strength: f32,
        /// Noise seed (the same noise for every frame of a stream, so still scenes stay still).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Pixel scale of the written image, 1 to 64.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=MAX_ZOOM))]
        zoom: u32,
        /// The PNG to write.
        #[arg(long, required_unless_present = "stream", conflicts_with = "stream")]
        out: Option<PathBuf>,
        /// Read frames from standard input and write art frames to standard output, each at
        /// its input's size: raw frames with --size (ffmpeg's -f rawvideo), else PNGs back to
        /// back (ffmpeg's -f image2pipe -c:v png).
        #[arg(long, conflicts_with = "zoom")]
        stream: bool,
        /// Size of raw frames, WxH (e.g. 128x128).
        #[arg(long, requires = "stream", value_parser = mf_edge::stream::parse_size)]
        size: Option<(u32, u32)>,
        /// Pixel format of raw frames (needs --size).
        #[arg(long, value_enum, requires = "size", default_value = "gray")]
        pix_fmt: PixelFormat,
        #[command(flatten)]
        run: Run,
    },
    /// Latency, throughput and memory per backend, precision and batch size.
    Bench {
        /// Models to compare (default: models/mnist-{fp16,int8}.onnx).
        #[arg(long = "model")]
        models: Vec<PathBuf>,
        /// Backends to compare (default: every backend this build has).
        #[arg(long, value_enum, value_delimiter = ',')]
        backends: Vec<BackendKind>,
        /// Batch sizes, each 1 to 4096.
        #[arg(long, value_delimiter = ',', default_value = "1,16",
              value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH))]
        batch: Vec<u32>,
        /// Timed generations per case, 1 to 100000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=MAX_ITERS))]
        iters: u32,
        /// Threads per backend, 1 to 1024 (default: all cores).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_THREADS))]
        threads: Option<u32>,
        /// ONNX Runtime's library (default: $ORT_DYLIB_PATH).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also time each step of the plan (native backend) and list the slowest.
        #[arg(long)]
        profile: bool,
    },
    /// One benchmark case in this process (used by `bench`), as JSON.
    #[command(hide = true)]
    BenchCase {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_enum)]
        backend: BackendKind,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH))]
        batch: u32,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_ITERS))]
        iters: u32,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_THREADS))]
        threads: Option<u32>,
        #[arg(long)]
        ort_lib: Option<PathBuf>,
        #[arg(long)]
        profile: bool,
    },
    /// Measure one-step quality with the reference classifier: accuracy and Fréchet distance.
    Eval {
        /// Models to evaluate (default: the shipped MNIST fp16 and int8 models).
        #[arg(long = "model")]
        models: Vec<PathBuf>,
        /// The reference classifier (default: models/<dataset>-classifier-cnn.onnx, the
        /// stricter CNN, where it exists; models/<dataset>-classifier.onnx, the MLP, otherwise).
        #[arg(long)]
        classifier: Option<PathBuf>,
        /// The dataset folder with the training split (default: data/<dataset>).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Samples per class, 1 to 10000 (real sets of the same size).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=MAX_PER_CLASS))]
        per_class: u32,
        /// Network evaluations per sample (comma separated), each 1 to 1000.
        #[arg(long, value_delimiter = ',', default_value = "1,2",
              value_parser = clap::value_parser!(u32).range(1..=MAX_STEPS))]
        steps: Vec<u32>,
        /// Backends to evaluate on.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "native")]
        backends: Vec<BackendKind>,
        /// ONNX Runtime's library (default: $ORT_DYLIB_PATH).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
        /// Also score samples generated elsewhere: a folder with images-idx3-ubyte and
        /// labels-idx1-ubyte (see tools/npz-to-idx), with the same classifier and real sets.
        #[arg(long)]
        samples: Vec<PathBuf>,
        /// The dataset when only --samples are given.
        #[arg(long, default_value = "mnist")]
        dataset: String,
        /// Print the results as JSON (what model cards are rendered from).
        #[arg(long)]
        json: bool,
    },
    /// Show a model's card, ops, parameters and precision.
    Info {
        /// The ONNX model (default: the embedded one).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Render a model card from its template (models/cards/NAME.md → models/NAME.md): every
    /// figure from the model files and from eval/bench JSON (see `tools/render-cards`).
    RenderCard {
        /// The template.
        #[arg(long)]
        template: PathBuf,
        /// The card to write (its folder is where the template's files are looked up).
        #[arg(long)]
        out: PathBuf,
        /// Write nothing; fail if the card on disk disagrees with its template and files.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> std::process::ExitCode {
    mf_core::cli::exit(run())
}

/// Parses the command line and does the work.
fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate {
            class,
            count,
            seed,
            steps,
            zoom,
            out,
            out_dir,
            run,
        } => {
            let model = run.model()?;
            let (count, steps) = (count as usize, steps as usize);
            let all = class.as_deref() == Some("all") && model.card.classes() > 0;
            let class = if all {
                None
            } else {
                resolve_class(&model, class.as_deref())?
            };
            let rows = if all { model.card.classes() } else { 1 };
            let total = count * rows;
            let values = total.checked_mul(model.card.dims());
            ensure!(
                values.is_some_and(|v| v <= MAX_SAMPLE_VALUES),
                "{total} images of {} values each exceed the {MAX_SAMPLE_VALUES} values one \
                 generate holds: lower --count",
                model.card.dims()
            );
            let shape = &model.card.sample_shape;
            let cols = if all {
                count
            } else {
                (count as f64).sqrt().ceil() as usize
            };
            // The canvas and the file name are checked before any network runs, so a bad size
            // or name costs nothing.
            if out_dir.is_none() {
                images::check_png_path(&out)?;
            }
            match &out_dir {
                Some(_) => images::grid_size(1, shape, 1, zoom)?,
                None => images::grid_size(total, shape, cols, zoom)?,
            };
            let mut backend = backends::open(run.backend, &model, &run.options())?;
            let samples = if all {
                let mut samples = Vec::with_capacity(values.unwrap_or(0));
                for c in 0..rows {
                    let row_seed = seed.wrapping_add(c as u64);
                    samples.extend(sampler::generate(
                        backend.as_mut(),
                        &model.card,
                        Some(c),
                        count,
                        row_seed,
                        steps,
                    )?);
                }
                samples
            } else {
                sampler::generate(backend.as_mut(), &model.card, class, count, seed, steps)?
            };
            match out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    let per = model.card.dims();
                    for (i, sample) in samples.chunks(per).enumerate() {
                        let path = dir.join(format!("{i:04}.png"));
                        images::save_png(&images::grid(sample, shape, 1, zoom)?, &path)?;
                    }
                    println!(
                        "wrote {total} images to {} ({})",
                        dir.display(),
                        backend.describe()
                    );
                }
                None => {
                    images::save_png(&images::grid(&samples, shape, cols, zoom)?, &out)?;
                    println!(
                        "wrote {} ({total} images, {})",
                        out.display(),
                        backend.describe()
                    );
                }
            }
        }
        Command::Paint {
            input,
            class,
            strength,
            seed,
            zoom,
            out,
            stream,
            size,
            pix_fmt,
            run,
        } => {
            let model = run.model()?;
            let class = resolve_class(&model, class.as_deref())?;
            if stream {
                let format = match size {
                    Some((width, height)) => FrameFormat::Raw {
                        width,
                        height,
                        pixels: pix_fmt,
                    },
                    None => FrameFormat::Png,
                };
                return paint_stream(&model, &run, format, class, strength, seed);
            }
            let (input, out) = input.zip(out).context("--input and --out are required")?;
            images::check_png_path(&out)?;
            images::grid_size(1, &model.card.sample_shape, 1, zoom)?;
            let photo = images::read_photo(&input, &model.card.sample_shape)?;
            let mut backend = backends::open(run.backend, &model, &run.options())?;
            let art = sampler::paint(backend.as_mut(), &model.card, &photo, class, strength, seed)?;
            images::save_png(
                &images::grid(&art, &model.card.sample_shape, 1, zoom)?,
                &out,
            )?;
            println!("wrote {}", out.display());
        }
        Command::Bench {
            models,
            backends,
            batch,
            iters,
            threads,
            ort_lib,
            json,
            profile,
        } => {
            let models = if models.is_empty() {
                default_bench_models()?
            } else {
                models
            };
            let opts = BackendOptions {
                threads: threads.map(|n| n as usize),
                device: Device::Cpu,
                ort_lib,
            };
            let backends = if backends.is_empty() {
                BackendKind::compiled()
            } else {
                backends
            };
            let batch: Vec<usize> = batch.into_iter().map(|b| b as usize).collect();
            let cases = (&batch[..], iters as usize);
            let rows = bench::run_all(&models, &backends, cases, &opts, profile)?;
            if json {
                let values: Vec<_> = rows
                    .iter()
                    .map(|r| match r {
                        Ok(m) => serde_json::to_value(m).expect("serializable"),
                        Err(e) => serde_json::json!({ "error": e }),
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&values)?);
            } else {
                print!("{}", bench::table(&rows));
                print!("{}", bench::step_table(&rows, STEPS_LISTED));
            }
            let failed = rows.iter().filter(|r| r.is_err()).count();
            ensure!(
                failed == 0,
                "{failed} of {} bench cases failed (their errors are in the table)",
                rows.len()
            );
        }
        Command::BenchCase {
            model,
            backend,
            batch,
            iters,
            threads,
            ort_lib,
            profile,
        } => {
            let opts = BackendOptions {
                threads: threads.map(|n| n as usize),
                device: Device::Cpu,
                ort_lib,
            };
            let case = (batch as usize, iters as usize);
            let m = measure_here(&model, backend, &opts, case, profile)?;
            println!("{}", serde_json::to_string(&m)?);
        }
        Command::Eval {
            models,
            classifier,
            data,
            per_class,
            steps,
            backends,
            ort_lib,
            samples,
            dataset,
            json,
        } => {
            let models = if models.is_empty() && samples.is_empty() {
                default_bench_models()?
            } else {
                models
            };
            let first = models.first().map(|p| Model::open(p)).transpose()?;
            let dataset = first.as_ref().map_or(dataset, |m| m.card.dataset.clone());
            let classes = first.as_ref().map_or(10, |m| m.card.classes());
            let per_class = per_class as usize;
            let classifier = match classifier {
                Some(path) => path,
                None => {
                    let cnn = PathBuf::from(format!("models/{dataset}-classifier-cnn.onnx"));
                    let mlp = PathBuf::from(format!("models/{dataset}-classifier.onnx"));
                    let chosen = if cnn.exists() { cnn } else { mlp };
                    in_working_dir(&chosen, "the reference classifier", "--classifier")?
                }
            };
            let data = match data {
                Some(path) => path,
                None => match std::env::var_os("MF_DATA_DIR") {
                    Some(dir) => PathBuf::from(dir).join(&dataset),
                    None => in_working_dir(
                        &Path::new("data").join(&dataset),
                        "the dataset",
                        "--data or MF_DATA_DIR",
                    )?,
                },
            };
            let classifier_name = file_name(&classifier);
            let classifier = mf_edge::eval::Classifier::open(&classifier)?;
            let real = mf_edge::eval::real_sets(&data, classes, per_class)?;
            let (reference, _) = classifier.classify(&real.reference)?;
            let reference = mf_edge::eval::Reference::new(reference, classifier.features())?;
            let (floor_set, floor_pred) = classifier.classify(&real.floor)?;
            let floor_labels: Vec<usize> = (0..floor_pred.len()).map(|i| i / per_class).collect();
            let real_score = mf_edge::eval::score_features(
                &floor_set,
                &floor_pred,
                &floor_labels,
                &reference,
                classifier.features(),
            )?;
            let mut report = EvalReport {
                dataset: dataset.clone(),
                classifier: classifier_name,
                classifier_arch: classifier.arch().to_string(),
                per_class,
                floor: real_score.frechet,
                real_accuracy: real_score.accuracy,
                real_knn_precision: real_score.precision,
                real_knn_recall: real_score.recall,
                rows: Vec::new(),
            };
            if !json {
                println!(
                    "{dataset}: {per_class} per class, features of {} ({}); real vs real: Fréchet distance \
                     (floor) {:.3}, precision {:.3}, recall {:.3}; classifier on real training images {:.2}%",
                    report.classifier,
                    report.classifier_arch,
                    report.floor,
                    report.real_knn_precision,
                    report.real_knn_recall,
                    100.0 * report.real_accuracy
                );
                println!(
                    "{:<26} {:<6} {:<8} {:>5} {:>9} {:>9} {:>8} {:>9} {:>7}",
                    "model",
                    "prec",
                    "backend",
                    "steps",
                    "class %",
                    "Fréchet",
                    "× floor",
                    "precision",
                    "recall"
                );
            }
            let opts = BackendOptions {
                threads: None,
                device: Device::Cpu,
                ort_lib,
            };
            for dir in &samples {
                let (images, labels) = mf_edge::eval::read_samples(dir)?;
                let score =
                    mf_edge::eval::score_samples(&classifier, &images, &labels, &reference)?;
                report.push(dir, "-", "samples", None, &score, !json);
            }
            for path in &models {
                let model = Model::open(path)?;
                for &kind in &backends {
                    let mut backend = backends::open(kind, &model, &opts)?;
                    for s in steps.iter().map(|&s| s as usize) {
                        let score = mf_edge::eval::score(
                            backend.as_mut(),
                            &model,
                            &classifier,
                            &reference,
                            per_class,
                            s,
                        )?;
                        let backend_name = format!("{kind:?}").to_lowercase();
                        report.push(
                            path,
                            &model.card.precision,
                            &backend_name,
                            Some(s),
                            &score,
                            !json,
                        );
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
        }
        Command::RenderCard {
            template,
            out,
            check,
        } => {
            if check {
                mf_edge::cards::check(&template, &out)?;
                println!("{}: agrees with its files", out.display());
            } else {
                let text = std::fs::read_to_string(&template)
                    .with_context(|| format!("cannot read {}", template.display()))?;
                let folder = mf_core::atomic::folder(&out);
                let card = mf_edge::cards::render(&text, folder)?;
                mf_core::atomic::write(&out, card.as_bytes())?;
                println!("wrote {}", out.display());
            }
        }
        Command::Info { model } => {
            let model = match model {
                Some(path) => Model::open(&path)?,
                None => Model::from_bytes(DEFAULT_MODEL.to_vec())?,
            };
            let card = &model.card;
            println!("{}", serde_json::to_string_pretty(card)?);
            println!("parameters: {}", card.parameters);
            println!(
                "precision: {} ({} MB of weights)",
                card.precision,
                model.weight_bytes() as f64 / 1e6
            );
            println!("ops:");
            for (op, n) in model.op_counts() {
                println!("  {op:<18} {n}");
            }
        }
    }
    Ok(())
}

/// `paint --stream`: frames from standard input, art to standard output, progress and the
/// frame rate on standard error.
fn paint_stream(
    model: &Model,
    run: &Run,
    format: FrameFormat,
    class: Option<usize>,
    strength: f32,
    seed: u64,
) -> anyhow::Result<()> {
    mf_edge::images::image_shape(&model.card.sample_shape)?;
    format.check()?;
    let mut backend = backends::open(run.backend, model, &run.options())?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("painting {spinner} {pos} frames, {per_sec}")
            .expect("a valid template"),
    );
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let report = mf_edge::stream::paint_stream(
        backend.as_mut(),
        &model.card,
        format,
        std::io::stdin().lock(),
        &mut out,
        class,
        strength,
        seed,
        |n| bar.set_position(n as u64),
    );
    bar.finish_and_clear();
    let report = report?;
    eprintln!(
        "painted {} frames in {:.2} s ({:.1} frames/s, {})",
        report.frames,
        report.elapsed.as_secs_f64(),
        report.fps(),
        backend.describe()
    );
    Ok(())
}

/// What `mf-edge eval` measured (its `--json` output).
#[derive(serde::Serialize)]
struct EvalReport {
    /// The dataset.
    dataset: String,
    /// The reference classifier's file name.
    classifier: String,
    /// Its design (`mlp` or `cnn`).
    classifier_arch: String,
    /// Samples per class.
    per_class: usize,
    /// Fréchet distance between two disjoint real sets (the floor).
    floor: f64,
    /// The classifier's accuracy on the real floor set.
    real_accuracy: f64,
    /// k-NN precision of the real floor set against the reference set (what real images reach).
    real_knn_precision: f64,
    /// k-NN recall of the real floor set against the reference set.
    real_knn_recall: f64,
    /// One row per model, backend and step count (or samples folder).
    rows: Vec<EvalRow>,
}

/// One scored configuration.
#[derive(serde::Serialize)]
struct EvalRow {
    /// File or folder name.
    model: String,
    /// Precision from the card (`-` for samples).
    precision: String,
    /// Backend (`samples` for a samples folder).
    backend: String,
    /// Network evaluations per sample (none for a samples folder).
    steps: Option<usize>,
    /// Share classified as the requested class.
    accuracy: f64,
    /// Fréchet distance to the reference real set.
    frechet: f64,
    /// Fréchet distance over the floor.
    floor_ratio: f64,
    /// Precision (Kynkäänniemi et al.): share of samples inside the real set's k-NN manifold.
    knn_precision: f64,
    /// Recall: share of real images inside the samples' k-NN manifold.
    knn_recall: f64,
}

impl EvalReport {
    /// Records a row, printing it as a table line when `print`.
    fn push(
        &mut self,
        what: &Path,
        precision: &str,
        backend: &str,
        steps: Option<usize>,
        score: &mf_edge::eval::Score,
        print: bool,
    ) {
        let row = EvalRow {
            model: file_name(what),
            precision: precision.into(),
            backend: backend.into(),
            steps,
            accuracy: score.accuracy,
            frechet: score.frechet,
            floor_ratio: score.frechet / self.floor,
            knn_precision: score.precision,
            knn_recall: score.recall,
        };
        if print {
            let steps = steps.map_or("-".to_string(), |s| s.to_string());
            println!(
                "{:<26} {:<6} {:<8} {steps:>5} {:>9.2} {:>9.3} {:>8.2} {:>9.3} {:>7.3}",
                row.model,
                row.precision,
                row.backend,
                100.0 * row.accuracy,
                row.frechet,
                row.floor_ratio,
                row.knn_precision,
                row.knn_recall
            );
        }
        self.rows.push(row);
    }
}

/// A path's file name, as reports show it.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The class a user asked for, checked against the model.
fn resolve_class(model: &Model, class: Option<&str>) -> anyhow::Result<Option<usize>> {
    let card = &model.card;
    match class {
        Some(c) => Ok(Some(card.class_id(c).map_err(anyhow::Error::msg)?)),
        None if card.class_names.is_empty() => Ok(None),
        None => bail!(
            "this model is class-conditional: pass --class with an index 0..{} or one of {}",
            card.classes(),
            card.class_names.join(", ")
        ),
    }
}

/// The shipped MNIST models in `models/` under the working directory, for `bench` and `eval`
/// without `--model` (resolved when the command runs, so a copied binary looks where it runs).
fn default_bench_models() -> anyhow::Result<Vec<PathBuf>> {
    let dir = in_working_dir(Path::new("models"), "the models folder", "--model")?;
    let found: Vec<PathBuf> = ["mnist-fp16.onnx", "mnist-int8.onnx"]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect();
    ensure!(
        !found.is_empty(),
        "no mnist-{{fp16,int8}}.onnx in {}: pass --model",
        dir.display()
    );
    Ok(found)
}

/// Parses `--strength`: a number in (0, 1].
fn strength(text: &str) -> Result<f32, String> {
    let value: f32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number (a strength in (0, 1] is accepted)"))?;
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!("{text} is outside (0, 1], the strengths accepted"))
    }
}

/// A default path relative to the working directory, or an error naming where it was looked
/// for and the flag that gives it.
fn in_working_dir(relative: &Path, what: &str, flag: &str) -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let path = cwd.join(relative);
    ensure!(
        path.exists(),
        "{what} is not at {} (defaults are looked for under the working directory): pass {flag}",
        path.display()
    );
    Ok(path)
}
