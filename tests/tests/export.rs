//! mf-export end to end: each precision is checked against mf-train inside the exporter; here
//! the files must also load and agree in ONNX Runtime, keep the QDQ pattern, carry their card,
//! and bad input must leave no file behind.
mod common;

use mf_core::card::{CARD_KEY, ModelCard};
use mf_edge::backends::{self, BackendKind, BackendOptions, Batch};
use mf_edge::model::Model;
use mf_export::{Target, export};
use prost::Message;
use tract_onnx::pb;

fn batch(model: &Model) -> Batch {
    let card = &model.card;
    let n = 6;
    let mut z = vec![0f32; n * card.dims()];
    mf_core::noise::Noise::new(5).fill(&mut z);
    Batch {
        z,
        sample_shape: card.sample_shape.clone(),
        t: vec![1.0, 1.0, 0.5, 0.8, 0.3, 1.0],
        r: vec![0.0, 0.5, 0.0, 0.1, 0.3, 0.0],
        class: vec![0, 3, 7, 10, 9, 2],
    }
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn every_precision_runs_in_onnx_runtime_and_agrees_with_tract() {
    let f = common::fixture();
    let opts = BackendOptions {
        ort_lib: Some(common::ort_library()),
        ..Default::default()
    };
    for (path, tol) in [
        (&f.fp32, 1e-5),
        (&f.fp16, 1e-2),
        (&f.int8, 1e-3),
        (&f.int8_w7, 1e-3),
    ] {
        let model = Model::open(path).unwrap();
        let inputs = batch(&model);
        let tract = backends::open(BackendKind::Tract, &model, &opts)
            .unwrap()
            .run(&inputs)
            .unwrap();
        let ort = backends::open(BackendKind::Ort, &model, &opts)
            .unwrap()
            .run(&inputs)
            .unwrap();
        let err = max_rel(&ort, &tract);
        assert!(
            err <= tol,
            "{}: ORT vs tract relative error {err:e}",
            path.display()
        );
    }
}

#[test]
fn int8_file_keeps_the_qdq_pattern_and_its_card() {
    let f = common::fixture();
    let proto = pb::ModelProto::decode(std::fs::read(&f.int8).unwrap().as_slice()).unwrap();
    let graph = proto.graph.as_ref().unwrap();
    let matmuls: Vec<_> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "MatMul")
        .collect();
    assert_eq!(matmuls.len(), 4);
    let producer = |name: &str| {
        graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == name))
            .unwrap()
    };
    for mm in matmuls {
        let x = producer(&mm.input[0]);
        let w = producer(&mm.input[1]);
        assert_eq!(x.op_type, "DequantizeLinear");
        assert_eq!(producer(&x.input[0]).op_type, "QuantizeLinear");
        assert_eq!(w.op_type, "DequantizeLinear");
        let weights = graph
            .initializer
            .iter()
            .find(|t| t.name == w.input[0])
            .unwrap();
        assert_eq!(weights.data_type, pb::tensor_proto::DataType::Int8 as i32);
    }
    let card = proto
        .metadata_props
        .iter()
        .find(|p| p.key == CARD_KEY)
        .unwrap();
    let card = ModelCard::from_json(&card.value).unwrap();
    assert_eq!(card.precision, "int8");
    assert_eq!(card.null_class, 10);
    assert_eq!(card.sample_shape, vec![1, 28, 28]);
    assert_eq!(card.guidance.omega, 1.5);
    let q = card.quantization.unwrap();
    assert!(q.psnr_db.is_some_and(f64::is_finite) && q.float_layers.is_empty());
}

/// `--weight-bits 7`: every weight code within ±64, each output channel's largest at the edge,
/// and the card says so; the 8-bit file spans ±127.
#[test]
fn seven_bit_weights_span_64_and_the_card_says_so() {
    let f = common::fixture();
    let largest = |path: &std::path::Path| {
        let proto = pb::ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
        let graph = proto.graph.unwrap();
        let codes = graph
            .initializer
            .iter()
            .filter(|t| t.data_type == pb::tensor_proto::DataType::Int8 as i32)
            .flat_map(|t| t.raw_data.iter().map(|&b| (b as i8).unsigned_abs()))
            .max()
            .unwrap();
        let card = proto.metadata_props.iter().find(|p| p.key == CARD_KEY);
        let scheme = ModelCard::from_json(&card.unwrap().value)
            .unwrap()
            .quantization
            .unwrap()
            .scheme;
        (codes, scheme)
    };
    let (seven, scheme) = largest(&f.int8_w7);
    assert_eq!(seven, 64);
    assert!(scheme.contains("[-64, 64]: 7-bit weights"), "{scheme}");
    let (eight, scheme) = largest(&f.int8);
    assert_eq!(eight, 127);
    assert!(scheme.contains("[-127, 127])"), "{scheme}");
}

