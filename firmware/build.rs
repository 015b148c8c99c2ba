//! Puts memory.x on the linker path and embeds the compact model named by MF_FIRMWARE_MODEL
//! (default: ../models/mnist-tiny.mfc) when building for the microcontroller; the host build
//! (the library, which tests render with) needs no model.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("OUT_DIR is writable");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=MF_FIRMWARE_MODEL");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let model =
        std::env::var("MF_FIRMWARE_MODEL").unwrap_or_else(|_| "../models/mnist-tiny.mfc".into());
    let Ok(model) = std::fs::canonicalize(&model) else {
        eprintln!(
            "error: compact model {model} not found: set MF_FIRMWARE_MODEL to a file written by \
             `mf-export --precision compact` (models/mnist-tiny.mfc is the shipped one)"
        );
        std::process::exit(1);
    };
    std::fs::copy(&model, out.join("model.mfc")).expect("the model is readable");
    println!("cargo:rerun-if-changed={}", model.display());
}
