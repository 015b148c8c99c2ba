//! Kernel throughput in operations per second (criterion's elem/s = ops/s; 2 ops per
//! multiply-add), read against the instruction peak measured in the same run:
//! - `peak/*`: the multiply-accumulate instruction alone, on registers, single-threaded.
//! - `gemm_256x1024x1024/*`: each available family, int8 and fp32, prepacked weights,
//!   single-threaded, beside rten-gemm's int8 and fp32 GEMM (the Rust peer).
//! - `layers/*`: the MNIST MLP's layers at batch 1 and 16 on the default thread team, as the
//!   native engine runs them (SiLU epilogues, int8 layers chained through uint8 codes), int8
//!   beside fp32 for the detected family.
//! - `team_vs_rayon/*`: the same MNIST layers cut into one column block per core, each block
//!   an int8 GEMM on one thread, dispatched by our thread team (`mf_kernels::team::run`) and
//!   by a rayon pool of the same size, beside the whole layer on one thread: what the team's
//!   dispatch costs or saves at the model's sizes.
//!
//! - `last_conv/*`: a U-Net's last convolution (3×3, 16 channels → 1, 2 or 3, 28×28, padding
//!   1, pixel rows in, planes out) at batch 1 and 16, int8 and fp32, one thread and the default
//!   team: the one-column tiles of the layers of one or two outputs, the wide tiles of three.
//!
//! - `unet_convs/*`: the batch-1 U-Net's convolutions (28×28 and 14×14, 1 to 64 channels,
//!   1×1 and 3×3, stride 1 and 2) as the native engine runs them: codes in, outputs rounded
//!   to the next layer's grid, the time embedding added where the graph adds it; one thread,
//!   the detected family (`MF_KERNEL=avx512vnni` against `amx`, say).
//!
//! - `pixel_affine/*`: a U-Net GroupNorm's second pass (each channel's normalization, γ, β and
//!   SiLU, then the uint8 code for the next convolution) over 28×28 pixel rows of 16 and 48
//!   channels, every available family, one thread: values per second.
//!
//! - `attention_matmul/*`: the DiT's per-head products of two activations at batch 1 (16 tokens,
//!   head size 32: scores Q·Kᵀ `16×32×16` and weighted values `16×16×32`), fp32 without
//!   fused multiply-adds, every available family, one thread.
//! - `attention_softmax/*`: the same heads' softmax over 16 rows of 16 scores, every family.
//!
//! - `dit_mlp/*`: the DiT's first MLP layer at batch 1 (16 tokens, 128 → 512, 7-bit int8
//!   weights, uint8 codes out, and fp32) with its tanh GELU and without, every available
//!   family, one thread: what the GELU epilogue adds to the layer.
//!
//! Run: `cargo bench -p mf-benches --bench kernels` (add `-- gemm_256` to filter).
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mf_kernels::reference::QuantizedLayer;
use mf_kernels::team::single_threaded;
use mf_kernels::{
    Activation, Addend, ConvGeometry, ConvScratch, Input, Isa, Layout, Layouts, Output,
    PackedConvF32, PackedConvI8, PackedF32, PackedI8, QuantParams, conv_f32, conv_i8, gemm_f32,
    gemm_i8,
};
use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmOptions};
use rten_tensor::NdTensorView;
use std::hint::black_box;

/// Deterministic pseudo-random values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A one-thread rayon pool for rten-gemm (ours runs on the calling thread alone inside
/// [`single_threaded`]).
fn single_thread() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool")
}

fn available() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_available())
        .collect()
}

fn peak(c: &mut Criterion) {
    let mut group = c.benchmark_group("peak");
    const ITERS: u64 = 10_000;
    for isa in available() {
        if let Some(ops) = mf_kernels::peak::i8_ops(isa, 1) {
            group.throughput(Throughput::Elements(ops * ITERS));
            group.bench_function(BenchmarkId::new("int8", isa), |b| {
                b.iter(|| mf_kernels::peak::i8_ops(isa, black_box(ITERS)))
            });
        }
        if let Some(flops) = mf_kernels::peak::f32_flops(isa, 1) {
            group.throughput(Throughput::Elements(flops * ITERS));
            group.bench_function(BenchmarkId::new("fp32", isa), |b| {
                b.iter(|| mf_kernels::peak::f32_flops(isa, black_box(ITERS)))
            });
        }
    }
    group.finish();
}

