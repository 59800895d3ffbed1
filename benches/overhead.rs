//! Per-job overhead of stealpool against rayon and threadpool.
//!
//! - `tiny_jobs`: 100_000 trivial jobs (`i.wrapping_mul(31)`), all submitted, then all results
//!   collected; one iteration is the whole 100k batch. Pools have one thread per CPU.
//! - `nested_fib`: fib(32) split into two jobs while n > 20 (plain recursion below), where the
//!   jobs themselves submit and wait: stealpool's nested submit + `result()` against
//!   `rayon::join`.
//!
//! Pools are built once per benchmark, outside the timed closure.
//!
//! Run with `cargo bench --bench overhead` (about a minute).

mod workloads;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use workloads::*;

fn tiny_jobs(c: &mut Criterion) {
    let threads = num_cpus::get();
    let expected = run_sequential(TINY_JOBS, tiny_job);

    let mut group = c.benchmark_group("tiny_jobs");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(TINY_JOBS));

    {
        let pool = stealpool_pool(threads);
        assert_eq!(run_stealpool(&pool, TINY_JOBS, tiny_job), expected);
        group.bench_function("stealpool", |b| b.iter(|| run_stealpool(&pool, TINY_JOBS, tiny_job)));
    }
    {
        let pool = rayon_pool(threads);
        assert_eq!(run_rayon_spawn(&pool, TINY_JOBS, tiny_job), expected);
        group.bench_function("rayon_spawn_channel", |b| b.iter(|| run_rayon_spawn(&pool, TINY_JOBS, tiny_job)));
    }
    {
        let pool = threadpool::ThreadPool::new(threads);
        assert_eq!(run_threadpool(&pool, TINY_JOBS, tiny_job), expected);
        group.bench_function("threadpool", |b| b.iter(|| run_threadpool(&pool, TINY_JOBS, tiny_job)));
    }
    group.finish();
}

fn nested_fib(c: &mut Criterion) {
    let threads = num_cpus::get();

    let mut group = c.benchmark_group("nested_fib");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));

    {
        let pool = Arc::new(stealpool_pool(threads));
        assert_eq!(fib_stealpool(&pool), FIB_EXPECTED);
        group.bench_function("stealpool", |b| b.iter(|| fib_stealpool(&pool)));
    }
    {
        let pool = rayon_pool(threads);
        assert_eq!(pool.install(|| fib_join(FIB_N)), FIB_EXPECTED);
        group.bench_function("rayon_join", |b| b.iter(|| pool.install(|| fib_join(black_box(FIB_N)))));
    }
    group.finish();
}

criterion_group!(benches, tiny_jobs, nested_fib);
criterion_main!(benches);
