//! `mf-train couple` and `data.couplings`: a trained run's couplings pair each image with the
//! very noise it was drawn from, and a student trains on them.
use std::path::Path;
use std::process::{Command, Output};

use mf_core::noise::Noise;
use mf_train::checkpoint;
use mf_train::datasets::coupled;
use mf_train::sample::sample_from;

/// Two classes of 8×8 grey images in class folders: a bright square in one corner or another,
/// at a few brightnesses.
fn image_folder(root: &Path) {
    for (class, corner) in [("left", 0u32), ("right", 4)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..4u32 {
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                let inside = (corner..corner + 4).contains(&x) && y < 4;
                image::Luma([if inside { 100 + 40 * k as u8 } else { 0 }])
            });
            img.save(dir.join(format!("{k}.png"))).unwrap();
        }
    }
}

fn config(extra_data: &str, steps: u32) -> String {
    format!(
        "[data]\ndataset = \"folder\"\nroot = \"imgs\"\nimage_size = 8\nchannels = 1\n{extra_data}\n\
         [model]\narch = \"mlp\"\nwidth = 64\ndepth = 2\n\
         [objective]\nomega = 1.5\n\
         [train]\nsteps = {steps}\nbatch = 16\nseed = 3\n"
    )
}

/// Runs `mf-train` with `args` in `dir`.
fn mf_train(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mf-train"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Runs `mf-train` expecting success.
fn run(dir: &Path, args: &[&str]) -> Output {
    let out = mf_train(dir, args);
    assert!(
        out.status.success(),
        "mf-train {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `mf-train` expecting a refusal (exit code 1); returns its error output.
fn refused(dir: &Path, args: &[&str]) -> String {
    let out = mf_train(dir, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "mf-train {args:?}: {err}");
    err
}

/// A folder holding the image set (`imgs/`) and a teacher trained on it for `steps` steps
/// (`teacher/`).
fn teacher_beside_its_images(steps: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    image_folder(&dir.path().join("imgs"));
    std::fs::write(dir.path().join("teacher.toml"), config("", steps)).unwrap();
    run(
        dir.path(),
        &["fit", "--config", "teacher.toml", "--out", "teacher"],
    );
    dir
}

#[test]
fn couplings_pair_each_image_with_its_noise_and_train_a_student() {
    let dir = teacher_beside_its_images(30);
    // 23 draws in calls of 5: the last call is short, and every draw keeps its own seed.
    let couple = |keep_within: &str, out: &str| {
        let args = [
            "couple",
            "--run",
            "teacher",
            "--count",
            "23",
            "--steps",
            "3",
            "--seed",
            "40",
            "--batch",
            "5",
            "--keep-within",
            keep_within,
            "--out",
            out,
        ];
        run(dir.path(), &args);
        coupled::open(&dir.path().join(out), "folder").unwrap()
    };
    let pairs = couple("1e6", "pairs.safetensors");
    assert_eq!(pairs.images.len(), 23);
    assert_eq!(pairs.draws, (0..23).collect::<Vec<u64>>());
    assert_eq!(pairs.images.class_names, ["left", "right"]);
    assert_eq!(pairs.provenance.steps, 3);
    assert_eq!(pairs.images.labels[..4], [0, 1, 0, 1]);

    // Each image is what the teacher draws, in three steps, from the noise the file names.
    let device = burn::prelude::Device::flex();
    let (_, teacher) = checkpoint::load_ema(&dir.path().join("teacher"), &device).unwrap();
    let dims = 64;
    let redraw = |d: usize, seed: u64| -> Vec<f32> {
        let mut noise = vec![0f32; dims];
        Noise::new(seed).fill(&mut noise);
        let label = pairs.images.labels[d] as i64;
        sample_from(&teacher, noise, &[label], 3, &device)
    };
    let distance = |i: usize, x: &[f32]| -> f32 {
        pairs
            .images
            .image(i)
            .zip(x)
            .map(|(p, &v)| (p - v.clamp(-1.0, 1.0)).abs())
            .fold(0.0, f32::max)
    };
    for i in [0, 4, 5, 22] {
        let own = distance(i, &redraw(i, 40 + i as u64));
        assert!(own <= 1.0 / 127.0, "pair {i}: {own} from its own noise");
        let other = distance(i, &redraw(i, 40 + i as u64 + 1));
        assert!(
            other > 0.05,
            "pair {i}: the next seed's is as close ({other})"
        );
    }
    // Kept within the median draw's largest value: exactly the draws that stay within it.
    let largest: Vec<f32> = (0..23)
        .map(|d| {
            redraw(d, 40 + d as u64)
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()))
        })
        .collect();
    let mut sorted = largest.clone();
    sorted.sort_by(f32::total_cmp);
    let bound = sorted[11];
    assert!(bound >= 1.0, "the median draw stays in [-1, 1]: {sorted:?}");
    let within = couple(&bound.to_string(), "within.safetensors");
    let in_bound: Vec<u64> = (0..23u64)
        .filter(|&d| largest[d as usize] <= bound)
        .collect();
    assert!(in_bound.len() < 23, "{sorted:?}");
    assert_eq!(within.draws, in_bound);
    assert_eq!(within.provenance.draws_made, 23);
    assert_eq!(within.provenance.kept, in_bound.len() as u64);
    for (i, &d) in within.draws.iter().enumerate() {
        assert_eq!(within.images.labels[i], pairs.images.labels[d as usize]);
    }

    // A student trains on the pairs; a config whose dataset is not the teacher's is refused.
    let couplings = "couplings = \"pairs.safetensors\"";
    std::fs::write(dir.path().join("student.toml"), config(couplings, 4)).unwrap();
    run(
        dir.path(),
        &["fit", "--config", "student.toml", "--out", "student"],
    );
    let state = checkpoint::read_state(&dir.path().join("student")).unwrap();
    assert_eq!(state.step, 4);
    // The student's run records how its pairs were made, teacher included (its model card's
    // `training.teacher`).
    assert_eq!(state.teacher.as_ref(), Some(&pairs.provenance));
    let teacher = checkpoint::read_state(&dir.path().join("teacher")).unwrap();
    assert_eq!(
        (
            pairs.provenance.teacher_step,
            pairs.provenance.teacher_seconds
        ),
        (30, teacher.elapsed_s)
    );
    assert_eq!(pairs.provenance.kept, 23);
    assert!(pairs.provenance.seconds > 0.0);
    let wrong = config(couplings, 4).replace("\"folder\"", "\"mnist\"");
    std::fs::write(dir.path().join("wrong.toml"), wrong).unwrap();
    let err = refused(
        dir.path(),
        &["fit", "--config", "wrong.toml", "--out", "wrong"],
    );
    assert!(err.contains("data.dataset"), "{err}");
}

/// With `--guidance ω` each step follows `u(∅) + ω·(u(c) − u(∅))`: in one step the image is
/// `x(∅) + ω·(x(c) − x(∅))` of the two one-step draws, and the file records the scale.
#[test]
fn guided_couplings_follow_the_guided_velocity_and_record_the_scale() {
    // A teacher trained long enough to tell the two corners apart by class.
    let dir = teacher_beside_its_images(300);
    let couple = |guidance: &str| {
        let args = [
            "couple",
            "--run",
            "teacher",
            "--count",
            "6",
            "--steps",
            "1",
            "--seed",
            "40",
            &format!("--guidance={guidance}"),
            "--keep-within",
            "1e6",
            "--out",
            "guided.safetensors",
        ];
        mf_train(dir.path(), &args)
    };
    let out = couple("2.5");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pairs = coupled::open(&dir.path().join("guided.safetensors"), "folder").unwrap();
    assert_eq!(pairs.provenance.guidance, 2.5);
    let device = burn::prelude::Device::flex();
    let (_, teacher) = checkpoint::load_ema(&dir.path().join("teacher"), &device).unwrap();
    let null = teacher.spec.null_class() as i64;
    let mut apart_from_unguided = 0f32;
    for i in 0..6 {
        let mut noise = vec![0f32; 64];
        Noise::new(40 + i as u64).fill(&mut noise);
        let one_step = |label: i64| sample_from(&teacher, noise.clone(), &[label], 1, &device);
        let (class, none) = (one_step(pairs.images.labels[i] as i64), one_step(null));
        for ((p, c), n) in pairs.images.image(i).zip(&class).zip(&none) {
            let guided = (n + 2.5 * (c - n)).clamp(-1.0, 1.0);
            assert!(
                (p - guided).abs() <= 1.0 / 127.0,
                "pair {i}: {p} against {guided}"
            );
            apart_from_unguided = apart_from_unguided.max((p - c.clamp(-1.0, 1.0)).abs());
        }
    }
    assert!(
        apart_from_unguided > 0.05,
        "guidance changed nothing: {apart_from_unguided}"
    );
    for bad in ["-1", "nan", "inf"] {
        let out = couple(bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--guidance {bad}: {err}");
        assert!(err.contains("guidance"), "--guidance {bad}: {err}");
    }
}

/// Every f32 tensor of a safetensors file, by name.
fn tensors(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, values)
        })
        .collect()
}

