//! The refusal check shared by the command-line tests of mf-edge, mf-train and mf-export (each
//! includes this file with `#[path]`): a bad value gets a message naming it and what is accepted, a
//! non-zero exit that is not a signal, no panic or allocation abort, and nothing written.
use std::process::Command;

/// Runs `binary` with `args` in an empty folder of its own and checks that it refused: exit 2
/// (clap refused a value) or 1 (the command returned an error), every piece of `expected` in
/// standard error, and the folder still empty.
pub fn assert_refused(binary: &str, args: &[&str], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary)
        .args(args)
        .current_dir(dir.path())
        .env("RUST_BACKTRACE", "0")
        .env_remove("MF_DATA_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "{args:?} exited with {:?}: {err}",
        out.status
    );
    for needle in expected {
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in: {err}"
        );
    }
    assert!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{args:?}: {err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{args:?} wrote {left:?}");
}
