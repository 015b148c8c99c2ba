//! The DiT end to end through the one export path every network takes (no DiT-specific export
//! code): a short mf-train run, exported in fp32, fp16 and int8 (each checked against mf-train's
//! forward inside the exporter), run in tract and ONNX Runtime through mf-edge and sampled in
//! one step, and in the native engine.
mod common;

use std::collections::BTreeSet;

use prost::Message;
use tract_onnx::pb;

fn graph(path: &std::path::Path) -> pb::GraphProto {
    let proto = pb::ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    proto.graph.unwrap()
}

#[test]
fn a_trained_dit_exports_runs_in_tract_and_onnx_runtime_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(common::train(common::DIT_CONFIG, &run).is_finite());

    let [fp32, fp16, int8] = common::export_three(&run, dir.path(), "dit");

    // The transformer's ops are in the graph.
    let g32 = graph(&fp32);
    let ops: BTreeSet<_> = g32.node.iter().map(|n| n.op_type.as_str()).collect();
    for op in [
        "Conv",
        "LayerNormalization",
        "Softmax",
        "Tanh",
        "Transpose",
        "Slice",
        "Gather",
    ] {
        assert!(ops.contains(op), "no {op} in {ops:?}");
    }
    // int8: QDQ on every MatMul with a weight; attention's two MatMuls of activations stay
    // float (Q·Kᵀ and P·V: two per block).
    let q = graph(&int8);
    let producer = |name: &str| {
        q.node
            .iter()
            .find(|n| n.output.iter().any(|o| o == name))
            .map(|n| n.op_type.as_str())
    };
    let weights: BTreeSet<_> = q.initializer.iter().map(|t| t.name.as_str()).collect();
    let (mut quantized, mut float) = (0, 0);
    for node in q
        .node
        .iter()
        .filter(|n| n.op_type == "MatMul" || n.op_type == "Conv")
    {
        match producer(&node.input[1]) {
            Some("DequantizeLinear") => {
                assert_eq!(
                    producer(&node.input[0]),
                    Some("DequantizeLinear"),
                    "{}",
                    node.name
                );
                quantized += 1;
            }
            _ => {
                assert!(!weights.contains(node.input[1].as_str()), "{}", node.name);
                float += 1;
            }
        }
    }
    // Per block: qkv, proj, fc1, fc2, modulation; plus patch conv, 2 × 2 embedder layers and
    // the final modulation and linear.
    assert_eq!(quantized, 2 * 5 + 1 + 4 + 2);
    assert_eq!(float, 2 * 2);

    // int8: an activation on a rounding boundary may take the neighbouring code in one runtime
    // (float sums in another order), which moves the output by a step of that layer's scale.
    // The native engine runs all three (batched MatMul, Softmax, LayerNormalization,
    // Transpose, Slice; the patch conv packed, int8 with its int32 bias, in the int8 file).
    for (path, tol) in [(&fp32, 1e-4), (&fp16, 1e-4), (&int8, 5e-3)] {
        common::check_image_network(path, tol, "dit", None);
    }
}
