//! Loops over activations that the engine's reference ops would otherwise run at the
//! baseline vector width: tanh over a slice (the DiT's GELU), softmax over rows (attention's
//! scores), element-wise operations over a row (the engine's fused element-wise chains) and
//! the product of two activation matrices (attention's `Q·Kᵀ` and `·V`, whose operands change
//! every call, so there is nothing to pack). Plain Rust compiled per kernel family (`epilogue_for!`): the same
//! operations in the same order on every family, so the same bits as the portable bodies.
use crate::activation::{exp, tanh};
use crate::error::{KernelError, check_len};
use crate::isa::Isa;
use crate::norm::sigmoid;

/// `out[i] = tanh(x[i])` ([`tanh`]).
#[inline(always)]
pub(crate) fn tanh_into(x: &[f32], out: &mut [f32]) {
    for (y, &v) in out.iter_mut().zip(x) {
        *y = tanh(v);
    }
}

/// An element-wise operation over a row ([`RowOps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    /// `a + b`.
    Add,
    /// `a − b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
    /// [`sigmoid`]`(a)` (`b` unused).
    Sigmoid,
}

/// An operand of a [`RowOp`]: a row's values, one value for the whole row, a shorter row
/// repeated along it, or the output's own values (the operation then runs in place).
#[derive(Debug, Clone, Copy)]
pub enum RowOperand<'a> {
    /// One value per output.
    Values(&'a [f32]),
    /// The same value for every output.
    Repeated(f32),
    /// One value per column of outputs taken as rows of this length, the same for every such
    /// row (an adaLN scale broadcast over a sample's tokens).
    Tiled(&'a [f32]),
    /// Each output's own value before it is overwritten.
    Output,
}

impl<'a> RowOperand<'a> {
    /// Whether it fits a row of `len` outputs.
    fn fits(&self, len: usize) -> bool {
        match self {
            RowOperand::Values(v) => v.len() == len,
            RowOperand::Tiled(t) => !t.is_empty() && len.is_multiple_of(t.len()),
            RowOperand::Repeated(_) | RowOperand::Output => true,
        }
    }

    /// The length of its tile, if it is [`RowOperand::Tiled`].
    fn tile(&self) -> Option<usize> {
        match self {
            RowOperand::Tiled(t) => Some(t.len()),
            _ => None,
        }
    }

    /// The operand over the `k`-th piece of `len` outputs, as a row of them: a tile's piece
    /// is the tile itself.
    #[inline(always)]
    fn piece(self, k: usize, len: usize) -> RowOperand<'a> {
        match self {
            RowOperand::Values(v) => RowOperand::Values(&v[k * len..][..len]),
            RowOperand::Tiled(t) => RowOperand::Values(t),
            other => other,
        }
    }
}

/// `dst = op(a, b)` over a row, each value one IEEE operation (the reference op's own), in
/// pieces of a tiled operand's length (one piece without one), each piece reading the tile
/// as its values. The operands' lengths are checked ([`RowOps::apply`]).
#[inline(always)]
pub(crate) fn row_op_into(op: RowOp, a: RowOperand<'_>, b: RowOperand<'_>, dst: &mut [f32]) {
    let len = a.tile().or(b.tile()).unwrap_or(dst.len()).max(1);
    for (k, piece) in dst.chunks_mut(len).enumerate() {
        piece_op_into(op, a.piece(k, len), b.piece(k, len), piece);
    }
}

