//! GroupNorm as exported: `Reshape → InstanceNormalization → Reshape → Mul(γ) → Add(β)`, with
//! the SiLU (`Sigmoid` + `Mul`) that usually follows, run as one step.
use anyhow::ensure;
use mf_kernels::Isa;
use mf_kernels::norm::sigmoid;

use super::{broadcast, normalize, reshape, with_shape};
use crate::tensor::Value;

/// The constants of one exported GroupNorm chain.
#[derive(Debug, Clone)]
pub struct GroupNormChain {
    /// The first Reshape's target (`[N, G, -1]` as exported).
    pub grouped: Vec<i64>,
    /// InstanceNormalization's per-group scale, bias and epsilon.
    pub scale: Vec<f32>,
    /// See `scale`.
    pub bias: Vec<f32>,
    /// See `scale`.
    pub epsilon: f32,
    /// The second Reshape's target (back to `[N, C, H, W]`).
    pub ungrouped: Vec<i64>,
    /// The Mul's constant (`γ`, per channel as exported).
    pub gamma: Value,
    /// The Add's constant (`β`).
    pub beta: Value,
    /// Whether the chain ends in SiLU.
    pub silu: bool,
}

impl GroupNormChain {
    /// The chain's output for `x`: in one pass when `γ` and `β` are per channel of the
    /// ungrouped shape and each channel lies in one group, else node by node; the same bits
    /// either way. The one pass writes into `buffer(len)` (`len` values, any contents: all
    /// are overwritten).
    pub fn run(
        &self,
        x: &Value,
        isa: Isa,
        buffer: &mut dyn FnMut(usize) -> Vec<f32>,
    ) -> anyhow::Result<Value> {
        let (data, shape) = x.f32("GroupNorm input")?;
        let grouped = reshape(shape, &self.grouped)?;
        ensure!(
            grouped.len() >= 3,
            "InstanceNormalization of {grouped:?}: inputs are [N, C, D1, …] with at least one spatial axis"
        );
        let ungrouped = reshape(&grouped, &self.ungrouped)?;
        let (gamma, gamma_shape) = self.gamma.f32("GroupNorm scale (Mul)")?;
        let (beta, beta_shape) = self.beta.f32("GroupNorm shift (Add)")?;
        if per_channel(gamma_shape, &ungrouped) && per_channel(beta_shape, &ungrouped) {
            let norm = (&self.scale[..], &self.bias[..], self.epsilon);
            let affine = (gamma, beta);
            if let Some(out) = normalize::group_norm(
                isa,
                data,
                &grouped,
                norm,
                (&ungrouped, affine),
                self.silu,
                buffer,
            )? {
                return Ok(Value::F32(out, ungrouped));
            }
        }
        let normalized =
            normalize::instance_norm(data, &grouped, &self.scale, &self.bias, self.epsilon)?;
        let normalized = with_shape(normalized, ungrouped);
        let (y, sy) = normalized.f32("GroupNorm")?;
        let scaled = broadcast(y, sy, gamma, gamma_shape, |a, b| a * b)?;
        let (y, sy) = scaled.f32("GroupNorm")?;
        let shifted = broadcast(y, sy, beta, beta_shape, |a, b| a + b)?;
        if !self.silu {
            return Ok(shifted);
        }
        let (y, sy) = shifted.f32("GroupNorm")?;
        Ok(Value::F32(
            y.iter().map(|&a| a * sigmoid(a)).collect(),
            sy.to_vec(),
        ))
    }
}

/// Whether a constant of shape `constant` broadcasts against `shape` as one value per index
/// of axis 1 (`[C, 1, …]` aligned to the right, or `[1, C, 1, …]`), leaving `shape` as it is.
fn per_channel(constant: &[usize], shape: &[usize]) -> bool {
    let Some(lead) = shape.len().checked_sub(constant.len()) else {
        return false;
    };
    shape.len() >= 2
        && constant.iter().enumerate().all(|(j, &d)| {
            let axis = j + lead;
            d == 1 || (axis == 1 && d == shape[1])
        })
        && constant.iter().product::<usize>() == shape[1]
}
