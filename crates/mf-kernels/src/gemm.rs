//! The blocked GEMM driver shared by every kernel: packs the activations, walks the tiles
//! (column panel outer, so a weight panel stays in L1 while activation blocks stream), splits
//! them across threads, and finishes each tile with the epilogue.
use alloc::vec::Vec;

use crate::arch::{Bracket, Depth, MAX_TILE};
use crate::epilogue::{ColumnsI8, RowAddend, RowMap, Sink, TileAt};
use crate::error::{KernelError, check_len};
pub use crate::pack::Input;
use crate::pack::{PackedF32, PackedI8, prepare_a};
pub use crate::reference::Output;

/// `out = act(dequant(input) · Wᵀ + b)` for `m` rows: the int8 layer.
pub fn gemm_i8(
    w: &PackedI8,
    input: Input<'_>,
    m: usize,
    out: Output<'_>,
) -> Result<(), KernelError> {
    gemm_i8_reusing(w, input, m, out, &mut GemmScratch::default())
}

/// The buffers an int8 product converts its activations into (quantized, padded to whole
/// depth steps, in the kernel's element form), kept by a caller between calls.
#[derive(Default)]
pub struct GemmScratch {
    rows: Vec<u8>,
}

/// [`gemm_i8`] converting the activations in `scratch`'s buffers, which grow to the largest
/// product and are kept: no allocation per call once they have.
pub fn gemm_i8_reusing(
    w: &PackedI8,
    input: Input<'_>,
    m: usize,
    out: Output<'_>,
    scratch: &mut GemmScratch,
) -> Result<(), KernelError> {
    gemm_i8_shared(w, input, m, (out, None), scratch, Share::Dense)
}

/// [`gemm_i8_reusing`] shared out across the thread team as `share` says, `addend` added to
/// the output rows.
pub(crate) fn gemm_i8_shared(
    w: &PackedI8,
    input: Input<'_>,
    m: usize,
    (out, addend): (Output<'_>, Option<RowAddend<'_>>),
    scratch: &mut GemmScratch,
    share: Share,
) -> Result<(), KernelError> {
    out.check(m, w.n)?;
    let (a, lda) = prepare_a(w.micro, input, m, w.k, w.input, &mut scratch.rows)?;
    gemm_i8_rows(
        w,
        (a, lda),
        m,
        Depth::whole(w.steps),
        (out, RowMap::All, addend),
        share,
    )
}

/// Checks that every row the kernels read (`m` rounded up to `row_align`, `lda` elements apart)
/// holds each of `depth`'s runs of steps of `ku` elements inside `len` elements, and that the
/// runs' steps are at most the packed depth's `steps`. `stride`, `lda`, `ku` and `len` count the
/// same elements (bytes for int8 rows).
pub(crate) fn check_depth(
    depth: Depth,
    (len, lda): (usize, usize),
    m: usize,
    (row_align, ku, steps): (usize, usize, usize),
) -> Result<(), KernelError> {
    let rows = m.next_multiple_of(row_align);
    if rows == 0 || depth.runs == 0 {
        return Ok(()); // Nothing is read.
    }
    let end = (rows - 1)
        .checked_mul(lda)
        .and_then(|e| e.checked_add((depth.runs - 1).checked_mul(depth.stride)?))
        .and_then(|e| e.checked_add(depth.steps.checked_mul(ku)?));
    let total = depth.runs.checked_mul(depth.steps);
    if total.is_none_or(|t| t > steps) || end.is_none_or(|e| e > len) {
        return Err(KernelError::Geometry(
            "the activation runs reach past their rows or the packed depth",
        ));
    }
    Ok(())
}