/// The largest difference between two files' tensors of the same names.
fn largest_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .flat_map(|(name, x)| x.iter().zip(&b[name]).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn a_student_starts_from_its_teachers_weights() {
    let dir = teacher_beside_its_images(30);
    // One step at a learning rate that moves nothing, from another seed than the teacher's:
    // the student's weights are the teacher's EMA, a fresh run's are not.
    let still = |init: &str| {
        config("", 1)
            .replace("[train]", &format!("[optim]\nlr = 1e-12\n[train]\n{init}"))
            .replace("seed = 3", "seed = 4")
    };
    std::fs::write(
        dir.path().join("student.toml"),
        still("init_from = \"teacher\"\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("fresh.toml"), still("")).unwrap();
    run(
        dir.path(),
        &["fit", "--config", "student.toml", "--out", "student"],
    );
    run(
        dir.path(),
        &["fit", "--config", "fresh.toml", "--out", "fresh"],
    );
    let teacher = dir.path().join("teacher/checkpoint/ema.safetensors");
    let student = dir.path().join("student/checkpoint/model.safetensors");
    let fresh = dir.path().join("fresh/checkpoint/model.safetensors");
    assert!(largest_difference(&teacher, &student) < 1e-6);
    assert!(largest_difference(&teacher, &fresh) > 1e-2);
    // The student records the run it started from, as that run stood; a fresh run none.
    let start = checkpoint::read_state(&dir.path().join("student"))
        .unwrap()
        .start
        .expect("the student's start");
    let source = checkpoint::read_state(&dir.path().join("teacher")).unwrap();
    assert_eq!(start.run, "teacher");
    assert_eq!(start.config_hash, source.config_hash);
    assert_eq!(start.steps, source.step);
    assert_eq!(start.seconds, source.elapsed_s);
    assert!(start.steps > 0 && start.seconds > 0.0);
    let fresh_state = checkpoint::read_state(&dir.path().join("fresh")).unwrap();
    assert!(fresh_state.start.is_none());

    // The same network under another objective starts from the teacher too: a flow-matching
    // run as the teacher of a MeanFlow student, or here the other way round.
    let flow = still("init_from = \"teacher\"\n")
        .replace("omega = 1.5", "kind = \"flow-matching\"\nomega = 1.0");
    std::fs::write(dir.path().join("flow.toml"), flow).unwrap();
    run(
        dir.path(),
        &["fit", "--config", "flow.toml", "--out", "flow"],
    );
    let flow = dir.path().join("flow/checkpoint/model.safetensors");
    assert!(largest_difference(&teacher, &flow) < 1e-6);

    // Another network is refused by name.
    let wider = still("init_from = \"teacher\"\n").replace("width = 64", "width = 32");
    std::fs::write(dir.path().join("wider.toml"), wider).unwrap();
    let err = refused(
        dir.path(),
        &["fit", "--config", "wider.toml", "--out", "wider"],
    );
    assert!(err.contains("train.init_from"), "{err}");
}
