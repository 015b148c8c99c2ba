//! AVX2 + FMA kernels. int8 sign-extends both operands to i16 and multiplies with `vpmaddwd`
//! (pairs of i16 products summed into i32): exact for every code, unlike `vpmaddubsw`, whose
//! i16 pair sums saturate at 2·255·127 > 32767. Tiles are 6 rows × 16 columns (12 ymm sums).
use core::arch::asm;
use core::arch::x86_64::*;

use crate::arch::{AForm, Depth, F32Micro, I8Micro, by_rows, interleaved_runs};
use crate::epilogue::epilogue_for;

epilogue_for!("avx2,fma");

/// AVX2 int8 tiles: 6×16, depth unit 2, activations widened to i16.
pub(crate) static I8: I8Micro = I8Micro {
    mr: 6,
    nr: 16,
    ku: 2,
    row_align: 1,
    a_form: AForm::I16,
    tile: i8_tile,
    epilogue: &EPILOGUE,
};

/// AVX2 + FMA fp32 tiles: 6×16.
pub(crate) static F32: F32Micro = F32Micro {
    mr: 6,
    nr: 16,
    tile: f32_tile,
    epilogue: &EPILOGUE,
};

unsafe fn i8_tile(rows: usize, depth: Depth, a: *const u8, lda: usize, b: *const i8, c: *mut i32) {
    // SAFETY: the caller holds `I8Micro`'s tile contract; `by_rows!` passes it on unchanged to the
    // kernel instance for exactly `rows` rows, and every row count up to `mr` has an instance.
    unsafe {
        by_rows!(rows, i8_rows, (depth, a, lda, b, c), [1 => 4, 2 => 2, 3 => 1, 4 => 1, 5 => 1, 6 => 1])
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn i8_rows<const R: usize, const S: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    let mut acc = [[[_mm256_setzero_si256(); 2]; R]; S];
    let mut ap;
    let mut bp = b as *const __m128i;
    // SAFETY (every loop): runs·steps steps of 32 weight bytes; R rows (lda bytes apart) each
    // holding every run's i16 pairs from its start.
    macro_rules! step {
        ($set:expr) => {
            // SAFETY: as stated above `step!`: the loads stay inside the packed panel and the R rows
            // of activations that the tile contract promises.
            unsafe {
                let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp));
                let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.add(1)));
                for i in 0..R {
                    let x = _mm256_set1_epi32(ap.add(i * lda).cast::<i32>().read_unaligned());
                    $set[i][0] = _mm256_add_epi32($set[i][0], _mm256_madd_epi16(x, b0));
                    $set[i][1] = _mm256_add_epi32($set[i][1], _mm256_madd_epi16(x, b1));
                }
                ap = ap.add(4);
                bp = bp.add(2);
            }
        };
    }
    interleaved_runs!(depth, a, ap, acc, step);
    for i in 0..R {
        for h in 0..2 {
            let mut sum = acc[0][i][h];
            for set in &acc[1..] {
                sum = _mm256_add_epi32(sum, set[i][h]);
            }
            // SAFETY: c has room for R rows of 16 i32.
            unsafe { _mm256_storeu_si256(c.add(i * 16 + h * 8) as *mut __m256i, sum) };
        }
    }
}

