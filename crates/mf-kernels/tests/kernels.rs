//! Every available kernel family against the scalar reference: int8 bit for bit, fp32 within
//! rounding, on random shapes (odd sizes, depths that are no multiple of any kernel's unit),
//! extreme zero points and extreme codes.
use mf_kernels::reference::{self, QuantizedLayer};
use mf_kernels::{
    Activation, Addend, ConvGeometry, ConvScratch, GemmScratch, Input, Isa, Layout, Layouts,
    Output, PackedConvF32, PackedConvI8, PackedF32, PackedI8, QuantParams, conv_f32, conv_i8,
    gemm_f32, gemm_i8, gemm_i8_reusing,
};
use proptest::prelude::*;
use std::ops::RangeInclusive;

/// One int8 problem: shapes, codes, scales and epilogue.
#[derive(Debug, Clone)]
struct I8Case {
    m: usize,
    n: usize,
    k: usize,
    codes: Vec<u8>,
    weights: Vec<i8>,
    w_scales: Vec<f32>,
    bias: Vec<f32>,
    input: QuantParams,
    activation: Activation,
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::None),
        Just(Activation::Silu),
        Just(Activation::GeluTanh)
    ]
}

/// Codes drawn uniformly, or pinned to an extreme so that every product is at its largest
/// (code 0 is −128 for the s8×s8 ARM kernels, which flip the sign bit).
fn codes(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), len),
        Just(vec![255u8; len]),
        Just(vec![0u8; len]),
    ]
}

/// Weights over the whole int8 range: −128 is legal in QDQ files that other quantizers write.
fn weights(len: usize) -> impl Strategy<Value = Vec<i8>> {
    prop_oneof![
        prop::collection::vec(any::<i8>(), len),
        // A symmetric quantizer's range: plain NEON sums two products in i16 for these.
        prop::collection::vec(-127i8..=127, len),
        // A 7-bit export's range (`mf-export --weight-bits 7`): AVX2 sums two products in i16.
        prop::collection::vec(-64i8..=64, len),
        Just(vec![-64i8; len]),
        Just(vec![64i8; len]),
        Just(vec![-128i8; len]),
        Just(vec![-127i8; len]),
        Just(vec![127i8; len]),
    ]
}

fn zero_point() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0u8), Just(255u8), Just(128u8), any::<u8>()]
}

/// An int8 layer of `n` outputs over `k` depths, with `codes` input codes (`rows` rows of `k`
/// for a dense layer; a convolution's images otherwise).
fn i8_layer(rows: usize, codes_len: usize, n: usize, k: usize) -> impl Strategy<Value = I8Case> {
    (
        codes(codes_len),
        weights(n * k),
        prop::collection::vec(1e-4f32..1e-1, n),
        prop::collection::vec(-2.0f32..2.0, n),
        (1e-3f32..0.1, zero_point()),
        activation(),
    )
        .prop_map(
            move |(codes, weights, w_scales, bias, (s, zp), activation)| I8Case {
                m: rows,
                n,
                k,
                codes,
                weights,
                w_scales,
                bias,
                input: QuantParams::new(s, zp).unwrap(),
                activation,
            },
        )
}

fn i8_case(max_m: usize, max_n: usize, max_k: usize) -> impl Strategy<Value = I8Case> {
    (1..=max_m, 1..=max_n, 1..=max_k).prop_flat_map(|(m, n, k)| i8_layer(m, m * k, n, k))
}

