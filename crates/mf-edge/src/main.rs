//! `mf-edge`: the on-device runtime's command line.
use clap::Parser;

/// One-step image generation with MeanFlow models on small devices.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    println!(
        "mf-kernels picks {} on this CPU",
        mf_kernels::Isa::select()?
    );
    Ok(())
}
