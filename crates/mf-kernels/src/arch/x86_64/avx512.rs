//! AVX-512 kernels: int8 with VNNI `vpdpbusd` (u8 activations × s8 weights, four products per
//! i32 lane) and fp32 with `vfmadd231ps`. Tiles are 32 columns wide (two weight vectors per
//! depth step, one broadcast per row) and 12 rows for int8 (24 zmm accumulators), 8 for fp32;
//! layers of at most 16 outputs get tiles one vector wide. Short tiles interleave several
//! accumulator sets over depth so that a matrix-vector product is not latency-bound. The loop
//! is the shared broadcast body (`arch/broadcast.rs`) over this family's vector operations.
use core::arch::asm;
use core::arch::x86_64::*;

use crate::arch::broadcast::{BroadcastOps, broadcast_rows};
use crate::arch::dot::dot_micros_for;
use crate::arch::{AForm, Depth, F32Micro, I8Micro, by_rows};
use crate::epilogue::epilogue_for;

// sin and cos: the AVX2 loop (every AVX-512 CPU has AVX2 and FMA).
epilogue_for!("avx512f,avx512bw", sin_cos = super::avx2::sin_cos);
dot_micros_for!("avx512f,avx512bw,avx512vnni", i8_rows = vnni_dot_rows);

/// [`crate::arch::dot::i8_rows`] by `vpdpbusd`: each row's runs 64 codes at a time (the last
/// piece of a run through a byte mask, which reads nothing past it) into 16 lane sums, then
/// the lanes added. Integer sums, so the plain body's bits; where that body widens and
/// multiplies 32 lanes at a time, this takes 64 multiply-adds an instruction (the batch-1
/// U-Net's last convolution, 3×3, 16 channels → 1).
///
/// # Safety
/// [`crate::arch::dot::i8_rows`]' contract, on a CPU with AVX-512F, BW and VNNI.
#[inline(always)]
unsafe fn vnni_dot_rows(
    rows: usize,
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    const BLOCK: usize = 64;
    let len = depth.steps;
    let (whole, tail) = (len - len % BLOCK, len % BLOCK);
    let mask: __mmask64 = match tail {
        0 => 0,
        t => (1u64 << t) - 1,
    };
    for r in 0..rows {
        // SAFETY: row `r` holds `run · stride + steps` codes from its start and `b` holds
        // `runs · steps` weights (the contract), so every load stays inside them (a masked load
        // reads only its mask's bytes); the CPU has AVX-512F, BW and VNNI (the contract).
        unsafe {
            let mut acc = _mm512_setzero_si512();
            for run in 0..depth.runs {
                let x = a.add(r * lda + run * depth.stride);
                let w = b.add(run * len);
                for e in (0..whole).step_by(BLOCK) {
                    let xs = _mm512_loadu_si512(x.add(e).cast());
                    let ws = _mm512_loadu_si512(w.add(e).cast());
                    acc = _mm512_dpbusd_epi32(acc, xs, ws);
                }
                if tail > 0 {
                    let xs = _mm512_maskz_loadu_epi8(mask, x.add(whole).cast());
                    let ws = _mm512_maskz_loadu_epi8(mask, w.add(whole).cast());
                    acc = _mm512_dpbusd_epi32(acc, xs, ws);
                }
            }
            *c.add(r) = _mm512_reduce_add_epi32(acc);
        }
    }
}

/// VNNI int8 tiles: 12×32, depth unit 4, u8 activations.
pub(crate) static I8: I8Micro = I8Micro {
    mr: 12,
    nr: 32,
    ku: 4,
    row_align: 1,
    a_form: AForm::U8,
    tile: i8_tile,
    epilogue: &EPILOGUE,
    bracket: None,
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
    bracket: None,
};

/// AVX-512F fp32 tiles: 8×32. Eight rows rather than twelve (a batch of 16 then two full
/// tiles, not 12 + 4): the batch-16 MLP (five 1024-wide layers, 20 MB of weights) ran 24% faster
/// at two threads (AMD EPYC Zen 4, 10 alternated rounds, medians 1129 → 861 µs; six rows 854),
/// the batch-1 networks and the batch-16 U-Net and DiT level within the host's noise.
pub(crate) static F32: F32Micro = F32Micro {
    mr: 8,
    nr: 32,
    tile: f32_tile::<false>,
    stream_tile: f32_tile::<true>,
    stream_one_block: false,
    epilogue: &EPILOGUE,
};

/// AVX-512F fp32 tiles one vector wide, 12×16, for layers of at most 16 outputs.
pub(crate) static F32_NARROW: F32Micro = F32Micro {
    mr: 12,
    nr: 16,
    tile: f32_tile_narrow,
    stream_tile: f32_tile_narrow,
    stream_one_block: false,
    epilogue: &EPILOGUE,
};

pub(crate) unsafe fn i8_tile(
    rows: usize,
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller holds `I8Micro`'s tile contract; `by_rows!` passes it on unchanged to the
    // kernel instance for exactly `rows` rows, and every row count up to `mr` has an instance.
    unsafe {
        by_rows!(rows, i8_rows, (depth, a, lda, b, c),
            [1 => 6, 2 => 3, 3 => 2, 4 => 2, 5 => 1, 6 => 1, 7 => 1, 8 => 1, 9 => 1, 10 => 1, 11 => 1, 12 => 1])
    }
}

