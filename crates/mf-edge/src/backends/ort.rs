//! The ONNX Runtime backend (`ort` with `load-dynamic`): the library comes from `--ort-lib` or
//! `ORT_DYLIB_PATH` (`tools/fetch-onnxruntime` provides one). CUDA and TensorRT execution
//! providers are opt-in features; a requested provider that cannot start is an error, never a
//! silent CPU fallback.
use std::sync::OnceLock;

use anyhow::{Context, anyhow, bail};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use super::{Backend, BackendOptions, Batch, Device};
use crate::model::{Model, OUTPUT};

pub(super) struct Ort {
    session: Session,
    device: Device,
}

/// Loads the library and creates ONNX Runtime's one environment, once per process.
fn environment(opts: &BackendOptions) -> anyhow::Result<&'static Environment> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = opts
            .ort_lib
            .clone()
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(Into::into))
            .ok_or("no ONNX Runtime library: set ORT_DYLIB_PATH or pass --ort-lib (tools/fetch-onnxruntime prints one)")?;
        if !lib.exists() {
            return Err(format!("ONNX Runtime library {} does not exist", lib.display()));
        }
        let builder = ort::init_from(&lib).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))?;
        builder.with_name("mf-edge").build().map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(|e| anyhow!(e.clone()))
}

impl Ort {
    pub(super) fn new(model: &Model, opts: &BackendOptions) -> anyhow::Result<Ort> {
        let env = environment(opts)?;
        let mut builder = Session::builder(env).map_err(|e| anyhow!("{e}"))?;
        if let Some(n) = opts.threads {
            builder = builder.with_intra_threads(n).map_err(|e| anyhow!("{e}"))?;
        }
        if model.card.precision.starts_with("int8") {
            // ORT's MatMul + Add → Gemm fusion runs first and leaves no QDQ MatMul for its
            // integer fusion (DQ → MatMul → MatMulIntegerToFloat); without it the weights are
            // dequantized to float on every run.
            builder = builder
                .with_disabled_optimizers("MatMulAddFusion")
                .map_err(|e| anyhow!("{e}"))?;
        }
        builder = match opts.device {
            Device::Cpu => builder,
            #[cfg(feature = "ort-cuda")]
            Device::Cuda => builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| anyhow!("the CUDA execution provider cannot start: {e}"))?,
            #[cfg(feature = "ort-tensorrt")]
            Device::Tensorrt => builder
                .with_execution_providers([ort::ep::TensorRT::default().build().error_on_failure()])
                .map_err(|e| anyhow!("the TensorRT execution provider cannot start: {e}"))?,
            #[allow(unreachable_patterns)]
            other => {
                let name = format!("{other:?}").to_lowercase();
                bail!(
                    "--device {name} needs mf-edge built with the ort-{name} feature \
                     (cargo build --release -p mf-edge --features ort-{name}); this build runs \
                     ONNX Runtime on the CPU only"
                )
            }
        };
        let session = builder
            .commit_from_memory(&model.bytes)
            .map_err(|e| anyhow!("ONNX Runtime cannot load the model: {e}"))?;
        Ok(Ort {
            session,
            device: opts.device,
        })
    }
}

impl Backend for Ort {
    fn describe(&self) -> String {
        format!("ort ({:?})", self.device).to_lowercase()
    }

    fn run(&mut self, inputs: &Batch) -> anyhow::Result<Vec<f32>> {
        let n = inputs.len() as i64;
        let z_shape: Vec<i64> = inputs.z_shape().iter().map(|&d| d as i64).collect();
        let z = Tensor::from_array((z_shape, inputs.z.clone())).map_err(|e| anyhow!("{e}"))?;
        let t = Tensor::from_array((vec![n], inputs.t.clone())).map_err(|e| anyhow!("{e}"))?;
        let r = Tensor::from_array((vec![n], inputs.r.clone())).map_err(|e| anyhow!("{e}"))?;
        let class =
            Tensor::from_array((vec![n], inputs.class.clone())).map_err(|e| anyhow!("{e}"))?;
        let outputs = self
            .session
            .run(ort::inputs!["z" => z, "t" => t, "r" => r, "class" => class])
            .map_err(|e| anyhow!("ONNX Runtime failed: {e}"))?;
        // The loader checked that the graph's one output is u; ask for it by name without
        // indexing, so a session that answers differently is an error, not a panic.
        let u = outputs
            .get(OUTPUT)
            .with_context(|| format!("ONNX Runtime returned no output {OUTPUT}"))?;
        let (_, u) = u
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("output {OUTPUT}"))?;
        Ok(u.to_vec())
    }
}
