//! The process pool doing real work: a CPU-bound map over worker processes, a job that kills its
//! own worker (only that job fails; the pool replaces the worker), a job over its time limit.
//!
//! Run with `cargo run --release --example process_pool`.

use std::time::{Duration, Instant};

use stealpool::{Executor, JobError, ProcessPoolBuilder};

/// Counts the primes below `limit` by trial division: honest CPU work.
fn count_primes(limit: u64) -> usize {
    (2..limit).filter(|n| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0)).count()
}
stealpool::register_fn!(count_primes);

/// Dies the hard way, as a segfaulting native library would.
fn crash(_: ()) -> u32 {
    std::process::abort()
}
stealpool::register_fn!(crash);

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
stealpool::register_fn!(nap);

fn main() {
    let pool = ProcessPoolBuilder::new().task_timeout(Duration::from_secs(2)).build().expect("pool starts");
    println!("{} workers: pids {:?} (see them as stealpool-w* in ps)", pool.max_workers(), pool.worker_pids());

    let started = Instant::now();
    let limits: Vec<u64> = (1..=16).map(|i| i * 20_000).collect();
    let counts: Vec<usize> = pool.map(count_primes, limits.clone()).unwrap().map(Result::unwrap).collect();
    println!("primes below {:?}..{:?}: {:?}.. in {:?}", limits[0], limits[15], &counts[..4], started.elapsed());

    match pool.apply_async(crash, ()).unwrap().result() {
        Err(e @ JobError::WorkerDied { .. }) => println!("crash job: {e}"),
        other => println!("crash job: unexpected {other:?}"),
    }
    match pool.apply_async(nap, 60_000).unwrap().result() {
        Err(e @ JobError::TimedOut { .. }) => println!("overdue job: {e}"),
        other => println!("overdue job: unexpected {other:?}"),
    }
    let after = pool.apply_async(count_primes, 1000).unwrap().result();
    println!("the pool goes on: primes below 1000 = {after:?}; workers now {:?}", pool.worker_pids());
}
