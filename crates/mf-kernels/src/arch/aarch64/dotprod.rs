//! Dot product kernel: `sdot` adds four s8·s8 products into each i32 lane. Weights are packed
//! four depths per column, so one 16-byte vector covers 4 columns; a row's four activations are
//! loaded replicated (`ld1r`), so any row count reads only its own bytes. Tiles: 8×8.
use core::arch::aarch64::*;
use core::arch::asm;

use crate::arch::aarch64::neon::EPILOGUE;
use crate::arch::{AForm, I8Micro, by_rows};

/// dotprod int8 tiles: 8×8, depth unit 4, s8 activations.
pub(crate) static I8: I8Micro = I8Micro {
    mr: 8,
    nr: 8,
    ku: 4,
    row_align: 1,
    a_form: AForm::S8,
    tile: i8_tile,
    epilogue: &EPILOGUE,
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

unsafe fn i8_tile(rows: usize, kb: usize, a: *const u8, lda: usize, b: *const i8, c: *mut i32) {
    // SAFETY: the caller holds `I8Micro`'s tile contract; `by_rows!` passes it on unchanged to the
    // kernel instance for exactly `rows` rows, and every row count up to `mr` has an instance.
    unsafe {
        by_rows!(rows, i8_rows, (kb, a, lda, b, c),
            [1 => 4, 2 => 2, 3 => 2, 4 => 1, 5 => 1, 6 => 1, 7 => 1, 8 => 1])
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn i8_rows<const R: usize, const S: usize>(
    kb: usize,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    let mut acc = [[[vdupq_n_s32(0); 2]; R]; S];
    let mut ap = a;
    let mut bp = b;
    // SAFETY (both loops): kb steps of 32 weight bytes; R rows (lda bytes apart) of kb dwords.
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
    for _ in 0..kb / S {
        for set in acc.iter_mut() {
            step!(set);
        }
    }
    for _ in 0..kb % S {
        step!(acc[0]);
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
