//! The native engine: runs the graphs mf-export writes (and QDQ files of other tools) with
//! `mf-kernels`.
//!
//! At load, every `MatMul` (or `Gemm`) with constant weights becomes one fused dense step: a
//! QDQ-wrapped MatMul (`QuantizeLinear → DequantizeLinear → MatMul ← DequantizeLinear(int8)`)
//! becomes an int8 GEMM that quantizes its input, multiplies in integers and applies scales,
//! bias and SiLU in its epilogue; a float MatMul becomes the fp32 GEMM with the same epilogue.
//! The following `Add` (bias) and `Sigmoid` + `Mul` (SiLU) are folded in. Weights are packed once, here.
//! Every leading dimension of a dense step's input is a row (a DiT's `[N, T, D]` tokens).
//! A `Conv` with constant weights (float, or int8 behind DequantizeLinear with an int32 bias)
//! becomes a packed convolution step the same way (mf-kernels' implicit GEMM or im2col); an int8
//! one also absorbs the QuantizeLinear of its output, whose codes its epilogue writes. An int8
//! layer whose output QuantizeLinear → DequantizeLinear pair feeds no int8 layer absorbs the
//! pair, its epilogue writing the rounded values. mf-export's GroupNorm (Reshape →
//! InstanceNormalization → Reshape → Mul → Add, and the SiLU after it) runs as one step.
//! A float pixel-row convolution whose only reader is an Add (a residual connection, or the
//! per-channel embedding of a U-Net block) adds the other operand in its epilogue (the
//! `conv_plus` module).
//! Element-wise Add/Sub/Mul/Div write into an operand no later step reads; a run of them (and
//! Sigmoid) whose intermediate values only the next one reads is one step (the `chain`
//! module), and attention's `MatMul → Softmax → MatMul` with its head Transposes is one step
//! (the `attention` module). Between
//! convolutions, images stay NHWC pixel rows (the GEMM's rows) instead of ONNX's planes: see
//! the `pixel_rows` module.
//! Everything else runs through [`crate::ops`]. float16 graphs run in f32 arithmetic.
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, TryLockError};

use anyhow::{Context, bail, ensure};
use mf_core::onnx;
use mf_kernels::reference::QuantizedLayer;
use mf_kernels::{
    Activation, Addend, ConvGeometry, ConvScratch, GemmScratch, Input, Isa, Layout, Layouts,
    Output, PackedConvF32, PackedConvI8, PackedF32, PackedI8, QuantParams, conv_f32, conv_i8,
    gemm_f32, gemm_i8_reusing,
};

use crate::model::Model;
use crate::ops::normalize::NormScratch;
use crate::ops::{self, GroupNormChain};
use crate::tensor::{Shape, Value};

mod attention;
mod chain;
mod columns;
mod conv_plus;
mod dedupe;
mod gelu;
mod join;
mod pixel_rows;
mod profile;
mod team_choice;
mod upsample;

pub use profile::StepTime;

use attention::Attention;

/// A dense layer packed for the kernels.
enum Packed {
    F32(PackedF32),
    I8(PackedI8),
}

/// A convolution packed for the kernels.
enum PackedConv {
    F32(PackedConvF32),
    I8(PackedConvI8),
}

/// What a fused int8 step writes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Written {
    /// f32 values.
    Float,
    /// uint8 codes with these parameters (its QuantizeLinear absorbed, or the input codes of
    /// the int8 layer it feeds).
    Codes(QuantParams),
    /// f32 values rounded to this uint8 grid (its QuantizeLinear → DequantizeLinear pair
    /// absorbed).
    Rounded(QuantParams),
}

impl Written {
    /// The kernels' output for `out`'s f32 values, or `None` for codes.
    fn floats(self, out: &mut [f32]) -> Option<Output<'_>> {
        match self {
            Written::Float => Some(Output::F32(out)),
            Written::Rounded(grid) => Some(Output::Requantized(out, grid)),
            Written::Codes(_) => None,
        }
    }
}

/// One step of the plan, as the planner builds it (values by name).
enum Step {
    /// A fused MatMul (+ bias) (+ SiLU) (+ the QuantizeLinear → DequantizeLinear pair after).
    Dense {
        input: String,
        output: String,
        packed: Packed,
        written: Written,
    },
    /// A Conv with constant weights (+ bias) (+ the QuantizeLinear of its output, and the
    /// DequantizeLinear after it).
    Conv {
        input: String,
        output: String,
        packed: PackedConv,
        written: Written,
    },
    /// An exported GroupNorm (+ SiLU).
    Norm {
        input: String,
        output: String,
        chain: GroupNormChain,
    },
    /// Attention's scores, softmax and weighted sum (inputs Q, Kᵀ, V).
    Attention {
        inputs: [String; 3],
        output: String,
        attention: Box<Attention>,
    },
    /// Any other node.
    Op(onnx::NodeProto),
}

/// One step of the compiled plan: values by slot index.
enum Slotted {
    /// A fused dense layer.
    Dense {
        input: usize,
        output: usize,
        packed: Packed,
        /// Set when the output's only use is an int8 layer: the epilogue then writes that
        /// layer's uint8 input codes directly (the same bits its QuantizeLinear would give).
        written: Written,
    },
    /// A packed convolution.
    Conv {
        input: usize,
        output: usize,
        packed: PackedConv,
        written: Written,
        /// Planes or pixel rows in and out.
        layouts: Layouts,
    },
    /// An exported GroupNorm (+ SiLU) in one pass.
    Norm {
        input: usize,
        output: usize,
        chain: GroupNormChain,
        /// uint8 codes for the int8 layer that alone reads the output, instead of f32.
        codes: Option<QuantParams>,
        /// Whether it reads and writes NHWC pixel rows (else planes).
        pixel_rows: bool,
    },
    /// Images moved between planes and pixel rows.
    Relayout {
        input: usize,
        output: usize,
        /// The layout written.
        to: Layout,
    },
    /// mf-export's nearest upsampling of pixel rows.
    Upsample {
        input: usize,
        output: usize,
        upsample: Box<upsample::Upsample>,
    },
    /// A channel Concat of pixel rows with the upsampling of some inputs absorbed.
    Join {
        inputs: Vec<usize>,
        output: usize,
        join: Box<join::Join>,
    },
    /// Attention's scores, softmax and weighted sum (inputs Q, Kᵀ, V).
    Attention {
        inputs: [usize; 3],
        output: usize,
        attention: Box<Attention>,
    },
    /// A convolution and the Add that alone reads its output (inputs: the convolution's, the
    /// Add's other operand).
    ConvPlus {
        inputs: [usize; 2],
        output: usize,
        conv: Box<conv_plus::ConvPlus>,
    },
    /// Element-wise steps in a row, run as one.
    Chain {
        inputs: Vec<usize>,
        output: usize,
        chain: Box<chain::Chain>,
    },
    /// Any other node.
    Op {
        node: onnx::NodeProto,
        inputs: Vec<usize>,
        output: usize,
    },
}

/// A layout as step labels name it.
fn layout_name(l: Layout) -> &'static str {
    match l {
        Layout::Nchw => "planes",
        Layout::Nhwc => "pixel rows",
    }
}

/// A convolution step's label: precision, kernel, channels, stride and layouts.
fn conv_label(packed: &PackedConv, layouts: Layouts) -> String {
    let (g, m, precision) = match packed {
        PackedConv::I8(c) => (*c.geometry(), c.outputs(), "int8"),
        PackedConv::F32(c) => (*c.geometry(), c.outputs(), "fp32"),
    };
    format!(
        "Conv {precision} {}×{} {}→{m} stride {}, {} → {}",
        g.kernel[0],
        g.kernel[1],
        g.channels,
        g.strides[0],
        layout_name(layouts.input),
        layout_name(layouts.output)
    )
}

impl Slotted {
    /// What it does, for step times: the op, its sizes and layouts.
    fn label(&self) -> String {
        let layout = layout_name;
        match self {
            Slotted::Dense { packed, .. } => match packed {
                Packed::I8(p) => format!("Dense int8 {}→{}", p.k(), p.n()),
                Packed::F32(p) => format!("Dense fp32 {}→{}", p.k(), p.n()),
            },
            Slotted::Conv {
                packed, layouts, ..
            } => conv_label(packed, *layouts),
            Slotted::ConvPlus { conv, .. } => conv.label(),
            Slotted::Norm {
                chain,
                codes,
                pixel_rows,
                ..
            } => format!(
                "GroupNorm{} → {}, {}",
                if chain.silu { " + SiLU" } else { "" },
                if codes.is_some() {
                    "uint8 codes"
                } else {
                    "f32"
                },
                layout(if *pixel_rows {
                    Layout::Nhwc
                } else {
                    Layout::Nchw
                })
            ),
            Slotted::Relayout { to, .. } => format!("Relayout → {}", layout(*to)),
            Slotted::Upsample { .. } => "Upsample (nearest), pixel rows".into(),
            Slotted::Join { .. } => "Concat of upsampled pixel rows".into(),
            Slotted::Attention { .. } => "Attention".into(),
            Slotted::Chain { chain, .. } => chain.label(),
            Slotted::Op { node, .. } => format!("{} {:?}", node.op_type, node.name),
        }
    }

    /// The slots it reads.
    fn inputs(&self) -> &[usize] {
        match self {
            Slotted::Dense { input, .. }
            | Slotted::Conv { input, .. }
            | Slotted::Norm { input, .. }
            | Slotted::Relayout { input, .. }
            | Slotted::Upsample { input, .. } => std::slice::from_ref(input),
            Slotted::Attention { inputs, .. } => inputs,
            Slotted::ConvPlus { inputs, .. } => inputs,
            Slotted::Op { inputs, .. }
            | Slotted::Join { inputs, .. }
            | Slotted::Chain { inputs, .. } => inputs,
        }
    }

    /// The slots it reads, to be renamed.
    fn inputs_mut(&mut self) -> &mut [usize] {
        match self {
            Slotted::Dense { input, .. }
            | Slotted::Conv { input, .. }
            | Slotted::Norm { input, .. }
            | Slotted::Relayout { input, .. }
            | Slotted::Upsample { input, .. } => std::slice::from_mut(input),
            Slotted::Attention { inputs, .. } => inputs,
            Slotted::ConvPlus { inputs, .. } => inputs,
            Slotted::Op { inputs, .. }
            | Slotted::Join { inputs, .. }
            | Slotted::Chain { inputs, .. } => inputs,
        }
    }

    /// The slot it writes, to be renamed.
    fn output_mut(&mut self) -> &mut usize {
        match self {
            Slotted::Dense { output, .. }
            | Slotted::Conv { output, .. }
            | Slotted::Norm { output, .. }
            | Slotted::Relayout { output, .. }
            | Slotted::Upsample { output, .. }
            | Slotted::Join { output, .. }
            | Slotted::Attention { output, .. }
            | Slotted::ConvPlus { output, .. }
            | Slotted::Chain { output, .. }
            | Slotted::Op { output, .. } => output,
        }
    }
}

/// What a run keeps for the next: the value slots, the convolutions' and int8 products'
/// buffers, and spare value buffers.
#[derive(Default)]
struct RunBuffers {
    env: Vec<Option<Value>>,
    conv: ConvScratch,
    gemm: GemmScratch,
    norm: NormScratch,
    pools: Pools,
}

/// Buffers of values no later step reads, kept for later steps' outputs: floats and uint8
/// codes.
#[derive(Default)]
struct Pools {
    floats: Pool<f32>,
    codes: Pool<u8>,
}

impl Pools {
    /// `value` moved to layout `to` ([`ops::relayout_value`]) in pooled buffers.
    fn relayout(&mut self, value: &Value, to: Layout) -> anyhow::Result<Value> {
        let Pools { floats, codes } = self;
        let (mut floats, mut bytes) = (|len| floats.take(len), |len| codes.take(len));
        ops::relayout_value(value, to, (&mut floats, &mut bytes))
    }

    /// Keeps `value`'s buffer if it is one of the pooled kinds (float or uint8).
    fn give(&mut self, value: Value) {
        match value {
            Value::F32(buffer, _) => self.floats.give(buffer),
            Value::U8(buffer, _) => self.codes.give(buffer),
            _ => {}
        }
    }
}

