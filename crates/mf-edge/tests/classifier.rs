//! The reference classifier's metadata is checked against what its graph computes: a file
//! whose metadata promises more features or classes than the graph outputs, or impossible
//! sizes, is an error naming the mismatch, never a panic.
use std::path::Path;

use mf_core::onnx as pb;
use mf_edge::eval::{CLASSIFIER_KEY, Classifier};
use prost::Message;

const SHIPPED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/mnist-classifier.onnx"
);

/// What an error must name, and how the metadata is edited to provoke it.
type Edit = (&'static str, fn(&mut serde_json::Value));

/// The shipped classifier with its metadata JSON edited by `edit`, written to `dir`.
fn edited(dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> std::path::PathBuf {
    let bytes = std::fs::read(SHIPPED).unwrap();
    let mut proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let meta = proto
        .metadata_props
        .iter_mut()
        .find(|p| p.key == CLASSIFIER_KEY)
        .unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&meta.value).unwrap();
    edit(&mut json);
    meta.value = json.to_string();
    let path = dir.join("edited.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    path
}

#[test]
fn the_shipped_classifier_classifies() {
    let classifier = Classifier::open(Path::new(SHIPPED)).unwrap();
    let (features, predicted) = classifier.classify(&vec![-1.0; 3 * 784]).unwrap();
    assert_eq!(features.len(), 3 * classifier.features());
    assert_eq!(predicted.len(), 3);
}

#[test]
fn metadata_wider_than_the_graph_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited(dir.path(), |m| m["features"] = 1000.into());
    let classifier = Classifier::open(&path).unwrap();
    let err = classifier.classify(&vec![0.0; 784]).unwrap_err();
    assert!(format!("{err:#}").contains("1000 features"), "{err:#}");
}

#[test]
fn impossible_metadata_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [Edit; 4] = [
        ("sample shape", |m| {
            m["sample_shape"] = serde_json::json!([0, 28, 28])
        }),
        ("sample shape", |m| {
            m["sample_shape"] = serde_json::json!([4294967296u64, 4294967296u64, 2])
        }),
        ("features", |m| m["features"] = 0.into()),
        ("class names", |m| m["class_names"] = serde_json::json!([])),
    ];
    for (needle, edit) in cases {
        let path = edited(dir.path(), edit);
        let err = Classifier::open(&path).err().expect("refused");
        assert!(format!("{err:#}").contains(needle), "{needle}: {err:#}");
    }
}
