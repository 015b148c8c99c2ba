//! `mf-export`'s command line refuses bad values before any work starts: a message naming the
//! value and what is accepted, a non-zero exit, and nothing written.
#[path = "../../../tests/support/refusal.rs"]
mod refusal;

#[test]
fn bad_values_are_named_and_write_nothing() {
    let export = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["--run", "r", "--precision", "int8", "--out", "m.onnx"];
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            export(&["--min-psnr", "NaN"]),
            &["NaN is not a PSNR floor", "0 or more"],
        ),
        (
            export(&["--min-psnr=-3"]),
            &["-3 is not a PSNR floor", "finite number of dB"],
        ),
        (export(&["--min-psnr", "inf"]), &["inf is not a PSNR floor"]),
        (export(&["--calib-samples", "0"]), &["'0'", "1..=65536"]),
        (
            export(&[]),
            &["no checkpoint in r", "r/checkpoint/state.json"],
        ),
    ];
    for (args, expected) in &cases {
        refusal::assert_refused(env!("CARGO_BIN_EXE_mf-export"), args, expected);
    }
}
