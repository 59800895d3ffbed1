//! A start-up killed at any instant leaves nothing behind: no socket, no directory, no fork
//! server or worker living on.
//!
//! The test runs this binary again as a helper that starts a pool, and SIGKILLs it after a
//! delay that moves, round by round, from before the fork server exists to after the pool is
//! up. The helper's temporary directory is one of the test's own, to be checked empty. The
//! test is a child subreaper, so the helper's orphans (its fork server, the workers) come to it;
//! it reaps them, and a fork server that outlived its parent would never let it see the end of
//! its children. It is the only test in this binary, because a subreaper may reap any orphan.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use stealpool::{Executor, ProcessPoolExecutor};

const HELPER_ENV: &str = "STEALPOOL_KILLED_START_HELPER";

fn double(x: u32) -> u32 {
    x * 2
}
stealpool::register_fn!(double);

#[test]
#[ignore = "helper process started by a_start_up_killed_at_any_instant_leaves_nothing"]
fn helper_starts_a_pool() {
    assert!(std::env::var_os(HELPER_ENV).is_some(), "run only as a helper");
    println!("STARTING");
    let pool = ProcessPoolExecutor::new(2);
    assert_eq!(pool.apply_async(double, 21).unwrap().result(), Ok(42));
    println!("STARTED");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Our children, from /proc (the helper, and whatever was re-parented to us).
fn children() -> Vec<i32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
                stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok())
                    == Some(me)
            })
        })
        .collect()
}

/// Reaps children until there are none left, or the time is up; `true` if none is left.
fn reap_all(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => return true,
            Ok(WaitStatus::StillAlive) if Instant::now() > deadline => return false,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(1)),
            _ => {}
        }
    }
}

/// On the way out (also when the test fails), kills and reaps every child we have: each is
/// ours and unreaped, so its pid is still its own.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in children() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        reap_all(Duration::from_secs(5));
    }
}

#[test]
fn a_start_up_killed_at_any_instant_leaves_nothing() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let _cleanup = Cleanup;
    let tmp = tempfile::tempdir().unwrap();
    let rounds: u32 = std::env::var("STEALPOOL_KILLED_START_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let mut started = 0;
    for round in 0..rounds {
        let mut helper = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "helper_starts_a_pool", "--include-ignored", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, "1")
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(helper.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("STARTING") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the helper ended before starting a pool");
        }
        // From at once to well past a full start-up (a few milliseconds here).
        std::thread::sleep(Duration::from_micros(u64::from(round) * 250));
        helper.kill().unwrap();
        helper.wait().unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        started += u32::from(rest.contains("STARTED"));
        assert!(
            reap_all(Duration::from_secs(5)),
            "round {round}: processes outlived the killed start-up: {:?}",
            children()
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "round {round}: the killed start-up left {left:?}");
    }
    eprintln!("{rounds} start-ups killed, {started} of them after the pool was up");
    assert!(started < rounds, "some start-ups were killed half-way");
}
