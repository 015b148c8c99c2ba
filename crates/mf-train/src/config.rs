//! The training configuration: one TOML file, every key known (an unknown key is an error).
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Everything a run needs, as read from its TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What to train on.
    pub data: DataConfig,
    /// The average-velocity network.
    pub model: ModelConfig,
    /// The MeanFlow objective's knobs.
    #[serde(default)]
    pub objective: ObjectiveConfig,
    /// Adam and EMA.
    #[serde(default)]
    pub optim: OptimConfig,
    /// Steps, batch, seed and the cadence of logs, samples and checkpoints.
    pub train: TrainConfig,
}

/// The dataset and where it lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `mnist`, `fashion-mnist`, `checkerboard`, `moons`, `gaussians8` or `folder`.
    pub dataset: String,
    /// Where the files are (IDX folder or image folder); defaults to `data/<dataset>` under
    /// `$MF_DATA_DIR` or the repository's `data/`.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Side of the square images a `folder` dataset is resized to.
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Channels of a `folder` dataset: 1 (grey), 3 (RGB) or 4 (RGBA).
    #[serde(default)]
    pub channels: Option<usize>,
    /// Train on a teacher's couplings (`mf-train couple`) instead of the dataset's images:
    /// each image is paired with the noise the teacher drew it from. `dataset` still names
    /// what the teacher modelled (the classes, the evaluation's real images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub couplings: Option<PathBuf>,
}

/// Which network, how big, and what it predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `mlp`, `unet` or `dit`.
    pub arch: String,
    /// Hidden width (MLP), base channels (U-Net) or token width (DiT).
    pub width: usize,
    /// Hidden layers (MLP), resolution levels (U-Net) or blocks (DiT).
    pub depth: usize,
    /// Size of each sinusoidal time embedding (of t and of t − r).
    #[serde(default = "default_time_dim")]
    pub time_dim: usize,
    /// Multiplier of t in the sinusoidal embeddings (frequencies scale·10000^(−i/half)).
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// Size of the class embedding.
    #[serde(default = "default_class_dim")]
    pub class_dim: usize,
    /// `u`: the network outputs u directly; `x`: it outputs a clean image x̂ and
    /// u = (z − x̂) / max(t, 0.05) (pixel-MeanFlow's parametrization).
    #[serde(default = "default_prediction")]
    pub prediction: String,
    /// Attention heads of a DiT (default 4; the width must be a multiple).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// Patch side of a DiT (default 4; the image sides must be multiples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<usize>,
    /// MLP width over model width in a DiT block (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_ratio: Option<usize>,
}

/// The MeanFlow objective as the reference implementations define it; missing keys take the
/// reference defaults (official JAX ImageNet recipe, adaptive weight c = 1e-3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    /// `meanflow` (the product) or `flow-matching` (the baseline: r = t, target v).
    pub kind: ObjectiveKind,
    /// Mean of the logit-normal (t, r) draws.
    pub t_mu: f64,
    /// Standard deviation of the logit-normal (t, r) draws.
    pub t_sigma: f64,
    /// Mean of r's own logit-normal (default: t's; py-meanflow's CIFAR v1 preset draws r near
    /// 0 with −4); left out of the config hash when unset, so older runs keep theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r_mu: Option<f64>,
    /// Standard deviation of r's own logit-normal (default: t's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r_sigma: Option<f64>,
    /// How the two draws become t ≥ r (see [`TimeSampler`]).
    #[serde(skip_serializing_if = "is_default")]
    pub time_sampler: TimeSampler,
    /// Fraction of samples with r ≠ t (the rest get r = t).
    pub ratio_r_neq_t: f64,
    /// Adaptive loss weight power: loss = L / sg((L + c)^p).
    pub p: f64,
    /// Adaptive loss weight offset.
    pub c: f64,
    /// Guidance scale ω folded into the target (1 disables guidance).
    pub omega: f64,
    /// Guidance mix κ with the conditional prediction.
    pub kappa: f64,
    /// Interval of t in which guidance applies.
    pub guidance_interval: [f64; 2],
    /// Probability of dropping a label to the null class.
    pub label_drop: f64,
    /// The JVP's tangent in z (see [`Tangent`]); left out of the config hash when it is the
    /// default, so older runs keep theirs.
    #[serde(skip_serializing_if = "is_default")]
    pub tangent: Tangent,
    /// Steps over which the longest interval t − r trained grows linearly from 0 to 1 (a
    /// short-to-long curriculum: instantaneous velocity first, then ever longer jumps; Kim et
    /// al., arXiv 2511.19065). Counted in steps, not as a share of the run, so that extending a
    /// run does not restart it. 0, the default, trains every interval from the start and stays
    /// out of the config hash.
    #[serde(skip_serializing_if = "is_default")]
    pub gap_ramp_steps: u64,
    /// Fraction of samples drawn at (r, t) = (0, 1), the whole jump that one-step sampling takes
    /// (the default draws almost never come near it: t > 0.95 in 0.08% of them); the rest are
    /// drawn as above. 0, the default, draws nothing for it and stays out of the config hash,
    /// so older runs keep their draws and their hash. A quarter of them made a Fashion-MNIST
    /// student's error swing by nine orders of magnitude (nothing near t = 1 anchors ∂u/∂t,
    /// which the target feeds back at full weight): `models/fashion-mnist.md`. On a teacher's
    /// couplings, [`JumpTarget::Velocity`] gives these samples a target without ∂u/∂t.
    #[serde(skip_serializing_if = "is_default")]
    pub full_jump_share: f64,
    /// What the samples at (r, t) = (0, 1) regress onto (see [`JumpTarget`]); left out of the
    /// config hash when it is the default, so older runs keep theirs.
    #[serde(skip_serializing_if = "is_default")]
    pub full_jump_target: JumpTarget,
}