#[test]
fn fp16_weights_are_half_precision() {
    let f = common::fixture();
    let proto = pb::ModelProto::decode(std::fs::read(&f.fp16).unwrap().as_slice()).unwrap();
    let graph = proto.graph.unwrap();
    let half: Vec<_> = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == pb::tensor_proto::DataType::Float16 as i32)
        .collect();
    assert_eq!(half.len(), 4, "the 4 weight matrices in float16");
    // Each is cast back to float32 right where a MatMul reads it.
    for t in half {
        let cast = graph
            .node
            .iter()
            .find(|n| n.input == [t.name.clone()])
            .unwrap();
        assert_eq!(cast.op_type, "Cast");
        let reader = graph
            .node
            .iter()
            .find(|n| n.input.contains(&cast.output[0]))
            .unwrap();
        assert_eq!(reader.op_type, "MatMul");
    }
    assert!(
        std::fs::metadata(&f.fp16).unwrap().len()
            < std::fs::metadata(&f.fp32).unwrap().len() * 6 / 10
    );
}

#[test]
fn bad_runs_are_clear_errors_and_write_nothing() {
    let f = common::fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.onnx");

    let err = export(&common::options(
        &dir.path().join("missing"),
        Target::Fp32,
        &out,
    ))
    .unwrap_err();
    assert!(format!("{err:#}").contains("no checkpoint"), "{err:#}");

    // A copy of the run with corrupt weights.
    let copy = dir.path().join("run");
    std::fs::create_dir_all(copy.join("checkpoint")).unwrap();
    for file in std::fs::read_dir(f.run.join("checkpoint")).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(
            &file,
            copy.join("checkpoint").join(file.file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::write(copy.join("checkpoint/ema.safetensors"), b"garbage").unwrap();
    let err = export(&common::options(&copy, Target::Fp32, &out)).unwrap_err();
    assert!(format!("{err:#}").contains("ema.safetensors"), "{err:#}");

    // Unknown architecture.
    let state_path = copy.join("checkpoint/state.json");
    let state = std::fs::read_to_string(&state_path).unwrap();
    std::fs::write(
        &state_path,
        state
            .replace("\"arch\":\"mlp\"", "\"arch\":\"transformer\"")
            .replace("\"arch\": \"mlp\"", "\"arch\": \"transformer\""),
    )
    .unwrap();
    let err = export(&common::options(&copy, Target::Fp32, &out)).unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("unknown variant `transformer`, expected one of `mlp`, `unet`, `dit`"),
        "{err:#}"
    );

    // Missing calibration data.
    std::fs::write(
        &state_path,
        state
            .replace("\"root\":null", "\"root\":\"/nonexistent\"")
            .replace("\"root\": null", "\"root\": \"/nonexistent\""),
    )
    .unwrap();
    std::fs::copy(
        f.run.join("checkpoint/ema.safetensors"),
        copy.join("checkpoint/ema.safetensors"),
    )
    .unwrap();
    let err = export(&common::options(&copy, Target::Int8, &out)).unwrap_err();
    assert!(format!("{err:#}").contains("tools/fetch-data"), "{err:#}");

    // 7-bit weights are an int8 export's; the compact format and the float ones refuse them.
    for target in [Target::Compact, Target::Fp16] {
        let seven = mf_export::ExportOptions {
            weight_bits: mf_export::WeightBits::Seven,
            ..common::options(&f.run, target, &out)
        };
        let err = format!("{:#}", export(&seven).unwrap_err());
        assert!(
            err.contains("--weight-bits 7 applies to --precision int8"),
            "{err}"
        );
    }

    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".onnx"))
    );
    assert!(!dir.path().join(".x.onnx.tmp").exists());
}

#[test]
fn int8_below_its_floor_fails_naming_the_layer_and_writes_nothing() {
    let f = common::fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.onnx");
    let mut opts = common::options(&f.run, Target::Int8, &out);
    opts.min_psnr_db = 200.0;
    let err = format!("{:#}", export(&opts).unwrap_err());
    assert!(err.contains("below the floor of 200 dB"), "{err}");
    assert!(
        err.contains("the layer with the largest error is body.layers."),
        "{err}"
    );
    assert!(!out.exists());

    // Layers are kept in float by the names the export lists; a wrong name lists them all.
    opts.min_psnr_db = 20.0;
    opts.float_layers = mf_export::FloatLayers::Named(vec!["body.layers.9".into()]);
    let err = format!("{:#}", export(&opts).unwrap_err());
    assert!(
        err.contains("no layer \"body.layers.9\"") && err.contains("body.layers.0, body.layers.1"),
        "{err}"
    );
    opts.float_layers = mf_export::FloatLayers::Named(vec!["body.layers.3".into()]);
    let report = export(&opts).unwrap();
    let q = report.card.unwrap().quantization.unwrap();
    assert_eq!(q.float_layers, ["body.layers.3 (requested)"]);
    let proto = pb::ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    let graph = proto.graph.unwrap();
    let last = graph
        .node
        .iter()
        .find(|n| n.output[0] == "body.layers.3")
        .unwrap();
    assert_eq!(last.op_type, "MatMul");
    assert!(
        graph.initializer.iter().any(|t| t.name == last.input[1]),
        "a float weight"
    );
}
