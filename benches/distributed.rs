//! Throughput of the Redis executor on this machine (loopback): tiny jobs (two integers in, one
//! out) through `apply_async` and through `map` with chunks of 1000, with 1, 2 and 4 worker
//! processes (each a worker with a local pool of one process), and 64 KiB payload jobs in MiB/s.
//! Prints jobs/s. Starts its own `redis-server` (skipped, with the reason, when there is none)
//! and its workers: this binary started again as `--stealpool-worker URL`.
//!
//! `cargo bench --features redis --bench distributed`

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

fn main() {
    stealpool::distributed::serve_if_requested();
    if let Some(reason) = redis_server::unavailable() {
        println!("distributed bench skipped: {reason}");
        return;
    }
    let server = redis_server::RedisServer::start();
    let url = server.url();
    let exe = std::env::current_exe().expect("the bench binary");
    let mut workers = Vec::new();
    for n in [1usize, 2, 4] {
        while workers.len() < n {
            let child = Command::new(&exe)
                .args(["--stealpool-worker", &url, "--processes", "1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start a worker");
            workers.push(WorkerProcess(child));
        }
        let pool = RedisExecutor::new(&url).expect("connect");
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.workers().map_or(0, |w| w.len()) < n {
            assert!(Instant::now() < deadline, "the workers did not announce themselves");
            std::thread::sleep(Duration::from_millis(10));
        }

        let jobs = 20_000u64;
        let started = Instant::now();
        let futures: Vec<_> = (0..jobs).map(|i| pool.apply_async(add, (i, i)).unwrap()).collect();
        let sum: u64 = futures.into_iter().map(|f| f.result().unwrap()).sum();
        assert_eq!(sum, jobs * (jobs - 1));
        let secs = started.elapsed().as_secs_f64();
        println!("distributed/submit/{n} workers: {jobs} jobs in {secs:.2} s = {:.0} jobs/s", jobs as f64 / secs);

        let items = 200_000u64;
        let started = Instant::now();
        let opts = MapOptions::new().chunksize(1000);
        let sum: u64 = pool.map_with(add, (0..items).map(|i| (i, i)), opts).unwrap().map(Result::unwrap).sum();
        assert_eq!(sum, items * (items - 1));
        let secs = started.elapsed().as_secs_f64();
        println!(
            "distributed/map chunks of 1000/{n} workers: {items} items in {secs:.2} s = {:.0} items/s",
            items as f64 / secs
        );

        let count = 1_000usize;
        let size = 64 << 10;
        let started = Instant::now();
        let futures: Vec<_> =
            (0..count).map(|_| pool.apply_async(payload_len, ByteBuf::from(vec![7u8; size])).unwrap()).collect();
        let total: usize = futures.into_iter().map(|f| f.result().unwrap()).sum();
        assert_eq!(total, count * size);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "distributed/64 KiB payload/{n} workers: {count} jobs in {secs:.2} s = {:.1} MiB/s",
            total as f64 / secs / (1 << 20) as f64
        );
    }
}