/// Buffers of one element type kept for later steps' outputs (a fresh allocation of a large
/// output is faulted in page by page, and a small one is an allocation per call).
struct Pool<T>(Vec<Vec<T>>);

/// Float buffers (the attention step's output).
type FloatPool = Pool<f32>;

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool(Vec::new())
    }
}

/// The most buffers a [`Pool`] keeps.
const POOLED: usize = 32;

impl<T: Copy + Default> Pool<T> {
    /// `len` values in the shortest kept buffer of `len` to `2 · len` values, shortened (what
    /// an earlier step left there: every taker overwrites them all), or zeros in a new one.
    /// A kept buffer is never lengthened: that would write every added value on each call,
    /// where a new buffer of this length, kept in turn, is written once.
    fn take(&mut self, len: usize) -> Vec<T> {
        let fits = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, b)| (len..=2 * len).contains(&b.len()));
        match fits.min_by_key(|(_, b)| b.len()).map(|(i, _)| i) {
            Some(i) => {
                let mut buffer = self.0.swap_remove(i);
                buffer.truncate(len);
                buffer
            }
            None => vec![T::default(); len],
        }
    }

    /// Keeps `buffer` (in place of the smallest kept one when full).
    fn give(&mut self, buffer: Vec<T>) {
        if self.0.len() < POOLED {
            self.0.push(buffer);
        } else if let Some(smallest) = self.0.iter_mut().min_by_key(|b| b.capacity())
            && smallest.capacity() < buffer.capacity()
        {
            *smallest = buffer;
        }
    }
}

/// A compiled model: steps over numbered value slots, constants pre-filled.
pub struct NativeEngine {
    steps: Vec<Slotted>,
    constants: Vec<Option<Value>>,
    inputs: Vec<(String, usize)>,
    output: usize,
    isa: Isa,
    /// The convolutions' buffers and spare float buffers, shared by its steps and kept from
    /// run to run (a run that finds them taken by a concurrent one brings its own).
    buffers: Mutex<RunBuffers>,
    /// Per slot, the last step that reads it (`usize::MAX` for the output and unread
    /// values): a computed value is dropped after it, or handed on when that step only
    /// relabels its shape.
    last_use: Vec<usize>,
    /// Each step's time, while [`NativeEngine::time_steps`] has it on.
    clock: Option<profile::StepClock>,
    /// Whether runs of each input size share their products across the thread team.
    team: team_choice::TeamChoice,
}

/// Fused GEMM steps (dense layers and convolutions) of each kind, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanSummary {
    /// int8 GEMM steps (dense and convolution).
    pub int8_layers: usize,
    /// fp32 GEMM steps (dense and convolution).
    pub f32_layers: usize,
    /// Other nodes.
    pub other_ops: usize,
}

impl NativeEngine {
    /// Compiles a model for the kernel family `isa`.
    pub fn new(model: &Model, isa: Isa) -> anyhow::Result<NativeEngine> {
        NativeEngine::from_graph(model.graph(), isa)
    }

    /// Compiles any graph made of the ops mf-export writes (the reference classifier, say).
    pub fn from_graph(graph: &onnx::GraphProto, isa: Isa) -> anyhow::Result<NativeEngine> {
        let merged = dedupe::merge_duplicates(graph);
        let graph = merged.as_ref().unwrap_or(graph);
        ensure!(
            graph.output.len() == 1,
            "the native engine runs graphs with one output"
        );
        // Every step writes its first output; fusion follows those names.
        if let Some(node) = graph
            .node
            .iter()
            .find(|n| n.output.first().is_none_or(|o| o.is_empty()))
        {
            bail!("node {:?} ({}) has no output", node.name, node.op_type);
        }
        if let Some(node) = graph
            .node
            .iter()
            .find(|n| !ops::SUPPORTED.contains(&n.op_type.as_str()))
        {
            bail!(
                "unsupported op {} (node {:?}): the native engine runs {}; run this model with \
                 --backend tract or --backend ort",
                node.op_type,
                node.name,
                ops::SUPPORTED.join(", ")
            );
        }
        let mut constants = HashMap::new();
        for t in &graph.initializer {
            let value = Value::from_proto(t).with_context(|| {
                format!(
                    "the native engine cannot load initializer {:?}; run this model with \
                     --backend tract or --backend ort",
                    t.name
                )
            })?;
            constants.insert(t.name.clone(), value);
        }
        let folded = fold_constants(graph, &mut constants)?;
        let producer: HashMap<&str, usize> = graph
            .node
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
            .collect();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for input in &n.input {
                consumers.entry(input.as_str()).or_default().push(i);
            }
        }
        let plan = Planner {
            graph,
            producer,
            consumers,
            constants: &constants,
            isa,
        };
        // First fuse every MatMul with constant weights (their QDQ and weight nodes come
        // earlier in the graph), then emit steps in graph order.
        let mut absorbed = folded;
        let mut fused_at = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            if absorbed.contains(&i) {
                continue;
            }
            let fused = match node.op_type.as_str() {
                "MatMul" | "Gemm" => plan.dense(i, &mut absorbed)?,
                "Conv" => plan.conv(i, &mut absorbed)?,
                "InstanceNormalization" => plan.group_norm(i, &mut absorbed),
                _ => None,
            };
            if let Some(fused) = fused {
                fused_at.insert(i, fused);
            } else if node.op_type == "MatMul"
                && let Some((nodes, inputs, output, attention)) = plan.attention(i)
            {
                // Emitted where its last node was: V may be computed after the scores.
                let last = *nodes.last().expect("the scores' MatMul at least");
                absorbed.extend(nodes);
                let step = Step::Attention {
                    inputs,
                    output,
                    attention: Box::new(attention),
                };
                let weights = Vec::new();
                fused_at.insert(last, Fused { step, weights });
            }
        }
        let mut steps = Vec::new();
        let mut packed_weights = Vec::new();
        for (i, node) in graph.node.iter().enumerate() {
            if let Some(fused) = fused_at.remove(&i) {
                packed_weights.extend(fused.weights);
                steps.push(fused.step);
                continue;
            }
            if absorbed.contains(&i) {
                continue;
            }
            steps.push(Step::Op(node.clone()));
        }
        for name in packed_weights {
            constants.remove(&name);
        }
        // Number every value: graph inputs, remaining constants, step outputs.
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut slot = |name: &str| {
            let next = slots.len();
            *slots.entry(name.to_string()).or_insert(next)
        };
        let inputs: Vec<(String, usize)> = graph
            .input
            .iter()
            .map(|i| (i.name.clone(), slot(&i.name)))
            .collect();
        let constant_slots: Vec<(usize, Value)> = constants
            .into_iter()
            .map(|(name, v)| (slot(&name), v))
            .collect();
        let mut slotted = Vec::with_capacity(steps.len());
        for step in steps {
            slotted.push(match step {
                Step::Dense {
                    input,
                    output,
                    packed,
                    written,
                } => Slotted::Dense {
                    input: slot(&input),
                    output: slot(&output),
                    packed,
                    written,
                },
                Step::Conv {
                    input,
                    output,
                    packed,
                    written,
                } => Slotted::Conv {
                    input: slot(&input),
                    output: slot(&output),
                    packed,
                    written,
                    layouts: Layouts::ONNX,
                },
                Step::Norm {
                    input,
                    output,
                    chain,
                } => Slotted::Norm {
                    input: slot(&input),
                    output: slot(&output),
                    chain,
                    codes: None,
                    pixel_rows: false,
                },
                Step::Attention {
                    inputs,
                    output,
                    attention,
                } => Slotted::Attention {
                    inputs: inputs.map(|name| slot(&name)),
                    output: slot(&output),
                    attention,
                },
                Step::Op(node) => {
                    let inputs = node
                        .input
                        .iter()
                        .filter(|n| !n.is_empty())
                        .map(|n| slot(n))
                        .collect();
                    let output = slot(&node.output[0]);
                    Slotted::Op {
                        node,
                        inputs,
                        output,
                    }
                }
            });
        }
        let output = slot(&graph.output[0].name);
        let mut constants: Vec<Option<Value>> = (0..slots.len()).map(|_| None).collect();
        for (i, v) in constant_slots {
            constants[i] = Some(v);
        }
        let slotted = pixel_rows::keep_pixel_rows(slotted, &mut constants, output)?;
        let slotted = join::join_upsampled(slotted, output);
        let slotted = conv_plus::absorb_adds(slotted, output);
        let slotted = chain::fuse_chains(slotted, output);
        let mut slotted = chain::absorb_columns(slotted, &constants, output);
        chain_int8_inputs(&mut slotted, output);
        let mut last_use = vec![usize::MAX; constants.len()];
        for (i, step) in slotted.iter().enumerate() {
            for &slot in step.inputs() {
                last_use[slot] = i;
            }
        }
        last_use[output] = usize::MAX;
        Ok(NativeEngine {
            steps: slotted,
            constants,
            inputs,
            output,
            isa,
            buffers: Mutex::default(),
            last_use,
            clock: None,
            team: team_choice::TeamChoice::default(),
        })
    }

    /// The kernel family it runs on.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Times every step of the runs from now on (read with [`NativeEngine::take_step_times`]).
    pub fn time_steps(&mut self) {
        self.clock = Some(profile::StepClock::new(self.steps.len()));
    }

    /// Each step's mean time per run since timing began or the last call, or `None` when
    /// timing is off or no run has finished since.
    pub fn take_step_times(&self) -> Option<Vec<StepTime>> {
        let clock = self.clock.as_ref()?;
        clock.take(|i| self.steps[i].label())
    }

    /// What the plan holds.
    pub fn summary(&self) -> PlanSummary {
        let mut s = PlanSummary::default();
        for step in &self.steps {
            match step {
                Slotted::Dense {
                    packed: Packed::I8(_),
                    ..
                } => s.int8_layers += 1,
                Slotted::Dense {
                    packed: Packed::F32(_),
                    ..
                } => s.f32_layers += 1,
                Slotted::Conv {
                    packed: PackedConv::I8(_),
                    ..
                } => s.int8_layers += 1,
                Slotted::Conv {
                    packed: PackedConv::F32(_),
                    ..
                } => s.f32_layers += 1,
                Slotted::ConvPlus { conv, .. } => match conv.packed() {
                    PackedConv::I8(_) => s.int8_layers += 1,
                    PackedConv::F32(_) => s.f32_layers += 1,
                },
                Slotted::Op { .. }
                | Slotted::Norm { .. }
                | Slotted::Attention { .. }
                | Slotted::Chain { .. }
                | Slotted::Relayout { .. }
                | Slotted::Upsample { .. }
                | Slotted::Join { .. } => s.other_ops += 1,
            }
        }
        s
    }

    /// Runs the graph on named inputs and returns the output.
    pub fn run(&self, inputs: Vec<(&str, Value)>) -> anyhow::Result<Value> {
        // Runs of a size share their products across the thread team or not, as timing the
        // first runs both ways chose on this machine (the outputs are the same either way).
        self.team
            .run(input_elements(&inputs), || self.run_steps(inputs))
    }

    /// [`NativeEngine::run`] on the calling thread's team setting.
    fn run_steps(&self, inputs: Vec<(&str, Value)>) -> anyhow::Result<Value> {
        // The kept buffers, or (while another thread's run of this engine holds them) buffers
        // of this run's own; a panic in an earlier run leaves the kept ones as valid as before.
        let mut kept = match self.buffers.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let mut own = RunBuffers::default();
        let RunBuffers {
            env,
            conv: scratch,
            gemm,
            norm,
            pools,
        } = kept.as_deref_mut().unwrap_or(&mut own);
        // Every slot empty: what a run left behind (a value nothing read, or a failed run's)
        // gives its buffer back first.
        for value in env.drain(..).flatten() {
            pools.give(value);
        }
        env.resize_with(self.constants.len(), || None);
        let env = &mut env[..];
        for (name, value) in inputs {
            let slot = self.inputs.iter().find(|(n, _)| n == name).map(|&(_, s)| s);
            let slot = slot.with_context(|| format!("the model has no input {name:?}"))?;
            env[slot] = Some(value);
        }
        for (i, step) in self.steps.iter().enumerate() {
            let _timer = self.clock.as_ref().map(|clock| clock.start(i));
            match step {
                Slotted::Dense {
                    input,
                    output,
                    packed,
                    written,
                } => {
                    let value = self.lookup(env, *input)?;
                    env[*output] = Some(dense(packed, value, *written, (gemm, pools))?);
                }
                Slotted::Conv {
                    input,
                    output,
                    packed,
                    written,
                    layouts,
                } => {
                    let value = self.lookup(env, *input)?;
                    let written = (*written, *layouts);
                    let buffers = (&mut *scratch, &mut *pools);
                    env[*output] = Some(convolve(packed, value, written, None, buffers)?);
                }
                Slotted::ConvPlus {
                    inputs,
                    output,
                    conv,
                } => {
                    let [input, other] = inputs.map(|slot| self.lookup(env, slot));
                    let buffers = (&mut *scratch, &mut *pools);
                    env[*output] = Some(conv.run(self.isa, [input?, other?], buffers)?);
                }
                Slotted::Norm {
                    input,
                    output,
                    chain,
                    codes,
                    pixel_rows,
                } => {
                    let value = self.lookup(env, *input)?;
                    let Pools {
                        floats,
                        codes: bytes,
                    } = pools;
                    let (mut buffer, mut bytes) = (|len| floats.take(len), |len| bytes.take(len));
                    let fresh = (&mut buffer as _, &mut bytes as _);
                    let out = match pixel_rows {
                        true => chain.run_pixels(value, self.isa, fresh, *codes, norm),
                        false => chain.run(value, self.isa, fresh, *codes),
                    };
                    env[*output] = Some(out.context("GroupNorm")?);
                }
                Slotted::Relayout { input, output, to } => {
                    let value = self.lookup(env, *input)?;
                    env[*output] = Some(pools.relayout(value, *to)?);
                }
                Slotted::Upsample {
                    input,
                    output,
                    upsample,
                } => {
                    let value = self.lookup(env, *input)?;
                    let out = upsample.run(value, self.isa, pools);
                    env[*output] = Some(out.context("nearest upsampling")?);
                }
                Slotted::Join {
                    inputs,
                    output,
                    join,
                } => {
                    let args = self.lookup_all(env, inputs)?;
                    let out = join.run(&args, self.isa, pools);
                    drop(args);
                    env[*output] = Some(out.context("Concat of upsampled pixel rows")?);
                }
                Slotted::Attention {
                    inputs,
                    output,
                    attention,
                } => {
                    let [q, kt, v] = inputs.map(|slot| self.lookup(env, slot));
                    let out = attention.run(self.isa, [q?, kt?, v?], &mut pools.floats);
                    env[*output] = Some(out.context("attention")?);
                }
                Slotted::Chain {
                    inputs,
                    output,
                    chain,
                } => {
                    let args = self.lookup_all(env, inputs)?;
                    let out = chain.run(self.isa, &args, &mut pools.floats);
                    drop(args);
                    env[*output] = Some(out?);
                }
                Slotted::Op {
                    node,
                    inputs,
                    output,
                } => {
                    let context = || format!("{} node {:?}", node.op_type, node.name);
                    if let Some(value) =
                        self.in_place(env, i, node, inputs).with_context(context)?
                    {
                        env[*output] = Some(value);
                        self.drop_last_reads(env, step, i, pools);
                        continue;
                    }
                    let args = self.lookup_all(env, inputs)?;
                    // The input's last reader relabels it: its data moves on uncopied.
                    let relabel = match ops::view_shape(node, &args).with_context(context)? {
                        Some(shape)
                            if self.last_use[inputs[0]] == i && env[inputs[0]].is_some() =>
                        {
                            Some(shape)
                        }
                        _ => None,
                    };
                    let out = match relabel {
                        Some(shape) => {
                            drop(args);
                            let value = env[inputs[0]].take().expect("checked above");
                            ops::with_shape(value, shape)
                        }
                        None => {
                            let floats = &mut |len| pools.floats.take(len);
                            let out = ops::run_into(self.isa, node, &args, floats);
                            drop(args);
                            out.with_context(context)?
                        }
                    };
                    env[*output] = Some(out);
                }
            }
            self.drop_last_reads(env, step, i, pools);
        }
        if let Some(clock) = &self.clock {
            clock.finish_run();
        }
        // A graph may return one of its constants (a folded Constant node) as it is.
        match env[self.output].take() {
            Some(value) => Ok(value),
            None => self.constants[self.output]
                .clone()
                .context("the graph never computed its output"),
        }
    }

    /// Values no later step than `i` reads are dropped (constants stay in their own table).
    /// Their float and code buffers are kept for later steps' outputs.
    fn drop_last_reads(
        &self,
        env: &mut [Option<Value>],
        step: &Slotted,
        i: usize,
        pools: &mut Pools,
    ) {
        for &slot in step.inputs() {
            if self.last_use[slot] != i {
                continue;
            }
            if let Some(value) = env[slot].take() {
                pools.give(value);
            }
        }
    }

    /// An element-wise Add, Sub, Mul or Div at step `i` computed into the buffer of an operand
    /// that no later step reads and that already has the output's shape (the first operand,
    /// or either one of a commutative op): no allocation. `None` when no operand qualifies.
    fn in_place(
        &self,
        env: &mut [Option<Value>],
        i: usize,
        node: &onnx::NodeProto,
        inputs: &[usize],
    ) -> anyhow::Result<Option<Value>> {
        let op = node.op_type.as_str();
        let &[first, second] = inputs else {
            return Ok(None);
        };
        if !matches!(op, "Add" | "Sub" | "Mul" | "Div") || first == second {
            return Ok(None);
        }
        // Either operand of a commutative op may lend its buffer; otherwise only the first.
        let lenders = if matches!(op, "Add" | "Mul") { 2 } else { 1 };
        for (own, other) in [(first, second), (second, first)].into_iter().take(lenders) {
            if self.last_use[own] != i || !matches!(env[own], Some(Value::F32(..))) {
                continue;
            }
            let Some(Value::F32(mut a, sa)) = env[own].take() else {
                unreachable!("checked above")
            };
            let done = match self.lookup(env, other)? {
                Value::F32(b, sb) => ops::broadcast_in_place(op, &mut a, &sa, b, sb)?,
                _ => false,
            };
            if done {
                return Ok(Some(Value::F32(a, sa)));
            }
            env[own] = Some(Value::F32(a, sa));
        }
        Ok(None)
    }

    /// The values in `slots`, held inline (a step has a few inputs, and this runs for every
    /// step that reads several).
    fn lookup_all<'a>(
        &'a self,
        env: &'a [Option<Value>],
        slots: &[usize],
    ) -> anyhow::Result<smallvec::SmallVec<[&'a Value; 4]>> {
        slots.iter().map(|&slot| self.lookup(env, slot)).collect()
    }

    /// The value in a slot: computed this run, or a constant.
    fn lookup<'a>(&'a self, env: &'a [Option<Value>], slot: usize) -> anyhow::Result<&'a Value> {
        env[slot]
            .as_ref()
            .or(self.constants[slot].as_ref())
            .context("a value is used before it is computed")
    }
}