/// One layer's data at one shape, packed for int8 and fp32 with the same weights.
struct Problem {
    m: usize,
    n: usize,
    k: usize,
    x: Vec<f32>,
    codes: Vec<u8>,
    w: Vec<f32>,
    bias: Vec<f32>,
    input: QuantParams,
}

impl Problem {
    fn new(m: usize, n: usize, k: usize) -> Self {
        let x = values(m * k, 1);
        let input = QuantParams::from_range(-1.0, 1.0);
        let codes = x.iter().map(|&v| input.quantize(v)).collect();
        Problem {
            m,
            n,
            k,
            x,
            codes,
            w: values(n * k, 2),
            bias: values(n, 3),
            input,
        }
    }

    fn ops(&self) -> u64 {
        2 * (self.m * self.n * self.k) as u64
    }

    fn int8(&self, isa: Isa) -> PackedI8 {
        PackedI8::from_f32(
            isa,
            &self.w,
            &self.bias,
            self.n,
            self.k,
            self.input,
            Activation::None,
        )
        .expect("valid int8 layer")
    }

    fn fp32(&self, isa: Isa) -> PackedF32 {
        PackedF32::new(isa, &self.w, &self.bias, self.n, self.k, Activation::None)
            .expect("valid fp32 layer")
    }
}

fn gemm_square(c: &mut Criterion) {
    let p = Problem::new(256, 1024, 1024);
    let pool = single_thread();
    let mut group = c.benchmark_group("gemm_256x1024x1024");
    group.throughput(Throughput::Elements(p.ops()));
    group.sample_size(20);
    let mut out = vec![0f32; p.m * p.n];
    for isa in available() {
        let packed = p.int8(isa);
        group.bench_function(BenchmarkId::new("int8", isa), |b| {
            single_threaded(|| {
                b.iter(|| gemm_i8(&packed, Input::U8(&p.codes), p.m, Output::F32(&mut out)))
            })
        });
        let packed = p.fp32(isa);
        group.bench_function(BenchmarkId::new("fp32", isa), |b| {
            single_threaded(|| b.iter(|| gemm_f32(&packed, &p.x, p.m, &mut out)))
        });
    }

    // rten-gemm computes A[M, K] · B[K, N]: the same weights, transposed.
    let wq: Vec<i8> = p.w.iter().map(|v| (v * 127.0).round() as i8).collect();
    let wq_t: Vec<i8> = (0..p.k * p.n)
        .map(|i| wq[(i % p.n) * p.k + i / p.n])
        .collect();
    let w_t: Vec<f32> = (0..p.k * p.n)
        .map(|i| p.w[(i % p.n) * p.k + i / p.n])
        .collect();
    let int8 = GemmExecutor::<u8, i8, i32>::default();
    let packed = int8.prepack_b(NdTensorView::from_data([p.k, p.n], wq_t.as_slice()));
    let a = NdTensorView::from_data([p.m, p.k], p.codes.as_slice());
    let mut out_i32 = vec![0i32; p.m * p.n];
    group.bench_function(BenchmarkId::new("rten-int8", int8.kernel_name()), |b| {
        pool.install(|| {
            b.iter(|| {
                int8.gemm(
                    &mut out_i32,
                    GemmInputA::Unpacked(a),
                    GemmInputB::Packed(&packed),
                    GemmOptions::default(),
                )
            })
        })
    });
    let fp32 = GemmExecutor::<f32, f32, f32>::default();
    let packed = fp32.prepack_b(NdTensorView::from_data([p.k, p.n], w_t.as_slice()));
    let a = NdTensorView::from_data([p.m, p.k], p.x.as_slice());
    group.bench_function(BenchmarkId::new("rten-fp32", fp32.kernel_name()), |b| {
        pool.install(|| {
            b.iter(|| {
                fp32.gemm(
                    &mut out,
                    GemmInputA::Unpacked(a),
                    GemmInputB::Packed(&packed),
                    GemmOptions::default(),
                )
            })
        })
    });
    group.finish();
}

