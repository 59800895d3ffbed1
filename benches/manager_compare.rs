//! Cross-process queue throughput: a stealpool manager `Queue` against Python's
//! `Manager().Queue()` and `multiprocessing.Queue`, in interleaved rounds on one machine;
//! each figure is the median over rounds.
//!
//! One producer process puts N items and one consumer process gets them (ours: two jobs on a
//! warm two-worker process pool; Python's: two forked processes waiting at a start line).
//! Small items (an integer) give items per second; 64 KiB items give MiB per second.
//!
//! Run with `cargo bench --bench manager_compare` (a minute or two; needs `python3`). It
//! prints the README's manager table. `COMPARE_QUICK=1` (or a run without `--bench`, as
//! `cargo test --benches` does) runs one small round.

use std::process::Command;
use std::time::Instant;

use serde_bytes::ByteBuf;
use stealpool::manager::{Manager, Queue};
use stealpool::{Executor, ProcessPoolExecutor};

const KIB64: usize = 64 << 10;

fn produce_small((q, n): (Queue<u64>, u64)) -> u64 {
    (0..n).for_each(|i| q.put(i).unwrap());
    n
}
stealpool::register_fn!(produce_small);

fn consume_small((q, n): (Queue<u64>, u64)) -> u64 {
    (0..n).map(|_| q.get().unwrap()).sum()
}
stealpool::register_fn!(consume_small);

fn produce_big((q, n): (Queue<ByteBuf>, u64)) -> u64 {
    let payload = vec![7u8; KIB64];
    (0..n).for_each(|_| q.put(ByteBuf::from(payload.clone())).unwrap());
    n
}
stealpool::register_fn!(produce_big);

fn consume_big((q, n): (Queue<ByteBuf>, u64)) -> u64 {
    (0..n)
        .map(|_| {
            let item = q.get().unwrap();
            assert!(item.first() == Some(&7) && item.last() == Some(&7), "the item arrived whole");
            item.len() as u64
        })
        .sum()
}
stealpool::register_fn!(consume_big);

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Seconds Python took, or `None` without a usable python3.
fn python(queue: &str, item: &str, n: u64) -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/manager_bench.py");
    let out = Command::new("python3").args([script, queue, item, &n.to_string()]).output().ok()?;
    if !out.status.success() {
        eprintln!("python3 {queue} {item}: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn ours_small(pool: &ProcessPoolExecutor, manager: &Manager, n: u64) -> f64 {
    let q = manager.queue::<u64>().unwrap();
    let started = Instant::now();
    let got = pool.apply_async(consume_small, (q.clone(), n)).unwrap();
    let put = pool.apply_async(produce_small, (q, n)).unwrap();
    assert_eq!(put.result(), Ok(n));
    assert_eq!(got.result(), Ok(n * (n - 1) / 2));
    started.elapsed().as_secs_f64()
}

fn ours_big(pool: &ProcessPoolExecutor, manager: &Manager, n: u64) -> f64 {
    let q = manager.queue::<ByteBuf>().unwrap();
    let started = Instant::now();
    let got = pool.apply_async(consume_big, (q.clone(), n)).unwrap();
    let put = pool.apply_async(produce_big, (q, n)).unwrap();
    assert_eq!(put.result(), Ok(n));
    assert_eq!(got.result(), Ok(n * KIB64 as u64));
    started.elapsed().as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench") && std::env::var_os("COMPARE_QUICK").is_none();
    let (rounds, small_n, big_n) = if full { (3, 20_000u64, 2_000u64) } else { (1, 500, 20) };
    let manager = Manager::new().unwrap();
    let pool = ProcessPoolExecutor::new(2);
    ours_small(&pool, &manager, 100);
    ours_big(&pool, &manager, 4);

    let mib = |n: u64| (n * KIB64 as u64) as f64 / (1 << 20) as f64;
    let mut rows: Vec<(&str, &str, Vec<f64>)> = vec![
        ("small items (items/s)", "stealpool manager Queue", vec![]),
        ("small items (items/s)", "Python Manager().Queue()", vec![]),
        ("small items (items/s)", "Python multiprocessing.Queue", vec![]),
        ("64 KiB items (MiB/s)", "stealpool manager Queue", vec![]),
        ("64 KiB items (MiB/s)", "Python Manager().Queue()", vec![]),
        ("64 KiB items (MiB/s)", "Python multiprocessing.Queue", vec![]),
    ];
    let mut have_python = true;
    for _ in 0..rounds {
        rows[0].2.push(small_n as f64 / ours_small(&pool, &manager, small_n));
        for (i, queue) in [(1, "manager"), (2, "mp")] {
            match python(queue, "small", small_n) {
                Some(s) => rows[i].2.push(small_n as f64 / s),
                None => have_python = false,
            }
        }
        rows[3].2.push(mib(big_n) / ours_big(&pool, &manager, big_n));
        for (i, queue) in [(4, "manager"), (5, "mp")] {
            if let Some(s) = python(queue, "64k", big_n) {
                rows[i].2.push(mib(big_n) / s);
            }
        }
    }
    if !have_python {
        println!("(python3 not available: Python rows skipped)");
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "one producer process, one consumer process; {small_n} small / {big_n} 64 KiB items; {rounds} interleaved \
         rounds, medians; {} CPUs; commit {commit}",
        num_cpus::get()
    );
    println!();
    println!("| scenario | contender | median | stealpool / this one |");
    println!("|---|---|---|---|");
    let mut ours = 0.0;
    for (scenario, name, values) in &rows {
        if values.is_empty() {
            continue;
        }
        let m = median(values.clone());
        let rel = if name.starts_with("stealpool") {
            ours = m;
            "-".to_owned()
        } else {
            format!("{:.1}x", ours / m)
        };
        println!("| {scenario} | {name} | {m:.0} | {rel} |");
    }
}