impl I8Case {
    fn layer(&self) -> QuantizedLayer<'_> {
        QuantizedLayer {
            weights: &self.weights,
            weight_scales: &self.w_scales,
            bias: &self.bias,
            input: self.input,
            activation: self.activation,
            n: self.n,
            k: self.k,
        }
    }

    /// Runs `isa` and the reference with f32 and uint8 outputs; both must agree bit for bit.
    fn check(&self, isa: Isa) -> Result<(), TestCaseError> {
        let layer = self.layer();
        let packed = PackedI8::new(isa, &layer).unwrap();
        let size = self.m * self.n;
        let (mut want, mut got) = (vec![0f32; size], vec![0f32; size]);
        reference::gemm_i8(&layer, &self.codes, self.m, Output::F32(&mut want)).unwrap();
        gemm_i8(
            &packed,
            Input::U8(&self.codes),
            self.m,
            Output::F32(&mut got),
        )
        .unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&got), bits(&want), "{} f32 output", isa);

        let next = QuantParams::new(0.05, 37).unwrap();
        let (mut want_q, mut got_q) = (vec![0u8; size], vec![0u8; size]);
        reference::gemm_i8(&layer, &self.codes, self.m, Output::U8(&mut want_q, next)).unwrap();
        gemm_i8(
            &packed,
            Input::U8(&self.codes),
            self.m,
            Output::U8(&mut got_q, next),
        )
        .unwrap();
        // Requantized f32 output: the u8 codes read back, bit for bit.
        let from_codes: Vec<f32> = want_q.iter().map(|&q| next.dequantize(q)).collect();
        prop_assert_eq!(got_q, want_q, "{} u8 output", isa);
        let mut got_r = vec![0f32; size];
        gemm_i8(
            &packed,
            Input::U8(&self.codes),
            self.m,
            Output::Requantized(&mut got_r, next),
        )
        .unwrap();
        prop_assert_eq!(
            bits(&got_r),
            bits(&from_codes),
            "{} requantized output",
            isa
        );
        Ok(())
    }
}

fn available() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_available())
        .collect()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    }
}

/// An fp32 layer: `(m, n, k, a, w, bias, activation)`.
type F32Case = (
    usize,
    usize,
    usize,
    Vec<f32>,
    Vec<f32>,
    Vec<f32>,
    Activation,
);

fn f32_case(max_m: usize, max_n: usize, max_k: usize) -> impl Strategy<Value = F32Case> {
    f32_case_in(1..=max_m, 1..=max_n, 1..=max_k)
}

/// [`f32_case`] with each dimension drawn from its range.
fn f32_case_in(
    m: RangeInclusive<usize>,
    n: RangeInclusive<usize>,
    k: RangeInclusive<usize>,
) -> impl Strategy<Value = F32Case> {
    (m, n, k).prop_flat_map(|(m, n, k)| {
        (
            Just(m),
            Just(n),
            Just(k),
            prop::collection::vec(-4.0f32..4.0, m * k),
            prop::collection::vec(-1.0f32..1.0, n * k),
            prop::collection::vec(-1.0f32..1.0, n),
            activation(),
        )
    })
}

