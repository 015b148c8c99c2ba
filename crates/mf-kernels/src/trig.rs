//! sin and cos for sinusoidal embeddings (a network's time embedding: a few hundred values a
//! generation, arguments up to about a thousand), defined with IEEE operations alone so that
//! every target computes the same bits, and in a body that vectorizes ([`sin_cos_into`]):
//! libm's `sinf` took 15 ns a value in the DiT's embeddings.
//!
//! `x = n·π/2 + r` with `n` the nearest integer to `x·2/π` and `r` by a three-part Cody-Waite
//! reduction ([`fused`] multiply-adds, exact products), then Cephes' `sinf`/`cosf` polynomials
//! on `r ∈ [−π/4, π/4]` and the quadrant's choice and sign. Beyond [`REDUCED`] (and for
//! infinities and NaN) libm's `sinf`/`cosf`, whose reduction holds for any argument.
use crate::activation::{ROUND_MAGIC, fused};

/// Arguments up to this magnitude are reduced here (`n` below 2^13: the three parts of π/2
/// leave an error of about `n · 2^−76` in `r`).
pub const REDUCED: f32 = 8192.0;

/// Which of the two functions: the number of quarter turns added to the argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wave {
    /// sin.
    Sin,
    /// cos, sin a quarter turn on.
    Cos,
}

impl Wave {
    /// The quarter turns added to the argument's quadrant.
    fn quarter_turns(self) -> i32 {
        match self {
            Wave::Sin => 0,
            Wave::Cos => 1,
        }
    }

    /// libm's function, for arguments beyond [`REDUCED`]: kept out of line, so that the
    /// families' vectorized loops share one copy.
    #[inline(never)]
    fn libm(self, x: f32) -> f32 {
        match self {
            Wave::Sin => libm::sinf(x),
            Wave::Cos => libm::cosf(x),
        }
    }
}

/// `sin(x)` ([`sin_cos_into`]'s value for one argument).
pub fn sin(x: f32) -> f32 {
    wave(x, Wave::Sin)
}

/// `cos(x)` ([`sin_cos_into`]'s value for one argument).
pub fn cos(x: f32) -> f32 {
    wave(x, Wave::Cos)
}

/// `wave` of `x`.
#[inline(always)]
fn wave(x: f32, wave: Wave) -> f32 {
    if x.abs() <= REDUCED {
        reduced(x, wave.quarter_turns())
    } else {
        wave.libm(x)
    }
}

/// sin of `x` plus `turns` quarter turns, for `|x| ≤ REDUCED`.
#[inline(always)]
fn reduced(x: f32, turns: i32) -> f32 {
    const TWO_OVER_PI: f32 = core::f32::consts::FRAC_2_PI;
    // π/2 as the sum of three floats: the nearest one, then the nearest to each remainder.
    const PIO2: [f32; 3] = [1.570_796_4, -4.371_139e-8, -1.715_124_5e-15];
    let shifted = fused(x, TWO_OVER_PI, ROUND_MAGIC);
    let n = shifted - ROUND_MAGIC;
    let quadrant = (shifted.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32 + turns) & 3;
    let r = PIO2.iter().fold(x, |r, &part| fused(-n, part, r));
    let r2 = r * r;
    // Cephes' sinf and cosf on [−π/4, π/4].
    let s = fused(
        fused(
            fused(-1.951_529_6e-4, r2, 8.332_161e-3),
            r2,
            -1.666_665_5e-1,
        ) * r2,
        r,
        r,
    );
    let c = fused(
        fused(
            fused(2.443_315_7e-5, r2, -1.388_731_6e-3),
            r2,
            4.166_664_6e-2,
        ) * r2,
        r2,
        fused(-0.5, r2, 1.0),
    );
    let value = if quadrant & 1 == 0 { s } else { c };
    if quadrant & 2 == 0 { value } else { -value }
}

/// `out[i] = wave(x[i])` over the shorter of the two: every argument through the reduction
/// (a loop that vectorizes), then the few beyond [`REDUCED`] again through libm.
#[cfg(feature = "alloc")]
#[inline(always)]
pub(crate) fn sin_cos_into(x: &[f32], out: &mut [f32], wave: Wave) {
    let turns = wave.quarter_turns();
    for (y, &v) in out.iter_mut().zip(x) {
        *y = reduced(v.clamp(-REDUCED, REDUCED), turns);
    }
    for (y, &v) in out.iter_mut().zip(x) {
        if v.is_nan() || v.abs() > REDUCED {
            *y = wave.libm(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest error against f64's sin and cos, in units of f32's spacing at the true value
    /// (at least that of 2^−24, the spacing near 1, for values near zero).
    fn worst_error(xs: impl Iterator<Item = f32>) -> f64 {
        extern crate std;
        let mut worst = 0f64;
        for x in xs {
            for (got, want) in [(sin(x), (x as f64).sin()), (cos(x), (x as f64).cos())] {
                let spacing = (want.abs().max(2f64.powi(-24)) * 2f64.powi(-23)).max(1e-45);
                worst = worst.max((got as f64 - want).abs() / spacing);
            }
        }
        worst
    }

    #[test]
    fn sin_and_cos_are_within_a_few_ulp_of_f64() {
        let small = (-20_000..=20_000).map(|i| i as f32 * 3.1e-4);
        assert!(worst_error(small) < 1.5, "|x| ≤ 6.2");
        // A time embedding's arguments: t · 1000 · 10000^(−k/128).
        let embedding = (0..=100).flat_map(|i| {
            (0..128).map(move |k| i as f32 * 10.0 * 10000f32.powf(-(k as f32) / 128.0))
        });
        assert!(worst_error(embedding) < 1.5, "embedding arguments");
        let wide = (-8192..=8192).map(|i| i as f32 * 0.999_7);
        assert!(worst_error(wide) < 1.5, "|x| ≤ 8192");
        assert!(
            worst_error([1e6f32, -3e7, 1e30].into_iter()) < 1.0,
            "libm beyond"
        );
        assert_eq!(sin(0.0), 0.0);
        assert_eq!(cos(0.0), 1.0);
        assert!(sin(f32::NAN).is_nan() && cos(f32::INFINITY).is_nan());
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn the_slice_loop_gives_the_values_one_by_one() {
        let x: [f32; 9] = [0.5, -3.0, 900.0, 8192.0, 8192.5, -1e9, f32::NAN, 1e-30, 7.0];
        for wave in [Wave::Sin, Wave::Cos] {
            let mut out = [0f32; 9];
            sin_cos_into(&x, &mut out, wave);
            let one = |v| match wave {
                Wave::Sin => sin(v),
                Wave::Cos => cos(v),
            };
            for (&v, &y) in x.iter().zip(&out) {
                assert_eq!(y.to_bits(), one(v).to_bits(), "{wave:?}({v})");
            }
        }
    }
}
