//! Time per step of a compiled plan (`mf-edge bench --profile`): each step's wall time summed
//! over runs while timing is on, read back as a mean per run beside what the step does.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One step's mean wall time per run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTime {
    /// The step's position in the plan.
    pub index: usize,
    /// What it does: the op, its shapes and layouts.
    pub step: String,
    /// Mean wall time per run, in µs.
    pub mean_us: f64,
}

/// Each step's summed time and the runs it covers.
pub(super) struct StepClock {
    sums: Mutex<(Vec<Duration>, u64)>,
}

impl StepClock {
    /// A clock for a plan of `steps` steps, at zero.
    pub(super) fn new(steps: usize) -> Self {
        StepClock {
            sums: Mutex::new((vec![Duration::ZERO; steps], 0)),
        }
    }

    /// Times step `step` until the returned guard drops.
    pub(super) fn start(&self, step: usize) -> StepTimer<'_> {
        StepTimer {
            clock: self,
            step,
            start: Instant::now(),
        }
    }

    /// Counts one whole run.
    pub(super) fn finish_run(&self) {
        self.lock().1 += 1;
    }

    /// The mean time per run of each step since the last call (labelled by `label`), and the
    /// clock back at zero; `None` before a whole run.
    pub(super) fn take(&self, label: impl Fn(usize) -> String) -> Option<Vec<StepTime>> {
        let mut sums = self.lock();
        let runs = std::mem::take(&mut sums.1);
        let times: Vec<Duration> = sums.0.iter_mut().map(std::mem::take).collect();
        (runs > 0).then(|| {
            let times = times.into_iter().enumerate();
            times
                .map(|(index, total)| StepTime {
                    index,
                    step: label(index),
                    mean_us: total.as_secs_f64() * 1e6 / runs as f64,
                })
                .collect()
        })
    }

    /// The sums; a run that panicked while holding them left them whole (only additions).
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Duration>, u64)> {
        self.sums.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds the time since its start to its step when dropped.
pub(super) struct StepTimer<'a> {
    clock: &'a StepClock,
    step: usize,
    start: Instant,
}

impl Drop for StepTimer<'_> {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        if let Some(sum) = self.clock.lock().0.get_mut(self.step) {
            *sum += elapsed;
        }
    }
}
