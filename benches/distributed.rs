//! Throughput of the Redis executor on this machine (loopback): tiny jobs (two integers in, one
//! out) through `apply_async` and through `map` with chunks of 1000, with 1, 2 and 4 worker
//! processes (each a worker with a local pool of one process), and 64 KiB payload jobs in MiB/s.
//! Prints jobs/s. Starts its own `redis-server` (skipped, with the reason, when there is none)
//! and its workers: this binary started again as `--stealpool-worker URL`.
//!
//! `cargo bench --features redis --bench distributed`; in the same run as Celery and RQ:
//! `benches/distributed/run.sh --stealpool-cmd "target/release/deps/distributed-*"` after
//! `cargo bench --features redis --bench distributed --no-run` (see that script).

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use stealpool::distributed::RedisExecutor;
use stealpool::{Executor, MapOptions};

fn add((a, b): (u64, u64)) -> u64 {
    a + b
}
stealpool::register_fn!(add);

fn payload_len(bytes: ByteBuf) -> usize {
    bytes.len()
}
stealpool::register_fn!(payload_len);

/// A worker process, killed and reaped when dropped.
struct WorkerProcess(Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One measured scenario: its name (`submit`, `map`, `payload`), seconds, jobs.
struct Measured(&'static str, f64, u64);

/// Runs the three scenarios on the Redis at `url` with `n` worker processes.
fn measure(url: &str, n: usize, jobs: u64, items: u64, payloads: usize, chunk: usize) -> Vec<Measured> {
    let exe = std::env::current_exe().expect("the bench binary");
    let workers: Vec<_> = (0..n)
        .map(|_| {
            let child = Command::new(&exe)
                .args(["--stealpool-worker", url, "--processes", "1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start a worker");
            WorkerProcess(child)
        })
        .collect();
    let pool = RedisExecutor::new(url).expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.workers().map_or(0, |w| w.len()) < n {
        assert!(Instant::now() < deadline, "the workers did not announce themselves");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut measured = Vec::new();

    let started = Instant::now();
    let futures: Vec<_> = (0..jobs).map(|i| pool.apply_async(add, (i, i)).unwrap()).collect();
    let sum: u64 = futures.into_iter().map(|f| f.result().unwrap()).sum();
    assert_eq!(sum, jobs * (jobs - 1));
    measured.push(Measured("submit", started.elapsed().as_secs_f64(), jobs));

    let started = Instant::now();
    let opts = MapOptions::new().chunksize(chunk);
    let sum: u64 = pool.map_with(add, (0..items).map(|i| (i, i)), opts).unwrap().map(Result::unwrap).sum();
    assert_eq!(sum, items * (items - 1));
    measured.push(Measured("map", started.elapsed().as_secs_f64(), items));

    let size = 64 << 10;
    let started = Instant::now();
    let futures: Vec<_> =
        (0..payloads).map(|_| pool.apply_async(payload_len, ByteBuf::from(vec![7u8; size])).unwrap()).collect();
    let total: usize = futures.into_iter().map(|f| f.result().unwrap()).sum();
    assert_eq!(total, payloads * size);
    measured.push(Measured("payload", started.elapsed().as_secs_f64(), payloads as u64));
    drop(pool);
    drop(workers);
    measured
}

fn main() {
    stealpool::distributed::serve_if_requested();
    // `cargo bench` adds `--bench`; the comparison script (benches/distributed/run.sh
    // --stealpool-cmd) passes `WORKERS N_SUBMIT N_MAP N_PAYLOAD`, with REDIS_URL and CHUNK set.
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if let (&[workers, jobs, items, payloads], Ok(url)) = (args.as_slice(), std::env::var("REDIS_URL")) {
        let chunk = std::env::var("CHUNK").ok().and_then(|c| c.parse().ok()).unwrap_or(100);
        for Measured(scenario, secs, count) in measure(&url, workers, jobs as u64, items as u64, payloads, chunk) {
            println!("{scenario} {secs:.6} {count}");
        }
        return;
    }
    if let Some(reason) = redis_server::unavailable() {
        println!("distributed bench skipped: {reason}");
        return;
    }
    let server = redis_server::RedisServer::start();
    for n in [1usize, 2, 4] {
        for Measured(scenario, secs, count) in measure(&server.url(), n, 20_000, 200_000, 1_000, 1000) {
            let rate = count as f64 / secs;
            match scenario {
                "payload" => println!(
                    "distributed/64 KiB payload/{n} workers: {count} jobs in {secs:.2} s = {:.1} MiB/s",
                    rate * 64.0 / 1024.0
                ),
                "map" => println!(
                    "distributed/map chunks of 1000/{n} workers: {count} items in {secs:.2} s = {rate:.0} items/s"
                ),
                _ => println!("distributed/{scenario}/{n} workers: {count} jobs in {secs:.2} s = {rate:.0} jobs/s"),
            }
        }
    }
}