impl ObjectiveConfig {
    /// The longest t − r that step `step` (0-based) trains (see
    /// [`ObjectiveConfig::gap_ramp_steps`]).
    pub fn max_gap_at(&self, step: u64) -> f64 {
        if step < self.gap_ramp_steps {
            step as f64 / self.gap_ramp_steps as f64
        } else {
            1.0
        }
    }
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            kind: ObjectiveKind::MeanFlow,
            t_mu: -0.4,
            t_sigma: 1.0,
            r_mu: None,
            r_sigma: None,
            time_sampler: TimeSampler::Sorted,
            ratio_r_neq_t: 0.25,
            p: 1.0,
            c: 1e-3,
            omega: 1.0,
            kappa: 0.0,
            guidance_interval: [0.0, 1.0],
            label_drop: 0.1,
            tangent: Tangent::Conditional,
            gap_ramp_steps: 0,
            full_jump_share: 0.0,
            full_jump_target: JumpTarget::MeanFlow,
        }
    }
}

/// The direction in z along which the JVP differentiates u.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tangent {
    /// The guided conditional velocity v_g (MeanFlow as published).
    #[default]
    Conditional,
    /// The network's own velocity u(z_t, t, t | c) under stop-gradient (improved MeanFlow, iMF,
    /// arXiv 2512.02012: a deterministic estimate of the marginal velocity instead of the
    /// per-sample ε − x, so the JVP term no longer multiplies that sample's noise).
    Model,
}

/// The target of a sample drawn at (r, t) = (0, 1), the jump one-step sampling takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JumpTarget {
    /// MeanFlow's own: v_g − (t − r)·du/dt, like every other sample.
    #[default]
    #[serde(rename = "meanflow")]
    MeanFlow,
    /// The sample's own velocity ε − x, unguided and without the JVP term. On a teacher's
    /// couplings the straight path from ε to its image x is the teacher's own map, so ε − x is the
    /// whole jump's average velocity: this regresses the one-step map onto the teacher's images
    /// directly (rectified flow's distillation step) instead of through du/dt, which nothing near
    /// t = 1 anchors. Unguided, because at t = 1 the guided v_g extrapolates each image away
    /// from the unconditional prediction (a guided jump target saturated a Fashion-MNIST
    /// student's garments: `models/fashion-mnist.md`). On real images with fresh noise it would
    /// regress onto the data's mean, so it needs `data.couplings`.
    Velocity,
}

/// How a draw `a` from t's logit-normal and a draw `b` from r's become (t, r), as
/// py-meanflow's two samplers do; a share `1 − ratio_r_neq_t` then gets r = t.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSampler {
    /// t = max(a, b), r = min(a, b) (py-meanflow's v0; the official JAX recipe, where both come
    /// from one distribution).
    #[default]
    Sorted,
    /// t = a, r = min(a, b): t keeps its own distribution (py-meanflow's v1).
    Clipped,
}

