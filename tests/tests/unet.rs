//! The U-Net end to end: a short mf-train run, exported in fp32, fp16 and int8 through the same
//! traced path as every network (each checked against mf-train's forward inside the exporter),
//! run in tract, ONNX Runtime and the native engine through mf-edge, and sampled in one step;
//! the compact format refuses it with a clear error.
mod common;

use mf_core::card::CARD_KEY;
use mf_export::{Target, export};
use prost::Message;
use tract_onnx::pb;

#[test]
fn a_trained_unet_exports_runs_in_tract_and_onnx_runtime_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(common::train(common::UNET_CONFIG, &run).is_finite());

    let [fp32, fp16, int8] = common::export_three(&run, dir.path(), "unet");
    // QDQ around every Conv and MatMul with constant weights.
    let q = pb::ModelProto::decode(std::fs::read(&int8).unwrap().as_slice()).unwrap();
    let q = q.graph.unwrap();
    let producer = |name: &str| {
        q.node
            .iter()
            .find(|n| n.output.iter().any(|o| o == name))
            .map(|n| n.op_type.as_str())
    };
    let layers: Vec<_> = q
        .node
        .iter()
        .filter(|n| n.op_type == "Conv" || n.op_type == "MatMul")
        .collect();
    assert!(layers.len() >= 15, "{} layers", layers.len());
    for layer in layers {
        assert_eq!(
            producer(&layer.input[0]),
            Some("DequantizeLinear"),
            "{}",
            layer.name
        );
        assert_eq!(
            producer(&layer.input[1]),
            Some("DequantizeLinear"),
            "{}",
            layer.name
        );
    }
    let (s32, s16) = (
        std::fs::metadata(&fp32).unwrap().len(),
        std::fs::metadata(&fp16).unwrap().len(),
    );
    // Embedding tables, biases and norms stay float32: a bit over half the size at this width.
    assert!(s16 < s32 * 3 / 4, "fp16 {s16} B vs fp32 {s32} B");
    let half = pb::ModelProto::decode(std::fs::read(&fp16).unwrap().as_slice()).unwrap();
    let half = half.graph.unwrap();
    let weighted = half
        .node
        .iter()
        .filter(|n| n.op_type == "Conv" || n.op_type == "MatMul")
        .count();
    let f16 = half
        .initializer
        .iter()
        .filter(|t| t.data_type == pb::tensor_proto::DataType::Float16 as i32)
        .count();
    assert_eq!(f16, weighted, "one float16 weight per Conv and MatMul");

    // The graph uses the ops the module docs name, and carries its card.
    let proto = pb::ModelProto::decode(std::fs::read(&fp32).unwrap().as_slice()).unwrap();
    let ops: std::collections::BTreeSet<_> = proto
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    for op in [
        "Conv",
        "InstanceNormalization",
        "Expand",
        "Concat",
        "Sigmoid",
    ] {
        assert!(ops.contains(op), "no {op} in {ops:?}");
    }
    assert!(proto.metadata_props.iter().any(|p| p.key == CARD_KEY));

    // int8: an activation on a rounding boundary may take the neighbouring code in one runtime
    // (float sums in another order), which moves the output by a step of that layer's scale.
    // The native engine runs all three: convolutions packed (int8 with int32 biases and
    // output codes in the int8 file), GroupNorm as InstanceNormalization + Mul/Add, Expand.
    for (path, tol) in [(&fp32, 1e-4), (&fp16, 1e-4), (&int8, 5e-3)] {
        common::check_image_network(path, tol, "unet", None);
    }

    let out = dir.path().join("no.mfc");
    let err = export(&common::options(&run, Target::Compact, &out)).unwrap_err();
    assert!(format!("{err:#}").contains("Conv"), "{err:#}");
    assert!(!out.exists());
}
