//! The compact model format the firmware includes at build time: an all-int8 MLP in one flat,
//! little-endian byte string that a `no_std`, allocation-free reader checks and borrows from.
//!
//! ```text
//! header (32 bytes)
//!   0  magic "MFC1"            4  version u16 (= 1)      6  layers u16
//!   8  channels u16           10  height u16            12  width u16
//!  14  classes u16 (real)     16  class_dim u16         18  half u16 (time frequencies)
//!  20  prediction u8 (0 = u, 1 = x)   21  sampler u8 (0 = MeanFlow, 1 = Euler)   22  reserved u16
//!  24  t_floor f32            28  payload bytes u32 (everything after the header, checksum excluded)
//! payload
//!   frequencies  [half] f32
//!   class table  [(classes + 1) · class_dim] f32
//!   per layer: n u16, k u16, activation u8 (0 none, 1 SiLU), zero point u8, reserved u16,
//!              input scale f32, weight scales [n] f32, bias [n] f32, weights [n · k] i8, padding
//!              to 4 bytes
//! checksum: FNV-1a 32 of header and payload, u32
//! ```
//! The network is the exported MLP exactly: features `[z | sin, cos(t·ω) | sin, cos((t − r)·ω) |
//! class]`, dense layers computed by `mf-kernels`' int8 reference, u = raw output or
//! (z − x̂) / max(t, t_floor).

use mf_kernels::{Activation, QuantParams};

/// The magic bytes.
pub const MAGIC: &[u8; 4] = b"MFC1";
/// The version this code reads and writes.
pub const VERSION: u16 = 1;
/// Header size in bytes.
pub const HEADER: usize = 32;

/// Why a compact model was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactError {
    /// Not a compact model (wrong magic).
    Magic,
    /// A version this build does not read.
    Version(u16),
    /// Shorter than its header says.
    Truncated,
    /// The checksum does not match (corrupted).
    Checksum,
    /// Fields that contradict each other.
    Inconsistent(&'static str),
}

impl core::fmt::Display for CompactError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CompactError::Magic => write!(f, "not a compact MeanFlow model (magic MFC1 expected)"),
            CompactError::Version(v) => {
                write!(f, "compact model version {v}; this build reads {VERSION}")
            }
            CompactError::Truncated => write!(f, "compact model truncated"),
            CompactError::Checksum => write!(f, "compact model checksum mismatch (corrupted)"),
            CompactError::Inconsistent(what) => write!(f, "compact model inconsistent: {what}"),
        }
    }
}

/// FNV-1a, 32 bits.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// One int8 dense layer, borrowed from the model bytes.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Epilogue activation.
    pub activation: Activation,
    /// Quantization of the input.
    pub input: QuantParams,
    /// Per-output-channel weight scales (little-endian f32 bytes).
    pub weight_scales: F32s<'a>,
    /// Bias (little-endian f32 bytes).
    pub bias: F32s<'a>,
    /// Weight codes `[n, k]`.
    pub weights: &'a [i8],
}

/// A little-endian f32 array inside the model bytes (which need not be aligned).
#[derive(Debug, Clone, Copy)]
pub struct F32s<'a>(&'a [u8]);

impl F32s<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }
    /// Whether there is no value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Value `i`.
    pub fn get(&self, i: usize) -> f32 {
        f32::from_le_bytes([
            self.0[4 * i],
            self.0[4 * i + 1],
            self.0[4 * i + 2],
            self.0[4 * i + 3],
        ])
    }
    /// Copies the values into `out` (`out.len()` must equal `self.len()`).
    pub fn copy_to(&self, out: &mut [f32]) {
        for (i, v) in out.iter_mut().enumerate() {
            *v = self.get(i);
        }
    }
}

