//! The epilogue applied to each row of a finished tile: scale, bias and activation, then f32 or
//! requantized uint8 output. Written as straight loops over slices so that each ISA module can
//! compile it under its own target features (see `epilogue_for!`), where LLVM vectorizes it.
//! Vectorized or not, each element goes through the same IEEE operations as
//! [`crate::reference::finish_i8`], so every kernel's output stays bit-identical; only the
//! quotient `x / scale` of quantizing may be taken another way that rounds to the same value
//! ([`crate::quant::FastDivide`] where the family has FMA).
use crate::activation::{Activation, gelu_tanh_in_place};
use crate::error::{KernelError, check_len};
use core::marker::PhantomData;

use crate::quant::{Divide, QuantParams};
use crate::reference::{finish_f32, finish_i8};

/// The longest tile row (`nr`) of any kernel.
pub(crate) const MAX_NR: usize = 32;

/// Values added to the output rows as they are finished, each sum rounded once in f32 as an
/// Add node after the layer rounds it.
#[derive(Clone, Copy)]
pub(crate) enum RowAddend<'a> {
    /// One row per output row.
    Rows(&'a [f32]),
    /// One row for all output rows.
    Row(&'a [f32]),
    /// One row for each run of `rows` output rows (an image's pixels): a division per row,
    /// where the others step.
    PerRun { values: &'a [f32], rows: usize },
}

/// Which output row each GEMM row is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowMap {
    /// GEMM row `r` to output row `r`.
    All,
    /// Of each line of `width` GEMM rows, the first `kept` to consecutive output rows, the rest
    /// dropped (an implicit convolution's rows past the end of an output row).
    Lines { width: usize, kept: usize },
}

impl RowMap {
    /// The output rows of `m` GEMM rows.
    pub(crate) fn rows(self, m: usize) -> usize {
        match self {
            RowMap::All => m,
            RowMap::Lines { width, kept } => m / width * kept + (m % width).min(kept),
        }
    }
}

/// The whole `[m, n]` output as raw parts, so threads can write their disjoint tiles.
pub(crate) struct Sink {
    f32: *mut f32,
    u8: *mut u8,
    params: QuantParams,
    /// f32 output rounded to `params`' grid.
    requantized: bool,
    ldc: usize,
    map: RowMap,
    /// [`RowAddend`]'s values (null for none), the step from one output row's addend to the
    /// next (0 for a single row) and the output rows that share an addend row.
    addend: (*const f32, usize, usize),
}

// SAFETY: every thread writes a disjoint set of tiles, and the buffer outlives the team's job
// that writes it (`team::run` returns only when every task is done).
unsafe impl Send for Sink {}
// SAFETY: as for Send: shared references only hand out disjoint rows (`row`'s contract).
unsafe impl Sync for Sink {}

impl Sink {
    /// Takes the output apart; `ldc` is its row length `n`, `map` where GEMM rows go in it,
    /// `addend` what is added to its rows: float output only, with a row for each of `m` GEMM
    /// rows' output rows (or an error naming what is accepted).
    pub(crate) fn new(
        out: crate::reference::Output<'_>,
        (ldc, m): (usize, usize),
        map: RowMap,
        addend: Option<RowAddend<'_>>,
    ) -> Result<Self, KernelError> {
        use crate::reference::Output;
        if addend.is_some() && matches!(out, Output::U8(..)) {
            return Err(KernelError::Geometry(
                "an addend goes with float output, not uint8 codes",
            ));
        }
        let addend = match addend {
            None => (core::ptr::null(), 0, 1),
            Some(RowAddend::Rows(values)) => {
                check_len("addend", map.rows(m) * ldc, values.len())?;
                (values.as_ptr(), ldc, 1)
            }
            Some(RowAddend::Row(values)) => {
                check_len("addend", ldc, values.len())?;
                (values.as_ptr(), 0, 1)
            }
            Some(RowAddend::PerRun { values, rows }) => {
                let rows = rows.max(1);
                check_len("addend", map.rows(m).div_ceil(rows) * ldc, values.len())?;
                (values.as_ptr(), ldc, rows)
            }
        };
        let null = (core::ptr::null_mut(), core::ptr::null_mut());
        let unit = QuantParams {
            scale: 1.0,
            zero_point: 0,
        };
        let ((f32, u8), params, requantized) = match out {
            Output::F32(d) => ((d.as_mut_ptr(), null.1), unit, false),
            Output::U8(d, params) => ((null.0, d.as_mut_ptr()), params, false),
            Output::Requantized(d, params) => ((d.as_mut_ptr(), null.1), params, true),
        };
        Ok(Sink {
            f32,
            u8,
            params,
            requantized,
            ldc,
            map,
            addend,
        })
    }

    /// Where output row `row`'s f32 outputs from column `col` start (in bounds when the row
    /// and column are; a raw pointer, as threads sharing the sink write disjoint rows).
    #[inline(always)]
    fn f32_at(&self, row: usize, col: usize) -> *mut f32 {
        self.f32.wrapping_add(row * self.ldc + col)
    }

    /// As [`Sink::f32_at`], for uint8 output.
    #[inline(always)]
    fn u8_at(&self, row: usize, col: usize) -> *mut u8 {
        self.u8.wrapping_add(row * self.ldc + col)
    }

    /// Where output row `row`'s addend values from column `col` start, and the step to the
    /// next output row's (0 when rows share one), if there is an addend; the step holds
    /// within one [`Segment`].
    #[inline(always)]
    fn addend_at(&self, row: usize, col: usize) -> Option<(*const f32, usize)> {
        let (addend, step, run) = self.addend;
        if addend.is_null() {
            return None;
        }
        let (row, next) = match run {
            1 => (row, step),
            run => (row / run, 0),
        };
        Some((addend.wrapping_add(row * step + col), next))
    }

    /// The `rows` GEMM rows from `r0` as segments of consecutive output rows that share an
    /// addend run (the rows a [`RowMap::Lines`] drops left out): the bookkeeping of a row is
    /// then done once per segment, not per row.
    #[inline(always)]
    fn segments(&self, r0: usize, rows: usize) -> Segments {
        let (width, kept) = match self.map {
            // One line that never ends: every row kept, at its own index.
            RowMap::All => (usize::MAX, usize::MAX),
            RowMap::Lines { width, kept } => (width, kept),
        };
        Segments {
            rows,
            from: 0,
            width,
            kept,
            run: self.addend.2,
            line: r0 / width,
            x: r0 % width,
        }
    }
}

/// Finishes each row of a tile whose sums are `acc`, as its sink's output kind says, the
/// kind's store made once per tile: `$finish` computes a row given `$sums` (the row's sums),
/// `$dst` (its outputs), `$store` and `$then` (the addend's row, if any, added to each float
/// value in the same pass: a second pass reloading the row just stored waited on the stores,
/// 6% of a U-Net on Zen 4).
/// `$cols` is the tile's width (`at.cols`), a constant where the caller matched one. The rows
/// go by [`Segment`]s, so that within one a row's outputs and addend are a pointer step on.
macro_rules! finish_rows {
    // The loop over one segment's float rows, for the store `$new` makes, each value plus its
    // addend's, if any, before it is stored.
    (@floats $new:expr, $seg:ident, $acc:expr, $sink:ident, $at:ident, $cols:expr,
        |$sums:ident, $dst:ident, $store:ident, $then:ident| $finish:expr) => {{
        let $store = $new;
        let dst0 = $sink.f32_at($seg.first, $at.col0);
        // SAFETY (for each row below): the segment's output rows and columns col0..col0+cols
        // lie inside the output (the caller's contract), `ldc` apart, and this thread alone
        // writes this tile.
        match $sink.addend_at($seg.first, $at.col0) {
            Some((add, step)) => {
                for i in 0..$seg.len {
                    let $sums = &$acc[($seg.from + i) * $at.nr..][..$cols];
                    // SAFETY: as above.
                    let $dst = unsafe { core::slice::from_raw_parts_mut(dst0.add(i * $sink.ldc), $cols) };
                    // SAFETY: the segment's output rows share an addend run, so their addend
                    // rows are `step` apart (0 for one row) and in bounds with them.
                    let add = unsafe { core::slice::from_raw_parts(add.add(i * step), $cols) };
                    let $then = Plus(add);
                    $finish;
                }
            }
            None => {
                for i in 0..$seg.len {
                    let $sums = &$acc[($seg.from + i) * $at.nr..][..$cols];
                    // SAFETY: as above.
                    let $dst = unsafe { core::slice::from_raw_parts_mut(dst0.add(i * $sink.ldc), $cols) };
                    let $then = Stored;
                    $finish;
                }
            }
        }
    }};
    ($divide:ty, $acc:expr, $at:expr, $cols:expr,
        |$sums:ident, $dst:ident, $store:ident, $then:ident| $finish:expr) => {{
        let at: &TileAt<'_> = $at;
        let sink = at.sink;
        for seg in sink.segments(at.row0, at.rows) {
            if !sink.u8.is_null() {
                let $store = Coded::<$divide>::new(sink.params);
                let dst0 = sink.u8_at(seg.first, at.col0);
                for i in 0..seg.len {
                    let $sums = &$acc[(seg.from + i) * at.nr..][..$cols];
                    let row = dst0.wrapping_add(i * sink.ldc);
                    // SAFETY: as in the float loop.
                    let $dst = unsafe { core::slice::from_raw_parts_mut(row, $cols) };
                    let $then = Stored;
                    $finish;
                }
            } else if sink.requantized {
                let grid = OnGrid::<$divide>::new(sink.params);
                finish_rows!(@floats grid, seg, $acc, sink, at, $cols,
                    |$sums, $dst, $store, $then| $finish)
            } else {
                finish_rows!(@floats AsIs, seg, $acc, sink, at, $cols,
                    |$sums, $dst, $store, $then| $finish)
            }
        }
    }};
}

/// Consecutive GEMM rows of a tile that go to consecutive output rows sharing an addend run:
/// `len` rows from the tile's row `from`, written from output row `first`.
struct Segment {
    from: usize,
    len: usize,
    first: usize,
}

/// [`Sink::segments`]' walk over a tile's rows.
struct Segments {
    /// The tile's rows, and the next one to place.
    rows: usize,
    from: usize,
    /// The row map's line width and kept rows, the addend's run, and where the next row is.
    width: usize,
    kept: usize,
    run: usize,
    line: usize,
    x: usize,
}

impl Iterator for Segments {
    type Item = Segment;

    #[inline(always)]
    fn next(&mut self) -> Option<Segment> {
        loop {
            if self.from == self.rows {
                return None;
            }
            let left = self.rows - self.from;
            let (len, kept) = match self.x < self.kept {
                true => ((self.kept - self.x).min(left), true),
                // The rows past a line's kept ones, dropped.
                false => ((self.width - self.x).min(left), false),
            };
            let first = self.line * self.kept + self.x;
            let len = match (kept, self.run) {
                (true, 1) | (false, _) => len,
                (true, run) => len.min(run - first % run),
            };
            let from = self.from;
            self.from += len;
            self.x += len;
            if self.x == self.width {
                (self.line, self.x) = (self.line + 1, 0);
            }
            if kept {
                return Some(Segment { from, len, first });
            }
        }
    }
}

/// Where a finished tile goes: `rows × cols` outputs from `(row0, col0)`; its sums are
/// row-major with stride `nr`.
pub(crate) struct TileAt<'a> {
    pub sink: &'a Sink,
    pub row0: usize,
    pub col0: usize,
    pub rows: usize,
    pub cols: usize,
    pub nr: usize,
}