/// Which objective a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectiveKind {
    /// MeanFlow: regress u(z_t, r, t) onto the JVP target; sampled in one step.
    /// (`mean-flow`, the name early runs recorded, is read too.)
    #[serde(rename = "meanflow", alias = "mean-flow")]
    MeanFlow,
    /// Flow matching: regress u(z_t, t, t) onto v; sampled with Euler steps (r = t).
    FlowMatching,
}

/// Adam and the EMA of the weights; missing keys take the defaults below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Learning rate.
    pub lr: f64,
    /// Adam β1.
    pub beta1: f32,
    /// Adam β2.
    pub beta2: f32,
    /// Adam ε.
    pub eps: f32,
    /// EMA decay per step.
    pub ema_decay: f64,
    /// Fraction of the run's final steps over which the learning rate falls linearly to 0
    /// (0: constant; left out of the config hash when 0, so older runs keep theirs).
    #[serde(skip_serializing_if = "is_default")]
    pub cooldown: f64,
}

/// Whether a key holds its default, which the config's JSON (and so its hash) leaves out.
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl OptimConfig {
    /// The learning rate of step `step` (0-based) of a run of `steps`.
    pub fn lr_at(&self, step: u64, steps: u64) -> f64 {
        let span = self.cooldown * steps as f64;
        let left = steps.saturating_sub(step) as f64;
        if span > 0.0 && left < span {
            self.lr * left / span
        } else {
            self.lr
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            ema_decay: 0.999,
            cooldown: 0.0,
        }
    }
}

/// Length and cadence of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Samples per step.
    pub batch: usize,
    /// Seed of every random draw (initialization, data order, noise, times).
    pub seed: u64,
    /// Steps between loss-curve rows.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Steps between sample grids (0: only at the end).
    #[serde(default)]
    pub sample_every: u64,
    /// Steps between checkpoints (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Start from another run's EMA weights instead of a random initialization (the same
    /// network: a student from the teacher whose couplings it trains on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

fn default_time_dim() -> usize {
    64
}
fn default_time_scale() -> f64 {
    1000.0
}
fn default_class_dim() -> usize {
    128
}
fn default_prediction() -> String {
    "u".into()
}
fn default_log_every() -> u64 {
    50
}

/// The most samples one training step may hold (`train.batch`).
pub const MAX_BATCH: usize = 65_536;

/// Whether `v` is a finite number above 0 (NaN is not).
fn positive(v: f64) -> bool {
    v > 0.0 && v.is_finite()
}

