//! Every available kernel family against the scalar reference: int8 bit for bit, fp32 within
//! rounding, on random shapes (odd sizes, depths that are no multiple of any kernel's unit),
//! extreme zero points and extreme codes.
use mf_kernels::reference::{self, QuantizedLayer};
use mf_kernels::{
    Activation, Input, Isa, Output, PackedF32, PackedI8, QuantParams, gemm_f32, gemm_i8,
};
use proptest::prelude::*;

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
    prop_oneof![Just(Activation::None), Just(Activation::Silu)]
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
        Just(vec![-128i8; len]),
        Just(vec![-127i8; len]),
        Just(vec![127i8; len]),
    ]
}

fn zero_point() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0u8), Just(255u8), Just(128u8), any::<u8>()]
}

fn i8_case(max_m: usize, max_n: usize, max_k: usize) -> impl Strategy<Value = I8Case> {
    (1..=max_m, 1..=max_n, 1..=max_k).prop_flat_map(|(m, n, k)| {
        (
            codes(m * k),
            weights(n * k),
            prop::collection::vec(1e-4f32..1e-1, n),
            prop::collection::vec(-2.0f32..2.0, n),
            (1e-3f32..0.1, zero_point()),
            activation(),
        )
            .prop_map(
                move |(codes, weights, w_scales, bias, (s, zp), activation)| I8Case {
                    m,
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
    })
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
        prop_assert_eq!(got_q, want_q, "{} u8 output", isa);
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
    fn fp32_kernels_are_within_rounding(
        (m, n, k, a, w, bias, act) in (1usize..30, 1usize..70, 1usize..300).prop_flat_map(|(m, n, k)| (
            Just(m), Just(n), Just(k),
            prop::collection::vec(-4.0f32..4.0, m * k),
            prop::collection::vec(-1.0f32..1.0, n * k),
            prop::collection::vec(-1.0f32..1.0, n),
            activation(),
        ))
    ) {
        let mut want = vec![0f32; m * n];
        reference::gemm_f32(&a, &w, &bias, act, m, n, k, &mut want).unwrap();
        for isa in available() {
            let packed = PackedF32::new(isa, &w, &bias, n, k, act).unwrap();
            let mut got = vec![0f32; m * n];
            gemm_f32(&packed, &a, m, &mut got).unwrap();
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                // Each sum of k products may differ by k rounding steps of its magnitude.
                let (row, col) = (i / n, i % n);
                let magnitude: f32 = (0..k).map(|d| (a[row * k + d] * w[col * k + d]).abs()).sum();
                let tol = 4.0 * f32::EPSILON * k as f32 * (magnitude + bias[col].abs() + 1.0);
                prop_assert!((g - r).abs() <= tol, "{} at {}: {} vs {} (tol {})", isa, i, g, r, tol);
            }
        }
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
    let (m, n, k) = (5, 9, 37);
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
    for isa in available() {
        let packed = PackedI8::new(isa, &layer).unwrap();
        let mut got = vec![0f32; m * n];
        gemm_i8(&packed, Input::F32(&x), m, Output::F32(&mut got)).unwrap();
        assert_eq!(got, want, "{isa}");
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