unsafe fn f32_tile(
    rows: usize,
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    // SAFETY: the caller holds `F32Micro`'s tile contract; `by_rows!` passes it on unchanged to the
    // kernel instance for exactly `rows` rows, and every row count up to `mr` has an instance.
    unsafe {
        by_rows!(rows, f32_rows, (depth, a, lda, b, c), [1 => 4, 2 => 2, 3 => 2, 4 => 1, 5 => 1, 6 => 1])
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn f32_rows<const R: usize, const S: usize>(
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    let mut acc = [[[_mm256_setzero_ps(); 2]; R]; S];
    let mut ap;
    let mut bp = b;
    // SAFETY (every loop): runs·steps steps of 16 weights; R rows (lda apart) each holding
    // every run's activations from its start.
    macro_rules! step {
        ($set:expr) => {
            // SAFETY: as stated above `step!`: the loads stay inside the packed panel and the R rows
            // of activations that the tile contract promises.
            unsafe {
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for i in 0..R {
                    let x = _mm256_set1_ps(*ap.add(i * lda));
                    $set[i][0] = _mm256_fmadd_ps(x, b0, $set[i][0]);
                    $set[i][1] = _mm256_fmadd_ps(x, b1, $set[i][1]);
                }
                ap = ap.add(1);
                bp = bp.add(16);
            }
        };
    }
    interleaved_runs!(depth, a, ap, acc, step);
    for i in 0..R {
        for h in 0..2 {
            let mut sum = acc[0][i][h];
            for set in &acc[1..] {
                sum = _mm256_add_ps(sum, set[i][h]);
            }
            // SAFETY: c has room for R rows of 16 f32.
            unsafe { _mm256_storeu_ps(c.add(i * 16 + h * 8), sum) };
        }
    }
}

/// Runs `iters` rounds of 12 independent `vpmaddwd` + `vpaddd` pairs (the int8 kernel's
/// multiply-accumulate) and returns the int8 operations done (16 multiply-adds per pair).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn peak_i8(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    let x = _mm256_set1_epi32(0x0001_0002);
    let y = _mm256_set1_epi32(0x0003_0004);
    // SAFETY: register-only arithmetic on clobbered registers; the loop counter ends at 0.
    unsafe {
        asm!(
            "2:",
            "vpmaddwd ymm12, {x}, {y}",
            "vpaddd ymm0, ymm0, ymm12",
            "vpmaddwd ymm13, {x}, {y}",
            "vpaddd ymm1, ymm1, ymm13",
            "vpmaddwd ymm12, {x}, {y}",
            "vpaddd ymm2, ymm2, ymm12",
            "vpmaddwd ymm13, {x}, {y}",
            "vpaddd ymm3, ymm3, ymm13",
            "vpmaddwd ymm12, {x}, {y}",
            "vpaddd ymm4, ymm4, ymm12",
            "vpmaddwd ymm13, {x}, {y}",
            "vpaddd ymm5, ymm5, ymm13",
            "vpmaddwd ymm12, {x}, {y}",
            "vpaddd ymm6, ymm6, ymm12",
            "vpmaddwd ymm13, {x}, {y}",
            "vpaddd ymm7, ymm7, ymm13",
            "vpmaddwd ymm12, {x}, {y}",
            "vpaddd ymm8, ymm8, ymm12",
            "vpmaddwd ymm13, {x}, {y}",
            "vpaddd ymm9, ymm9, ymm13",
            "vpmaddwd ymm12, {x}, {y}",
            "vpaddd ymm10, ymm10, ymm12",
            "vpmaddwd ymm13, {x}, {y}",
            "vpaddd ymm11, ymm11, ymm13",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            x = in(ymm_reg) x,
            y = in(ymm_reg) y,
            out("ymm0") _,
            out("ymm1") _,
            out("ymm2") _,
            out("ymm3") _,
            out("ymm4") _,
            out("ymm5") _,
            out("ymm6") _,
            out("ymm7") _,
            out("ymm8") _,
            out("ymm9") _,
            out("ymm10") _,
            out("ymm11") _,
            out("ymm12") _,
            out("ymm13") _,
            options(nostack, nomem),
        );
    }
    iters * 12 * 16 * 2
}

/// Runs `iters` rounds of 12 independent `vfmadd231ps` and returns the flops done.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn peak_f32(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    let x = _mm256_set1_ps(1.0);
    let y = _mm256_set1_ps(0.0);
    // SAFETY: register-only arithmetic on clobbered registers; the loop counter ends at 0.
    unsafe {
        asm!(
            "2:",
            "vfmadd231ps ymm0, {x}, {y}",
            "vfmadd231ps ymm1, {x}, {y}",
            "vfmadd231ps ymm2, {x}, {y}",
            "vfmadd231ps ymm3, {x}, {y}",
            "vfmadd231ps ymm4, {x}, {y}",
            "vfmadd231ps ymm5, {x}, {y}",
            "vfmadd231ps ymm6, {x}, {y}",
            "vfmadd231ps ymm7, {x}, {y}",
            "vfmadd231ps ymm8, {x}, {y}",
            "vfmadd231ps ymm9, {x}, {y}",
            "vfmadd231ps ymm10, {x}, {y}",
            "vfmadd231ps ymm11, {x}, {y}",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            x = in(ymm_reg) x,
            y = in(ymm_reg) y,
            out("ymm0") _,
            out("ymm1") _,
            out("ymm2") _,
            out("ymm3") _,
            out("ymm4") _,
            out("ymm5") _,
            out("ymm6") _,
            out("ymm7") _,
            out("ymm8") _,
            out("ymm9") _,
            out("ymm10") _,
            out("ymm11") _,
            options(nostack, nomem),
        );
    }
    iters * 12 * 8 * 2
}
