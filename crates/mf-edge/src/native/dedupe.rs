//! Common subexpressions: a node with the same op, inputs and attributes as an earlier one
//! computes the same value, so its readers read the earlier node's output and it is dropped
//! (the DiT applies SiLU to its conditioning vector in every block's modulation, the same
//! value each time: four of five Sigmoid and Mul pairs go).
use std::collections::HashMap;

use mf_core::onnx;

/// `graph` with every duplicate node merged into its first occurrence, or `None` when it has
/// none. A node is a duplicate when it has one output, which is not a graph output, and an
/// earlier node has the same op type, domain, inputs (after earlier merges) and attributes.
pub(super) fn merge_duplicates(graph: &onnx::GraphProto) -> Option<onnx::GraphProto> {
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    // Kept nodes by op type, domain and inputs (attributes compared among these).
    let mut first: HashMap<(String, String, Vec<String>), Vec<usize>> = HashMap::new();
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut kept: Vec<onnx::NodeProto> = Vec::with_capacity(graph.node.len());
    for node in &graph.node {
        let mut node = node.clone();
        for input in &mut node.input {
            if let Some(name) = renamed.get(input) {
                *input = name.clone();
            }
        }
        let key = (
            node.op_type.clone(),
            node.domain.clone(),
            node.input.clone(),
        );
        let mergeable = node.output.len() == 1
            && !node.input.is_empty()
            && !outputs.contains(&node.output[0].as_str());
        let earlier = first
            .get(&key)
            .and_then(|seen| seen.iter().find(|&&k| kept[k].attribute == node.attribute));
        match earlier {
            Some(&k) if mergeable => {
                renamed.insert(node.output[0].clone(), kept[k].output[0].clone());
            }
            _ => {
                first.entry(key).or_default().push(kept.len());
                kept.push(node);
            }
        }
    }
    (!renamed.is_empty()).then(|| onnx::GraphProto {
        node: kept,
        ..graph.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::NativeEngine;
    use crate::native::tests::{info, op, run_nodes};
    use crate::tensor::Value;
    use mf_kernels::Isa;

    #[test]
    fn a_repeated_computation_runs_once_with_the_same_result() {
        let transpose = |name: &str, perm: &[i64]| {
            let mut node = op("Transpose", &["x"], name);
            node.attribute = vec![onnx::AttributeProto {
                name: "perm".into(),
                r#type: onnx::AttributeType::Ints as i32,
                ints: perm.to_vec(),
                ..Default::default()
            }];
            node
        };
        let graph = onnx::GraphProto {
            node: vec![
                // SiLU of x three times: the second and third merge into the first.
                op("Sigmoid", &["x"], "s0"),
                op("Mul", &["x", "s0"], "silu0"),
                op("Sigmoid", &["x"], "s1"),
                op("Mul", &["x", "s1"], "silu1"),
                op("Sigmoid", &["x"], "s2"),
                op("Mul", &["s2", "x"], "silu2"),
                // Same input, other attributes: both stay.
                transpose("t0", &[1, 0]),
                transpose("t1", &[0, 1]),
                op("Add", &["silu0", "silu1"], "a"),
                op("Add", &["a", "silu2"], "b"),
                op("Add", &["t0", "t1"], "c"),
                op("Add", &["b", "c"], "y"),
            ],
            input: vec![info("x")],
            output: vec![info("y")],
            ..Default::default()
        };
        let merged = merge_duplicates(&graph).expect("duplicates merged");
        let ops: Vec<&str> = merged.node.iter().map(|n| n.output[0].as_str()).collect();
        // silu2 multiplies its operands in the other order: not the same node.
        assert_eq!(
            ops,
            ["s0", "silu0", "silu2", "t0", "t1", "a", "b", "c", "y"]
        );
        assert_eq!(merged.node[2].input, ["s0", "x"]);
        assert_eq!(merged.node[5].input, ["silu0", "silu0"]);
        let x = Value::F32(
            (0..16).map(|i| i as f32 * 0.37 - 2.5).collect(),
            smallvec::smallvec![4, 4],
        );
        let engine = NativeEngine::from_graph(&graph, Isa::detect()).unwrap();
        let got = engine.run(vec![("x", x.clone())]).unwrap();
        assert_eq!(got, run_nodes(&graph, &[("x", &x)]));
        // A graph output is never merged away.
        let mut outputs = graph.clone();
        outputs.output = vec![info("silu1")];
        outputs.node.truncate(4);
        assert!(merge_duplicates(&outputs).is_some_and(|g| g.node.len() == 3));
        assert!(merge_duplicates(&merged).is_none());
    }
}