/// The MNIST MLP's layers as the native engine runs them: input (784 + 64 + 64 + 128 → 1024,
/// f32 in, SiLU, codes out), hidden (1024 → 1024, codes in, SiLU, codes out), output
/// (1024 → 784, codes in, f32 out), at batch 1 and 16 on the default thread team; fp32 beside
/// each with the same activation.
fn layers(c: &mut Criterion) {
    let isa = Isa::select().expect("MF_KERNEL names an available kernel");
    let mut group = c.benchmark_group("layers");
    for (name, n, k, activation) in [
        ("in", 1024, 1040, Activation::Silu),
        ("hidden", 1024, 1024, Activation::Silu),
        ("out", 784, 1024, Activation::None),
    ] {
        for m in [1, 16] {
            let p = Problem::new(m, n, k);
            group.throughput(Throughput::Elements(p.ops()));
            let id = format!("{name}_{m}x{n}x{k}");
            let packed = PackedI8::from_f32(isa, &p.w, &p.bias, n, k, p.input, activation)
                .expect("valid int8 layer");
            let mut out = vec![0f32; m * n];
            let mut codes = vec![0u8; m * n];
            group.bench_function(BenchmarkId::new(format!("int8-{isa}"), &id), |b| {
                b.iter(|| match name {
                    "in" => gemm_i8(
                        &packed,
                        Input::F32(&p.x),
                        m,
                        Output::U8(&mut codes, p.input),
                    ),
                    "hidden" => gemm_i8(
                        &packed,
                        Input::U8(&p.codes),
                        m,
                        Output::U8(&mut codes, p.input),
                    ),
                    _ => gemm_i8(&packed, Input::U8(&p.codes), m, Output::F32(&mut out)),
                })
            });
            let packed =
                PackedF32::new(isa, &p.w, &p.bias, n, k, activation).expect("valid fp32 layer");
            group.bench_function(BenchmarkId::new(format!("fp32-{isa}"), &id), |b| {
                b.iter(|| gemm_f32(&packed, &p.x, m, &mut out))
            });
        }
    }
    group.finish();
}

/// The MNIST layers split into `threads` column blocks of int8 weights, each run on one thread
/// by the team and by rayon (the same partition for both), beside the whole layer alone.
fn team_vs_rayon(c: &mut Criterion) {
    use rayon::prelude::*;
    use std::sync::Mutex;

    let isa = Isa::select().expect("MF_KERNEL names an available kernel");
    let threads = mf_kernels::team::threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool");
    let mut group = c.benchmark_group("team_vs_rayon");
    for (name, n, k) in [
        ("in", 1024, 1040),
        ("hidden", 1024, 1024),
        ("out", 784, 1024),
    ] {
        for m in [1, 16] {
            let p = Problem::new(m, n, k);
            group.throughput(Throughput::Elements(p.ops()));
            let id = format!("{name}_{m}x{n}x{k}_{threads}threads_{isa}");
            let block = |t: usize| n * t / threads..n * (t + 1) / threads;
            let parts: Vec<PackedI8> = (0..threads)
                .map(|t| {
                    let cols = block(t);
                    PackedI8::from_f32(
                        isa,
                        &p.w[cols.start * k..cols.end * k],
                        &p.bias[cols.clone()],
                        cols.len(),
                        k,
                        p.input,
                        Activation::Silu,
                    )
                    .expect("valid int8 block")
                })
                .collect();
            let outs: Vec<Mutex<Vec<f32>>> = (0..threads)
                .map(|t| Mutex::new(vec![0f32; m * block(t).len()]))
                .collect();
            let task = |t: usize| {
                let mut out = outs[t].lock().expect("one task per block");
                single_threaded(|| {
                    gemm_i8(&parts[t], Input::U8(&p.codes), m, Output::F32(&mut out))
                })
                .expect("block GEMM");
            };
            group.bench_function(BenchmarkId::new("team", &id), |b| {
                b.iter(|| mf_kernels::team::run(threads, &task))
            });
            group.bench_function(BenchmarkId::new("rayon", &id), |b| {
                b.iter(|| pool.install(|| (0..threads).into_par_iter().for_each(task)))
            });
            let whole = PackedI8::from_f32(isa, &p.w, &p.bias, n, k, p.input, Activation::Silu)
                .expect("valid int8 layer");
            let mut out = vec![0f32; m * n];
            group.bench_function(BenchmarkId::new("one-thread", &id), |b| {
                single_threaded(|| {
                    b.iter(|| gemm_i8(&whole, Input::U8(&p.codes), m, Output::F32(&mut out)))
                })
            });
        }
    }
    group.finish();
}

