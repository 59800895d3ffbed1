//! Many consumer processes on one manager queue: every item arrives exactly once. The ignored
//! test is a local measurement, not a test of speed (many consumers against one); run it with
//! `cargo test --release --test manager_consumers -- --ignored --nocapture`. Its figures are
//! printed, never asserted.

use std::time::Instant;

use stealpool::manager::{Manager, Queue};
use stealpool::{Executor, ProcessPoolExecutor};

fn produce((q, n, consumers): (Queue<u64>, u64, u64)) -> u64 {
    (0..n).for_each(|i| q.put(i).unwrap());
    // One end marker per consumer.
    (0..consumers).for_each(|_| q.put(u64::MAX).unwrap());
    n
}
stealpool::register_fn!(produce);

fn consume(q: Queue<u64>) -> Vec<u64> {
    std::iter::from_fn(|| Some(q.get().unwrap())).take_while(|i| *i != u64::MAX).collect()
}
stealpool::register_fn!(consume);

fn run(pool: &ProcessPoolExecutor, manager: &Manager, n: u64, consumers: u64) -> f64 {
    let q = manager.queue::<u64>().unwrap();
    let started = Instant::now();
    let got: Vec<_> = (0..consumers).map(|_| pool.apply_async(consume, q.clone()).unwrap()).collect();
    let put = pool.apply_async(produce, (q, n, consumers)).unwrap();
    assert_eq!(put.result(), Ok(n));
    let mut all: Vec<u64> = got.into_iter().flat_map(|f| f.result().unwrap()).collect();
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every item exactly once");
    seconds
}

#[test]
fn many_consumer_processes_get_every_item_exactly_once() {
    let manager = Manager::new().unwrap();
    let pool = ProcessPoolExecutor::new(5);
    for consumers in [2, 4] {
        run(&pool, &manager, 20_000, consumers);
    }
}

#[test]
#[ignore]
fn many_consumers_against_one() {
    let n = std::env::var("CONSUMERS_N").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let manager = Manager::new().unwrap();
    let pool = ProcessPoolExecutor::new(5);
    run(&pool, &manager, 1000, 4);
    for round in 0..3 {
        for consumers in [1, 2, 4] {
            let s = run(&pool, &manager, n, consumers);
            println!("round {round}: {consumers} consumer(s): {:.0} items/s", n as f64 / s);
        }
    }
}
