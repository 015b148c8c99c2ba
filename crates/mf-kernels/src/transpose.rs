//! Matrix transposes for the convolution's layout changes (NCHW planes → NHWC pixel rows and
//! back), in square blocks transposed in registers: 16×16 bytes or 4×4 floats, by `log2(B)`
//! rounds of interleaving row `i` with row `i + B/2` (SSE2 `punpck*`/`unpck*ps` on x86-64,
//! NEON `zip1`/`zip2` on aarch64: both baseline, so no dispatch). The edges that do not fill a
//! block are copied one element at a time. Pure data movement: any order gives the same bits.

/// An element with a block transpose: `u8` (16×16) and `f32` (4×4).
pub trait Transposable: Copy + Default {
    /// The block's side.
    const B: usize;
    /// Transposes the `B × B` block whose row `r` is `src[at + r·stride..][..B]`, `from` being
    /// `(at, stride)`, into `dst[to[c]..][..B]` for each column `c < B`.
    fn block(src: &[Self], from: (usize, usize), dst: &mut [Self], to: &[usize; 16]);
}

/// `dst[start(j) + i] = src[i · stride + j]` for `i < rows`, `j < cols`: the `rows × cols`
/// matrix at `src` (rows `stride` apart) transposed, output row `j` written from `start(j)`.
pub(crate) fn transpose<T: Transposable>(
    src: &[T],
    stride: usize,
    [rows, cols]: [usize; 2],
    dst: &mut [T],
    start: impl Fn(usize) -> usize,
) {
    let b = T::B;
    let (full_rows, full_cols) = (rows - rows % b, cols - cols % b);
    for i0 in (0..full_rows).step_by(b) {
        for j0 in (0..full_cols).step_by(b) {
            let to: [usize; 16] =
                core::array::from_fn(|c| if c < b { start(j0 + c) + i0 } else { 0 });
            T::block(src, (i0 * stride + j0, stride), dst, &to);
        }
        for j in full_cols..cols {
            for i in i0..i0 + b {
                dst[start(j) + i] = src[i * stride + j];
            }
        }
    }
    for i in full_rows..rows {
        for j in 0..cols {
            dst[start(j) + i] = src[i * stride + j];
        }
    }
}

impl Transposable for u8 {
    const B: usize = 16;

