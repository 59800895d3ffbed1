//! The process pool against Python's process pools and raw ipc-channel, in interleaved rounds
//! (ours, theirs, ours, theirs, ...) on one machine, so every ratio compares runs that saw the
//! same phase of a shared, noisy machine. Each figure is the median over rounds.
//!
//! Run with `cargo bench --bench process_compare` (about a minute; needs `python3`). It prints
//! the README's process-pool table. `COMPARE_QUICK=1` (or a run without `--bench`, as
//! `cargo test --benches` does) runs one small round. `STEALPOOL_BENCH_FIXED_SMALL=N` runs only N small jobs through
//! `submit` on a warm pool (for counting system calls and instructions per job);
//! `STEALPOOL_BENCH_FIXED_PAYLOAD=N` N payload jobs, then N raw transfers.

mod workloads;

use std::process::Command;
use std::time::Instant;

use stealpool::{Executor, ProcessPoolExecutor};
use workloads::process::*;

const WORKERS: usize = 2;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Seconds Python took for one run of `scenario`, or `None` without a usable python3.
fn python(scenario: &str, n: u64, workers: usize) -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/process_bench.py");
    let out = Command::new("python3").args([script, scenario, &n.to_string(), &workers.to_string()]).output().ok()?;
    if !out.status.success() {
        eprintln!("python3 {scenario}: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// One job per argument (1 MiB each), at most two in flight: the next is submitted once the
/// oldest of the two has its result (what a program streaming large inputs through the pool,
/// with a bounded memory, does).
fn payloads_two_in_flight(pool: &ProcessPoolExecutor, args: Vec<serde_bytes::ByteBuf>) -> u64 {
    let mut in_flight: std::collections::VecDeque<stealpool::Future<u64>> =
        std::collections::VecDeque::with_capacity(2);
    let mut sum = 0;
    for a in args {
        if in_flight.len() == 2 {
            sum += in_flight.pop_front().map_or(0, |f| f.result().unwrap());
        }
        in_flight.push_back(pool.apply_async(byte_len, a).unwrap());
    }
    sum + in_flight.into_iter().map(|f| f.result().unwrap()).sum::<u64>()
}

fn timed(f: impl FnOnce() -> u64, expected: u64) -> f64 {
    let started = Instant::now();
    let got = f();
    let s = started.elapsed().as_secs_f64();
    assert_eq!(got, expected);
    s
}

/// Time until a pool of `workers` has run one job, in a fresh process (fork server included).
fn cold_startup(workers: usize) -> f64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("STEALPOOL_BENCH_COLD_STARTUP", workers.to_string())
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

/// Runs `n` small jobs through `submit` on a warm pool and prints the time (for `strace -c -f`
/// and `perf stat`, which count what one fixed run costs: `STEALPOOL_BENCH_FIXED_SMALL=N`).
const FIXED_SMALL_ENV: &str = "STEALPOOL_BENCH_FIXED_SMALL";

fn fixed_small_run(n: u64) {
    let pool = ProcessPoolExecutor::new(WORKERS);
    submit_small(&pool, 1_000);
    let expected = (0..n).fold(0u64, |a, i| a.wrapping_add(i + 1));
    let s = timed(|| submit_small(&pool, n), expected);
    println!("{n} small jobs through submit: {s:.4} s, {:.0} jobs/s", n as f64 / s);
}

/// Runs `n` 1 MiB payload jobs on a warm pool, and as many raw transfers (`..._FIXED_PAYLOAD=N`).
const FIXED_PAYLOAD_ENV: &str = "STEALPOOL_BENCH_FIXED_PAYLOAD";

fn fixed_payload_run(n: u64) {
    let pool = ProcessPoolExecutor::new(WORKERS);
    let peer = RawPeer::start();
    let payload = vec![7u8; MIB];
    payloads(&pool, payload_args(4, &payload));
    let args = payload_args(n, &payload);
    let ours = timed(|| payloads(&pool, args), n * MIB as u64);
    let raw = timed(|| peer.transfer(n, &payload), n * MIB as u64);
    println!("{n} MiB: stealpool {:.0} MiB/s, raw {:.0} MiB/s", n as f64 / ours, n as f64 / raw);
}

fn main() {
    serve_raw_peer_if_asked();
    if let Ok(n) = std::env::var(FIXED_SMALL_ENV) {
        fixed_small_run(n.parse().expect("a job count"));
        return;
    }
    if let Ok(n) = std::env::var(FIXED_PAYLOAD_ENV) {
        fixed_payload_run(n.parse().expect("a job count"));
        return;
    }
    if let Ok(w) = std::env::var("STEALPOOL_BENCH_COLD_STARTUP") {
        println!("{}", startup(w.parse().unwrap()).as_secs_f64());
        return;
    }
    let full = std::env::args().any(|a| a == "--bench") && std::env::var_os("COMPARE_QUICK").is_none();
    let (rounds, small_n, py_small_n, map_n, payload_n) =
        if full { (5, 50_000u64, 5_000u64, 1_000_000u64, 200u64) } else { (1, 2_000, 200, 20_000, 10) };

    let pool = ProcessPoolExecutor::new(WORKERS);
    let peer = RawPeer::start();
    let payload = vec![7u8; MIB];
    let small_expected = |n: u64| (0..n).fold(0u64, |a, i| a.wrapping_add(i + 1));

    // Warm everything once.
    submit_small(&pool, 100);
    payloads(&pool, payload_args(2, &payload));
    payloads_two_in_flight(&pool, payload_args(4, &payload));
    peer.transfer(2, &payload);

    let mut rows: Vec<(&str, &str, Vec<f64>)> = vec![
        ("small jobs, submit (tasks/s)", "stealpool apply_async", vec![]),
        ("small jobs, submit (tasks/s)", "Python ProcessPoolExecutor.submit", vec![]),
        ("small jobs, submit (tasks/s)", "raw ipc-channel, pipelined", vec![]),
        ("small jobs, map (tasks/s)", "stealpool map, default chunks", vec![]),
        ("small jobs, map (tasks/s)", "Python Pool.map, default chunks", vec![]),
        ("1 MiB payloads (MiB/s)", "stealpool apply_async", vec![]),
        ("1 MiB payloads (MiB/s)", "raw ipc-channel bytes", vec![]),
        ("1 MiB payloads (MiB/s)", "Python ProcessPoolExecutor.submit", vec![]),
        ("1 MiB payloads, at most 2 in flight (MiB/s)", "stealpool apply_async", vec![]),
        ("1 MiB payloads, at most 2 in flight (MiB/s)", "raw ipc-channel bytes (pipelined)", vec![]),
        ("start-up, 2 workers (ms)", "stealpool, fork server running", vec![]),
        ("start-up, 2 workers (ms)", "stealpool, fork server started too", vec![]),
        ("start-up, 2 workers (ms)", "Python ProcessPoolExecutor, fork", vec![]),
        ("start-up, 8 workers (ms)", "stealpool, fork server running", vec![]),
        ("start-up, 8 workers (ms)", "stealpool, fork server started too", vec![]),
        ("start-up, 8 workers (ms)", "Python ProcessPoolExecutor, fork", vec![]),
    ];
    let mut have_python = true;
    for _ in 0..rounds {
        let mut push = |i: usize, v: f64| rows[i].2.push(v);
        push(0, small_n as f64 / timed(|| submit_small(&pool, small_n), small_expected(small_n)));
        if let Some(s) = python("submit", py_small_n, WORKERS) {
            push(1, py_small_n as f64 / s);
        } else {
            have_python = false;
        }
        let small = [0u8; 16];
        push(2, small_n as f64 / timed(|| peer.transfer(small_n, &small), 16 * small_n));
        push(3, map_n as f64 / timed(|| map_small(&pool, map_n), small_expected(map_n)));
        if let Some(s) = python("map", map_n, WORKERS) {
            push(4, map_n as f64 / s);
        }
        let mib = payload_n as f64;
        let args = payload_args(payload_n, &payload);
        push(5, mib / timed(|| payloads(&pool, args), payload_n * MIB as u64));
        push(6, mib / timed(|| peer.transfer(payload_n, &payload), payload_n * MIB as u64));
        if let Some(s) = python("payload", payload_n, WORKERS) {
            push(7, mib / s);
        }
        let args = payload_args(payload_n, &payload);
        push(8, mib / timed(|| payloads_two_in_flight(&pool, args), payload_n * MIB as u64));
        push(9, mib / timed(|| peer.transfer(payload_n, &payload), payload_n * MIB as u64));
        for (base, workers) in [(10, 2), (13, 8)] {
            push(base, startup(workers).as_secs_f64() * 1e3);
            push(base + 1, cold_startup(workers) * 1e3);
            if let Some(s) = python("startup", 1, workers) {
                push(base + 2, s * 1e3);
            }
        }
    }
    if !have_python {
        println!("(python3 not available: Python rows skipped)");
    }

    let rustc =
        Command::new("rustc").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    println!(
        "process pool, {WORKERS} workers, {rounds} interleaved rounds, medians; {} CPUs; {}; commit {}",
        num_cpus::get(),
        rustc.unwrap_or_default(),
        commit.unwrap_or_default()
    );
    println!();
    println!("| scenario | contender | median | stealpool's figure / this one |");
    println!("|---|---|---|---|");
    let medians: Vec<Option<f64>> = rows.iter().map(|(_, _, v)| (!v.is_empty()).then(|| median(v.clone()))).collect();
    for (i, (scenario, name, _)) in rows.iter().enumerate() {
        let Some(m) = medians[i] else { continue };
        // Compared with the first row of its scenario (stealpool's main figure); start-up rows
        // of Python are also compared with stealpool's start-up including the fork server.
        let first = rows.iter().position(|(s, _, _)| s == scenario).unwrap_or(i);
        let shown = if scenario.contains("(ms)") { format!("{m:.2} ms") } else { format!("{m:.0}") };
        let rel = if i == first || name.starts_with("stealpool") {
            "-".to_owned()
        } else if scenario.contains("(ms)") {
            let warm = medians[first].map_or(0.0, |o| m / o);
            let cold = medians[first + 1].map_or(0.0, |o| m / o);
            format!("{warm:.2}x faster ({cold:.2}x counting the fork server start)")
        } else {
            format!("{:.2}x", medians[first].map_or(0.0, |o| o / m))
        };
        println!("| {scenario} | {name} | {shown} | {rel} |");
    }
    drop(peer);
    drop(pool);
}
