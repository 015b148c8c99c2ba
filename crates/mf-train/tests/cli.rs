//! `mf-train`'s command line refuses bad values before any work starts: a message naming the
//! value and what is accepted, a non-zero exit, and nothing written.
use std::process::Command;

#[path = "../../../tests/support/refusal.rs"]
mod refusal;

/// A real config (batch 256).
const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/mnist.toml");

#[test]
fn bad_values_are_named_and_write_nothing() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["fit", "--config", "/dev/zero", "--out", "r"],
            &["config /dev/zero is larger than the 1048576 bytes"],
        ),
        (
            &[
                "fit",
                "--config",
                "c.toml",
                "--out",
                "r",
                "--max-minutes=-1",
            ],
            &["\"-1\"", "positive number of minutes"],
        ),
        (
            &[
                "fit",
                "--config",
                "c.toml",
                "--out",
                "r",
                "--max-minutes",
                "NaN",
            ],
            &["NaN", "positive number of minutes"],
        ),
        (
            &["fit", "--config", "c.toml", "--out", "r", "--steps", "0"],
            &["'0'", "1.."],
        ),
        (
            &["fit", "--config", "missing.toml", "--out", "r"],
            &["missing.toml"],
        ),
        (
            &["fit", "--config", MNIST, "--out", "r", "--devices", "0"],
            &["--devices", "needs --device cuda"],
        ),
        (
            &[
                "fit",
                "--config",
                MNIST,
                "--out",
                "r",
                "--device",
                "cuda",
                "--devices",
                "1,0,1",
            ],
            &["--devices lists device 1 twice"],
        ),
        (
            &[
                "fit",
                "--config",
                MNIST,
                "--out",
                "r",
                "--device",
                "cuda",
                "--devices",
                "0,1,2",
            ],
            &["batch of 256", "3 devices", "multiple of the device count"],
        ),
        (
            &["fit", "--config", MNIST, "--out", "r", "--devices", "0,x"],
            &["'x'", "--devices"],
        ),
        (
            &["sample", "--run", "r", "--out", "s.png", "--steps", "0"],
            &["'0'", "1..=1000"],
        ),
        (
            &["sample", "--run", "r", "--out", "s.png", "--count", "0"],
            &["'0'", "1..=10000"],
        ),
        (
            &["sample", "--run", "r", "--out", "s.png"],
            &["no checkpoint", "state.json"],
        ),
        (
            &[
                "classifier",
                "--dataset",
                "mnist",
                "--out",
                "c",
                "--epochs",
                "0",
            ],
            &["'0'", "1..=100000"],
        ),
        (
            &[
                "classifier",
                "--dataset",
                "mnist",
                "--out",
                "c",
                "--arch",
                "resnet",
            ],
            &["'resnet'", "mlp", "cnn"],
        ),
        (
            &["bench", "--config", "c.toml", "--steps", "0"],
            &["'0'", "1..=100000"],
        ),
        (
            &["bench", "--config", "c.toml", "--batch", "0"],
            &["'0'", "1..=65536"],
        ),
        (&["bench", "--config", "missing.toml"], &["missing.toml"]),
        (
            &["eval", "--run", "r", "--count", "0"],
            &["'0'", "1..=1000000"],
        ),
        (
            &["eval", "--run", "r", "--steps", "1,0"],
            &["'0'", "1..=1000"],
        ),
    ];
    for (args, expected) in cases {
        refusal::assert_refused(env!("CARGO_BIN_EXE_mf-train"), args, expected);
    }
}

/// A training config with `log_every = 0` is refused by name before the run folder is made.
#[test]
fn a_log_interval_of_zero_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[data]\ndataset = \"checkerboard\"\n[model]\narch = \"mlp\"\nwidth = 64\ndepth = 2\n\
         [train]\nsteps = 10\nbatch = 8\nseed = 1\nlog_every = 0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mf-train"))
        .args(["fit", "--config", "c.toml", "--out", "run"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("train.log_every"), "{err}");
    assert!(!dir.path().join("run").exists(), "a run folder was made");
}