/// A U-Net's last convolution, to one, two or three image channels, as the native engine runs
/// it: pixel rows in (uint8 codes for int8), planes out, at batch 1 and 16, on one thread and
/// on the team.
fn last_conv(c: &mut Criterion) {
    let isa = Isa::select().expect("MF_KERNEL names an available kernel");
    let mut group = c.benchmark_group("last_conv");
    for outputs in [1, 2, 3] {
        last_conv_of(&mut group, isa, outputs);
    }
    group.finish();
}

/// The bias of every output of the benches' convolutions.
const CONV_BIAS: f32 = 0.1;

/// An int8 convolution of `outputs` channels for `isa` from float weights `w` (codes `w · 127`,
/// scale 0.01, bias [`CONV_BIAS`]), and its input's quantization (scale 0.02, zero point 128).
fn packed_int8_conv(
    isa: Isa,
    geometry: ConvGeometry,
    outputs: usize,
    w: &[f32],
) -> (PackedConvI8, QuantParams) {
    let codes: Vec<i8> = w.iter().map(|&v| (v * 127.0) as i8).collect();
    let (scales, bias) = (vec![0.01f32; outputs], vec![CONV_BIAS; outputs]);
    let input = QuantParams::new(0.02, 128).expect("valid parameters");
    let layer = QuantizedLayer {
        weights: &codes,
        weight_scales: &scales,
        bias: &bias,
        input,
        activation: Activation::None,
        n: outputs,
        k: geometry.depth(),
    };
    let packed = PackedConvI8::new(isa, &layer, geometry).expect("valid int8 convolution");
    (packed, input)
}

/// [`last_conv`] to `outputs` channels.
fn last_conv_of(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    isa: Isa,
    outputs: usize,
) {
    let (channels, side) = (16, 28);
    let geometry = ConvGeometry {
        channels,
        kernel: [3, 3],
        pads: [1; 4],
        strides: [1, 1],
        dilations: [1, 1],
    };
    let depth = geometry.depth();
    let w = values(outputs * depth, 11);
    let (int8, input) = packed_int8_conv(isa, geometry, outputs, &w);
    let bias = vec![CONV_BIAS; outputs];
    let fp32 = PackedConvF32::new(isa, &w, &bias, outputs, geometry, Activation::None)
        .expect("valid fp32 convolution");
    let layouts = Layouts {
        input: Layout::Nhwc,
        output: Layout::Nchw,
    };
    let mut scratch = ConvScratch::default();
    for batch in [1, 16] {
        let size = [batch, side, side];
        let x = values(batch * side * side * channels, 5);
        let x_codes: Vec<u8> = x.iter().map(|&v| input.quantize(v)).collect();
        let mut out = vec![0f32; batch * side * side * outputs];
        group.throughput(Throughput::Elements((2 * out.len() * depth) as u64));
        for (threads, solo) in [("1t", true), ("team", false)] {
            let run = |f: &mut dyn FnMut()| match solo {
                true => single_threaded(f),
                false => f(),
            };
            let id = format!("to{outputs}-b{batch}-{threads}");
            group.bench_function(BenchmarkId::new(format!("int8-{isa}"), &id), |b| {
                b.iter(|| {
                    run(&mut || {
                        let out = (Output::F32(&mut out), None);
                        conv_i8(&int8, Input::U8(&x_codes), size, out, layouts, &mut scratch)
                            .expect("valid shapes")
                    })
                })
            });
            group.bench_function(BenchmarkId::new(format!("fp32-{isa}"), &id), |b| {
                b.iter(|| {
                    run(&mut || {
                        conv_f32(&fp32, &x, size, (&mut out, None), layouts, &mut scratch)
                            .expect("valid shapes")
                    })
                })
            });
        }
    }
}

