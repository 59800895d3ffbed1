//! CPU-bound vs IO-bound batches on stealpool's two pools, rayon and threadpool.
//!
//! - `cpu_bound`: 64 jobs of about 15 ms of integer work each, on as many threads as CPUs
//!   (`num_cpus::get()`), against a plain sequential loop.
//! - `io_bound`: 512 jobs that each block for 10 ms (`std::thread::sleep`, standing in for
//!   blocking IO), on 64 threads, against the sequential loop (5.12 s). The ideal time with 64
//!   threads is 512 * 10 ms / 64 = 80 ms.
//!
//! Every pool is built once per benchmark, outside the timed closure: only submitting the batch
//! and collecting its results is measured.
//!
//! Run with `cargo bench --bench cpu_vs_io` (about two and a half minutes).

mod workloads;

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use workloads::*;

#[cfg(unix)]
use workloads::process;

fn cpu_bound(c: &mut Criterion) {
    let threads = num_cpus::get();
    let expected = run_sequential(CPU_JOBS, cpu_job);

    let mut group = c.benchmark_group("cpu_bound");
    // One iteration is ~0.5-1 s, so take one iteration per sample (Flat) instead of criterion's
    // default linear ramp, which would need 55 iterations for 10 samples.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(CPU_JOBS));

    group.bench_function("sequential", |b| b.iter(|| run_sequential(CPU_JOBS, cpu_job)));

    {
        let pool = stealpool_pool(threads);
        assert_eq!(run_stealpool(&pool, CPU_JOBS, cpu_job), expected);
        group.bench_function("stealpool", |b| b.iter(|| run_stealpool(&pool, CPU_JOBS, cpu_job)));
    }
    {
        let pool = stealpool::ProcessPoolExecutor::new(threads);
        assert_eq!(process::run_process(&pool, CPU_JOBS, cpu_job), expected);
        group.bench_function("stealpool-process", |b| b.iter(|| process::run_process(&pool, CPU_JOBS, cpu_job)));
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

    // 512 x 10 ms = 5.12 s per sequential iteration: criterion's minimum of 10 samples makes this
    // the longest part of the bench (about 50 s), but the issue asks for the baseline.
    group.bench_function("sequential", |b| b.iter(|| run_sequential(IO_JOBS, io_job)));

    {
        let pool = stealpool_pool(IO_THREADS);
        assert_eq!(run_stealpool(&pool, IO_JOBS, io_job), expected);
        group.bench_function("stealpool", |b| b.iter(|| run_stealpool(&pool, IO_JOBS, io_job)));
    }
    {
        let pool = stealpool::ProcessPoolExecutor::new(IO_THREADS);
        assert_eq!(process::run_process(&pool, IO_JOBS, io_job), expected);
        group.bench_function("stealpool-process", |b| b.iter(|| process::run_process(&pool, IO_JOBS, io_job)));
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