/// Finishes a whole int8 tile, row by row (GELU into codes a block of rows at a time,
/// [`finish_gelu_tile_i8`]); with `WIDTHS` (the vector families), a full 16- or 32-wide tile
/// with its width as a constant, so that its rows' loops unroll without remainders (the per-row
/// bookkeeping of a short row otherwise costs about what it finishes; 2-5% of a U-Net). The
/// fp32 tiles and the scalar family keep one body: their copies cost more binary size than
/// they saved time.
///
/// # Safety
/// The tile's outputs are in bounds and owned by the caller's thread.
#[inline(always)]
pub(crate) unsafe fn finish_tile_i8<D: Divide, const WIDTHS: bool>(
    acc: &[i32],
    at: &TileAt<'_>,
    cols: &ColumnsI8<'_>,
    act: Activation,
) {
    if act == Activation::GeluTanh && !at.sink.u8.is_null() {
        // SAFETY: this function's contract, which is `finish_gelu_tile_i8`'s.
        return unsafe { finish_gelu_tile_i8::<D>(acc, at, cols) };
    }
    // GELU into floats keeps the one body too.
    let widths = WIDTHS && act != Activation::GeluTanh;
    match at.cols {
        16 if widths => finish_rows!(D, acc, at, 16, |sums, dst, store, then| finish_values_i8(
            sums,
            cols,
            act,
            dst,
            (store, then)
        )),
        32 if widths => finish_rows!(D, acc, at, 32, |sums, dst, store, then| finish_values_i8(
            sums,
            cols,
            act,
            dst,
            (store, then)
        )),
        width => finish_rows!(
            D,
            acc,
            at,
            width,
            |sums, dst, store, then| finish_values_i8(sums, cols, act, dst, (store, then))
        ),
    }
}