/// A checked compact model.
#[derive(Debug, Clone, Copy)]
pub struct CompactModel<'a> {
    /// `[C, H, W]`.
    pub shape: [usize; 3],
    /// Real classes; the null class is `classes`.
    pub classes: usize,
    /// Class embedding size.
    pub class_dim: usize,
    /// Output is x̂ (true) or u (false).
    pub predicts_x: bool,
    /// Euler sampling (flow matching) instead of MeanFlow.
    pub euler: bool,
    /// Floor on t in the x-prediction's division.
    pub t_floor: f32,
    /// Time embedding frequencies.
    pub frequencies: F32s<'a>,
    /// Class embeddings `[(classes + 1), class_dim]`.
    pub class_table: F32s<'a>,
    layers: &'a [u8],
    count: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CompactError> {
        let end = self.at.checked_add(n).ok_or(CompactError::Truncated)?;
        let s = self
            .bytes
            .get(self.at..end)
            .ok_or(CompactError::Truncated)?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, CompactError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CompactError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CompactError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self) -> Result<f32, CompactError> {
        Ok(f32::from_bits(self.u32()?))
    }
    fn f32s(&mut self, n: usize) -> Result<F32s<'a>, CompactError> {
        Ok(F32s(
            self.take(n.checked_mul(4).ok_or(CompactError::Truncated)?)?,
        ))
    }
}

impl<'a> CompactModel<'a> {
    /// Checks and borrows a compact model.
    pub fn parse(bytes: &'a [u8]) -> Result<CompactModel<'a>, CompactError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(CompactError::Magic);
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(CompactError::Version(version));
        }
        let count = r.u16()? as usize;
        let shape = [r.u16()? as usize, r.u16()? as usize, r.u16()? as usize];
        let classes = r.u16()? as usize;
        let class_dim = r.u16()? as usize;
        let half = r.u16()? as usize;
        let prediction = r.u8()?;
        let sampler = r.u8()?;
        r.u16()?;
        let t_floor = r.f32()?;
        let payload = r.u32()? as usize;
        let body_end = HEADER.checked_add(payload).ok_or(CompactError::Truncated)?;
        let total = body_end.checked_add(4).ok_or(CompactError::Truncated)?;
        if bytes.len() < total {
            return Err(CompactError::Truncated);
        }
        let stored = u32::from_le_bytes([
            bytes[body_end],
            bytes[body_end + 1],
            bytes[body_end + 2],
            bytes[body_end + 3],
        ]);
        if fnv1a(&bytes[..body_end]) != stored {
            return Err(CompactError::Checksum);
        }
        if prediction > 1 || sampler > 1 || count == 0 {
            return Err(CompactError::Inconsistent(
                "prediction, sampler or layer count",
            ));
        }
        // Sizes from the header are checked before any arithmetic trusts them (usize is 32
        // bits on the firmware).
        let features = shape[0]
            .checked_mul(shape[1])
            .and_then(|d| d.checked_mul(shape[2]))
            .and_then(|d| d.checked_add(half.checked_mul(4)?))
            .and_then(|d| d.checked_add(class_dim))
            .ok_or(CompactError::Inconsistent("sample shape overflows"))?;
        let table = (classes + 1)
            .checked_mul(class_dim)
            .ok_or(CompactError::Inconsistent("class table overflows"))?;
        // The tables and layers are read from the payload alone, never from the checksum or
        // what follows it.
        let mut r = Reader {
            bytes: &bytes[..body_end],
            at: r.at,
        };
        let frequencies = r.f32s(half)?;
        let class_table = r.f32s(table)?;
        let layers_start = r.at;
        let model = CompactModel {
            shape,
            classes,
            class_dim,
            predicts_x: prediction == 1,
            euler: sampler == 1,
            t_floor,
            frequencies,
            class_table,
            layers: &bytes[layers_start..body_end],
            count,
        };
        // Walk the layers once: sizes must chain and fill the payload exactly.
        let mut k_expected = features;
        let mut walked = 0;
        let mut last_n = 0;
        for layer in model.layers() {
            let layer = layer?;
            if layer.k != k_expected {
                return Err(CompactError::Inconsistent("layer widths do not chain"));
            }
            k_expected = layer.n;
            last_n = layer.n;
            walked += 1;
        }
        if walked != count || last_n != model.dims() {
            return Err(CompactError::Inconsistent(
                "the last layer must output one sample",
            ));
        }
        Ok(model)
    }

    /// Values per sample.
    pub fn dims(&self) -> usize {
        self.shape[0] * self.shape[1] * self.shape[2]
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.count
    }

    /// The width of the widest layer input or output (for sizing buffers).
    pub fn max_width(&self) -> usize {
        self.layers()
            .filter_map(Result::ok)
            .map(|l| l.n.max(l.k))
            .max()
            .unwrap_or(0)
    }

    /// The layers in order.
    pub fn layers(&self) -> impl Iterator<Item = Result<Layer<'a>, CompactError>> + 'a {
        let mut r = Reader {
            bytes: self.layers,
            at: 0,
        };
        let mut left = self.count;
        core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            Some((|| {
                let n = r.u16()? as usize;
                let k = r.u16()? as usize;
                let activation = match r.u8()? {
                    0 => Activation::None,
                    1 => Activation::Silu,
                    _ => return Err(CompactError::Inconsistent("unknown activation")),
                };
                let zero_point = r.u8()?;
                r.u16()?;
                let scale = r.f32()?;
                let input = QuantParams::new(scale, zero_point)
                    .map_err(|_| CompactError::Inconsistent("input scale"))?;
                let weight_scales = r.f32s(n)?;
                let bias = r.f32s(n)?;
                let weights = r.take(n.checked_mul(k).ok_or(CompactError::Truncated)?)?;
                let pad = (4 - r.at % 4) % 4;
                r.take(pad)?;
                let weights: &[i8] = bytemuck::cast_slice(weights);
                Ok(Layer {
                    n,
                    k,
                    activation,
                    input,
                    weight_scales,
                    bias,
                    weights,
                })
            })())
        })
    }
}

