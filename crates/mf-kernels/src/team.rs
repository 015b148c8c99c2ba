//! A small persistent thread team for splitting one product across cores with low latency.
//!
//! A batch-1 layer takes a few microseconds, the same order as waking a parked thread, so
//! helpers spin briefly for the next job before they park. The calling thread always takes a
//! share of the work itself, and returns only when every task is done, which is what lets a
//! job borrow the caller's data.
//!
//! The team never has more threads than the cores available (spinning threads beyond them
//! only take time from the ones doing the work); a task that itself calls [`run`] runs its
//! inner tasks on its own thread; a caller that waits long for the last task yields its core.
use std::boxed::Box;
use std::format;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// A job as the helpers see it: a task function with its lifetime erased, valid until the
/// caller of [`run`] returns (it waits for every task).
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    tasks: usize,
    /// The job's number in the high half of [`Shared::next`].
    generation: u64,
}

// SAFETY: the pointee is Sync and outlives every use (the caller waits for completion).
unsafe impl Send for Job {}

struct Shared {
    /// Bumped for every new job; helpers watch it.
    epoch: AtomicUsize,
    job: Mutex<Option<Job>>,
    wake: Condvar,
    /// The current job's generation (high 32 bits) and next task index to claim (low 32):
    /// a helper still holding an earlier job cannot claim a task of this one.
    next: AtomicU64,
    /// Tasks finished.
    done: AtomicUsize,
    /// A task panicked.
    failed: AtomicBool,
    /// Helpers parked on `wake` (a job is announced with a syscall only when one is).
    parked: AtomicUsize,
    /// Serializes callers (one job at a time).
    running: Mutex<()>,
    helpers: usize,
}

/// How many spins a helper waits for the next job before it parks.
const SPINS: usize = 20_000;

fn team() -> &'static Shared {
    static TEAM: OnceLock<&'static Shared> = OnceLock::new();
    TEAM.get_or_init(|| {
        STARTED.store(true, Ordering::Release);
        let threads = match REQUESTED.load(Ordering::Acquire) {
            0 => configured_threads(),
            n => n,
        }
        .min(cores());
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            epoch: AtomicUsize::new(0),
            job: Mutex::new(None),
            wake: Condvar::new(),
            next: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            running: Mutex::new(()),
            helpers: threads.saturating_sub(1),
        }));
        for i in 0..shared.helpers {
            std::thread::Builder::new()
                .name(format!("mf-kernels-{i}"))
                .spawn(move || helper(shared))
                .expect("cannot start a kernel thread");
        }
        shared
    })
}

