//! What each fuzz target does with its input, shared by the cargo-fuzz targets
//! (`fuzz_targets/*.rs`) and the corpus replay in the test suite
//! (`crates/mf-edge/tests/fuzz_corpus.rs`), so a replayed finding runs the same code as the
//! fuzzer that found it. Every function must return for every input: an `Err` is a fine
//! answer, a panic, a hang or an out-of-memory is a finding.
use mf_core::card::ModelCard;
use mf_core::compact::{CompactModel, HEADER, Scratch, fnv1a};
use mf_core::onnx;
use mf_edge::backends::{self, BackendKind, BackendOptions};
use mf_edge::model::Model;
use mf_edge::native::NativeEngine;
use mf_edge::ops;
use mf_edge::sampler;
use mf_edge::tensor::Value;
use mf_kernels::Isa;

/// The largest sample the execution targets run (the fuzzer wants many runs a second).
const MAX_RUN_DIMS: usize = 4096;

/// `load_model`: arbitrary bytes into the model loader and the native engine's compiler.
pub fn load_model(data: &[u8]) {
    if let Ok(model) = Model::from_bytes(data.to_vec()) {
        let _ = NativeEngine::new(&model, Isa::Scalar);
    }
}

/// `run_model`: arbitrary bytes loaded, compiled and executed: one- and two-step generation of
/// two samples on the native backend, and one paint, when the model's samples are small.
pub fn run_model(data: &[u8]) {
    let Ok(model) = Model::from_bytes(data.to_vec()) else {
        return;
    };
    if model.card.dims() > MAX_RUN_DIMS {
        return;
    }
    let Ok(mut backend) = backends::open(BackendKind::Native, &model, &BackendOptions::default())
    else {
        return;
    };
    let class = (model.card.classes() > 0).then_some(0);
    for steps in [1, 2] {
        let _ = sampler::generate(backend.as_mut(), &model.card, class, 2, 7, steps);
    }
    let photo = vec![0.25f32; model.card.dims()];
    let _ = sampler::paint(backend.as_mut(), &model.card, &photo, class, 0.5, 7);
}

/// `compact`: arbitrary bytes parsed as a compact (firmware) model as they are, then with the
/// checksum that the header's payload size points at rewritten to match (so that mutations
/// reach the checks behind it), and, when they parse, one generation for the class byte 4
/// names (past the classes too).
pub fn compact(data: &[u8]) {
    let _ = CompactModel::parse(data);
    let mut bytes = data.to_vec();
    let payload = bytes
        .get(HEADER - 4..HEADER)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if let Some(end) = payload.and_then(|p| HEADER.checked_add(p))
        && end.checked_add(4).is_some_and(|e| e <= bytes.len())
    {
        let sum = fnv1a(&bytes[..end]);
        bytes[end..end + 4].copy_from_slice(&sum.to_le_bytes());
    }
    let Ok(model) = CompactModel::parse(&bytes) else {
        return;
    };
    let width = model.max_width();
    if width > 1 << 16 || model.dims() > MAX_RUN_DIMS {
        return;
    }
    let mut scratch = Scratch::new(width);
    let mut ws = scratch.workspace();
    let mut out = vec![0f32; model.dims()];
    let class = usize::from(data.get(4).copied().unwrap_or(0));
    let _ = model.generate(class, 1, &mut ws, &mut out);
}

/// `card`: arbitrary text as a model card, and what a runtime asks of a card it accepted.
pub fn card(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(card) = ModelCard::from_json(text) else {
        return;
    };
    let _ = card.dims();
    for name in ["0", "7", "all", "sneaker", ""] {
        let _ = card.class_id(name);
    }
    if let Some(name) = card.class_names.first() {
        let _ = card.class_id(name);
    }
    for steps in 1..4 {
        for i in 0..steps {
            let _ = card.sampler.times(i, steps);
        }
    }
    let _ = mf_edge::images::grid_size(16, &card.sample_shape, 4, 4);
    let _ = card.to_json();
}

/// `single_op`: one node of a supported op with attributes and up to three small input
/// tensors, all drawn from the bytes, run by the reference ops (the code paths a model file
/// reaches through any graph).
pub fn single_op(data: &[u8]) {
    let mut bytes = Bytes(data);
    let op = ops::SUPPORTED[usize::from(bytes.next()) % ops::SUPPORTED.len()];
    let attribute = (0..bytes.next() % 3)
        .map(|_| onnx::AttributeProto {
            name: ["axis", "to", "keepdims"][usize::from(bytes.next()) % 3].to_string(),
            i: i64::from(bytes.next() as i8),
            ..Default::default()
        })
        .collect();
    let inputs: Vec<Value> = (0..1 + bytes.next() % 3).map(|_| bytes.value()).collect();
    let node = onnx::NodeProto {
        op_type: op.to_string(),
        name: "fuzzed".to_string(),
        output: vec!["y".to_string()],
        attribute,
        ..Default::default()
    };
    let refs: Vec<&Value> = inputs.iter().collect();
    let _ = ops::run(&node, &refs);
}

/// The fuzzer's bytes read one at a time (zeros once they run out).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    /// A tensor of rank 0 to 3 with sizes 0 to 4, of one of the four element types.
    fn value(&mut self) -> Value {
        let rank = usize::from(self.next() % 4);
        let shape: mf_edge::tensor::Shape =
            (0..rank).map(|_| usize::from(self.next() % 5)).collect();
        let len: usize = shape.iter().product();
        match self.next() % 4 {
            0 => Value::F32(
                (0..len)
                    .map(|_| f32::from(self.next() as i8) / 8.0)
                    .collect(),
                shape,
            ),
            1 => Value::I64(
                (0..len).map(|_| i64::from(self.next() as i8)).collect(),
                shape,
            ),
            2 => Value::I8((0..len).map(|_| self.next() as i8).collect(), shape),
            _ => Value::U8((0..len).map(|_| self.next()).collect(), shape),
        }
    }
}

thread_local! {
    /// The embedded default model on the native backend, opened once per fuzzing thread.
    static DEFAULT: std::cell::RefCell<Option<(Model, Box<dyn backends::Backend>)>> =
        const { std::cell::RefCell::new(None) };
}

/// `stream`: arbitrary bytes as a `paint --stream` input, painted with the embedded default
/// model into a sink. Byte 0 picks PNG frames (even) or raw frames (odd) whose size and pixel
/// format bytes 1 to 3 give (at most 64x64); the rest is the stream.
pub fn stream(data: &[u8]) {
    use mf_edge::stream::{FrameFormat, PixelFormat, paint_stream};
    let Some((head, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let format = if head[0] % 2 == 0 {
        FrameFormat::Png
    } else {
        FrameFormat::Raw {
            width: 1 + u32::from(head[1] % 64),
            height: 1 + u32::from(head[2] % 64),
            pixels: if head[3] % 2 == 0 {
                PixelFormat::Gray
            } else {
                PixelFormat::Rgb24
            },
        }
    };
    DEFAULT.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let model = Model::from_bytes(mf_edge::DEFAULT_MODEL.to_vec()).expect("embedded");
            let backend = backends::open(BackendKind::Native, &model, &BackendOptions::default())
                .expect("the default model runs natively");
            *slot = Some((model, backend));
        }
        let (model, backend) = slot.as_mut().expect("opened above");
        let mut sink = std::io::sink();
        let _ = paint_stream(
            backend.as_mut(),
            &model.card,
            format,
            body,
            &mut sink,
            Some(3),
            0.6,
            7,
            |_| {},
        );
    });
}