/// Scratch memory for one generation, borrowed from the caller (the firmware uses statics).
pub struct Workspace<'b> {
    /// Activations, at least [`CompactModel::max_width`] values.
    pub a: &'b mut [f32],
    /// Activations, at least [`CompactModel::max_width`] values.
    pub b: &'b mut [f32],
    /// uint8 codes of a layer input, at least [`CompactModel::max_width`] values.
    pub codes: &'b mut [u8],
    /// A layer's weight scales, at least [`CompactModel::max_width`] values.
    pub scales: &'b mut [f32],
    /// A layer's bias, at least [`CompactModel::max_width`] values.
    pub bias: &'b mut [f32],
}

/// Heap scratch memory for a host (the firmware uses statics instead): five buffers of one
/// width, lent out as a [`Workspace`].
#[cfg(feature = "std")]
pub struct Scratch {
    a: std::vec::Vec<f32>,
    b: std::vec::Vec<f32>,
    codes: std::vec::Vec<u8>,
    scales: std::vec::Vec<f32>,
    bias: std::vec::Vec<f32>,
}

#[cfg(feature = "std")]
impl Scratch {
    /// Buffers of `width` values each ([`CompactModel::max_width`] for a model).
    pub fn new(width: usize) -> Scratch {
        Scratch {
            a: std::vec![0.0; width],
            b: std::vec![0.0; width],
            codes: std::vec![0; width],
            scales: std::vec![0.0; width],
            bias: std::vec![0.0; width],
        }
    }

    /// The workspace that borrows the buffers.
    pub fn workspace(&mut self) -> Workspace<'_> {
        Workspace {
            a: &mut self.a,
            b: &mut self.b,
            codes: &mut self.codes,
            scales: &mut self.scales,
            bias: &mut self.bias,
        }
    }
}

