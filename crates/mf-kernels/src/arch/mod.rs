//! Microkernels, one module per instruction set, each described by its tile geometry.
//!
//! A microkernel computes one `rows × nr` tile of the product over the whole depth from packed
//! weights (see `pack.rs` for the layout) and row-major activations, writing i32 (or f32) sums
//! row-major with stride `nr`. The driver in `gemm.rs` owns blocking, threading and the epilogue, so a kernel is only
//! its inner loop; the AVX-512, AVX2 and NEON fp32 kernels share that loop too (`broadcast.rs`,
//! one body over each family's vector operations).
#![allow(dead_code)] // each target compiles only its own kernels' users

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) mod broadcast;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) mod dot;
pub(crate) mod scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use crate::activation::Activation;
use crate::epilogue::Epilogue;
use crate::isa::Isa;

/// How a kernel wants the uint8 activation codes stored in its packed A blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AForm {
    /// The code itself (u8 × s8 kernels); kernel offset 0.
    U8,
    /// The code with its sign bit flipped, read as s8 = code − 128 (s8 × s8 kernels).
    S8,
    /// The code widened to little-endian i16 (AVX2 `vpmaddwd`); kernel offset 0.
    I16,
}

impl AForm {
    /// Bytes per stored element.
    pub(crate) fn size(self) -> usize {
        if self == AForm::I16 { 2 } else { 1 }
    }

    /// The offset `o` the kernel's sums carry: `Σ (code − o) · w`.
    pub(crate) fn offset(self) -> i32 {
        if self == AForm::S8 { 128 } else { 0 }
    }
}

/// The depth a tile kernel sums over: `runs` runs of `steps` depth steps each, run `r` read
/// from `r · stride` elements (bytes for int8 rows) after each row's start, the packed weights'
/// steps read in order across the runs. A dense layer is one run; a convolution reading its
/// taps from the padded input one run per kernel row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Depth {
    pub runs: usize,
    pub steps: usize,
    pub stride: usize,
}

impl Depth {
    /// One run of `steps` steps.
    pub(crate) fn whole(steps: usize) -> Self {
        Depth {
            runs: 1,
            steps,
            stride: 0,
        }
    }

    /// The depth steps over all runs.
    pub(crate) fn total(&self) -> usize {
        self.runs * self.steps
    }
}

/// An int8 tile kernel.
///
/// # Safety of `tile`
/// `a` points at `rows` rows of activations in the kernel's [`AForm`], `lda` bytes apart, each
/// with `(runs − 1) · stride + steps · ku` elements readable (`rows` a multiple of `row_align`,
/// at most `mr`); `b` holds `runs · steps · ku · nr` packed weights; `c` has room for
/// `rows · nr` i32; the CPU has the kernel's features.
pub(crate) struct I8Micro {
    pub mr: usize,
    pub nr: usize,
    pub ku: usize,
    pub row_align: usize,
    pub a_form: AForm,
    pub tile:
        unsafe fn(rows: usize, depth: Depth, a: *const u8, lda: usize, b: *const i8, c: *mut i32),
    pub epilogue: &'static Epilogue,
    /// What each thread sets up before its tiles of a product and undoes after, if anything.
    pub bracket: Option<&'static Bracket>,
}

/// Per-thread state a kernel needs around its tiles (AMX's tile shapes): the driver calls
/// `begin` with the product's depth before a thread's first tile of a product, and `end`
/// after its last, on the same thread, with no other code's tiles in between.
///
/// # Safety of `begin` and `end`
/// The CPU has the kernel's features.
pub(crate) struct Bracket {
    pub begin: unsafe fn(depth: Depth),
    pub end: unsafe fn(),
}

/// An fp32 tile kernel (`ku` = 1, `row_align` = 1, `lda` in elements); `tile`'s contract as
/// for [`I8Micro`].
pub(crate) struct F32Micro {
    pub mr: usize,
    pub nr: usize,
    pub tile: F32Tile,
    /// `tile` that also fetches the next panel's weights into L2 as it goes, for products
    /// whose weights stream from beyond L2 ([`streams`]); `tile` itself where the family has
    /// no such hint.
    pub stream_tile: F32Tile,
    /// Whether a product of one block of rows also runs `stream_tile` over weights past L2
    /// ([`streams`]): nothing is read again there, and the hints only add a second stream,
    /// which pays on AVX2 (its one-row loads leave memory idle) and costs on AVX-512.
    pub stream_one_block: bool,
    pub epilogue: &'static Epilogue,
}