/// Every family's fp32 layer within `k` rounding steps of the reference's.
fn check_f32((m, n, k, a, w, bias, act): F32Case) -> Result<(), TestCaseError> {
    let mut want = vec![0f32; m * n];
    reference::gemm_f32(&a, &w, &bias, act, m, n, k, &mut want).unwrap();
    for isa in available() {
        let packed = PackedF32::new(isa, &w, &bias, n, k, act).unwrap();
        let mut got = vec![0f32; m * n];
        gemm_f32(&packed, &a, m, &mut got).unwrap();
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            // Each sum of k products may differ by k rounding steps of its magnitude.
            let (row, col) = (i / n, i % n);
            let magnitude: f32 = (0..k)
                .map(|d| (a[row * k + d] * w[col * k + d]).abs())
                .sum();
            let tol = 4.0 * f32::EPSILON * k as f32 * (magnitude + bias[col].abs() + 1.0);
            prop_assert!(
                (g - r).abs() <= tol,
                "{} at {}: {} vs {} (tol {})",
                isa,
                i,
                g,
                r,
                tol
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn int8_kernels_equal_the_reference_bit_for_bit(case in i8_case(30, 70, 300)) {
        for isa in available() {
            case.check(isa)?;
        }
    }

    #[test]
    fn int8_kernels_handle_vectors_and_deep_products(case in i8_case(2, 40, 2100)) {
        for isa in available() {
            case.check(isa)?;
        }
    }

    #[test]
    fn fp32_kernels_are_within_rounding(case in f32_case(30, 70, 300)) {
        check_f32(case)?;
    }

    // Layers of one or two outputs (a network's last layer, to an image's channel) run
    // one-column tiles on the vector families, three to five the wide tiles; rows past one
    // tile's 32 included.
    #[test]
    fn int8_layers_of_few_outputs_equal_the_reference_bit_for_bit(case in i8_case(70, 5, 300)) {
        for isa in available() {
            case.check(isa)?;
        }
    }

    #[test]
    fn fp32_layers_of_few_outputs_are_within_rounding(case in f32_case(70, 5, 300)) {
        check_f32(case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..config() })]

    // Products of more rows than one tile (8 on AVX-512, 6 on AVX2) over weights of 1 MiB and
    // more run the x86 families' streaming tiles (the next panel fetched into L2 as they go):
    // the same sums, the last panel's fetches past the weights' end.
    #[test]
    fn fp32_layers_past_l2_are_within_rounding(
        case in f32_case_in(9..=20, 512..=545, 512..=530)
    ) {
        check_f32(case)?;
    }

    // One block of rows over such weights: AVX2 streams there too (batch 1).
    #[test]
    fn fp32_single_blocks_past_l2_are_within_rounding(
        case in f32_case_in(1..=6, 512..=545, 512..=530)
    ) {
        check_f32(case)?;
    }
}

/// One convolution problem: `[n, c, h, w]` input, `m` outputs, a kernel of 1 to 3 taps per
/// side, strides 1 or 2, each side padded 0 to 2, dilations 1 or 2 (only geometries whose
/// dilated kernel fits the padded input), and an int8 dense case over its depth.
#[derive(Debug, Clone)]
struct ConvCase {
    size: [usize; 3],
    geometry: ConvGeometry,
    dense: I8Case,
    /// The input's and output's layouts (planes or pixel rows).
    layouts: Layouts,
}

/// Any of the four input and output layout pairs.
fn layouts() -> impl Strategy<Value = Layouts> {
    let layout = || prop_oneof![Just(Layout::Nchw), Just(Layout::Nhwc)];
    (layout(), layout()).prop_map(|(input, output)| Layouts { input, output })
}

/// `x`, `[N, C, P]` as planes, in `layout`: as it is for NCHW, as pixel rows for NHWC.
fn in_layout<T: Copy>(x: &[T], [n, c, p]: [usize; 3], layout: Layout) -> Vec<T> {
    match layout {
        Layout::Nchw => x.to_vec(),
        Layout::Nhwc => (0..n * c * p)
            .map(|i| x[i / (c * p) * c * p + i % c * p + i / c % p])
            .collect(),
    }
}

fn conv_case(
    max_batch: usize,
    max_c: usize,
    max_side: usize,
    max_m: usize,
) -> impl Strategy<Value = ConvCase> {
    let geometry = (
        1..=max_c,
        [1..=3usize, 1..=3usize],
        [0..=2usize, 0..=2usize, 0..=2usize, 0..=2usize],
        [1..=2usize, 1..=2usize],
        [1..=2usize, 1..=2usize],
    )
        .prop_map(
            |(channels, kernel, pads, strides, dilations)| ConvGeometry {
                channels,
                kernel,
                pads,
                strides,
                dilations,
            },
        );
    conv_case_of(geometry, max_batch, max_side, max_m)
}

/// Convolutions that read their receptive fields straight from the padded input (stride and
/// dilation 1, more than one tap): channel counts whose kernel rows are whole depth steps of
/// every family (4 for VNNI and `sdot`, 8 for `smmla`, 16 for NEON) and some that are not
/// (an image's 1 or 3 channels, staged with zero-weight channels added).
fn implicit_conv_case(
    max_batch: usize,
    max_side: usize,
    max_m: usize,
) -> impl Strategy<Value = ConvCase> {
    let geometry = (
        prop::sample::select(vec![1usize, 3, 4, 8, 16, 32]),
        [1..=3usize, 1..=3usize],
        [0..=2usize, 0..=2usize, 0..=2usize, 0..=2usize],
    )
        .prop_filter("more than one tap", |(_, kernel, _)| *kernel != [1, 1])
        .prop_map(|(channels, kernel, pads)| ConvGeometry {
            channels,
            kernel,
            pads,
            strides: [1, 1],
            dilations: [1, 1],
        });
    conv_case_of(geometry, max_batch, max_side, max_m)
}

/// Cases of `geometry` on up to `max_batch` images of up to `max_side` pixels a side, with up
/// to `max_m` output channels.
fn conv_case_of(
    geometry: impl Strategy<Value = ConvGeometry>,
    max_batch: usize,
    max_side: usize,
    max_m: usize,
) -> impl Strategy<Value = ConvCase> {
    (
        1..=max_batch,
        (3..=max_side, 3..=max_side),
        1..=max_m,
        geometry,
    )
        .prop_filter("the kernel fits the padded input", |&(_, (h, w), _, g)| {
            g.output_size(h, w).is_ok()
        })
        .prop_flat_map(|(n, (h, w), m, geometry)| {
            let k = geometry.depth();
            let c = geometry.channels;
            (i8_layer(n, n * c * h * w, m, k), layouts()).prop_map(move |(dense, layouts)| {
                ConvCase {
                    size: [n, h, w],
                    geometry,
                    dense,
                    layouts,
                }
            })
        })
}

impl ConvCase {
    /// `isa`'s convolution against the direct reference, f32 and uint8 outputs, bit for bit
    /// (with buffers `scratch` kept from earlier, differently shaped calls), input and output in
    /// the case's layouts.
    fn check(&self, isa: Isa, scratch: &mut ConvScratch) -> Result<(), TestCaseError> {
        let layer = self.dense.layer();
        let packed = PackedConvI8::new(isa, &layer, self.geometry).unwrap();
        let [n, h, w] = self.size;
        let [oh, ow] = self.geometry.output_size(h, w).unwrap();
        let len = n * layer.n * oh * ow;
        let codes = &self.dense.codes;
        let input = in_layout(
            codes,
            [n, self.geometry.channels, h * w],
            self.layouts.input,
        );
        let (dims, layout) = ([n, layer.n, oh * ow], self.layouts.output);
        let (mut want, mut got) = (vec![0f32; len], vec![0f32; len]);
        let run = |out: (Output<'_>, Option<Addend<'_>>), scratch: &mut ConvScratch| {
            conv_i8(
                &packed,
                Input::U8(&input),
                self.size,
                out,
                self.layouts,
                scratch,
            )
        };
        let reference = |out: Output<'_>| {
            reference::conv_i8(&layer, &self.geometry, codes, self.size, out).unwrap()
        };
        reference(Output::F32(&mut want));
        run((Output::F32(&mut got), None), scratch).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let layouts = self.layouts;
        prop_assert_eq!(
            bits(&got),
            bits(&in_layout(&want, dims, layout)),
            "{} conv f32 output, {:?}",
            isa,
            layouts
        );
        let next = QuantParams::new(0.05, 37).unwrap();
        let (mut want_q, mut got_q) = (vec![0u8; len], vec![0u8; len]);
        reference(Output::U8(&mut want_q, next));
        run((Output::U8(&mut got_q, next), None), scratch).unwrap();
        let from_codes: Vec<f32> = want_q.iter().map(|&q| next.dequantize(q)).collect();
        prop_assert_eq!(
            got_q,
            in_layout(&want_q, dims, layout),
            "{} conv u8 output, {:?}",
            isa,
            layouts
        );
        let mut got_r = vec![0f32; len];
        run((Output::Requantized(&mut got_r, next), None), scratch).unwrap();
        prop_assert_eq!(
            bits(&got_r),
            bits(&in_layout(&from_codes, dims, layout)),
            "{} conv requantized output, {:?}",
            isa,
            layouts
        );
        // An addend added as the output is written (one value per output, or one row of
        // channels per image): the output's bits plus it, rounded once, for f32 and rounded
        // output alike; planes and uint8 codes refuse one.
        let m = layer.n;
        let each: Vec<f32> = (0..len)
            .map(|i| (i * 37 % 101) as f32 * 0.013 - 0.65)
            .collect();
        let per_image: Vec<f32> = (0..n * m)
            .map(|i| (i * 53 % 97) as f32 * 0.021 - 1.0)
            .collect();
        let added = |a: &Addend<'_>, i: usize| match a {
            Addend::Each(v) => v[i],
            Addend::PerImage(v) => v[i / (len / n) * m + i % m],
        };
        for addend in [Addend::Each(&each), Addend::PerImage(&per_image)] {
            let mut got = vec![0f32; len];
            let result = run((Output::F32(&mut got), Some(addend)), scratch);
            if layout == Layout::Nchw {
                prop_assert!(result.is_err(), "{} accepted an addend for planes", isa);
                continue;
            }
            result.unwrap();
            for (plain, grid) in [(&want, None), (&from_codes, Some(next))] {
                let base = in_layout(plain, dims, layout);
                let sum: Vec<f32> = (0..len).map(|i| base[i] + added(&addend, i)).collect();
                if let Some(grid) = grid {
                    run((Output::Requantized(&mut got, grid), Some(addend)), scratch).unwrap();
                }
                prop_assert_eq!(bits(&got), bits(&sum), "{} {:?} on {:?}", isa, addend, grid);
            }
            let mut codes = vec![0u8; len];
            let codes = Output::U8(&mut codes, next);
            prop_assert!(run((codes, Some(addend)), scratch).is_err());
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn int8_convolutions_equal_the_direct_reference_bit_for_bit(case in conv_case(3, 7, 9, 21)) {
        let mut scratch = ConvScratch::default();
        for isa in available() {
            case.check(isa, &mut scratch)?;
        }
    }

    #[test]
    fn implicit_convolutions_equal_the_direct_reference_bit_for_bit(
        case in implicit_conv_case(3, 9, 40)
    ) {
        let mut scratch = ConvScratch::default();
        for isa in available() {
            case.check(isa, &mut scratch)?;
        }
    }

    #[test]
    fn implicit_convolutions_of_few_outputs_equal_the_direct_reference_bit_for_bit(
        case in implicit_conv_case(2, 12, 4)
    ) {
        let mut scratch = ConvScratch::default();
        for isa in available() {
            case.check(isa, &mut scratch)?;
        }
    }

    #[test]
    fn buffers_kept_from_other_convolutions_change_no_result(
        cases in prop::collection::vec(conv_case(2, 5, 7, 9), 2..5)
    ) {
        // One scratch through convolutions of other shapes, paddings and zero points: what an
        // earlier call left in the padded input or the receptive fields must not show.
        for isa in available() {
            let mut scratch = ConvScratch::default();
            for case in &cases {
                case.check(isa, &mut scratch)?;
            }
        }
    }

    #[test]
    fn fp32_convolutions_are_within_rounding(case in f32_conv_case(conv_case(3, 7, 9, 21))) {
        check_f32_conv(case)?;
    }

    #[test]
    fn fp32_implicit_convolutions_of_few_outputs_are_within_rounding(
        case in f32_conv_case(implicit_conv_case(2, 12, 4))
    ) {
        check_f32_conv(case)?;
    }
}

/// A convolution case with f32 input values.
fn f32_conv_case(
    cases: impl Strategy<Value = ConvCase>,
) -> impl Strategy<Value = (ConvCase, Vec<f32>)> {
    cases.prop_flat_map(|case| {
        let [n, h, w] = case.size;
        let len = n * case.geometry.channels * h * w;
        (Just(case), prop::collection::vec(-4.0f32..4.0, len))
    })
}

/// Every family's fp32 convolution within rounding of the direct reference.
fn check_f32_conv((case, x): (ConvCase, Vec<f32>)) -> Result<(), TestCaseError> {
    let (g, m, k) = (case.geometry, case.dense.n, case.dense.k);
    let w: Vec<f32> = case
        .dense
        .weights
        .iter()
        .map(|&q| q as f32 / 128.0)
        .collect();
    let bias = &case.dense.bias;
    let act = case.dense.activation;
    let [n, h, wd] = case.size;
    let [oh, ow] = g.output_size(h, wd).unwrap();
    let len = n * m * oh * ow;
    let mut want = vec![0f32; len];
    reference::conv_f32(&w, bias, act, m, &g, &x, case.size, &mut want).unwrap();
    let want = in_layout(&want, [n, m, oh * ow], case.layouts.output);
    let input = in_layout(&x, [n, g.channels, h * wd], case.layouts.input);
    let mut scratch = ConvScratch::default();
    for isa in available() {
        let packed = PackedConvF32::new(isa, &w, bias, m, g, act).unwrap();
        let mut got = vec![0f32; len];
        let out = (&mut got[..], None);
        conv_f32(&packed, &input, case.size, out, case.layouts, &mut scratch).unwrap();
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            // |x| ≤ 4 and |w| ≤ 1: each sum of k products within k rounding steps of 4k.
            let tol = 4.0 * f32::EPSILON * k as f32 * (4.0 * k as f32 + 3.0);
            prop_assert!(
                (g - r).abs() <= tol,
                "{} at {}: {} vs {} (tol {}), {:?}",
                isa,
                i,
                g,
                r,
                tol,
                case.layouts
            );
        }
    }
    Ok(())
}

