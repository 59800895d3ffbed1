//! Races: submissions from many threads while workers fall asleep and wake up; idle workers
//! really sleep.

mod common;

use std::sync::Arc;
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use common::HANG;
use stealpool::{Executor, ThreadPoolBuilder, ThreadPoolExecutor};

/// Many rounds in which several threads submit at the same moment, each round starting while
/// the workers are going to sleep. A lost wake-up leaves a job queued with every worker asleep,
/// and its `result_timeout` fails instead of the test hanging.
#[test]
fn no_lost_wakeups_when_submitting_from_many_threads() {
    const SUBMITTERS: usize = 4;
    const ROUNDS: usize = 1500;
    let pool = Arc::new(ThreadPoolExecutor::new(3));
    let barrier = Arc::new(Barrier::new(SUBMITTERS));
    let handles: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let (pool, barrier) = (Arc::clone(&pool), Arc::clone(&barrier));
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    barrier.wait();
                    if round % 100 == 0 {
                        // Give the workers time to reach the sleep path, not just spin.
                        thread::sleep(Duration::from_millis(2));
                    }
                    let mut f = pool.submit(move || round * SUBMITTERS + t).unwrap();
                    assert_eq!(f.result_timeout(HANG), Ok(round * SUBMITTERS + t), "lost wake-up in round {round}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn heavy_submission_from_many_threads_loses_nothing() {
    const THREADS: u64 = 8;
    const JOBS: u64 = 10_000;
    let pool = Arc::new(ThreadPoolExecutor::new(4));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                let futures: Vec<_> = (0..JOBS).map(|i| pool.submit(move || t * JOBS + i).unwrap()).collect();
                futures.into_iter().map(|f| f.result().unwrap()).sum::<u64>()
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let n = THREADS * JOBS;
    assert_eq!(total, n * (n - 1) / 2);
}

#[test]
fn shutdown_racing_submissions_never_strands_a_job() {
    for _ in 0..200 {
        let pool = Arc::new(ThreadPoolExecutor::new(2));
        let p = Arc::clone(&pool);
        let submitter = thread::spawn(move || {
            let mut accepted = Vec::new();
            while let Ok(f) = p.submit(|| 1u8) {
                accepted.push(f);
            }
            accepted
        });
        thread::yield_now();
        pool.shutdown(true, false);
        for mut f in submitter.join().unwrap() {
            assert_eq!(f.result_timeout(HANG), Ok(1), "an accepted job was never run");
        }
    }
}

/// CPU time (user + system, in clock ticks) of this process's threads whose name starts with
/// `prefix`, from /proc.
#[cfg(target_os = "linux")]
fn cpu_ticks_of_threads(prefix: &str) -> (usize, u64) {
    let mut threads = 0;
    let mut ticks = 0;
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the name: state is field 3 of stat(5), utime 14 and stime 15.
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        threads += 1;
    }
    (threads, ticks)
}

#[cfg(target_os = "linux")]
#[test]
fn an_idle_pool_uses_no_cpu() {
    let pool = ThreadPoolBuilder::new().num_workers(8).name_prefix("idlechk").build().unwrap();
    let futures: Vec<_> = (0..1000u32).map(|i| pool.submit(move || i).unwrap()).collect();
    futures.into_iter().for_each(|f| drop(f.result()));
    thread::sleep(Duration::from_millis(100)); // let every worker finish spinning and park
    let (threads, before) = cpu_ticks_of_threads("idlechk");
    assert_eq!(threads, 8);
    thread::sleep(Duration::from_millis(1000));
    let (_, after) = cpu_ticks_of_threads("idlechk");
    // A spinning worker would burn ~100 ticks per second; parked ones burn none (allow one tick
    // of accounting granularity).
    assert!(after - before <= 1, "idle workers used {} ticks in 1 s", after - before);
    assert_eq!(pool.max_workers(), 8);
}

/// Cancels racing with workers starting the same jobs: each job either runs or is cancelled,
/// never both, and every captured sender is gone once the futures are settled, while they are
/// all still alive. `STEALPOOL_STRESS_CANCELS` sets the number of jobs (default 20,000).
#[test]
fn cancels_racing_starts_run_or_drop_each_job_once() {
    let jobs: usize = std::env::var("STEALPOOL_STRESS_CANCELS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let pool = ThreadPoolExecutor::new(2);
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let futures: Vec<_> = (0..jobs)
        .map(|i| {
            let tx = tx.clone();
            pool.submit(move || tx.send(i).unwrap()).unwrap()
        })
        .collect();
    drop(tx);
    let cancelled: Vec<bool> = futures.iter().map(|f| f.cancel()).collect();
    for f in &futures {
        assert!(f.wait_timeout(HANG), "a job never settled");
    }
    let mut ran = vec![false; jobs];
    loop {
        match rx.recv_timeout(HANG) {
            Ok(i) => ran[i] = true,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("a settled job still holds its sender: {e:?}"),
        }
    }
    for (i, f) in futures.iter().enumerate() {
        assert!(ran[i] ^ cancelled[i], "job {i}: ran {}, cancelled {}", ran[i], cancelled[i]);
        assert_eq!(f.is_cancelled(), cancelled[i]);
    }
}