/// An fp32 tile function, as [`F32Micro::tile`].
pub(crate) type F32Tile =
    unsafe fn(rows: usize, depth: Depth, a: *const f32, lda: usize, b: *const f32, c: *mut f32);

/// The largest `mr · nr` of any kernel (the driver's tile buffer).
pub(crate) const MAX_TILE: usize = 16 * crate::epilogue::MAX_NR;

/// Layers of at most this many outputs run one-column tiles ([`dot`]) on the vector families:
/// an 8- to 32-wide tile spends as many columns' multiply-adds on each of them, a one-column
/// tile passes over the rows once per output. The batch-1 U-Net's last convolution (3×3, 16
/// channels → 1, 28×28; `cargo bench -p mf-benches --bench kernels -- last_conv`, one
/// thread, Sapphire Rapids): AVX2 int8 43.1 → 18.4 µs, fp32 53.5 → 19.2, AVX-512 fp32 45.6 →
/// 21.3, of which 5-8 µs are staging and finishing, the same for any width. To two outputs
/// (a wide tile takes the same time for 1 to 16): AVX2 int8 34 µs one-column against 43
/// wide, fp32 36 against 53, AVX-512 fp32 43 against 45; to three, the wide tiles win or tie
/// (AVX2 int8 44 µs wide against 52, AVX-512 fp32 39 against 66, AVX2 fp32 54 against 53).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const DOT_OUTPUTS: usize = 2;

/// [`DOT_OUTPUTS`] for AVX-512 VNNI int8, whose 16-wide tile does 64 multiply-adds an
/// instruction: one column's dot product beats it (16.1 → 12.4 µs), two do not (23 µs
/// against 13).
#[cfg(target_arch = "x86_64")]
const VNNI_DOT_OUTPUTS: usize = 1;

/// The int8 kernel of a family for a layer of `n` outputs and activation `act` (AVX-512 has a
/// narrower tile for `n ≤ 16`, the vector families one-column tiles for the fewest outputs).
/// The caller has checked availability.
// Only AMX (x86_64) reads `act`; the scalar family, alone elsewhere, reads neither.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn i8_micro(isa: Isa, n: usize, act: Activation) -> &'static I8Micro {
    match isa {
        // GELU layers (a DiT's MLP) keep VNNI's tiles under AMX: their epilogue, the longest,
        // ran 20-25% slower beside AMX tiles than beside VNNI's (16 × 128 → 512: 12.0 against
        // 14.3 µs in the batch-1 DiT, one thread), more than the tiles saved; no activation
        // and SiLU layers gain (the same layer without one: 4.8 → 3.3 µs).
        #[cfg(target_arch = "x86_64")]
        Isa::Amx if act == Activation::GeluTanh => i8_micro(Isa::Avx512Vnni, n, act),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if n <= DOT_OUTPUTS => &x86_64::avx2::I8_DOT,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &x86_64::avx2::I8,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if n <= VNNI_DOT_OUTPUTS => &x86_64::avx512::I8_DOT,
        // AMX keeps its 16-wide tile down to one output: its multiply-adds are the cheap part.
        #[cfg(target_arch = "x86_64")]
        Isa::Amx if n <= x86_64::amx::I8_NARROW.nr => &x86_64::amx::I8_NARROW,
        #[cfg(target_arch = "x86_64")]
        Isa::Amx => &x86_64::amx::I8,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if n <= x86_64::avx512::I8_NARROW.nr => &x86_64::avx512::I8_NARROW,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => &x86_64::avx512::I8,
        // Plain NEON only: the 8-wide `sdot` and `smmla` tiles take fewer instructions than
        // one column's dot product (the batch-1 U-Net under qemu: 8.40M instructions a
        // generation with i8mm tiles, 8.45M with one-column ones; plain NEON 18.13M → 18.08M).
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if n <= DOT_OUTPUTS => &aarch64::neon::I8_DOT,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => &aarch64::neon::I8,
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDotprod => &aarch64::dotprod::I8,
        #[cfg(target_arch = "aarch64")]
        Isa::NeonI8mm => &aarch64::i8mm::I8,
        _ => &scalar::I8,
    }
}

