//! Data-parallel training over the local CUDA devices with Burn's distributed API: one model
//! replica per device, each step's batch split into equal contiguous shards, every device
//! computing its shard's loss (with its own exact JVP) and gradients, the gradients averaged
//! across the devices by NCCL during the backward pass (`DistributedContext`, parameters marked
//! with `set_distributed`), and the same Adam step applied on every device, so the replicas stay
//! equal. Rank 0 runs in the caller's thread and owns everything else (the random stream, EMA,
//! logging, checkpoints); the other ranks each run in a thread of their own.
use std::sync::mpsc::{Receiver, Sender, channel};

use anyhow::{Context, bail, ensure};
use burn::module::{ModuleMapper, Param};
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};

use crate::config::Config;
use crate::model::VelocityNet;
use crate::objective::Draws;
use crate::train::{StepStats, adam, step};

/// Checks a `--devices` list against the device kind and batch before any device is touched:
/// not empty, no index twice, and a batch that splits evenly between them.
pub fn check_group(indices: &[usize], batch: usize) -> anyhow::Result<()> {
    ensure!(!indices.is_empty(), "--devices needs at least one index");
    let mut seen = indices.to_vec();
    seen.sort_unstable();
    if let Some(pair) = seen.windows(2).find(|w| w[0] == w[1]) {
        bail!("--devices lists device {} twice", pair[0]);
    }
    ensure!(
        batch.is_multiple_of(indices.len()),
        "the batch of {batch} does not split evenly over {} devices: choose a batch that is a \
         multiple of the device count",
        indices.len()
    );
    Ok(())
}

/// What rank 0 sends another rank each step: its shard and the learning rate.
struct Job {
    draws: Draws,
    lr: f64,
}

/// A rank other than 0, seen from rank 0: the way to hand it work and the way its results
/// come back. Its thread ends when the job channel closes.
struct Worker {
    jobs: Sender<Job>,
    results: Receiver<anyhow::Result<StepStats>>,
}

/// A data-parallel group of devices, started around rank 0's model and optimizer.
///
/// A rank that fails or panics inside a backward pass leaves the others waiting for its
/// gradients (NCCL has no way to call a collective off): the run has to be stopped.
pub struct DeviceGroup {
    // Declared first, so dropped first: the ranks' loops end before the server closes.
    workers: Vec<Worker>,
    _context: DistributedContext,
}

impl DeviceGroup {
    /// Starts the group on `devices` (autodiff devices, rank order; rank 0 is where `model`
    /// and `optim` already live): copies of the model and of the optimizer's state go to every
    /// other rank. Returns the group and rank 0's model, its parameters now marked for
    /// gradient averaging.
    pub fn start(
        devices: &[Device],
        model: VelocityNet,
        optim: &ModuleOptimizer,
        config: &Config,
    ) -> anyhow::Result<(Self, VelocityNet)> {
        let context = DistributedContext::init(
            devices.to_vec(),
            DistributedConfig {
                all_reduce_op: ReduceOperation::Mean,
            },
        );
        let mut workers = Vec::with_capacity(devices.len().saturating_sub(1));
        for (rank, device) in devices.iter().enumerate().skip(1) {
            let replica = distributed(model.clone().fork(device));
            let optim = replica_optimizer(optim, config)?;
            let (jobs, job_rx) = channel::<Job>();
            let (result_tx, results) = channel();
            let config = config.clone();
            std::thread::Builder::new()
                .name(format!("mf-train rank {rank}"))
                .spawn(move || run_rank(replica, optim, &config, job_rx, result_tx))
                .with_context(|| format!("cannot start the thread of rank {rank}"))?;
            workers.push(Worker { jobs, results });
        }
        let group = DeviceGroup {
            workers,
            _context: context,
        };
        Ok((group, distributed(model)))
    }

    /// Devices in the group.
    pub fn size(&self) -> usize {
        self.workers.len() + 1
    }

    /// One data-parallel optimizer step: shard `r` of the draws to rank `r`, rank 0's shard
    /// here; the stats are the mean over the shards (equal sizes: the batch's mean).
    pub fn step(
        &self,
        model: VelocityNet,
        optim: &mut ModuleOptimizer,
        draws: &Draws,
        config: &Config,
        lr: f64,
    ) -> anyhow::Result<(VelocityNet, StepStats)> {
        let ranks = self.size();
        for (rank, worker) in self.workers.iter().enumerate() {
            let job = Job {
                draws: draws.shard(rank + 1, ranks),
                lr,
            };
            worker
                .jobs
                .send(job)
                .map_err(|_| anyhow::anyhow!("rank {} stopped", rank + 1))?;
        }
        let (model, own) = step(model, optim, &draws.shard(0, ranks), config, lr)?;
        let (mut loss, mut mse) = (own.loss, own.mse);
        for (rank, worker) in self.workers.iter().enumerate() {
            let stats = worker
                .results
                .recv()
                .map_err(|_| anyhow::anyhow!("rank {} stopped without a result", rank + 1))?
                .with_context(|| format!("rank {}", rank + 1))?;
            loss += stats.loss;
            mse += stats.mse;
        }
        let stats = StepStats {
            loss: loss / ranks as f64,
            mse: mse / ranks as f64,
        };
        Ok((model, stats))
    }
}

/// Rank r's loop: one step per job on its replica, until rank 0 closes the channel.
fn run_rank(
    mut model: VelocityNet,
    mut optim: ModuleOptimizer,
    config: &Config,
    jobs: Receiver<Job>,
    results: Sender<anyhow::Result<StepStats>>,
) {
    while let Ok(Job { draws, lr }) = jobs.recv() {
        let outcome = step(model.clone(), &mut optim, &draws, config, lr);
        let reply = match outcome {
            Ok((updated, stats)) => {
                model = updated;
                Ok(stats)
            }
            Err(e) => Err(e),
        };
        if results.send(reply).is_err() {
            return;
        }
    }
}

/// An optimizer for another rank in the same state as `optim` (Adam's moments travel as bytes
/// and move to the replica's device on its first step).
pub fn replica_optimizer(
    optim: &ModuleOptimizer,
    config: &Config,
) -> anyhow::Result<ModuleOptimizer> {
    let bytes = optim
        .into_bytes()
        .map_err(|e| anyhow::anyhow!("cannot copy the optimizer state: {e:?}"))?;
    adam(config)
        .init()
        .from_bytes(bytes)
        .map_err(|e| anyhow::anyhow!("cannot copy the optimizer state: {e:?}"))
}

/// Marks every float parameter of `model` so that the backward pass averages its gradient over
/// the group (Burn's `set_distributed`; the optimizer keeps the mark across steps).
pub fn distributed(model: VelocityNet) -> VelocityNet {
    model.map(&mut MarkDistributed)
}

/// The mapper behind [`distributed`].
struct MarkDistributed;

impl ModuleMapper for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.set_distributed(id), mapper)
    }
}
