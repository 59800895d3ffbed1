//! The main demo: submit real work to a thread pool, wait on the futures, print the results.
//!
//! Run with `cargo run --release --example quickstart`.

use std::time::{Duration, Instant};

use stealpool::{Executor, JobError, ReturnWhen, ThreadPoolExecutor, as_completed, wait};

/// Counts the primes below `limit` the slow way: real CPU work.
fn count_primes(limit: u64) -> usize {
    (2..limit).filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)).count()
}

fn main() {
    let pool = ThreadPoolExecutor::new(0); // one worker per CPU
    println!("pool with {} workers", pool.max_workers());

    // submit + result, like concurrent.futures
    let started = Instant::now();
    let limits = [50_000u64, 100_000, 150_000, 200_000];
    let futures: Vec<_> = limits.iter().map(|&l| pool.submit(move || (l, count_primes(l))).unwrap()).collect();
    for f in futures {
        let (limit, primes) = f.result().expect("counting primes does not panic");
        println!("primes below {limit:>7}: {primes}");
    }
    println!("4 jobs in {:.1?}", started.elapsed());

    // map: results in input order
    let squares: Vec<u64> = pool.map(|x: u64| x * x, 1..=10).unwrap().map(Result::unwrap).collect();
    println!("map squares: {squares:?}");

    // a panicking job is an error value; the pool goes on
    let bad = pool.submit(|| -> u32 { panic!("bad record on line 17") }).unwrap();
    match bad.result() {
        Err(JobError::Panicked { message, .. }) => println!("job failed as expected: {message}"),
        other => println!("unexpected: {other:?}"),
    }

    // as_completed: handle results as they come
    let futures: Vec<_> = (1..=4u64)
        .map(|i| {
            pool.submit(move || {
                std::thread::sleep(Duration::from_millis(40 * (5 - i)));
                i
            })
            .unwrap()
        })
        .collect();
    let order: Vec<u64> =
        as_completed(futures, Some(Duration::from_secs(10))).map(|f| f.unwrap().result().unwrap()).collect();
    println!("as_completed yields in completion order: {order:?}");

    // wait for the first of several
    let futures: Vec<_> = [300u64, 10, 200]
        .iter()
        .map(|&ms| {
            pool.submit(move || {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            })
            .unwrap()
        })
        .collect();
    let w = wait(futures, ReturnWhen::FirstCompleted, None);
    println!("wait(FirstCompleted): {} done, {} still running", w.done.len(), w.not_done.len());

    // awaitable from async code
    let f = pool.submit(|| count_primes(10_000)).unwrap();
    println!("awaited: {} primes below 10000", futures_lite_block_on(f).unwrap());

    pool.shutdown(true, false);
    println!("shut down cleanly");
}

/// A minimal executor for one future, so the example needs no async runtime.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}
