//! Exports the reference classifier (`mf-train classifier`) to ONNX, so that `mf-edge eval`
//! can measure sample quality on any device: input `image` `[N, C, H, W]`, output `scores`
//! `[N, features + classes]` (penultimate features, then logits).
use std::path::Path;

use mf_train::burn::prelude::*;
use mf_train::classifier::{self, HIDDEN};

use crate::onnx::{Attr, Dim, Elem, Graph};

/// The metadata key holding the classifier's description (JSON).
pub const CLASSIFIER_KEY: &str = "meanflow.classifier";

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 weights")
}

/// Builds the classifier graph from a classifier run folder.
pub fn export(run: &Path) -> anyhow::Result<Vec<u8>> {
    let (model, info) = classifier::load(run, &Device::flex())?;
    let dims: usize = info.sample_shape.iter().product();
    let mut g = Graph::default();
    let shape: Vec<Dim> = std::iter::once(Dim::Batch)
        .chain(info.sample_shape.iter().map(|&d| Dim::Fixed(d)))
        .collect();
    let image = g.input("image", Elem::F32, &shape);
    let flat = g.i64s("flat_shape", &[2], &[-1, dims as i64]);
    let mut x = g.node("Reshape", &[&image, &flat], "flat", &[]);
    let mut features = String::new();
    let last = model.layers.len() - 1;
    for (i, layer) in model.layers.iter().enumerate() {
        let w = layer.weight.val();
        let [k, n] = w.dims();
        let w = g.f32s(&format!("layers.{i}.weight"), &[k, n], &floats(w));
        let b = g.f32s(
            &format!("layers.{i}.bias"),
            &[n],
            &floats(layer.bias.as_ref().expect("bias").val()),
        );
        let y = g.node("MatMul", &[&x, &w], &format!("layers.{i}.matmul"), &[]);
        x = g.node("Add", &[&y, &b], &format!("layers.{i}.out"), &[]);
        if i < last {
            let s = g.node("Sigmoid", &[&x], &format!("layers.{i}.sigmoid"), &[]);
            x = g.node("Mul", &[&x, &s], &format!("layers.{i}.silu"), &[]);
            features = x.clone();
        }
    }
    let scores = g.node(
        "Concat",
        &[&features, &x],
        "scores_out",
        &[("axis", Attr::Int(1))],
    );
    let width = HIDDEN[HIDDEN.len() - 1] + info.class_names.len();
    g.output(
        &scores,
        "scores",
        Elem::F32,
        &[Dim::Batch, Dim::Fixed(width)],
    );
    let meta = serde_json::json!({
        "dataset": info.dataset,
        "sample_shape": info.sample_shape,
        "class_names": info.class_names,
        "features": HIDDEN[HIDDEN.len() - 1],
        "held_out_accuracy": info.held_out_accuracy,
    });
    Ok(g.encode("classifier", &[(CLASSIFIER_KEY, meta.to_string())]))
}