/// Batches large enough that a convolution's layout work (padding, NHWC transposes, receptive
/// fields, planes) and its product are shared out across the thread team stay bit-exact to
/// the reference (int8) and to the same convolution on one thread (fp32): a padded 3×3, a 1×1
/// and a stride-2 3×3 kernel. The stride-2 one lays out its receptive fields in runs of rows
/// across the team: with 7 images of 13 × 12 outputs, two threads split the rows inside an
/// image and inside an output line.
#[test]
fn convolutions_shared_across_threads_equal_one_thread() {
    let (n, c, h, w, m) = (7, 16, 25, 23, 16);
    let pixel_rows = Layouts {
        input: Layout::Nhwc,
        output: Layout::Nhwc,
    };
    let cases = [
        ([3, 3], [1, 1, 1, 1], [1, 1]),
        ([1, 1], [0; 4], [1, 1]),
        ([3, 3], [1, 1, 1, 1], [2, 2]),
    ];
    for ((kernel, pads, strides), layouts) in cases
        .into_iter()
        .flat_map(|c| [(c, Layouts::ONNX), (c, pixel_rows)])
    {
        let geometry = ConvGeometry {
            channels: c,
            kernel,
            pads,
            strides,
            dilations: [1, 1],
        };
        let [oh, ow] = geometry.output_size(h, w).unwrap();
        let k = geometry.depth();
        let dense = I8Case {
            m: n,
            n: m,
            k,
            codes: (0..n * c * h * w).map(|i| (i * 37 % 251) as u8).collect(),
            weights: (0..m * k).map(|i| (i * 53 % 255) as u8 as i8).collect(),
            w_scales: (0..m).map(|i| 0.001 * (i + 1) as f32).collect(),
            bias: (0..m).map(|i| i as f32 * 0.1 - 0.8).collect(),
            input: QuantParams::new(0.02, 100).unwrap(),
            activation: Activation::Silu,
        };
        let case = ConvCase {
            size: [n, h, w],
            geometry,
            dense,
            layouts,
        };
        // The layout work from 8K values on, a convolution's product from 4K outputs on.
        assert!(n * m * oh * ow >= 1 << 13, "large enough to be shared out");
        let x: Vec<f32> = (0..n * c * h * w)
            .map(|i| (i % 97) as f32 / 24.0 - 2.0)
            .collect();
        let weights: Vec<f32> = (0..m * k).map(|i| (i % 31) as f32 / 31.0 - 0.5).collect();
        for isa in available() {
            let mut scratch = ConvScratch::default();
            case.check(isa, &mut scratch).unwrap();
            let packed = PackedConvF32::new(
                isa,
                &weights,
                &case.dense.bias,
                m,
                geometry,
                Activation::None,
            )
            .unwrap();
            let mut shared = vec![0f32; n * m * oh * ow];
            let out = (&mut shared[..], None);
            conv_f32(&packed, &x, case.size, out, layouts, &mut scratch).unwrap();
            let mut alone = vec![0f32; shared.len()];
            mf_kernels::team::single_threaded(|| {
                conv_f32(
                    &packed,
                    &x,
                    case.size,
                    (&mut alone, None),
                    layouts,
                    &mut ConvScratch::default(),
                )
                .unwrap()
            });
            assert_eq!(shared, alone, "{isa} fp32 {kernel:?} {layouts:?}");
            // f32 input to an int8 convolution: quantized in runs across the team, as each
            // value's own code would be.
            let int8 = PackedConvI8::new(isa, &case.dense.layer(), geometry).unwrap();
            let codes: Vec<u8> = x.iter().map(|&v| case.dense.input.quantize(v)).collect();
            let mut by_floats = vec![0f32; shared.len()];
            let mut by_codes = vec![0f32; shared.len()];
            for (input, out) in [
                (Input::F32(&x), &mut by_floats),
                (Input::U8(&codes), &mut by_codes),
            ] {
                let out = (Output::F32(out), None);
                conv_i8(&int8, input, case.size, out, layouts, &mut scratch).unwrap();
            }
            assert_eq!(
                by_floats, by_codes,
                "{isa} int8 from f32 {kernel:?} {layouts:?}"
            );
            // An empty batch lays out nothing and writes nothing.
            let mut none: [f32; 0] = [];
            let out = (&mut none[..], None);
            conv_f32(&packed, &[], [0, h, w], out, layouts, &mut scratch).unwrap();
            let int8 = PackedConvI8::new(isa, &case.dense.layer(), geometry).unwrap();
            let empty = (Output::F32(&mut none), None);
            conv_i8(
                &int8,
                Input::F32(&[]),
                [0, h, w],
                empty,
                layouts,
                &mut scratch,
            )
            .unwrap();
        }
    }
}

