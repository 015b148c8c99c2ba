//! Fuzz finding (compact target): a header whose payload size ends before the frequency and
//! class tables do made the parser slice the layers from past the payload's end and panic.
//! The tables are now read from the payload alone: such a file is an error.
use mf_core::compact::{CompactError, CompactModel, HEADER, fnv1a};

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../mf-edge/fuzz/seeds/mnist-width16.mfc"
);

/// The seed model with its header's payload size set to `payload` bytes and a checksum that
/// matches the shortened body (the rest of the file stays behind it).
fn with_payload(payload: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(SEED).expect("the compact seed model");
    bytes[HEADER - 4..HEADER].copy_from_slice(&payload.to_le_bytes());
    let end = HEADER + payload as usize;
    let sum = fnv1a(&bytes[..end]);
    bytes[end..end + 4].copy_from_slice(&sum.to_le_bytes());
    bytes
}

#[test]
fn the_seed_parses_whole() {
    let bytes = std::fs::read(SEED).unwrap();
    let model = CompactModel::parse(&bytes).unwrap();
    assert_eq!(model.dims(), 784);
}

#[test]
fn tables_past_the_payload_are_an_error_not_a_panic() {
    for payload in [0, 4, 16, 64] {
        let bytes = with_payload(payload);
        assert!(
            matches!(CompactModel::parse(&bytes), Err(CompactError::Truncated)),
            "payload {payload}"
        );
    }
}