impl CompactModel<'_> {
    /// One-step generation of one image of `class` from the noise seeded with `seed`:
    /// x = z₁ − u(z₁, 0, 1), exactly as the exported int8 ONNX graph computes it (same noise,
    /// embeddings, quantization, integer products and epilogue). Writes `dims()` values.
    pub fn generate(
        &self,
        class: usize,
        seed: u64,
        ws: &mut Workspace<'_>,
        out: &mut [f32],
    ) -> Result<(), CompactError> {
        self.generate_with(class, seed, ws, out, |layer, codes, y| {
            mf_kernels::reference::gemm_i8(layer, codes, 1, mf_kernels::reference::Output::F32(y))
                .map_err(|_| CompactError::Inconsistent("layer shapes"))
        })
    }

    /// [`generate`](Self::generate) with each dense layer computed by `dense(layer, codes, y)`
    /// (one row of uint8 input codes into `layer.n` f32 outputs), so a host can run the same
    /// model on the SIMD kernels; every kernel must give the reference's values bit for bit.
    pub fn generate_with<F>(
        &self,
        class: usize,
        seed: u64,
        ws: &mut Workspace<'_>,
        out: &mut [f32],
        mut dense: F,
    ) -> Result<(), CompactError>
    where
        F: FnMut(
            &mf_kernels::reference::QuantizedLayer<'_>,
            &[u8],
            &mut [f32],
        ) -> Result<(), CompactError>,
    {
        let dims = self.dims();
        if out.len() != dims {
            return Err(CompactError::Inconsistent("output buffer size"));
        }
        let width = self.max_width();
        if [
            ws.a.len(),
            ws.b.len(),
            ws.codes.len(),
            ws.scales.len(),
            ws.bias.len(),
        ]
        .iter()
        .any(|&l| l < width)
        {
            return Err(CompactError::Inconsistent("workspace too small"));
        }
        let class = if class > self.classes {
            self.classes
        } else {
            class
        };
        crate::noise::Noise::new(seed).fill(out);
        let (t, r) = if self.euler {
            (1.0f32, 1.0f32)
        } else {
            (1.0f32, 0.0f32)
        };
        // Features: [z | sin(t·ω) | cos(t·ω) | sin(h·ω) | cos(h·ω) | class row].
        let half = self.frequencies.len();
        let h = t - r;
        let features = &mut ws.a[..dims + 4 * half + self.class_dim];
        features[..dims].copy_from_slice(out);
        for i in 0..half {
            let (at, ah) = (t * self.frequencies.get(i), h * self.frequencies.get(i));
            features[dims + i] = mf_kernels::trig::sin(at);
            features[dims + half + i] = mf_kernels::trig::cos(at);
            features[dims + 2 * half + i] = mf_kernels::trig::sin(ah);
            features[dims + 3 * half + i] = mf_kernels::trig::cos(ah);
        }
        let row = class * self.class_dim;
        for j in 0..self.class_dim {
            features[dims + 4 * half + j] = self.class_table.get(row + j);
        }
        let mut width_in = features.len();
        let (mut src, mut dst) = (&mut *ws.a, &mut *ws.b);
        for layer in self.layers() {
            let layer = layer?;
            for (q, &x) in ws.codes[..width_in].iter_mut().zip(&src[..width_in]) {
                *q = layer.input.quantize(x);
            }
            layer.weight_scales.copy_to(&mut ws.scales[..layer.n]);
            layer.bias.copy_to(&mut ws.bias[..layer.n]);
            let q = mf_kernels::reference::QuantizedLayer {
                weights: layer.weights,
                weight_scales: &ws.scales[..layer.n],
                bias: &ws.bias[..layer.n],
                input: layer.input,
                activation: layer.activation,
                n: layer.n,
                k: layer.k,
            };
            dense(&q, &ws.codes[..width_in], &mut dst[..layer.n])?;
            core::mem::swap(&mut src, &mut dst);
            width_in = layer.n;
        }
        // src holds the raw output; u, then the step z − (t − r)·u with t − r = 1.
        let tau = if t > self.t_floor { t } else { self.t_floor };
        let span = 1.0f32;
        for (z, &raw) in out.iter_mut().zip(&src[..dims]) {
            let u = if self.predicts_x {
                (*z - raw) / tau
            } else {
                raw
            };
            *z -= span * u;
        }
        Ok(())
    }
}
