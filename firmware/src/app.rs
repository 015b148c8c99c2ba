//! The generator: a compact model and the buffers one generation needs, without allocation.
use mf_core::compact::{CompactError, CompactModel, Workspace};
use mf_core::schedule::to_pixel;

/// The widest layer a firmware build supports (its buffers are this long).
pub const MAX_WIDTH: usize = 1024;
/// The largest image (values per sample).
pub const MAX_DIMS: usize = 28 * 28;

/// Buffers for one generation (about 24 KB).
pub struct Buffers {
    a: [f32; MAX_WIDTH],
    b: [f32; MAX_WIDTH],
    codes: [u8; MAX_WIDTH],
    scales: [f32; MAX_WIDTH],
    bias: [f32; MAX_WIDTH],
    sample: [f32; MAX_DIMS],
}

impl Buffers {
    /// Zeroed buffers (a `static` initializer).
    pub const fn new() -> Self {
        Buffers {
            a: [0.0; MAX_WIDTH],
            b: [0.0; MAX_WIDTH],
            codes: [0; MAX_WIDTH],
            scales: [0.0; MAX_WIDTH],
            bias: [0.0; MAX_WIDTH],
            sample: [0.0; MAX_DIMS],
        }
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers::new()
    }
}

/// Checks that a model fits this build's buffers.
pub fn check(model: &CompactModel<'_>) -> Result<(), CompactError> {
    if model.max_width() > MAX_WIDTH || model.dims() > MAX_DIMS {
        return Err(CompactError::Inconsistent(
            "model larger than the firmware's buffers",
        ));
    }
    Ok(())
}

/// Generates one image of `class` from the noise seeded with `seed` and writes its 8-bit
/// pixels (channels first) into `pixels`; returns how many were written.
pub fn generate(
    model: &CompactModel<'_>,
    class: usize,
    seed: u64,
    buffers: &mut Buffers,
    pixels: &mut [u8],
) -> Result<usize, CompactError> {
    check(model)?;
    let dims = model.dims();
    let mut ws = Workspace {
        a: &mut buffers.a,
        b: &mut buffers.b,
        codes: &mut buffers.codes,
        scales: &mut buffers.scales,
        bias: &mut buffers.bias,
    };
    let sample = &mut buffers.sample[..dims];
    model.generate(class, seed, &mut ws, sample)?;
    for (p, &v) in pixels[..dims].iter_mut().zip(sample.iter()) {
        *p = to_pixel(v);
    }
    Ok(dims)
}
