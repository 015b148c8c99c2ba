//! Int8 matrix multiply kernel: `smmla` multiplies a 2×8 block of activations (two rows,
//! eight depths) by an 8×2 block of weights (two columns) into a 2×2 i32 block. Rows are
//! packed in pairs (an odd last row is padded with zeros), columns in pairs; tiles are 8×8, so
//! 16 accumulators each hold a 2×2 block `[r0c0, r0c1, r1c0, r1c1]`.
use core::arch::aarch64::*;
use core::arch::asm;

use crate::arch::aarch64::neon::EPILOGUE;
use crate::arch::{AForm, Depth, I8Micro, by_rows};

/// i8mm int8 tiles: 8×8, depth unit 8, rows in pairs, s8 activations.
pub(crate) static I8: I8Micro = I8Micro {
    mr: 8,
    nr: 8,
    ku: 8,
    row_align: 2,
    a_form: AForm::S8,
    tile: i8_tile,
    epilogue: &EPILOGUE,
    bracket: None,
};

/// `acc += smmla(x, w)`: a 2×8 by 8×2 product.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn smmla(acc: int32x4_t, x: int8x16_t, w: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only arithmetic; the feature is enabled on this function.
    unsafe {
        asm!("smmla {acc:v}.4s, {x:v}.16b, {w:v}.16b",
             acc = inout(vreg) acc, x = in(vreg) x, w = in(vreg) w,
             options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

unsafe fn i8_tile(rows: usize, depth: Depth, a: *const u8, lda: usize, b: *const i8, c: *mut i32) {
    // SAFETY: the caller holds `I8Micro`'s tile contract; `by_rows!` passes it on unchanged to the
    // kernel instance for exactly `rows` rows, and every row count up to `mr` has an instance.
    unsafe { by_rows!(rows / 2, i8_pairs, (depth, a, lda, b, c), [1, 2, 3, 4]) }
}

#[target_feature(enable = "neon,i8mm")]
unsafe fn i8_pairs<const P: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    let mut acc = [[vdupq_n_s32(0); 4]; P];
    let mut bp = b;
    for run in 0..depth.runs {
        // SAFETY: run `run` starts `run · stride` bytes into each row (the tile contract).
        let mut ap = unsafe { a.add(run * depth.stride) } as *const i8;
        for _ in 0..depth.steps {
            // SAFETY: the run's steps of 64 weight bytes; 2·P rows (lda bytes apart) of 8 bytes a step.
            unsafe {
                let w = [
                    vld1q_s8(bp),
                    vld1q_s8(bp.add(16)),
                    vld1q_s8(bp.add(32)),
                    vld1q_s8(bp.add(48)),
                ];
                for (p, row) in acc.iter_mut().enumerate() {
                    let x = vcombine_s8(
                        vld1_s8(ap.add(2 * p * lda)),
                        vld1_s8(ap.add((2 * p + 1) * lda)),
                    );
                    for (q, sum) in row.iter_mut().enumerate() {
                        *sum = smmla(*sum, x, w[q]);
                    }
                }
                ap = ap.add(8);
                bp = bp.add(64);
            }
        }
    }
    for (p, row) in acc.iter().enumerate() {
        for (q, sum) in row.iter().enumerate() {
            // SAFETY: c has room for 2·P rows of 8 i32; the block's lanes are
            // [r0c0, r0c1, r1c0, r1c1] for rows 2p, 2p+1 and columns 2q, 2q+1.
            unsafe {
                let top = c.add(2 * p * 8 + 2 * q);
                vst1_s32(top, vget_low_s32(*sum));
                vst1_s32(top.add(8), vget_high_s32(*sum));
            }
        }
    }
}
