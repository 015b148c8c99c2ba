//! The native engine in its steady state allocates nothing but the output it hands back: a
//! trained U-Net, DiT and MLP, int8 and fp32, run a few times to warm the engine's kept buffers,
//! then run again under a global allocator that counts every allocation made on any thread.
//! (One test in this binary: the counter is process-wide.)
//!
//! `MF_TRACE_ALLOCATIONS=1` prints each counted allocation's backtrace, to find where one comes
//! from.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mf_edge::model::Model;
use mf_edge::native::NativeEngine;
use mf_edge::tensor::{Shape, Value};
use mf_kernels::Isa;

/// Counts allocations (and reallocations) while [`COUNTING`] is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static TRACES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static TRACING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set while this thread records a backtrace (which allocates itself).
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    fn note(&self) {
        if !COUNTING.load(Ordering::Relaxed) || IN_TRACE.with(Cell::get) {
            return;
        }
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if TRACING.load(Ordering::Relaxed) {
            IN_TRACE.with(|t| t.set(true));
            let trace = std::backtrace::Backtrace::force_capture().to_string();
            TRACES.lock().unwrap().push(trace);
            IN_TRACE.with(|t| t.set(false));
        }
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only
// atomics and a thread-local flag.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The inputs of one denoising call at batch `n` (made before counting starts).
fn inputs(n: usize, seed: usize) -> Vec<(&'static str, Value)> {
    let z: Vec<f32> = (0..n * 784)
        .map(|i| (((i + seed) * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.5)
        .collect();
    let classes = (0..n).map(|i| ((i + seed) % 10) as i64).collect();
    vec![
        ("z", Value::F32(z, Shape::from_slice(&[n, 1, 28, 28]))),
        ("t", Value::F32(vec![1.0; n], Shape::from_slice(&[n]))),
        ("r", Value::F32(vec![0.0; n], Shape::from_slice(&[n]))),
        ("class", Value::I64(classes, Shape::from_slice(&[n]))),
    ]
}

/// Allocations made (on any thread) by one call of `engine` at batch `n` after three warm-up
/// calls at that batch, the inputs made beforehand.
fn steady_allocations(engine: &NativeEngine, n: usize) -> usize {
    for seed in 0..3 {
        engine.run(inputs(n, seed)).unwrap();
    }
    let call = inputs(n, 7);
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let out = engine.run(call);
    COUNTING.store(false, Ordering::SeqCst);
    let out = out.unwrap();
    let Value::F32(data, shape) = &out else {
        panic!("float output expected, got {}", out.type_name())
    };
    assert_eq!(shape.as_slice(), &[n, 1, 28, 28]);
    assert!(data.iter().all(|v| v.is_finite()));
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// The frames of this workspace's crates in each recorded trace, for the failure message.
fn traces() -> String {
    let traces = std::mem::take(&mut *TRACES.lock().unwrap());
    let mut out = String::new();
    for trace in traces {
        let frames: Vec<&str> = trace
            .lines()
            .filter(|l| l.contains("crates/mf-"))
            .take(4)
            .map(str::trim)
            .collect();
        out += &format!("  {}\n", frames.join(" <- "));
    }
    out
}

#[test]
fn the_native_engine_allocates_only_its_output_once_warm() {
    TRACING.store(
        std::env::var_os("MF_TRACE_ALLOCATIONS").is_some(),
        Ordering::SeqCst,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (arch, config) in [("unet", common::UNET_CONFIG), ("dit", common::DIT_CONFIG)] {
        let run = dir.path().join(arch);
        assert!(common::train(config, &run).is_finite());
        let [fp32, _, int8] = common::export_three(&run, dir.path(), arch);
        files.push((format!("{arch} fp32"), fp32));
        files.push((format!("{arch} int8"), int8));
    }
    let mlp = common::fixture();
    files.push(("mlp fp32".into(), mlp.fp32.clone()));
    files.push(("mlp int8".into(), mlp.int8.clone()));

    let mut report = String::new();
    for (name, path) in &files {
        let engine =
            NativeEngine::new(&Model::open(path).unwrap(), Isa::select().unwrap()).unwrap();
        for n in [1, 4] {
            // The output's data buffer is the one allocation a call may make.
            let extra = steady_allocations(&engine, n).saturating_sub(1);
            if extra > 0 {
                report += &format!("{name}, batch {n}: {extra} allocations\n{}", traces());
            }
        }
    }
    assert!(
        report.is_empty(),
        "allocations in the steady state:\n{report}"
    );
}
