//! Packing: weights once at load time; activations, when needed, once per call.
//!
//! Weights `[N, K]` become panels of `nr` columns; inside a panel the depth advances in steps
//! of the kernel's depth unit `ku`, each step holding `ku` consecutive depths of every column:
//! `panel[p][step][col][u] = W[p·nr + col][step·ku + u]`, zero beyond N and K. The layout is the
//! one every kernel reads: VNNI and `sdot` load 4 depths per column, `smmla` 8 per column of a
//! pair, NEON 16, AVX2 2, the scalar kernel 1. Activations stay row-major: a kernel reads `ku`
//! consecutive depths of a row per step, so only their element form may need converting.
use alloc::vec;
use alloc::vec::Vec;

use crate::activation::Activation;
use crate::arch::{AForm, F32Micro, I8Micro, f32_gemm_micro, i8_micro};
use crate::error::{KernelError, check_len, check_scale};
use crate::isa::Isa;
use crate::quant::{QuantParams, quantize_weights_symmetric};
use crate::reference::QuantizedLayer;

/// A quantized dense layer packed for one kernel family, with its zero-point correction,
/// combined scales, bias and activation: everything the int8 epilogue needs.
pub struct PackedI8 {
    pub(crate) isa: Isa,
    pub(crate) micro: &'static I8Micro,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) steps: usize,
    pub(crate) panels: LinePanels,
    pub(crate) corr: Vec<i32>,
    pub(crate) scale: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) input: QuantParams,
    pub(crate) activation: Activation,
}

impl PackedI8 {
    /// Packs a quantized layer for `isa` (which must be available).
    pub fn new(isa: Isa, layer: &QuantizedLayer<'_>) -> Result<Self, KernelError> {
        let isa = isa.require()?;
        layer.check()?;
        let (n, k) = (layer.n, layer.k);
        let micro = crate::arch::for_weights(i8_micro(isa, n, layer.activation), layer.weights);
        let steps = k.div_ceil(micro.ku);
        let offset = micro.a_form.offset() - layer.input.zero_point as i32;
        let corr = (0..n)
            .map(|col| {
                let sum: i32 = layer.weights[col * k..(col + 1) * k]
                    .iter()
                    .map(|&w| w as i32)
                    .sum();
                offset * sum
            })
            .collect();
        Ok(PackedI8 {
            isa,
            micro,
            n,
            k,
            steps,
            panels: LinePanels::new(&pack_panels(layer.weights, n, k, micro.nr, micro.ku)),
            corr,
            scale: (0..n).map(|col| layer.combined_scale(col)).collect(),
            bias: layer.bias.to_vec(),
            input: layer.input,
            activation: layer.activation,
        })
    }

    /// Quantizes f32 weights `[N, K]` symmetrically per output channel, then packs them.
    pub fn from_f32(
        isa: Isa,
        weights: &[f32],
        bias: &[f32],
        n: usize,
        k: usize,
        input: QuantParams,
        activation: Activation,
    ) -> Result<Self, KernelError> {
        let mut codes = vec![0i8; n * k];
        let mut scales = vec![0f32; n];
        quantize_weights_symmetric(weights, n, k, &mut codes, &mut scales)?;
        let layer = QuantizedLayer {
            weights: &codes,
            weight_scales: &scales,
            bias,
            input,
            activation,
            n,
            k,
        };
        PackedI8::new(isa, &layer)
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }
    /// The kernel family it was packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Quantization of the layer's input.
    pub fn input(&self) -> QuantParams {
        self.input
    }
    /// Bytes of packed weights (padding included).
    pub fn weight_bytes(&self) -> usize {
        self.panels.len()
    }
}

/// An fp32 dense layer packed for one kernel family.
pub struct PackedF32 {
    pub(crate) isa: Isa,
    pub(crate) micro: &'static F32Micro,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) panels: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) activation: Activation,
}

