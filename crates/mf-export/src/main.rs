//! `mf-export`: an mf-train run → ONNX (fp32, fp16, int8 QDQ) with its model card.
use std::path::PathBuf;

use clap::Parser;
use mf_export::calibrate::Rule;
use mf_export::{ExportOptions, FloatLayers, MIN_PSNR_DB, Target, WeightBits, export};

/// Export a trained MeanFlow network to ONNX.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The mf-train run folder.
    #[arg(long)]
    run: PathBuf,
    /// Precision of the exported graph.
    #[arg(long, value_enum)]
    precision: Target,
    /// Export the raw weights instead of the EMA weights.
    #[arg(long)]
    raw_weights: bool,
    /// Training samples run through the network to calibrate int8 activations, 1 to 65536.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    calib_samples: u32,
    /// Activation range rule: minmax, or percentile:<p> (e.g. percentile:99.99).
    #[arg(long, default_value = "minmax")]
    calibration: String,
    /// Layers an int8 export keeps in float: auto, none, first-last, or layer names separated
    /// by commas (the export lists every layer's name).
    #[arg(long, default_value = "auto")]
    float_layers: String,
    /// The floor on an int8 export's one-step PSNR against fp32, in dB: below it the export
    /// fails and writes nothing.
    #[arg(long, default_value_t = MIN_PSNR_DB, value_parser = decibels)]
    min_psnr: f64,
    /// Bits of an int8 export's weight codes: 8 (codes in [-127, 127]) or 7 ([-64, 64], ONNX
    /// Runtime's reduce_range: half the resolution, and AVX2 CPUs run such layers faster).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(7..=8))]
    weight_bits: u8,
    /// The ONNX file to write.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    mf_core::cli::exit(run())
}

/// Parses the command line and does the work.
fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = export(&ExportOptions {
        run: cli.run,
        target: cli.precision,
        raw_weights: cli.raw_weights,
        calib_samples: cli.calib_samples as usize,
        calibration: Rule::parse(&cli.calibration)?,
        float_layers: FloatLayers::parse(&cli.float_layers)?,
        min_psnr_db: cli.min_psnr,
        weight_bits: if cli.weight_bits == 7 {
            WeightBits::Seven
        } else {
            WeightBits::Eight
        },
        out: cli.out.clone(),
    })?;
    for line in &report.lines {
        println!("{line}");
    }
    let kind = report
        .card
        .as_ref()
        .map_or("classifier", |c| c.precision.as_str());
    println!(
        "wrote {} ({:.1} MB, {kind})",
        cli.out.display(),
        report.bytes as f64 / 1e6
    );
    Ok(())
}

/// Parses `--min-psnr`: a finite number of decibels, 0 or more (0 accepts any int8 file).
fn decibels(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(db) if db.is_finite() && db >= 0.0 => Ok(db),
        _ => Err(format!(
            "{text} is not a PSNR floor: a finite number of dB, 0 or more, is accepted"
        )),
    }
}