/// After a crash between the checkpoint swap's two renames only `checkpoint.old/` exists:
/// `eval` and `sample` read the state and the weights from it (they read `checkpoint/`'s
/// weights before, and failed).
#[test]
fn eval_and_sample_read_the_folder_the_state_came_from() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[data]\ndataset = \"checkerboard\"\n[model]\narch = \"mlp\"\nwidth = 32\ndepth = 2\n\
         [train]\nsteps = 5\nbatch = 16\nseed = 2\n",
    )
    .unwrap();
    let mf_train = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mf-train"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let fit = mf_train(&["fit", "--config", "c.toml", "--out", "run"]);
    assert!(
        fit.status.success(),
        "{}",
        String::from_utf8_lossy(&fit.stderr)
    );
    std::fs::rename(
        dir.path().join("run/checkpoint"),
        dir.path().join("run/checkpoint.old"),
    )
    .unwrap();
    let eval = mf_train(&["eval", "--run", "run", "--count", "200", "--steps", "1"]);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    assert!(String::from_utf8_lossy(&eval.stdout).contains("1 step(s)"));
    let sample = mf_train(&["sample", "--run", "run", "--out", "s.png", "--count", "50"]);
    assert!(
        sample.status.success(),
        "{}",
        String::from_utf8_lossy(&sample.stderr)
    );
    assert!(dir.path().join("s.png").is_file());
}

/// `mf-train bench` times flow matching, MeanFlow and (when the config guides) guided MeanFlow
/// on the same network and batch, each ratio against flow matching's step.
#[test]
fn bench_times_each_objective_on_the_same_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = |omega: f64| {
        format!(
            "[data]\ndataset = \"checkerboard\"\n[model]\narch = \"mlp\"\nwidth = 32\ndepth = 2\n\
             [objective]\nomega = {omega}\n[train]\nsteps = 10\nbatch = 64\nseed = 3\n"
        )
    };
    for (omega, expected) in [
        (1.0, vec!["flow-matching", "meanflow"]),
        (2.0, vec!["flow-matching", "meanflow", "meanflow-guided"]),
    ] {
        std::fs::write(dir.path().join("c.toml"), config(omega)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mf-train"))
            .args([
                "bench", "--config", "c.toml", "--batch", "24", "--warmup", "1",
            ])
            .args(["--steps", "2", "--json"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let names: Vec<&str> = rows
            .iter()
            .map(|r| r["objective"].as_str().unwrap())
            .collect();
        assert_eq!(names, expected, "ω {omega}");
        for r in &rows {
            assert_eq!(r["batch"], 24);
            assert_eq!(r["steps"], 2);
            let (ms, per_s) = (
                r["ms_per_step"].as_f64().unwrap(),
                r["samples_per_s"].as_f64().unwrap(),
            );
            assert!(ms > 0.0 && (per_s * ms / 1e3 - 24.0).abs() < 1e-6, "{r}");
            // One time per warm-up step (here one), each a real step's time.
            let warmup = r["warmup_ms"].as_array().unwrap();
            assert_eq!(warmup.len(), 1, "{r}");
            assert!(warmup[0].as_f64().unwrap() > 0.0, "{r}");
            // Linux reports the peak resident memory: at least the program itself.
            let rss = r["peak_rss_mib"].as_f64().unwrap();
            assert!(rss > 1.0, "{r}");
            let ratio = r["step_ratio_to_flow_matching"].as_f64().unwrap();
            assert!(
                (ratio - ms / rows[0]["ms_per_step"].as_f64().unwrap()).abs() < 1e-9,
                "{r}"
            );
        }
        assert_eq!(rows[0]["step_ratio_to_flow_matching"], 1.0);
        assert_eq!(rows.last().unwrap()["omega"], omega);
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "bench writes nothing"
    );
}
