//! The stricter `mf-edge eval` on real MNIST: by default it scores with the shipped CNN
//! classifier and reports precision/recall, which must tell the shipped one-step model from
//! samples that are not digits at all. (3,000 reference images: with a few hundred, 3-NN balls
//! in 128 features are wide enough to take in noise, `tools/probe-precision-recall`.)
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// An IDX folder of `n` images of uniform noise, labelled 0..9 in turn (what `--samples` reads).
fn noise_samples(dir: &Path, n: usize) -> PathBuf {
    let folder = dir.join("noise");
    std::fs::create_dir_all(&folder).unwrap();
    let mut images = vec![0, 0, 8, 3];
    for v in [n as u32, 28, 28] {
        images.extend(v.to_be_bytes());
    }
    let mut state = 0x2545_f491_u32;
    images.extend((0..n * 784).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 24) as u8
    }));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    labels.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(folder.join("images-idx3-ubyte"), images).unwrap();
    std::fs::write(folder.join("labels-idx1-ubyte"), labels).unwrap();
    folder
}

#[test]
fn the_default_eval_uses_the_cnn_and_its_precision_tells_digits_from_noise() {
    let dir = tempfile::tempdir().unwrap();
    let noise = noise_samples(dir.path(), 1000);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mf-edge"));
    cmd.current_dir(ROOT).args([
        "eval",
        "--model",
        "models/mnist-int8.onnx",
        "--per-class",
        "300",
        "--steps",
        "1",
        "--samples",
        noise.to_str().unwrap(),
        "--json",
    ]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["classifier"], "mnist-classifier-cnn.onnx");
    assert_eq!(report["classifier_arch"], "cnn");
    assert_eq!(report["per_class"], 300);
    let real = |key: &str| report[key].as_f64().unwrap();
    assert!(real("real_accuracy") > 0.95, "{report:#}");
    assert!(
        real("real_knn_precision") > 0.5 && real("real_knn_recall") > 0.5,
        "{report:#}"
    );
    let rows = report["rows"].as_array().unwrap();
    let row = |backend: &str| rows.iter().find(|r| r["backend"] == backend).unwrap();
    let (noise, model) = (row("samples"), row("native"));
    let f = |r: &serde_json::Value, key: &str| r[key].as_f64().unwrap();
    // Noise: no digit, off the manifold, far away.
    assert!(f(noise, "accuracy") < 0.3, "{noise:#}");
    assert!(f(noise, "knn_precision") < 0.05, "{noise:#}");
    // The shipped model: digits of the asked class, mostly on the manifold.
    assert!(f(model, "accuracy") > 0.9, "{model:#}");
    assert!(f(model, "knn_precision") > 0.3, "{model:#}");
    assert!(
        f(model, "floor_ratio") * 3.0 < f(noise, "floor_ratio"),
        "{rows:#?}"
    );
}
