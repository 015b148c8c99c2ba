//! How the command-line tools end: an error is one line on standard error, with its causes
//! (`error: cannot load model x.onnx: not an ONNX model (…)`), and exit code 1; never a
//! backtrace, whatever `RUST_BACKTRACE` says.
use std::process::ExitCode;

/// The exit of a tool whose work returned `result`.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            std::eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
