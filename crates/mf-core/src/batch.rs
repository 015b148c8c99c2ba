//! One batch of network inputs, as every runner takes it: the exporter's check, and each of
//! mf-edge's backends.
use std::vec::Vec;

/// One batch of inputs of u(z, r, t | class).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Samples `[n, sample_shape...]`, row-major.
    pub z: Vec<f32>,
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
    /// t per sample.
    pub t: Vec<f32>,
    /// r per sample.
    pub r: Vec<f32>,
    /// Class per sample (the model's null class for unconditional samples).
    pub class: Vec<i64>,
}

impl Batch {
    /// Batch size.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// Shape of z with the batch first.
    pub fn z_shape(&self) -> Vec<usize> {
        core::iter::once(self.len())
            .chain(self.sample_shape.iter().copied())
            .collect()
    }
}