/// Values of a tile that [`finish_gelu_tile_i8`] takes through GELU at once.
const GELU_CHUNK: usize = 128;
const _: () = assert!(GELU_CHUNK >= MAX_NR, "a chunk holds a whole tile row");

/// [`finish_tile_i8`] for GELU into uint8 codes (the next int8 layer's input, a DiT's MLP): a
/// run of rows at a time, each dequantized into a dense block (rows × cols), GELU applied over
/// the block in two short loops ([`gelu_tanh_in_place`], the same bits as a value at a time),
/// then quantized and stored. A value at a time, GELU and the quantizing after it made one
/// chain too long for a core to overlap many values over a tile row of 16 or 32. Into floats
/// (no quantizing) a value at a time stays faster. `cargo bench -p mf-benches --bench
/// kernels -- dit_mlp` measures both.
///
/// # Safety
/// As for [`finish_tile_i8`].
#[inline(always)]
unsafe fn finish_gelu_tile_i8<D: Divide>(acc: &[i32], at: &TileAt<'_>, cols: &ColumnsI8<'_>) {
    let n = at.cols;
    let rows_per_chunk = (GELU_CHUNK / n.max(1)).max(1);
    let mut y = [0.0; GELU_CHUNK];
    let mut gate = [0.0; GELU_CHUNK];
    for first in (0..at.rows).step_by(rows_per_chunk) {
        let rows = rows_per_chunk.min(at.rows - first);
        let block = &mut y[..rows * n];
        let sums = acc[first * at.nr..].chunks(at.nr);
        for (values, sums) in block.chunks_exact_mut(n).zip(sums) {
            finish_values_i8(sums, cols, Activation::None, values, (AsIs, Stored));
        }
        gelu_tanh_in_place(block, &mut gate);
        let part = TileAt {
            sink: at.sink,
            row0: at.row0 + first,
            col0: at.col0,
            rows,
            cols: n,
            nr: n,
        };
        finish_rows!(D, block, &part, n, |values, dst, store, then| {
            store_values(values, dst, (store, then))
        });
    }
}