/// `MF_THREADS` if set, else the cores available (what [`configure`] overrides).
fn configured_threads() -> usize {
    std::env::var("MF_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(cores)
}

/// The cores this process may run on: the most threads the team will have.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

std::thread_local! {
    /// Inside [`single_threaded`].
    static SOLO: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Running a task of a job (on a helper, or on the caller of [`run`]).
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Sets a thread-local flag for as long as it lives, and restores the previous value when
/// dropped, on unwinding too.
struct FlagGuard {
    flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>,
    before: bool,
}

impl FlagGuard {
    fn set(flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>) -> FlagGuard {
        FlagGuard {
            flag,
            before: flag.with(|f| f.replace(true)),
        }
    }
}

impl Drop for FlagGuard {
    fn drop(&mut self) {
        let before = self.before;
        self.flag.with(|f| f.set(before));
    }
}

/// Threads that share a product: the caller plus the helpers (1 inside [`single_threaded`]).
pub fn threads() -> usize {
    if SOLO.with(|s| s.get()) {
        1
    } else {
        team().helpers + 1
    }
}

/// Sets the team's size (the caller included, at most [`cores`]) before its first use; returns
/// whether it took effect (false once the team has started).
pub fn configure(threads: usize) -> bool {
    REQUESTED.store(threads.max(1), Ordering::Release);
    let started = STARTED.load(Ordering::Acquire);
    !started
}

/// Runs `f` with every product on the calling thread alone (for measurements); the thread's
/// previous setting comes back when `f` returns or panics.
pub fn single_threaded<R>(f: impl FnOnce() -> R) -> R {
    let _solo = FlagGuard::set(&SOLO);
    f()
}

/// Calls `f(i, chunk)` for the `i`-th `chunk_len`-value chunk of `out` (the last may be
/// shorter), every chunk once. With `parallel`, the chunks are shared out across the team in
/// contiguous runs, one run per thread; otherwise they run in order on the calling thread.
pub fn for_each_chunk<T: Send>(
    out: &mut [T],
    chunk_len: usize,
    parallel: bool,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let chunk_len = chunk_len.max(1);
    let chunks = out.len().div_ceil(chunk_len);
    let threads = if parallel { threads().min(chunks) } else { 1 };
    if threads <= 1 {
        out.chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
        return;
    }
    let per = chunks.div_ceil(threads);
    let run_len = per * chunk_len;
    let parts = Parts {
        ptr: out.as_mut_ptr(),
        len: out.len(),
    };
    run(out.len().div_ceil(run_len), &|r| {
        let start = r * run_len;
        // SAFETY: `run` calls each task index once, and task `r` takes values
        // `start..start + run_len` (clipped to the slice): disjoint ranges of `out`, which is
        // borrowed mutably for as long as `run` lasts (it returns when every task is done).
        let part = unsafe { parts.range(start, run_len.min(parts.len - start)) };
        for (j, chunk) in part.chunks_mut(chunk_len).enumerate() {
            f(r * per + j, chunk);
        }
    });
}

/// Calls `f(first, run)` over runs of whole `unit`-value units of `out` (`first` being the
/// index of the run's first unit): with `parallel`, one run per thread of the team, else the
/// whole of `out` as one run on the calling thread.
pub fn for_each_run<T: Send>(
    out: &mut [T],
    unit: usize,
    parallel: bool,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    if !parallel || unit == 0 {
        f(0, out);
        return;
    }
    let per = (out.len() / unit).div_ceil(threads()).max(1);
    for_each_chunk(out, per * unit, true, &|i, run| f(i * per, run));
}

/// A mutably borrowed slice taken apart so that tasks can each take a disjoint range of it
/// (no vector of per-task slices to allocate per call).
struct Parts<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: tasks take disjoint ranges (`range`'s contract) of values that are `Send`.
unsafe impl<T: Send> Sync for Parts<T> {}

impl<T> Parts<T> {
    /// Values `start..start + len`.
    ///
    /// # Safety
    /// The range lies inside the slice and no other live reference covers any of it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, len: usize) -> &mut [T] {
        debug_assert!(start + len <= self.len);
        // SAFETY: in bounds of the borrowed slice and unaliased, as the caller promises.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

static REQUESTED: AtomicUsize = AtomicUsize::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);

fn helper(shared: &'static Shared) {
    let mut seen = 0;
    loop {
        let mut spins = 0;
        while shared.epoch.load(Ordering::Acquire) == seen {
            spins += 1;
            if spins < SPINS {
                std::hint::spin_loop();
            } else {
                let guard = shared.job.lock().unwrap_or_else(|e| e.into_inner());
                // Counted under the lock, so a caller that announces a job after this sees it.
                shared.parked.fetch_add(1, Ordering::SeqCst);
                let _guard = shared
                    .wake
                    .wait_while(guard, |_| shared.epoch.load(Ordering::Acquire) == seen)
                    .unwrap_or_else(|e| e.into_inner());
                shared.parked.fetch_sub(1, Ordering::SeqCst);
                break;
            }
        }
        seen = shared.epoch.load(Ordering::Acquire);
        let job = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job {
            let _in_task = FlagGuard::set(&IN_TASK);
            work(shared, job);
        }
    }
}

/// Claims and runs tasks until none is left.
fn work(shared: &Shared, job: Job) {
    let mut claim = shared.next.load(Ordering::Acquire);
    loop {
        let i = (claim & u64::from(u32::MAX)) as usize;
        if claim >> 32 != job.generation || i >= job.tasks {
            return;
        }
        if let Err(now) =
            shared
                .next
                .compare_exchange_weak(claim, claim + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            claim = now;
            continue;
        }
        claim += 1;
        // SAFETY: the caller of `run` keeps `f` alive until `done` reaches `tasks`.
        let f = unsafe { &*job.f };
        if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
            shared.failed.store(true, Ordering::Release);
        }
        shared.done.fetch_add(1, Ordering::AcqRel);
    }
}

/// Runs `f(0..tasks)` on the team (the caller included) and returns when all are done. Called
/// from inside a task, it runs the inner tasks on the calling thread (the team is busy with the
/// outer job).
pub fn run(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    let shared = team();
    if tasks <= 1 || shared.helpers == 0 || SOLO.with(|s| s.get()) || IN_TASK.with(|s| s.get()) {
        (0..tasks).for_each(f);
        return;
    }
    let _one_job = shared.running.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY (lifetime erasure): this function does not return before every task has run.
    let f: *const (dyn Fn(usize) + Sync + '_) = f;
    // SAFETY: only the lifetime is erased: this function does not return before every task
    // has run, so `f` outlives every use a helper makes of it.
    let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    assert!(u32::try_from(tasks).is_ok(), "too many tasks: {tasks}");
    // The low 32 bits of the epoch this job is announced with.
    let generation = u64::from((shared.epoch.load(Ordering::Acquire) as u32).wrapping_add(1));
    let job = Job {
        f,
        tasks,
        generation,
    };
    shared.done.store(0, Ordering::Release);
    shared.failed.store(false, Ordering::Release);
    shared.next.store(generation << 32, Ordering::Release);
    {
        let mut slot = shared.job.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(job);
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        // Spinning helpers see the epoch; only parked ones need the (syscall) wake-up.
        if shared.parked.load(Ordering::SeqCst) > 0 {
            shared.wake.notify_all();
        }
    }
    {
        let _in_task = FlagGuard::set(&IN_TASK);
        work(shared, job);
    }
    // The last tasks run on helpers: spin briefly, then give the core to them.
    let mut spins = 0;
    while shared.done.load(Ordering::Acquire) < tasks {
        spins += 1;
        if spins < SPINS {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    assert!(
        !shared.failed.load(Ordering::Acquire),
        "a kernel task panicked"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for tasks in [0, 1, 2, 3, 17, 1000] {
            let counts: std::vec::Vec<AtomicUsize> =
                (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            run(tasks, &|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn runs_of_whole_units_cover_every_unit_once_with_their_first_index() {
        // Each unit's values are written with the unit's index as the run saw it.
        for (units, unit, parallel) in [(7, 3, true), (1, 5, true), (9, 4, false), (0, 2, true)] {
            let mut out = std::vec![usize::MAX; units * unit];
            for_each_run(&mut out, unit, parallel, &|first, run| {
                assert_eq!(run.len() % unit, 0, "whole units");
                for (j, values) in run.chunks_mut(unit).enumerate() {
                    values.fill(first + j);
                }
            });
            let want: std::vec::Vec<usize> = (0..units * unit).map(|i| i / unit).collect();
            assert_eq!(out, want, "{units} units of {unit}, parallel {parallel}");
        }
    }

    #[test]
    fn a_task_that_runs_a_job_finishes() {
        // Before: the inner run waited forever on the mutex that the outer run holds.
        let counts: std::vec::Vec<AtomicUsize> = (0..12).map(|_| AtomicUsize::new(0)).collect();
        run(3, &|outer| {
            run(4, &|inner| {
                counts[outer * 4 + inner].fetch_add(1, Ordering::Relaxed);
            });
        });
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn single_threaded_restores_its_flag_after_a_panic() {
        let outside = threads();
        let caught = catch_unwind(|| single_threaded(|| panic!("inside single_threaded")));
        assert!(caught.is_err());
        assert_eq!(threads(), outside, "the thread stayed single-threaded");
    }

    #[test]
    fn every_chunk_is_handed_out_once_with_its_index() {
        for parallel in [false, true] {
            for (len, chunk) in [(0, 3), (1, 3), (10, 3), (12, 3), (1_000, 7), (5, 0)] {
                let mut out = std::vec![usize::MAX; len];
                for_each_chunk(&mut out, chunk, parallel, &|i, part| {
                    for (j, v) in part.iter_mut().enumerate() {
                        assert_eq!(*v, usize::MAX, "written twice");
                        *v = i * chunk.max(1) + j;
                    }
                });
                let want: std::vec::Vec<usize> = (0..len).collect();
                assert_eq!(
                    out, want,
                    "len {len}, chunks of {chunk}, parallel {parallel}"
                );
            }
        }
    }

    #[test]
    fn back_to_back_jobs_each_run_their_own_tasks() {
        // Many short jobs in a row, some after a pause long enough for helpers to park:
        // exercises the spin, park and wake paths and the per-job claim generations.
        for round in 0..2_000usize {
            if round % 500 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let tasks = 1 + round % 5;
            let sum = AtomicUsize::new(0);
            run(tasks, &|i| {
                sum.fetch_add(round * 10 + i, Ordering::Relaxed);
            });
            let want: usize = (0..tasks).map(|i| round * 10 + i).sum();
            assert_eq!(sum.load(Ordering::Relaxed), want, "round {round}");
        }
    }
}
