//! The firmware, run for real: built for thumbv7em-none-eabihf with a compact model, started
//! under qemu-system-arm (MPS2 AN500, a Cortex-M7), its pixels compared bit for bit with what
//! mf-edge's native int8 engine generates from the same model, class and seed; and its screen
//! rendered on the host through the same embedded-graphics code into a PNG to look at.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use embedded_graphics::prelude::*;
use mf_edge::backends::{self, BackendKind, BackendOptions};
use mf_edge::model::Model;
use mf_edge::sampler::generate;
use mf_export::{Target, export};
use mf_firmware::framebuffer::Screen;

const FIRMWARE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../firmware");

/// One image the firmware reported.
struct Report {
    class: usize,
    seed: u64,
    screen: u32,
    pixels: Vec<u8>,
}

fn build_firmware(model: &Path) -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| PathBuf::from(d).join("firmware"))
        .unwrap_or_else(|| Path::new(FIRMWARE).join("target"));
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target-dir"])
        .arg(&target_dir)
        .current_dir(FIRMWARE)
        .env("MF_FIRMWARE_MODEL", model)
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the firmware does not build");
    target_dir.join("thumbv7em-none-eabihf/release/mf-firmware")
}

fn run_in_qemu(elf: &Path) -> (String, Vec<Report>) {
    let out = Command::new("timeout")
        .args([
            "300",
            "qemu-system-arm",
            "-M",
            "mps2-an500",
            "-cpu",
            "cortex-m7",
            "-nographic",
        ])
        .args([
            "-semihosting-config",
            "enable=on,target=native",
            "-icount",
            "shift=0",
            "-kernel",
        ])
        .arg(elf)
        .output()
        .expect("qemu-system-arm runs (tools/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the firmware failed under qemu:\n{text}"
    );
    let field = |line: &str, key: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            .to_string()
    };
    let reports = text
        .lines()
        .filter(|l| l.starts_with("image "))
        .map(|l| {
            let hex = field(l, "pixels=");
            Report {
                class: field(l, "class=").parse().unwrap(),
                seed: field(l, "seed=").parse().unwrap(),
                screen: u32::from_str_radix(&field(l, "screen="), 16).unwrap(),
                pixels: (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                    .collect(),
            }
        })
        .collect();
    (text, reports)
}

#[test]
fn firmware_pixels_equal_the_native_int8_engine_bit_for_bit() {
    let f = common::fixture();
    let dir = tempfile::tempdir().unwrap();
    let compact = dir.path().join("model.mfc");
    export(&common::options(&f.run, Target::Compact, &compact)).unwrap();
    let elf = build_firmware(&compact);
    let (log, reports) = run_in_qemu(&elf);
    assert_eq!(reports.len(), 10, "one image per class:\n{log}");

    // The same model as int8 ONNX (same calibration), on the host's fastest kernels.
    let model = Model::open(&f.int8).unwrap();
    let mut native =
        backends::open(BackendKind::Native, &model, &BackendOptions::default()).unwrap();
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for r in &reports {
        let x = generate(native.as_mut(), &model.card, Some(r.class), 1, r.seed, 1).unwrap();
        let want: Vec<u8> = x.iter().map(|&v| mf_core::schedule::to_pixel(v)).collect();
        assert_eq!(
            r.pixels, want,
            "class {} seed {}: the firmware's pixels differ from mf-edge's",
            r.class, r.seed
        );

        // The host renders the same screen through the same drawing code.
        let mut screen = Screen::new();
        mf_firmware::screen::draw(&mut screen, &r.pixels, 1, 28, r.class, r.seed).unwrap();
        assert_eq!(
            screen.checksum(),
            r.screen,
            "class {}: the screen differs",
            r.class
        );
        if r.class == 7 {
            save_png(&screen, &artifacts.join("firmware-screen-class7.png"));
        }
    }
    println!(
        "screen of class 7 in {}",
        artifacts.join("firmware-screen-class7.png").display()
    );
}

fn save_png(screen: &Screen, path: &Path) {
    let size = screen.size();
    let img = image::RgbImage::from_fn(size.width, size.height, |x, y| {
        let c = screen.pixel(x as usize, y as usize);
        image::Rgb([c.r() << 3, c.g() << 2, c.b() << 3])
    });
    img.save(path).unwrap();
}
