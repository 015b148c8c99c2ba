//! The shipped header `include/mf_edge.h` is what cbindgen makes of `src/lib.rs` today: a
//! change to the API that is not regenerated fails here. `MF_BLESS=1` rewrites the header.
use std::path::Path;

#[test]
fn the_header_matches_the_api() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen reads src/lib.rs")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = dir.join("include/mf_edge.h");
    if std::env::var_os("MF_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(generated.contains("mfe_generate") && generated.contains("MFE_STATUS_OK"));
    assert_eq!(
        shipped, generated,
        "include/mf_edge.h is stale: rerun with MF_BLESS=1"
    );
}
