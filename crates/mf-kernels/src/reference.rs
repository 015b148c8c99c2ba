//! The scalar truth: naive triple loops over unpacked, row-major data. They need no allocator,
//! so the firmware runs them directly, and every packed kernel is tested against them.
use crate::activation::Activation;
use crate::conv::{ConvGeometry, ImageSize, check_images};
use crate::error::{KernelError, check_len, check_scale};
use crate::quant::QuantParams;

/// Where a layer writes its `[M, N]` result.
pub enum Output<'a> {
    /// f32 values, row-major.
    F32(&'a mut [f32]),
    /// uint8 codes requantized with the next layer's input parameters, row-major.
    U8(&'a mut [u8], QuantParams),
    /// f32 values rounded to the uint8 grid of these parameters and read back,
    /// `dequantize(quantize(y))`: what a QuantizeLinear → DequantizeLinear pair gives.
    Requantized(&'a mut [f32], QuantParams),
}

impl Output<'_> {
    /// Number of elements the buffer holds.
    pub fn len(&self) -> usize {
        match self {
            Output::F32(d) => d.len(),
            Output::U8(d, _) => d.len(),
            Output::Requantized(d, _) => d.len(),
        }
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the output buffer's length and, for requantized output, its scale.
    pub(crate) fn check(&self, m: usize, n: usize) -> Result<(), KernelError> {
        if let Output::U8(_, p) | Output::Requantized(_, p) = self {
            check_scale("output", p.scale)?;
        }
        check_len("output", m * n, self.len())
    }

    /// Stores one finished value at flat index `idx`.
    #[inline]
    pub(crate) fn store(&mut self, idx: usize, y: f32) {
        match self {
            Output::F32(d) => d[idx] = y,
            Output::U8(d, p) => d[idx] = p.quantize(y),
            Output::Requantized(d, p) => d[idx] = p.dequantize(p.quantize(y)),
        }
    }
}

/// The int8 epilogue of one value: `act(f32(acc) · scale + bias)`, multiply and add unfused.
#[inline(always)]
pub fn finish_i8(acc: i32, scale: f32, bias: f32, act: Activation) -> f32 {
    let y = acc as f32 * scale;
    act.apply(y + bias)
}

/// The fp32 epilogue of one value: `act(acc + bias)`.
#[inline(always)]
pub fn finish_f32(acc: f32, bias: f32, act: Activation) -> f32 {
    act.apply(acc + bias)
}

/// A quantized dense layer's parameters in their natural, unpacked layout.
pub struct QuantizedLayer<'a> {
    /// int8 weight codes, `[N, K]` row-major.
    pub weights: &'a [i8],
    /// Per-output-channel weight scales, length `N`.
    pub weight_scales: &'a [f32],
    /// f32 bias, length `N`.
    pub bias: &'a [f32],
    /// Quantization of the layer's input.
    pub input: QuantParams,
    /// Activation applied in the epilogue.
    pub activation: Activation,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
}

impl QuantizedLayer<'_> {
    /// Checks every buffer against `n` and `k`, and every scale.
    pub fn check(&self) -> Result<(), KernelError> {
        check_len("weights", self.n * self.k, self.weights.len())?;
        check_len("weight scales", self.n, self.weight_scales.len())?;
        check_len("bias", self.n, self.bias.len())?;
        check_scale("input", self.input.scale)?;
        self.weight_scales
            .iter()
            .try_for_each(|&s| check_scale("weight", s))
    }

    /// The scale the epilogue multiplies by for column `n`: `s_a · s_w[n]`, rounded once.
    #[inline]
    pub fn combined_scale(&self, n: usize) -> f32 {
        self.input.scale * self.weight_scales[n]
    }
}

/// Reference int8 layer: `out = act(Σ_k (a − zp)·w · s_a·s_w + b)` for `m` rows of uint8 codes.
pub fn gemm_i8(
    layer: &QuantizedLayer<'_>,
    a: &[u8],
    m: usize,
    mut out: Output<'_>,
) -> Result<(), KernelError> {
    layer.check()?;
    let (n, k) = (layer.n, layer.k);
    check_len("input", m * k, a.len())?;
    out.check(m, n)?;
    let zp = layer.input.zero_point as i32;
    for row in 0..m {
        let a_row = &a[row * k..(row + 1) * k];
        for col in 0..n {
            let w_row = &layer.weights[col * k..(col + 1) * k];
            let acc = a_row.iter().zip(w_row).fold(0i32, |s, (&q, &w)| {
                s.wrapping_add((q as i32 - zp) * w as i32)
            });
            let y = finish_i8(
                acc,
                layer.combined_scale(col),
                layer.bias[col],
                layer.activation,
            );
            out.store(row * n + col, y);
        }
    }
    Ok(())
}