impl PackedF32 {
    /// Packs f32 weights `[N, K]` and bias `[N]` for `isa` (which must be available).
    pub fn new(
        isa: Isa,
        weights: &[f32],
        bias: &[f32],
        n: usize,
        k: usize,
        activation: Activation,
    ) -> Result<Self, KernelError> {
        let isa = isa.require()?;
        check_len("weights", n * k, weights.len())?;
        check_len("bias", n, bias.len())?;
        let micro = f32_gemm_micro(isa, n);
        Ok(PackedF32 {
            isa,
            micro,
            n,
            k,
            panels: pack_panels(weights, n, k, micro.nr, 1),
            bias: bias.to_vec(),
            activation,
        })
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }
    /// The kernel family it was packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Bytes of packed weights (padding included).
    pub fn weight_bytes(&self) -> usize {
        self.panels.len() * 4
    }
}

/// Packed int8 panels that start on a cache line (64 bytes), so that each 64-byte step row of a
/// 16- or 32-column panel lies in one line: AMX loads a weight tile's 16 rows at once, and a
/// tile whose rows cross lines takes ~5× as long to load (3 → 15 ns on Sapphire Rapids).
pub(crate) struct LinePanels {
    storage: Vec<i8>,
    start: usize,
    len: usize,
}

impl LinePanels {
    /// A copy of `panels` starting on a cache line.
    fn new(panels: &[i8]) -> Self {
        let mut storage = vec![0i8; panels.len() + 63];
        // Bytes can always be aligned; the bound keeps the copy in the buffer regardless.
        let start = storage.as_ptr().align_offset(64).min(63);
        storage[start..start + panels.len()].copy_from_slice(panels);
        LinePanels {
            storage,
            start,
            len: panels.len(),
        }
    }
}

impl core::ops::Deref for LinePanels {
    type Target = [i8];
    fn deref(&self) -> &[i8] {
        &self.storage[self.start..self.start + self.len]
    }
}

/// `[N, K]` row-major → panels of `nr` columns in steps of `ku` depths, zero padded.
fn pack_panels<T: Copy + Default>(w: &[T], n: usize, k: usize, nr: usize, ku: usize) -> Vec<T> {
    let steps = k.div_ceil(ku);
    let panels = n.div_ceil(nr);
    let mut out = vec![T::default(); panels * steps * nr * ku];
    for (p, panel) in out.chunks_exact_mut(steps * nr * ku).enumerate() {
        for (s, step) in panel.chunks_exact_mut(nr * ku).enumerate() {
            for (j, dst) in step.chunks_exact_mut(ku).enumerate() {
                let col = p * nr + j;
                if col >= n {
                    break;
                }
                let depth = s * ku;
                let len = ku.min(k - depth);
                dst[..len].copy_from_slice(&w[col * k + depth..col * k + depth + len]);
            }
        }
    }
    out
}