/// [`row_op_into`] over one piece, no operand tiled. A first operand that is not the output is
/// copied there first (unless the second one is the output), so that five loops per operation
/// cover every pair of operands: the code stays small in the lean device build, which compiles
/// it once per kernel family (nine loops per operation made that build 70 KB larger).
#[inline(always)]
fn piece_op_into(op: RowOp, a: RowOperand<'_>, b: RowOperand<'_>, dst: &mut [f32]) {
    use RowOperand::{Output, Repeated, Values};
    // Sigmoid reads `a` alone, whatever `b` is.
    let b_apart = op == RowOp::Sigmoid || !matches!(b, Output);
    let a = match a {
        Values(v) if b_apart => {
            // A piece is often a short row (an adaLN row of 128 tiled over the tokens): a
            // `memcpy` call per piece cost more than the copy.
            crate::layout::copy_short(dst, v);
            Output
        }
        Repeated(x) if b_apart => {
            dst.fill(x);
            Output
        }
        _ => a,
    };
    match op {
        RowOp::Add => in_place(a, b, dst, |x, y| x + y),
        RowOp::Sub => in_place(a, b, dst, |x, y| x - y),
        RowOp::Mul => in_place(a, b, dst, |x, y| x * y),
        RowOp::Div => in_place(a, b, dst, |x, y| x / y),
        RowOp::Sigmoid => dst.iter_mut().for_each(|d| *d = sigmoid(*d)),
    }
}

/// `dst = f(a, b)` over a row where one operand at least is the output itself.
#[inline(always)]
fn in_place(a: RowOperand<'_>, b: RowOperand<'_>, dst: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    use RowOperand::{Output, Repeated, Tiled, Values};
    match (a, b) {
        (Output, Values(b)) => dst.iter_mut().zip(b).for_each(|(d, &y)| *d = f(*d, y)),
        (Output, Repeated(y)) => dst.iter_mut().for_each(|d| *d = f(*d, y)),
        (Values(a), Output) => dst.iter_mut().zip(a).for_each(|(d, &x)| *d = f(x, *d)),
        (Repeated(x), Output) => dst.iter_mut().for_each(|d| *d = f(x, *d)),
        (Output, Output) => dst.iter_mut().for_each(|d| *d = f(*d, *d)),
        (Values(_) | Repeated(_), Values(_) | Repeated(_)) => {
            unreachable!("piece_op_into copies the first operand to the output")
        }
        (Tiled(_), _) | (_, Tiled(_)) => unreachable!("row_op_into hands pieces, not tiles"),
    }
}

/// Element-wise operations over rows, compiled for one kernel family: made only for a family
/// this CPU has, so applying one needs no further check.
#[derive(Clone, Copy)]
pub struct RowOps {
    f: unsafe fn(RowOp, RowOperand<'_>, RowOperand<'_>, &mut [f32]),
}

impl RowOps {
    /// The operations of `isa`, or an error when this CPU lacks it.
    pub fn new(isa: Isa) -> Result<RowOps, KernelError> {
        Ok(RowOps {
            f: crate::arch::f32_micro(isa.require()?).epilogue.row_op,
        })
    }

    /// `dst = op(a, b)` ([`RowOp`]), `b` unused by Sigmoid; an error when an operand's row is
    /// not `dst`'s length.
    pub fn apply(
        &self,
        op: RowOp,
        a: RowOperand<'_>,
        b: RowOperand<'_>,
        dst: &mut [f32],
    ) -> Result<(), KernelError> {
        if !a.fits(dst.len()) || !b.fits(dst.len()) {
            return Err(KernelError::Operands(
                "an operand's row is not the output's length (or a tile's length does not divide it)",
            ));
        }
        if let (Some(x), Some(y)) = (a.tile(), b.tile())
            && x != y
        {
            return Err(KernelError::Operands(
                "two tiled operands of different lengths",
            ));
        }
        // SAFETY: `new` checked that this CPU has the family's features.
        unsafe { (self.f)(op, a, b, dst) };
        Ok(())
    }
}

/// Lanes of a softmax row's sum: value `j` is added into lane `j % ROW_LANES`, and the lanes
/// are then added in a fixed tree of pairs, so every vector width sums in the same order.
const ROW_LANES: usize = 16;

