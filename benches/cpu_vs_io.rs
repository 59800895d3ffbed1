//! CPU-bound vs IO-bound batches on stealpool, rayon and threadpool.
//!
//! - `cpu_bound`: 64 jobs of about 15 ms of integer work each, on as many threads as CPUs
//!   (`num_cpus::get()`), against a plain sequential loop.
//! - `io_bound`: 512 jobs that each block for 10 ms (`std::thread::sleep`, standing in for
//!   blocking IO), on 64 threads. The ideal time is 512 * 10 ms / 64 = 80 ms.
//!
//! Every pool is built once per benchmark, outside the timed closure: only submitting the batch
//! and collecting its results is measured.
//!
//! Run with `cargo bench --bench cpu_vs_io` (about a minute and a half).

use std::hint::black_box;
use std::sync::mpsc;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use stealpool::ThreadPoolExecutor;

/// Jobs in the CPU-bound batch.
const CPU_JOBS: u64 = 64;

/// Iterations of the mixing loop in one CPU-bound job, chosen so that one job takes ~15 ms.
///
/// Calibrated on the 2-core development machine by timing `cpu_job` (built with `-C opt-level=3`,
/// as `cargo bench` does) over 10_000_000 iterations: median 16.4 ms over 20 runs, so
/// 15 ms ≈ 9_150_000 iterations. The `sequential` variant should come out at 64 * 15 ms ≈ 0.96 s.
const CPU_ITERS: u64 = 9_150_000;

/// Jobs in the IO-bound batch.
const IO_JOBS: u64 = 512;

/// How long each IO-bound job blocks.
const IO_SLEEP: Duration = Duration::from_millis(10);

/// Threads of every pool in the IO-bound group.
const IO_THREADS: usize = 64;

/// A deterministic integer loop: xorshift64 feeding an LCG-style accumulator. `black_box` on the
/// iteration count keeps the compiler from folding the loop away.
fn cpu_job(seed: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut acc = 0u64;
    for _ in 0..black_box(CPU_ITERS) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = acc.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(x);
    }
    black_box(acc)
}

/// Simulated blocking IO: the sleep is the workload being measured.
fn io_job(i: u64) -> u64 {
    std::thread::sleep(IO_SLEEP);
    i
}

fn stealpool_pool(threads: usize) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder().num_workers(threads).build().expect("stealpool pool")
}

fn rayon_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool")
}

/// Submit `jobs` jobs running `f(i)`, keep the futures, then wait on each in order.
fn run_stealpool(pool: &ThreadPoolExecutor, jobs: u64, f: fn(u64) -> u64) -> u64 {
    let futures: Vec<_> = (0..jobs).map(|i| pool.submit(move || f(i)).expect("submit")).collect();
    futures.into_iter().map(|fut| fut.result().expect("job failed")).fold(0, u64::wrapping_add)
}

/// rayon's idiomatic form: `install` + a parallel iterator (rayon splits the range adaptively
/// and the calling thread blocks until the whole batch is done).
fn run_rayon(pool: &rayon::ThreadPool, jobs: u64, f: fn(u64) -> u64) -> u64 {
    pool.install(|| (0..jobs).into_par_iter().map(f).reduce(|| 0, u64::wrapping_add))
}

/// threadpool has no futures: each job sends its result over an mpsc channel.
fn run_threadpool(pool: &threadpool::ThreadPool, jobs: u64, f: fn(u64) -> u64) -> u64 {
    let (tx, rx) = mpsc::channel();
    for i in 0..jobs {
        let tx = tx.clone();
        pool.execute(move || tx.send(f(i)).expect("receiver alive"));
    }
    drop(tx);
    rx.iter().take(jobs as usize).fold(0, u64::wrapping_add)
}

fn cpu_bound(c: &mut Criterion) {
    let threads = num_cpus::get();
    let expected = (0..CPU_JOBS).map(cpu_job).fold(0, u64::wrapping_add);

    let mut group = c.benchmark_group("cpu_bound");
    // One iteration is ~0.5-1 s, so take one iteration per sample (Flat) instead of criterion's
    // default linear ramp, which would need 55 iterations for 10 samples.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(CPU_JOBS));

    group.bench_function("sequential", |b| b.iter(|| (0..CPU_JOBS).map(cpu_job).fold(0, u64::wrapping_add)));

    {
        let pool = stealpool_pool(threads);
        assert_eq!(run_stealpool(&pool, CPU_JOBS, cpu_job), expected);
        group.bench_function("stealpool", |b| b.iter(|| run_stealpool(&pool, CPU_JOBS, cpu_job)));
    }
    {
        let pool = rayon_pool(threads);
        assert_eq!(run_rayon(&pool, CPU_JOBS, cpu_job), expected);
        group.bench_function("rayon", |b| b.iter(|| run_rayon(&pool, CPU_JOBS, cpu_job)));
    }
    {
        let pool = threadpool::ThreadPool::new(threads);
        assert_eq!(run_threadpool(&pool, CPU_JOBS, cpu_job), expected);
        group.bench_function("threadpool", |b| b.iter(|| run_threadpool(&pool, CPU_JOBS, cpu_job)));
    }
    group.finish();
}

fn io_bound(c: &mut Criterion) {
    let expected = (0..IO_JOBS).fold(0, u64::wrapping_add);

    let mut group = c.benchmark_group("io_bound");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(IO_JOBS));

    // No `sequential` variant: 512 * 10 ms = 5.12 s per iteration would dominate the whole run
    // and tells nothing new.

    {
        let pool = stealpool_pool(IO_THREADS);
        assert_eq!(run_stealpool(&pool, IO_JOBS, io_job), expected);
        group.bench_function("stealpool", |b| b.iter(|| run_stealpool(&pool, IO_JOBS, io_job)));
    }
    {
        let pool = rayon_pool(IO_THREADS);
        assert_eq!(run_rayon(&pool, IO_JOBS, io_job), expected);
        group.bench_function("rayon", |b| b.iter(|| run_rayon(&pool, IO_JOBS, io_job)));
    }
    {
        let pool = threadpool::ThreadPool::new(IO_THREADS);
        assert_eq!(run_threadpool(&pool, IO_JOBS, io_job), expected);
        group.bench_function("threadpool", |b| b.iter(|| run_threadpool(&pool, IO_JOBS, io_job)));
    }
    group.finish();
}

criterion_group!(benches, cpu_bound, io_bound);
criterion_main!(benches);