/// Reference fp32 layer: `out = act(a · Wᵀ + b)`, summing over `k` in order.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    a: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Activation,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("input", m * k, a.len())?;
    check_len("weights", n * k, w.len())?;
    check_len("bias", n, bias.len())?;
    check_len("output", m * n, out.len())?;
    for row in 0..m {
        for col in 0..n {
            let acc = a[row * k..(row + 1) * k]
                .iter()
                .zip(&w[col * k..(col + 1) * k])
                .fold(0.0f32, |s, (&x, &y)| s + x * y);
            out[row * n + col] = finish_f32(acc, bias[col], act);
        }
    }
    Ok(())
}

/// Reference int8 convolution, direct: `out[b, o, y, x] = act(Σ (a − zp)·w · s_a·s_w[o] + b[o])`
/// over the taps inside the input (padding is 0, i.e. the zero point), for `codes`
/// `[N, C, H, W]` and weights `[M, C·KH·KW]` in `layer`; `out` is `[N, M, OH, OW]`.
pub fn conv_i8(
    layer: &QuantizedLayer<'_>,
    g: &ConvGeometry,
    codes: &[u8],
    size: ImageSize,
    mut out: Output<'_>,
) -> Result<(), KernelError> {
    layer.check()?;
    check_len("convolution depth", g.depth(), layer.k)?;
    let [oh, ow] = check_images(g, size, codes.len())?;
    let [n, h, w] = size;
    let m = layer.n;
    out.check(n * oh * ow, m)?;
    let zp = layer.input.zero_point as i32;
    let [kh, kw] = g.kernel;
    for b in 0..n {
        for o in 0..m {
            let weights = &layer.weights[o * layer.k..(o + 1) * layer.k];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0i32;
                    for c in 0..g.channels {
                        let plane = &codes[(b * g.channels + c) * h * w..][..h * w];
                        for ky in 0..kh {
                            for kx in 0..kw {
                                if let Some(i) = g.tap([h, w], [oy, ox], [ky, kx]) {
                                    let wv = weights[(c * kh + ky) * kw + kx] as i32;
                                    acc = acc.wrapping_add((plane[i] as i32 - zp) * wv);
                                }
                            }
                        }
                    }
                    let y = finish_i8(
                        acc,
                        layer.combined_scale(o),
                        layer.bias[o],
                        layer.activation,
                    );
                    out.store(((b * m + o) * oh + oy) * ow + ox, y);
                }
            }
        }
    }
    Ok(())
}

/// Reference fp32 convolution, direct, summing over channel, ky and kx in order: `x`
/// `[N, C, H, W]`, weights `[M, C·KH·KW]`, bias `[M]`, `out` `[N, M, OH, OW]`.
#[allow(clippy::too_many_arguments)]
pub fn conv_f32(
    weights: &[f32],
    bias: &[f32],
    act: Activation,
    m: usize,
    g: &ConvGeometry,
    x: &[f32],
    size: ImageSize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let k = g.depth();
    check_len("weights", m * k, weights.len())?;
    check_len("bias", m, bias.len())?;
    let [oh, ow] = check_images(g, size, x.len())?;
    let [n, h, w] = size;
    check_len("output", n * m * oh * ow, out.len())?;
    let [kh, kw] = g.kernel;
    for b in 0..n {
        for o in 0..m {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0f32;
                    for c in 0..g.channels {
                        let plane = &x[(b * g.channels + c) * h * w..][..h * w];
                        for ky in 0..kh {
                            for kx in 0..kw {
                                if let Some(i) = g.tap([h, w], [oy, ox], [ky, kx]) {
                                    acc += plane[i] * weights[o * k + (c * kh + ky) * kw + kx];
                                }
                            }
                        }
                    }
                    out[((b * m + o) * oh + oy) * ow + ox] = finish_f32(acc, bias[o], act);
                }
            }
        }
    }
    Ok(())
}