/// Softmax of each `cols`-value row of `x` into `y`: `exp(v − max)` ([`exp`]), summed in f32
/// over [`ROW_LANES`] lanes then a fixed tree of pairs, each value divided by the sum.
///
/// Rows of at most [`ROW_LANES`] values (attention's scores over a few tokens) go
/// [`SHORT_ROWS`] at a time ([`short_rows`]): a short row is one chain of dependent steps
/// (maximum, exponential, sum, division), and a group's chains overlap.
#[inline(always)]
pub(crate) fn softmax_into(x: &[f32], y: &mut [f32], cols: usize) {
    let (x, y) = if cols <= ROW_LANES {
        let grouped = x.len() / (SHORT_ROWS * cols) * (SHORT_ROWS * cols);
        let (xs, x_left) = x.split_at(grouped);
        let (ys, y_left) = y.split_at_mut(grouped);
        let groups = xs.chunks_exact(SHORT_ROWS * cols);
        for (rows, outs) in groups.zip(ys.chunks_exact_mut(SHORT_ROWS * cols)) {
            short_rows(rows, outs, cols);
        }
        (x_left, y_left)
    } else {
        (x, y)
    };
    for (row, out) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let max = row_max(row);
        let mut lanes = [0f32; ROW_LANES];
        for (values, outs) in row.chunks(ROW_LANES).zip(out.chunks_mut(ROW_LANES)) {
            for ((lane, &v), e) in lanes.iter_mut().zip(values).zip(outs) {
                *e = exp(v - max);
                *lane += *e;
            }
        }
        let sum = combine(lanes);
        for e in out.iter_mut() {
            *e /= sum;
        }
    }
}

/// Rows of at most [`ROW_LANES`] values softmaxed together.
const SHORT_ROWS: usize = 4;

/// [`softmax_into`] over [`SHORT_ROWS`] rows of `cols` (at most [`ROW_LANES`]) values, each
/// step done for every row before the next: value `j` is lane `j`, so each row's operations
/// are those of the loop over one row.
#[inline(always)]
fn short_rows(x: &[f32], y: &mut [f32], cols: usize) {
    let rows: [&[f32]; SHORT_ROWS] = core::array::from_fn(|r| &x[r * cols..][..cols]);
    let maxes = rows.map(row_max);
    let mut lanes = [[0f32; ROW_LANES]; SHORT_ROWS];
    for ((row_lanes, row), max) in lanes.iter_mut().zip(rows).zip(maxes) {
        for (lane, &v) in row_lanes.iter_mut().zip(row) {
            *lane = exp(v - max);
        }
    }
    let sums = lanes.map(combine);
    for ((out, row_lanes), sum) in y.chunks_exact_mut(cols).zip(&lanes).zip(sums) {
        for (e, &lane) in out.iter_mut().zip(row_lanes) {
            *e = lane / sum;
        }
    }
}

/// The largest value of `row` ignoring NaN (as `f32::max`), in four interleaved chains so
/// that the comparisons do not wait on each other one by one. Only a zero's sign can depend
/// on the order, and `v − max` is the same for either sign.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut chains = [f32::NEG_INFINITY; 4];
    let mut quads = row.chunks_exact(4);
    for quad in &mut quads {
        for (m, &v) in chains.iter_mut().zip(quad) {
            *m = m.max(v);
        }
    }
    let tail = quads.remainder().iter().copied();
    let [a, b, c, d] = chains;
    tail.fold(a.max(b).max(c.max(d)), f32::max)
}

