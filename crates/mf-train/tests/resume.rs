//! Checkpoints and resume: N steps in one go equal N/2 steps, a resume and N/2 more, bit for
//! bit (weights, EMA, optimizer state, random stream); a copy of the optimizer state (what the
//! other ranks of a data-parallel group start from) steps as the original does.
use std::path::Path;

use burn::prelude::*;
use mf_train::checkpoint;
use mf_train::config::Config;
use mf_train::train::{DeviceKind, FitOptions, fit};

const TOY: &str = r#"
[data]
dataset = "moons"
[model]
arch = "mlp"
width = 32
depth = 2
time_dim = 8
class_dim = 4
[train]
steps = 20
batch = 64
seed = 3
log_every = 5
"#;

fn options(config: &Config, out: &Path, resume: bool) -> FitOptions {
    FitOptions {
        config: config.clone(),
        out: out.to_path_buf(),
        device: DeviceKind::Cpu,
        devices: Vec::new(),
        resume,
        max_minutes: None,
        progress: false,
    }
}

/// A checkpoint file's tensors by name (the header's metadata order is not deterministic, the
/// tensors are).
fn tensors(run: &Path, file: &str) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(checkpoint::dir(run).join(file)).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut all: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.data().to_vec()))
        .collect();
    all.sort();
    all
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    // The second config's curriculum (the longest t − r growing over 15 steps) is still
    // under way when the run is split at step 10.
    let curriculum = format!("{TOY}[objective]\ngap_ramp_steps = 15\n");
    let mut curves = Vec::new();
    for text in [TOY, curriculum.as_str()] {
        let config = Config::parse(text).unwrap();
        let whole = tempfile::tempdir().unwrap();
        fit(&options(&config, whole.path(), false)).unwrap();

        let split = tempfile::tempdir().unwrap();
        let mut half = config.clone();
        half.train.steps = 10;
        fit(&options(&half, split.path(), false)).unwrap();
        assert_eq!(checkpoint::read_state(split.path()).unwrap().step, 10);
        // Resuming continues with the stored config, extended to the full length (what
        // `mf-train fit --resume --steps 20` does).
        fit(&options(&config, split.path(), true)).unwrap();
        assert_eq!(
            checkpoint::read_state(split.path())
                .unwrap()
                .config
                .train
                .steps,
            20
        );

        // The optimizer state is checked through its effect: any difference in Adam's moments or
        // step count would change the weights of the second half.
        for file in ["model.safetensors", "ema.safetensors"] {
            assert!(
                tensors(whole.path(), file) == tensors(split.path(), file),
                "{file} differs after resume"
            );
        }
        let (a, b) = (
            checkpoint::read_state(whole.path()).unwrap(),
            checkpoint::read_state(split.path()).unwrap(),
        );
        assert_eq!((a.step, a.rng), (b.step, b.rng));
        let loss = |run: &Path| std::fs::read_to_string(run.join("loss.csv")).unwrap();
        let rows = |text: String| {
            text.lines()
                .map(|l| l.rsplit_once(',').unwrap().0.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rows(loss(whole.path())),
            rows(loss(split.path())),
            "loss curves differ"
        );
        curves.push(rows(loss(whole.path())));
    }
    // The curriculum reaches training: its capped intervals change the losses logged.
    assert_ne!(curves[0], curves[1], "the gap ramp changed nothing");
}

#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_checkpoint() {
    let mut config = Config::parse(TOY).unwrap();
    config.train.steps = 4;
    let run = tempfile::tempdir().unwrap();
    fit(&options(&config, run.path(), false)).unwrap();
    let good = tensors(run.path(), "model.safetensors");

    // Resume with an absurd learning rate: the weights blow up and the loss turns non-finite.
    let mut state = checkpoint::read_state(run.path()).unwrap();
    state.config.train.steps = 200;
    state.config.optim.lr = 1e30;
    std::fs::write(
        checkpoint::dir(run.path()).join("state.json"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    let err = fit(&options(&state.config, run.path(), true))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("training stopped") && err.contains("intact"),
        "{err}"
    );
    assert_eq!(checkpoint::read_state(run.path()).unwrap().step, 4);
    assert!(
        tensors(run.path(), "model.safetensors") == good,
        "the checkpoint changed"
    );
    assert!(!run.path().join("checkpoint.tmp").exists());
}

#[test]
fn missing_dataset_names_the_fetch_script() {
    let text = TOY.replace(
        "dataset = \"moons\"",
        "dataset = \"mnist\"\nroot = \"/nonexistent/mnist\"",
    );
    let config = Config::parse(&text).unwrap();
    let run = tempfile::tempdir().unwrap();
    let err = fit(&options(&config, run.path(), false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tools/fetch-data"), "{err}");
}

#[test]
fn resume_without_checkpoint_is_a_clear_error() {
    let config = Config::parse(TOY).unwrap();
    let run = tempfile::tempdir().unwrap();
    let err = fit(&options(&config, run.path(), true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no checkpoint"), "{err}");
}

/// Every value of every float parameter, in the module's order.
struct Values(Vec<f32>);

impl burn::module::ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        self.0.extend(
            param
                .val()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap(),
        );
    }
}

fn values(net: &mf_train::model::VelocityNet) -> Vec<f32> {
    let mut values = Values(Vec::new());
    net.visit(&mut values);
    values.0
}

/// Another rank of a data-parallel group starts from a copy of rank 0's optimizer: after ten
/// steps, the copy and the restored original take the next step to the same weights, bit for
/// bit (a fresh Adam would not: its moments and bias correction start over).
#[test]
fn a_replica_optimizer_continues_where_the_original_is() {
    use mf_train::datasets::Dataset;
    use mf_train::objective::draw;
    use mf_train::parallel::replica_optimizer;
    use mf_train::rng::Rng;
    use mf_train::train::{adam, step};
    use rand::SeedableRng;

    let mut config = Config::parse(TOY).unwrap();
    config.train.steps = 10;
    let run = tempfile::tempdir().unwrap();
    fit(&options(&config, run.path(), false)).unwrap();
    let device = Device::flex().autodiff();
    let loaded = checkpoint::load(run.path(), &device).unwrap();
    let bytes = burn::tensor::Bytes::from_bytes_vec(loaded.optimizer);
    let mut original = adam(&config).init().from_bytes(bytes).unwrap();
    let mut replica = replica_optimizer(&original, &config).unwrap();
    let mut fresh = adam(&config).init();

    let dataset = Dataset::open(&config.data).unwrap();
    let null = loaded.state.spec.null_class();
    let draws = draw(
        &dataset,
        &mut Rng::seed_from_u64(9),
        64,
        &config.objective,
        null,
    );
    let after = |optim: &mut burn::optim::ModuleOptimizer| {
        values(
            &step(loaded.model.clone(), optim, &draws, &config, 1e-2)
                .unwrap()
                .0,
        )
    };
    let expected = after(&mut original);
    assert_eq!(after(&mut replica), expected);
    assert_ne!(after(&mut fresh), expected, "the test cannot tell");
}
