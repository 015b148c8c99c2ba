//! Exports the reference classifier (`mf-train classifier`) to ONNX, so that `mf-edge eval`
//! can measure sample quality on any device: input `image` `[N, C, H, W]`, output `scores`
//! `[N, features + classes]` (penultimate features, then logits).
use std::path::Path;

use anyhow::ensure;
use mf_core::noise::Noise;
use mf_core::onnx;
use mf_train::burn::prelude::*;
use mf_train::classifier;
use prost::Message;

use crate::check::relative_error;

/// The metadata key holding the classifier's description (JSON).
pub const CLASSIFIER_KEY: &str = "meanflow.classifier";

/// Traces the classifier graph from a classifier run folder and checks it in tract against
/// the classifier's own forward.
pub fn export(run: &Path) -> anyhow::Result<Vec<u8>> {
    let device = Device::flex();
    let (model, info) = classifier::load(run, &device)?;
    let dims: usize = info.sample_shape.iter().product();
    let n = 8;
    let mut x = vec![0f32; n * dims];
    Noise::new(0xC1A5).fill(&mut x);
    let image = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, dims]), &device);
    let mut traced = model.trace(image.clone(), &info.sample_shape)?.model;
    let meta = serde_json::json!({
        "dataset": info.dataset,
        "arch": info.arch,
        "sample_shape": info.sample_shape,
        "class_names": info.class_names,
        "features": model.features(),
        "held_out_accuracy": info.held_out_accuracy,
    });
    traced.metadata_props.push(onnx::StringStringEntryProto {
        key: CLASSIFIER_KEY.into(),
        value: meta.to_string(),
    });
    traced.producer_name = "mf-export".into();
    let bytes = traced.encode_to_vec();
    let (features, logits) = model.forward(image);
    let want: Vec<f32> = Tensor::cat(vec![features, logits], 1)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 scores");
    let got = run_classifier(&bytes, &x, n, &info.sample_shape)?;
    let err = relative_error(&got, &want);
    ensure!(
        err <= 1e-5,
        "the classifier graph differs from its forward by {err:.2e} (> 1e-5); nothing written"
    );
    Ok(bytes)
}

/// Runs the classifier graph in tract.
fn run_classifier(bytes: &[u8], x: &[f32], n: usize, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
    use tract_onnx::prelude::*;
    let dims: Vec<usize> = std::iter::once(n).chain(shape.iter().copied()).collect();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))?
        .with_input_fact(0, f32::fact(&dims).into())?
        .into_optimized()?
        .into_runnable()?;
    let input = tract_ndarray::ArrayD::from_shape_vec(dims, x.to_vec())?;
    let out = plan.run(tvec!(Tensor::from(input).into()))?;
    Ok(out[0]
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect())
}