/// Stores finished values as `store` and `then` say.
#[inline(always)]
fn store_values<S: Store, T: Then<S::Value>>(
    values: &[f32],
    dst: &mut [S::Value],
    (store, then): (S, T),
) {
    let n = dst.len();
    let (values, then) = (&values[..n], then.row(n));
    for j in 0..n {
        dst[j] = then.then(j, store.value(values[j]));
    }
}

/// Finishes a whole fp32 tile, row by row.
///
/// # Safety
/// As for [`finish_tile_i8`].
#[inline(always)]
pub(crate) unsafe fn finish_tile_f32<D: Divide>(
    acc: &[f32],
    at: &TileAt<'_>,
    bias: &[f32],
    act: Activation,
) {
    finish_rows!(D, acc, at, at.cols, |sums, dst, store, then| {
        finish_values_f32(sums, bias, act, dst, (store, then))
    })
}

/// Per-column parameters of an int8 layer, sliced to the tile's columns.
pub(crate) struct ColumnsI8<'a> {
    pub corr: &'a [i32],
    pub scale: &'a [f32],
    pub bias: &'a [f32],
}

/// What is done to a finished value before it is stored: nothing, or an addend's value added
/// (rounded once in f32, as the Add node after the layer).
pub(crate) trait Then<V>: Copy {
    /// The same, its values sliced to the row's `n` (so that the loop's indexing is checked
    /// once).
    fn row(self, n: usize) -> Self;
    /// What is stored for the row's value `v` at column `j`.
    fn then(self, j: usize, v: V) -> V;
}

