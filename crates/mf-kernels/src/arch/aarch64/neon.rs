//! Plain NEON kernels. int8: `smull` and `smull2` multiply 16 s8 pairs into two vectors of i16
//! products (each |product| ≤ 128·128 = 16384, exact for every code, −128 included), and a
//! `sadalp` per vector accumulates them into four i32 lanes; each of the 4×4 tile's sums is
//! reduced across lanes at the end. Adding two products in one i16 lane first (`smlal2`, then
//! one `sadalp`: three instructions for 16 multiply-adds instead of four) would overflow at
//! (−128)·(−128) + (−128)·(−128) = 32768; weights without −128 (every symmetric quantizer's,
//! mf-export's among them) bound two products by 2·128·127 = 32512, so their layers get that
//! kernel ([`I8_PAIRED`]). fp32: `fmla` on 8×8 tiles.
use core::arch::aarch64::*;

use crate::arch::broadcast::{BroadcastOps, broadcast_rows};
use crate::arch::dot::dot_micros_for;
use crate::arch::{AForm, Depth, F32Micro, I8Micro, by_rows};
use crate::epilogue::epilogue_for;

epilogue_for!("neon");
dot_micros_for!("neon");

/// NEON int8 tiles: 4×4, depth unit 16, s8 activations.
pub(crate) static I8: I8Micro = I8Micro {
    mr: 4,
    nr: 4,
    ku: 16,
    row_align: 1,
    a_form: AForm::S8,
    tile: i8_tile,
    epilogue: &EPILOGUE,
    bracket: None,
};

/// [`I8`] for weights without −128: two products summed in an i16 lane before `sadalp`.
pub(crate) static I8_PAIRED: I8Micro = I8Micro {
    tile: i8_tile_paired,
    ..I8
};

/// NEON fp32 tiles: 8×8.
pub(crate) static F32: F32Micro = F32Micro {
    mr: 8,
    nr: 8,
    tile: f32_tile,
    stream_tile: f32_tile,
    stream_one_block: false,
    epilogue: &EPILOGUE,
};

unsafe fn i8_tile(rows: usize, depth: Depth, a: *const u8, lda: usize, b: *const i8, c: *mut i32) {
    // SAFETY: the caller holds `I8Micro`'s tile contract; `by_rows!` passes it on unchanged to the
    // kernel instance for exactly `rows` rows, and every row count up to `mr` has an instance.
    unsafe { by_rows!(rows, i8_rows, (depth, a, lda, b, c), [1, 2, 3, 4]) }
}

unsafe fn i8_tile_paired(
    rows: usize,
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: as for `i8_tile`; `I8_PAIRED` packs only weights without −128.
    unsafe { by_rows!(rows, i8_rows_paired, (depth, a, lda, b, c), [1, 2, 3, 4]) }
}

#[target_feature(enable = "neon")]
unsafe fn i8_rows<const R: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller's tile contract; NEON is enabled here.
    unsafe { i8_body::<R, false>(depth, a, lda, b, c) }
}

/// [`i8_rows`] for weights without −128.
#[target_feature(enable = "neon")]
unsafe fn i8_rows_paired<const R: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller's tile contract, with weights above −128; NEON is enabled here.
    unsafe { i8_body::<R, true>(depth, a, lda, b, c) }
}

/// The int8 tile of `R` rows: with `PAIRED`, each lane's two products summed in i16 before
/// `sadalp` (exact only when no weight is −128), else each product accumulated alone.
///
/// # Safety
/// The tile contract of [`I8Micro`]; with `PAIRED`, no packed weight is −128; the CPU has NEON.
#[inline(always)]
unsafe fn i8_body<const R: usize, const PAIRED: bool>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the CPU has NEON (the caller's contract).
    let zero = unsafe { vdupq_n_s32(0) };
    let mut acc = [[zero; 4]; R];
    let mut bp = b;
    for run in 0..depth.runs {
        // SAFETY: run `run` starts `run · stride` bytes into each row (the tile contract).
        let mut ap = unsafe { a.add(run * depth.stride) } as *const i8;
        for _ in 0..depth.steps {
            // SAFETY: the run's steps of 4 columns; R rows (lda bytes apart) of 16 bytes a step.
            unsafe {
                let w = [
                    vld1q_s8(bp),
                    vld1q_s8(bp.add(16)),
                    vld1q_s8(bp.add(32)),
                    vld1q_s8(bp.add(48)),
                ];
                for (i, row) in acc.iter_mut().enumerate() {
                    let x = vld1q_s8(ap.add(i * lda));
                    for (j, sum) in row.iter_mut().enumerate() {
                        let lo = vmull_s8(vget_low_s8(x), vget_low_s8(w[j]));
                        *sum = if PAIRED {
                            vpadalq_s16(*sum, vmlal_high_s8(lo, x, w[j]))
                        } else {
                            vpadalq_s16(vpadalq_s16(*sum, lo), vmull_high_s8(x, w[j]))
                        };
                    }
                }
                ap = ap.add(16);
                bp = bp.add(64);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, sum) in row.iter().enumerate() {
            // SAFETY: c has room for R rows of 4 i32.
            unsafe { *c.add(i * 4 + j) = vaddvq_s32(*sum) };
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
            [1 => 4, 2 => 2, 3 => 2, 4 => 1, 5 => 1, 6 => 1, 7 => 1, 8 => 1])
    }
}

/// [`broadcast_rows`] for fp32 panels of 8 columns.
#[target_feature(enable = "neon")]
unsafe fn f32_rows<const R: usize, const S: usize>(
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    // SAFETY: the caller's tile contract, for panels of two vectors; NEON is enabled here.
    unsafe { broadcast_rows::<Fmla, R, S, 2, false>(depth, a, lda, b, c) }
}

/// NEON fp32: a step is one activation of a row (`ld1r`) against 4 columns' weights, `fmla`
/// adding the products.
struct Fmla;

// SAFETY: each operation reads or writes exactly the elements its contract states, and needs
// no feature beyond NEON.
unsafe impl BroadcastOps for Fmla {
    type A = f32;
    type B = f32;
    type C = f32;
    type Acc = float32x4_t;
    type W = float32x4_t;
    type X = float32x4_t;
    const A_STEP: usize = 1;
    const B_VECTOR: usize = 4;
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        // SAFETY: the CPU has NEON (the trait's contract).
        unsafe { vdupq_n_f32(0.0) }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: 4 readable f32 (the trait's contract).
        unsafe { vld1q_f32(p) }
    }

    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> float32x4_t {
        // SAFETY: one readable f32 (the trait's contract).
        unsafe { vld1q_dup_f32(p) }
    }

    #[inline(always)]
    unsafe fn madd(acc: float32x4_t, x: float32x4_t, w: float32x4_t) -> float32x4_t {
        // SAFETY: the CPU has NEON (the trait's contract).
        unsafe { vfmaq_f32(acc, x, w) }
    }

    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: the CPU has NEON (the trait's contract).
        unsafe { vaddq_f32(a, b) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, acc: float32x4_t) {
        // SAFETY: room for 4 f32 (the trait's contract).
        unsafe { vst1q_f32(p, acc) }
    }
}
