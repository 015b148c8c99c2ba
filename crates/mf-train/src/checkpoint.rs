//! Checkpoints: everything a run needs to continue bit for bit, written atomically.
//!
//! A checkpoint is a folder `checkpoint/` in the run folder:
//! - `model.safetensors`, `ema.safetensors`: weights in PyTorch layout (`[out, in]` linear
//!   weights), the portable input of `mf-export`;
//! - `model.bpk`: the weights again in Burn's burnpack, which keeps parameter identities so
//!   that the optimizer state re-attaches on resume;
//! - `optimizer.bpk`: Adam's moments and step counters;
//! - `state.json`: step, random-stream position, elapsed time, network spec and config.
//!
//! It is written into `checkpoint.tmp/` and swapped in with renames, so a crash leaves either
//! the old checkpoint or the new one, never a mix.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::store::{
    BurnToPyTorchAdapter, BurnpackStore, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use serde::{Deserialize, Serialize};

use mf_core::atomic;
use mf_core::card::Start;

use crate::config::Config;
use crate::datasets::coupled::Provenance;
use crate::model::{NetSpec, VelocityNet};
use crate::rng::RngState;

/// The small state of a run, stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Where the run's random stream stands.
    pub rng: RngState,
    /// Training seconds so far (wall clock, summed over resumes).
    pub elapsed_s: f64,
    /// The network's description.
    pub spec: NetSpec,
    /// The config the run was started with.
    pub config: Config,
    /// [`Config::hash`] of that config.
    pub config_hash: String,
    /// For a run on couplings (`data.couplings`): how they were made, teacher included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<Provenance>,
    /// For a run started from another run's weights (`train.init_from`): that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
}

/// The checkpoint folder of a run.
pub fn dir(run: &Path) -> PathBuf {
    run.join("checkpoint")
}

/// Writes a checkpoint atomically: every file is written whole and flushed into
/// `checkpoint.tmp/`, which is swapped in with renames and synced folders. If anything fails
/// (a full disk), `checkpoint.tmp/` is removed and the previous checkpoint stays as it was.
pub fn save(
    run: &Path,
    model: &VelocityNet,
    ema: &VelocityNet,
    optimizer: &[u8],
    state: &RunState,
) -> anyhow::Result<()> {
    let tmp = run.join("checkpoint.tmp");
    let result = write_folder(&tmp, model, ema, optimizer, state).and_then(|()| swap_in(run, &tmp));
    if result.is_err() && tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.with_context(|| format!("cannot write the checkpoint in {}", run.display()))
}

/// Writes the checkpoint's files into a fresh folder `tmp`.
fn write_folder(
    tmp: &Path,
    model: &VelocityNet,
    ema: &VelocityNet,
    optimizer: &[u8],
    state: &RunState,
) -> anyhow::Result<()> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp)?;
    }
    std::fs::create_dir_all(tmp)?;
    atomic::write(&tmp.join("model.safetensors"), &safetensors_bytes(model)?)?;
    atomic::write(&tmp.join("ema.safetensors"), &safetensors_bytes(ema)?)?;
    let mut burnpack = BurnpackStore::from_bytes(None);
    model
        .save_into(&mut burnpack)
        .map_err(|e| anyhow::anyhow!("cannot encode model.bpk: {e}"))?;
    let burnpack = burnpack
        .get_bytes()
        .map_err(|e| anyhow::anyhow!("cannot encode model.bpk: {e}"))?;
    atomic::write(&tmp.join("model.bpk"), &burnpack)?;
    atomic::write(&tmp.join("optimizer.bpk"), optimizer)?;
    atomic::write(&tmp.join("state.json"), &serde_json::to_vec_pretty(state)?)
}

/// Replaces `checkpoint/` by the complete folder `tmp` (through `checkpoint.old/`, which
/// [`folder`] reads if a crash falls between the two renames).
fn swap_in(run: &Path, tmp: &Path) -> anyhow::Result<()> {
    let final_dir = dir(run);
    let old = run.join("checkpoint.old");
    if final_dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(&final_dir, &old)?;
    }
    std::fs::rename(tmp, &final_dir)?;
    atomic::sync_folder(run)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// A network's weights as PyTorch-layout safetensors bytes with its spec in the metadata.
fn safetensors_bytes(net: &VelocityNet) -> anyhow::Result<Vec<u8>> {
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(BurnToPyTorchAdapter)
        .metadata("mf_spec", serde_json::to_string(&net.spec)?);
    net.save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot encode safetensors: {e}"))?;
    store
        .get_bytes()
        .map_err(|e| anyhow::anyhow!("cannot encode safetensors: {e}"))
}

/// Writes a network's weights as PyTorch-layout safetensors with its spec in the metadata.
pub fn save_safetensors(net: &VelocityNet, path: &Path) -> anyhow::Result<()> {
    atomic::write(path, &safetensors_bytes(net)?)
}

/// Loads PyTorch-layout safetensors into a network of the given spec.
pub fn load_safetensors(
    spec: &NetSpec,
    path: &Path,
    device: &burn::prelude::Device,
) -> anyhow::Result<VelocityNet> {
    if !path.exists() {
        bail!("missing weights {}", path.display());
    }
    let mut net = VelocityNet::new(spec, device);
    let mut store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter);
    let result = net
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        bail!("{} does not match the network: {result}", path.display());
    }
    Ok(net)
}

/// The parts of a checkpoint, loaded onto `device` (model) and its inner device (EMA).
pub struct Loaded {
    /// The trained weights with their parameter identities.
    pub model: VelocityNet,
    /// The EMA weights.
    pub ema: VelocityNet,
    /// Adam's state as burnpack bytes.
    pub optimizer: Vec<u8>,
    /// Step, random stream and config.
    pub state: RunState,
}

/// Reads a run's state (step, config, spec) without loading weights.
pub fn read_state(run: &Path) -> anyhow::Result<RunState> {
    let path = folder(run)?.join("state.json");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("corrupt {}", path.display()))
}

/// The run's state and EMA weights (what sampling, evaluation and export read), from the one
/// folder [`folder`] picks.
pub fn load_ema(
    run: &Path,
    device: &burn::prelude::Device,
) -> anyhow::Result<(RunState, VelocityNet)> {
    let state = read_state(run)?;
    let ema = load_safetensors(&state.spec, &folder(run)?.join("ema.safetensors"), device)?;
    Ok((state, ema))
}

/// Loads the checkpoint of a run for resuming.
pub fn load(run: &Path, device: &burn::prelude::Device) -> anyhow::Result<Loaded> {
    let state = read_state(run)?;
    let folder = folder(run)?;
    let mut model = VelocityNet::new(&state.spec, device);
    let mut store = BurnpackStore::from_file(folder.join("model.bpk"));
    model
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", folder.join("model.bpk").display()))?;
    let inner = device.clone().inner();
    let ema = load_safetensors(&state.spec, &folder.join("ema.safetensors"), &inner)?;
    let optimizer =
        std::fs::read(folder.join("optimizer.bpk")).context("cannot read optimizer.bpk")?;
    Ok(Loaded {
        model,
        ema,
        optimizer,
        state,
    })
}

/// The checkpoint folder to read: `checkpoint/`, or `checkpoint.old/` if a crash interrupted
/// the swap between its two renames. Every reader takes the state and the weights from it.
pub fn folder(run: &Path) -> anyhow::Result<PathBuf> {
    for candidate in [dir(run), run.join("checkpoint.old")] {
        if candidate.join("state.json").exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "no checkpoint in {} (expected {}/state.json)",
        run.display(),
        dir(run).display()
    )
}
