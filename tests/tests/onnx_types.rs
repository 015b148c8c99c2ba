//! The runtime reads models with its own ONNX protobuf declarations (`mf_core::onnx`), so that
//! a device build needs no tract. They must decode every shipped model exactly as tract's
//! generated types (from the official `onnx.proto`) do: every node, attribute, initializer,
//! input, output and metadata entry.
use mf_core::onnx;
use prost::Message;
use tract_onnx::pb;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");

/// The fields the runtime reads, as plain values, so both decodings can be compared.
#[derive(Debug, PartialEq)]
struct Summary {
    ir_version: i64,
    opsets: Vec<(String, i64)>,
    metadata: Vec<(String, String)>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    nodes: Vec<Node>,
    initializers: Vec<Initializer>,
}

/// An attribute: name, type, i, f (bits), s, ints, floats (bits).
type Attr = (String, i32, i64, u32, Vec<u8>, Vec<i64>, Vec<u32>);
/// A node: op, name, inputs, outputs, attributes.
type Node = (String, String, Vec<String>, Vec<String>, Vec<Attr>);
/// An initializer: name, dims, type, raw data, float data, int64 data.
type Initializer = (String, Vec<i64>, i32, Vec<u8>, Vec<f32>, Vec<i64>);

/// Summarizes a decoded model; both message families have the same field names, so one
/// body serves both.
macro_rules! summary {
    ($model:expr) => {{
        let m = $model;
        let g = m.graph.unwrap();
        Summary {
            ir_version: m.ir_version,
            opsets: m
                .opset_import
                .iter()
                .map(|o| (o.domain.clone(), o.version))
                .collect(),
            metadata: m
                .metadata_props
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect(),
            inputs: g.input.iter().map(|v| v.name.clone()).collect(),
            outputs: g.output.iter().map(|v| v.name.clone()).collect(),
            nodes: g
                .node
                .iter()
                .map(|n| {
                    let attrs = n
                        .attribute
                        .iter()
                        .map(|a| {
                            let floats = a.floats.iter().map(|f| f.to_bits()).collect();
                            let f = a.f.to_bits();
                            (
                                a.name.clone(),
                                a.r#type,
                                a.i,
                                f,
                                a.s.clone(),
                                a.ints.clone(),
                                floats,
                            )
                        })
                        .collect();
                    (
                        n.op_type.clone(),
                        n.name.clone(),
                        n.input.clone(),
                        n.output.clone(),
                        attrs,
                    )
                })
                .collect(),
            initializers: g
                .initializer
                .iter()
                .map(|t| {
                    let (raw, floats, ints) = (
                        t.raw_data.clone(),
                        t.float_data.clone(),
                        t.int64_data.clone(),
                    );
                    (
                        t.name.clone(),
                        t.dims.clone(),
                        t.data_type,
                        raw,
                        floats,
                        ints,
                    )
                })
                .collect(),
        }
    }};
}

fn ours(bytes: &[u8]) -> Summary {
    summary!(onnx::ModelProto::decode(bytes).unwrap())
}

fn tracts(bytes: &[u8]) -> Summary {
    summary!(pb::ModelProto::decode(bytes).unwrap())
}

#[test]
fn every_shipped_model_decodes_as_tract_decodes_it() {
    let mut checked = 0;
    for entry in std::fs::read_dir(MODELS).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let (a, b) = (ours(&bytes), tracts(&bytes));
        assert!(
            !a.nodes.is_empty() && !a.initializers.is_empty(),
            "{}",
            path.display()
        );
        assert!(
            a.nodes.iter().any(|n| !n.4.is_empty()),
            "{}: no attributes seen",
            path.display()
        );
        assert_eq!(a, b, "{}", path.display());
        checked += 1;
    }
    assert!(
        checked >= 5,
        "only {checked} shipped models found in {MODELS}"
    );
}

#[test]
fn a_model_written_with_our_types_reads_back_in_tract() {
    let bytes = std::fs::read(format!("{MODELS}/mnist-int8.onnx")).unwrap();
    let ours_again = onnx::ModelProto::decode(bytes.as_slice())
        .unwrap()
        .encode_to_vec();
    assert_eq!(tracts(&ours_again), tracts(&bytes));
}