/// A 3×3 box filter over ones by hand: a padded corner sums 4 taps, an edge 6, the middle 9;
/// stride 2 keeps every other one; a kernel larger than the padded input is an error.
#[test]
fn convolution_geometry_by_hand() {
    let g = ConvGeometry {
        channels: 1,
        kernel: [3, 3],
        pads: [1; 4],
        strides: [1; 2],
        dilations: [1; 2],
    };
    let layer = QuantizedLayer {
        weights: &[1; 9],
        weight_scales: &[1.0],
        bias: &[0.0],
        input: QuantParams::new(1.0, 10).unwrap(),
        activation: Activation::None,
        n: 1,
        k: 9,
    };
    // Code 11 with zero point 10 is the value 1.
    let codes = [11u8; 9];
    let mut scratch = ConvScratch::default();
    for isa in available() {
        // `outputs` values of the convolution of `codes[..h·w]` as [1, 1, h, w] by `geometry`.
        let mut run = |geometry, side: usize, outputs| {
            let packed = PackedConvI8::new(isa, &layer, geometry).unwrap();
            let mut out = vec![0f32; outputs];
            let input = Input::U8(&codes[..side * side]);
            conv_i8(
                &packed,
                input,
                [1, side, side],
                (Output::F32(&mut out), None),
                Layouts::ONNX,
                &mut scratch,
            )
            .map(|()| out)
        };
        assert_eq!(
            run(g, 3, 9).unwrap(),
            [4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0],
            "{isa}"
        );
        let strided = ConvGeometry {
            strides: [2; 2],
            ..g
        };
        assert_eq!(run(strided, 3, 4).unwrap(), [4.0; 4], "{isa}");
        // Stride 2 over a 2x2 input padded by 1: one output, the 4 taps inside.
        assert_eq!(run(strided, 2, 1).unwrap(), [4.0], "{isa}");
        let unpadded = ConvGeometry { pads: [0; 4], ..g };
        assert_eq!(
            run(unpadded, 2, 0).unwrap_err().to_string(),
            "convolution geometry: the dilated kernel does not fit the padded input"
        );
    }
}

