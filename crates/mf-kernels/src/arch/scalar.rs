//! Portable tile kernels: the scalar twins of the SIMD kernels and the Cortex-M path.
use super::{AForm, Depth, F32Micro, I8Micro};
use crate::epilogue::{
    ColumnsI8, Epilogue, TileAt, finish_tile_f32, finish_tile_i8, quantize_slice,
};
use crate::quant::Divided;
use crate::{Activation, QuantParams};

/// Scalar int8 tiles: 4×4, depth unit 1, u8 activations.
pub(crate) static I8: I8Micro = I8Micro {
    mr: 4,
    nr: 4,
    ku: 1,
    row_align: 1,
    a_form: AForm::U8,
    tile: i8_tile,
    epilogue: &EPILOGUE,
    bracket: None,
};

/// Scalar fp32 tiles: 4×4.
pub(crate) static F32: F32Micro = F32Micro {
    mr: 4,
    nr: 4,
    tile: f32_tile,
    stream_tile: f32_tile,
    stream_one_block: false,
    epilogue: &EPILOGUE,
};

/// The epilogues without target features.
static EPILOGUE: Epilogue = Epilogue {
    quantize,
    i8: finish_i8,
    f32: finish_f32,
    moments: crate::norm::moments,
    layer_norm_rows: crate::norm::layer_norm_rows_into,
    affine: crate::norm::affine,
    affine_codes: crate::norm::affine_codes::<Divided>,
    shifted_sums: crate::norm::shifted_sums,
    pixel_affine: crate::norm::pixel_affine,
    pixel_affine_codes: crate::norm::pixel_affine_codes::<Divided>,
    tanh: crate::pointwise::tanh_into,
    sin_cos: crate::trig::sin_cos_into,
    softmax: crate::pointwise::softmax_into,
    row_op: crate::pointwise::row_op_into,
    matmul: crate::pointwise::matmul_into::<1>,
};

unsafe fn quantize(x: &[f32], params: QuantParams, codes: &mut [u8]) {
    quantize_slice::<Divided>(x, params, codes)
}

unsafe fn finish_i8(acc: &[i32], at: &TileAt<'_>, cols: &ColumnsI8<'_>, act: Activation) {
    // SAFETY: the caller holds this function's contract, which is `finish_tile_*`'s (the tile's
    // outputs are in bounds and owned by this thread).
    unsafe { finish_tile_i8::<Divided, false>(acc, at, cols, act) }
}

unsafe fn finish_f32(acc: &[f32], at: &TileAt<'_>, bias: &[f32], act: Activation) {
    // SAFETY: the caller holds this function's contract, which is `finish_tile_*`'s (the tile's
    // outputs are in bounds and owned by this thread).
    unsafe { finish_tile_f32::<Divided>(acc, at, bias, act) }
}

unsafe fn i8_tile(rows: usize, depth: Depth, a: *const u8, lda: usize, b: *const i8, c: *mut i32) {
    const NR: usize = 4;
    let (kb, stride) = (depth.steps, depth.stride);
    // SAFETY: the tile contract gives `rows` rows `lda` apart, each with its last run's `kb`
    // elements from `(runs − 1)·stride`: (rows − 1)·lda + (runs − 1)·stride + kb elements.
    let a = unsafe {
        core::slice::from_raw_parts(a, (rows - 1) * lda + (depth.runs - 1) * stride + kb)
    };
    // SAFETY: the tile contract gives runs·kb depth steps of NR packed weights (depth unit 1).
    let b = unsafe { core::slice::from_raw_parts(b, depth.total() * NR) };
    // SAFETY: the tile contract gives room for rows·NR sums in `c`, written by this call alone.
    let c = unsafe { core::slice::from_raw_parts_mut(c, rows * NR) };
    c.fill(0);
    for i in 0..rows {
        for run in 0..depth.runs {
            for p in 0..kb {
                let x = a[i * lda + run * stride + p] as i32;
                let w = &b[(run * kb + p) * NR..][..NR];
                for j in 0..NR {
                    c[i * NR + j] = c[i * NR + j].wrapping_add(x * w[j] as i32);
                }
            }
        }
    }
}

unsafe fn f32_tile(
    rows: usize,
    depth: Depth,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
) {
    const NR: usize = 4;
    let (k, stride) = (depth.steps, depth.stride);
    // SAFETY: as in `i8_tile`: (rows − 1)·lda + (runs − 1)·stride + k elements from `a`.
    let a =
        unsafe { core::slice::from_raw_parts(a, (rows - 1) * lda + (depth.runs - 1) * stride + k) };
    // SAFETY: the tile contract gives runs·k depth steps of NR packed weights (depth unit 1).
    let b = unsafe { core::slice::from_raw_parts(b, depth.total() * NR) };
    // SAFETY: the tile contract gives room for rows·NR sums in `c`, written by this call alone.
    let c = unsafe { core::slice::from_raw_parts_mut(c, rows * NR) };
    c.fill(0.0);
    for i in 0..rows {
        for run in 0..depth.runs {
            for p in 0..k {
                let x = a[i * lda + run * stride + p];
                let w = &b[(run * k + p) * NR..][..NR];
                for j in 0..NR {
                    c[i * NR + j] += x * w[j];
                }
            }
        }
    }
}