/// The value as finished.
#[derive(Clone, Copy)]
pub(crate) struct Stored;

impl<V> Then<V> for Stored {
    #[inline(always)]
    fn row(self, _: usize) -> Self {
        self
    }
    #[inline(always)]
    fn then(self, _: usize, v: V) -> V {
        v
    }
}

/// The value plus the addend row's value at its column.
#[derive(Clone, Copy)]
pub(crate) struct Plus<'a>(&'a [f32]);

impl Then<f32> for Plus<'_> {
    #[inline(always)]
    fn row(self, n: usize) -> Self {
        Plus(&self.0[..n])
    }
    #[inline(always)]
    fn then(self, j: usize, v: f32) -> f32 {
        v + self.0[j]
    }
}

/// One pass over an int8 row: each value finished and stored in the same iteration. (Two passes
/// through a staging row made the second pass's wide loads wait on the first pass's narrower
/// stores: the loads could not be forwarded from them.)
#[inline(always)]
fn finish_values_i8<S: Store, T: Then<S::Value>>(
    acc: &[i32],
    cols: &ColumnsI8<'_>,
    act: Activation,
    dst: &mut [S::Value],
    (store, then): (S, T),
) {
    let n = dst.len();
    let then = then.row(n);
    let (acc, corr, scale, bias) = (
        &acc[..n],
        &cols.corr[..n],
        &cols.scale[..n],
        &cols.bias[..n],
    );
    // Plain indexed loops with the activation hoisted: closures would not inherit the
    // caller's target features and would block vectorization.
    match act {
        Activation::None => {
            for j in 0..n {
                let sum = acc[j].wrapping_add(corr[j]);
                dst[j] = then.then(
                    j,
                    store.value(finish_i8(sum, scale[j], bias[j], Activation::None)),
                );
            }
        }
        Activation::Silu => {
            for j in 0..n {
                let sum = acc[j].wrapping_add(corr[j]);
                dst[j] = then.then(
                    j,
                    store.value(finish_i8(sum, scale[j], bias[j], Activation::Silu)),
                );
            }
        }
        Activation::GeluTanh => {
            for j in 0..n {
                let sum = acc[j].wrapping_add(corr[j]);
                dst[j] = then.then(
                    j,
                    store.value(finish_i8(sum, scale[j], bias[j], Activation::GeluTanh)),
                );
            }
        }
    }
}

