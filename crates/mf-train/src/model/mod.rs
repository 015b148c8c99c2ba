//! Average-velocity networks u_θ(z, r, t | class), conditioned on t and t − r, with a dual
//! (value, tangent) forward that gives the exact JVP MeanFlow's target needs.
pub mod dual;
mod mlp;

use anyhow::bail;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, ObjectiveKind};
pub use dual::Dual;
pub use mlp::Mlp;

/// What the network's raw output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prediction {
    /// The output is the average velocity u.
    U,
    /// The output is a clean sample x̂, and u = (z − x̂) / max(t, T_FLOOR).
    X,
}

/// The floor on t in the x-prediction's division.
pub const T_FLOOR: f64 = 0.05;

/// Everything about a network that is not a weight: enough to rebuild it and to export it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetSpec {
    /// `mlp` (or `unet`).
    pub arch: String,
    /// Shape of one sample, `[2]` or `[C, H, W]`.
    pub sample_shape: Vec<usize>,
    /// Number of real classes; the null class is index `classes`.
    pub classes: usize,
    /// Hidden width / base channels.
    pub width: usize,
    /// Hidden layers / levels.
    pub depth: usize,
    /// Size of each sinusoidal time embedding.
    pub time_dim: usize,
    /// Multiplier of t (and t − r) in the time embeddings.
    pub time_scale: f64,
    /// Size of the class embedding.
    pub class_dim: usize,
    /// Meaning of the raw output.
    pub prediction: Prediction,
    /// The objective it was trained with, which decides how it is sampled.
    pub objective: ObjectiveKind,
}

impl NetSpec {
    /// The spec for a model config and a dataset's sample shape and class count.
    pub fn new(
        config: &ModelConfig,
        objective: ObjectiveKind,
        sample_shape: Vec<usize>,
        classes: usize,
    ) -> anyhow::Result<Self> {
        let prediction = match config.prediction.as_str() {
            "u" => Prediction::U,
            "x" => Prediction::X,
            other => bail!("model.prediction {other:?}: expected \"u\" or \"x\""),
        };
        if config.arch != "mlp" {
            bail!("unknown model.arch {:?}; accepted: mlp", config.arch);
        }
        Ok(NetSpec {
            arch: config.arch.clone(),
            sample_shape,
            classes,
            width: config.width,
            depth: config.depth,
            time_dim: config.time_dim,
            time_scale: config.time_scale,
            class_dim: config.class_dim,
            prediction,
            objective,
        })
    }

    /// Values per sample.
    pub fn dims(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// The class index that means "no class" (classifier-free guidance's ∅).
    pub fn null_class(&self) -> usize {
        self.classes
    }
}

/// An average-velocity network.
#[derive(Module, Debug)]
pub struct VelocityNet {
    /// The layers.
    pub body: Mlp,
    /// Its description.
    #[module(skip)]
    pub spec: NetSpec,
}

impl VelocityNet {
    /// A freshly initialized network on `device`.
    pub fn new(spec: &NetSpec, device: &Device) -> Self {
        let body = Mlp::new(spec, device);
        VelocityNet {
            body,
            spec: spec.clone(),
        }
    }

    /// u(z, r, t | class) as a dual: `z` is `[N, dims]`, `t` and `r` are `[N]`. The network sees
    /// `t` and `h = t − r`; the tangents of `z`, `t` and `r` propagate to u's tangent.
    pub fn forward(&self, z: Dual<2>, t: Dual<1>, r: Dual<1>, class: Tensor<1, Int>) -> Dual<2> {
        let h = t.clone() - r;
        let raw = self.body.forward(z.clone(), t.clone(), h, class);
        match self.spec.prediction {
            Prediction::U => raw,
            Prediction::X => x_to_u(z, raw, t),
        }
    }

    /// The device its weights live on.
    pub fn device(&self) -> Device {
        self.body.layers[0].weight.val().device()
    }

    /// The input of every linear layer for plain u(z, r, t | class), in layer order.
    pub fn layer_inputs(
        &self,
        z: Tensor<2>,
        t: Tensor<1>,
        r: Tensor<1>,
        class: Tensor<1, Int>,
    ) -> Vec<Tensor<2>> {
        let mut record = Vec::new();
        let h = Dual::primal(t.clone() - r);
        self.body.forward_recording(
            Dual::primal(z),
            Dual::primal(t),
            h,
            class,
            Some(&mut record),
        );
        record
    }

    /// Trainable parameters.
    pub fn parameters(&self) -> usize {
        self.num_params()
    }

    /// Plain u(z, r, t | class) without tangents.
    pub fn u(&self, z: Tensor<2>, t: Tensor<1>, r: Tensor<1>, class: Tensor<1, Int>) -> Tensor<2> {
        self.forward(Dual::primal(z), Dual::primal(t), Dual::primal(r), class)
            .value
    }
}

/// u = (z − x̂)/τ with τ = max(t, T_FLOOR): du = (dz − dx̂)/τ − (z − x̂)·dτ/τ², where dτ = dt
/// above the floor and 0 on it.
fn x_to_u(z: Dual<2>, xhat: Dual<2>, t: Dual<1>) -> Dual<2> {
    let n = t.value.dims()[0];
    let above = t.value.clone().detach().greater_elem(T_FLOOR).float();
    let tau = t.value.clamp_min(T_FLOOR).reshape([n, 1]);
    let diff = z - xhat;
    let inv = tau.recip();
    let value = diff.value.clone() * inv.clone();
    let tangent = match (diff.tangent, t.tangent) {
        (None, None) => None,
        (d_diff, dt) => {
            let inv = inv.detach();
            let mut out = d_diff.map(|d| d * inv.clone());
            if let Some(dt) = dt {
                let dtau = (dt * above).reshape([n, 1]);
                let term = diff.value.detach() * dtau * inv.square();
                out = Some(match out {
                    Some(o) => o - term,
                    None => term.neg(),
                });
            }
            out
        }
    };
    Dual { value, tangent }
}
