//! Writes onto a full disk: a PNG, an ONNX export and a training checkpoint written into a
//! small tmpfs fail with an error, and leave neither a partial file nor a temp file; what was
//! there before stays as it was. Mounting needs root, as `tools/test` and CI run.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use mf_export::{Target, export};
use mf_train::burn::prelude::Device;
use mf_train::checkpoint;

/// A tmpfs of a given size, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: usize) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("the mount command");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {}: this test needs root (tools/test and CI run as root)",
            dir.path().display()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every entry below the mount point, as paths relative to it.
    fn entries(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path.clone());
                }
                found.push(path.strip_prefix(self.path()).unwrap().to_path_buf());
            }
        }
        found.sort();
        found
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A PNG that compresses badly: noise, about 190 KB.
fn noisy_image() -> image::RgbImage {
    let mut state = 1u32;
    image::RgbImage::from_fn(256, 256, |_, _| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let [a, b, c, _] = state.to_le_bytes();
        image::Rgb([a, b, c])
    })
}

#[test]
fn a_png_that_does_not_fit_leaves_the_old_file_and_no_temp_file() {
    let disk = Tmpfs::mount(64 * 1024);
    let png = disk.path().join("art.png");
    std::fs::write(&png, b"the previous picture").unwrap();
    let err = mf_core::images::save_png(&noisy_image(), &png).unwrap_err();
    assert!(format!("{err:#}").contains("art.png"), "{err:#}");
    assert_eq!(std::fs::read(&png).unwrap(), b"the previous picture");
    assert_eq!(disk.entries(), [PathBuf::from("art.png")]);
}

#[test]
fn an_export_that_does_not_fit_leaves_nothing() {
    let fixture = common::fixture();
    let size = std::fs::metadata(&fixture.fp32).unwrap().len() as usize;
    let disk = Tmpfs::mount(size / 2);
    let out = disk.path().join("model.onnx");
    let err = export(&common::options(&fixture.run, Target::Fp32, &out)).unwrap_err();
    assert!(format!("{err:#}").contains("model.onnx"), "{err:#}");
    assert!(disk.entries().is_empty(), "{:?}", disk.entries());
}

#[test]
fn a_checkpoint_that_does_not_fit_keeps_the_previous_one_whole() {
    let fixture = common::fixture();
    let device = Device::flex();
    let loaded = checkpoint::load(&fixture.run, &device).unwrap();
    let save = |run: &Path| {
        checkpoint::save(
            run,
            &loaded.model,
            &loaded.ema,
            &loaded.optimizer,
            &loaded.state,
        )
    };
    // Room for one checkpoint and a half: the first save fits, the second runs out of space
    // while writing checkpoint.tmp/ beside the first.
    let scratch = tempfile::tempdir().unwrap();
    save(scratch.path()).unwrap();
    let one: u64 = std::fs::read_dir(checkpoint::dir(scratch.path()))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let disk = Tmpfs::mount(one as usize * 3 / 2);
    let run = disk.path().join("run");
    std::fs::create_dir(&run).unwrap();
    save(&run).unwrap();
    let before = disk.entries();
    let files_before: Vec<Vec<u8>> = before
        .iter()
        .filter(|p| disk.path().join(p).is_file())
        .map(|p| std::fs::read(disk.path().join(p)).unwrap())
        .collect();
    let err = save(&run).unwrap_err();
    assert!(format!("{err:#}").contains("checkpoint"), "{err:#}");
    assert_eq!(disk.entries(), before, "no checkpoint.tmp left behind");
    let files_after: Vec<Vec<u8>> = before
        .iter()
        .filter(|p| disk.path().join(p).is_file())
        .map(|p| std::fs::read(disk.path().join(p)).unwrap())
        .collect();
    assert!(
        files_before == files_after,
        "the previous checkpoint changed"
    );
    // And it still loads.
    checkpoint::load(&run, &device).unwrap();
}
