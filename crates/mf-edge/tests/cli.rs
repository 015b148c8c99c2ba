//! The `mf-edge` command line on the shipped default model: it generates with nothing else on
//! disk, and bad input is a clear error with a non-zero exit and no partial file.
use std::io::Write;
use std::process::{Command, Output, Stdio};

#[path = "../../../tests/support/refusal.rs"]
mod refusal;

/// The shipped default model, by absolute path (the cases run in empty folders).
const SHIPPED_INT8: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/mnist-int8.onnx");

fn mf_edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mf-edge"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn generate_with_the_embedded_model_writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("seven.png");
    let out = mf_edge(&[
        "generate",
        "--class",
        "7",
        "--count",
        "4",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(&png).unwrap();
    assert!(img.width() > 28 && img.height() > 28);
    // Same seed, same file.
    let again = dir.path().join("again.png");
    assert!(
        mf_edge(&[
            "generate",
            "--class",
            "7",
            "--count",
            "4",
            "--out",
            again.to_str().unwrap()
        ])
        .status
        .success()
    );
    assert_eq!(std::fs::read(&png).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn class_all_writes_one_row_per_class() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("grid.png");
    let out = mf_edge(&[
        "generate",
        "--class",
        "all",
        "--count",
        "3",
        "--zoom",
        "1",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(&png).unwrap();
    // 10 rows of 3 MNIST digits (28 px each, whatever the grid's gaps).
    assert!(
        img.height() >= 10 * 28 && img.height() < 12 * 28,
        "{}",
        img.height()
    );
    assert!(
        img.width() >= 3 * 28 && img.width() < 4 * 28,
        "{}",
        img.width()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("30 images"));
}

#[test]
fn out_dir_writes_one_png_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let out = mf_edge(&[
        "generate",
        "--class",
        "2",
        "--count",
        "3",
        "--out-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn class_out_of_range_lists_the_valid_classes() {
    let out = mf_edge(&["generate", "--class", "10"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("0..10") && err.contains("9"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_gpu_provider_this_build_lacks_is_an_error_not_a_cpu_fallback() {
    // Needs the ONNX Runtime library (tools/test sets ORT_DYLIB_PATH); CI always has it.
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        eprintln!("ORT_DYLIB_PATH unset: run through tools/test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("gpu.png");
    for device in ["cuda", "tensorrt"] {
        let out = mf_edge(&[
            "generate",
            "--class",
            "2",
            "--backend",
            "ort",
            "--device",
            device,
            "--out",
            png.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "--device {device} ran");
        let err = stderr(&out);
        assert!(err.contains(&format!("ort-{device} feature")), "{err}");
        assert!(!png.exists());
    }
}

#[test]
fn unwritable_output_is_an_error_without_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("missing-folder").join("x.png");
    let out = mf_edge(&[
        "generate",
        "--class",
        "1",
        "--out",
        target.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot write"), "{}", stderr(&out));
    assert!(!target.exists());
}

#[test]
fn garbled_model_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("bad.onnx");
    std::fs::write(&model, b"this is not a model").unwrap();
    let out = mf_edge(&[
        "generate",
        "--class",
        "1",
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not an ONNX model") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn paint_reads_a_photo_from_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let photo = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
    });
    let mut png = Vec::new();
    photo
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let art = dir.path().join("art.png");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mf-edge"))
        .args([
            "paint",
            "--input",
            "-",
            "--class",
            "3",
            "--strength",
            "0.6",
            "--out",
            art.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&png).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(image::open(&art).is_ok());
}

#[test]
fn undecodable_photo_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("photo.jpg");
    std::fs::write(&bad, b"\xff\xd8 broken").unwrap();
    let art = dir.path().join("art.png");
    let out = mf_edge(&[
        "paint",
        "--input",
        bad.to_str().unwrap(),
        "--class",
        "3",
        "--out",
        art.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot decode image"),
        "{}",
        stderr(&out)
    );
    assert!(!art.exists());
}

#[test]
fn info_shows_the_card_and_ops() {
    let out = mf_edge(&["info"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"precision\": \"int8\"") && text.contains("QuantizeLinear"),
        "{text}"
    );
}

/// Every bad value the CLI takes: a message that names the value and what is accepted, a
/// non-zero exit, no panic or abort, and nothing written. Each case runs in an empty folder
/// of its own, which must stay empty.
#[test]
fn bench_profile_times_every_step_of_the_native_plan() {
    let args = [
        "bench",
        "--model",
        SHIPPED_INT8,
        "--backends",
        "native",
        "--batch",
        "1",
    ];
    let args = [&args[..], &["--iters", "200", "--profile"]].concat();
    let out = mf_edge(&[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = rows[0]["steps"].as_array().expect("step times");
    assert!(steps.len() > 3, "{steps:?}");
    // The mean generation, from the throughput (one image per generation).
    let mean_us = 1e6 / rows[0]["images_per_s"].as_f64().unwrap();
    let mut sum = 0.0;
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(step["index"].as_u64(), Some(i as u64));
        let us = step["mean_us"].as_f64().unwrap();
        assert!(us >= 0.0);
        sum += us;
    }
    // The MLP's plan: its int8 dense layers are named, and the steps, timed inside the same
    // generations, add up to no more than a generation and to most of it (a preemption
    // between two steps counts only in the generation: a quarter is far from any such).
    assert!(
        steps
            .iter()
            .any(|s| s["step"].as_str().unwrap().starts_with("Dense int8"))
    );
    assert!(
        sum > mean_us / 4.0 && sum <= mean_us * 1.001,
        "steps {sum} µs, mean generation {mean_us} µs"
    );
    // The table lists them after the cases.
    let out = mf_edge(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("µs per generation"), "{table}");
    assert!(table.contains("Dense int8"), "{table}");
}

#[test]
fn bad_values_are_named_with_what_is_accepted_and_write_nothing() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["generate", "--class", "7", "--count", "2000000000"],
            &["2000000000", "1..=100000"],
        ),
        (
            &["generate", "--class", "7", "--count", "0"],
            &["'0'", "1..=100000"],
        ),
        (
            &["generate", "--class", "7", "--zoom", "1000000"],
            &["1000000", "1..=64"],
        ),
        (
            &["generate", "--class", "7", "--zoom", "0"],
            &["'0'", "1..=64"],
        ),
        (
            &["generate", "--class", "7", "--threads", "0"],
            &["'0'", "1..=1024"],
        ),
        (
            &["generate", "--class", "7", "--steps", "0"],
            &["'0'", "1..=1000"],
        ),
        (&["generate", "--class", "7", "--steps", "-3"], &["-3"]),
        (&["generate", "--class", "seven"], &["\"seven\"", "0..10"]),
        (
            &["generate", "--class", "all", "--count", "100000"],
            &["1000000 images", "lower --count"],
        ),
        (
            &[
                "generate", "--class", "7", "--count", "100000", "--zoom", "64",
            ],
            &["zoom 64", "lower the count or the zoom"],
        ),
        (
            &["paint", "--input", "p.png", "--zoom", "0"],
            &["'0'", "1..=64"],
        ),
        (
            &[
                "paint",
                "--input",
                "missing.png",
                "--class",
                "3",
                "--out",
                "a.png",
            ],
            &["missing.png"],
        ),
        (
            &[
                "paint",
                "--input",
                "p.png",
                "--strength",
                "1.5",
                "--out",
                "a.png",
            ],
            &["1.5", "(0, 1]"],
        ),
        (
            &[
                "paint",
                "--input",
                "p.png",
                "--strength",
                "NaN",
                "--out",
                "a.png",
            ],
            &["NaN", "(0, 1]"],
        ),
        (
            &[
                "paint",
                "--input",
                "p.png",
                "--strength",
                "0",
                "--out",
                "a.png",
            ],
            &["'0'", "(0, 1]"],
        ),
        (&["bench", "--batch", "0"], &["'0'", "1..=4096"]),
        (&["bench", "--batch", "1,0"], &["'0'", "1..=4096"]),
        (&["bench", "--iters", "0"], &["'0'", "1..=100000"]),
        (
            &["info", "--model", "/dev/zero"],
            &["model /dev/zero is larger than the 2147483648 bytes"],
        ),
        (
            &[
                "paint",
                "--input",
                "/dev/zero",
                "--class",
                "3",
                "--out",
                "a.png",
            ],
            &["/dev/zero is larger than the 268435456 bytes"],
        ),
        (
            &["paint", "--stream", "--class", "3", "--size", "12"],
            &["\"12\" is not a size", "WxH"],
        ),
        (
            &[
                "paint",
                "--stream",
                "--class",
                "3",
                "--size",
                "16384x16384",
                "--pix-fmt",
                "rgb24",
            ],
            &["16384x16384 frame of 3 channels", "at most 268435456"],
        ),
        (
            &["paint", "--stream", "--class", "3", "--pix-fmt", "rgb24"],
            &["--size"],
        ),
        (&["bench"], &["models", "--model"]),
        (&["eval"], &["models folder is not at", "--model"]),
        (
            &["eval", "--model", SHIPPED_INT8],
            &["reference classifier is not at", "--classifier"],
        ),
    ];
    for (args, expected) in cases {
        refusal::assert_refused(env!("CARGO_BIN_EXE_mf-edge"), args, expected);
    }
}
