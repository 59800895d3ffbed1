//! Memory per job: the peak resident memory above the floor of 1,000,000 tiny jobs submitted
//! with their handles held (stealpool futures; rayon `spawn` and `threadpool` each sending
//! into a channel that is read only at the end), and the peak of a 10,000,000-item `map` over
//! a range with default options, and the cost of one item in flight: a `map` with chunks of
//! one item and a window of 100,000 chunks, measured while its jobs wait (so the whole window
//! is submitted and not yet run).
//!
//! Each case runs in its own child process (this binary re-run with `child CASE`), so each
//! has its own resident memory: the child resets its peak (`/proc/self/clear_refs`) once its
//! pool is up, reads `VmRSS` as the floor, runs the case, and reports `VmHWM - floor`.
//! Linux only. Run: `cargo bench --bench memory` (`ROUNDS=n` for more interleaved rounds;
//! the medians are printed).
//!
//! This benchmark must never assert on its figures: they are printed for the README.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use stealpool::{Executor, MapOptions, ThreadPoolExecutor};

const HELD: u64 = 1_000_000;
const MAPPED: u64 = 10_000_000;
const WORKERS: usize = 2;
const WINDOW: u64 = 100_000;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("field in /proc/self/status");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB")
}

/// Resets the peak to the current resident memory and returns that floor, in bytes.
fn floor() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak (/proc/self/clear_refs)");
    status_kib("VmRSS:") * 1024
}

fn peak() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn child(case: &str) {
    let (above, per) = match case {
        "stealpool" => {
            let pool = ThreadPoolExecutor::new(WORKERS);
            let base = floor();
            let futures: Vec<_> = (0..HELD).map(|i| pool.submit(move || i * 2).unwrap()).collect();
            for f in &futures {
                f.wait();
            }
            let above = peak().saturating_sub(base);
            let sum: u64 = futures.into_iter().map(|f| f.result().unwrap()).sum();
            assert_eq!(sum, HELD * (HELD - 1));
            (above, HELD)
        }
        "rayon" => {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(WORKERS).build().unwrap();
            let base = floor();
            let (tx, rx) = mpsc::channel();
            let sent = Arc::new(AtomicU64::new(0));
            for i in 0..HELD {
                let (tx, sent) = (tx.clone(), Arc::clone(&sent));
                pool.spawn(move || {
                    tx.send(i * 2).unwrap();
                    sent.fetch_add(1, Ordering::Release);
                });
            }
            drop(tx);
            // rayon has no join: poll until every job has sent, so the channel holds them all.
            while sent.load(Ordering::Acquire) < HELD {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let above = peak().saturating_sub(base);
            assert_eq!(rx.iter().count() as u64, HELD);
            (above, HELD)
        }
        "threadpool" => {
            let pool = threadpool::ThreadPool::new(WORKERS);
            let base = floor();
            let (tx, rx) = mpsc::channel();
            for i in 0..HELD {
                let tx = tx.clone();
                pool.execute(move || tx.send(i * 2).unwrap());
            }
            drop(tx);
            pool.join();
            let above = peak().saturating_sub(base);
            assert_eq!(rx.iter().count() as u64, HELD);
            (above, HELD)
        }
        "map" => {
            let pool = ThreadPoolExecutor::new(WORKERS);
            let base = floor();
            let sum: u64 = pool.map(|x: u64| x * 2, 0..MAPPED).unwrap().map(Result::unwrap).sum();
            let above = peak().saturating_sub(base);
            assert_eq!(sum, MAPPED * (MAPPED - 1));
            (above, MAPPED)
        }
        "window" => {
            let pool = ThreadPoolExecutor::new(WORKERS);
            let go = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let gate = Arc::clone(&go);
            let f = move |x: u64| {
                while !gate.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                x * 2
            };
            let base = floor();
            // Creating the map submits the whole window; its jobs wait at the gate.
            let options = MapOptions::new().chunksize(1).buffersize(WINDOW as usize);
            let results = pool.map_with(f, 0..WINDOW, options).unwrap();
            let above = peak().saturating_sub(base);
            go.store(true, Ordering::Release);
            let sum: u64 = results.map(Result::unwrap).sum();
            assert_eq!(sum, WINDOW * (WINDOW - 1));
            (above, WINDOW)
        }
        other => panic!("unknown case {other}"),
    };
    println!("{above} {per}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 3 && args[1] == "child" {
        child(&args[2]);
        return;
    }
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let cases = ["stealpool", "rayon", "threadpool", "map", "window"];
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let exe = std::env::current_exe().expect("this binary");
    for _ in 0..rounds {
        for (k, case) in cases.iter().enumerate() {
            let out = Command::new(&exe).args(["child", case]).output().expect("run the child");
            assert!(out.status.success(), "{case}: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            let mut it = text.split_whitespace().map(|v| v.parse::<f64>().unwrap());
            let (above, per) = (it.next().unwrap(), it.next().unwrap());
            figures[k].push(if *case == "map" { above } else { above / per });
        }
    }
    println!("peak resident memory above the floor ({WORKERS} workers, median of {rounds} interleaved rounds):");
    for (k, case) in cases.iter().enumerate() {
        let m = median(figures[k].clone());
        match *case {
            "map" => println!("  map of {MAPPED} items, default options: {:.1} MiB", m / (1024.0 * 1024.0)),
            "window" => println!("  map with {WINDOW} one-item chunks in flight: {m:.1} bytes per item in flight"),
            _ => println!("  {case:<10} {HELD} held jobs: {m:.1} bytes per job"),
        }
    }
}
