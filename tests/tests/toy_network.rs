//! A network nobody wrote export code for: a toy defined here, in the test, from the dual
//! primitives alone (stride-2 convolutions into a dense head, conditioning added per
//! channel), goes through mf-export's one path to fp32, fp16 and int8 ONNX, and each file
//! runs in tract and ONNX Runtime and agrees with the toy's own forward.
mod common;

use mf_core::batch::Batch;
use mf_core::card::{CARD_KEY, ModelCard};
use mf_core::onnx;
use mf_edge::backends::{self, BackendKind, BackendOptions};
use mf_edge::model::Model;
use mf_export::calibrate::Rule;
use mf_export::{FloatLayers, Int8Settings, Network, Target, WeightBits, lower};
use mf_train::burn;
use mf_train::burn::module::Module;
use mf_train::burn::nn::conv::{Conv2d, Conv2dConfig};
use mf_train::burn::nn::{
    Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, Linear, LinearConfig,
};
use mf_train::burn::prelude::*;
use mf_train::config::{DataConfig, ObjectiveKind};
use mf_train::datasets::Dataset;
use mf_train::model::dual::{add_per_channel, conv2d, embedding, group_norm, linear, sinusoidal};
use mf_train::model::{Arch, Dual, NetSpec, Prediction, Traced, Tracer};
use prost::Message;

/// `[N, 784]` → conv 1→8 stride 2 → GroupNorm → SiLU → + cond → conv 8→4 stride 2 →
/// flatten (196) → Linear 784 = u.
#[derive(Module, Debug)]
struct Toy {
    embed: Embedding,
    cond: Linear,
    conv_in: Conv2d,
    norm: GroupNorm,
    conv_out: Conv2d,
    head: Linear,
    #[module(skip)]
    spec: NetSpec,
}

impl Toy {
    fn new(device: &Device) -> Toy {
        let spec = NetSpec {
            arch: Arch::Mlp,
            sample_shape: vec![1, 28, 28],
            classes: 10,
            width: 8,
            depth: 2,
            time_dim: 8,
            time_scale: 1000.0,
            class_dim: 4,
            heads: 0,
            patch: 0,
            mlp_ratio: 0,
            prediction: Prediction::U,
            objective: ObjectiveKind::MeanFlow,
        };
        Toy {
            embed: EmbeddingConfig::new(11, 4).init(device),
            cond: LinearConfig::new(8 + 8 + 4, 8).init(device),
            conv_in: Conv2dConfig::new([1, 8], [3, 3]).init(device),
            norm: GroupNormConfig::new(2, 8).init(device),
            conv_out: Conv2dConfig::new([8, 4], [3, 3]).init(device),
            head: LinearConfig::new(196, 784).init(device),
            spec,
        }
    }

    fn forward(
        &self,
        z: Dual<2>,
        t: Dual<1>,
        r: Dual<1>,
        class: &mf_train::model::Labels,
    ) -> Dual<2> {
        let n = z.value.dims()[0];
        let h = t.clone() - r;
        let cond = Dual::cat(
            vec![
                sinusoidal(t, 8, 1000.0),
                sinusoidal(h, 8, 1000.0),
                embedding(&self.embed, class),
            ],
            1,
        );
        let cond = linear(cond, &self.cond).silu();
        let x = conv2d(z.reshape([n, 1, 28, 28]), &self.conv_in, 2, 1);
        let x = add_per_channel(group_norm(x, &self.norm).silu(), cond);
        let x = conv2d(x, &self.conv_out, 2, 1).silu();
        linear(x.reshape([n, 196]), &self.head)
    }
}

impl Network for Toy {
    fn spec(&self) -> &NetSpec {
        &self.spec
    }

    fn trace_batch(&self, b: &Batch, record: bool) -> anyhow::Result<(Traced, Vec<f32>)> {
        let device = Device::flex();
        let n = b.len();
        let tracer = Tracer::new(self, record);
        let u = self.forward(
            tracer.input(
                "z",
                &b.sample_shape,
                Tensor::from_data(TensorData::new(b.z.clone(), [n, 784]), &device),
            ),
            tracer.scalars(
                "t",
                Tensor::from_data(TensorData::new(b.t.clone(), [n]), &device),
            ),
            tracer.scalars(
                "r",
                Tensor::from_data(TensorData::new(b.r.clone(), [n]), &device),
            ),
            &tracer.labels(
                "class",
                Tensor::from_data(TensorData::new(b.class.clone(), [n]), &device),
            ),
        );
        let value = u
            .value
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        Ok((tracer.finish(u, "u", &b.sample_shape)?, value))
    }
}

#[test]
fn a_toy_network_exports_in_every_precision_through_the_one_path() {
    let toy = Toy::new(&Device::flex());
    let data = Dataset::open(&DataConfig {
        dataset: "mnist".into(),
        root: None,
        image_size: None,
        channels: None,
        couplings: None,
    })
    .unwrap();
    let settings = Int8Settings {
        data: &data,
        samples: 64,
        rule: Rule::MinMax,
        seed: 1,
        float_layers: FloatLayers::None,
        min_psnr_db: 20.0,
        weight_bits: WeightBits::Eight,
    };
    // The fixture's card fits the toy's inputs (MNIST, 10 classes); the runtimes need one.
    let fixture = std::fs::read(&common::fixture().fp32).unwrap();
    let fixture = onnx::ModelProto::decode(fixture.as_slice()).unwrap();
    let card = &fixture
        .metadata_props
        .iter()
        .find(|p| p.key == CARD_KEY)
        .unwrap()
        .value;
    let mut card = ModelCard::from_json(card).unwrap();
    card.architecture = "toy".into();
    card.prediction = "u: the graph outputs the average velocity".into();

    let n = 5;
    let mut z = vec![0f32; n * 784];
    mf_core::noise::Noise::new(21).fill(&mut z);
    let batch = Batch {
        z,
        sample_shape: vec![1, 28, 28],
        t: vec![1.0, 0.5, 0.8, 0.3, 1.0],
        r: vec![0.0, 0.0, 0.1, 0.3, 0.5],
        class: vec![0, 3, 7, 10, 9],
    };
    let (_, reference) = toy.trace_batch(&batch, false).unwrap();
    let spread = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(spread > 0.1, "the toy's output is near zero ({spread})");

    let opts = BackendOptions {
        ort_lib: Some(common::ort_library()),
        ..Default::default()
    };
    for (target, tol) in [
        (Target::Fp32, 1e-4),
        (Target::Fp16, 1e-2),
        (Target::Int8, 5e-2),
    ] {
        let lowered = lower(&toy, target, Some(&settings)).unwrap();
        let mut proto = lowered.model;
        if target == Target::Int8 {
            // Two MatMuls (cond, head) and two Convs read quantized inputs; the Convs also
            // write quantized outputs (and take int32 biases): 6 QuantizeLinear.
            let graph = proto.graph.as_ref().unwrap();
            let quantizers = graph.node.iter().filter(|n| n.op_type == "QuantizeLinear");
            assert_eq!(quantizers.count(), 6);
        }
        proto.metadata_props.push(onnx::StringStringEntryProto {
            key: CARD_KEY.into(),
            value: card.to_json(),
        });
        let model = Model::from_bytes(proto.encode_to_vec()).unwrap();
        for kind in [BackendKind::Tract, BackendKind::Ort] {
            let got = backends::open(kind, &model, &opts)
                .unwrap()
                .run(&batch)
                .unwrap();
            let err = got
                .iter()
                .zip(&reference)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
                / spread;
            assert!(err <= tol, "{target:?} in {kind:?}: relative error {err:e}");
        }
    }
}
