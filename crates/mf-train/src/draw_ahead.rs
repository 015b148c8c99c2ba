//! A step's host-side draws (batch, noise, times, dropped labels) made on a thread of their
//! own, ahead of the step that uses them, so that the device never waits for the CPU to draw
//! (the MNIST MLP at batch 256 draws 200K normals a step, between GPU steps of a few
//! milliseconds). One generator drawn from by one thread in order, so the batches are those
//! drawn inline, value for value, and each comes with the generator's position just after it,
//! for checkpoints.
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use anyhow::anyhow;

use crate::config::ObjectiveConfig;
use crate::datasets::Dataset;
use crate::objective::{Draws, draw};
use crate::rng::{Rng, RngState};

/// Batches that wait drawn ahead of the step that takes them.
const AHEAD: usize = 2;

/// One batch and where the generator stood after drawing it.
pub struct Drawn {
    /// The step's draws.
    pub draws: Draws,
    /// The generator's position after them: a checkpoint taken after this step resumes here.
    pub after: RngState,
}

/// The drawing thread and the receiving end of its batches; dropping it stops the thread.
pub struct DrawAhead {
    batches: Option<Receiver<Drawn>>,
    thread: Option<JoinHandle<()>>,
}

impl DrawAhead {
    /// Starts drawing batches of `n` samples from `rng` (seeded with `seed`, for the recorded
    /// positions), labels dropped to `null_class` as `objective` says.
    pub fn start(
        dataset: Arc<Dataset>,
        mut rng: Rng,
        seed: u64,
        n: usize,
        objective: ObjectiveConfig,
        null_class: usize,
    ) -> Self {
        let (send, batches) = sync_channel(AHEAD);
        let thread = std::thread::spawn(move || {
            loop {
                let draws = draw(&dataset, &mut rng, n, &objective, null_class);
                let after = RngState::capture(seed, &rng);
                if send.send(Drawn { draws, after }).is_err() {
                    break; // the trainer is done
                }
            }
        });
        DrawAhead {
            batches: Some(batches),
            thread: Some(thread),
        }
    }

    /// The next batch, waiting for it if the thread is behind.
    pub fn next(&self) -> anyhow::Result<Drawn> {
        self.batches
            .as_ref()
            .and_then(|b| b.recv().ok())
            .ok_or_else(|| anyhow!("the thread drawing training batches stopped"))
    }
}

impl Drop for DrawAhead {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop at its next send.
        self.batches = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataConfig;
    use rand::SeedableRng;

    #[test]
    fn batches_and_positions_equal_those_drawn_inline() {
        let data = DataConfig {
            dataset: "moons".into(),
            root: None,
            image_size: None,
            channels: None,
            couplings: None,
        };
        let dataset = Arc::new(Dataset::open(&data).unwrap());
        let objective = ObjectiveConfig {
            ratio_r_neq_t: 0.5,
            ..ObjectiveConfig::default()
        };
        let ahead = DrawAhead::start(
            dataset.clone(),
            Rng::seed_from_u64(11),
            11,
            16,
            objective.clone(),
            10,
        );
        let mut inline = Rng::seed_from_u64(11);
        for _ in 0..5 {
            let expected = draw(&dataset, &mut inline, 16, &objective, 10);
            let got = ahead.next().unwrap();
            assert_eq!(got.draws, expected);
            assert_eq!(got.after, RngState::capture(11, &inline));
        }
        // The thread is some batches ahead; dropping stops it without waiting for more takers.
        drop(ahead);
    }
}
