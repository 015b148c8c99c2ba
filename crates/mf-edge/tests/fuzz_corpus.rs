//! Replays the `load_model` fuzz corpus (and its seeds) through the loader and the native
//! engine's compiler, as the fuzz target does: every input gives a model or an error, never a
//! panic. The seeds are real exported models, so they must also load and compile.
use std::path::{Path, PathBuf};

use mf_edge::model::Model;
use mf_edge::native::NativeEngine;
use mf_kernels::Isa;

const FUZZ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

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
    assert!(seeds.len() >= 3, "fp32, fp16 and int8 seeds");
    for path in seeds {
        let model = Model::open(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        NativeEngine::new(&model, Isa::Scalar)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    }
}

#[test]
fn corpus_inputs_give_a_model_or_an_error() {
    let corpus = files(&Path::new(FUZZ).join("corpus/load_model"));
    assert!(!corpus.is_empty(), "the corpus is checked in");
    let (mut loaded, mut rejected) = (0, 0);
    for path in &corpus {
        let bytes = std::fs::read(path).unwrap();
        match Model::from_bytes(bytes) {
            Ok(model) => {
                loaded += 1;
                if let Err(e) = NativeEngine::new(&model, Isa::Scalar) {
                    assert!(!format!("{e:#}").is_empty(), "{}", path.display());
                }
            }
            Err(e) => {
                rejected += 1;
                assert!(!format!("{e:#}").is_empty(), "{}", path.display());
            }
        }
    }
    println!(
        "{} corpus inputs: {loaded} loaded, {rejected} rejected with an error",
        corpus.len()
    );
}

/// The first fuzz finding: a node whose output list is empty made the compiler index past
/// the end while fusing; now it is an error that names the node.
#[test]
fn a_node_without_output_is_named_not_a_panic() {
    use prost::Message;
    use tract_onnx::pb;

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
