//! mf-edge end to end on freshly exported models: the backends agree, the same seed gives the
//! same image, and bad models are refused with a clear error.
mod common;

use mf_edge::backends::{self, BackendKind, BackendOptions};
use mf_edge::model::Model;
use mf_edge::native::NativeEngine;
use mf_edge::sampler::{generate, paint};
use mf_kernels::Isa;
use prost::Message;
use tract_onnx::pb;

fn opts() -> BackendOptions {
    BackendOptions {
        ort_lib: Some(common::ort_library()),
        ..Default::default()
    }
}

fn samples(path: &std::path::Path, kind: BackendKind, seed: u64) -> Vec<f32> {
    let model = Model::open(path).unwrap();
    let mut backend = backends::open(kind, &model, &opts()).unwrap();
    generate(backend.as_mut(), &model.card, Some(3), 8, seed, 1).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn same_seed_gives_the_same_image_bit_for_bit() {
    let f = common::fixture();
    for path in [&f.fp32, &f.int8] {
        let a = samples(path, BackendKind::Native, 42);
        let b = samples(path, BackendKind::Native, 42);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_ne!(a, samples(path, BackendKind::Native, 43));
    }
}

/// fp32: the three backends agree within 1e-4 (absolute, on values in about [-1, 1]).
#[test]
fn fp32_backends_agree() {
    let f = common::fixture();
    let native = samples(&f.fp32, BackendKind::Native, 7);
    for kind in [BackendKind::Tract, BackendKind::Ort] {
        let other = samples(&f.fp32, kind, 7);
        let err = max_abs(&native, &other);
        assert!(err <= 1e-4, "native vs {kind:?}: {err:e}");
    }
}

/// int8: the same codes up to rounding ties of the float emulations, so close agreement.
#[test]
fn int8_backends_agree() {
    let f = common::fixture();
    let native = samples(&f.int8, BackendKind::Native, 7);
    for kind in [BackendKind::Tract, BackendKind::Ort] {
        let other = samples(&f.int8, kind, 7);
        let err = max_abs(&native, &other);
        assert!(err <= 2e-2, "native vs {kind:?}: {err:e}");
    }
}

#[test]
fn native_engine_fuses_every_layer() {
    let f = common::fixture();
    let int8 = NativeEngine::new(&Model::open(&f.int8).unwrap(), Isa::Scalar)
        .unwrap()
        .summary();
    assert_eq!((int8.int8_layers, int8.f32_layers), (4, 0));
    let fp16 = NativeEngine::new(&Model::open(&f.fp16).unwrap(), Isa::Scalar)
        .unwrap()
        .summary();
    assert_eq!((fp16.int8_layers, fp16.f32_layers), (0, 4));
}

/// Bit for bit, the 8-bit file and the 7-bit one (which AVX2 runs through its `vpmaddubsw`
/// tiles).
#[test]
fn every_kernel_family_gives_the_same_int8_image() {
    let f = common::fixture();
    for path in [&f.int8, &f.int8_w7] {
        every_family_agrees(&Model::open(path).unwrap(), path);
    }
}

fn every_family_agrees(model: &Model, path: &std::path::Path) {
    let run = |isa: Isa| {
        let engine = NativeEngine::new(model, isa).unwrap();
        let n = 4;
        let mut z = vec![0f32; n * 784];
        mf_core::noise::Noise::new(1).fill(&mut z);
        let out = engine
            .run(vec![
                (
                    "z",
                    mf_edge::tensor::Value::F32(z, vec![n, 1, 28, 28].into()),
                ),
                (
                    "t",
                    mf_edge::tensor::Value::F32(vec![1.0; n], vec![n].into()),
                ),
                (
                    "r",
                    mf_edge::tensor::Value::F32(vec![0.0; n], vec![n].into()),
                ),
                (
                    "class",
                    mf_edge::tensor::Value::I64(vec![0, 1, 2, 10], vec![n].into()),
                ),
            ])
            .unwrap();
        out.f32("u").unwrap().0.to_vec()
    };
    let reference = run(Isa::Scalar);
    for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
        let got = run(isa);
        assert!(
            got.iter()
                .zip(&reference)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{isa} differs from scalar on {}",
            path.display()
        );
    }
}

#[test]
fn paint_maps_a_photo_in_one_step() {
    let f = common::fixture();
    let model = Model::open(&f.fp32).unwrap();
    let mut backend = backends::open(BackendKind::Native, &model, &opts()).unwrap();
    let photo: Vec<f32> = (0..784)
        .map(|i| {
            if (i / 28 + i % 28) % 7 == 0 {
                1.0
            } else {
                -1.0
            }
        })
        .collect();
    let art = paint(backend.as_mut(), &model.card, &photo, Some(1), 0.6, 3).unwrap();
    assert_eq!(art.len(), 784);
    assert!(art.iter().all(|v| v.is_finite()));
    assert!(paint(backend.as_mut(), &model.card, &photo, Some(1), 1.5, 3).is_err());
}