/// The products at the edge of the int8 range: every weight −128 and every activation at the
/// code that the s8×s8 ARM kernels read as −128 (code 0) or at 255, with zero points that put
/// the dequantized values at both ends, at depths that fill whole kernel units and leave tails.
#[test]
fn weights_of_minus_128_are_exact_in_every_kernel() {
    for (k, code, zp) in [(64, 0u8, 255u8), (64, 255, 0), (37, 0, 128), (300, 0, 0)] {
        let (m, n) = (5, 9);
        let case = I8Case {
            m,
            n,
            k,
            codes: vec![code; m * k],
            weights: vec![-128i8; n * k],
            w_scales: vec![1e-3; n],
            bias: vec![0.25; n],
            input: QuantParams::new(0.01, zp).unwrap(),
            activation: Activation::None,
        };
        for isa in available() {
            case.check(isa).unwrap();
        }
        // The exact sum, so that a kernel and the reference cannot agree on a wrong answer.
        let layer = case.layer();
        let mut want = vec![0f32; m * n];
        reference::gemm_i8(&layer, &case.codes, m, Output::F32(&mut want)).unwrap();
        let acc = (i32::from(code) - i32::from(zp)) * -128 * k as i32;
        let scale = 0.01f32 * 1e-3;
        assert_eq!(
            want[0],
            acc as f32 * scale + 0.25,
            "k {k} code {code} zp {zp}"
        );
    }
}

