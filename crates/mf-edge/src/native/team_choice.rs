//! Whether a run shares its products across the kernels' thread team or keeps them on the
//! calling thread, chosen per input size by timing the engine's first runs both ways, in turn,
//! on the machine itself. Sharing a batch-1 product pays where the cores exchange cache lines
//! cheaply and loses where they do not: the batch-1 int8 U-Net on two Sapphire Rapids vCPUs ran
//! 0.308 ms shared against 0.273 alone, where an AMD EPYC had gained 12% shared. Either way
//! the outputs are the same bits: the team cuts a step's outputs across threads, each computed
//! as one thread would (held by the tests of shared and unshared runs).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Runs of each way timed before the choice.
pub(crate) const TRIALS: usize = 5;

/// The choice (or the trial under way) for each input size.
#[derive(Default)]
pub(crate) struct TeamChoice {
    sizes: Mutex<HashMap<usize, Trial>>,
}

/// The timed runs of one input size, and the choice once made.
#[derive(Default)]
struct Trial {
    shared: Vec<Duration>,
    alone: Vec<Duration>,
    alone_wins: Option<bool>,
}

impl TeamChoice {
    /// Runs `run` (a whole network evaluation for inputs of `size` values) shared or alone, as
    /// chosen for that size; until the choice is made, each way in turn, timed.
    pub(crate) fn run<R>(&self, size: usize, run: impl FnOnce() -> R) -> R {
        if mf_kernels::team::threads() <= 1 {
            return run();
        }
        let (alone, trial) = {
            let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
            let t = sizes.entry(size).or_default();
            match t.alone_wins {
                Some(alone) => (alone, false),
                None => (t.alone.len() < t.shared.len(), true),
            }
        };
        let start = Instant::now();
        let out = match alone {
            true => mf_kernels::team::single_threaded(run),
            false => run(),
        };
        if trial {
            let took = start.elapsed();
            let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
            let t = sizes.entry(size).or_default();
            match alone {
                true => t.alone.push(took),
                false => t.shared.push(took),
            }
            if t.alone.len() >= TRIALS && t.shared.len() >= TRIALS && t.alone_wins.is_none() {
                t.alone_wins = Some(alone_wins(&mut t.shared, &mut t.alone));
            }
        }
        out
    }

    /// The choice made for inputs of `size` values: `Some(true)` alone, `Some(false)` shared.
    #[cfg(test)]
    pub(crate) fn chosen(&self, size: usize) -> Option<bool> {
        let sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        sizes.get(&size).and_then(|t| t.alone_wins)
    }
}

/// Whether the runs alone took less time than the shared ones (medians: a slow phase of a
/// shared machine during one run does not decide).
fn alone_wins(shared: &mut [Duration], alone: &mut [Duration]) -> bool {
    median(alone) < median(shared)
}

/// The median of a non-empty list (the upper one of an even count).
fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_decide_not_outliers() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_micros(m))
                .collect::<Vec<_>>()
        };
        // Alone is faster in most runs; one slow phase does not tip it.
        assert!(alone_wins(
            &mut ms(&[300, 310, 305, 900, 320]),
            &mut ms(&[270, 275, 2000, 280, 272])
        ));
        assert!(!alone_wins(
            &mut ms(&[250, 260, 255, 240, 245]),
            &mut ms(&[270, 275, 260, 280, 272])
        ));
    }
}