/// One pass over an fp32 row, as [`finish_values_i8`].
#[inline(always)]
fn finish_values_f32<S: Store, T: Then<S::Value>>(
    acc: &[f32],
    bias: &[f32],
    act: Activation,
    dst: &mut [S::Value],
    (store, then): (S, T),
) {
    let n = dst.len();
    let then = then.row(n);
    let (acc, bias) = (&acc[..n], &bias[..n]);
    match act {
        Activation::None => {
            for j in 0..n {
                dst[j] = then.then(
                    j,
                    store.value(finish_f32(acc[j], bias[j], Activation::None)),
                );
            }
        }
        Activation::Silu => {
            for j in 0..n {
                dst[j] = then.then(
                    j,
                    store.value(finish_f32(acc[j], bias[j], Activation::Silu)),
                );
            }
        }
        Activation::GeluTanh => {
            for j in 0..n {
                dst[j] = then.then(
                    j,
                    store.value(finish_f32(acc[j], bias[j], Activation::GeluTanh)),
                );
            }
        }
    }
}

/// How a finished f32 value is stored.
pub(crate) trait Store: Copy {
    /// The stored element.
    type Value;
    /// The element stored for the finished value `y`.
    fn value(self, y: f32) -> Self::Value;
}

/// The f32 value itself.
#[derive(Clone, Copy)]
pub(crate) struct AsIs;

impl Store for AsIs {
    type Value = f32;
    #[inline(always)]
    fn value(self, y: f32) -> f32 {
        y
    }
}

/// The value's uint8 code.
pub(crate) struct Coded<D> {
    params: QuantParams,
    inv: f32,
    divide: PhantomData<D>,
}

/// The value rounded to a uint8 grid, as f32.
struct OnGrid<D> {
    params: QuantParams,
    inv: f32,
    divide: PhantomData<D>,
}

impl<D> Clone for Coded<D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<D> Copy for Coded<D> {}
impl<D> Clone for OnGrid<D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<D> Copy for OnGrid<D> {}

impl<D> Coded<D> {
    /// Codes for `params`.
    #[inline(always)]
    pub(crate) fn new(params: QuantParams) -> Self {
        let inv = 1.0 / params.scale;
        Coded {
            params,
            inv,
            divide: PhantomData,
        }
    }
}

impl<D> OnGrid<D> {
    #[inline(always)]
    fn new(params: QuantParams) -> Self {
        let inv = 1.0 / params.scale;
        OnGrid {
            params,
            inv,
            divide: PhantomData,
        }
    }
}

impl<D: Divide> Store for Coded<D> {
    type Value = u8;
    #[inline(always)]
    fn value(self, y: f32) -> u8 {
        self.params.quantize_by::<D>(y, self.inv)
    }
}

impl<D: Divide> Store for OnGrid<D> {
    type Value = f32;
    #[inline(always)]
    fn value(self, y: f32) -> f32 {
        self.params.round_to_grid::<D>(y, self.inv)
    }
}

/// Quantizes a slice of f32 to uint8 codes (the input side of an int8 layer).
#[inline(always)]
pub(crate) fn quantize_slice<D: Divide>(x: &[f32], params: QuantParams, codes: &mut [u8]) {
    let inv = 1.0 / params.scale;
    for (q, &v) in codes.iter_mut().zip(x) {
        *q = params.quantize_by::<D>(v, inv);
    }
}

/// [`crate::norm::layer_norm_rows_into`]'s signature: rows, output, `(row length, ε)`, scale,
/// bias.
pub(crate) type LayerNormRows =
    unsafe fn(&[f32], &mut [f32], (usize, f32), Option<&[f32]>, Option<&[f32]>);