#[test]
fn f32_input_is_quantized_like_the_reference() {
    // A small product, and one past the size from which the quantizing is shared across the
    // thread team with rows longer than the 256-value pieces of the AVX2/NEON forms; one kept
    // scratch for every product of a family (the larger first), as the engine keeps it.
    let cases = [(40, 9, 601), (5, 9, 37)];
    let mut scratch: Vec<GemmScratch> =
        available().iter().map(|_| GemmScratch::default()).collect();
    for (m, n, k) in cases {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 113) as f32 / 20.0 - 2.5)
            .collect();
        let w: Vec<i8> = (0..n * k)
            .map(|i| ((i * 31) % 255) as i8)
            .map(|v| v.max(-127))
            .collect();
        let scales = vec![0.01f32; n];
        let bias = vec![0.5f32; n];
        let input = QuantParams::from_range(-2.5, 3.0);
        let layer = QuantizedLayer {
            weights: &w,
            weight_scales: &scales,
            bias: &bias,
            input,
            activation: Activation::Silu,
            n,
            k,
        };
        let codes: Vec<u8> = x.iter().map(|&v| input.quantize(v)).collect();
        let mut want = vec![0f32; m * n];
        reference::gemm_i8(&layer, &codes, m, Output::F32(&mut want)).unwrap();
        for (isa, scratch) in available().into_iter().zip(&mut scratch) {
            let packed = PackedI8::new(isa, &layer).unwrap();
            let mut got = vec![0f32; m * n];
            gemm_i8(&packed, Input::F32(&x), m, Output::F32(&mut got)).unwrap();
            assert_eq!(got, want, "{isa}, [{m}, {k}]");
            let mut kept = vec![0f32; m * n];
            gemm_i8_reusing(&packed, Input::F32(&x), m, Output::F32(&mut kept), scratch).unwrap();
            assert_eq!(kept, want, "{isa}, [{m}, {k}], kept scratch");
        }
    }
}

