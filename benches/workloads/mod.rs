//! The workloads every benchmark runs, one function per contender, shared by the criterion
//! benches (`cpu_vs_io`, `overhead`) and the interleaved comparison (`compare`).
//!
//! Each bench binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

#[cfg(unix)]
#[cfg(feature = "process")]
pub mod process;

use std::hint::black_box;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rayon::prelude::*;
use stealpool::ThreadPoolExecutor;

/// Jobs in the CPU-bound batch.
pub const CPU_JOBS: u64 = 64;

/// Iterations of the mixing loop in one CPU-bound job, chosen so that one job takes ~15 ms.
///
/// Calibrated on the 2-core development machine by timing `cpu_job` (built with `-C opt-level=3`,
/// as `cargo bench` does) over 10_000_000 iterations: median 16.4 ms over 20 runs, so
/// 15 ms ≈ 9_150_000 iterations. The sequential batch should come out at 64 * 15 ms ≈ 0.96 s.
pub const CPU_ITERS: u64 = 9_150_000;

/// Jobs in the IO-bound batch.
pub const IO_JOBS: u64 = 512;

/// How long each IO-bound job blocks.
pub const IO_SLEEP: Duration = Duration::from_millis(10);

/// Threads of every pool in the IO-bound batch; the ideal time is 512 * 10 ms / 64 = 80 ms.
pub const IO_THREADS: usize = 64;

/// Jobs per tiny-jobs batch.
pub const TINY_JOBS: u64 = 100_000;

/// The argument of the top-level nested fib call, its value, and the split cutoff.
pub const FIB_N: u64 = 32;
pub const FIB_EXPECTED: u64 = 2_178_309;
pub const FIB_CUTOFF: u64 = 20;

/// A deterministic integer loop: xorshift64 feeding an LCG-style accumulator. `black_box` on the
/// iteration count keeps the compiler from folding the loop away.
pub fn cpu_job(seed: u64) -> u64 {
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
pub fn io_job(i: u64) -> u64 {
    std::thread::sleep(IO_SLEEP);
    i
}

/// The tiny job: almost no work, so the pool's per-job overhead is what is measured.
pub fn tiny_job(i: u64) -> u64 {
    i.wrapping_mul(31)
}

/// The sequential baseline: `f(0) + ... + f(jobs - 1)` on the calling thread.
pub fn run_sequential(jobs: u64, f: fn(u64) -> u64) -> u64 {
    (0..jobs).map(f).fold(0, u64::wrapping_add)
}

pub fn stealpool_pool(threads: usize) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder().num_workers(threads).build().expect("stealpool pool")
}

pub fn rayon_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool")
}

/// Submit `jobs` jobs running `f(i)`, keep the futures, then wait on each in order.
pub fn run_stealpool(pool: &ThreadPoolExecutor, jobs: u64, f: fn(u64) -> u64) -> u64 {
    let futures: Vec<_> = (0..jobs).map(|i| pool.submit(move || f(i)).expect("submit")).collect();
    futures.into_iter().map(|fut| fut.result().expect("job failed")).fold(0, u64::wrapping_add)
}

/// rayon's idiomatic batch: `install` + a parallel iterator (rayon splits the range adaptively
/// and the calling thread blocks until the whole batch is done).
pub fn run_rayon(pool: &rayon::ThreadPool, jobs: u64, f: fn(u64) -> u64) -> u64 {
    pool.install(|| (0..jobs).into_par_iter().map(f).reduce(|| 0, u64::wrapping_add))
}

/// rayon's closest form to "submit a job, get its result": `spawn`, with the result sent back
/// over an mpsc channel.
pub fn run_rayon_spawn(pool: &rayon::ThreadPool, jobs: u64, f: fn(u64) -> u64) -> u64 {
    let (tx, rx) = mpsc::channel();
    for i in 0..jobs {
        let tx = tx.clone();
        pool.spawn(move || tx.send(f(i)).expect("receiver alive"));
    }
    drop(tx);
    rx.iter().take(jobs as usize).fold(0, u64::wrapping_add)
}

/// threadpool has no futures: each job sends its result over an mpsc channel.
pub fn run_threadpool(pool: &threadpool::ThreadPool, jobs: u64, f: fn(u64) -> u64) -> u64 {
    let (tx, rx) = mpsc::channel();
    for i in 0..jobs {
        let tx = tx.clone();
        pool.execute(move || tx.send(f(i)).expect("receiver alive"));
    }
    drop(tx);
    rx.iter().take(jobs as usize).fold(0, u64::wrapping_add)
}

/// Plain recursive fib, used below the cutoff.
pub fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

/// fib(n) with both halves submitted to `pool` while n > cutoff. Runs inside worker threads:
/// waiting on a future of the same pool from a worker is supported without deadlock.
pub fn fib_pool(pool: &Arc<ThreadPoolExecutor>, n: u64) -> u64 {
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
pub fn fib_stealpool(pool: &Arc<ThreadPoolExecutor>) -> u64 {
    let p = Arc::clone(pool);
    pool.submit(move || fib_pool(&p, black_box(FIB_N))).expect("submit").result().unwrap()
}

/// The same split with `rayon::join`; call inside `pool.install`.
pub fn fib_join(n: u64) -> u64 {
    if n <= FIB_CUTOFF {
        return fib(n);
    }
    let (a, b) = rayon::join(|| fib_join(n - 1), || fib_join(n - 2));
    a + b
}
