//! The C API from C: `crates/mf-edge-capi/tests/c/api_test.c` is compiled with the system's C
//! compiler against the static and the shared library, run, and its pixels compared with what
//! this crate's CLI writes for the same seed (`generate --out-dir --zoom 1`, `paint --stream`).
//!
//! Cross runs (tools/cross-test) set `MF_TEST_CC` to the cross compiler and `MF_TEST_RUNNER`
//! to the emulator, which then runs the C program and the CLI too.
use std::path::{Path, PathBuf};
use std::process::Command;

const CAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../mf-edge-capi");
const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/mnist-int8.onnx");

/// A command, run under `MF_TEST_RUNNER` (e.g. qemu-aarch64) when set.
fn command(program: &Path) -> Command {
    match std::env::var("MF_TEST_RUNNER")
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        Some(runner) => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap());
            cmd.args(words).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Runs a command and returns its standard output, failing the test with its stderr.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The C API library of `kind` ("a" or "so") that cargo built beside this test.
fn library(kind: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&deps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("libmf_edge_capi") && name.ends_with(&format!(".{kind}"))
        })
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    found
        .pop()
        .unwrap_or_else(|| panic!("no libmf_edge_capi*.{kind} in {}", deps.display()))
}

/// Compiles the C test program against the library of `kind`.
fn compile(kind: &str, out: &Path) {
    compile_source(&Path::new(CAPI).join("tests/c/api_test.c"), kind, out);
}

/// Compiles one C file against the library of `kind` ("a" static, "so" shared).
fn compile_source(source: &Path, kind: &str, out: &Path) {
    let cc = std::env::var("MF_TEST_CC").unwrap_or_else(|_| "cc".into());
    let lib = library(kind);
    let mut cmd = Command::new(&cc);
    cmd.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg("-I")
        .arg(Path::new(CAPI).join("include"))
        .arg(source)
        .arg("-o")
        .arg(out);
    if kind == "so" {
        let dir = lib.parent().unwrap();
        cmd.arg(format!("-L{}", dir.display()))
            .arg(format!("-Wl,-rpath,{}", dir.display()))
            .arg("-lmf_edge_capi");
    } else {
        cmd.arg(&lib);
    }
    cmd.args(["-lpthread", "-ldl", "-lm"]);
    run(&mut cmd);
}

/// The CLI's images for class 7, seed 42, 4 images at zoom 1, as bytes of the first channel
/// inside each image's one-pixel border.
fn cli_generated(dir: &Path) -> Vec<u8> {
    let out = dir.join("cli");
    run(command(Path::new(env!("CARGO_BIN_EXE_mf-edge")))
        .args([
            "generate", "--class", "7", "--seed", "42", "--count", "4", "--zoom", "1",
        ])
        .arg("--out-dir")
        .arg(&out));
    let mut pixels = Vec::new();
    for i in 0..4 {
        let png = image::open(out.join(format!("{i:04}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(png.dimensions(), (30, 30));
        for y in 1..29 {
            for x in 1..29 {
                let p = png.get_pixel(x, y).0;
                assert!(p[0] == p[1] && p[1] == p[2], "a grey model draws grey");
                pixels.push(p[0]);
            }
        }
    }
    pixels
}

/// The C program's test card, painted by the CLI's stream mode with the same settings.
fn cli_painted() -> Vec<u8> {
    let (w, h) = (64u32, 48u32);
    let card: Vec<u8> = (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| {
                [
                    (4 * x) as u8,
                    (5 * y) as u8,
                    if x > 28 && x < 36 { 255 } else { 0 },
                ]
            })
        })
        .collect();
    let mut child = command(Path::new(env!("CARGO_BIN_EXE_mf-edge")))
        .args(["paint", "--stream", "--size", "64x48", "--pix-fmt", "rgb24"])
        .args(["--class", "3", "--strength", "0.6", "--seed", "7"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&card).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn the_c_program_draws_the_clis_pixels_with_both_libraries() {
    let dir = tempfile::tempdir().unwrap();
    let expected_generated = cli_generated(dir.path());
    let expected_painted = cli_painted();
    assert_eq!(expected_painted.len(), 64 * 48 * 3);
    for kind in ["a", "so"] {
        let program = dir.path().join(format!("api_test_{kind}"));
        compile(kind, &program);
        let (generated, painted) = (dir.path().join("gen.raw"), dir.path().join("paint.raw"));
        let stdout = run(command(&program).arg(MODEL).arg(&generated).arg(&painted));
        let stdout = String::from_utf8_lossy(&stdout);
        assert!(stdout.contains("all C API checks passed"), "{stdout}");
        assert_eq!(
            std::fs::read(&generated).unwrap(),
            expected_generated,
            "lib{kind}: the C API's generated pixels differ from the CLI's"
        );
        assert_eq!(
            std::fs::read(&painted).unwrap(),
            expected_painted,
            "lib{kind}: the C API's painted pixels differ from the CLI's stream"
        );
    }
}

#[test]
fn the_readme_example_compiles_and_runs() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("```c\n").expect("README has a C example") + 5;
    let end = start + readme[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (source, program) = (dir.path().join("app.c"), dir.path().join("app"));
    std::fs::write(&source, &readme[start..end]).unwrap();
    compile_source(&source, "so", &program);
    let stdout = String::from_utf8(run(&mut command(&program))).unwrap();
    assert_eq!(stdout, "16 sevens and a painted 3 of 28x28 pixels\n");
}
