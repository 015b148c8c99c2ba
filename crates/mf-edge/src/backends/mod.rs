//! The backends behind one trait: the native engine, tract, and ONNX Runtime.
mod native;
#[cfg(feature = "ort")]
mod ort;
mod tract;

use anyhow::bail;

use crate::model::Model;

/// One batch of network inputs.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Samples `[n, dims...]`, row-major.
    pub z: Vec<f32>,
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
    /// t per sample.
    pub t: Vec<f32>,
    /// r per sample.
    pub r: Vec<f32>,
    /// Class per sample.
    pub class: Vec<i64>,
}

impl Inputs {
    /// Batch size.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// Shape of z with the batch first.
    pub fn z_shape(&self) -> Vec<usize> {
        std::iter::once(self.len())
            .chain(self.sample_shape.iter().copied())
            .collect()
    }
}

/// Runs a model: u(z, r, t | class).
pub trait Backend {
    /// A short description (backend and device or kernel).
    fn describe(&self) -> String;
    /// u for a batch, flattened like z.
    fn run(&mut self, inputs: &Inputs) -> anyhow::Result<Vec<f32>>;
}

/// Which backend.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// mf-kernels (int8 and fp32 GEMMs), the default.
    Native,
    /// tract (pure Rust).
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
        BackendKind::Tract => Ok(Box::new(tract::Tract::new(model)?)),
        #[cfg(feature = "ort")]
        BackendKind::Ort => Ok(Box::new(ort::Ort::new(model, opts)?)),
        #[cfg(not(feature = "ort"))]
        BackendKind::Ort => {
            bail!("this build has no ONNX Runtime backend: rebuild with --features ort")
        }
    }
}
