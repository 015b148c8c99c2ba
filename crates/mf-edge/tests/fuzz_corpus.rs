//! Replays every fuzz target's corpus through the target's own function (`fuzz/harness.rs`,
//! shared with the fuzzer): every input gives a result or an error, never a panic. The seeds
//! are real exported models, so they must also load and compile.
use std::path::{Path, PathBuf};

#[path = "../fuzz/harness.rs"]
mod harness;

use mf_edge::model::Model;
use mf_edge::native::NativeEngine;
use mf_kernels::Isa;

const FUZZ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

/// A fuzz target: its name (the corpus folder) and what it does with one input.
type Target = (&'static str, fn(&[u8]));

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn seeds_are_real_models_that_compile() {
    let seeds = files(&Path::new(FUZZ).join("seeds"));
    let (onnx, compact): (Vec<_>, Vec<_>) = seeds
        .into_iter()
        .partition(|p| p.extension().is_some_and(|e| e == "onnx"));
    assert!(onnx.len() >= 3, "fp32, fp16 and int8 seeds");
    for path in onnx {
        let model = Model::open(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        NativeEngine::new(&model, Isa::Scalar)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    }
    assert!(!compact.is_empty(), "a compact model seed");
    for path in compact {
        let bytes = std::fs::read(&path).unwrap();
        mf_core::compact::CompactModel::parse(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    }
}

/// Each fuzz target's corpus (what the fuzzer kept, and every finding) replayed through the
/// target's own function; a panic fails the test.
#[test]
fn every_corpus_replays_without_a_panic() {
    let targets: [Target; 6] = [
        ("load_model", harness::load_model),
        ("run_model", harness::run_model),
        ("single_op", harness::single_op),
        ("compact", harness::compact),
        ("card", harness::card),
        ("stream", harness::stream),
    ];
    for (target, run) in targets {
        let corpus = files(&Path::new(FUZZ).join("corpus").join(target));
        assert!(!corpus.is_empty(), "the {target} corpus is checked in");
        for path in &corpus {
            let bytes = std::fs::read(path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
        }
        println!("{target}: {} inputs replayed", corpus.len());
    }
}

/// The first fuzz finding: a node whose output list is empty made the compiler index past
/// the end while fusing; now it is an error that names the node.
#[test]
fn a_node_without_output_is_named_not_a_panic() {
    use mf_core::onnx as pb;
    use prost::Message;

    let bytes = std::fs::read(Path::new(FUZZ).join("seeds/checkerboard-int8.onnx")).unwrap();
    let mut proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let add = graph
        .node
        .iter_mut()
        .find(|n| n.output.first().is_some_and(|o| o == "layers.0.out"))
        .expect("the seed has a bias Add");
    add.output.clear();
    let model = Model::from_bytes(proto.encode_to_vec()).unwrap();
    let err = NativeEngine::new(&model, Isa::Scalar)
        .err()
        .expect("an error");
    assert!(format!("{err:#}").contains("has no output"), "{err:#}");
}
