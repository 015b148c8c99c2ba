//! Whether a run shares its products across the kernels' thread team or keeps them on the
//! calling thread, chosen per input size by timing the engine's runs both ways on the machine
//! itself, and kept under watch. Sharing a batch-1 product pays where the cores exchange cache
//! lines cheaply and loses where they do not: the batch-1 int8 U-Net on two Sapphire Rapids
//! vCPUs ran 0.308 ms shared against 0.273 alone, where an AMD EPYC had gained 12% shared. On a
//! shared host it also changes with the phase: the batch-1 int8 DiT on two AMD EPYC Zen 4 vCPUs
//! ran 0.148-0.278 ms (p50 of 3,000 runs) shared, from one run of the benchmark to the next, and
//! 0.181 alone in every one. So the first runs go each way in turn, and after them one run in
//! [`EXPLORE_EVERY`] goes the other way, so that a choice made in one phase is revisited in the
//! next: each way is judged by the median of its last [`TRIALS`] runs.
//!
//! Either way the outputs are the same bits: the team cuts a step's outputs across threads,
//! each computed as one thread would (held by the tests of shared and unshared runs).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Runs of each way timed before the first choice, and the runs each way's median is over.
pub(crate) const TRIALS: usize = 5;

/// Once chosen, one run in this many goes the other way (its cost: a sixteenth of the runs at
/// the slower way's time).
const EXPLORE_EVERY: u64 = 16;

/// The timed runs of each input size.
#[derive(Default)]
pub(crate) struct TeamChoice {
    sizes: Mutex<HashMap<usize, Trial>>,
}

impl TeamChoice {
    /// Runs `run` (a whole network evaluation for inputs of `size` values) shared or alone, as
    /// chosen for that size ([`Trial::way`]), and times it.
    pub(crate) fn run<R>(&self, size: usize, run: impl FnOnce() -> R) -> R {
        if mf_kernels::team::threads() <= 1 {
            return run();
        }
        let alone = self.with_trial(size, |t| t.way());
        let start = Instant::now();
        let out = match alone {
            true => mf_kernels::team::single_threaded(run),
            false => run(),
        };
        let took = start.elapsed();
        self.with_trial(size, |t| t.record(alone, took));
        out
    }

    /// `f` on the trial of `size`.
    fn with_trial<T>(&self, size: usize, f: impl FnOnce(&mut Trial) -> T) -> T {
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        f(sizes.entry(size).or_default())
    }

    /// The choice made for inputs of `size` values: `Some(true)` alone, `Some(false)` shared.
    #[cfg(test)]
    pub(crate) fn chosen(&self, size: usize) -> Option<bool> {
        let sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        sizes.get(&size).and_then(Trial::alone_wins)
    }
}

/// The recent runs of one input size, each way.
#[derive(Default)]
struct Trial {
    shared: Recent,
    alone: Recent,
    /// Runs recorded since both ways had [`TRIALS`] runs.
    since_chosen: u64,
}

impl Trial {
    /// Whether the next run goes alone: in turn until each way has its trials, then the way
    /// whose recent median is lower, but every [`EXPLORE_EVERY`]th run the other one.
    fn way(&self) -> bool {
        match self.alone_wins() {
            None => self.alone.len < self.shared.len,
            Some(alone) => alone != self.since_chosen.is_multiple_of(EXPLORE_EVERY),
        }
    }

    /// Records a run of `took`, alone or shared.
    fn record(&mut self, alone: bool, took: Duration) {
        if self.alone_wins().is_some() {
            self.since_chosen += 1;
        }
        match alone {
            true => self.alone.push(took),
            false => self.shared.push(took),
        }
    }

    /// Whether the recent runs alone took less time than the shared ones (medians: a slow
    /// phase during one run does not decide); `None` before each way has its trials.
    fn alone_wins(&self) -> Option<bool> {
        (self.alone.len == TRIALS && self.shared.len == TRIALS)
            .then(|| self.alone.median() < self.shared.median())
    }
}

/// The last [`TRIALS`] run times of one way.
#[derive(Default)]
struct Recent {
    times: [Duration; TRIALS],
    /// Times held (up to [`TRIALS`]).
    len: usize,
    /// Where the next one goes (the oldest once full).
    next: usize,
}

impl Recent {
    /// Keeps `took`, dropping the oldest time once full.
    fn push(&mut self, took: Duration) {
        self.times[self.next] = took;
        self.next = (self.next + 1) % TRIALS;
        self.len = (self.len + 1).min(TRIALS);
    }

    /// The median of the times held (the upper one of an even count).
    fn median(&self) -> Duration {
        let mut times = self.times;
        let held = &mut times[..self.len];
        held.sort_unstable();
        held[self.len / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records `runs` runs, each going the way the trial picks and taking `alone` or `shared`
    /// µs; returns how many went alone.
    fn feed(trial: &mut Trial, runs: usize, alone_us: u64, shared_us: u64) -> usize {
        let mut went_alone = 0;
        for _ in 0..runs {
            let alone = trial.way();
            let us = if alone { alone_us } else { shared_us };
            trial.record(alone, Duration::from_micros(us));
            went_alone += usize::from(alone);
        }
        went_alone
    }

    #[test]
    fn the_first_runs_alternate_then_the_faster_way_runs_with_one_in_sixteen_the_other() {
        let mut trial = Trial::default();
        assert_eq!(feed(&mut trial, 2 * TRIALS, 180, 150), TRIALS);
        assert_eq!(trial.alone_wins(), Some(false));
        // 160 runs shared but for every sixteenth.
        assert_eq!(feed(&mut trial, 160, 180, 150), 10);
        assert_eq!(trial.alone_wins(), Some(false));
    }

    #[test]
    fn a_choice_made_in_one_phase_is_revisited_in_the_next() {
        let mut trial = Trial::default();
        feed(&mut trial, 2 * TRIALS, 180, 150);
        // Sharing slows (a busy host): after three slow shared runs alone takes over.
        feed(&mut trial, 4, 180, 280);
        assert_eq!(trial.alone_wins(), Some(true));
        let went_alone = feed(&mut trial, 160, 180, 280);
        assert_eq!(went_alone, 150);
        // And back, once an exploring shared run after another shows it faster again.
        feed(&mut trial, 16 * TRIALS, 180, 150);
        assert_eq!(trial.alone_wins(), Some(false));
    }

    #[test]
    fn medians_decide_not_outliers() {
        let mut trial = Trial::default();
        for (alone, shared) in [(270, 300), (275, 310), (2000, 305), (280, 900), (272, 320)] {
            trial.record(true, Duration::from_micros(alone));
            trial.record(false, Duration::from_micros(shared));
        }
        assert_eq!(
            trial.alone_wins(),
            Some(true),
            "one slow run each does not tip it"
        );
        let mut recent = Recent::default();
        for us in [5, 1, 4, 2, 3, 9] {
            recent.push(Duration::from_micros(us));
        }
        // 5 dropped (the oldest): 1 2 3 4 9.
        assert_eq!(recent.median(), Duration::from_micros(3));
    }
}
