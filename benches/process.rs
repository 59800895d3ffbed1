//! Criterion benches of the process pool: small jobs through `apply_async` and `map`, 1 MiB
//! payloads against a raw ipc-channel transfer between two processes, and start-up time.
//! The comparison with Python's pools is `process_compare` (it needs interleaved rounds and a
//! second runtime).
//!
//! Run with `cargo bench --bench process` (about a minute and a half).

mod workloads;

use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group};
use stealpool::ProcessPoolExecutor;
use workloads::process::*;

const WORKERS: usize = 2;

fn small_jobs(c: &mut Criterion) {
    let pool = ProcessPoolExecutor::new(WORKERS);
    let mut group = c.benchmark_group("process_small_jobs");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    let n = 10_000;
    group.throughput(Throughput::Elements(n));
    group.bench_function("apply_async", |b| b.iter(|| submit_small(&pool, n)));
    let m = 200_000;
    group.throughput(Throughput::Elements(m));
    group.bench_function("map_default_chunks", |b| b.iter(|| map_small(&pool, m)));
    group.finish();
}

fn payload(c: &mut Criterion) {
    let pool = ProcessPoolExecutor::new(WORKERS);
    let peer = RawPeer::start();
    let data = vec![3u8; MIB];
    let n = 50;
    let mut group = c.benchmark_group("process_payload_1mib");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(n * MIB as u64));
    group.bench_function("stealpool_apply_async", |b| {
        b.iter_batched(|| payload_args(n, &data), |args| payloads(&pool, args), BatchSize::PerIteration)
    });
    group.bench_function("raw_ipc_channel_bytes", |b| b.iter(|| peer.transfer(n, &data)));
    group.finish();
}

fn start_up(c: &mut Criterion) {
    // Start the fork server once; what is measured is a pool's start-up with it running.
    drop(ProcessPoolExecutor::new(1));
    let mut group = c.benchmark_group("process_startup_first_job");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for workers in [2, 8] {
        group.bench_function(format!("{workers}_workers"), |b| b.iter(|| startup(workers)));
    }
    group.finish();
}

fn main() {
    serve_raw_peer_if_asked();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

criterion_group!(benches, small_jobs, payload, start_up);
