//! AVX-512 kernels: int8 with VNNI `vpdpbusd` (u8 activations × s8 weights, four products per
//! i32 lane) and fp32 with `vfmadd231ps`. Tiles are 12 rows × 32 columns: 24 zmm accumulators,
//! two weight vectors per depth step and one broadcast per row. Short tiles interleave several
//! accumulator sets over depth so that a matrix-vector product is not latency-bound.
use core::arch::asm;
use core::arch::x86_64::*;

use crate::arch::{AForm, Depth, F32Micro, I8Micro, by_rows, interleaved_runs};
use crate::epilogue::epilogue_for;

epilogue_for!("avx512f,avx512bw");

/// VNNI int8 tiles: 12×32, depth unit 4, u8 activations.
pub(crate) static I8: I8Micro = I8Micro {
    mr: 12,
    nr: 32,
    ku: 4,
    row_align: 1,
    a_form: AForm::U8,
    tile: i8_tile,
    epilogue: &EPILOGUE,
};

/// VNNI int8 tiles one vector wide, 12×16, for layers of at most 16 outputs (a U-Net's first
/// convolutions): the 32-wide tile would spend half its multiply-adds on zero columns.
pub(crate) static I8_NARROW: I8Micro = I8Micro {
    mr: 12,
    nr: 16,
    ku: 4,
    row_align: 1,
    a_form: AForm::U8,
    tile: i8_tile_narrow,
    epilogue: &EPILOGUE,
};

/// AVX-512F fp32 tiles: 12×32.
pub(crate) static F32: F32Micro = F32Micro {
    mr: 12,
    nr: 32,
    tile: f32_tile,
    epilogue: &EPILOGUE,
};

/// AVX-512F fp32 tiles one vector wide, 12×16, for layers of at most 16 outputs.
pub(crate) static F32_NARROW: F32Micro = F32Micro {
    mr: 12,
    nr: 16,
    tile: f32_tile_narrow,
    epilogue: &EPILOGUE,
};

unsafe fn i8_tile(rows: usize, depth: Depth, a: *const u8, lda: usize, b: *const i8, c: *mut i32) {
    // SAFETY: the caller holds `I8Micro`'s tile contract; `by_rows!` passes it on unchanged to the
    // kernel instance for exactly `rows` rows, and every row count up to `mr` has an instance.
    unsafe {
        by_rows!(rows, i8_rows, (depth, a, lda, b, c),
            [1 => 6, 2 => 3, 3 => 2, 4 => 2, 5 => 1, 6 => 1, 7 => 1, 8 => 1, 9 => 1, 10 => 1, 11 => 1, 12 => 1])
    }
}

unsafe fn i8_tile_narrow(
    rows: usize,
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: as for `i8_tile`, with `I8_NARROW`'s panels of one vector per depth step.
    unsafe {
        by_rows!(rows, i8_rows_narrow, (depth, a, lda, b, c),
            [1 => 8, 2 => 4, 3 => 3, 4 => 2, 5 => 2, 6 => 1, 7 => 1, 8 => 1, 9 => 1, 10 => 1, 11 => 1, 12 => 1])
    }
}

/// [`i8_rows_of`] for 32-wide panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn i8_rows<const R: usize, const S: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller's tile contract, for panels of two vectors.
    unsafe { i8_rows_of::<R, S, 2>(depth, a, lda, b, c) }
}

/// [`i8_rows_of`] for 16-wide panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn i8_rows_narrow<const R: usize, const S: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller's tile contract, for panels of one vector.
    unsafe { i8_rows_of::<R, S, 1>(depth, a, lda, b, c) }
}

/// R rows × `V` vectors of 16 columns: `S` accumulator sets interleaved over the depth.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn i8_rows_of<const R: usize, const S: usize, const V: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    let mut acc = [[[_mm512_setzero_si512(); V]; R]; S];
    let mut ap;
    let mut bp = b as *const __m512i;
    // SAFETY (every loop): the panel holds runs·steps steps of V vectors, each of the R rows
    // (lda bytes apart) every run's dwords from its start.
    macro_rules! step {
        ($set:expr) => {
            // SAFETY: as stated above `step!`: the loads stay inside the packed panel and the R rows
            // of activations that the tile contract promises.
            unsafe {
                let mut w = [_mm512_setzero_si512(); V];
                for (h, w) in w.iter_mut().enumerate() {
                    *w = _mm512_loadu_si512(bp.add(h));
                }
                for i in 0..R {
                    let x = _mm512_set1_epi32(ap.add(i * lda).cast::<i32>().read_unaligned());
                    for h in 0..V {
                        $set[i][h] = _mm512_dpbusd_epi32($set[i][h], x, w[h]);
                    }
                }
                ap = ap.add(4);
                bp = bp.add(V);
            }
        };
    }
    interleaved_runs!(depth, a, ap, acc, step);
    for i in 0..R {
        for h in 0..V {
            let mut sum = acc[0][i][h];
            for set in &acc[1..] {
                sum = _mm512_add_epi32(sum, set[i][h]);
            }
            // SAFETY: c has room for R rows of V·16 i32.
            unsafe { _mm512_storeu_si512(c.add((i * V + h) * 16) as *mut __m512i, sum) };
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
        by_rows!(rows, f32_rows, (depth, a, lda, b, c),
            [1 => 6, 2 => 3, 3 => 2, 4 => 2, 5 => 1, 6 => 1, 7 => 1, 8 => 1, 9 => 1, 10 => 1, 11 => 1, 12 => 1])
    }
}

