//! The backends behind one trait: the native engine, tract, and ONNX Runtime.
mod native;
#[cfg(feature = "ort")]
mod ort;
#[cfg(feature = "tract")]
mod tract;

use anyhow::bail;

use crate::model::Model;

pub use mf_core::batch::Batch;

/// Runs a model: u(z, r, t | class).
pub trait Backend {
    /// A short description (backend and device or kernel).
    fn describe(&self) -> String;
    /// u for a batch, flattened like z.
    fn run(&mut self, inputs: &Batch) -> anyhow::Result<Vec<f32>>;
    /// Times each step of the runs from now on, where the backend can (the native engine);
    /// whether it does.
    fn time_steps(&mut self) -> bool {
        false
    }
    /// Each step's mean time per run since timing began or the last call.
    fn take_step_times(&mut self) -> Option<Vec<crate::native::StepTime>> {
        None
    }
}

/// Which backend.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// mf-kernels (int8 and fp32 GEMMs), the default.
    Native,
    /// tract (pure Rust; cargo feature `tract`).
    Tract,
    /// ONNX Runtime (cargo feature `ort`).
    Ort,
}

/// Where ONNX Runtime executes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CPU.
    Cpu,
    /// CUDA execution provider (feature `ort-cuda`).
    Cuda,
    /// TensorRT execution provider (feature `ort-tensorrt`).
    Tensorrt,
}

/// Options for opening a backend.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Threads for the backend (None: all cores).
    pub threads: Option<usize>,
    /// ONNX Runtime's execution device.
    pub device: Device,
    /// ONNX Runtime library (else `ORT_DYLIB_PATH`).
    pub ort_lib: Option<std::path::PathBuf>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            threads: None,
            device: Device::Cpu,
            ort_lib: None,
        }
    }
}

impl BackendKind {
    /// The backends this build has, in the order `bench` compares them.
    pub fn compiled() -> Vec<BackendKind> {
        let mut kinds = vec![BackendKind::Native];
        if cfg!(feature = "tract") {
            kinds.push(BackendKind::Tract);
        }
        if cfg!(feature = "ort") {
            kinds.push(BackendKind::Ort);
        }
        kinds
    }
}

/// Opens a backend for a model.
pub fn open(
    kind: BackendKind,
    model: &Model,
    opts: &BackendOptions,
) -> anyhow::Result<Box<dyn Backend>> {
    if kind != BackendKind::Ort && opts.device != Device::Cpu {
        bail!("--device {:?} needs --backend ort", opts.device);
    }
    match kind {
        BackendKind::Native => Ok(Box::new(native::Native::new(model, opts)?)),
        #[cfg(feature = "tract")]
        BackendKind::Tract => Ok(Box::new(tract::Tract::new(model)?)),
        #[cfg(not(feature = "tract"))]
        BackendKind::Tract => {
            bail!("this build has no tract backend: rebuild with --features tract")
        }
        #[cfg(feature = "ort")]
        BackendKind::Ort => Ok(Box::new(ort::Ort::new(model, opts)?)),
        #[cfg(not(feature = "ort"))]
        BackendKind::Ort => {
            bail!("this build has no ONNX Runtime backend: rebuild with --features ort")
        }
    }
}