#[test]
fn wrong_shapes_are_errors_not_panics() {
    let packed = PackedF32::new(Isa::Scalar, &[0.0; 6], &[0.0; 2], 2, 3, Activation::None).unwrap();
    let mut out = vec![0f32; 2];
    let err = gemm_f32(&packed, &[0.0; 5], 1, &mut out).unwrap_err();
    assert_eq!(err.to_string(), "input: expected 3 elements, got 5");
    assert!(PackedF32::new(Isa::Scalar, &[0.0; 5], &[0.0; 2], 2, 3, Activation::None).is_err());
    let bad = QuantParams {
        scale: 0.0,
        zero_point: 0,
    };
    let err = PackedI8::from_f32(
        Isa::Scalar,
        &[0.0; 6],
        &[0.0; 2],
        2,
        3,
        bad,
        Activation::None,
    );
    assert!(err.is_err());
}

/// CI lists the families each emulated CPU must offer (`MF_EXPECT_KERNELS=neon,dotprod`), so a
/// run that silently lost a kernel fails instead of testing fewer paths.
#[test]
fn expected_kernels_are_available() {
    let Ok(list) = std::env::var("MF_EXPECT_KERNELS") else {
        return;
    };
    for name in list.split(',').filter(|s| !s.is_empty()) {
        let isa = Isa::from_name(name).unwrap();
        assert!(
            isa.is_available(),
            "{name} expected on this CPU but not available"
        );
    }
    println!("kernels tested: {:?}", available());
}
