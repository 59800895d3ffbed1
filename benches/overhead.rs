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

use std::hint::black_box;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stealpool::ThreadPoolExecutor;

/// Jobs per iteration of `tiny_jobs`.
const TINY_JOBS: u64 = 100_000;

/// The argument of the top-level fib call in `nested_fib`, and its value.
const FIB_N: u64 = 32;
const FIB_EXPECTED: u64 = 2_178_309;

/// At or below this, fib is computed by plain recursion instead of being split into jobs.
const FIB_CUTOFF: u64 = 20;

fn tiny_job(i: u64) -> u64 {
    i.wrapping_mul(31)
}

fn tiny_stealpool(pool: &ThreadPoolExecutor) -> u64 {
    let futures: Vec<_> = (0..TINY_JOBS).map(|i| pool.submit(move || tiny_job(i)).expect("submit")).collect();
    futures.into_iter().map(|f| f.result().expect("job failed")).fold(0, u64::wrapping_add)
}

fn tiny_rayon(pool: &rayon::ThreadPool) -> u64 {
    let (tx, rx) = mpsc::channel();
    for i in 0..TINY_JOBS {
        let tx = tx.clone();
        pool.spawn(move || tx.send(tiny_job(i)).expect("receiver alive"));
    }
    drop(tx);
    rx.iter().take(TINY_JOBS as usize).fold(0, u64::wrapping_add)
}

fn tiny_threadpool(pool: &threadpool::ThreadPool) -> u64 {
    let (tx, rx) = mpsc::channel();
    for i in 0..TINY_JOBS {
        let tx = tx.clone();
        pool.execute(move || tx.send(tiny_job(i)).expect("receiver alive"));
    }
    drop(tx);
    rx.iter().take(TINY_JOBS as usize).fold(0, u64::wrapping_add)
}

fn tiny_jobs(c: &mut Criterion) {
    let threads = num_cpus::get();
    let expected = (0..TINY_JOBS).map(tiny_job).fold(0, u64::wrapping_add);

    let mut group = c.benchmark_group("tiny_jobs");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(TINY_JOBS));

    {
        let pool = ThreadPoolExecutor::builder().num_workers(threads).build().expect("stealpool pool");
        assert_eq!(tiny_stealpool(&pool), expected);
        group.bench_function("stealpool", |b| b.iter(|| tiny_stealpool(&pool)));
    }
    {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool");
        assert_eq!(tiny_rayon(&pool), expected);
        group.bench_function("rayon_spawn_channel", |b| b.iter(|| tiny_rayon(&pool)));
    }
    {
        let pool = threadpool::ThreadPool::new(threads);
        assert_eq!(tiny_threadpool(&pool), expected);
        group.bench_function("threadpool", |b| b.iter(|| tiny_threadpool(&pool)));
    }
    group.finish();
}

/// Plain recursive fib, used below the cutoff.
fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

/// fib(n) with both halves submitted to `pool` while n > cutoff. Runs inside worker threads:
/// waiting on a future of the same pool from a worker is supported without deadlock.
fn fib_pool(pool: &Arc<ThreadPoolExecutor>, n: u64) -> u64 {
    if n <= FIB_CUTOFF {
        return fib(n);
    }
    let p = Arc::clone(pool);
    let a = pool.submit(move || fib_pool(&p, n - 1)).expect("submit");
    let p = Arc::clone(pool);
    let b = pool.submit(move || fib_pool(&p, n - 2)).expect("submit");
    a.result().unwrap() + b.result().unwrap()
}

/// The top-level call from outside the pool: one job running `fib_pool(FIB_N)`.
fn fib_stealpool(pool: &Arc<ThreadPoolExecutor>) -> u64 {
    let p = Arc::clone(pool);
    pool.submit(move || fib_pool(&p, black_box(FIB_N))).expect("submit").result().unwrap()
}

/// The same split with `rayon::join`; call inside `pool.install`.
fn fib_join(n: u64) -> u64 {
    if n <= FIB_CUTOFF {
        return fib(n);
    }
    let (a, b) = rayon::join(|| fib_join(n - 1), || fib_join(n - 2));
    a + b
}

fn nested_fib(c: &mut Criterion) {
    let threads = num_cpus::get();

    let mut group = c.benchmark_group("nested_fib");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));

    {
        let pool = Arc::new(ThreadPoolExecutor::builder().num_workers(threads).build().expect("stealpool pool"));
        assert_eq!(fib_stealpool(&pool), FIB_EXPECTED);
        group.bench_function("stealpool", |b| b.iter(|| fib_stealpool(&pool)));
    }
    {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool");
        assert_eq!(pool.install(|| fib_join(FIB_N)), FIB_EXPECTED);
        group.bench_function("rayon_join", |b| b.iter(|| pool.install(|| fib_join(black_box(FIB_N)))));
    }
    group.finish();
}

criterion_group!(benches, tiny_jobs, nested_fib);
criterion_main!(benches);