#[test]
fn garbled_and_foreign_models_are_refused() {
    let f = common::fixture();
    let err = Model::from_bytes(b"\x08\x96\x01garbage".to_vec())
        .unwrap_err()
        .to_string();
    assert!(err.contains("ONNX"), "{err}");
    let bytes = std::fs::read(&f.fp32).unwrap();
    assert!(Model::from_bytes(bytes[..bytes.len() / 2].to_vec()).is_err());

    // A graph with an op the native engine does not run.
    let mut proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let out = graph.output[0].name.clone();
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.output.contains(&out))
        .unwrap();
    node.op_type = "TopK".into();
    let model = Model::from_bytes(proto.encode_to_vec()).unwrap();
    let err = NativeEngine::new(&model, Isa::Scalar)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unsupported op TopK") && err.contains("--backend tract"),
        "{err}"
    );

    // No card: not written by mf-export.
    let mut proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    proto.metadata_props.clear();
    let err = Model::from_bytes(proto.encode_to_vec())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model card"), "{err}");
}

#[test]
fn class_errors_list_the_valid_range_and_names() {
    let f = common::fixture();
    let card = Model::open(&f.fp32).unwrap().card;
    assert_eq!(card.class_id("7"), Ok(7));
    let err = card.class_id("12").unwrap_err();
    assert!(err.contains("0..10") && err.contains("0, 1, 2"), "{err}");
}

/// One seed, one picture: `mf-train sample` and `mf-edge generate` draw the same noise, so the
/// trained network and its fp32 export give the same samples, for one class and for the
/// one-row-per-class grid (row c drawn from seed + c), in one and two steps.
#[test]
fn mf_train_sample_and_mf_edge_generate_agree_for_one_seed() {
    use mf_train::burn::prelude::Device;
    let f = common::fixture();
    let device = Device::flex();
    let (_, ema) = mf_train::checkpoint::load_ema(&f.run, &device).unwrap();
    let model = Model::open(&f.fp32).unwrap();
    let mut backend = backends::open(BackendKind::Native, &model, &opts()).unwrap();
    for steps in [1, 2] {
        let trained = mf_train::sample::sample_grid(&ema, &[3], 4, steps, 42, &device);
        let edge = generate(backend.as_mut(), &model.card, Some(3), 4, 42, steps).unwrap();
        let err = max_abs(&trained, &edge);
        assert!(err <= 1e-4, "class 3, {steps} steps: {err:e}");

        let classes: Vec<usize> = (0..10).collect();
        let trained = mf_train::sample::sample_grid(&ema, &classes, 2, steps, 9, &device);
        let edge: Vec<f32> = classes
            .iter()
            .flat_map(|&c| {
                generate(
                    backend.as_mut(),
                    &model.card,
                    Some(c),
                    2,
                    9 + c as u64,
                    steps,
                )
                .unwrap()
            })
            .collect();
        let err = max_abs(&trained, &edge);
        assert!(err <= 1e-4, "all classes, {steps} steps: {err:e}");
    }
}

/// A model file whose graph output is not u, or whose u has the wrong size, or whose card
/// promises an impossible sample: an error naming the problem on load or on run, never a panic.
#[test]
fn a_model_with_a_wrong_output_is_an_error_not_a_panic() {
    let f = common::fixture();
    let bytes = std::fs::read(&f.fp32).unwrap();

    let mut proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let old = graph.output[0].name.clone();
    graph.output[0].name = "velocity".into();
    for node in graph.node.iter_mut() {
        for o in node.output.iter_mut().filter(|o| **o == old) {
            *o = "velocity".into();
        }
    }
    let err = Model::from_bytes(proto.encode_to_vec()).unwrap_err();
    assert!(format!("{err:#}").contains("\"velocity\""), "{err:#}");

    // u computed from t: one value per sample instead of 784.
    let mut proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    for node in graph.node.iter_mut() {
        for o in node.output.iter_mut().filter(|o| **o == "u") {
            *o = "unused".into();
        }
    }
    graph.node.push(pb::NodeProto {
        op_type: "Identity".into(),
        name: "short".into(),
        input: vec!["t".into()],
        output: vec!["u".into()],
        ..Default::default()
    });
    let model = Model::from_bytes(proto.encode_to_vec()).unwrap();
    for kind in [BackendKind::Native, BackendKind::Tract, BackendKind::Ort] {
        let mut backend = backends::open(kind, &model, &opts()).unwrap();
        let err = generate(backend.as_mut(), &model.card, Some(1), 2, 1, 1).unwrap_err();
        assert!(
            format!("{err:#}").contains("returned 2 values"),
            "{kind:?}: {err:#}"
        );
        let photo = vec![0.0; 784];
        let err = paint(backend.as_mut(), &model.card, &photo, Some(1), 0.5, 1).unwrap_err();
        assert!(
            format!("{err:#}").contains("returned 1 values"),
            "{kind:?}: {err:#}"
        );
    }

    // A card whose sample shape overflows.
    let mut proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let card = proto
        .metadata_props
        .iter_mut()
        .find(|p| p.key == mf_core::card::CARD_KEY)
        .unwrap();
    card.value = card.value.replace(
        "\"sample_shape\":[1,28,28]",
        "\"sample_shape\":[4294967296,4294967296,16]",
    );
    let err = Model::from_bytes(proto.encode_to_vec()).unwrap_err();
    assert!(format!("{err:#}").contains("sample shape"), "{err:#}");
}
