//! Activations applied in the epilogue, defined with IEEE operations alone (additions,
//! multiplications, divisions and fused multiply-adds, each rounded once; no library `exp`), so
//! that every target, the Cortex-M7 included, computes the same bits.

/// The activation a layer's epilogue applies after scale and bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// SiLU (swish): `y / (1 + exp(−y))`.
    Silu,
    /// GELU, tanh approximation ([`gelu_tanh`]).
    GeluTanh,
}

impl Activation {
    /// Applies the activation to one value.
    #[inline(always)]
    pub fn apply(self, y: f32) -> f32 {
        match self {
            Activation::None => y,
            Activation::Silu => silu(y),
            Activation::GeluTanh => gelu_tanh(y),
        }
    }
}

/// `x / (1 + exp(−x))` with [`exp`].
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// GELU's cubic coefficient, 0.044715, in f32.
pub const GELU_CUBIC: f32 = 0.044_715;

/// √(2/π) rounded to f32, GELU's tanh-argument scale.
pub const GELU_SCALE: f32 = 0.797_884_560_802_865_4_f64 as f32;

/// GELU, tanh approximation: `x · ((1 + tanh(√(2/π) · (x³ · 0.044715 + x))) · 0.5)`, as
/// PyTorch's `gelu(approximate="tanh")`. Each operation is rounded in the order the exported
/// graph takes them (`Mul`, `Mul`, `Mul`, `Add`, `Mul`, `Tanh`, `Add`, `Mul`, `Mul`; [`tanh`]),
/// so the fused activation gives the same bits as that chain of nodes.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let inner = x * x * x * GELU_CUBIC + x;
    let gate = tanh(inner * GELU_SCALE) + 1.0;
    x * (gate * 0.5)
}

/// [`gelu_tanh`] of each value of `x`, in place, the same bits, through `gate` (as long as `x`)
/// for tanh's argument: two short loops whose iterations a core overlaps, where one long chain
/// per value over a short tile row left it waiting (the int8 epilogue into codes,
/// `epilogue::finish_gelu_tile_i8`).
#[inline(always)]
pub fn gelu_tanh_in_place(x: &mut [f32], gate: &mut [f32]) {
    let gate = &mut gate[..x.len()];
    for (g, &v) in gate.iter_mut().zip(x.iter()) {
        *g = (v * v * v * GELU_CUBIC + v) * GELU_SCALE;
    }
    // tanh's output feeds the product, not a store of its own: its small-input case then
    // stays a blend (stored in place, LLVM made it a masked store, slow on AMD cores).
    for (v, &g) in x.iter_mut().zip(gate.iter()) {
        *v *= (tanh(g) + 1.0) * 0.5;
    }
}

/// 1.5 · 2^23: adding and subtracting it rounds an f32 of magnitude below 2^22 to the nearest
/// integer, ties to even, under the default rounding mode.
pub(crate) const ROUND_MAGIC: f32 = 12_582_912.0;

/// `a · b + c` rounded once (IEEE 754 fusedMultiplyAdd): the FMA instruction in the families
/// compiled with it, libm's `fmaf` elsewhere (the C library's with std, the `libm` crate's
/// without), correctly rounded either way, so a CPU without FMA gets the same bits, only slower;
/// without std on Arm with the `vfp4` feature, the FPU's `vfma.f32` ([`vfma`]).
#[inline(always)]
pub(crate) fn fused(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(feature = "std")]
    let sum = a.mul_add(b, c);
    #[cfg(all(not(feature = "std"), feature = "vfp4", target_arch = "arm"))]
    let sum = vfma(a, b, c);
    #[cfg(all(not(feature = "std"), not(all(feature = "vfp4", target_arch = "arm"))))]
    let sum = libm::fmaf(a, b, c);
    sum
}

/// `a · b + c` by the VFPv4 instruction `vfma.f32` (Cortex-M4F, M7 and later): libm's software
/// `fmaf` costs the firmware half again its instructions per image. The operands travel in core
/// registers and the three FPU registers used are saved and restored around the instruction,
/// since Rust's `asm!` names FPU registers only for targets whose features it knows (not the
/// Cortex-M ones, in Rust 1.95).
#[cfg(all(not(feature = "std"), feature = "vfp4", target_arch = "arm"))]
#[inline(always)]
fn vfma(a: f32, b: f32, c: f32) -> f32 {
    let mut sum = c.to_bits();
    // SAFETY: `vfma.f32` exists on every CPU the `vfp4` feature is for (its contract); s0-s2 are
    // pushed before and popped after their use, so no register the compiler uses changes, and
    // the block reads and writes no memory but its own pushes below the stack pointer.
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s2}}",
            "vmov s0, {a}",
            "vmov s1, {b}",
            "vmov s2, {sum}",
            "vfma.f32 s2, s0, s1",
            "vmov {sum}, s2",
            "vpop {{s0-s2}}",
            a = in(reg) a.to_bits(),
            b = in(reg) b.to_bits(),
            sum = inout(reg) sum,
            options(pure, nomem, preserves_flags),
        );
    }
    f32::from_bits(sum)
}

