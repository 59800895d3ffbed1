//! Measures the CPU time an idle pool of 8 workers uses: after a burst of work, the pool sits
//! idle for a few seconds and the process's CPU time (user + system, from /proc) is compared.
//!
//! Run with `cargo run --release --example idle_cpu` (Linux).

use std::time::{Duration, Instant};

use stealpool::{Executor, ThreadPoolExecutor};

/// User + system CPU time of this process, from /proc/self/stat (Linux), in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5) (utime, stime) are 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn main() {
    const IDLE: Duration = Duration::from_secs(5);
    let pool = ThreadPoolExecutor::new(8);
    let futures: Vec<_> = (0..10_000u64).map(|i| pool.submit(move || i * i).unwrap()).collect();
    let sum: u64 = futures.into_iter().map(|f| f.result().unwrap()).sum();
    println!("burst of 10000 jobs done (checksum {sum}); pool of {} workers now idle", pool.max_workers());

    std::thread::sleep(Duration::from_millis(100)); // let the workers finish spinning and park
    let (Some(before), started) = (cpu_ticks(), Instant::now()) else {
        println!("/proc/self/stat is not available: this measurement needs Linux");
        return;
    };
    std::thread::sleep(IDLE);
    let after = cpu_ticks().unwrap_or(before);
    // Clock ticks are 10 ms on Linux (USER_HZ = 100).
    println!(
        "CPU time used while idle for {:.1?}: {} ms ({:.3}% of one core)",
        started.elapsed(),
        (after - before) * 10,
        (after - before) as f64 * 10.0 / started.elapsed().as_millis() as f64 * 100.0
    );
}