/// The element-wise entry points a kernel family provides, compiled for its features.
pub(crate) struct Epilogue {
    /// Quantizes activations on the way into an int8 layer.
    pub quantize: unsafe fn(&[f32], QuantParams, &mut [u8]),
    /// Finishes an int8 tile.
    pub i8: unsafe fn(&[i32], &TileAt<'_>, &ColumnsI8<'_>, Activation),
    /// Finishes an fp32 tile.
    pub f32: unsafe fn(&[f32], &TileAt<'_>, &[f32], Activation),
    /// A normalization plane's moments ([`crate::norm::moments`]).
    pub moments: unsafe fn(&[f32]) -> (f64, f64),
    /// LayerNormalization rows ([`crate::norm::layer_norm_rows_into`]).
    pub layer_norm_rows: LayerNormRows,
    /// A normalization plane's affine + SiLU pass ([`crate::norm::affine`]).
    pub affine: unsafe fn(&[f32], &mut [f32], &crate::norm::PlaneAffine),
    /// The same pass writing uint8 codes ([`crate::norm::affine_codes`]).
    pub affine_codes: unsafe fn(&[f32], &mut [u8], &crate::norm::PlaneAffine, QuantParams),
    /// Per-channel shifted sums over pixel rows ([`crate::norm::shifted_sums`]).
    pub shifted_sums: ShiftedSums,
    /// The affine + SiLU pass over pixel rows ([`crate::norm::pixel_affine`]).
    pub pixel_affine: unsafe fn(&[f32], &mut [f32], &crate::norm::ChannelAffine),
    /// The same pass writing uint8 codes.
    pub pixel_affine_codes: unsafe fn(&[f32], &mut [u8], &crate::norm::ChannelAffine, QuantParams),
    /// tanh over a slice ([`crate::pointwise::tanh_into`]).
    pub tanh: unsafe fn(&[f32], &mut [f32]),
    /// sin or cos over a slice ([`crate::trig::sin_cos_into`]).
    pub sin_cos: unsafe fn(&[f32], &mut [f32], crate::trig::Wave),
    /// Softmax over rows of a length ([`crate::pointwise::softmax_into`]).
    pub softmax: unsafe fn(&[f32], &mut [f32], usize),
    /// An element-wise operation over a row ([`crate::pointwise::row_op_into`]).
    pub row_op: unsafe fn(
        crate::pointwise::RowOp,
        crate::pointwise::RowOperand<'_>,
        crate::pointwise::RowOperand<'_>,
        &mut [f32],
    ),
    /// The product of two activation matrices ([`crate::pointwise::matmul_into`]).
    pub matmul: MatMul,
}

/// Per-channel shifted sums over `(pixels, stride)` pixel rows ([`crate::norm::shifted_sums`]).
pub(crate) type ShiftedSums = unsafe fn(&[f32], (usize, usize), &[f32], &mut [f64]);

/// `c = a · b` with `[m, k, n]` ([`crate::pointwise::matmul_into`]).
pub(crate) type MatMul = unsafe fn(&[f32], &[f32], &mut [f32], [usize; 3]);

/// Defines `pub(crate) static EPILOGUE` with the element-wise loops compiled for `$features`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! epilogue_for {
    ($features:literal) => {
        /// sin or cos over a slice, vectorized for this family's features.
        #[target_feature(enable = $features)]
        pub(crate) fn sin_cos(x: &[f32], out: &mut [f32], wave: $crate::trig::Wave) {
            $crate::trig::sin_cos_into(x, out, wave)
        }

        $crate::epilogue::epilogue_for!($features, sin_cos = sin_cos);
    };
    // With another family's sin and cos: a loop of a few hundred values a generation, not
    // worth its own copy in the lean device build.
    ($features:literal, sin_cos = $sin_cos:path) => {
        #[target_feature(enable = $features)]
        unsafe fn finish_i8_tile(
            acc: &[i32],
            at: &$crate::epilogue::TileAt<'_>,
            cols: &$crate::epilogue::ColumnsI8<'_>,
            act: $crate::Activation,
        ) {
            // SAFETY: the caller holds this function's contract, which is `finish_tile_*`'s (the tile's
            // outputs are in bounds and owned by this thread).
            unsafe {
                $crate::epilogue::finish_tile_i8::<$crate::quant::FastDivide, true>(
                    acc, at, cols, act,
                )
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn finish_f32_tile(
            acc: &[f32],
            at: &$crate::epilogue::TileAt<'_>,
            bias: &[f32],
            act: $crate::Activation,
        ) {
            // SAFETY: the caller holds this function's contract, which is `finish_tile_*`'s (the tile's
            // outputs are in bounds and owned by this thread).
            unsafe {
                $crate::epilogue::finish_tile_f32::<$crate::quant::FastDivide>(acc, at, bias, act)
            }
        }

        #[target_feature(enable = $features)]
        fn quantize(x: &[f32], params: $crate::QuantParams, codes: &mut [u8]) {
            $crate::epilogue::quantize_slice::<$crate::quant::FastDivide>(x, params, codes)
        }

        #[target_feature(enable = $features)]
        fn moments(row: &[f32]) -> (f64, f64) {
            $crate::norm::moments(row)
        }

        #[target_feature(enable = $features)]
        fn layer_norm_rows(
            x: &[f32],
            out: &mut [f32],
            rows: (usize, f32),
            scale: Option<&[f32]>,
            bias: Option<&[f32]>,
        ) {
            $crate::norm::layer_norm_rows_into(x, out, rows, scale, bias)
        }

        #[target_feature(enable = $features)]
        fn affine(x: &[f32], out: &mut [f32], p: &$crate::norm::PlaneAffine) {
            $crate::norm::affine(x, out, p)
        }

        #[target_feature(enable = $features)]
        fn affine_codes(
            x: &[f32],
            out: &mut [u8],
            p: &$crate::norm::PlaneAffine,
            params: $crate::QuantParams,
        ) {
            $crate::norm::affine_codes::<$crate::quant::FastDivide>(x, out, p, params)
        }

        #[target_feature(enable = $features)]
        fn shifted_sums(x: &[f32], rows: (usize, usize), shift: &[f32], sums: &mut [f64]) {
            $crate::norm::shifted_sums(x, rows, shift, sums)
        }

        #[target_feature(enable = $features)]
        fn pixel_affine(x: &[f32], out: &mut [f32], a: &$crate::norm::ChannelAffine) {
            $crate::norm::pixel_affine(x, out, a)
        }

        #[target_feature(enable = $features)]
        fn pixel_affine_codes(
            x: &[f32],
            out: &mut [u8],
            a: &$crate::norm::ChannelAffine,
            params: $crate::QuantParams,
        ) {
            $crate::norm::pixel_affine_codes::<$crate::quant::FastDivide>(x, out, a, params)
        }

        #[target_feature(enable = $features)]
        fn tanh(x: &[f32], out: &mut [f32]) {
            $crate::pointwise::tanh_into(x, out)
        }

        #[target_feature(enable = $features)]
        fn softmax(x: &[f32], y: &mut [f32], cols: usize) {
            $crate::pointwise::softmax_into(x, y, cols)
        }

        #[target_feature(enable = $features)]
        fn row_op(
            op: $crate::pointwise::RowOp,
            a: $crate::pointwise::RowOperand<'_>,
            b: $crate::pointwise::RowOperand<'_>,
            dst: &mut [f32],
        ) {
            $crate::pointwise::row_op_into(op, a, b, dst)
        }

        #[target_feature(enable = $features)]
        fn matmul(a: &[f32], b: &[f32], c: &mut [f32], dims: [usize; 3]) {
            $crate::pointwise::matmul_into::<{ $crate::pointwise::PANEL_ROWS }>(a, b, c, dims)
        }

        /// This family's element-wise loops, vectorized for its features.
        pub(crate) static EPILOGUE: $crate::epilogue::Epilogue = $crate::epilogue::Epilogue {
            quantize,
            i8: finish_i8_tile,
            f32: finish_f32_tile,
            moments,
            layer_norm_rows,
            affine,
            affine_codes,
            shifted_sums,
            pixel_affine,
            pixel_affine_codes,
            tanh,
            sin_cos: $sin_cos,
            softmax,
            row_op,
            matmul,
        };
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use epilogue_for;
