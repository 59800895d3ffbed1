//! Chaos (issue 13): workers killed at random with SIGKILL, from the test, under load. Counts
//! the jobs that hung (must be 0), ran twice (0) and were lost (only those running at a kill
//! may fail, with `WorkerDied`; every other future resolves `Ok`). The witness is
//! manager-free: each job appends its id to a file opened `O_APPEND` (one `write`) as it
//! begins.
//!
//! A few seconds in CI; `STEALPOOL_CHAOS_JOBS=20000` for a longer run.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use stealpool::{Executor, JobError, ProcessPoolBuilder, ResultTimeoutError};

const PREFIX: &str = "stealpool-chaos";

/// Appends `id` to the witness file, then works for about `us` microseconds.
fn witnessed((path, id, us): (PathBuf, u64, u64)) -> (u64, u32) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(format!("{id}\n").as_bytes()).unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
    (id, std::process::id())
}
stealpool::register_fn!(witnessed);

/// A small deterministic generator (xorshift), so a failing run can be repeated.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Whether `pid` is still one of this pool's workers (not a recycled pid of someone else).
fn is_ours(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(PREFIX))
}

#[test]
fn workers_killed_at_random_lose_only_the_jobs_they_were_running() {
    let n: u64 = std::env::var("STEALPOOL_CHAOS_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000);
    let dir = tempfile::tempdir().unwrap();
    let witness = dir.path().join("witness");
    std::fs::write(&witness, b"").unwrap();
    let p = Arc::new(ProcessPoolBuilder::new().num_workers(3).name_prefix(PREFIX).build().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(Mutex::new(Vec::new()));
    // Only workers that have answered a job are killed: killing ones still starting could make
    // three start-up failures in a row, which (rightly) breaks a pool.
    let answered = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let killer = std::thread::spawn({
        let (p, stop, killed, answered) =
            (Arc::clone(&p), Arc::clone(&stop), Arc::clone(&killed), Arc::clone(&answered));
        move || {
            let mut rng = Rng(0x5eed_cafe_f00d_1234);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10 + rng.next() % 40));
                let answered = answered.lock().unwrap().clone();
                let pids: Vec<u32> = p.worker_pids().into_iter().filter(|pid| answered.contains(pid)).collect();
                if pids.is_empty() {
                    continue;
                }
                let pid = pids[(rng.next() % pids.len() as u64) as usize];
                if is_ours(pid) && kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
                    killed.lock().unwrap().push(pid);
                }
            }
        }
    });

    let mut rng = Rng(42);
    let fs: Vec<_> = (0..n)
        .map(|id| {
            let us = if rng.next().is_multiple_of(10) { 3_000 } else { 100 };
            let answered = Arc::clone(&answered);
            let on_ok = move |r: &(u64, u32)| {
                answered.lock().unwrap().insert(r.1);
            };
            (id, p.apply_async_with(witnessed, (witness.clone(), id, us), on_ok, |_| {}).unwrap())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut outcomes = HashMap::new();
    let mut hung = Vec::new();
    for (id, mut f) in fs {
        let left = deadline.saturating_duration_since(Instant::now());
        match f.result_timeout(left) {
            Ok(r) => {
                outcomes.insert(id, Ok(r));
            }
            Err(ResultTimeoutError::Failed(e)) => {
                outcomes.insert(id, Err(e));
            }
            Err(_) => hung.push(id),
        }
    }
    stop.store(true, Ordering::Relaxed);
    killer.join().unwrap();
    let killed = killed.lock().unwrap().clone();

    let mut began: HashMap<u64, usize> = HashMap::new();
    for line in std::fs::read_to_string(&witness).unwrap().lines() {
        *began.entry(line.parse().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = began.iter().filter(|(_, c)| **c > 1).map(|(id, _)| *id).collect();
    let mut lost = Vec::new();
    let mut wrong = Vec::new();
    for (id, r) in &outcomes {
        match r {
            Ok((got, pid)) => {
                assert_eq!(got, id);
                if began.get(id) != Some(&1) {
                    wrong.push(format!("job {id} returned Ok from {pid} but began {:?} times", began.get(id)));
                }
            }
            Err(JobError::WorkerDied { pid, .. }) if killed.contains(pid) => lost.push(*id),
            Err(e) => wrong.push(format!("job {id}: {e}")),
        }
    }
    eprintln!(
        "{n} jobs, {} workers killed: {} hung, {} ran twice, {} lost",
        killed.len(),
        hung.len(),
        twice.len(),
        lost.len()
    );
    assert!(hung.is_empty(), "jobs that never resolved: {hung:?}");
    assert!(twice.is_empty(), "jobs that began twice: {twice:?}");
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Each kill stops at most the one job its worker was running.
    assert!(lost.len() <= killed.len(), "{} jobs lost to {} kills", lost.len(), killed.len());
    assert!(!killed.is_empty(), "the test killed no worker");
    assert!(!p.is_shutdown());
}