/// [`gemm_i8`] on activation rows already in the kernel's form (`lda` bytes apart; rows up to
/// `m` rounded to the kernel's row alignment are read), summed over `depth`'s runs, each row
/// written where `map` says with `addend` added; shared across the thread team as `share`
/// says.
pub(crate) fn gemm_i8_rows(
    w: &PackedI8,
    (a, lda): (&[u8], usize),
    m: usize,
    depth: Depth,
    (out, map, addend): (Output<'_>, RowMap, Option<RowAddend<'_>>),
    share: Share,
) -> Result<(), KernelError> {
    let n = w.n;
    out.check(map.rows(m), n)?;
    let micro = w.micro;
    let size = micro.a_form.size();
    check_depth(
        depth,
        (a.len(), lda),
        m,
        (micro.row_align, micro.ku * size, w.steps),
    )?;
    if m == 0 || n == 0 || depth.total() == 0 {
        return Ok(());
    }
    let b_panel = w.steps * micro.ku * micro.nr;
    let grid = Grid {
        m,
        n,
        mr: micro.mr,
        nr: micro.nr,
        weight_bytes: w.panels.len(),
        share,
        parallel_macs: PARALLEL_MACS_I8,
        // A product of fewer rows than a tile runs no full tile: nothing to set up.
        bracket: micro.bracket.filter(|_| m >= micro.mr).map(|b| (b, depth)),
    };
    let sink = Sink::new(out, (n, m), map, addend)?;
    grid.run(
        depth.total() * micro.ku,
        [0i32; MAX_TILE],
        |tile, row0, rows, col0| {
            let block = &a[row0 * lda..];
            let panel = &w.panels[col0 / micro.nr * b_panel..];
            let padded = rows.next_multiple_of(micro.row_align);
            // SAFETY: check_depth showed that each of the `padded` rows from row0 holds every run
            // of `depth`, the panel holds w.steps steps of `nr` columns (the runs' among them), the
            // tile has room for padded·nr sums, and `w.isa` was checked available.
            unsafe {
                (micro.tile)(
                    padded,
                    depth,
                    block.as_ptr(),
                    lda,
                    panel.as_ptr(),
                    tile.as_mut_ptr(),
                )
            };
            let cols = micro.nr.min(n - col0);
            let columns = ColumnsI8 {
                corr: &w.corr[col0..col0 + cols],
                scale: &w.scale[col0..col0 + cols],
                bias: &w.bias[col0..col0 + cols],
            };
            let at = TileAt {
                sink: &sink,
                row0,
                col0,
                rows,
                cols,
                nr: micro.nr,
            };
            // SAFETY: the tile is inside [m, n] and owned by this thread alone; the epilogue's
            // features are the kernel's, which were checked available.
            unsafe { (micro.epilogue.i8)(tile, &at, &columns, w.activation) };
        },
    );
    Ok(())
}

/// `out = act(a · Wᵀ + b)` for `m` rows: the fp32 layer.
pub fn gemm_f32(w: &PackedF32, a: &[f32], m: usize, out: &mut [f32]) -> Result<(), KernelError> {
    check_len("input", m * w.k, a.len())?;
    gemm_f32_rows(
        w,
        (a, w.k),
        m,
        Depth::whole(w.k),
        (out, RowMap::All, None),
        Share::Dense,
    )
}