/// Computes every `Constant` node and every `Cast` of a constant (an fp16 export's weights)
/// once, here: its output becomes a constant (so the layer reading it is fused like any float
/// layer) and a cast source nothing else reads is dropped. Returns the folded nodes.
fn fold_constants(
    graph: &onnx::GraphProto,
    constants: &mut HashMap<String, Value>,
) -> anyhow::Result<HashSet<usize>> {
    let mut folded = HashSet::new();
    for (i, node) in graph.node.iter().enumerate() {
        if node.op_type == "Constant" {
            let value =
                ops::run(node, &[]).with_context(|| format!("Constant node {:?}", node.name))?;
            constants.insert(node.output[0].clone(), value);
            folded.insert(i);
            continue;
        }
        if node.op_type != "Cast" || node.input.len() != 1 {
            continue;
        }
        let Some(source) = constants.get(&node.input[0]) else {
            continue;
        };
        let value =
            ops::run(node, &[source]).with_context(|| format!("Cast node {:?}", node.name))?;
        constants.insert(node.output[0].clone(), value);
        folded.insert(i);
    }
    for &i in &folded {
        let Some(source) = graph.node[i].input.first() else {
            continue;
        };
        let read_elsewhere = graph
            .node
            .iter()
            .enumerate()
            .any(|(j, n)| !folded.contains(&j) && n.input.contains(source));
        if !read_elsewhere {
            constants.remove(source);
        }
    }
    Ok(folded)
}

/// Runs one fused dense layer on f32 values (or on uint8 codes an int8 layer before it wrote),
/// writing what `written` says.
fn dense(
    packed: &Packed,
    value: &Value,
    written: Written,
    (
        scratch,
        Pools {
            floats,
            codes: bytes,
        },
    ): (&mut GemmScratch, &mut Pools),
) -> anyhow::Result<Value> {
    // Every leading dimension is a row: [N, T, K] (a DiT's tokens) is N·T rows of K.
    let shape = value.shape();
    ensure!(!shape.is_empty(), "dense layer input of shape {shape:?}");
    let lead = &shape[..shape.len() - 1];
    let m: usize = lead.iter().product();
    let out_shape = |n: usize| lead.iter().copied().chain([n]).collect::<Shape>();
    match packed {
        Packed::F32(p) => {
            let (x, _) = value.f32("fp32 dense layer input")?;
            let mut out = floats.take(m * p.n());
            gemm_f32(p, x, m, &mut out)?;
            Ok(Value::F32(out, out_shape(p.n())))
        }
        Packed::I8(p) => {
            let input = match value {
                Value::U8(codes, _) => Input::U8(codes),
                other => Input::F32(other.f32("int8 dense layer input")?.0),
            };
            let shape = out_shape(p.n());
            if let Written::Codes(params) = written {
                let mut codes = bytes.take(m * p.n());
                gemm_i8_reusing(p, input, m, Output::U8(&mut codes, params), scratch)?;
                return Ok(Value::U8(codes, shape));
            }
            let mut out = floats.take(m * p.n());
            let floats = written.floats(&mut out).expect("codes returned above");
            gemm_i8_reusing(p, input, m, floats, scratch)?;
            Ok(Value::F32(out, shape))
        }
    }
}

/// Runs one packed convolution on `[N, C, H, W]` f32 values, writing `[N, M, OH, OW]` f32
/// values, rounded values or uint8 codes, as `written` says (each `[N, H, W, C]` pixel rows
/// where its layouts say so), with `addend` added to float pixel-row output.
fn convolve(
    packed: &PackedConv,
    value: &Value,
    written: (Written, Layouts),
    addend: Option<Addend<'_>>,
    (scratch, pools): (&mut ConvScratch, &mut Pools),
) -> anyhow::Result<Value> {
    let call = ConvCall::new(packed, value, written.1)?;
    convolve_in_groups(
        packed,
        &call,
        written,
        addend,
        (scratch, pools),
        FIELDS_AT_ONCE,
    )
}

/// A convolution's input as the kernels take it, and the sizes of the call.
struct ConvCall<'a> {
    input: Input<'a>,
    /// Images, input height and width.
    size: [usize; 3],
    /// Output channels.
    m: usize,
    /// Values of an input image and of an output image.
    image: (usize, usize),
    /// Receptive-field values of one image.
    fields: usize,
    /// The output's shape in its layout.
    out_shape: Shape,
}