impl Config {
    /// Reads and checks a TOML config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        // A config is a few hundred bytes; 1 MiB is generous and stops `/dev/zero`.
        let text = mf_core::bounded::read_text(path, 1 << 20, "config")?;
        Config::parse(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parses and checks a TOML config.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    /// Checks value ranges that the types cannot express. Every comparison is written so
    /// that NaN fails it.
    pub fn check(&self) -> anyhow::Result<()> {
        let o = &self.objective;
        if !(0.0..=1.0).contains(&o.ratio_r_neq_t) || !(0.0..1.0).contains(&o.label_drop) {
            bail!("objective.ratio_r_neq_t must be in [0, 1] and objective.label_drop in [0, 1)");
        }
        if !(0.0..=1.0).contains(&o.full_jump_share) {
            bail!(
                "objective.full_jump_share must be in [0, 1] (the fraction of samples drawn at r = 0, t = 1), got {}",
                o.full_jump_share
            );
        }
        if o.full_jump_target == JumpTarget::Velocity
            && (o.full_jump_share == 0.0
                || self.data.couplings.is_none()
                || o.kind != ObjectiveKind::MeanFlow)
        {
            bail!(
                "objective.full_jump_target = \"velocity\" needs a MeanFlow objective, \
                 objective.full_jump_share above 0 and data.couplings (a teacher's couplings: on \
                 real images with fresh noise the whole jump's velocity target is the data's mean); \
                 leave it at \"meanflow\" otherwise"
            );
        }
        if !(positive(o.t_sigma) && positive(o.c) && o.p >= 0.0 && o.p.is_finite()) {
            bail!(
                "objective.t_sigma and objective.c must be positive, objective.p non-negative \
                 (finite numbers)"
            );
        }
        if !o.t_mu.is_finite() || o.r_mu.is_some_and(|m| !m.is_finite()) {
            bail!("objective.t_mu and objective.r_mu must be finite numbers");
        }
        if o.r_sigma.is_some_and(|s| !positive(s)) {
            bail!("objective.r_sigma must be positive");
        }
        if !(positive(o.omega) && (0.0..1.0).contains(&o.kappa)) {
            bail!(
                "objective.omega {} and objective.kappa {}: ω must be positive and κ in [0, 1) \
                 (the effective guidance scale is ω / (1 − κ))",
                o.omega,
                o.kappa
            );
        }
        let [from, to] = o.guidance_interval;
        if !((0.0..=1.0).contains(&from) && (from..=1.0).contains(&to)) {
            bail!(
                "objective.guidance_interval {:?}: [a, b] with 0 ≤ a ≤ b ≤ 1 is accepted",
                o.guidance_interval
            );
        }
        if !["u", "x"].contains(&self.model.prediction.as_str()) {
            bail!(
                "model.prediction must be \"u\" or \"x\", not {:?}",
                self.model.prediction
            );
        }
        if !self.model.time_dim.is_multiple_of(2) || self.model.time_dim == 0 {
            bail!("model.time_dim must be even and positive");
        }
        if !positive(self.model.time_scale) {
            bail!(
                "model.time_scale {} must be a positive number",
                self.model.time_scale
            );
        }
        if self.train.batch == 0 || self.train.steps == 0 {
            bail!("train.batch and train.steps must be positive");
        }
        if self.train.batch > MAX_BATCH {
            bail!(
                "train.batch {} is more than the {MAX_BATCH} samples a step may hold",
                self.train.batch
            );
        }
        if self.train.log_every == 0 {
            bail!("train.log_every must be 1 or more steps, not 0 (the default is 50)");
        }
        if !(0.0..1.0).contains(&self.optim.ema_decay) || !positive(self.optim.lr) {
            bail!("optim.ema_decay must be in [0, 1) and optim.lr positive");
        }
        let adam = &self.optim;
        if !((0.0..1.0).contains(&adam.beta1)
            && (0.0..1.0).contains(&adam.beta2)
            && positive(adam.eps.into()))
        {
            bail!("optim.beta1 and optim.beta2 must be in [0, 1) and optim.eps positive");
        }
        if !(0.0..=1.0).contains(&self.optim.cooldown) {
            bail!(
                "optim.cooldown must be a fraction of the run in [0, 1], not {}",
                self.optim.cooldown
            );
        }
        Ok(())
    }

    /// A short hash of the config (first 12 hex digits of the SHA-256 of its canonical JSON).
    pub fn hash(&self) -> String {
        let json = serde_json::to_string(self).expect("a config serializes");
        let digest = Sha256::digest(json.as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [data]
        dataset = "checkerboard"
        [model]
        arch = "mlp"
        width = 64
        depth = 2
        [train]
        steps = 10
        batch = 8
        seed = 1
    "#;

    #[test]
    fn out_of_range_and_nan_values_are_refused_by_name() {
        let cases = [
            (
                "[train]",
                "[objective]\nt_sigma = nan\n[train]",
                "objective.t_sigma",
            ),
            ("[train]", "[objective]\nc = -1.0\n[train]", "objective.c"),
            (
                "[train]",
                "[objective]\nomega = nan\n[train]",
                "objective.omega",
            ),
            (
                "[train]",
                "[objective]\nkappa = 1.0\n[train]",
                "objective.kappa",
            ),
            (
                "[train]",
                "[objective]\nguidance_interval = [0.8, 0.3]\n[train]",
                "guidance_interval",
            ),
            ("[train]", "[optim]\nlr = nan\n[train]", "optim.lr"),
            ("[train]", "[optim]\nbeta2 = 1.0\n[train]", "optim.beta1"),
            (
                "depth = 2",
                "depth = 2\ntime_scale = inf",
                "model.time_scale",
            ),
            ("batch = 8", "batch = 100000000", "train.batch"),
        ];
        for (from, to, named) in cases {
            let text = MINIMAL.replace(from, to);
            assert_ne!(text, MINIMAL);
            let err = Config::parse(&text).unwrap_err();
            assert!(format!("{err:#}").contains(named), "{to}: {err:#}");
        }
        Config::parse(MINIMAL).expect("the minimal config is accepted");
    }

    #[test]
    fn a_log_interval_of_zero_is_refused_by_name() {
        let text = MINIMAL.replace("seed = 1", "seed = 1\nlog_every = 0");
        let err = Config::parse(&text).unwrap_err();
        assert!(format!("{err:#}").contains("train.log_every"), "{err:#}");
    }

    #[test]
    fn minimal_config_gets_reference_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.objective.t_mu, -0.4);
        assert_eq!(c.objective.ratio_r_neq_t, 0.25);
        assert_eq!(c.objective.p, 1.0);
        assert_eq!(c.objective.c, 1e-3);
        assert_eq!(c.optim.beta2, 0.95);
        assert_eq!(c.hash().len(), 12);
    }

    #[test]
    fn cooldown_falls_linearly_to_zero_and_is_off_by_default() {
        let mut optim = OptimConfig::default();
        assert_eq!(optim.lr_at(999, 1000), optim.lr);
        optim.cooldown = 0.25;
        assert_eq!(optim.lr_at(0, 1000), optim.lr);
        assert_eq!(optim.lr_at(750, 1000), optim.lr);
        assert!((optim.lr_at(875, 1000) - optim.lr * 0.5).abs() < 1e-15);
        assert!(optim.lr_at(999, 1000) > 0.0);
        // Off, it stays out of the config's JSON, so the hashes of older runs hold.
        let json = serde_json::to_string(&OptimConfig::default()).unwrap();
        assert!(!json.contains("cooldown"), "{json}");
    }

    #[test]
    fn the_gap_ramp_grows_the_longest_interval_from_zero_and_is_off_by_default() {
        let mut objective = ObjectiveConfig::default();
        assert_eq!(objective.max_gap_at(0), 1.0);
        objective.gap_ramp_steps = 400;
        assert_eq!(objective.max_gap_at(0), 0.0);
        assert_eq!(objective.max_gap_at(100), 0.25);
        assert_eq!(objective.max_gap_at(400), 1.0);
        assert_eq!(objective.max_gap_at(9999), 1.0);
        let json = serde_json::to_string(&ObjectiveConfig::default()).unwrap();
        assert!(!json.contains("gap_ramp"), "{json}");
        let text = format!("{MINIMAL}\n[objective]\ngap_ramp_steps = 2000\n");
        assert_eq!(Config::parse(&text).unwrap().objective.gap_ramp_steps, 2000);
        let text = format!("{MINIMAL}\n[objective]\ngap_ramp_steps = -1\n");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.contains("gap_ramp_steps"), "{err}");
    }