/// GroupNorm's affine + SiLU → uint8 codes pass over the pixel rows of a 28×28 image, as the
/// native engine runs it between a U-Net's convolutions, for each available family.
fn pixel_affine(c: &mut Criterion) {
    let mut group = c.benchmark_group("pixel_affine");
    let pixels = 28 * 28;
    for channels in [16, 48] {
        let x = values(pixels * channels, 3);
        let coefficient = |seed, base: f32| -> Vec<f32> {
            values(channels, seed)
                .iter()
                .map(|v| base + 0.5 * v)
                .collect()
        };
        let (mean, gain, bias) = (
            coefficient(4, 0.0),
            coefficient(5, 2.0),
            coefficient(6, 0.0),
        );
        let (gamma, beta) = (coefficient(7, 1.0), coefficient(8, 0.0));
        let a = mf_kernels::norm::ChannelAffine {
            mean: &mean,
            gain: &gain,
            bias: &bias,
            gamma: &gamma,
            beta: &beta,
            silu: true,
        };
        let params = QuantParams::new(0.03, 10).expect("valid parameters");
        let mut out = vec![0u8; x.len()];
        group.throughput(Throughput::Elements(x.len() as u64));
        for isa in available() {
            group.bench_function(BenchmarkId::new(format!("codes-{isa}"), channels), |b| {
                b.iter(|| {
                    mf_kernels::norm::pixel_affine_codes_into(isa, &x, &mut out, &a, params)
                        .expect("valid lengths")
                })
            });
        }
    }
    group.finish();
}

/// One of the U-Net's convolutions: its name, `[channels, outputs]`, `[kernel, stride]`, the
/// input's side, the `[input, output]` layouts, and whether the time embedding is added (codes
/// in, outputs rounded to the next layer's grid, as the engine runs it).
type UnetConv = (
    &'static str,
    [usize; 2],
    [usize; 2],
    usize,
    [Layout; 2],
    bool,
);

/// The U-Net's convolutions at batch 1, one thread, each on the detected family (the engine's
/// `mf-edge bench --profile` names the same steps).
fn unet_convs(c: &mut Criterion) {
    let isa = Isa::select().expect("MF_KERNEL names an available kernel");
    let (rows, planes) = (Layout::Nhwc, Layout::Nchw);
    let convs: [UnetConv; 8] = [
        (
            "3x3-1to16-planes",
            [1, 16],
            [3, 1],
            28,
            [planes, rows],
            false,
        ),
        ("3x3-16to16-add", [16, 16], [3, 1], 28, [rows, rows], true),
        ("3x3-16to16-s2", [16, 16], [3, 2], 28, [rows, rows], false),
        ("3x3-32to32-add", [32, 32], [3, 1], 14, [rows, rows], true),
        ("3x3-48to16-add", [48, 16], [3, 1], 28, [rows, rows], true),
        ("1x1-48to16", [48, 16], [1, 1], 28, [rows, rows], false),
        ("1x1-64to32", [64, 32], [1, 1], 14, [rows, rows], false),
        (
            "3x3-16to1-planes",
            [16, 1],
            [3, 1],
            28,
            [rows, planes],
            false,
        ),
    ];
    let mut group = c.benchmark_group("unet_convs");
    for (name, [channels, outputs], [kernel, stride], side, [from, to], per_image_addend) in convs {
        let layouts = Layouts {
            input: from,
            output: to,
        };
        let pad = kernel / 2;
        let geometry = ConvGeometry {
            channels,
            kernel: [kernel; 2],
            pads: [pad; 4],
            strides: [stride; 2],
            dilations: [1, 1],
        };
        let depth = geometry.depth();
        let w = values(outputs * depth, 11);
        let (int8, input) = packed_int8_conv(isa, geometry, outputs, &w);
        let next = QuantParams::new(0.05, 120).expect("valid parameters");
        let size = [1, side, side];
        let [oh, ow] = geometry.output_size(side, side).expect("fits");
        let x = values(side * side * channels, 5);
        let x_codes: Vec<u8> = x.iter().map(|&v| input.quantize(v)).collect();
        let mut out = vec![0f32; oh * ow * outputs];
        let addend = values(outputs, 9);
        let mut scratch = ConvScratch::default();
        group.throughput(Throughput::Elements((2 * out.len() * depth) as u64));
        group.bench_function(BenchmarkId::new(format!("int8-{isa}"), name), |b| {
            b.iter(|| {
                single_threaded(&mut || {
                    let add = per_image_addend.then_some(Addend::PerImage(&addend));
                    let out = (Output::Requantized(&mut out, next), add);
                    conv_i8(&int8, Input::U8(&x_codes), size, out, layouts, &mut scratch)
                        .expect("valid shapes")
                })
            })
        });
    }
    group.finish();
}