/// [`gemm_f32`] on rows `lda` values apart, summed over `depth`'s runs (steps of one value),
/// each row written where `map` says with `addend` added; shared across the thread team as
/// `share` says.
pub(crate) fn gemm_f32_rows(
    w: &PackedF32,
    (a, lda): (&[f32], usize),
    m: usize,
    depth: Depth,
    (out, map, addend): (&mut [f32], RowMap, Option<RowAddend<'_>>),
    share: Share,
) -> Result<(), KernelError> {
    let (n, k) = (w.n, w.k);
    check_len("output", map.rows(m) * n, out.len())?;
    check_depth(depth, (a.len(), lda), m, (1, 1, k))?;
    if m == 0 || n == 0 || depth.total() == 0 {
        return Ok(());
    }
    let micro = w.micro;
    let weight_bytes = core::mem::size_of_val(&w.panels[..]);
    let kernel = match crate::arch::streams(micro, m, weight_bytes) {
        true => micro.stream_tile,
        false => micro.tile,
    };
    let grid = Grid {
        m,
        n,
        mr: micro.mr,
        nr: micro.nr,
        weight_bytes,
        share,
        parallel_macs: PARALLEL_MACS_F32,
        bracket: None,
    };
    let sink = Sink::new(Output::F32(out), (n, m), map, addend)?;
    grid.run(depth.total(), [0f32; MAX_TILE], |tile, row0, rows, col0| {
        let block = &a[row0 * lda..];
        let panel = &w.panels[col0 / micro.nr * k * micro.nr..];
        // SAFETY: as in gemm_i8_rows, with rows of f32 and steps of one value.
        unsafe {
            kernel(
                rows,
                depth,
                block.as_ptr(),
                lda,
                panel.as_ptr(),
                tile.as_mut_ptr(),
            )
        };
        let cols = micro.nr.min(n - col0);
        let at = TileAt {
            sink: &sink,
            row0,
            col0,
            rows,
            cols,
            nr: micro.nr,
        };
        // SAFETY: as in gemm_i8.
        unsafe { (micro.epilogue.f32)(tile, &at, &w.bias[col0..col0 + cols], w.activation) };
    });
    Ok(())
}

/// The tiles of an `[m, n]` output: column panels of `nr`, row blocks of `mr`.
struct Grid {
    m: usize,
    n: usize,
    mr: usize,
    nr: usize,
    /// The packed weights' size.
    weight_bytes: usize,
    /// When the tiles are shared across the thread team.
    share: Share,
    /// The multiply-adds from which the product is shared out ([`PARALLEL_MACS_I8`] or
    /// [`PARALLEL_MACS_F32`]).
    parallel_macs: usize,
    /// The kernel's per-thread set-up around its tiles, with the product's depth.
    bracket: Option<(&'static Bracket, Depth)>,
}

/// Below this many int8 multiply-adds, counted over whole tiles (the padding of a narrow
/// layer's tiles included), [`PARALLEL_OUTPUTS`] outputs and [`PARALLEL_WEIGHT_BYTES`] of
/// weights, a product runs on the calling thread: sharing out a small product moves its
/// operands between cores' caches for longer than the work takes. Measured on an AMD EPYC Zen 4
/// (medians of 5 alternated runs, batch 1): 2^20 against 2^21 took the U-Net from 0.377 to
/// 0.353 ms and the DiT from 0.223 to 0.192 (AVX2 kernels: 0.671 → 0.577, 0.383 → 0.313),
/// the MLP level; 2^19 is no faster than 2^20. (Before the implicit GEMM, an Intel Xeon ran
/// 1.8M-multiply-add convolutions with im2col 10% slower shared; not measured there since.)
const PARALLEL_MACS_I8: usize = 1 << 20;

/// [`PARALLEL_MACS_I8`] for fp32, whose multiply-adds take about four times as long (16 per
/// instruction against 64): the batch-1 U-Net's 1.8M-multiply-add convolutions ran 12% faster
/// on two threads than on one (implicit GEMM, AMD EPYC Zen 4, median of 12 alternated runs:
/// 0.660 → 0.582 ms for the whole network).
const PARALLEL_MACS_F32: usize = 1 << 20;

/// From this many outputs on, a dense layer's product is shared out whatever its depth:
/// finishing each output (scale, bias, activation, quantization) is work of its own (a
/// batch-16 convolution of one input channel, depth 9, ran slower on one thread). 2^13
/// against 2^16 took the batch-1 int8 U-Net from 0.299 to 0.289 ms, its 28×28 1×1 and first
/// convolutions (12.5K outputs) then shared (AMD EPYC Zen 4, medians of 5 alternated runs);
/// the DiT level. 2^11 made the batch-1 DiT's layers of 16 tokens × 128 shared, and slower
/// (int8 0.188 → 0.195 ms); convolutions share from less ([`Share::Above`]).
#[cfg(feature = "std")]
const PARALLEL_OUTPUTS: usize = 1 << 13;

/// The columns a one-column tile's multiply-adds are counted as when deciding whether to share
/// a product out ([`crate::arch::dot`] sums a vector of the depth where a wide tile sums a
/// vector of columns, so its rows take about a 16-column tile's time). Counted as one column,
/// the batch-1 U-Net's last convolution (3×3, 16 channels → 1, 28×28) stayed on one thread:
/// 15.4 µs int8 and 30.6 µs fp32 on Sapphire Rapids, 12.5 and 20.3 µs shared.
#[cfg(feature = "std")]
const DOT_COUNTED_COLUMNS: usize = 16;

/// When a product's tiles are shared out across the thread team (without std, never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) enum Share {
    /// Never: the caller shares out the work around it (a batch's images).
    Never,
    /// A dense layer's: from [`PARALLEL_MACS_I8`] (or [`PARALLEL_MACS_F32`]) multiply-adds,
    /// [`PARALLEL_OUTPUTS`] outputs or [`PARALLEL_WEIGHT_BYTES`] of weights.
    Dense,
    /// From this many outputs or multiply-adds, or [`PARALLEL_WEIGHT_BYTES`] of weights.
    Above { outputs: usize, macs: usize },
}

/// From this many bytes of weights on, a product is shared out: each core then streams half
/// of them (the fp32 DiT's batch-1 layers ran 20% slower on one thread).
#[cfg(feature = "std")]
const PARALLEL_WEIGHT_BYTES: usize = 1 << 17;

impl Grid {
    fn tiles(&self) -> usize {
        self.m.div_ceil(self.mr) * self.n.div_ceil(self.nr)
    }

    /// Runs `f(tile, row0, rows, col0)` over tiles `range`, panel-major, with one tile buffer.
    fn run_range<T: Copy>(
        &self,
        range: core::ops::Range<usize>,
        mut tile: T,
        f: &(impl Fn(&mut T, usize, usize, usize) + Sync),
    ) {
        let blocks = self.m.div_ceil(self.mr);
        if let Some((bracket, depth)) = self.bracket {
            // SAFETY: the kernel's features were checked available when its weights were
            // packed; `end` follows on this thread with only this product's tiles between.
            unsafe { (bracket.begin)(depth) };
        }
        for t in range {
            let (panel, block) = (t / blocks, t % blocks);
            let row0 = block * self.mr;
            f(&mut tile, row0, self.mr.min(self.m - row0), panel * self.nr);
        }
        if let Some((bracket, _)) = self.bracket {
            // SAFETY: as for `begin` above.
            unsafe { (bracket.end)() };
        }
    }

    /// Runs every tile of a product of `depth`, split into one contiguous range per thread
    /// when the product is large; each thread works in its own copy of the `tile` buffer.
    fn run<T: Copy + Send + Sync>(
        &self,
        depth: usize,
        tile: T,
        f: impl Fn(&mut T, usize, usize, usize) + Sync,
    ) {
        let tiles = self.tiles();
        #[cfg(feature = "std")]
        {
            let threads = crate::team::threads().min(tiles);
            let columns = match self.nr {
                1 => DOT_COUNTED_COLUMNS,
                nr => nr,
            };
            let macs = tiles
                .saturating_mul(self.mr * columns)
                .saturating_mul(depth);
            let from = match self.share {
                Share::Never => None,
                Share::Dense => Some((PARALLEL_OUTPUTS, self.parallel_macs)),
                Share::Above { outputs, macs } => Some((outputs, macs)),
            };
            let large = |(outputs, from_macs)| {
                macs >= from_macs
                    || self.m * self.n >= outputs
                    || self.weight_bytes >= PARALLEL_WEIGHT_BYTES
            };
            if threads > 1 && from.is_some_and(large) {
                crate::team::run(threads, &|t| {
                    self.run_range(tiles * t / threads..tiles * (t + 1) / threads, tile, &f)
                });
                return;
            }
        }
        let _ = (depth, self.weight_bytes, self.share, self.parallel_macs);
        self.run_range(0..tiles, tile, &f);
    }
}