impl<'a> ConvCall<'a> {
    /// `value` as `packed`'s input in `layouts`, or an error naming the shape expected.
    fn new(packed: &PackedConv, value: &'a Value, layouts: Layouts) -> anyhow::Result<Self> {
        // uint8 codes come from an int8 convolution before that wrote this one's input codes.
        let (input, shape) = match value {
            Value::U8(codes, shape) => (Input::U8(codes), shape.as_slice()),
            other => {
                let (x, shape) = other.f32("convolution input")?;
                (Input::F32(x), shape)
            }
        };
        let (geometry, m) = match packed {
            PackedConv::F32(p) => (p.geometry(), p.outputs()),
            PackedConv::I8(p) => (p.geometry(), p.outputs()),
        };
        let rows = layouts.input == Layout::Nhwc;
        let channels = if rows { 3 } else { 1 };
        ensure!(
            shape.len() == 4 && shape[channels] == geometry.channels,
            "convolution input of shape {shape:?}: {} expected",
            match rows {
                true => format!("pixel rows [N, H, W, {}]", geometry.channels),
                false => format!("[N, {}, H, W]", geometry.channels),
            }
        );
        let [n, h, w] = match rows {
            true => [shape[0], shape[1], shape[2]],
            false => [shape[0], shape[2], shape[3]],
        };
        let [oh, ow] = geometry.output_size(h, w)?;
        let out_shape = Shape::from_slice(&match layouts.output {
            Layout::Nchw => [n, m, oh, ow],
            Layout::Nhwc => [n, oh, ow, m],
        });
        crate::tensor::element_count(&out_shape)?;
        // One image's receptive fields are laid out at a time at least: refuse what would not fit.
        let fields = crate::tensor::element_count(&[oh, ow, geometry.depth()])
            .context("the convolution's receptive fields")?;
        Ok(ConvCall {
            input,
            size: [n, h, w],
            m,
            image: (geometry.channels * h * w, m * oh * ow),
            fields,
            out_shape,
        })
    }

    /// The input of images `first..first + count`.
    fn input_of(&self, first: usize, count: usize) -> Input<'a> {
        let in_image = self.image.0;
        match self.input {
            Input::U8(codes) => Input::U8(&codes[first * in_image..(first + count) * in_image]),
            Input::F32(x) => Input::F32(&x[first * in_image..(first + count) * in_image]),
        }
    }

    /// What `addend` adds to images `first..first + count` (it was made for this call's
    /// output: one value per output value, or one row per image).
    fn addend_of<'b>(&self, addend: Addend<'b>, first: usize, count: usize) -> Addend<'b> {
        match addend {
            Addend::Each(v) => {
                let out_image = self.image.1;
                Addend::Each(&v[first * out_image..(first + count) * out_image])
            }
            Addend::PerImage(v) => Addend::PerImage(&v[first * self.m..(first + count) * self.m]),
        }
    }
}

/// [`convolve`], laying out the receptive fields of at most `fields_at_once` values at a time
/// (whole images; one image when it alone has more).
fn convolve_in_groups(
    packed: &PackedConv,
    call: &ConvCall<'_>,
    (written, layouts): (Written, Layouts),
    addend: Option<Addend<'_>>,
    (scratch, Pools { floats, codes }): (&mut ConvScratch, &mut Pools),
    fields_at_once: usize,
) -> anyhow::Result<Value> {
    let [n, h, w] = call.size;
    let len = crate::tensor::element_count(&call.out_shape)?;
    let out_shape = call.out_shape.clone();
    // Images go through in groups whose receptive fields stay within `fields_at_once` values,
    // so that a large batch (an evaluation's thousand samples) does not lay out gigabytes.
    let group = (fields_at_once / call.fields.max(1)).clamp(1, n.max(1));
    let out_image = call.image.1;
    let groups = || {
        (0..n)
            .step_by(group)
            .map(move |first| (first, group.min(n - first)))
    };
    let plus = |first, count| addend.map(|add| call.addend_of(add, first, count));
    Ok(match (packed, written) {
        (PackedConv::F32(p), _) => {
            let Input::F32(x) = call.input else {
                bail!("a float convolution was given uint8 codes")
            };
            let mut out = floats.take(len);
            for (first, count) in groups() {
                let x = &x[first * call.image.0..(first + count) * call.image.0];
                let y = &mut out[first * out_image..(first + count) * out_image];
                let y = (y, plus(first, count));
                conv_f32(p, x, [count, h, w], y, layouts, scratch)?;
            }
            Value::F32(out, out_shape)
        }
        (PackedConv::I8(p), Written::Codes(params)) => {
            ensure!(addend.is_none(), "an addend needs float convolution output");
            let mut out = codes.take(len);
            for (first, count) in groups() {
                let y = &mut out[first * out_image..(first + count) * out_image];
                let output = (Output::U8(y, params), None);
                let input = call.input_of(first, count);
                conv_i8(p, input, [count, h, w], output, layouts, scratch)?;
            }
            Value::U8(out, out_shape)
        }
        (PackedConv::I8(p), float_output) => {
            let mut out = floats.take(len);
            for (first, count) in groups() {
                let y = &mut out[first * out_image..(first + count) * out_image];
                let output = float_output.floats(y).expect("codes matched above");
                let output = (output, plus(first, count));
                let input = call.input_of(first, count);
                conv_i8(p, input, [count, h, w], output, layouts, scratch)?;
            }
            Value::F32(out, out_shape)
        }
    })
}

/// The most receptive-field values a convolution lays out at once (16 Mi: 16 MB of codes,
/// 64 MB of floats), unless one image alone has more.
const FIELDS_AT_ONCE: usize = 1 << 24;

/// Lets every int8 dense layer and fused GroupNorm whose output feeds exactly one int8 layer
/// (and nothing else, not the graph output) write that layer's input codes instead of f32
/// values.
fn chain_int8_inputs(steps: &mut [Slotted], graph_output: usize) {
    let mut uses: HashMap<usize, usize> = HashMap::from([(graph_output, 1)]);
    let mut int8_input: HashMap<usize, QuantParams> = HashMap::new();
    for step in steps.iter() {
        match step {
            Slotted::Dense { input, packed, .. } => {
                *uses.entry(*input).or_default() += 1;
                if let Packed::I8(p) = packed {
                    int8_input.insert(*input, p.input());
                }
            }
            Slotted::Conv { input, packed, .. } => {
                *uses.entry(*input).or_default() += 1;
                if let PackedConv::I8(p) = packed {
                    int8_input.insert(*input, p.input());
                }
            }
            Slotted::ConvPlus { inputs, conv, .. } => {
                for i in inputs {
                    *uses.entry(*i).or_default() += 1;
                }
                if let PackedConv::I8(p) = conv.packed() {
                    int8_input.insert(inputs[0], p.input());
                }
            }
            other => {
                for i in other.inputs() {
                    *uses.entry(*i).or_default() += 1;
                }
            }
        }
    }
    let sole_int8_reader = |slot: &usize| match uses.get(slot) {
        Some(1) => int8_input.get(slot).copied(),
        _ => None,
    };
    for step in steps.iter_mut() {
        match step {
            Slotted::Dense {
                output,
                written: written @ Written::Float,
                packed: Packed::I8(_),
                ..
            } => {
                if let Some(params) = sole_int8_reader(output) {
                    *written = Written::Codes(params);
                }
            }
            Slotted::Norm { output, codes, .. } => *codes = sole_int8_reader(output),
            _ => {}
        }
    }
}

/// A fused dense step and the initializers its packing replaced.
struct Fused {
    step: Step,
    weights: Vec<String>,
}

/// A layer's constant weights, output channel by output channel, before packing.
enum Weights {
    /// float32 (float16 widened at load).
    Float(Vec<f32>),
    /// Symmetric int8 codes and one scale per output channel.
    Int8 { codes: Vec<i8>, scales: Vec<f32> },
}

/// Constant int8 weights found behind a DequantizeLinear node.
struct Int8Weights<'g> {
    /// The codes, in the initializer's layout.
    codes: &'g [i8],
    /// One scale per output channel (a per-tensor scale repeated).
    scales: Vec<f32>,
    /// The initializer's shape.
    shape: &'g [usize],
    /// The initializer's name.
    name: String,
}

/// Pattern matching over the graph.
struct Planner<'g> {
    graph: &'g onnx::GraphProto,
    producer: HashMap<&'g str, usize>,
    consumers: HashMap<&'g str, Vec<usize>>,
    constants: &'g HashMap<String, Value>,
    isa: Isa,
}

