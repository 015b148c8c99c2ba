//! AVX2 + FMA kernels. int8 sign-extends both operands to i16 and multiplies with `vpmaddwd`
//! (pairs of i16 products summed into i32): exact for every code, unlike `vpmaddubsw`, whose
//! i16 pair sums saturate at 2·255·127 > 32767. Layers whose weights all lie within ±64 (a
//! 7-bit export, `mf-export --weight-bits 7`) bound a pair by 2·255·64 = 32640 and get the
//! `vpmaddubsw` tile instead ([`I8_SEVEN_BIT`]): u8 activations against s8 weights, 32
//! multiply-adds an instruction, the same sums. Tiles are 6 rows × 16 columns (12 ymm sums),
//! run by the shared broadcast body (`arch/broadcast.rs`).
use core::arch::asm;
use core::arch::x86_64::*;

use crate::arch::broadcast::{BroadcastOps, broadcast_rows};
use crate::arch::dot::dot_micros_for;
use crate::arch::{AForm, Depth, F32Micro, I8Micro, by_rows};
use crate::epilogue::epilogue_for;
use crate::quant::WeightBits;

epilogue_for!("avx2,fma");
dot_micros_for!("avx2,fma");

/// AVX2 int8 tiles: 6×16, depth unit 2, activations widened to i16.
pub(crate) static I8: I8Micro = I8Micro {
    mr: 6,
    nr: 16,
    ku: 2,
    row_align: 1,
    a_form: AForm::I16,
    tile: i8_tile,
    epilogue: &EPILOGUE,
    bracket: None,
};

/// [`I8`] for layers whose weights all lie within ±[`SEVEN_BIT_MAX`]
/// ([`crate::arch::for_weights`]): 6×16, depth unit 4, u8 activations, `vpmaddubsw`.
pub(crate) static I8_SEVEN_BIT: I8Micro = I8Micro {
    mr: 4,
    ku: 4,
    a_form: AForm::U8,
    tile: i8_tile_seven_bit,
    ..I8
};

/// The largest weight magnitude [`I8_SEVEN_BIT`] takes, a 7-bit export's: two products of a
/// u8 code and such weights sum to at most 255·(64 + 64) = 32640, inside `vpmaddubsw`'s i16
/// lanes.
pub(crate) const SEVEN_BIT_MAX: u8 = WeightBits::Seven.max_code() as u8;
const _: () = assert!(255 * 2 * SEVEN_BIT_MAX as i32 <= i16::MAX as i32);

/// AVX2 + FMA fp32 tiles: 6×16; batch 1 over weights past L2 streams too
/// ([`crate::arch::STREAM_WEIGHT_BYTES`]).
pub(crate) static F32: F32Micro = F32Micro {
    mr: 6,
    nr: 16,
    tile: f32_tile::<false>,
    stream_tile: f32_tile::<true>,
    stream_one_block: true,
    epilogue: &EPILOGUE,
};

unsafe fn i8_tile(rows: usize, depth: Depth, a: *const u8, lda: usize, b: *const i8, c: *mut i32) {
    // SAFETY: the caller holds `I8Micro`'s tile contract; `by_rows!` passes it on unchanged to the
    // kernel instance for exactly `rows` rows, and every row count up to `mr` has an instance.
    unsafe {
        by_rows!(rows, i8_rows, (depth, a, lda, b, c), [1 => 4, 2 => 2, 3 => 1, 4 => 1, 5 => 1, 6 => 1])
    }
}

/// [`broadcast_rows`] for int8 panels of 16 columns.
#[target_feature(enable = "avx2,fma")]
unsafe fn i8_rows<const R: usize, const S: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller's tile contract, for panels of two vectors; AVX2 is enabled here.
    unsafe { broadcast_rows::<Madd16, R, S, 2, false>(depth, a, lda, b, c) }
}

/// The items AVX2's two int8 steps share: i32 sums in ymm registers, each step four bytes of
/// a row's activations broadcast (two i16 codes for [`Madd16`], four u8 for [`MaddUbs`]).
macro_rules! int8_steps_of_four_bytes {
    () => {
        type A = u8;
        type B = i8;
        type C = i32;
        type Acc = __m256i;
        type W = __m256i;
        type X = __m256i;
        const A_STEP: usize = 4;
        const LANES: usize = 8;

        #[inline(always)]
        unsafe fn zero() -> __m256i {
            // SAFETY: the CPU has AVX (the trait's contract).
            unsafe { _mm256_setzero_si256() }
        }

        #[inline(always)]
        unsafe fn broadcast(p: *const u8) -> __m256i {
            // SAFETY: 4 readable bytes (the trait's contract), read unaligned.
            unsafe { _mm256_set1_epi32(p.cast::<i32>().read_unaligned()) }
        }

        #[inline(always)]
        unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: the CPU has AVX2 (the trait's contract).
            unsafe { _mm256_add_epi32(a, b) }
        }

        #[inline(always)]
        unsafe fn store(p: *mut i32, acc: __m256i) {
            // SAFETY: room for 8 i32 (the trait's contract); an unaligned store.
            unsafe { _mm256_storeu_si256(p.cast(), acc) }
        }
    };
}

