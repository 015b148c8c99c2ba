//! Model cards cannot drift from their files: every `models/NAME.md` must be what its template
//! `models/cards/NAME.md` renders to from the shipped files and the measured JSON beside them
//! (`tools/render-cards` writes them; `tools/measure-models` re-measures).
use std::path::Path;

#[test]
fn every_model_card_agrees_with_its_files() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut checked = 0;
    for entry in std::fs::read_dir(models.join("cards")).unwrap() {
        let template = entry.unwrap().path();
        let card = models.join(template.file_name().unwrap());
        if let Err(e) = mf_edge::cards::check(&template, &card) {
            panic!("{e:#}");
        }
        checked += 1;
    }
    assert!(checked >= 3, "{checked} cards");
}

#[test]
fn a_card_edited_by_hand_fails_the_check() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let card = dir.path().join("mnist.md");
    let text = std::fs::read_to_string(&card).unwrap();
    // A size typed by hand: the file's true size plus one.
    let size = std::fs::metadata(models.join("mnist-int8.onnx"))
        .unwrap()
        .len();
    let shown = mf_edge_size(size);
    assert!(text.contains(&shown), "the card shows {shown}");
    std::fs::write(&card, text.replace(&shown, &mf_edge_size(size + 1))).unwrap();
    let err = mf_edge::cards::check(&models.join("cards/mnist.md"), &card).unwrap_err();
    assert!(
        format!("{err:#}").contains("disagrees with its files"),
        "{err:#}"
    );
}

/// A size as cards print it: thousands separators, bytes.
fn mf_edge_size(bytes: u64) -> String {
    let digits = bytes.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out} B")
}