/// The lanes added in a fixed tree: the upper half into the lower, halving.
#[inline(always)]
fn combine(mut lanes: [f32; ROW_LANES]) -> f32 {
    let mut width = ROW_LANES / 2;
    while width > 0 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// `c = a · b` for row-major `a` `[m, k]`, `b` `[k, n]` and `c` `[m, n]`: each output row
/// starts at 0 and adds `a[i, p] · b[p, :]` for `p` in order, each product and sum rounded
/// (no fused multiply-add).
///
/// Rows whose length is a multiple of [`PANEL`] (attention's head sizes and token counts) are
/// summed in registers across the depth: in the x86 vector families a panel of columns at a
/// time, `ROWS` ([`PANEL_ROWS`]) rows at once, so that each row's chain of additions overlaps
/// the others' instead of waiting on its own latency; in the scalar and NEON families (`ROWS`
/// 1), rows of 16, 32 or 64 whole, one at a time. Other widths through `c` itself. Each sum is
/// taken in the same order every way.
#[inline(always)]
pub(crate) fn matmul_into<const ROWS: usize>(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    [m, k, n]: [usize; 3],
) {
    match (ROWS, n) {
        (1, 16) => whole_rows::<16>(a, b, c, [m, k]),
        (1, 32) => whole_rows::<32>(a, b, c, [m, k]),
        (1, 64) => whole_rows::<64>(a, b, c, [m, k]),
        (2.., n) if n.is_multiple_of(PANEL) => {
            for col0 in (0..n).step_by(PANEL) {
                panel::<ROWS>(a, b, c, [m, k, n], col0);
            }
        }
        _ => any_rows(a, b, c, [m, k, n]),
    }
}

/// [`matmul_into`] one row at a time for rows of `N` outputs, summed in a local row (the
/// scalar and NEON families: a whole row's sums in registers, one pass over its operands).
#[inline(always)]
fn whole_rows<const N: usize>(a: &[f32], b: &[f32], c: &mut [f32], [m, k]: [usize; 2]) {
    for (row, out) in a.chunks_exact(k).zip(c.chunks_exact_mut(N)).take(m) {
        let mut sums = [0f32; N];
        for (&x, line) in row.iter().zip(b.chunks_exact(N)) {
            for (y, &w) in sums.iter_mut().zip(line) {
                *y += x * w;
            }
        }
        out.copy_from_slice(&sums);
    }
}

/// Columns of the product summed together in registers (one AVX-512 vector, two AVX2 or four
/// NEON ones).
const PANEL: usize = 16;

/// Rows of the product the x86 families sum together: four chains of additions in flight,
/// where a row of 16 sums is one AVX-512 vector (one chain) or two AVX2 ones.
#[cfg(target_arch = "x86_64")]
pub(crate) const PANEL_ROWS: usize = 4;

/// On Arm, one: a row of 16 sums is four NEON vectors, four chains already, and four rows at a
/// time took 2.4% more instructions for the fp32 DiT than whole rows (qemu-aarch64).
#[cfg(target_arch = "aarch64")]
pub(crate) const PANEL_ROWS: usize = 1;

/// [`matmul_into`]'s columns `col0..col0 + PANEL`, `ROWS` rows at a time (the rows left over
/// one at a time).
#[inline(always)]
fn panel<const ROWS: usize>(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    [m, k, n]: [usize; 3],
    col0: usize,
) {
    let lines = || {
        b[..k * n]
            .chunks_exact(n)
            .map(|line| &line[col0..][..PANEL])
    };
    let (a, c) = (&a[..m * k], &mut c[..m * n]);
    let blocks = a.chunks_exact(ROWS * k);
    let left = blocks.remainder();
    let mut outs = c
        .chunks_exact_mut(n)
        .map(|row| &mut row[col0..col0 + PANEL]);
    for block in blocks {
        let rows: [&[f32]; ROWS] = core::array::from_fn(|r| &block[r * k..][..k]);
        let mut sums = [[0f32; PANEL]; ROWS];
        for (p, line) in lines().enumerate() {
            for (row_sums, row) in sums.iter_mut().zip(rows) {
                let x = row[p];
                for (y, &w) in row_sums.iter_mut().zip(line) {
                    *y += x * w;
                }
            }
        }
        // The block's sums first: zip then stops before it takes a row past them from `outs`.
        for (row_sums, out) in sums.iter().zip(&mut outs) {
            out.copy_from_slice(row_sums);
        }
    }
    for (row, out) in left.chunks_exact(k).zip(outs) {
        let mut sums = [0f32; PANEL];
        for (&x, line) in row.iter().zip(lines()) {
            for (y, &w) in sums.iter_mut().zip(line) {
                *y += x * w;
            }
        }
        out.copy_from_slice(&sums);
    }
}

/// [`matmul_into`] for any row length, summed in `c`.
#[inline(always)]
fn any_rows(a: &[f32], b: &[f32], c: &mut [f32], [m, k, n]: [usize; 3]) {
    for (row, out) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)).take(m) {
        out.fill(0.0);
        for (&x, line) in row.iter().zip(b.chunks_exact(n)) {
            for (y, &w) in out.iter_mut().zip(line) {
                *y += x * w;
            }
        }
    }
}