unsafe fn f32_tile_narrow(
    rows: usize,
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    // SAFETY: as for `f32_tile`, with `F32_NARROW`'s panels of one vector per depth step.
    unsafe {
        by_rows!(rows, f32_rows_narrow, (depth, a, lda, b, c),
            [1 => 8, 2 => 4, 3 => 3, 4 => 2, 5 => 2, 6 => 1, 7 => 1, 8 => 1, 9 => 1, 10 => 1, 11 => 1, 12 => 1])
    }
}

/// [`f32_rows_of`] for 32-wide panels.
#[target_feature(enable = "avx512f")]
unsafe fn f32_rows<const R: usize, const S: usize>(
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    // SAFETY: the caller's tile contract, for panels of two vectors.
    unsafe { f32_rows_of::<R, S, 2>(depth, a, lda, b, c) }
}

/// [`f32_rows_of`] for 16-wide panels.
#[target_feature(enable = "avx512f")]
unsafe fn f32_rows_narrow<const R: usize, const S: usize>(
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    // SAFETY: the caller's tile contract, for panels of one vector.
    unsafe { f32_rows_of::<R, S, 1>(depth, a, lda, b, c) }
}

/// R rows × `V` vectors of 16 columns: `S` accumulator sets interleaved over the depth.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn f32_rows_of<const R: usize, const S: usize, const V: usize>(
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    let mut acc = [[[_mm512_setzero_ps(); V]; R]; S];
    let mut ap;
    let mut bp = b;
    // SAFETY (every loop): the panel holds runs·steps steps of V·16 weights, each of the R
    // rows (lda apart) every run's activations from its start.
    macro_rules! step {
        ($set:expr) => {
            // SAFETY: as stated above `step!`: the loads stay inside the packed panel and the R rows
            // of activations that the tile contract promises.
            unsafe {
                let mut w = [_mm512_setzero_ps(); V];
                for (h, w) in w.iter_mut().enumerate() {
                    *w = _mm512_loadu_ps(bp.add(h * 16));
                }
                for i in 0..R {
                    let x = _mm512_set1_ps(*ap.add(i * lda));
                    for h in 0..V {
                        $set[i][h] = _mm512_fmadd_ps(x, w[h], $set[i][h]);
                    }
                }
                ap = ap.add(1);
                bp = bp.add(V * 16);
            }
        };
    }
    interleaved_runs!(depth, a, ap, acc, step);
    for i in 0..R {
        for h in 0..V {
            let mut sum = acc[0][i][h];
            for set in &acc[1..] {
                sum = _mm512_add_ps(sum, set[i][h]);
            }
            // SAFETY: c has room for R rows of V·16 f32.
            unsafe { _mm512_storeu_ps(c.add((i * V + h) * 16), sum) };
        }
    }
}