impl<'g> Planner<'g> {
    fn node(&self, i: usize) -> &'g onnx::NodeProto {
        &self.graph.node[i]
    }

    /// The node producing `value` if it is `op` and `value` has exactly `uses` consumers.
    fn sole_producer(&self, value: &str, op: &str, uses: usize) -> Option<usize> {
        let i = *self.producer.get(value)?;
        let used = self.consumers.get(value).map_or(0, Vec::len);
        (self.node(i).op_type == op && used == uses).then_some(i)
    }

    /// Whether `name` is one of the graph's outputs (a value a fusion may not hide).
    fn is_graph_output(&self, name: &str) -> bool {
        self.graph.output.iter().any(|o| o.name == name)
    }

    /// The only consumer of `value`, if it is `op`.
    fn sole_consumer(&self, value: &str, op: &str) -> Option<usize> {
        match self.consumers.get(value).map(Vec::as_slice) {
            Some(&[i]) if self.node(i).op_type == op => Some(i),
            _ => None,
        }
    }

    /// Fuses the MatMul at `i` if its weights are constant.
    fn dense(&self, i: usize, absorbed: &mut HashSet<usize>) -> anyhow::Result<Option<Fused>> {
        let matmul = self.node(i);
        // Gemm as a dense layer: Y = A · B(ᵀ) + C with alpha = beta = 1 and A untransposed.
        let gemm = matmul.op_type == "Gemm";
        let inputs_ok = if gemm {
            (2..=3).contains(&matmul.input.len())
                && ops::float_attr(matmul, "alpha", 1.0) == 1.0
                && ops::float_attr(matmul, "beta", 1.0) == 1.0
                && ops::int_attr(matmul, "transA", 0) == 0
        } else {
            matmul.input.len() == 2
        };
        if !inputs_ok || matmul.output.is_empty() {
            return Ok(None);
        }
        // Weights [K, N], or [N, K] for Gemm with transB.
        let trans_b = gemm && ops::int_attr(matmul, "transB", 0) != 0;
        let mut taken = vec![i];
        let mut weight_names = Vec::new();
        // Weights: a float initializer, or DequantizeLinear of an int8 one.
        let what = &matmul.op_type;
        let (weights, k, n) = if let Some(Value::F32(w, s)) = self.constants.get(&matmul.input[1]) {
            ensure!(s.len() == 2, "{what} weights of shape {s:?}");
            weight_names.push(matmul.input[1].clone());
            if trans_b {
                (Weights::Float(w.clone()), s[1], s[0])
            } else {
                (Weights::Float(transpose(w, s[0], s[1])), s[0], s[1])
            }
        } else if let Some(dq) = self.sole_producer(&matmul.input[1], "DequantizeLinear", 1) {
            let axis = if trans_b { 0 } else { 1 };
            let Some(Int8Weights {
                codes,
                scales,
                shape: s,
                name,
            }) = self.int8_weights(dq, axis)?
            else {
                return Ok(None);
            };
            ensure!(s.len() == 2, "{what} weights of shape {s:?}");
            taken.push(dq);
            weight_names.push(name);
            if trans_b {
                let codes = codes.to_vec();
                (Weights::Int8 { codes, scales }, s[1], s[0])
            } else {
                let codes = transpose(codes, s[0], s[1]);
                (Weights::Int8 { codes, scales }, s[0], s[1])
            }
        } else {
            return Ok(None);
        };
        // Gemm's own bias C.
        let gemm_bias = if gemm {
            let Some(bias) = self.bias_input(matmul, n, &mut taken, &mut weight_names)? else {
                return Ok(None);
            };
            Some(bias)
        } else {
            None
        };

        // Activation input: for int8 weights, the QuantizeLinear → DequantizeLinear pair.
        let (input, quant) = match &weights {
            Weights::Float(_) => (matmul.input[0].clone(), None),
            Weights::Int8 { .. } => {
                let (input, params, pair) = self.quantized_input(matmul, absorbed)?;
                taken.extend(pair);
                (input, Some(params))
            }
        };

        // Bias (Gemm's, or a following Add), then SiLU.
        let mut output = matmul.output[0].clone();
        let mut bias = gemm_bias.clone().unwrap_or_else(|| vec![0f32; n]);
        if gemm_bias.is_none()
            && let Some(add) = self.sole_consumer(&output, "Add")
        {
            let node = self.node(add);
            let other = node.input.iter().find(|v| **v != output);
            if let Some(Value::F32(b, s)) = other.and_then(|v| self.constants.get(v))
                && b.len() == n
                && s.len() == 1
            {
                bias = b.clone();
                weight_names.push(other.expect("found above").clone());
                taken.push(add);
                output = node.output[0].clone();
            }
        }
        let mut activation = Activation::None;
        if let Some(silu) = self.silu(&output) {
            taken.extend([silu.0, silu.1]);
            output = self.node(silu.1).output[0].clone();
            activation = Activation::Silu;
        } else if let Some((nodes, gelu_output)) = self.gelu_tanh(&output) {
            taken.extend(nodes);
            output = gelu_output;
            activation = Activation::GeluTanh;
        }

        let mut written = Written::Float;
        if matches!(weights, Weights::Int8 { .. })
            && let Some(q) = self.sole_consumer(&output, "QuantizeLinear")
            && let Ok(params) = self.activation_params(self.node(q))
            && let Some(dq) = self.rounding_pair(q)
        {
            taken.extend([q, dq]);
            output = self.node(dq).output[0].clone();
            written = Written::Rounded(params);
        }
        let packed = match weights {
            Weights::Float(w) => {
                Packed::F32(PackedF32::new(self.isa, &w, &bias, n, k, activation)?)
            }
            Weights::Int8 { codes, scales } => {
                let layer = QuantizedLayer {
                    weights: &codes,
                    weight_scales: &scales,
                    bias: &bias,
                    input: quant.expect("set for int8"),
                    activation,
                    n,
                    k,
                };
                Packed::I8(PackedI8::new(self.isa, &layer)?)
            }
        };
        absorbed.extend(taken);
        Ok(Some(Fused {
            step: Step::Dense {
                input,
                output,
                packed,
                written,
            },
            weights: weight_names,
        }))
    }

    /// Fuses the Conv at `i` if its weights (float, or int8 behind DequantizeLinear) and bias
    /// (float, or int32 behind DequantizeLinear) are constant; an int8 Conv also takes in the
    /// QuantizeLinear of its output, whose codes the epilogue then writes.
    fn conv(&self, i: usize, absorbed: &mut HashSet<usize>) -> anyhow::Result<Option<Fused>> {
        let node = self.node(i);
        if node.input.len() < 2 || node.output.is_empty() {
            return Ok(None);
        }
        let mut taken = vec![i];
        let mut weight_names = Vec::new();
        let (weights, shape) = if let Some(Value::F32(w, s)) = self.constants.get(&node.input[1]) {
            weight_names.push(node.input[1].clone());
            (Weights::Float(w.clone()), s.clone())
        } else if let Some(dq) = self.sole_producer(&node.input[1], "DequantizeLinear", 1) {
            let Some(Int8Weights {
                codes,
                scales,
                shape,
                name,
            }) = self.int8_weights(dq, 0)?
            else {
                return Ok(None);
            };
            taken.push(dq);
            weight_names.push(name);
            let codes = codes.to_vec();
            (Weights::Int8 { codes, scales }, Shape::from_slice(shape))
        } else {
            return Ok(None);
        };
        let geometry: ConvGeometry = ops::linear::conv_geometry(node, &shape)
            .with_context(|| format!("Conv {:?}", node.name))?;
        let m = shape[0];
        let Some(bias) = self.bias_input(node, m, &mut taken, &mut weight_names)? else {
            return Ok(None);
        };
        let fused_step = match weights {
            Weights::Float(w) => Step::Conv {
                input: node.input[0].clone(),
                output: node.output[0].clone(),
                packed: PackedConv::F32(PackedConvF32::new(
                    self.isa,
                    &w,
                    &bias,
                    m,
                    geometry,
                    Activation::None,
                )?),
                written: Written::Float,
            },
            Weights::Int8 { codes, scales } => {
                let (input, params, pair) = self.quantized_input(node, absorbed)?;
                taken.extend(pair);
                let layer = QuantizedLayer {
                    weights: &codes,
                    weight_scales: &scales,
                    bias: &bias,
                    input: params,
                    activation: Activation::None,
                    n: m,
                    k: geometry.depth(),
                };
                let packed = PackedConv::I8(PackedConvI8::new(self.isa, &layer, geometry)?);
                let mut output = node.output[0].clone();
                let mut written = Written::Float;
                if let Some(q) = self.sole_consumer(&output, "QuantizeLinear")
                    && let Ok(params) = self.activation_params(self.node(q))
                {
                    taken.push(q);
                    output = self.node(q).output[0].clone();
                    written = Written::Codes(params);
                    if let Some(dq) = self.rounding_pair(q) {
                        taken.push(dq);
                        output = self.node(dq).output[0].clone();
                        written = Written::Rounded(params);
                    }
                }
                Step::Conv {
                    input,
                    output,
                    packed,
                    written,
                }
            }
        };
        absorbed.extend(taken);
        Ok(Some(Fused {
            step: fused_step,
            weights: weight_names,
        }))
    }

    /// The constant bias of `m` values at input 2 of a Conv or Gemm: none (zeros), a float
    /// initializer, or int32 codes behind DequantizeLinear (dequantized here, as the node
    /// would). `None` when it is not constant.
    fn bias_input(
        &self,
        node: &onnx::NodeProto,
        m: usize,
        taken: &mut Vec<usize>,
        weight_names: &mut Vec<String>,
    ) -> anyhow::Result<Option<Vec<f32>>> {
        let Some(name) = node.input.get(2).filter(|b| !b.is_empty()) else {
            return Ok(Some(vec![0f32; m]));
        };
        let bias = if let Some(Value::F32(b, _)) = self.constants.get(name) {
            weight_names.push(name.clone());
            b.clone()
        } else if let Some(dq) = self.sole_producer(name, "DequantizeLinear", 1) {
            let dq_node = self.node(dq);
            let args: Option<Vec<&Value>> = dq_node
                .input
                .iter()
                .filter(|n| !n.is_empty())
                .map(|n| self.constants.get(n))
                .collect();
            let Some(args) = args else {
                return Ok(None);
            };
            let what = || format!("the bias of {} {:?}", node.op_type, node.name);
            let bias = ops::run(dq_node, &args).with_context(what)?;
            let bias = bias.f32(what())?.0.to_vec();
            taken.push(dq);
            weight_names.push(dq_node.input[0].clone());
            bias
        } else {
            return Ok(None);
        };
        if bias.len() != m {
            // A bias that broadcasts otherwise (a scalar, a matrix) stays a reference op.
            return Ok(None);
        }
        Ok(Some(bias))
    }

    /// The `QuantizeLinear → DequantizeLinear` pair feeding input 0 of the int8 layer `layer`:
    /// the value to read (the float value quantized, or, where a convolution before took in the
    /// QuantizeLinear, the codes it writes), its parameters, and the nodes taken.
    fn quantized_input(
        &self,
        layer: &onnx::NodeProto,
        absorbed: &HashSet<usize>,
    ) -> anyhow::Result<(String, QuantParams, Vec<usize>)> {
        let Some(dq) = self.sole_producer(&layer.input[0], "DequantizeLinear", 1) else {
            bail!(
                "int8 {} {:?} without a QuantizeLinear/DequantizeLinear input",
                layer.op_type,
                layer.name
            )
        };
        let dq_node = self.node(dq);
        let Some(q) = dq_node
            .input
            .first()
            .and_then(|v| self.sole_producer(v, "QuantizeLinear", 1))
        else {
            bail!(
                "int8 {} {:?}: its input DequantizeLinear is not fed by QuantizeLinear",
                layer.op_type,
                layer.name
            )
        };
        let q_node = self.node(q);
        ensure!(
            q_node.input.len() == 3
                && dq_node.input.len() == 3
                && q_node.input[1..] == dq_node.input[1..],
            "QuantizeLinear/DequantizeLinear pair of {:?} must share scale and zero point",
            layer.name
        );
        let params = self
            .activation_params(q_node)
            .with_context(|| format!("the input of {:?}", layer.name))?;
        if absorbed.contains(&q) {
            return Ok((q_node.output[0].clone(), params, vec![dq]));
        }
        Ok((q_node.input[0].clone(), params, vec![q, dq]))
    }

    /// The constant per-tensor uint8 parameters of a QuantizeLinear node.
    fn activation_params(&self, q_node: &onnx::NodeProto) -> anyhow::Result<QuantParams> {
        let scale = q_node
            .input
            .get(1)
            .and_then(|n| self.constants.get(n))
            .context("activation scale must be constant")?;
        let zero = q_node
            .input
            .get(2)
            .and_then(|n| self.constants.get(n))
            .context("activation zero point must be constant")?;
        let Value::U8(..) = zero else {
            bail!("activation zero point must be uint8")
        };
        Ok(QuantParams::new(
            scale.scalar("activation scale")? as f32,
            zero.scalar("zero point")? as u8,
        )?)
    }

    /// Symmetric int8 weights behind a DequantizeLinear node, with one scale per channel of
    /// `axis`; `None` when the node's inputs are not constants.
    fn int8_weights(&self, dq: usize, axis: i64) -> anyhow::Result<Option<Int8Weights<'g>>> {
        let node = self.node(dq);
        let (Some(Value::I8(codes, s)), Some(Value::F32(scales, _))) = (
            node.input.first().and_then(|n| self.constants.get(n)),
            node.input.get(1).and_then(|n| self.constants.get(n)),
        ) else {
            return Ok(None);
        };
        let zero_ok = match node.input.get(2).and_then(|n| self.constants.get(n)) {
            None => true,
            Some(Value::I8(z, _)) => z.iter().all(|&v| v == 0),
            _ => false,
        };
        let per_channel = (axis as usize) < s.len()
            && scales.len() == s[axis as usize]
            && ops::int_attr(node, "axis", 1) == axis;
        ensure!(
            zero_ok && (per_channel || scales.len() == 1) && (axis as usize) < s.len(),
            "int8 weights of {:?} must be symmetric, per tensor or per output channel (axis {axis})",
            node.name
        );
        // One scale for the tensor is every channel's.
        let scales = if per_channel {
            scales.clone()
        } else {
            vec![scales[0]; s[axis as usize]]
        };
        Ok(Some(Int8Weights {
            codes,
            scales,
            shape: s,
            name: node.input[0].clone(),
        }))
    }

    /// The exported GroupNorm around the InstanceNormalization at `i`: `Reshape(x, constant)
    /// → InstanceNormalization(constant scale, bias) → Reshape(constant) → Mul(constant γ) →
    /// Add(constant β)`, each value read by the next node alone, and the SiLU after it if
    /// there is one.
    fn group_norm(&self, i: usize, absorbed: &mut HashSet<usize>) -> Option<Fused> {
        let norm = self.node(i);
        let (grouped_at, scale, bias) = match norm.input.as_slice() {
            [x, s, b] => (x, self.constant_f32(s)?, self.constant_f32(b)?),
            _ => return None,
        };
        let first = self.sole_producer(grouped_at, "Reshape", 1)?;
        let [input, grouped] = self.node(first).input.as_slice() else {
            return None;
        };
        let grouped = self.constant_i64(grouped)?;
        let second = self.sole_consumer(norm.output.first()?, "Reshape")?;
        let ungrouped = self.constant_i64(self.node(second).input.get(1)?)?;
        let (mul, gamma) = self.with_constant(second, "Mul")?;
        let (add, beta) = self.with_constant(mul, "Add")?;
        let mut output = self.node(add).output.first()?.clone();
        let mut taken = vec![first, i, second, mul, add];
        // Values inside the chain vanish: none may be the graph's output.
        let mut inner = taken[..4].iter().flat_map(|&n| self.node(n).output.first());
        if inner.any(|v| self.is_graph_output(v)) {
            return None;
        }
        let silu = self.silu(&output).filter(|&(sig, _)| {
            let gate = self.node(sig).output.first();
            !gate.is_some_and(|g| self.is_graph_output(g)) && !self.is_graph_output(&output)
        });
        if let Some((sig, mul)) = silu {
            taken.extend([sig, mul]);
            output = self.node(mul).output.first()?.clone();
        }
        absorbed.extend(taken);
        Some(Fused {
            step: Step::Norm {
                input: input.clone(),
                output,
                chain: GroupNormChain {
                    grouped,
                    scale,
                    bias,
                    epsilon: ops::float_attr(norm, "epsilon", 1e-5),
                    ungrouped,
                    gamma,
                    beta,
                    silu: silu.is_some(),
                },
            },
            weights: Vec::new(),
        })
    }

    /// The only consumer of node `i`'s output if it is a binary `op` whose other input is a
    /// float constant, with that constant.
    fn with_constant(&self, i: usize, op: &str) -> Option<(usize, Value)> {
        let out = self.node(i).output.first()?;
        let next = self.sole_consumer(out, op)?;
        let other = match self.node(next).input.as_slice() {
            [a, b] if a == out => b,
            [a, b] if b == out => a,
            _ => return None,
        };
        match self.constants.get(other)? {
            v @ Value::F32(..) => Some((next, v.clone())),
            _ => None,
        }
    }

    /// A float constant's data.
    fn constant_f32(&self, name: &str) -> Option<Vec<f32>> {
        match self.constants.get(name)? {
            Value::F32(d, _) => Some(d.clone()),
            _ => None,
        }
    }

    /// An int64 constant's data.
    fn constant_i64(&self, name: &str) -> Option<Vec<i64>> {
        match self.constants.get(name)? {
            Value::I64(d, _) => Some(d.clone()),
            _ => None,
        }
    }

    /// The DequantizeLinear that reads the QuantizeLinear `q`'s output alone, with the same
    /// scale and zero point, when no int8 layer reads the values it gives (an int8 layer's
    /// planning takes such a pair as its own input).
    fn rounding_pair(&self, q: usize) -> Option<usize> {
        let q_node = self.node(q);
        let codes = q_node.output.first()?;
        if self.is_graph_output(codes) {
            return None;
        }
        let dq = self.sole_consumer(codes, "DequantizeLinear")?;
        let dq_node = self.node(dq);
        let same = q_node.input.len() == 3 && dq_node.input.get(1..) == q_node.input.get(1..);
        let readers = self.consumers.get(dq_node.output.first()?.as_str());
        let int8_reader = readers.is_some_and(|r| {
            r.iter()
                .any(|&n| matches!(self.node(n).op_type.as_str(), "Conv" | "MatMul" | "Gemm"))
        });
        (same && !int8_reader).then_some(dq)
    }

    /// `y → Sigmoid(y) → Mul(y, s)` with `y` used by exactly these two nodes.
    fn silu(&self, y: &str) -> Option<(usize, usize)> {
        let users = self.consumers.get(y)?;
        if users.len() != 2 {
            return None;
        }
        let sig = *users.iter().find(|&&u| self.node(u).op_type == "Sigmoid")?;
        let mul = *users.iter().find(|&&u| self.node(u).op_type == "Mul")?;
        let s = self.node(sig).output.first()?;
        let mul_node = self.node(mul);
        let inputs_ok = mul_node.input.len() == 2
            && mul_node.input.contains(s)
            && mul_node.input.iter().any(|v| v == y);
        (inputs_ok && self.consumers.get(s.as_str())?.len() == 1).then_some((sig, mul))
    }
}