/// `exp(x)` within about 2 ulp on [−87.3, 88.3] (clamped outside), from Cephes' `expf`:
/// `x = n·ln 2 + r`, a degree-7 polynomial in `r`, then `2^n` through the exponent bits.
/// Every step is a single IEEE operation ([`fused`] multiply-adds for the reduction and the
/// polynomial: a third fewer operations than multiplying and adding apart, which is what a
/// GroupNorm + SiLU pass spends its time on), so the result is the same on every target.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let shifted = fused(x, LOG2E, ROUND_MAGIC);
    let n = shifted - ROUND_MAGIC;
    // The integer n, read from the mantissa bits (vectorizes, unlike a saturating cast).
    let n_int = shifted.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
    let r = fused(-n, LN2_HI, x);
    let r = fused(-n, LN2_LO, r);
    let p = [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ]
    .iter()
    .fold(1.987_569_1e-4, |p, &c| fused(p, r, c));
    let y = fused(p, r * r, r) + 1.0;
    let pow2n = f32::from_bits(((n_int + 127) as u32) << 23);
    y * pow2n
}

/// tanh in f32 arithmetic alone: the odd 13/6 rational approximation Eigen uses (its
/// `generic_fast_tanh_float`), within a few float rounding steps of the true value, clamped
/// where tanh rounds to ±1, and `x` itself below 4e-4. Both polynomials by [`fused`]
/// multiply-adds, as Eigen evaluates them where the CPU fuses, so the same bits on every
/// target and no call into a libm's `tanh` per element.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    // The smallest input at which the fused rational gives exactly 1 (Eigen's 7.905311 is
    // that point for the unfused one), so GELU passes large inputs through unchanged.
    const CLAMP: f32 = 7.907_765_4;
    const ALPHA: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    if x.abs() < 4e-4 {
        return x;
    }
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let p = ALPHA[..6]
        .iter()
        .rev()
        .fold(ALPHA[6], |acc, &a| fused(acc, x2, a))
        * x;
    let q = BETA[..3]
        .iter()
        .rev()
        .fold(BETA[3], |acc, &b| fused(acc, x2, b));
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_within_a_few_ulp() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = libm_exp(x);
            let got = exp(x);
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
            assert!(ulp <= 3, "exp({x}) = {got}, want {want} ({ulp} ulp)");
            x += 0.0137;
        }
    }

    #[test]
    fn silu_has_its_known_values() {
        assert_eq!(silu(0.0), 0.0);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((silu(-1.0) + 0.268_941_4).abs() < 1e-6);
        assert!(silu(-100.0).abs() < 1e-30);
        assert_eq!(silu(100.0), 100.0);
    }

    #[test]
    fn gelu_tanh_is_within_float_rounding_of_the_f64_formula() {
        extern crate std;
        for i in -30_000..=30_000 {
            let x = i as f32 * 3e-4;
            let xd = x as f64;
            let want = 0.5
                * xd
                * (1.0
                    + ((2.0 / core::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            let got = gelu_tanh(x) as f64;
            // 1 + tanh cancels for negative x: the error is relative to |x|, not to the value.
            let bound = 1e-6 * (want.abs() + xd.abs());
            assert!(
                (got - want).abs() <= bound,
                "gelu({x}) = {got}, want {want}"
            );
        }
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert_eq!(gelu_tanh(20.0), 20.0);
        assert_eq!(gelu_tanh(-20.0), 0.0);
    }

    #[test]
    fn gelu_in_place_gives_each_value_the_bits_of_gelu_tanh() {
        extern crate std;
        // Every sign and region: tanh's linear zone, its rational, its clamp and beyond, the
        // non-finite values, and a sweep of ordinary values.
        let special = [
            0.0,
            -0.0,
            1e-30,
            -3.9e-4,
            4e-4,
            -4.1e-4,
            0.3,
            -1.7,
            7.9,
            -7.907_765_4,
            8.5,
            -40.0,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let sweep = (-40_000..40_000).map(|i| i as f32 * 2.7e-4);
        let x: std::vec::Vec<f32> = special.into_iter().chain(sweep).collect();
        let mut got = x.clone();
        gelu_tanh_in_place(&mut got, &mut std::vec![0.0; x.len()]);
        for (&x, got) in x.iter().zip(got) {
            let want = gelu_tanh(x);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "gelu({x}): in place {got}, one value {want}"
            );
        }
    }

    fn libm_exp(x: f32) -> f32 {
        extern crate std;
        (x as f64).exp() as f32
    }

    #[test]
    fn tanh_is_within_a_few_rounding_steps_of_the_true_value() {
        extern crate std;
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 5e-5;
            let want = (x as f64).tanh();
            let err = (tanh(x) as f64 - want).abs() / want.abs().max(1e-30);
            worst = worst.max(if want == 0.0 {
                tanh(x).abs() as f64
            } else {
                err
            });
        }
        assert!(worst < 1e-6, "relative error {worst:e}");
        assert_eq!(tanh(40.0), 1.0);
        assert_eq!(tanh(-40.0), -1.0);
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(1e-30), 1e-30);
    }
}