/// The activations fed to an int8 layer.
pub enum Input<'a> {
    /// f32 values `[M, K]`, quantized with the layer's input parameters on the way in.
    F32(&'a [f32]),
    /// uint8 codes `[M, K]` already quantized with the layer's input parameters.
    U8(&'a [u8]),
}

/// Activation rows as a kernel reads them: row-major in the kernel's [`AForm`], each row padded
/// to whole depth steps, and the row count to the kernel's row alignment. Uint8 codes already in
/// that shape are used in place; anything else is converted once into `scratch`, rows shared
/// across the thread team when there are many values.
/// Returns the rows and their stride in bytes.
pub(crate) fn prepare_a<'a>(
    micro: &I8Micro,
    input: Input<'a>,
    m: usize,
    k: usize,
    params: QuantParams,
    scratch: &'a mut Vec<u8>,
) -> Result<(&'a [u8], usize), KernelError> {
    let form = micro.a_form;
    match input {
        Input::U8(codes) => {
            check_len("input", m * k, codes.len())?;
            if form == AForm::U8 && k.is_multiple_of(micro.ku) && micro.row_align == 1 {
                return Ok((codes, k));
            }
        }
        Input::F32(x) => {
            check_len("input", m * k, x.len())?;
            check_scale("input", params.scale)?;
        }
    }
    let stride = k.next_multiple_of(micro.ku) * form.size();
    let len = m.next_multiple_of(micro.row_align) * stride;
    // Kept at its largest: every byte below is written (no clearing pass over the whole).
    if scratch.len() < len {
        scratch.resize(len, 0);
    }
    let scratch = &mut scratch[..len];
    let quantize = micro.epilogue.quantize;
    let row = |r: usize, dst: &mut [u8]| {
        // Depth padding and the rows that only align the row count hold zeros.
        if r >= m {
            dst.fill(0);
            return;
        }
        dst[k * form.size()..].fill(0);
        match input {
            Input::U8(codes) => convert_codes(form, &codes[r * k..(r + 1) * k], dst),
            Input::F32(x) => {
                let src = &x[r * k..(r + 1) * k];
                if form == AForm::U8 {
                    // SAFETY: the epilogue belongs to a family checked available at pack time.
                    unsafe { quantize(src, params, &mut dst[..k]) };
                    return;
                }
                // Other forms: codes a piece at a time through the stack, then converted.
                let mut codes = [0u8; CODE_PIECE];
                let pieces = src.chunks(CODE_PIECE);
                for (piece, out) in pieces.zip(dst.chunks_mut(CODE_PIECE * form.size())) {
                    let codes = &mut codes[..piece.len()];
                    // SAFETY: the epilogue belongs to a family checked available at pack time.
                    unsafe { quantize(piece, params, codes) };
                    convert_codes(form, codes, out);
                }
            }
        }
    };
    let parallel = m * k >= PARALLEL_VALUES;
    for_row_runs(scratch, stride, parallel, &|first, run| {
        for (j, dst) in run.chunks_exact_mut(stride).enumerate() {
            row(first + j, dst);
        }
    });
    Ok((scratch, stride))
}

/// Values quantized per piece on the way to a form other than uint8 (a stack buffer).
const CODE_PIECE: usize = 256;

/// Activation values from which their conversion is shared across the thread team (below it,
/// waking the team costs more than the pass: a DiT's batch of 16 has 32K per layer).
const PARALLEL_VALUES: usize = 16 * 1024;

/// Calls `f(first_row, run)` over runs of whole `stride`-byte rows of `rows`, shared across
/// the thread team when `parallel` ([`crate::team::for_each_run`]; one run without `std`).
pub(crate) fn for_row_runs(
    rows: &mut [u8],
    stride: usize,
    parallel: bool,
    f: &(dyn Fn(usize, &mut [u8]) + Sync),
) {
    #[cfg(feature = "std")]
    crate::team::for_each_run(rows, stride, parallel, f);
    #[cfg(not(feature = "std"))]
    {
        let _ = (stride, parallel);
        f(0, rows);
    }
}

/// Writes uint8 codes into the start of `dst` in the kernel's element form.
pub(crate) fn convert_codes(form: AForm, codes: &[u8], dst: &mut [u8]) {
    match form {
        AForm::U8 => dst[..codes.len()].copy_from_slice(codes),
        AForm::S8 => dst.iter_mut().zip(codes).for_each(|(d, &q)| *d = q ^ 0x80),
        AForm::I16 => dst
            .chunks_exact_mut(2)
            .zip(codes)
            .for_each(|(d, &q)| d.copy_from_slice(&(q as i16).to_le_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_pad_columns_and_depth_with_zeros() {
        // 3 columns, depth 3, panels of 2 columns, depth unit 2.
        let w: Vec<i8> = (1..=9).collect();
        let p = pack_panels(&w, 3, 3, 2, 2);
        #[rustfmt::skip]
        let want: Vec<i8> = vec![
            1, 2, 4, 5,   3, 0, 6, 0,   // panel 0: columns 0, 1
            7, 8, 0, 0,   9, 0, 0, 0,   // panel 1: column 2 and padding
        ];
        assert_eq!(p, want);
    }
}