/// `micro`, or its twin that sums two products in one i16 lane where `weights` allow it:
/// plain NEON's [`aarch64::neon::I8_PAIRED`] for weights without −128, AVX2's
/// [`x86_64::avx2::I8_SEVEN_BIT`] for weights within ±64 (elsewhere `micro`).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_variables)
)]
pub(crate) fn for_weights(micro: &'static I8Micro, weights: &[i8]) -> &'static I8Micro {
    #[cfg(target_arch = "x86_64")]
    if core::ptr::eq(micro, &x86_64::avx2::I8)
        && weights
            .iter()
            .all(|w| w.unsigned_abs() <= x86_64::avx2::SEVEN_BIT_MAX)
    {
        return &x86_64::avx2::I8_SEVEN_BIT;
    }
    #[cfg(target_arch = "aarch64")]
    if core::ptr::eq(micro, &aarch64::neon::I8) && !weights.contains(&i8::MIN) {
        return &aarch64::neon::I8_PAIRED;
    }
    micro
}

/// From this many bytes of packed fp32 weights on, a product of more rows than one tile runs
/// [`F32Micro::stream_tile`]: such weights come from L3 or memory on every call, and while a
/// later block of rows reads a panel again from L2, the hints fetch the next one (1 MiB, an
/// AMD Zen 4 core's L2; the DiT's layers and every convolution here are smaller). The
/// batch-16 fp32 MLP (1024-wide layers of 3-4 MB, Zen 4, two threads, alternated medians of
/// `mf-edge bench-case`): AVX-512 1441 → 1003 µs and AVX2 1700 → 1150 µs in a noisy phase of
/// the host, 819 → 756 and 964 → 808 µs in a quiet one. With one block of rows (batch 1)
/// nothing is read again and the hints only add a second stream: 8-18% slower there on
/// AVX-512, so used only where a family asks ([`F32Micro::stream_one_block`]: AVX2, whose
/// batch-1 fp32 MLP ran 0.492 → 0.431 ms on one thread and 0.228 → 0.216 on two, medians of
/// six alternated `mf-edge bench` runs, Zen 4 under `tools/avx2-only`, ONNX Runtime fp32
/// 0.452 and 0.245 beside them).
pub(crate) const STREAM_WEIGHT_BYTES: usize = 1 << 20;

/// Whether a product of `m` rows over `weight_bytes` of packed weights runs `micro`'s
/// [`F32Micro::stream_tile`] ([`STREAM_WEIGHT_BYTES`]).
pub(crate) fn streams(micro: &F32Micro, m: usize, weight_bytes: usize) -> bool {
    (m > micro.mr || micro.stream_one_block) && weight_bytes >= STREAM_WEIGHT_BYTES
}

/// The fp32 kernel of a family for a layer of `n` outputs (AVX-512 has a narrower tile for
/// `n ≤ 16`, the vector families one-column tiles for the fewest outputs). The caller has
/// checked availability.
// The scalar family has one tile: there `n` does not choose.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_variables)
)]
pub(crate) fn f32_gemm_micro(isa: Isa, n: usize) -> &'static F32Micro {
    #[cfg(target_arch = "aarch64")]
    if matches!(isa, Isa::Neon | Isa::NeonDotprod | Isa::NeonI8mm) && n <= DOT_OUTPUTS {
        return &aarch64::neon::F32_DOT;
    }
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx2 if n <= DOT_OUTPUTS => return &x86_64::avx2::F32_DOT,
        Isa::Avx512Vnni | Isa::Amx if n <= DOT_OUTPUTS => return &x86_64::avx512::F32_DOT,
        Isa::Avx512Vnni | Isa::Amx if n <= x86_64::avx512::F32_NARROW.nr => {
            return &x86_64::avx512::F32_NARROW;
        }
        _ => {}
    }
    f32_micro(isa)
}