pub(crate) unsafe fn i8_tile_narrow(
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

/// [`broadcast_rows`] for 32-wide int8 panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn i8_rows<const R: usize, const S: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller's tile contract, for panels of two vectors; VNNI is enabled here.
    unsafe { broadcast_rows::<Vnni, R, S, 2, false>(depth, a, lda, b, c) }
}

/// [`broadcast_rows`] for 16-wide int8 panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn i8_rows_narrow<const R: usize, const S: usize>(
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    // SAFETY: the caller's tile contract, for panels of one vector; VNNI is enabled here.
    unsafe { broadcast_rows::<Vnni, R, S, 1, false>(depth, a, lda, b, c) }
}

/// VNNI int8: a step is four u8 codes of a row (one dword, broadcast) against 16 columns of
/// four s8 weights, `vpdpbusd` adding the four products into each column's i32.
struct Vnni;

// SAFETY: each operation reads or writes exactly the elements its contract states, and needs
// no feature beyond AVX-512F/BW/VNNI.
unsafe impl BroadcastOps for Vnni {
    type A = u8;
    type B = i8;
    type C = i32;
    type Acc = __m512i;
    type W = __m512i;
    type X = __m512i;
    const A_STEP: usize = 4;
    const B_VECTOR: usize = 64;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512i {
        // SAFETY: the CPU has AVX-512F (the trait's contract).
        unsafe { _mm512_setzero_si512() }
    }

    #[inline(always)]
    unsafe fn load(p: *const i8) -> __m512i {
        // SAFETY: 64 readable bytes (the trait's contract); an unaligned load.
        unsafe { _mm512_loadu_si512(p.cast()) }
    }

    #[inline(always)]
    unsafe fn broadcast(p: *const u8) -> __m512i {
        // SAFETY: 4 readable bytes (the trait's contract), read unaligned.
        unsafe { _mm512_set1_epi32(p.cast::<i32>().read_unaligned()) }
    }

    #[inline(always)]
    unsafe fn madd(acc: __m512i, x: __m512i, w: __m512i) -> __m512i {
        // SAFETY: the CPU has AVX-512 VNNI (the trait's contract).
        unsafe { _mm512_dpbusd_epi32(acc, x, w) }
    }

    #[inline(always)]
    unsafe fn add(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: the CPU has AVX-512F (the trait's contract).
        unsafe { _mm512_add_epi32(a, b) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut i32, acc: __m512i) {
        // SAFETY: room for 16 i32 (the trait's contract); an unaligned store.
        unsafe { _mm512_storeu_si512(p.cast(), acc) }
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
        by_rows!(rows, f32_rows<STREAM>, (depth, a, lda, b, c),
            [1 => 6, 2 => 3, 3 => 2, 4 => 2, 5 => 1, 6 => 1, 7 => 1, 8 => 1])
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

/// [`broadcast_rows`] for 32-wide fp32 panels.
#[target_feature(enable = "avx512f")]
unsafe fn f32_rows<const R: usize, const S: usize, const STREAM: bool>(
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    // SAFETY: the caller's tile contract, for panels of two vectors; AVX-512F is enabled here.
    unsafe { broadcast_rows::<Fma512, R, S, 2, STREAM>(depth, a, lda, b, c) }
}

/// [`broadcast_rows`] for 16-wide fp32 panels.
#[target_feature(enable = "avx512f")]
unsafe fn f32_rows_narrow<const R: usize, const S: usize>(
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    // SAFETY: the caller's tile contract, for panels of one vector; AVX-512F is enabled here.
    unsafe { broadcast_rows::<Fma512, R, S, 1, false>(depth, a, lda, b, c) }
}

/// AVX-512F fp32: a step is one activation of a row (broadcast) against 16 columns' weights,
/// `vfmadd231ps` adding the products.
struct Fma512;

// SAFETY: each operation reads or writes exactly the elements its contract states, and needs
// no feature beyond AVX-512F.
unsafe impl BroadcastOps for Fma512 {
    type A = f32;
    type B = f32;
    type C = f32;
    type Acc = __m512;
    type W = __m512;
    type X = __m512;
    const A_STEP: usize = 1;
    const B_VECTOR: usize = 16;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: the CPU has AVX-512F (the trait's contract).
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: 16 readable f32 (the trait's contract); an unaligned load.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn broadcast(p: *const f32) -> __m512 {
        // SAFETY: one readable f32 (the trait's contract).
        unsafe { _mm512_set1_ps(*p) }
    }

    #[inline(always)]
    unsafe fn madd(acc: __m512, x: __m512, w: __m512) -> __m512 {
        // SAFETY: the CPU has AVX-512F (the trait's contract).
        unsafe { _mm512_fmadd_ps(x, w, acc) }
    }

    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the CPU has AVX-512F (the trait's contract).
        unsafe { _mm512_add_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, acc: __m512) {
        // SAFETY: room for 16 f32 (the trait's contract); an unaligned store.
        unsafe { _mm512_storeu_ps(p, acc) }
    }

    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        // SAFETY: a prefetch is a hint: it reads nothing the program sees and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast::<i8>()) }
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