/// Runs `iters` rounds of 24 independent `vpdpbusd` on registers (no memory operands) and
/// returns the int8 operations done (64 multiply-adds per instruction, 2 operations each).
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512BW and AVX-512 VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn peak_i8(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    let x = _mm512_set1_epi32(0x0101_0101);
    let y = _mm512_set1_epi32(0x0102_0304);
    // SAFETY: register-only arithmetic on clobbered registers; the loop counter ends at 0.
    unsafe {
        asm!(
            "2:",
            "vpdpbusd zmm0, {x}, {y}",
            "vpdpbusd zmm1, {x}, {y}",
            "vpdpbusd zmm2, {x}, {y}",
            "vpdpbusd zmm3, {x}, {y}",
            "vpdpbusd zmm4, {x}, {y}",
            "vpdpbusd zmm5, {x}, {y}",
            "vpdpbusd zmm6, {x}, {y}",
            "vpdpbusd zmm7, {x}, {y}",
            "vpdpbusd zmm8, {x}, {y}",
            "vpdpbusd zmm9, {x}, {y}",
            "vpdpbusd zmm10, {x}, {y}",
            "vpdpbusd zmm11, {x}, {y}",
            "vpdpbusd zmm12, {x}, {y}",
            "vpdpbusd zmm13, {x}, {y}",
            "vpdpbusd zmm14, {x}, {y}",
            "vpdpbusd zmm15, {x}, {y}",
            "vpdpbusd zmm16, {x}, {y}",
            "vpdpbusd zmm17, {x}, {y}",
            "vpdpbusd zmm18, {x}, {y}",
            "vpdpbusd zmm19, {x}, {y}",
            "vpdpbusd zmm20, {x}, {y}",
            "vpdpbusd zmm21, {x}, {y}",
            "vpdpbusd zmm22, {x}, {y}",
            "vpdpbusd zmm23, {x}, {y}",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            x = in(zmm_reg) x,
            y = in(zmm_reg) y,
            out("zmm0") _,
            out("zmm1") _,
            out("zmm2") _,
            out("zmm3") _,
            out("zmm4") _,
            out("zmm5") _,
            out("zmm6") _,
            out("zmm7") _,
            out("zmm8") _,
            out("zmm9") _,
            out("zmm10") _,
            out("zmm11") _,
            out("zmm12") _,
            out("zmm13") _,
            out("zmm14") _,
            out("zmm15") _,
            out("zmm16") _,
            out("zmm17") _,
            out("zmm18") _,
            out("zmm19") _,
            out("zmm20") _,
            out("zmm21") _,
            out("zmm22") _,
            out("zmm23") _,
            options(nostack, nomem),
        );
    }
    iters * 24 * 64 * 2
}

/// Runs `iters` rounds of 24 independent `vfmadd231ps` and returns the flops done.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn peak_f32(iters: u64) -> u64 {
    if iters == 0 {
        return 0;
    }
    let x = _mm512_set1_ps(1.0);
    let y = _mm512_set1_ps(0.0);
    // SAFETY: register-only arithmetic on clobbered registers; the loop counter ends at 0.
    unsafe {
        asm!(
            "2:",
            "vfmadd231ps zmm0, {x}, {y}",
            "vfmadd231ps zmm1, {x}, {y}",
            "vfmadd231ps zmm2, {x}, {y}",
            "vfmadd231ps zmm3, {x}, {y}",
            "vfmadd231ps zmm4, {x}, {y}",
            "vfmadd231ps zmm5, {x}, {y}",
            "vfmadd231ps zmm6, {x}, {y}",
            "vfmadd231ps zmm7, {x}, {y}",
            "vfmadd231ps zmm8, {x}, {y}",
            "vfmadd231ps zmm9, {x}, {y}",
            "vfmadd231ps zmm10, {x}, {y}",
            "vfmadd231ps zmm11, {x}, {y}",
            "vfmadd231ps zmm12, {x}, {y}",
            "vfmadd231ps zmm13, {x}, {y}",
            "vfmadd231ps zmm14, {x}, {y}",
            "vfmadd231ps zmm15, {x}, {y}",
            "vfmadd231ps zmm16, {x}, {y}",
            "vfmadd231ps zmm17, {x}, {y}",
            "vfmadd231ps zmm18, {x}, {y}",
            "vfmadd231ps zmm19, {x}, {y}",
            "vfmadd231ps zmm20, {x}, {y}",
            "vfmadd231ps zmm21, {x}, {y}",
            "vfmadd231ps zmm22, {x}, {y}",
            "vfmadd231ps zmm23, {x}, {y}",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            x = in(zmm_reg) x,
            y = in(zmm_reg) y,
            out("zmm0") _,
            out("zmm1") _,
            out("zmm2") _,
            out("zmm3") _,
            out("zmm4") _,
            out("zmm5") _,
            out("zmm6") _,
            out("zmm7") _,
            out("zmm8") _,
            out("zmm9") _,
            out("zmm10") _,
            out("zmm11") _,
            out("zmm12") _,
            out("zmm13") _,
            out("zmm14") _,
            out("zmm15") _,
            out("zmm16") _,
            out("zmm17") _,
            out("zmm18") _,
            out("zmm19") _,
            out("zmm20") _,
            out("zmm21") _,
            out("zmm22") _,
            out("zmm23") _,
            options(nostack, nomem),
        );
    }
    iters * 24 * 16 * 2
}