/// [`tanh`] of every value of `x` into `out`, compiled for `isa`.
pub fn tanh_slice(isa: Isa, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check_len("tanh output", x.len(), out.len())?;
    let f = crate::arch::f32_micro(isa.require()?).epilogue.tanh;
    // SAFETY: `require` checked that this CPU has the family's features.
    unsafe { f(x, out) };
    Ok(())
}

/// sin or cos ([`crate::trig`]) of every value of `x` into `out`, compiled for `isa`: the
/// same bits as [`crate::trig::sin`] and [`crate::trig::cos`] one value at a time.
pub fn sin_cos_slice(
    isa: Isa,
    x: &[f32],
    out: &mut [f32],
    wave: crate::trig::Wave,
) -> Result<(), KernelError> {
    check_len("sin or cos output", x.len(), out.len())?;
    let f = crate::arch::f32_micro(isa.require()?).epilogue.sin_cos;
    // SAFETY: `require` checked that this CPU has the family's features.
    unsafe { f(x, out, wave) };
    Ok(())
}

/// Softmax of every `cols`-value row of `x` into `y` ([`softmax_into`]'s order, so the same
/// bits on every family), compiled for `isa`.
pub fn softmax_rows(isa: Isa, x: &[f32], y: &mut [f32], cols: usize) -> Result<(), KernelError> {
    check_len("softmax output", x.len(), y.len())?;
    if x.is_empty() {
        return Ok(());
    }
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(KernelError::Operands(
            "softmax rows do not divide the values",
        ));
    }
    let f = crate::arch::f32_micro(isa.require()?).epilogue.softmax;
    // SAFETY: `require` checked that this CPU has the family's features.
    unsafe { f(x, y, cols) };
    Ok(())
}

