//! One program, client and worker: the client maps a registered function over 10 000 numbers
//! on whatever workers serve the Redis at the URL; the same binary started with
//! `--stealpool-worker URL` is such a worker, on any host. The README's "Beyond one machine"
//! gives the commands:
//!
//! ```text
//! redis-server --port 6379 --appendonly yes --appendfsync always --dir "$(mktemp -d)"
//! target/release/examples/distributed_squares --stealpool-worker redis://127.0.0.1:6379/ --processes 2   # host 1
//! target/release/examples/distributed_squares --stealpool-worker redis://127.0.0.1:6379/ --processes 2   # host 2
//! target/release/examples/distributed_squares redis://127.0.0.1:6379/                                   # the client
//! ```

use std::time::Instant;

use stealpool::distributed::RedisExecutor;
use stealpool::{Executor, MapOptions};

/// The number of steps of the Collatz sequence from `n` to 1.
fn collatz_len(mut n: u64) -> u32 {
    let mut steps = 0;
    while n > 1 {
        n = if n.is_multiple_of(2) { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}
stealpool::register_fn!(collatz_len);

fn main() {
    // A worker when started as `distributed_squares --stealpool-worker URL`: serves, never returns.
    stealpool::distributed::serve_if_requested();

    let url = std::env::args().nth(1).unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let pool = match RedisExecutor::new(&url) {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("distributed_squares: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let lens = match pool.map_with(collatz_len, 1..=10_000u64, MapOptions::new().chunksize(500)) {
        Ok(results) => results.collect::<Result<Vec<u32>, _>>(),
        Err(e) => {
            eprintln!("distributed_squares: {e}");
            std::process::exit(1);
        }
    };
    let lens = match lens {
        Ok(lens) => lens,
        // A job that failed (its worker crashed, a worker of another build, Redis lost): say
        // what happened and stop.
        Err(e) => {
            eprintln!("distributed_squares: a job failed: {e}");
            std::process::exit(1);
        }
    };
    let (longest, start) = lens.iter().zip(1u64..).max().map(|(l, n)| (*l, n)).unwrap_or((0, 0));
    assert_eq!((longest, start), (261, 6171), "the longest Collatz chain below 10 000");
    println!(
        "10000 numbers on Redis workers in {:.2?}: the longest chain starts at {start} ({longest} steps)",
        started.elapsed()
    );
    for w in pool.workers().unwrap_or_default() {
        println!("worker {} ({} processes): {} jobs done", w.name, w.processes, w.jobs_done);
    }
}
