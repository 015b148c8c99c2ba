//! A QDQ file that mf-export did not write: `fixtures/torch-qdq/make.py` exported a small
//! MeanFlow-shaped conv net with `torch.onnx.export` and quantized it with ONNX Runtime's
//! `quantize_static` (per-channel int8 weights, uint8 activations). The native engine must run
//! it and its float twin as ONNX Runtime does, with the convolutions and the Gemm packed.
#![cfg(feature = "ort")]

use std::path::{Path, PathBuf};

use mf_core::onnx;
use mf_edge::native::NativeEngine;
use mf_edge::tensor::Value;
use mf_kernels::Isa;
use ort::session::Session;
use ort::value::Tensor;
use prost::Message;

const BATCH: usize = 5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch-qdq")
        .join(name)
}

/// ORT_DYLIB_PATH, or the library tools/fetch-onnxruntime put in the repository.
fn ort_library() -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return path.into();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ort");
    std::fs::read_dir(&dir)
        .expect("no ORT_DYLIB_PATH and no .ort/: run tools/fetch-onnxruntime")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains("libonnxruntime.so"))
        .expect("no libonnxruntime.so in .ort/")
}

/// Inputs where every part of the net matters: noise, times over (0, 1], r below t, every
/// class and the null class.
fn inputs() -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<i64>) {
    let mut z = vec![0f32; BATCH * 784];
    mf_core::noise::Noise::new(3).fill(&mut z);
    let t = vec![1.0, 0.9, 0.6, 0.35, 0.1];
    let r = vec![0.0, 0.5, 0.6, 0.05, 0.0];
    let class = vec![0, 7, 10, 3, 9];
    (z, t, r, class)
}

/// Runs both files in one ONNX Runtime environment (one is allowed per process).
fn run_ort(paths: [&Path; 2]) -> [Vec<f32>; 2] {
    let env = ort::init_from(ort_library())
        .expect("ONNX Runtime loads")
        .with_name("torch-qdq")
        .build()
        .expect("ONNX Runtime starts");
    paths.map(|path| run_session(&env, path))
}

fn run_session(env: &ort::environment::Environment, path: &Path) -> Vec<f32> {
    let mut session = Session::builder(env)
        .unwrap()
        .commit_from_file(path)
        .unwrap();
    let (z, t, r, class) = inputs();
    let n = BATCH as i64;
    let outputs = session
        .run(ort::inputs![
            "z" => Tensor::from_array((vec![n, 784], z)).unwrap(),
            "t" => Tensor::from_array((vec![n], t)).unwrap(),
            "r" => Tensor::from_array((vec![n], r)).unwrap(),
            "class" => Tensor::from_array((vec![n], class)).unwrap(),
        ])
        .unwrap();
    let (_, u) = outputs["u"].try_extract_tensor::<f32>().unwrap();
    u.to_vec()
}

/// Runs the native engine on the inputs, then on their first two samples, then on all again:
/// one engine keeps its convolution buffers from run to run, and a smaller batch in between
/// must leave nothing behind (each sample's output is its own, up to the order of float sums
/// that another row count brings, and the last run equals the first bit for bit); so must
/// concurrent runs.
fn run_native(path: &Path, isa: Isa) -> (Vec<f32>, mf_edge::native::PlanSummary) {
    let proto = onnx::ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    let engine = NativeEngine::from_graph(proto.graph.as_ref().unwrap(), isa).unwrap();
    let run = |n: usize| {
        let (z, t, r, class) = inputs();
        let out = engine
            .run(vec![
                ("z", Value::F32(z[..n * 784].to_vec(), vec![n, 784].into())),
                ("t", Value::F32(t[..n].to_vec(), vec![n].into())),
                ("r", Value::F32(r[..n].to_vec(), vec![n].into())),
                ("class", Value::I64(class[..n].to_vec(), vec![n].into())),
            ])
            .unwrap();
        let Value::F32(u, shape) = out else {
            panic!("float output expected")
        };
        assert_eq!(shape.as_slice(), [n, 784]);
        u
    };
    let (all, two, again) = (run(BATCH), run(2), run(BATCH));
    let err = relative_error(&two, &all[..2 * 784]);
    assert!(
        err < 1e-5,
        "{isa}: a sample's output depends on its batch ({err:e})"
    );
    assert!(again == all, "{isa}: the second run differs from the first");
    // Runs at once on one engine: one takes the kept buffers, the others bring their own.
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..3).map(|_| scope.spawn(|| run(BATCH))).collect();
        for handle in runs {
            assert!(
                handle.join().unwrap() == all,
                "{isa}: a concurrent run differs"
            );
        }
    });
    (all, engine.summary())
}

/// Largest difference over the largest magnitude of ORT's output.
fn relative_error(native: &[f32], ort: &[f32]) -> f32 {
    let scale = ort.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = native
        .iter()
        .zip(ort)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

#[test]
fn torch_exported_ort_quantized_files_run_natively_as_in_onnx_runtime() {
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.is_available()).collect();
    let float = fixture("tiny-meanflow-fp32.onnx");
    let qdq = fixture("tiny-meanflow-qdq.onnx");
    let [want_float, want_qdq] = run_ort([&float, &qdq]);
    // Quantization moved the output, so that matching ORT's int8 result means computing it.
    let moved = relative_error(&want_qdq, &want_float);
    assert!(moved > 1e-3, "int8 moved the output by only {moved:e}");
    for isa in isas {
        let (got, plan) = run_native(&float, isa);
        assert_eq!((plan.f32_layers, plan.int8_layers), (6, 0), "{isa}");
        let err = relative_error(&got, &want_float);
        assert!(err < 1e-5, "{isa} fp32: {err:e}");

        let (got, plan) = run_native(&qdq, isa);
        assert_eq!((plan.f32_layers, plan.int8_layers), (0, 6), "{isa}");
        // An activation on a rounding boundary may take the neighbouring code in one runtime
        // (float sums in another order): a step of that layer's scale, far below `moved`.
        let err = relative_error(&got, &want_qdq);
        assert!(
            err < moved / 10.0,
            "{isa} int8: {err:e} (int8 vs fp32: {moved:e})"
        );
        println!("{isa}: fp32 and int8 match ONNX Runtime; int8 within {err:e} (moved {moved:e})");
    }
}