/// `c = a · b` (`[m, k]` by `[k, n]`, row-major) compiled for `isa`; the sums as
/// `matmul_into` takes them.
pub fn matmul(
    isa: Isa,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    [m, k, n]: [usize; 3],
) -> Result<(), KernelError> {
    let size = |r: usize, c: usize| {
        r.checked_mul(c)
            .ok_or(KernelError::Operands("the product's size overflows"))
    };
    check_len("left operand", size(m, k)?, a.len())?;
    check_len("right operand", size(k, n)?, b.len())?;
    check_len("product", size(m, n)?, c.len())?;
    if k == 0 {
        c.fill(0.0);
        return Ok(());
    }
    let f = crate::arch::f32_micro(isa.require()?).epilogue.matmul;
    // SAFETY: `require` checked that this CPU has the family's features.
    unsafe { f(a, b, c, [m, k, n]) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn every_family_gives_the_portable_bits() {
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 125.0 - 4.0)
                .collect()
        };
        let shapes = [
            [1, 1, 1],
            [16, 32, 16],
            [5, 7, 33],
            [3, 64, 17],
            [4, 16, 32],
            [3, 9, 64],
            // Blocks of four rows with rows left over, over one, two and four panels.
            [7, 5, 16],
            [5, 3, 32],
            [2, 40, 64],
        ];
        for [m, k, n] in shapes {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let mut want = alloc::vec![0f32; m * n];
            any_rows(&a, &b, &mut want, [m, k, n]);
            let mut one_row = alloc::vec![f32::NAN; m * n];
            matmul_into::<1>(&a, &b, &mut one_row, [m, k, n]);
            let same = one_row
                .iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "one row at a time, {m}x{k}x{n}");
            // Against f64 sums too: a wrong index would be far off.
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                        .sum();
                    assert!((want[i * n + j] as f64 - exact).abs() < 1e-4 * k as f64);
                }
            }
            let x = values(m * n + 3, 3);
            let mut tanh_want = alloc::vec![0f32; x.len()];
            tanh_into(&x, &mut tanh_want);
            for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                let mut got = alloc::vec![f32::NAN; m * n];
                matmul(isa, &a, &b, &mut got, [m, k, n]).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{isa} {m}x{k}x{n}");
                let mut got = alloc::vec![0f32; x.len()];
                tanh_slice(isa, &x, &mut got).unwrap();
                assert_eq!(bits(&got), bits(&tanh_want), "{isa} tanh");
                // Embedding-sized arguments (to ±500), and one beyond the reduction.
                let mut angles: Vec<f32> = x.iter().map(|v| v * 125.0).collect();
                angles.push(-1e5);
                for (wave, one) in [
                    (crate::trig::Wave::Sin, crate::trig::sin as fn(f32) -> f32),
                    (crate::trig::Wave::Cos, crate::trig::cos),
                ] {
                    let want: Vec<f32> = angles.iter().map(|&v| one(v)).collect();
                    let mut got = alloc::vec![0f32; angles.len()];
                    sin_cos_slice(isa, &angles, &mut got, wave).unwrap();
                    assert_eq!(bits(&got), bits(&want), "{isa} {wave:?}");
                }
            }
        }
        let mut c = [1.0f32; 6];
        matmul(Isa::Scalar, &[], &[], &mut c, [2, 0, 3]).unwrap();
        assert_eq!(c, [0.0; 6], "an empty sum is 0");
        assert!(matmul(Isa::Scalar, &[1.0; 5], &[1.0; 6], &mut c, [2, 3, 3]).is_err());
    }

    #[test]
    fn softmax_rows_sum_to_one_near_f64_and_give_the_portable_bits_on_every_family() {
        extern crate std;
        // Rows shorter than a lane set, of one set, one past it, several and a remainder;
        // values over about ±30, so the weights span many orders of magnitude.
        for cols in [1, 5, 16, 17, 33, 100] {
            let rows = 7;
            let x: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919 + 13) % 1000) as f32 * 0.06 - 30.0)
                .collect();
            let mut want = alloc::vec![f32::NAN; x.len()];
            softmax_into(&x, &mut want, cols);
            // Rows grouped or not, the same bits as the loop over one row at a time.
            let mut one_by_one = alloc::vec![f32::NAN; x.len()];
            for (row, out) in x.chunks(cols).zip(one_by_one.chunks_mut(cols)) {
                softmax_into(row, out, cols);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&want), bits(&one_by_one), "rows of {cols}, grouped");
            for (row, y) in x.chunks(cols).zip(want.chunks(cols)) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                for (&v, &got) in row.iter().zip(y) {
                    let exact = (v as f64 - max).exp() / sum;
                    // `v − max` is rounded to f32 first: its error scales with its size.
                    let tolerance = 4e-7 * (1.0 + (v as f64 - max).abs()) * exact;
                    assert!(
                        (got as f64 - exact).abs() <= tolerance,
                        "{cols}: {got} vs {exact}"
                    );
                }
            }
            for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                let mut got = alloc::vec![f32::NAN; x.len()];
                softmax_rows(isa, &x, &mut got, cols).unwrap();
                assert_eq!(bits(&got), bits(&want), "{isa} softmax of rows of {cols}");
            }
        }
        let mut y = [0f32; 6];
        assert!(softmax_rows(Isa::Scalar, &[0.0; 6], &mut y, 4).is_err());
        assert!(softmax_rows(Isa::Scalar, &[0.0; 6], &mut y[..5], 3).is_err());
        assert!(softmax_rows(Isa::Scalar, &[], &mut [], 0).is_ok());
    }

    #[test]
    fn row_ops_compute_each_operation_on_every_kind_of_operand_and_family() {
        let (a, b, before) = (
            (0..36).map(|i| i as f32 * 0.37 - 6.0).collect::<Vec<f32>>(),
            (0..36).map(|i| 3.0 - i as f32 * 0.11).collect::<Vec<f32>>(),
            (0..36).map(|i| (i % 7) as f32 - 2.5).collect::<Vec<f32>>(),
        );
        // Tiles of 12 and 9 values (three and four pieces of the row), unlike every row of it.
        let tiles = [
            (0..12).map(|i| 1.5 - i as f32 * 0.29).collect::<Vec<f32>>(),
            (0..9).map(|i| i as f32 * 0.53 - 2.0).collect::<Vec<f32>>(),
        ];
        type Reference = fn(f32, f32) -> f32;
        let ops: [(RowOp, Reference); 5] = [
            (RowOp::Add, |x, y| x + y),
            (RowOp::Sub, |x, y| x - y),
            (RowOp::Mul, |x, y| x * y),
            (RowOp::Div, |x, y| x / y),
            (RowOp::Sigmoid, |x, _| sigmoid(x)),
        ];
        fn kinds<'a>(v: &'a [f32], tile: &'a [f32]) -> [RowOperand<'a>; 4] {
            [
                RowOperand::Values(v),
                RowOperand::Repeated(0.625),
                RowOperand::Tiled(tile),
                RowOperand::Output,
            ]
        }
        for (op, f) in ops {
            for tile in &tiles {
                for x in kinds(&a, tile) {
                    for y in kinds(&b, tile) {
                        let value = |o: RowOperand<'_>, i: usize| match o {
                            RowOperand::Values(v) => v[i],
                            RowOperand::Repeated(r) => r,
                            RowOperand::Tiled(t) => t[i % t.len()],
                            RowOperand::Output => before[i],
                        };
                        let want: Vec<u32> = (0..36)
                            .map(|i| f(value(x, i), value(y, i)).to_bits())
                            .collect();
                        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
                            let mut dst = before.clone();
                            RowOps::new(isa).unwrap().apply(op, x, y, &mut dst).unwrap();
                            let got: Vec<u32> = dst.iter().map(|v| v.to_bits()).collect();
                            assert_eq!(got, want, "{isa} {op:?} {x:?} {y:?}");
                        }
                    }
                }
            }
        }
        let mut short = [0f32; 3];
        let ops = RowOps::new(Isa::Scalar).unwrap();
        let wrong = ops.apply(
            RowOp::Add,
            RowOperand::Values(&a),
            RowOperand::Output,
            &mut short,
        );
        assert!(wrong.is_err(), "a row of 36 into 3 outputs");
        let mut row = before.clone();
        let (seven, [twelve, nine]) = (&a[..7], &tiles);
        let uneven = ops.apply(
            RowOp::Mul,
            RowOperand::Tiled(seven),
            RowOperand::Output,
            &mut row,
        );
        assert!(uneven.is_err(), "a tile of 7 along 36 outputs");
        let unlike = RowOperand::Tiled(twelve);
        let two = ops.apply(RowOp::Mul, unlike, RowOperand::Tiled(nine), &mut row);
        assert!(two.is_err(), "tiles of 12 and 9 together");
        assert_eq!(
            row, before,
            "a refused operation leaves the output as it was"
        );
    }
}