/// The fp32 kernel of a family (the widest; its epilogue is the family's). The caller has
/// checked availability.
pub(crate) fn f32_micro(isa: Isa) -> &'static F32Micro {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &x86_64::avx2::F32,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Amx => &x86_64::avx512::F32,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDotprod | Isa::NeonI8mm => &aarch64::neon::F32,
        _ => &scalar::F32,
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// Calls `$kernel::<R>(args)` for the run-time row count `$rows`, or `$kernel::<R, S>(args)`
/// with the `R => S` pairs listed: `S` is how many independent accumulator sets the kernel interleaves over depth, so
/// that short tiles (a matrix-vector product) are not bound by the accumulate latency.
macro_rules! by_rows {
    // `$kernel<$flag>`: one more const argument after `R` and `S` (a streaming tile's `STREAM`).
    ($rows:expr, $kernel:ident<$flag:tt>, $args:tt, [$($r:literal => $s:literal),*]) => {
        match $rows {
            $( $r => $kernel::<$r, $s, $flag> $args, )*
            rows => unreachable!("tile of {rows} rows"),
        }
    };
    ($rows:expr, $kernel:ident, $args:tt, [$($r:literal => $s:literal),*]) => {
        match $rows {
            $( $r => $kernel::<$r, $s> $args, )*
            rows => unreachable!("tile of {rows} rows"),
        }
    };
    ($rows:expr, $kernel:ident, $args:tt, [$($r:literal),*]) => {
        match $rows {
            $( $r => $kernel::<$r> $args, )*
            rows => unreachable!("tile of {rows} rows"),
        }
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use by_rows;

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain NEON's int8 layers sum two products in one i16 lane only when no weight is −128
    /// (the sum of two (−128)·(−128) overflows it); other families keep their kernel.
    #[test]
    fn only_weights_without_minus_128_pair_their_products() {
        let neon = i8_micro(Isa::Neon, 64, Activation::None);
        #[cfg(target_arch = "aarch64")]
        assert!(core::ptr::eq(
            for_weights(neon, &[-127, 0, 127]),
            &aarch64::neon::I8_PAIRED
        ));
        assert!(core::ptr::eq(for_weights(neon, &[3, -128, 127]), neon));
        for isa in Isa::ALL.into_iter().filter(|&i| i != Isa::Neon) {
            let micro = i8_micro(isa, 64, Activation::None);
            assert!(core::ptr::eq(for_weights(micro, &[1, 100]), micro), "{isa}");
        }
    }

    /// AVX2's int8 layers take `vpmaddubsw` tiles only when every weight lies within ±64:
    /// 255·(64 + 64) fits an i16 lane, 255·(65 + 64) does not.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn only_weights_within_64_take_avx2_byte_pairs() {
        let avx2 = i8_micro(Isa::Avx2, 64, Activation::None);
        let seven = &x86_64::avx2::I8_SEVEN_BIT;
        assert!(core::ptr::eq(for_weights(avx2, &[-64, 0, 64]), seven));
        assert!(core::ptr::eq(for_weights(avx2, &[-64, 65]), avx2));
        assert!(core::ptr::eq(for_weights(avx2, &[-65, 64]), avx2));
        assert!(core::ptr::eq(for_weights(avx2, &[-128]), avx2));
        let vnni = i8_micro(Isa::Avx512Vnni, 64, Activation::None);
        assert!(core::ptr::eq(for_weights(vnni, &[-64, 64]), vnni));
    }

    /// Only products over weights past L2 stream, of several blocks of rows, or of one where
    /// the family asks.
    #[test]
    fn only_products_over_weights_past_l2_stream() {
        let micro = f32_micro(Isa::Scalar);
        assert!(streams(micro, micro.mr + 1, STREAM_WEIGHT_BYTES));
        assert!(!streams(micro, micro.mr, STREAM_WEIGHT_BYTES));
        assert!(!streams(micro, micro.mr + 1, STREAM_WEIGHT_BYTES - 1));
        let one_block = F32Micro {
            stream_one_block: true,
            ..*micro
        };
        assert!(streams(&one_block, 1, STREAM_WEIGHT_BYTES));
        assert!(!streams(&one_block, 1, STREAM_WEIGHT_BYTES - 1));
        #[cfg(target_arch = "x86_64")]
        {
            assert!(x86_64::avx2::F32.stream_one_block);
            assert!(!x86_64::avx512::F32.stream_one_block);
        }
    }

    /// The driver hands every kernel a buffer of MAX_TILE sums and the epilogue a row of
    /// MAX_NR: each kernel's tile must fit both.
    #[test]
    fn every_tile_fits_the_drivers_buffers() {
        for (isa, n) in Isa::ALL.into_iter().flat_map(|isa| [(isa, 1), (isa, 1000)]) {
            let i8 = i8_micro(isa, n, Activation::None);
            assert!(
                i8.mr * i8.nr <= MAX_TILE,
                "{isa} int8 tile {}x{}",
                i8.mr,
                i8.nr
            );
            assert!(i8.nr <= crate::epilogue::MAX_NR, "{isa} int8 nr {}", i8.nr);
            assert!(
                i8.mr.is_multiple_of(i8.row_align),
                "{isa} int8 row alignment"
            );
            let f = f32_gemm_micro(isa, n);
            assert!(f.mr * f.nr <= MAX_TILE, "{isa} fp32 tile {}x{}", f.mr, f.nr);
            assert!(f.nr <= crate::epilogue::MAX_NR, "{isa} fp32 nr {}", f.nr);
        }
    }
}
