//! ImageNet-scale class lists: a folder dataset of 300 classes named by a `classes.txt` trains,
//! exports with its names and folders in the model card, and the runtime finds a class by index,
//! name or folder, answering a wrong name with the nearest few.
mod common;

use std::path::Path;

use mf_edge::backends::{self, BackendKind, BackendOptions};
use mf_edge::model::Model;
use mf_edge::sampler::generate;
use mf_export::{Target, export};

const CLASSES: usize = 300;

/// `root/n000000NN/{a,b}.png` (8×8 grey, a pattern per class) and a classes.txt naming each.
fn write_folder_dataset(root: &Path) {
    let mut listing = String::new();
    for class in 0..CLASSES {
        let folder = format!("n{class:08}");
        let name = match class {
            207 => "golden_retriever".to_string(),
            208 => "Labrador_retriever".to_string(),
            c => format!("breed_{c}"),
        };
        listing.push_str(&format!("{folder} {name}\n"));
        std::fs::create_dir(root.join(&folder)).unwrap();
        for (file, shift) in [("a.png", 0u32), ("b.png", 1)] {
            let img = image::GrayImage::from_fn(12, 8, |x, y| {
                image::Luma([((x * 7 + y * 3 + shift + class as u32) % 256) as u8])
            });
            img.save(root.join(&folder).join(file)).unwrap();
        }
    }
    std::fs::write(root.join("classes.txt"), listing).unwrap();
}

#[test]
fn three_hundred_named_classes_train_export_and_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_folder_dataset(&data);
    let config = format!(
        r#"
[data]
dataset = "folder"
root = "{}"
image_size = 8
channels = 1
[model]
arch = "mlp"
width = 32
depth = 2
time_dim = 8
class_dim = 8
[optim]
ema_decay = 0.0
[train]
steps = 4
batch = 32
seed = 3
"#,
        data.display()
    );
    let run = dir.path().join("run");
    let mse = common::train(&config, &run);
    assert!(mse.is_finite());
    let onnx = dir.path().join("m.onnx");
    export(&common::options(&run, Target::Fp32, &onnx)).unwrap();

    let model = Model::open(&onnx).unwrap();
    let card = &model.card;
    assert_eq!(card.classes(), CLASSES);
    assert_eq!(card.null_class, CLASSES);
    assert_eq!(card.class_names[207], "golden_retriever");
    assert_eq!(card.class_folders[207], "n00000207");
    for asked in ["207", "golden_retriever", "Golden Retriever", "n00000207"] {
        assert_eq!(card.class_id(asked), Ok(207), "{asked}");
    }
    let err = card.class_id("golden_retreiver").unwrap_err();
    assert!(err.contains("did you mean golden_retriever"), "{err}");
    assert!(
        !err.contains("breed_17,"),
        "a miss lists a few names, not 300: {err}"
    );
    assert!(card.class_id("300").is_err());

    // The class reaches the network: the last classes (past the old 255 limit) give images of
    // their own on the same noise.
    let mut backend =
        backends::open(BackendKind::Native, &model, &BackendOptions::default()).unwrap();
    let mut draw = |class| generate(backend.as_mut(), card, Some(class), 2, 5, 1).unwrap();
    let (a, b) = (draw(207), draw(299));
    assert_eq!(a.len(), 2 * 64);
    assert!(a.iter().all(|v| v.is_finite()));
    assert_ne!(a, b);
}