/// AVX2 int8: a step is two activations of a row as i16 (one dword, broadcast) against 8
/// columns of two s8 weights widened to i16 on load, `vpmaddwd` summing each pair of products
/// into an i32 that `vpaddd` accumulates.
struct Madd16;

// SAFETY: each operation reads or writes exactly the elements its contract states, and needs
// no feature beyond AVX2.
unsafe impl BroadcastOps for Madd16 {
    int8_steps_of_four_bytes!();
    const B_VECTOR: usize = 16;

    #[inline(always)]
    unsafe fn load(p: *const i8) -> __m256i {
        // SAFETY: 16 readable bytes (the trait's contract), loaded unaligned and sign-extended.
        unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast())) }
    }

    #[inline(always)]
    unsafe fn madd(acc: __m256i, x: __m256i, w: __m256i) -> __m256i {
        // SAFETY: the CPU has AVX2 (the trait's contract).
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(x, w)) }
    }
}

unsafe fn i8_tile_seven_bit(
    rows: usize,
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: as for `i8_tile`; `I8_SEVEN_BIT` packs only weights within ±SEVEN_BIT_MAX, so
    // no pair of products saturates.
    unsafe {
        by_rows!(rows, i8_rows_seven_bit, (depth, a, lda, b, c), [1 => 4, 2 => 2, 3 => 1, 4 => 1])
    }
}

/// [`broadcast_rows`] for int8 panels of 16 columns through `vpmaddubsw`.
#[target_feature(enable = "avx2,fma")]
unsafe fn i8_rows_seven_bit<const R: usize, const S: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller's tile contract, for panels of two vectors; AVX2 is enabled here.
    unsafe { broadcast_rows::<MaddUbs, R, S, 2, false>(depth, a, lda, b, c) }
}

/// AVX2 int8 for weights within ±64: a step is four u8 activations of a row (one dword,
/// broadcast) against 8 columns of four s8 weights, `vpmaddubsw` summing each pair of products
/// into an i16 (exact for such weights), `vpmaddwd` by ones each two of those into an i32 that
/// `vpaddd` accumulates: three instructions for 32 multiply-adds where [`Madd16`] takes four.
struct MaddUbs;

// SAFETY: each operation reads or writes exactly the elements its contract states, and needs
// no feature beyond AVX2.
unsafe impl BroadcastOps for MaddUbs {
    int8_steps_of_four_bytes!();
    const B_VECTOR: usize = 32;

    #[inline(always)]
    unsafe fn load(p: *const i8) -> __m256i {
        // SAFETY: 32 readable bytes (the trait's contract), loaded unaligned.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    #[inline(always)]
    unsafe fn madd(acc: __m256i, x: __m256i, w: __m256i) -> __m256i {
        // SAFETY: the CPU has AVX2 (the trait's contract). `x` is unsigned, `w` signed.
        unsafe {
            let pairs = _mm256_maddubs_epi16(x, w);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }
}

/// The fp32 tile; with `STREAM`, hinting the next panel into L2 as it goes
/// ([`F32Micro::stream_tile`]).
unsafe fn f32_tile<const STREAM: bool>(
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
        by_rows!(rows, f32_rows<STREAM>, (depth, a, lda, b, c), [1 => 4, 2 => 2, 3 => 2, 4 => 1, 5 => 1, 6 => 1])
    }
}

/// [`broadcast_rows`] for fp32 panels of 16 columns.
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_rows<const R: usize, const S: usize, const STREAM: bool>(
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    // SAFETY: the caller's tile contract, for panels of two vectors; AVX2 and FMA are enabled.
    unsafe { broadcast_rows::<Fma256, R, S, 2, STREAM>(depth, a, lda, b, c) }
}

/// AVX2 + FMA fp32: a step is one activation of a row (broadcast) against 8 columns' weights,
/// `vfmadd231ps` adding the products.
struct Fma256;

// SAFETY: each operation reads or writes exactly the elements its contract states, and needs
// no feature beyond AVX and FMA.
unsafe impl BroadcastOps for Fma256 {
    type A = f32;
    type B = f32;
    type C = f32;
    type Acc = __m256;
    type W = __m256;
    type X = __m256;
    const A_STEP: usize = 1;
    const B_VECTOR: usize = 8;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: the CPU has AVX (the trait's contract).
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: 8 readable f32 (the trait's contract); an unaligned load.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> __m256 {
        // SAFETY: one readable f32 (the trait's contract).
        unsafe { _mm256_set1_ps(*p) }
    }

    #[inline(always)]
    unsafe fn madd(acc: __m256, x: __m256, w: __m256) -> __m256 {
        // SAFETY: the CPU has FMA (the trait's contract).
        unsafe { _mm256_fmadd_ps(x, w, acc) }
    }

    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the CPU has AVX (the trait's contract).
        unsafe { _mm256_add_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, acc: __m256) {
        // SAFETY: room for 8 f32 (the trait's contract); an unaligned store.
        unsafe { _mm256_storeu_ps(p, acc) }
    }

    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        // SAFETY: a prefetch is a hint: it reads nothing the program sees and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast::<i8>()) }
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
