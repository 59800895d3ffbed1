//! Supervision that is exactly right (issue 13): a time limit kills only the job it is meant
//! for. Its own test binary, because it sets `STEALPOOL_TRACE_STARTS` (process-wide) before its
//! fork server starts: every worker then logs each task's start before the pool could judge it
//! overdue, which is the witness the test checks the pool's decisions against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::libc;
use stealpool::{Executor, JobError, ProcessPoolBuilder};

/// Busy for `us` microseconds.
fn spin_us(us: u64) -> u64 {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
    us
}
stealpool::register_fn!(spin_us);

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is valid for writes.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Today's bug (about 200 in 20,000): with a 5 ms limit, short jobs whose replies had not been
/// read yet were failed as `TimedOut`, and the kill meant for one landed on the next.
///
/// A 50 us job can still, on a loaded machine, be descheduled for longer than 5 ms, and then it
/// did run over its limit: so every short job that times out must have begun (by the workers'
/// trace, written before the pool can judge it) at least the limit before its future failed.
/// Every overdue job must time out.
#[test]
fn a_time_limit_kills_only_overdue_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("starts");
    // SAFETY: set before this binary's only test starts any pool (and so the fork server, which
    // inherits it); no other thread of this process reads the environment meanwhile.
    unsafe { std::env::set_var("STEALPOOL_TRACE_STARTS", &trace) };
    let limit = Duration::from_millis(5);
    let p = ProcessPoolBuilder::new().num_workers(2).task_timeout(limit).build().unwrap();
    let failed_at = Arc::new(Mutex::new(HashMap::new()));
    let n = 4_000u64;
    // One thread submits to a fresh pool, so job `i` is the pool's task `i + 1` in the trace.
    let fs: Vec<_> = (0..n)
        .map(|i| {
            let long = i % 400 == 199;
            let failed_at = Arc::clone(&failed_at);
            let on_error = move |_: &JobError| {
                failed_at.lock().unwrap().insert(i, monotonic_ns());
            };
            (long, p.apply_async_with(spin_us, if long { 300_000 } else { 50 }, |_| {}, on_error).unwrap())
        })
        .collect();
    let (mut short_timed_out, mut long_not_timed_out, mut other) = (Vec::new(), 0, Vec::new());
    for (i, (long, f)) in fs.into_iter().enumerate() {
        match (long, f.result()) {
            (false, Ok(50)) => {}
            (false, Err(JobError::TimedOut { .. })) => short_timed_out.push(i as u64),
            (true, Err(JobError::TimedOut { .. })) => {}
            (true, r) => {
                long_not_timed_out += 1;
                other.push(r);
            }
            (_, r) => other.push(r),
        }
    }
    drop(p);
    assert_eq!(long_not_timed_out, 0, "overdue jobs that were not stopped: {other:?}");
    assert!(other.is_empty(), "{other:?}");
    let text = std::fs::read_to_string(&trace).unwrap();
    let starts: HashMap<u64, u64> = text
        .lines()
        .map(|l| {
            let (id, t) = l.split_once(' ').unwrap();
            (id.parse().unwrap(), t.parse().unwrap())
        })
        .collect();
    assert_eq!(starts.len() as u64, n, "every job began (requeued ones too)");
    assert_eq!(text.lines().count(), starts.len(), "no job began twice");
    let failed_at = failed_at.lock().unwrap();
    for i in &short_timed_out {
        let Some(start) = starts.get(&(i + 1)) else { panic!("short job {i} failed as TimedOut but never began") };
        let ran = Duration::from_nanos(failed_at[i].saturating_sub(*start));
        assert!(ran >= limit, "short job {i} failed as TimedOut after running {ran:?}, under its limit");
    }
    eprintln!("{} short jobs were descheduled past the limit and timed out", short_timed_out.len());
}
