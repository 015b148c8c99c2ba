//! The paint path's resizes (`mf_edge::images::resize_pixels`, bilinear): a model-sized
//! sample (28×28) up to camera frames of 640×480, and frames down to the model's size, grey
//! and RGB, in output bytes per second.
//!
//! Run: `cargo bench -p mf-benches --bench paint`.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mf_edge::images::resize_pixels;

/// A frame of `channels` interleaved bytes that varies along both axes.
fn frame((width, height): (u32, u32), channels: usize) -> Vec<u8> {
    (0..height as usize)
        .flat_map(|y| (0..width as usize * channels).map(move |i| ((i * 7 + y * 13) % 251) as u8))
        .collect()
}

fn resize(c: &mut Criterion) {
    let mut group = c.benchmark_group("resize");
    let (model, camera) = ((28, 28), (640, 480));
    for channels in [1, 3] {
        for (name, from, to) in [("up", model, camera), ("down", camera, model)] {
            let pixels = frame(from, channels);
            group.throughput(Throughput::Bytes(
                to.0 as u64 * to.1 as u64 * channels as u64,
            ));
            group.bench_function(BenchmarkId::new(name, format!("{channels}ch")), |b| {
                b.iter(|| resize_pixels(&pixels, from, channels, to).expect("valid sizes"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, resize);
criterion_main!(benches);