    #[test]
    fn the_tangent_is_read_named_when_wrong_and_left_out_when_default() {
        let json = serde_json::to_string(&ObjectiveConfig::default()).unwrap();
        assert!(!json.contains("tangent"), "{json}");
        let text = format!("{MINIMAL}\n[objective]\ntangent = \"model\"\n");
        let objective = Config::parse(&text).unwrap().objective;
        assert_eq!(objective.tangent, Tangent::Model);
        let text = format!("{MINIMAL}\n[objective]\ntangent = \"marginal\"\n");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(
            err.contains("conditional") && err.contains("model"),
            "{err}"
        );
    }

    #[test]
    fn time_sampler_keys_are_read_checked_and_left_out_when_default() {
        let json = serde_json::to_string(&ObjectiveConfig::default()).unwrap();
        assert!(
            !json.contains("r_mu") && !json.contains("r_sigma") && !json.contains("sampler"),
            "{json}"
        );
        let text = format!(
            "{MINIMAL}\n[objective]\ntime_sampler = \"clipped\"\nr_mu = -4.0\nr_sigma = 1.6\n"
        );
        let o = Config::parse(&text).unwrap().objective;
        assert_eq!(o.time_sampler, TimeSampler::Clipped);
        assert_eq!((o.r_mu, o.r_sigma), (Some(-4.0), Some(1.6)));
        for bad in [
            "r_sigma = 0.0",
            "r_sigma = nan",
            "r_mu = inf",
            "time_sampler = \"v1\"",
        ] {
            let text = format!("{MINIMAL}\n[objective]\n{bad}\n");
            assert!(Config::parse(&text).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("seed = 1", "seed = 1\nsead = 2");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.contains("sead"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let text = format!("{MINIMAL}\n[objective]\nratio_r_neq_t = 1.5\n");
        assert!(Config::parse(&text).is_err());
    }
}
