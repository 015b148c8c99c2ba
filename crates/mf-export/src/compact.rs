//! Writes the compact all-int8 model format of `mf_core::compact` for the firmware.
use mf_core::compact::{HEADER, MAGIC, VERSION, fnv1a};
use mf_kernels::QuantParams;
use mf_train::config::ObjectiveKind;
use mf_train::model::{Prediction, T_FLOOR};

use crate::graph::quantize_layer;
use crate::weights::MlpWeights;

/// Encodes an MLP with every layer int8, its inputs quantized with `inputs[i]`.
pub fn encode(weights: &MlpWeights, inputs: &[QuantParams]) -> anyhow::Result<Vec<u8>> {
    let spec = &weights.spec;
    anyhow::ensure!(
        spec.sample_shape.len() == 3,
        "the compact format holds image models"
    );
    anyhow::ensure!(
        inputs.len() == weights.layers.len(),
        "one input quantization per layer"
    );
    let u16 = |v: usize, what: &str| -> anyhow::Result<[u8; 2]> {
        Ok(u16::try_from(v)
            .map_err(|_| anyhow::anyhow!("{what} {v} does not fit the compact format"))?
            .to_le_bytes())
    };
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&u16(weights.layers.len(), "layer count")?);
    for &d in &spec.sample_shape {
        out.extend_from_slice(&u16(d, "sample dimension")?);
    }
    out.extend_from_slice(&u16(spec.classes, "class count")?);
    out.extend_from_slice(&u16(spec.class_dim, "class embedding size")?);
    out.extend_from_slice(&u16(weights.frequencies.len(), "time embedding size")?);
    out.push(u8::from(spec.prediction == Prediction::X));
    out.push(u8::from(spec.objective == ObjectiveKind::FlowMatching));
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(T_FLOOR as f32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // payload length, filled below
    debug_assert_eq!(out.len(), HEADER);
    let f32s = |out: &mut Vec<u8>, v: &[f32]| {
        v.iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
    };
    f32s(&mut out, &weights.frequencies);
    f32s(&mut out, &weights.class_table);
    let last = weights.layers.len() - 1;
    for (i, (layer, input)) in weights.layers.iter().zip(inputs).enumerate() {
        let (codes, scales) = quantize_layer(layer);
        out.extend_from_slice(&u16(layer.n, "layer width")?);
        out.extend_from_slice(&u16(layer.k, "layer width")?);
        out.push(u8::from(i < last));
        out.push(input.zero_point);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&input.scale.to_le_bytes());
        f32s(&mut out, &scales);
        f32s(&mut out, &layer.bias);
        out.extend(codes.iter().map(|&c| c as u8));
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    let payload = (out.len() - HEADER) as u32;
    out[28..32].copy_from_slice(&payload.to_le_bytes());
    let checksum = fnv1a(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    Ok(out)
}
