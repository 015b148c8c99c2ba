//! Tiles one output column wide, for layers of one or two outputs (a U-Net's last convolution,
//! to a grey image's one channel): each row's dot product with the column's weights, summed
//! in vector lanes along the depth, where a 16- or 32-column tile would spend all but one
//! column's multiply-adds on padding. Plain Rust that each vector family (AVX-512, AVX2, NEON)
//! compiles with its own features (`dot_micros_for!`); int8 sums are exact, so a layer gives
//! the wide tiles' bits.
use super::Depth;

/// Rows of a one-column tile.
pub(crate) const ROWS: usize = 32;

/// int8 depth values summed side by side: two vectors of i32 sums (AVX-512), then one for what
/// is left, then one by one (what is left added lane by lane into the wide sums made LLVM
/// build each vector from scalars, 9× slower).
const LANES: usize = 32;

/// The lanes for what the wide blocks leave.
const HALF: usize = LANES / 2;

/// fp32 depth values summed side by side (the lanes' sums added in order at the end: a
/// pairwise sum or blocks of two widths made LLVM keep the lanes in memory, 2.5× slower).
const F32_LANES: usize = 16;

/// `c[r] = Σ a[r, e] · b[e]` over `depth`'s runs for `rows` rows of u8 codes, i32 sums.
///
/// # Safety
/// [`super::I8Micro`]'s tile contract for `nr = 1`, `ku = 1` and u8 codes: `a` points at
/// `rows` rows `lda` bytes apart, each holding `(runs − 1) · stride + steps` codes; `b` holds
/// `runs · steps` weights; `c` has room for `rows` sums.
#[inline(always)]
pub(crate) unsafe fn i8_rows(
    rows: usize,
    depth: Depth,
    a: *const u8,
    lda: usize,
    b: *const i8,
    c: *mut i32,
) {
    let len = depth.steps;
    // SAFETY: the contract's `runs · steps` weights.
    let weights = unsafe { core::slice::from_raw_parts(b, depth.runs * len) };
    let product = |x: u8, w: i8| (x as i32).wrapping_mul(w as i32);
    for r in 0..rows {
        let (mut wide, mut half, mut one) = ([0i32; LANES], [0i32; HALF], 0i32);
        for (run, w) in weights.chunks_exact(len.max(1)).enumerate() {
            // SAFETY: row `r` holds `run · stride + steps` codes from its start (the contract).
            let x =
                unsafe { core::slice::from_raw_parts(a.add(r * lda + run * depth.stride), len) };
            let (x, w) = lanes_into(&mut wide, (x, w), product, i32::wrapping_add);
            let (x, w) = lanes_into(&mut half, (x, w), product, i32::wrapping_add);
            one = x
                .iter()
                .zip(w)
                .fold(one, |s, (&x, &w)| s.wrapping_add(product(x, w)));
        }
        let sum = |lanes: &[i32]| lanes.iter().fold(0i32, |s, &v| s.wrapping_add(v));
        // SAFETY: `c` has room for `rows` sums.
        unsafe { *c.add(r) = sum(&wide).wrapping_add(sum(&half)).wrapping_add(one) };
    }
}

/// `c[r] = Σ a[r, e] · b[e]` over `depth`'s runs for `rows` rows of f32 values.
///
/// # Safety
/// [`super::F32Micro`]'s tile contract for `nr = 1`: `a` points at `rows` rows `lda` values
/// apart, each holding `(runs − 1) · stride + steps` values; `b` holds `runs · steps` weights;
/// `c` has room for `rows` sums.
#[inline(always)]
pub(crate) unsafe fn f32_rows(
    rows: usize,
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    let len = depth.steps;
    // SAFETY: the contract's `runs · steps` weights.
    let weights = unsafe { core::slice::from_raw_parts(b, depth.runs * len) };
    for r in 0..rows {
        let mut acc = [0f32; F32_LANES];
        for (run, w) in weights.chunks_exact(len.max(1)).enumerate() {
            // SAFETY: row `r` holds `run · stride + steps` values from its start (the contract).
            let x =
                unsafe { core::slice::from_raw_parts(a.add(r * lda + run * depth.stride), len) };
            let (x, w) = lanes_into(&mut acc, (x, w), |x, w| x * w, |s, p| s + p);
            for (i, (x, w)) in x.iter().zip(w).enumerate() {
                acc[i] += x * w;
            }
        }
        // SAFETY: `c` has room for `rows` sums.
        unsafe { *c.add(r) = acc.iter().sum() };
    }
}

/// `acc[i % L] = add(acc[i % L], product(x[i], w[i]))` over the whole blocks of `L` of `x`
/// and `w` (as long as each other); returns what is left of each.
#[inline(always)]
fn lanes_into<'a, A: Copy, B: Copy, S: Copy, const L: usize>(
    acc: &mut [S; L],
    (x, w): (&'a [A], &'a [B]),
    product: impl Fn(A, B) -> S,
    add: impl Fn(S, S) -> S,
) -> (&'a [A], &'a [B]) {
    let (mut xs, mut ws) = (x.chunks_exact(L), w.chunks_exact(L));
    for (x, w) in (&mut xs).zip(&mut ws) {
        for i in 0..L {
            acc[i] = add(acc[i], product(x[i], w[i]));
        }
    }
    (xs.remainder(), ws.remainder())
}

/// A family's one-column tiles (`I8_DOT`, `F32_DOT`) compiled with `$features`, finished by
/// the family's `EPILOGUE`; the int8 rows [`i8_rows`] unless the family names its own (with
/// [`i8_rows`]' contract).
macro_rules! dot_micros_for {
    ($features:literal) => {
        $crate::arch::dot::dot_micros_for!($features, i8_rows = $crate::arch::dot::i8_rows);
    };
    ($features:literal, i8_rows = $i8_rows:path) => {
        /// One-column int8 tiles for layers of very few outputs ([`crate::arch::dot`]).
        pub(crate) static I8_DOT: $crate::arch::I8Micro = $crate::arch::I8Micro {
            mr: $crate::arch::dot::ROWS,
            nr: 1,
            ku: 1,
            row_align: 1,
            a_form: $crate::arch::AForm::U8,
            tile: i8_dot_tile,
            epilogue: &EPILOGUE,
            bracket: None,
        };

        /// One-column fp32 tiles for layers of very few outputs ([`crate::arch::dot`]).
        pub(crate) static F32_DOT: $crate::arch::F32Micro = $crate::arch::F32Micro {
            mr: $crate::arch::dot::ROWS,
            nr: 1,
            tile: f32_dot_tile,
            stream_tile: f32_dot_tile,
            stream_one_block: false,
            epilogue: &EPILOGUE,
        };

        #[target_feature(enable = $features)]
        unsafe fn i8_dot_tile(
            rows: usize,
            depth: $crate::arch::Depth,
            a: *const u8,
            lda: usize,
            b: *const i8,
            c: *mut i32,
        ) {
            // SAFETY: the caller holds the tile contract, which is `i8_rows`'s for nr = 1.
            unsafe { $i8_rows(rows, depth, a, lda, b, c) }
        }

        #[target_feature(enable = $features)]
        unsafe fn f32_dot_tile(
            rows: usize,
            depth: $crate::arch::Depth,
            a: *const f32,
            lda: usize,
            b: *const f32,
            c: *mut f32,
        ) {
            // SAFETY: the caller holds the tile contract, which is `f32_rows`'s for nr = 1.
            unsafe { $crate::arch::dot::f32_rows(rows, depth, a, lda, b, c) }
        }
    };
}
pub(crate) use dot_micros_for;
