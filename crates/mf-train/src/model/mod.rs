//! Average-velocity networks u_θ(z, r, t | class), conditioned on t and t − r, with a dual
//! (value, tangent) forward that gives the exact JVP MeanFlow's target needs.
pub mod dit;
pub mod dual;
mod mlp;
pub mod trace;
pub mod unet;

use anyhow::bail;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, ObjectiveKind};
pub use dit::Dit;
pub use dual::{Dual, Labels};
pub use mlp::Mlp;
pub use trace::{Tap, Traced, Tracer};
pub use unet::Unet;

/// What the network's raw output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prediction {
    /// The output is the average velocity u.
    U,
    /// The output is a clean sample x̂, and u = (z − x̂) / max(t, T_FLOOR).
    X,
}

/// The network architectures mf-train builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// [`Mlp`] over flattened samples.
    Mlp,
    /// [`Unet`] over `[C, H, W]` images.
    Unet,
    /// [`Dit`] over `[C, H, W]` images.
    Dit,
}

impl Arch {
    /// The name configs and cards use.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mlp => "mlp",
            Arch::Unet => "unet",
            Arch::Dit => "dit",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The floor on t in the x-prediction's division.
pub const T_FLOOR: f64 = 0.05;

/// Everything about a network that is not a weight: enough to rebuild it and to export it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetSpec {
    /// The architecture.
    pub arch: Arch,
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
    /// Size of the class embedding (the DiT's is its width).
    pub class_dim: usize,
    /// Attention heads (DiT; 0 otherwise).
    #[serde(default)]
    pub heads: usize,
    /// Patch side (DiT; 0 otherwise).
    #[serde(default)]
    pub patch: usize,
    /// MLP width over model width (DiT; 0 otherwise).
    #[serde(default)]
    pub mlp_ratio: usize,
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
        let arch = match config.arch.as_str() {
            "mlp" => Arch::Mlp,
            "unet" => {
                check_unet(config, &sample_shape)?;
                Arch::Unet
            }
            "dit" => Arch::Dit,
            other => bail!("unknown model.arch {other:?}; accepted: mlp, unet, dit"),
        };
        let dit = arch == Arch::Dit;
        let (heads, patch, mlp_ratio) = if dit {
            let chosen = (
                config.heads.unwrap_or(4),
                config.patch.unwrap_or(4),
                config.mlp_ratio.unwrap_or(4),
            );
            check_dit(config, chosen, &sample_shape)?;
            chosen
        } else {
            if config.heads.is_some() || config.patch.is_some() || config.mlp_ratio.is_some() {
                bail!(
                    "model.heads, model.patch and model.mlp_ratio are settings of arch = \"dit\""
                );
            }
            (0, 0, 0)
        };
        Ok(NetSpec {
            arch,
            sample_shape,
            classes,
            width: config.width,
            depth: config.depth,
            time_dim: config.time_dim,
            time_scale: config.time_scale,
            class_dim: config.class_dim,
            heads,
            patch,
            mlp_ratio,
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

/// Checks that a U-Net fits the data: images `[C, H, W]` whose sides halve `depth − 1` times,
/// and channel counts that GroupNorm's groups divide.
fn check_unet(config: &ModelConfig, sample_shape: &[usize]) -> anyhow::Result<()> {
    let &[_, h, w] = sample_shape else {
        bail!(
            "model.arch \"unet\" needs images [C, H, W]; this dataset's samples are {sample_shape:?} (use arch = \"mlp\")"
        );
    };
    if !(1..=4).contains(&config.depth) {
        bail!(
            "model.depth {} for a unet: expected 1 to 4 levels",
            config.depth
        );
    }
    let step = 1 << (config.depth - 1);
    if !h.is_multiple_of(step) || !w.is_multiple_of(step) {
        bail!(
            "a unet of depth {} halves the image {} times: {h}x{w} is not divisible by {step} (28x28 takes depth ≤ 3, 32x32 depth ≤ 4)",
            config.depth,
            config.depth - 1
        );
    }
    if config.width == 0 || !config.width.is_multiple_of(unet::GROUPS) {
        bail!(
            "model.width {} for a unet: expected a positive multiple of {} (GroupNorm groups)",
            config.width,
            unet::GROUPS
        );
    }
    Ok(())
}

/// Checks that a DiT fits the data: images `[C, H, W]` whose sides the patch divides, and a
/// width that the heads divide and the 2-D position embedding's four parts split.
fn check_dit(
    config: &ModelConfig,
    (heads, patch, mlp_ratio): (usize, usize, usize),
    sample_shape: &[usize],
) -> anyhow::Result<()> {
    let &[_, h, w] = sample_shape else {
        bail!(
            "model.arch \"dit\" needs images [C, H, W]; this dataset's samples are {sample_shape:?} (use arch = \"mlp\")"
        );
    };
    if patch == 0 || !h.is_multiple_of(patch) || !w.is_multiple_of(patch) {
        bail!("model.patch {patch}: a positive divisor of the image sides {h}x{w} is accepted");
    }
    if heads == 0 || config.width == 0 || !config.width.is_multiple_of(heads) {
        bail!(
            "model.width {} with model.heads {heads}: a positive width that the heads divide is accepted",
            config.width
        );
    }
    if !config.width.is_multiple_of(4) {
        bail!(
            "model.width {} for a dit: a multiple of 4 is accepted (the 2-D position embedding splits it in four)",
            config.width
        );
    }
    if config.depth == 0 || mlp_ratio == 0 {
        bail!(
            "model.depth {} and model.mlp_ratio {mlp_ratio} for a dit: both must be positive",
            config.depth
        );
    }
    Ok(())
}

/// An average-velocity network: exactly one of the bodies is present, as `spec.arch` says.
#[derive(Module, Debug)]
pub struct VelocityNet {
    /// The MLP body (named `body` so that checkpoints of MLP runs keep their keys).
    pub body: Option<Mlp>,
    /// The U-Net body.
    pub unet: Option<Unet>,
    /// The DiT body.
    pub dit: Option<Dit>,
    /// Its description.
    #[module(skip)]
    pub spec: NetSpec,
}

impl VelocityNet {
    /// A freshly initialized network on `device`.
    pub fn new(spec: &NetSpec, device: &Device) -> Self {
        let arch = spec.arch;
        VelocityNet {
            body: (arch == Arch::Mlp).then(|| Mlp::new(spec, device)),
            unet: (arch == Arch::Unet).then(|| Unet::new(spec, device)),
            dit: (arch == Arch::Dit).then(|| Dit::new(spec, device)),
            spec: spec.clone(),
        }
    }

    /// u(z, r, t | class) as a dual: `z` is `[N, dims]`, `t` and `r` are `[N]`. The network sees
    /// `t` and `h = t − r`; the tangents of `z`, `t` and `r` propagate to u's tangent.
    pub fn forward(&self, z: Dual<2>, t: Dual<1>, r: Dual<1>, class: Tensor<1, Int>) -> Dual<2> {
        self.forward_labels(z, t, r, &Labels::new(class))
    }

    /// [`VelocityNet::forward`] with class indices that may be traced.
    pub fn forward_labels(&self, z: Dual<2>, t: Dual<1>, r: Dual<1>, class: &Labels) -> Dual<2> {
        let h = t.clone() - r;
        let raw = match (&self.body, &self.unet, &self.dit) {
            (Some(mlp), _, _) => mlp.forward(z.clone(), t.clone(), h, class),
            (None, Some(unet), _) => unet.forward(z.clone(), t.clone(), h, class),
            (None, None, Some(dit)) => dit.forward(z.clone(), t.clone(), h, class),
            (None, None, None) => unreachable!("VelocityNet::new builds one body"),
        };
        match self.spec.prediction {
            Prediction::U => raw,
            Prediction::X => x_to_u(z, raw, t),
        }
    }

    /// Traces the forward on a batch into its float32 ONNX graph: inputs `z` `[N, sample
    /// shape…]`, `t`, `r` `[N]` and `class` (int64 `[N]`), output `u` shaped like `z`. With
    /// `record`, every layer's input is tapped (calibration). Also returns u on the batch.
    pub fn trace(
        &self,
        z: Tensor<2>,
        t: Tensor<1>,
        r: Tensor<1>,
        class: Tensor<1, Int>,
        record: bool,
    ) -> anyhow::Result<(Traced, Tensor<2>)> {
        let tracer = Tracer::new(self, record);
        let shape = &self.spec.sample_shape;
        let u = self.forward_labels(
            tracer.input("z", shape, z),
            tracer.scalars("t", t),
            tracer.scalars("r", r),
            &tracer.labels("class", class),
        );
        let value = u.value.clone();
        Ok((tracer.finish(u, "u", shape)?, value))
    }

    /// The device its weights live on.
    pub fn device(&self) -> Device {
        self.devices()[0].clone()
    }

    /// The MLP body, if this is an MLP.
    pub fn mlp(&self) -> Option<&Mlp> {
        self.body.as_ref()
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
    let node = match (&diff.node, &t.node) {
        (Some(d), Some(t)) => {
            let axis = t.i64s("axis1", &[1]);
            let floor = t.f32s("t_floor", &[1], &[T_FLOOR as f32]);
            let tau = t
                .op("Unsqueeze", &[&axis], "t_column", &[])
                .op("Max", &[&floor], "tau", &[]);
            Some(d.op("Div", &[tau.name()], "u_flat", &[]))
        }
        (Some(d), None) => {
            d.fail("x-prediction's t was not traced");
            Some(d.clone())
        }
        (None, _) => None,
    };
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
    Dual {
        value,
        tangent,
        node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet(width: usize, depth: usize) -> ModelConfig {
        ModelConfig {
            arch: "unet".into(),
            width,
            depth,
            time_dim: 16,
            time_scale: 1000.0,
            class_dim: 8,
            prediction: "x".into(),
            heads: None,
            patch: None,
            mlp_ratio: None,
        }
    }

    fn spec_error(config: &ModelConfig, shape: Vec<usize>) -> String {
        let err = NetSpec::new(config, ObjectiveKind::MeanFlow, shape, 10).unwrap_err();
        format!("{err:#}")
    }

    #[test]
    fn unet_specs_that_cannot_run_are_clear_errors() {
        let e = spec_error(&unet(16, 2), vec![2]);
        assert!(e.contains("needs images [C, H, W]"), "{e}");
        let e = spec_error(&unet(16, 4), vec![1, 28, 28]);
        assert!(e.contains("not divisible by 8"), "{e}");
        let e = spec_error(&unet(12, 2), vec![1, 28, 28]);
        assert!(e.contains("multiple of 8"), "{e}");
        let e = spec_error(&unet(16, 0), vec![1, 28, 28]);
        assert!(e.contains("1 to 4 levels"), "{e}");
        let mut odd = unet(16, 2);
        odd.arch = "vit".into();
        let e = spec_error(&odd, vec![1, 28, 28]);
        assert!(e.contains("accepted: mlp, unet, dit"), "{e}");
        odd.patch = Some(2);
        odd.arch = "unet".into();
        let e = spec_error(&odd, vec![1, 28, 28]);
        assert!(e.contains("settings of arch = \"dit\""), "{e}");
    }

    fn dit(width: usize, heads: usize, patch: usize) -> ModelConfig {
        ModelConfig {
            arch: "dit".into(),
            depth: 2,
            heads: Some(heads),
            patch: Some(patch),
            ..unet(width, 2)
        }
    }

    #[test]
    fn dit_specs_that_cannot_run_are_clear_errors() {
        let e = spec_error(&dit(16, 4, 4), vec![2]);
        assert!(e.contains("needs images [C, H, W]"), "{e}");
        let e = spec_error(&dit(16, 4, 5), vec![1, 28, 28]);
        assert!(e.contains("model.patch 5"), "{e}");
        let e = spec_error(&dit(18, 4, 4), vec![1, 28, 28]);
        assert!(e.contains("heads divide"), "{e}");
        let e = spec_error(&dit(18, 3, 4), vec![1, 28, 28]);
        assert!(e.contains("multiple of 4"), "{e}");
    }

    #[test]
    fn unets_and_dits_run_on_28_and_32_pixel_images() {
        let device = Device::flex();
        let cases = [
            (unet(8, 3), vec![1, 28, 28]),
            (unet(8, 4), vec![3, 32, 32]),
            (dit(16, 2, 7), vec![1, 28, 28]),
            (dit(16, 2, 4), vec![3, 32, 32]),
        ];
        for (config, shape) in cases {
            let spec = NetSpec::new(&config, ObjectiveKind::MeanFlow, shape.clone(), 10).unwrap();
            let net = VelocityNet::new(&spec, &device);
            let dims: usize = shape.iter().product();
            let z = Tensor::<2>::zeros([2, dims], &device);
            let t = Tensor::<1>::ones([2], &device);
            let r = Tensor::<1>::zeros([2], &device);
            let class = Tensor::<1, Int>::from_data(TensorData::from([3i64, 10]), &device);
            assert_eq!(net.u(z, t, r, class).dims(), [2, dims], "{}", config.arch);
        }
    }
}
