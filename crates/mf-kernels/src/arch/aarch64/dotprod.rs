//! Dot product kernel: `sdot` adds four s8·s8 products into each i32 lane. Weights are packed
//! four depths per column, so one 16-byte vector covers 4 columns. Activations go four depth
//! steps at a time: one 16-byte load per row, and the lane-indexed `sdot` (`x.4b[l]`) takes
//! step `l`'s four bytes from it, so a row is loaded once per 8 `sdot`s of each step instead of
//! once per step (llvm-mca: `tools/llvm-mca-kernels`). The last `steps mod 4` steps of a run load a row's
//! four bytes replicated (`ld1r`), so any row count reads only its own bytes. Tiles: 8×8.
use core::arch::aarch64::*;
use core::arch::asm;

use crate::arch::aarch64::neon::EPILOGUE;
use crate::arch::{AForm, Depth, I8Micro, by_rows};

/// dotprod int8 tiles: 8×8, depth unit 4, s8 activations.
pub(crate) static I8: I8Micro = I8Micro {
    mr: 8,
    nr: 8,
    ku: 4,
    row_align: 1,
    a_form: AForm::S8,
    tile: i8_tile,
    epilogue: &EPILOGUE,
    bracket: None,
};

/// `acc += sdot(w, x)`: lane l gains Σ_{u<4} w[4l+u]·x[4l+u].
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only arithmetic; the feature is enabled on this function.
    unsafe {
        asm!("sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
             acc = inout(vreg) acc, w = in(vreg) w, x = in(vreg) x,
             options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

/// `acc += sdot(w, x.4b[L])`: lane l gains Σ_{u<4} w[4l+u]·x[4L+u].
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot_lane<const L: i32>(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only arithmetic; the feature is enabled on this function.
    unsafe {
        asm!("sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{l}]",
             acc = inout(vreg) acc, w = in(vreg) w, x = in(vreg) x, l = const L,
             options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

unsafe fn i8_tile(rows: usize, depth: Depth, a: *const u8, lda: usize, b: *const i8, c: *mut i32) {
    // SAFETY: the caller holds `I8Micro`'s tile contract; `by_rows!` passes it on unchanged to the
    // kernel instance for exactly `rows` rows, and every row count up to `mr` has an instance.
    unsafe {
        by_rows!(rows, i8_rows, (depth, a, lda, b, c),
            [1 => 4, 2 => 2, 3 => 2, 4 => 1, 5 => 1, 6 => 1, 7 => 1, 8 => 1])
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn i8_rows<const R: usize, const S: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    let mut acc = [[[vdupq_n_s32(0); 2]; R]; S];
    let mut ap;
    let mut bp = b;
    // SAFETY (every loop): runs·steps steps of 32 weight bytes; R rows (lda bytes apart) each
    // holding every run's dwords from its start.
    macro_rules! step {
        ($set:expr) => {
            // SAFETY: as stated above `step!`: the loads stay inside the packed panel and the R rows
            // of activations that the tile contract promises.
            unsafe {
                let w0 = vld1q_s8(bp);
                let w1 = vld1q_s8(bp.add(16));
                for i in 0..R {
                    let x = vreinterpretq_s8_s32(vdupq_n_s32(
                        ap.add(i * lda).cast::<i32>().read_unaligned(),
                    ));
                    $set[i][0] = sdot($set[i][0], w0, x);
                    $set[i][1] = sdot($set[i][1], w1, x);
                }
                ap = ap.add(4);
                bp = bp.add(32);
            }
        };
    }
    // Four steps per pass: each row's 16 bytes once, step l from lane l (sets alternate).
    macro_rules! lane {
        ($l:literal, $x:expr) => {
            // SAFETY: as stated above `step!`: 32 weight bytes of this step.
            unsafe {
                let w0 = vld1q_s8(bp);
                let w1 = vld1q_s8(bp.add(16));
                let set = &mut acc[$l % S];
                for i in 0..R {
                    set[i][0] = sdot_lane::<$l>(set[i][0], w0, $x[i]);
                    set[i][1] = sdot_lane::<$l>(set[i][1], w1, $x[i]);
                }
                bp = bp.add(32);
            }
        };
    }
    for run in 0..depth.runs {
        // SAFETY: run `run` starts `run · stride` bytes into each row (the tile contract).
        ap = unsafe { a.add(run * depth.stride) };
        for _ in 0..depth.steps / 4 {
            // SAFETY: at least 4 steps remain, so each of the R rows has 16 bytes from `ap`.
            let x: [int8x16_t; R] =
                core::array::from_fn(|i| unsafe { vld1q_s8(ap.add(i * lda).cast::<i8>()) });
            lane!(0, x);
            lane!(1, x);
            lane!(2, x);
            lane!(3, x);
            // SAFETY: the 16 bytes just read.
            ap = unsafe { ap.add(16) };
        }
        for _ in 0..depth.steps % 4 {
            step!(acc[0]);
        }
    }
    for i in 0..R {
        for h in 0..2 {
            let mut sum = acc[0][i][h];
            for set in &acc[1..] {
                sum = vaddq_s32(sum, set[i][h]);
            }
            // SAFETY: c has room for R rows of 8 i32.
            unsafe { vst1q_s32(c.add(i * 8 + h * 4), sum) };
        }
    }
}
