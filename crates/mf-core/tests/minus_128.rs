//! The shipped compact model with one weight set to −128 (which QDQ files from other
//! quantizers hold and mf-export never writes) gives the same values on every int8 kernel
//! family this CPU has as on the scalar reference, bit for bit. `tools/cross-test` runs this
//! under qemu-aarch64 on three CPU models with `MF_EXPECT_DIGEST` set to the x86 digest, so
//! the pixels are the same on x86 and on every ARM family.
use mf_core::compact::{CompactModel, Scratch, fnv1a};
use mf_kernels::reference::{Output, QuantizedLayer};
use mf_kernels::{Input, Isa, PackedI8};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/mnist-tiny.mfc");

/// The shipped model with its first layer's largest weight (a +127) set to −128 and the
/// checksum redone.
fn with_minus_128() -> Vec<u8> {
    let mut bytes = std::fs::read(SHIPPED).expect("models/mnist-tiny.mfc is shipped");
    let at = {
        let model = CompactModel::parse(&bytes).expect("the shipped model parses");
        let first = model.layers().next().unwrap().unwrap();
        let (i, _) = first
            .weights
            .iter()
            .enumerate()
            .max_by_key(|&(_, &w)| w)
            .unwrap();
        first.weights.as_ptr() as usize - bytes.as_ptr() as usize + i
    };
    bytes[at] = (-128i8) as u8;
    let body = bytes.len() - 4;
    let sum = fnv1a(&bytes[..body]);
    bytes[body..].copy_from_slice(&sum.to_le_bytes());
    bytes
}

/// One image per class from seeds 1000 + class, with each layer computed by `dense`.
fn images<F>(model: &CompactModel<'_>, mut dense: F) -> Vec<f32>
where
    F: FnMut(&QuantizedLayer<'_>, &[u8], &mut [f32]),
{
    let mut scratch = Scratch::new(model.max_width());
    let mut ws = scratch.workspace();
    let dims = model.dims();
    let mut out = vec![0f32; model.classes * dims];
    for (class, image) in out.chunks_exact_mut(dims).enumerate() {
        model
            .generate_with(class, 1000 + class as u64, &mut ws, image, |l, c, y| {
                dense(l, c, y);
                Ok(())
            })
            .unwrap();
    }
    out
}

fn digest(values: &[f32]) -> u32 {
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .collect();
    fnv1a(&bytes)
}

#[test]
fn a_weight_of_minus_128_gives_the_same_pixels_on_every_kernel() {
    let bytes = with_minus_128();
    let model = CompactModel::parse(&bytes).unwrap();
    let reference = images(&model, |l, c, y| {
        mf_kernels::reference::gemm_i8(l, c, 1, Output::F32(y)).unwrap()
    });
    let shipped_bytes = std::fs::read(SHIPPED).unwrap();
    let shipped = CompactModel::parse(&shipped_bytes).unwrap();
    let unchanged = images(&shipped, |l, c, y| {
        mf_kernels::reference::gemm_i8(l, c, 1, Output::F32(y)).unwrap()
    });
    assert!(
        reference != unchanged,
        "the −128 weight must change the images"
    );

    let mut tested = Vec::new();
    for isa in Isa::ALL.into_iter().filter(|isa| isa.is_available()) {
        let ours = images(&model, |l, c, y| {
            let packed = PackedI8::new(isa, l).unwrap();
            mf_kernels::gemm_i8(&packed, Input::U8(c), 1, Output::F32(y)).unwrap()
        });
        let first_bad = ours
            .iter()
            .zip(&reference)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first_bad, None, "{isa} differs from the reference");
        tested.push(isa.name());
    }
    let digest = format!("{:08x}", digest(&reference));
    println!("minus-128 model digest {digest} on {}", tested.join(","));
    if let Ok(expected) = std::env::var("MF_EXPECT_DIGEST") {
        assert_eq!(
            digest, expected,
            "the images differ from the other machine's"
        );
    }
}