/// `[k, n]` → `[n, k]`.
fn transpose<T: Copy>(w: &[T], k: usize, n: usize) -> Vec<T> {
    (0..k * n).map(|j| w[(j % k) * n + j / k]).collect()
}

/// The elements of a run's inputs together: the size by which runs choose their team setting.
fn input_elements(inputs: &[(&str, Value)]) -> usize {
    inputs
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random values in [-1, 1).
    pub(super) fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                ((i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn chained_codes_equal_quantizing_the_float_output() {
        let isa = Isa::select().expect("a kernel family");
        let mut pool = Pools::default();
        let (m, n, k) = (5, 37, 70);
        let input = QuantParams::from_range(-1.0, 1.0);
        let next = QuantParams::from_range(-0.3, 2.5);
        let layer = PackedI8::from_f32(
            isa,
            &values(n * k, 1),
            &values(n, 2),
            n,
            k,
            input,
            Activation::Silu,
        )
        .unwrap();
        let packed = Packed::I8(layer);
        let x = Value::F32(values(m * k, 3), smallvec::smallvec![m, k]);
        let mut run = |packed: &Packed, x: &Value, written| {
            dense(packed, x, written, (&mut GemmScratch::default(), &mut pool)).unwrap()
        };
        let Value::F32(floats, _) = run(&packed, &x, Written::Float) else {
            panic!("f32 output expected")
        };
        let Value::U8(codes, shape) = run(&packed, &x, Written::Codes(next)) else {
            panic!("codes expected")
        };
        // Rounded output: the codes read back, as the DequantizeLinear it absorbs reads them.
        let Value::F32(rounded, _) = run(&packed, &x, Written::Rounded(next)) else {
            panic!("f32 output expected")
        };
        let read_back: Vec<f32> = codes.iter().map(|&q| next.dequantize(q)).collect();
        assert_eq!(rounded, read_back);
        assert_ne!(rounded, floats, "rounding to the grid changes values");
        assert_eq!(shape.as_slice(), [m, n]);
        let want: Vec<u8> = floats.iter().map(|&v| next.quantize(v)).collect();
        assert_eq!(codes, want);
        // The codes feed the next int8 layer exactly as quantized floats would.
        let second = Packed::I8(
            PackedI8::from_f32(
                isa,
                &values(4 * n, 4),
                &values(4, 5),
                4,
                n,
                next,
                Activation::None,
            )
            .unwrap(),
        );
        let from_codes = run(
            &second,
            &Value::U8(codes, smallvec::smallvec![m, n]),
            Written::Float,
        );
        let from_floats = run(
            &second,
            &Value::F32(floats, smallvec::smallvec![m, n]),
            Written::Float,
        );
        assert_eq!(from_codes, from_floats);
    }

    #[test]
    fn a_batch_convolved_in_groups_equals_it_convolved_at_once() {
        let isa = Isa::select().expect("a kernel family");
        let (n, c, h, w, m) = (7, 3, 6, 5, 4);
        let geometry = ConvGeometry {
            channels: c,
            kernel: [3, 3],
            pads: [1, 1, 1, 1],
            strides: [1, 1],
            dilations: [1, 1],
        };
        let input = QuantParams::from_range(-1.0, 1.0);
        let weights: Vec<i8> = (0..m * c * 9).map(|i| (i * 37 % 255) as i8).collect();
        let layer = QuantizedLayer {
            weights: &weights,
            weight_scales: &[0.01, 0.02, 0.015, 0.03],
            bias: &values(m, 2),
            input,
            activation: Activation::Silu,
            n: m,
            k: geometry.depth(),
        };
        let int8 = PackedConv::I8(PackedConvI8::new(isa, &layer, geometry).unwrap());
        let float = PackedConv::F32(
            PackedConvF32::new(
                isa,
                &values(m * c * 9, 4),
                &values(m, 5),
                m,
                geometry,
                Activation::None,
            )
            .unwrap(),
        );
        let x = Value::F32(values(n * c * h * w, 3), smallvec::smallvec![n, c, h, w]);
        let next = QuantParams::from_range(-0.5, 2.0);
        let (mut scratch, mut pool) = (ConvScratch::default(), Pools::default());
        // The same values taken as pixel rows, and written as pixel rows.
        let rows = Value::F32(values(n * c * h * w, 3), smallvec::smallvec![n, h, w, c]);
        let pixel_rows = Layouts {
            input: Layout::Nhwc,
            output: Layout::Nhwc,
        };
        let cases = [(&int8, &x, Layouts::ONNX), (&float, &x, Layouts::ONNX)];
        let cases = cases
            .into_iter()
            .chain([(&int8, &rows, pixel_rows), (&float, &rows, pixel_rows)]);
        for (packed, x, layouts) in cases {
            for written in [Written::Float, Written::Codes(next), Written::Rounded(next)] {
                if matches!(packed, PackedConv::F32(_)) && written != Written::Float {
                    continue;
                }
                let mut run = |limit| {
                    let written = (written, layouts);
                    let call = ConvCall::new(packed, x, layouts).unwrap();
                    let buffers = (&mut scratch, &mut pool);
                    convolve_in_groups(packed, &call, written, None, buffers, limit).unwrap()
                };
                let at_once = run(usize::MAX);
                // Groups of 2 images (the last of 1), and one image at a time.
                let fields = 6 * 5 * geometry.depth();
                assert_eq!(run(2 * fields + 1), at_once, "{written:?}");
                assert_eq!(run(1), at_once, "{written:?}");
            }
        }
    }

    #[test]
    fn pooled_buffers_come_back_at_the_asked_length_and_the_largest_are_kept() {
        let mut pool = Pool::<f32>::default();
        pool.give(vec![7.0; 100]);
        let reused = pool.take(60);
        assert_eq!(reused, vec![7.0; 60], "the kept buffer, shortened");
        assert!(reused.capacity() >= 100, "the kept buffer is reused");
        pool.give(reused);
        assert_eq!(
            pool.take(80),
            vec![0.0; 80],
            "a kept buffer is not lengthened"
        );
        assert_eq!(
            pool.take(29),
            vec![0.0; 29],
            "nor one of over twice the length taken"
        );
        assert_eq!(pool.take(30), vec![7.0; 30], "one of twice the length is");
        assert_eq!(pool.take(10), vec![0.0; 10], "a new one when none is kept");
        for len in 1..=POOLED + 2 {
            pool.give(vec![1.0; len * 10]);
        }
        let mut kept: Vec<usize> = pool.0.iter().map(|b| b.len()).collect();
        kept.sort();
        let largest: Vec<usize> = (3..=POOLED + 2).map(|l| l * 10).collect();
        assert_eq!(kept, largest);
    }

    /// A float initializer.
    pub(super) fn floats(name: &str, dims: &[i64], data: Vec<f32>) -> onnx::TensorProto {
        onnx::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: onnx::DataType::Float as i32,
            float_data: data,
            ..Default::default()
        }
    }

    /// An int64 initializer of one dimension.
    pub(super) fn ints(name: &str, data: &[i64]) -> onnx::TensorProto {
        onnx::TensorProto {
            name: name.into(),
            dims: vec![data.len() as i64],
            data_type: onnx::DataType::Int64 as i32,
            int64_data: data.to_vec(),
            ..Default::default()
        }
    }

    /// A graph input or output named `name`.
    pub(super) fn info(name: &str) -> onnx::ValueInfoProto {
        onnx::ValueInfoProto {
            name: name.into(),
            ..Default::default()
        }
    }

    /// A Transpose node with its `perm`.
    fn transpose(input: &str, perm: &[i64], output: &str) -> onnx::NodeProto {
        let mut node = op("Transpose", &[input], output);
        node.attribute.push(onnx::AttributeProto {
            name: "perm".into(),
            ints: perm.to_vec(),
            r#type: onnx::AttributeType::Ints as i32,
            ..Default::default()
        });
        node
    }

    pub(super) fn op(op: &str, inputs: &[&str], output: &str) -> onnx::NodeProto {
        onnx::NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|&i| i.into()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    /// mf-export's GroupNorm + SiLU over `[N, 6, H, W]` (`shape`) in 3 groups, with `γ` and
    /// `β` of `affine` shape.
    fn group_norm_graph(affine: &[i64], shape: [i64; 4]) -> onnx::GraphProto {
        let count = affine.iter().product::<i64>() as usize;
        let mut epsilon = op(
            "InstanceNormalization",
            &["groups", "unit", "zero"],
            "normalized",
        );
        epsilon.attribute.push(onnx::AttributeProto {
            name: "epsilon".into(),
            f: 1e-3,
            r#type: onnx::AttributeType::Float as i32,
            ..Default::default()
        });
        onnx::GraphProto {
            node: vec![
                op("Reshape", &["x", "grouped"], "groups"),
                epsilon,
                op("Reshape", &["normalized", "shape"], "ungrouped"),
                op("Mul", &["gamma", "ungrouped"], "scaled"),
                op("Add", &["scaled", "beta"], "shifted"),
                op("Sigmoid", &["shifted"], "gate"),
                op("Mul", &["shifted", "gate"], "y"),
            ],
            initializer: vec![
                ints("grouped", &[0, 3, -1]),
                ints("shape", &shape),
                floats("unit", &[3], vec![1.0, 0.5, 2.0]),
                floats("zero", &[3], vec![0.0, 0.25, -0.5]),
                floats("gamma", affine, values(count, 7)),
                floats("beta", affine, values(count, 8)),
            ],
            input: vec![info("x")],
            output: vec![info("y")],
            ..Default::default()
        }
    }

    /// The graph run node by node through the reference ops.
    fn node_by_node(graph: &onnx::GraphProto, x: &Value) -> Value {
        let mut env: HashMap<String, Value> = graph
            .initializer
            .iter()
            .map(|t| (t.name.clone(), Value::from_proto(t).unwrap()))
            .collect();
        env.insert("x".into(), x.clone());
        for node in &graph.node {
            let args: Vec<&Value> = node.input.iter().map(|i| &env[i]).collect();
            let out = ops::run(node, &args).unwrap();
            env.insert(node.output[0].clone(), out);
        }
        env.remove("y").unwrap()
    }

    /// Convolutions around the steps that pass pixel rows on: a constant per-channel Add, a
    /// Sigmoid, a channel Concat with another convolution's output, a per-tensor
    /// QuantizeLinear → DequantizeLinear pair, a runtime per-channel Add from the second input
    /// `v` `[1, 6, 1, 1]`, and a stride-2 convolution added to itself for the graph's output
    /// (planes); a Reshape reads pixel rows back as planes.
    fn pixel_rows_graph() -> onnx::GraphProto {
        let ints_attr = |name: &str, v: &[i64]| onnx::AttributeProto {
            name: name.into(),
            ints: v.to_vec(),
            r#type: onnx::AttributeType::Ints as i32,
            ..Default::default()
        };
        let conv = |inputs: &[&str], out: &str, kernel: i64, pad: i64, stride: i64| {
            let mut node = op("Conv", inputs, out);
            node.attribute
                .push(ints_attr("kernel_shape", &[kernel, kernel]));
            node.attribute.push(ints_attr("pads", &[pad; 4]));
            node.attribute.push(ints_attr("strides", &[stride, stride]));
            node
        };
        let mut concat = op("Concat", &["c", "d"], "e");
        concat.attribute.push(onnx::AttributeProto {
            name: "axis".into(),
            i: 1,
            r#type: onnx::AttributeType::Int as i32,
            ..Default::default()
        });
        onnx::GraphProto {
            node: vec![
                conv(&["x", "wa", "ba"], "a", 3, 1, 1),
                op("Add", &["a", "per_channel"], "b"),
                op("Sigmoid", &["b"], "c"),
                conv(&["x", "wd"], "d", 1, 0, 1),
                concat,
                op("QuantizeLinear", &["e", "scale", "zero"], "eq"),
                op("DequantizeLinear", &["eq", "scale", "zero"], "edq"),
                op("Add", &["edq", "v"], "ev"),
                conv(&["ev", "wf", "bf"], "f", 3, 1, 2),
                op("Reshape", &["ev", "flat"], "flat_e"),
                op("Add", &["f", "f"], "y"),
            ],
            initializer: vec![
                floats("wa", &[4, 3, 3, 3], values(4 * 27, 11)),
                floats("ba", &[4], values(4, 12)),
                floats("per_channel", &[4, 1, 1], values(4, 13)),
                floats("wd", &[2, 3, 1, 1], values(6, 14)),
                floats("wf", &[3, 6, 3, 3], values(3 * 54, 15)),
                floats("bf", &[3], values(3, 16)),
                floats("scale", &[], vec![0.05]),
                onnx::TensorProto {
                    name: "zero".into(),
                    data_type: onnx::DataType::Uint8 as i32,
                    int32_data: vec![100],
                    ..Default::default()
                },
                ints("flat", &[1, -1]),
            ],
            input: vec![info("x"), info("v")],
            output: vec![info("y")],
            ..Default::default()
        }
    }

    #[test]
    fn pixel_rows_between_convolutions_give_what_planes_give() {
        let graph = pixel_rows_graph();
        let x = Value::F32(values(3 * 6 * 5, 17), smallvec::smallvec![1, 3, 6, 5]);
        let v = Value::F32(values(6, 18), smallvec::smallvec![1, 6, 1, 1]);
        let want = run_nodes(&graph, &[("x", &x), ("v", &v)]);
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let engine = NativeEngine::from_graph(&graph, isa).unwrap();
            // Every convolution writes pixel rows, which the steps after pass on; the Reshape's
            // planes and the graph's output cost two relayouts, `v` a third.
            let relayouts = engine
                .steps
                .iter()
                .filter(|s| matches!(s, Slotted::Relayout { .. }))
                .count();
            assert_eq!(relayouts, 3, "{isa}");
            let rows_written = engine.steps.iter().filter(
                |s| matches!(s, Slotted::Conv { layouts, .. } if layouts.output == Layout::Nhwc),
            );
            assert_eq!(rows_written.count(), 2, "{isa}");
            // The third adds the per-channel constant in its epilogue (`conv_plus`), which
            // only pixel-row output does.
            let fused = engine
                .steps
                .iter()
                .filter(|s| matches!(s, Slotted::ConvPlus { .. }));
            assert_eq!(fused.count(), 1, "{isa}");
            for _ in 0..2 {
                let got = engine
                    .run(vec![("x", x.clone()), ("v", v.clone())])
                    .unwrap();
                let (g, shape) = got.f32("y").unwrap();
                let (w, want_shape) = want.f32("y").unwrap();
                assert_eq!(shape, want_shape);
                for (i, (a, b)) in g.iter().zip(w).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{isa} {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn step_times_cover_each_step_of_the_timed_runs() {
        let graph = pixel_rows_graph();
        let x = Value::F32(values(3 * 6 * 5, 17), smallvec::smallvec![1, 3, 6, 5]);
        let v = Value::F32(values(6, 18), smallvec::smallvec![1, 6, 1, 1]);
        let mut engine = NativeEngine::from_graph(&graph, Isa::Scalar).unwrap();
        let run = |engine: &NativeEngine| {
            let inputs = vec![("x", x.clone()), ("v", v.clone())];
            let start = std::time::Instant::now();
            engine.run(inputs).unwrap();
            start.elapsed().as_secs_f64() * 1e6
        };
        run(&engine);
        assert!(engine.take_step_times().is_none(), "timing is off");
        engine.time_steps();
        let walls: Vec<f64> = (0..3).map(|_| run(&engine)).collect();
        let times = engine.take_step_times().expect("three timed runs");
        assert_eq!(times.len(), engine.steps.len());
        for (i, t) in times.iter().enumerate() {
            assert_eq!(t.index, i);
            assert_eq!(t.step, engine.steps[i].label());
            assert!(t.mean_us >= 0.0);
        }
        // The steps' means add up to no more than a run's mean wall time, and the three
        // convolutions are labelled as such.
        let sum: f64 = times.iter().map(|t| t.mean_us).sum();
        let wall = walls.iter().sum::<f64>() / 3.0;
        assert!(sum > 0.0 && sum <= wall, "steps {sum} µs, runs {wall} µs");
        let convs = times.iter().filter(|t| t.step.starts_with("Conv fp32 "));
        assert_eq!(convs.count(), 3, "{times:?}");
        // Taken: the clock starts again at zero.
        assert!(engine.take_step_times().is_none());
    }

    /// x `[5, 70]` · W `[70, 37]` + b, then mf-export's tanh GELU with `cubic` as its cubic
    /// coefficient.
    fn gelu_graph(cubic: f32) -> onnx::GraphProto {
        let scalar = |name: &str, v: f32| floats(name, &[1], vec![v]);
        // Pre-activations spread over [-6, 6], past where tanh saturates.
        let w: Vec<f32> = values(70 * 37, 3).iter().map(|v| v * 0.6).collect();
        onnx::GraphProto {
            node: vec![
                op("MatMul", &["x", "w"], "h"),
                op("Add", &["h", "b"], "pre"),
                op("Mul", &["pre", "pre"], "square"),
                op("Mul", &["square", "pre"], "cube"),
                op("Mul", &["cube", "cubic"], "cubic_term"),
                op("Add", &["cubic_term", "pre"], "inner"),
                op("Mul", &["inner", "scale"], "angle"),
                op("Tanh", &["angle"], "tanh"),
                op("Add", &["tanh", "one"], "gate"),
                op("Mul", &["gate", "half"], "half_gate"),
                op("Mul", &["pre", "half_gate"], "y"),
            ],
            initializer: vec![
                floats("w", &[70, 37], w),
                floats("b", &[37], values(37, 4)),
                scalar("cubic", cubic),
                scalar("scale", mf_kernels::activation::GELU_SCALE),
                scalar("one", 1.0),
                scalar("half", 0.5),
            ],
            input: vec![info("x")],
            output: vec![info("y")],
            ..Default::default()
        }
    }

    #[test]
    fn a_dense_layer_fuses_the_exported_gelu_bit_for_bit() {
        let x = Value::F32(values(5 * 70, 5), smallvec::smallvec![5, 70]);
        let bits = |v: &Value| match v {
            Value::F32(v, _) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            other => panic!("float output expected, got {other:?}"),
        };
        for isa in Isa::ALL.into_iter().filter(|isa| isa.is_available()) {
            let graph = gelu_graph(mf_kernels::activation::GELU_CUBIC);
            let engine = NativeEngine::from_graph(&graph, isa).unwrap();
            assert_eq!(engine.summary().other_ops, 0, "{isa:?}: one fused step");
            let got = engine.run(vec![("x", x.clone())]).unwrap();
            assert_eq!(
                bits(&got),
                bits(&gelu_nodes_after(&graph, isa, &x)),
                "{isa:?}"
            );
        }
        // Another coefficient is another function: the nodes are not fused into the layer
        // (they run as two element-wise chains around the Tanh).
        let graph = gelu_graph(0.044_716);
        let engine = NativeEngine::from_graph(&graph, Isa::Scalar).unwrap();
        assert_eq!(engine.summary().other_ops, 3);
    }

    /// The engine's dense layer `pre = x·W + b` of [`gelu_graph`], then its GELU node by node.
    fn gelu_nodes_after(graph: &onnx::GraphProto, isa: Isa, x: &Value) -> Value {
        let mut dense = graph.clone();
        dense.node.truncate(2);
        dense.output[0].name = "pre".into();
        let pre = NativeEngine::from_graph(&dense, isa)
            .unwrap()
            .run(vec![("x", x.clone())])
            .unwrap();
        let mut env: HashMap<String, Value> = graph
            .initializer
            .iter()
            .map(|t| (t.name.clone(), Value::from_proto(t).unwrap()))
            .collect();
        env.insert("pre".into(), pre);
        for node in &graph.node[2..] {
            let args: Vec<&Value> = node.input.iter().map(|i| &env[i]).collect();
            let out = ops::run(node, &args).unwrap();
            env.insert(node.output[0].clone(), out);
        }
        env.remove("y").unwrap()
    }

    /// mf-export's attention over inputs `q`, `kt`, `v`, with the scores scaled by 0.35 or
    /// not; with `heads`, the inputs are `[N, T, H, d]`, `[N, S, H, d]` and `[N, S, H, e]`,
    /// split into heads by Transposes, and the output merged back to `[N, T, H, e]`.
    fn attention_graph(scaled: bool, heads: bool) -> onnx::GraphProto {
        let (mut node, ends) = if heads {
            let split = vec![
                transpose("q", &[0, 2, 1, 3], "q_heads"),
                transpose("kt", &[0, 2, 3, 1], "kt_heads"),
            ];
            (split, ["q_heads", "kt_heads", "v_heads", "merged"])
        } else {
            (Vec::new(), ["q", "kt", "v", "y"])
        };
        node.push(op("MatMul", &ends[..2], "scores"));
        if scaled {
            node.push(op("Mul", &["scale", "scores"], "scaled"));
        }
        node.push(op(
            "Softmax",
            &[if scaled { "scaled" } else { "scores" }],
            "weights",
        ));
        // V's Transpose after the scores, as a graph may order them.
        if heads {
            node.push(transpose("v", &[0, 2, 1, 3], "v_heads"));
        }
        node.push(op("MatMul", &["weights", ends[2]], ends[3]));
        if heads {
            node.push(transpose("merged", &[0, 2, 1, 3], "y"));
        }
        onnx::GraphProto {
            node,
            initializer: vec![floats("scale", &[], vec![0.35])],
            input: ["q", "kt", "v"].map(info).to_vec(),
            output: vec![info("y")],
            ..Default::default()
        }
    }

    /// The graph's nodes one by one on `inputs`; its value `y`.
    /// Runs `engine` on `inputs` and asserts that its float output has the shape and the bits
    /// of `graph`'s nodes run one by one; `case` names the inputs in a failure.
    pub(super) fn assert_bits_of_nodes(
        engine: &NativeEngine,
        graph: &onnx::GraphProto,
        inputs: &[(&str, &Value)],
        case: &str,
    ) {
        let owned = inputs.iter().map(|(n, v)| (*n, (*v).clone())).collect();
        let got = engine.run(owned).unwrap();
        let want = run_nodes(graph, inputs);
        let (Value::F32(g, gs), Value::F32(w, ws)) = (&got, &want) else {
            panic!("float outputs expected")
        };
        assert_eq!(gs, ws, "{case}");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(g), bits(w), "{case}");
    }

    pub(super) fn run_nodes(graph: &onnx::GraphProto, inputs: &[(&str, &Value)]) -> Value {
        let mut env: HashMap<String, Value> = graph
            .initializer
            .iter()
            .map(|t| (t.name.clone(), Value::from_proto(t).unwrap()))
            .collect();
        env.extend(inputs.iter().map(|(n, v)| (n.to_string(), (*v).clone())));
        for node in &graph.node {
            let args: Vec<&Value> = node.input.iter().map(|i| &env[i]).collect();
            let out = ops::run(node, &args).unwrap();
            env.insert(node.output[0].clone(), out);
        }
        env.remove("y").unwrap()
    }

    #[test]
    fn fused_attention_equals_its_nodes_bit_for_bit() {
        let isa = Isa::select().expect("a kernel family");
        // Scores spread over about ±8, so the softmax is far from uniform.
        let tensor = |shape: &[usize], seed| {
            let count = shape.iter().product();
            let data = values(count, seed).iter().map(|v| v * 2.9).collect();
            Value::F32(data, shape.into())
        };
        // [batch, heads, T, d] · [.., d, S] · [.., S, e]: small, large enough to be shared
        // out across threads (by images, and one image's heads: 4 of them, and 3 over two
        // threads), and Kᵀ broadcast over the batch (run node by node); each as head matrices
        // and as token rows split into heads.
        let cases: [([usize; 2], [usize; 4], bool); 5] = [
            ([2, 3], [5, 4, 6, 7], false),
            ([16, 4], [16, 32, 16, 32], false),
            ([1, 4], [16, 32, 16, 32], false),
            ([1, 3], [20, 32, 20, 32], false),
            ([2, 3], [5, 4, 6, 7], true),
        ];
        for (batch @ [n, h], [t, d, s, e], kt_broadcast) in cases {
            let kt_n = if kt_broadcast { 1 } else { n };
            for heads in [false, true] {
                let [q, kt, v] = if heads {
                    [[n, t, h, d], [kt_n, s, h, d], [n, s, h, e]]
                } else {
                    [[n, h, t, d], [kt_n, h, d, s], [n, h, s, e]]
                };
                let (q, kt, v) = (tensor(&q, 1), tensor(&kt, 2), tensor(&v, 3));
                for scaled in [true, false] {
                    let graph = attention_graph(scaled, heads);
                    let engine = NativeEngine::from_graph(&graph, isa).unwrap();
                    assert_eq!(engine.summary().other_ops, 1, "one fused step");
                    let inputs = [("q", &q), ("kt", &kt), ("v", &v)];
                    let case = format!("{batch:?} {t} {d} {s} {e} heads {heads} scaled {scaled}");
                    assert_bits_of_nodes(&engine, &graph, &inputs, &case);
                }
            }
        }
        // Scores beyond what one value may hold (2^15 × 2^15 from inputs of 128 KB) are
        // refused with an error, not allocated.
        let long = 1 << 15;
        let engine = NativeEngine::from_graph(&attention_graph(true, false), isa).unwrap();
        let inputs = vec![
            ("q", tensor(&[1, 1, long, 1], 1)),
            ("kt", tensor(&[1, 1, 1, long], 2)),
            ("v", tensor(&[1, 1, long, 1], 3)),
        ];
        let err = engine.run(inputs).unwrap_err();
        assert!(format!("{err:#}").contains("exceeds"), "{err:#}");
    }

    /// Attention whose Q, K and V are column ranges of one `qkv` input `[N, T, 3·h·d]`, as the
    /// DiT exports them: Slice (last axis, `step`) → Reshape `[0, 0, h, d]` → Transpose each.
    fn qkv_attention_graph(h: i64, d: i64, step: i64) -> onnx::GraphProto {
        let mut node = Vec::new();
        let mut initializer = vec![
            floats("scale", &[], vec![0.35]),
            ints("axis", &[-1]),
            ints("step", &[step]),
            ints("heads", &[0, 0, h, d]),
        ];
        let width = h * d * step;
        for (k, (name, perm)) in [
            ("q", [0, 2, 1, 3]),
            ("k", [0, 2, 3, 1]),
            ("v", [0, 2, 1, 3]),
        ]
        .into_iter()
        .enumerate()
        {
            let (start, end) = (format!("{name}_start"), format!("{name}_end"));
            initializer.push(ints(&start, &[k as i64 * width]));
            initializer.push(ints(&end, &[(k as i64 + 1) * width]));
            let sliced = format!("{name}_cols");
            let split = format!("{name}_split");
            node.push(op("Slice", &["qkv", &start, &end, "axis", "step"], &sliced));
            node.push(op("Reshape", &[&sliced, "heads"], &split));
            node.push(transpose(&split, &perm, &format!("{name}_heads")));
        }
        node.push(op("MatMul", &["q_heads", "k_heads"], "scores"));
        node.push(op("Mul", &["scores", "scale"], "scaled"));
        node.push(op("Softmax", &["scaled"], "weights"));
        node.push(op("MatMul", &["weights", "v_heads"], "merged"));
        node.push(transpose("merged", &[0, 2, 1, 3], "y"));
        onnx::GraphProto {
            node,
            initializer,
            input: vec![info("qkv")],
            output: vec![info("y")],
            ..Default::default()
        }
    }

    #[test]
    fn attention_reads_q_k_v_as_columns_of_one_product() {
        let isa = Isa::select().expect("a kernel family");
        // [N, T, h, d]: two images of 3 heads, and one image of 4 heads shared across
        // threads, each one step; then a Slice of step 2, which the view does not take: the
        // three Slices and Reshapes run as steps of their own before it.
        for (n, t, h, d, step, steps) in
            [(2, 5, 3, 4, 1, 1), (1, 16, 4, 32, 1, 1), (2, 5, 3, 4, 2, 7)]
        {
            let graph = qkv_attention_graph(h as i64, d as i64, step as i64);
            let engine = NativeEngine::from_graph(&graph, isa).unwrap();
            assert_eq!(
                engine.summary().other_ops,
                steps,
                "{n} {t} {h} {d} step {step}"
            );
            let count = n * t * 3 * h * d * step;
            let data = values(count, 7).iter().map(|v| v * 2.9).collect();
            let qkv = Value::F32(data, smallvec::smallvec![n, t, 3 * h * d * step]);
            let got = engine.run(vec![("qkv", qkv.clone())]).unwrap();
            let want = run_nodes(&graph, &[("qkv", &qkv)]);
            let bits = |v: &Value| match v {
                Value::F32(v, _) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                other => panic!("float output expected, got {other:?}"),
            };
            assert_eq!(got.shape(), want.shape());
            assert_eq!(bits(&got), bits(&want), "{n} {t} {h} {d} step {step}");
        }
    }

    #[test]
    fn runs_shared_and_alone_give_the_same_bits_and_a_choice_is_made() {
        let isa = Isa::select().expect("a kernel family");
        // A GroupNorm large enough to be shared out, and convolutions between pixel rows.
        let size = [5, 6, 40, 33];
        let group_norm = group_norm_graph(&[6, 1, 1], size.map(|d| d as i64));
        let x = Value::F32(
            values(size.iter().product(), 9),
            smallvec::smallvec![5, 6, 40, 33],
        );
        let convs = pixel_rows_graph();
        let xc = Value::F32(values(3 * 6 * 5, 17), smallvec::smallvec![1, 3, 6, 5]);
        let v = Value::F32(values(6, 18), smallvec::smallvec![1, 6, 1, 1]);
        let cases = [
            (group_norm, vec![("x", x)]),
            (convs, vec![("x", xc), ("v", v)]),
        ];
        for (graph, inputs) in cases {
            let engine = NativeEngine::from_graph(&graph, isa).unwrap();
            let size = input_elements(&inputs);
            let first = engine.run(inputs.clone()).unwrap();
            // Each way TRIALS times, then the chosen one.
            for _ in 0..2 * team_choice::TRIALS + 1 {
                assert_eq!(engine.run(inputs.clone()).unwrap(), first);
            }
            let shared = mf_kernels::team::threads() > 1;
            assert_eq!(engine.team.chosen(size).is_some(), shared);
        }
    }

    #[test]
    fn a_fused_group_norm_equals_its_nodes_bit_for_bit() {
        let isa = Isa::select().expect("a kernel family");
        // Spread and offset differ per plane, so a wrong group or channel shows.
        let images = |[n, c, h, w]: [usize; 4]| {
            let plane = h * w;
            let data: Vec<f32> = values(n * c * plane, 9)
                .iter()
                .enumerate()
                .map(|(i, &v)| v * (1.0 + (i / plane % 7) as f32) + (i / (2 * plane)) as f32)
                .collect();
            Value::F32(data, smallvec::smallvec![n, c, h, w])
        };
        let x = images([2, 6, 3, 5]);
        // Per channel (the one-pass path), per element (the node-by-node path), and large
        // enough to be shared out across threads.
        let cases: [(&[i64], [usize; 4]); 4] = [
            (&[6, 1, 1], [2, 6, 3, 5]),
            (&[1, 6, 1, 1], [2, 6, 3, 5]),
            (&[6, 3, 5], [2, 6, 3, 5]),
            (&[6, 1, 1], [5, 6, 40, 33]),
        ];
        for (affine, size) in cases {
            let x = images(size);
            let graph = group_norm_graph(affine, size.map(|d| d as i64));
            let engine = NativeEngine::from_graph(&graph, isa).unwrap();
            assert_eq!(engine.summary().other_ops, 1, "{affine:?}: one fused step");
            let got = engine.run(vec![("x", x.clone())]).unwrap();
            let want = node_by_node(&graph, &x);
            let (Value::F32(g, gs), Value::F32(w, ws)) = (&got, &want) else {
                panic!("float outputs expected")
            };
            assert_eq!(gs, ws);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(g), bits(w), "{affine:?}");
        }
        // When the SiLU's input is also the graph's output, the SiLU stays outside.
        let mut graph = group_norm_graph(&[6, 1, 1], [2, 6, 3, 5]);
        graph.output[0].name = "shifted".into();
        graph.node.truncate(5);
        let engine = NativeEngine::from_graph(&graph, isa).unwrap();
        assert_eq!(engine.summary().other_ops, 1);
        let got = engine.run(vec![("x", x.clone())]).unwrap();
        let mut env_graph = graph.clone();
        env_graph.node[4].output[0] = "y".into();
        assert_eq!(got, node_by_node(&env_graph, &x));
    }
}
