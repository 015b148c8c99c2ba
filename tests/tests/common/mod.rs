//! A tiny MNIST run, trained once per test binary and exported in every precision.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mf_export::calibrate::Rule;
use mf_export::{ExportOptions, FloatLayers, Target, WeightBits, export};
use mf_train::config::Config;
use mf_train::train::{DeviceKind, FitOptions, fit};

/// A small class-conditional MNIST MLP with guidance and x-prediction: every graph feature.
pub const CONFIG: &str = r#"
[data]
dataset = "mnist"
[model]
arch = "mlp"
width = 96
depth = 3
time_dim = 16
class_dim = 8
prediction = "x"
[objective]
omega = 1.5
[optim]
lr = 3e-3
ema_decay = 0.0
[train]
steps = 60
batch = 64
seed = 11
"#;

/// A two-level U-Net of 8 and 16 channels on MNIST, with guidance and x-prediction.
pub const UNET_CONFIG: &str = r#"
[data]
dataset = "mnist"
[model]
arch = "unet"
width = 8
depth = 2
time_dim = 16
class_dim = 8
prediction = "x"
[objective]
omega = 1.5
[optim]
lr = 3e-3
ema_decay = 0.0
[train]
steps = 16
batch = 8
seed = 3
"#;

/// Two adaLN-Zero blocks of width 16 with 2 heads on 7×7 patches of MNIST (16 tokens).
pub const DIT_CONFIG: &str = r#"
[data]
dataset = "mnist"
[model]
arch = "dit"
width = 16
depth = 2
heads = 2
patch = 7
mlp_ratio = 2
time_dim = 16
prediction = "x"
[objective]
omega = 1.5
[optim]
lr = 3e-3
ema_decay = 0.0
[train]
steps = 30
batch = 8
seed = 5
"#;

/// The fixture: the run folder and its exported models.
pub struct Fixture {
    _dir: tempfile::TempDir,
    /// The mf-train run.
    pub run: PathBuf,
    /// fp32, fp16 and int8 ONNX files.
    pub fp32: PathBuf,
    /// The fp16 export.
    pub fp16: PathBuf,
    /// The int8 export (every layer int8).
    pub int8: PathBuf,
    /// The int8 export with 7-bit weights (`--weight-bits 7`).
    pub int8_w7: PathBuf,
}

/// Trains and exports once.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        train(CONFIG, &run);
        let out = |name: &str| dir.path().join(name);
        for (target, name) in [
            (Target::Fp32, "m-fp32.onnx"),
            (Target::Fp16, "m-fp16.onnx"),
            (Target::Int8, "m-int8.onnx"),
        ] {
            export(&options(&run, target, &out(name))).unwrap();
        }
        let seven = ExportOptions {
            weight_bits: WeightBits::Seven,
            ..options(&run, Target::Int8, &out("m-int8-w7.onnx"))
        };
        export(&seven).unwrap();
        Fixture {
            fp32: out("m-fp32.onnx"),
            fp16: out("m-fp16.onnx"),
            int8: out("m-int8.onnx"),
            int8_w7: out("m-int8-w7.onnx"),
            run,
            _dir: dir,
        }
    })
}

/// Trains `config` (TOML) on the CPU into the run folder `run`; returns the last step's MSE.
pub fn train(config: &str, run: &Path) -> f64 {
    fit(&FitOptions {
        config: Config::parse(config).unwrap(),
        out: run.to_path_buf(),
        device: DeviceKind::Cpu,
        devices: Vec::new(),
        resume: false,
        max_minutes: None,
        progress: false,
    })
    .unwrap()
    .last_mse
}

/// Export options with the defaults the CLI uses (all layers int8).
pub fn options(run: &Path, target: Target, out: &Path) -> ExportOptions {
    ExportOptions {
        run: run.to_path_buf(),
        target,
        raw_weights: false,
        calib_samples: 128,
        calibration: Rule::MinMax,
        float_layers: FloatLayers::None,
        min_psnr_db: 20.0,
        weight_bits: WeightBits::Eight,
        out: out.to_path_buf(),
    }
}

/// ORT_DYLIB_PATH, or the library tools/fetch-onnxruntime put in the repository.
pub fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ort");
            std::fs::read_dir(&dir)
                .ok()
                .and_then(|mut entries| {
                    entries.find_map(|e| {
                        e.ok()
                            .map(|e| e.path())
                            .filter(|p| p.to_string_lossy().contains("libonnxruntime.so"))
                    })
                })
                .unwrap_or_else(|| panic!("no ONNX Runtime library: run tools/fetch-onnxruntime"))
        })
}