    #[inline(always)]
    fn block(src: &[u8], (at, stride): (usize, usize), dst: &mut [u8], to: &[usize; 16]) {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::*;
            let row = |r: usize| {
                let r: &[u8; 16] = src[at + r * stride..][..16]
                    .try_into()
                    .expect("a 16-byte row");
                // SAFETY: SSE2 is part of x86-64's baseline; the load reads the 16 bytes of `r`.
                unsafe { _mm_loadu_si128(r.as_ptr().cast()) }
            };
            let mut x: [__m128i; 16] = core::array::from_fn(row);
            for _ in 0..4 {
                // SAFETY: SSE2 is part of the target's baseline; register operations only.
                x = core::array::from_fn(|k| unsafe {
                    match k % 2 {
                        0 => _mm_unpacklo_epi8(x[k / 2], x[k / 2 + 8]),
                        _ => _mm_unpackhi_epi8(x[k / 2], x[k / 2 + 8]),
                    }
                });
            }
            for (&o, v) in to.iter().zip(x) {
                let o: &mut [u8; 16] = (&mut dst[o..][..16]).try_into().expect("a 16-byte row");
                // SAFETY: SSE2 is baseline; the store writes the 16 bytes of `o`.
                unsafe { _mm_storeu_si128(o.as_mut_ptr().cast(), v) };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            use core::arch::aarch64::*;
            let row = |r: usize| {
                let r: &[u8; 16] = src[at + r * stride..][..16]
                    .try_into()
                    .expect("a 16-byte row");
                // SAFETY: NEON is part of aarch64's baseline; the load reads the 16 bytes of `r`.
                unsafe { vld1q_u8(r.as_ptr()) }
            };
            let mut x: [uint8x16_t; 16] = core::array::from_fn(row);
            for _ in 0..4 {
                // SAFETY: NEON is part of the target's baseline; register operations only.
                x = core::array::from_fn(|k| unsafe {
                    match k % 2 {
                        0 => vzip1q_u8(x[k / 2], x[k / 2 + 8]),
                        _ => vzip2q_u8(x[k / 2], x[k / 2 + 8]),
                    }
                });
            }
            for (&o, v) in to.iter().zip(x) {
                let o: &mut [u8; 16] = (&mut dst[o..][..16]).try_into().expect("a 16-byte row");
                // SAFETY: NEON is baseline; the store writes the 16 bytes of `o`.
                unsafe { vst1q_u8(o.as_mut_ptr(), v) };
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        portable_block(src, (at, stride), dst, &to[..Self::B]);
    }
}

impl Transposable for f32 {
    const B: usize = 4;

    #[inline(always)]
    fn block(src: &[f32], (at, stride): (usize, usize), dst: &mut [f32], to: &[usize; 16]) {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::*;
            let row = |r: usize| {
                let r: &[f32; 4] = src[at + r * stride..][..4]
                    .try_into()
                    .expect("a 4-float row");
                // SAFETY: SSE is part of x86-64's baseline; the load reads the 4 floats of `r`.
                unsafe { _mm_loadu_ps(r.as_ptr()) }
            };
            let mut x: [__m128; 4] = core::array::from_fn(row);
            for _ in 0..2 {
                // SAFETY: SSE is part of the target's baseline; register operations only.
                x = core::array::from_fn(|k| unsafe {
                    match k % 2 {
                        0 => _mm_unpacklo_ps(x[k / 2], x[k / 2 + 2]),
                        _ => _mm_unpackhi_ps(x[k / 2], x[k / 2 + 2]),
                    }
                });
            }
            for (&o, v) in to.iter().zip(x) {
                let o: &mut [f32; 4] = (&mut dst[o..][..4]).try_into().expect("a 4-float row");
                // SAFETY: SSE is baseline; the store writes the 4 floats of `o`.
                unsafe { _mm_storeu_ps(o.as_mut_ptr(), v) };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            use core::arch::aarch64::*;
            let row = |r: usize| {
                let r: &[f32; 4] = src[at + r * stride..][..4]
                    .try_into()
                    .expect("a 4-float row");
                // SAFETY: NEON is part of aarch64's baseline; the load reads the 4 floats of `r`.
                unsafe { vld1q_f32(r.as_ptr()) }
            };
            let mut x: [float32x4_t; 4] = core::array::from_fn(row);
            for _ in 0..2 {
                // SAFETY: NEON is part of the target's baseline; register operations only.
                x = core::array::from_fn(|k| unsafe {
                    match k % 2 {
                        0 => vzip1q_f32(x[k / 2], x[k / 2 + 2]),
                        _ => vzip2q_f32(x[k / 2], x[k / 2 + 2]),
                    }
                });
            }
            for (&o, v) in to.iter().zip(x) {
                let o: &mut [f32; 4] = (&mut dst[o..][..4]).try_into().expect("a 4-float row");
                // SAFETY: NEON is baseline; the store writes the 4 floats of `o`.
                unsafe { vst1q_f32(o.as_mut_ptr(), v) };
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        portable_block(src, (at, stride), dst, &to[..Self::B]);
    }
}

/// The block transpose one element at a time (targets without baseline SIMD).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn portable_block<T: Copy>(src: &[T], (at, stride): (usize, usize), dst: &mut [T], to: &[usize]) {
    for (c, &o) in to.iter().enumerate() {
        for r in 0..to.len() {
            dst[o + r] = src[at + r * stride + c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// The transpose one element at a time.
    fn naive<T: Copy>(src: &[T], stride: usize, [rows, cols]: [usize; 2], dst: &mut [T]) {
        for i in 0..rows {
            for j in 0..cols {
                dst[j * rows + i] = src[i * stride + j];
            }
        }
    }

    fn check<T: Transposable + PartialEq + core::fmt::Debug>(make: impl Fn(usize) -> T) {
        // Block multiples, edges of every width, a row stride wider than the matrix, and
        // output rows spread apart (gaps stay untouched).
        for rows in [1, 3, 4, 15, 16, 17, 33, 48] {
            for cols in [1, 5, 16, 28, 31, 64, 196] {
                let stride = cols + 3;
                let src: Vec<T> = (0..rows * stride).map(&make).collect();
                let mut want = alloc::vec![T::default(); rows * cols];
                naive(&src, stride, [rows, cols], &mut want);
                let gap = 2;
                let mut got = alloc::vec![make(7); cols * (rows + gap)];
                transpose(&src, stride, [rows, cols], &mut got, |j| j * (rows + gap));
                for j in 0..cols {
                    let row = &got[j * (rows + gap)..(j + 1) * (rows + gap)];
                    assert_eq!(
                        &row[..rows],
                        &want[j * rows..(j + 1) * rows],
                        "{rows}x{cols}"
                    );
                    assert!(
                        row[rows..].iter().all(|&v| v == make(7)),
                        "gap {rows}x{cols}"
                    );
                }
            }
        }
    }

    #[test]
    fn byte_and_float_transposes_equal_the_naive_one() {
        check(|i| (i * 37 % 251) as u8);
        check(|i| i as f32 * 0.5 - 3.0);
    }
}