/// The DiT's per-head attention products (`pointwise::matmul`), every family.
fn attention_matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_matmul");
    for [m, k, n] in [[16, 32, 16], [16, 16, 32]] {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let mut out = vec![0f32; m * n];
        group.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        for isa in available() {
            let id = format!("{m}x{k}x{n}");
            group.bench_function(BenchmarkId::new(isa.name(), id), |bench| {
                bench.iter(|| {
                    mf_kernels::pointwise::matmul(isa, black_box(&a), &b, &mut out, [m, k, n])
                        .expect("operands of the product's sizes")
                })
            });
        }
    }
    group.finish();
}

/// The DiT's per-head softmax (`pointwise::softmax_rows`), every family.
fn attention_softmax(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_softmax");
    let scores: Vec<f32> = values(16 * 16, 3).iter().map(|v| v * 8.0).collect();
    let mut weights = vec![0f32; scores.len()];
    group.throughput(Throughput::Elements(scores.len() as u64));
    for isa in available() {
        group.bench_function(BenchmarkId::new(isa.name(), "16x16"), |bench| {
            bench.iter(|| {
                mf_kernels::pointwise::softmax_rows(isa, black_box(&scores), &mut weights, 16)
                    .expect("rows of 16")
            })
        });
    }
    group.finish();
}

/// The DiT's first MLP layer with and without GELU, int8 (7-bit weights, codes out) and
/// fp32, every family, one thread.
fn dit_mlp(c: &mut Criterion) {
    let mut group = c.benchmark_group("dit_mlp");
    let (m, n, k) = (16, 512, 128);
    let p = Problem::new(m, n, k);
    let mut codes = vec![0i8; n * k];
    let mut scales = vec![0f32; n];
    mf_kernels::quant::quantize_weights_in(
        mf_kernels::quant::WeightBits::Seven,
        &p.w,
        n,
        k,
        &mut codes,
        &mut scales,
    )
    .expect("valid weights");
    let mut out_codes = vec![0u8; m * n];
    let mut out = vec![0f32; m * n];
    group.throughput(Throughput::Elements(p.ops()));
    for isa in available() {
        for (name, activation) in [("none", Activation::None), ("gelu", Activation::GeluTanh)] {
            let layer = QuantizedLayer {
                weights: &codes,
                weight_scales: &scales,
                bias: &p.bias,
                input: p.input,
                activation,
                n,
                k,
            };
            let int8 = PackedI8::new(isa, &layer).expect("valid int8 layer");
            let id = format!("{m}x{k}x{n}-{name}");
            group.bench_function(BenchmarkId::new(format!("int8-{isa}"), &id), |b| {
                b.iter(|| {
                    single_threaded(|| {
                        let out = Output::U8(&mut out_codes, p.input);
                        gemm_i8(&int8, Input::U8(&p.codes), m, out).expect("valid shapes")
                    })
                })
            });
            let fp32 =
                PackedF32::new(isa, &p.w, &p.bias, n, k, activation).expect("valid fp32 layer");
            group.bench_function(BenchmarkId::new(format!("fp32-{isa}"), &id), |b| {
                b.iter(|| single_threaded(|| gemm_f32(&fp32, &p.x, m, &mut out)))
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    attention_matmul,
    attention_softmax,
    dit_mlp,
    attention_softmax,
    peak,
    gemm_square,
    layers,
    team_vs_rayon,
    last_conv,
    pixel_affine,
    unet_convs
);
criterion_main!(benches);