/// Checks an exported MNIST-shaped image network (a U-Net, a DiT) as mf-edge runs it: tract
/// and ONNX Runtime agree within `tol` (relative) on a batch of mixed (t, r) and classes, the
/// network left its zero-initialised output (x̂ = z − t·u is not the zero image), one-step
/// samples are finite; the native engine agrees with tract within `tol` too, or, given a
/// `refusal`, refuses the file with an error containing it and naming tract.
pub fn check_image_network(path: &Path, tol: f32, arch: &str, refusal: Option<&str>) {
    use mf_edge::backends::{self, BackendKind, BackendOptions, Batch};
    use mf_edge::model::Model;
    let opts = BackendOptions {
        ort_lib: Some(ort_library()),
        ..Default::default()
    };
    let model = Model::open(path).unwrap();
    assert_eq!(model.card.architecture, arch);
    let n = 5;
    let mut z = vec![0f32; n * model.card.dims()];
    mf_core::noise::Noise::new(9).fill(&mut z);
    let batch = Batch {
        z,
        sample_shape: model.card.sample_shape.clone(),
        t: vec![1.0, 0.5, 0.8, 0.3, 1.0],
        r: vec![0.0, 0.0, 0.1, 0.3, 0.5],
        class: vec![0, 3, 7, 10, 9],
    };
    let run = |kind| {
        backends::open(kind, &model, &opts)
            .unwrap()
            .run(&batch)
            .unwrap()
    };
    let (tract, ort) = (run(BackendKind::Tract), run(BackendKind::Ort));
    let scale = tract.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let differs = |other: &[f32]| {
        other
            .iter()
            .zip(&tract)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    };
    let err = differs(&ort);
    assert!(err <= tol, "{}: ORT vs tract {err:e}", path.display());
    match refusal {
        None => {
            let err = differs(&run(BackendKind::Native));
            assert!(err <= tol, "{}: native vs tract {err:e}", path.display());
        }
        Some(refusal) => {
            let native = backends::open(BackendKind::Native, &model, &opts).map(|_| ());
            let err = format!("{:#}", native.unwrap_err());
            assert!(
                err.contains(refusal) && err.contains("--backend tract"),
                "{err}"
            );
        }
    }
    let dims = model.card.dims();
    let xhat: Vec<f32> = (0..n * dims)
        .map(|i| batch.z[i] - batch.t[i / dims] * tract[i])
        .collect();
    let rms = (xhat.iter().map(|v| v * v).sum::<f32>() / xhat.len() as f32).sqrt();
    assert!(rms > 0.05, "{}: x̂ RMS {rms}", path.display());

    let mut backend = backends::open(BackendKind::Ort, &model, &opts).unwrap();
    let images =
        mf_edge::sampler::generate(backend.as_mut(), &model.card, Some(4), 3, 1, 1).unwrap();
    assert_eq!(images.len(), 3 * dims);
    assert!(images.iter().all(|v| v.is_finite()));
}

/// A run's fp32, fp16 and int8 exports into `dir` (named `<stem>-fp32.onnx`, …), each held to
/// the floors every test expects: fp32 within 1e-5 of mf-train's forward, fp16 within 1e-2,
/// int8 one-step PSNR at least 20 dB. Returns the three paths.
pub fn export_three(run: &Path, dir: &Path, stem: &str) -> [PathBuf; 3] {
    let path = |p: &str| dir.join(format!("{stem}-{p}.onnx"));
    let paths = [path("fp32"), path("fp16"), path("int8")];
    let r32 = export(&options(run, Target::Fp32, &paths[0])).unwrap();
    let r16 = export(&options(run, Target::Fp16, &paths[1])).unwrap();
    let r8 = export(&options(run, Target::Int8, &paths[2])).unwrap();
    assert!(r32.max_relative_error <= 1e-5, "{}", r32.max_relative_error);
    assert!(r16.max_relative_error <= 1e-2, "{}", r16.max_relative_error);
    let psnr = r8.card.unwrap().quantization.unwrap().psnr_db.unwrap();
    assert!(psnr >= 20.0, "{stem}: int8 one-step PSNR {psnr} dB");
    paths
}
