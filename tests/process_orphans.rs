//! No orphans: when the program that owns a pool is killed with SIGKILL, its fork server and
//! every worker go too, within a second or two.
//!
//! The test runs this very binary again as a helper that builds a pool and waits to be killed.
//! It makes itself a child subreaper (PR_SET_CHILD_SUBREAPER) so that the helper's orphans are
//! re-parented to it instead of to init (this machine's init does not reap), which lets it
//! reap them and check that they are really gone. It is the only test in this binary, because
//! a subreaper may reap any orphan.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use stealpool::process::Process;
use stealpool::{Executor, ProcessPoolExecutor};

const HELPER_ENV: &str = "STEALPOOL_ORPHAN_HELPER";

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
stealpool::register_fn!(sleep_ms);

#[test]
#[ignore = "helper process started by parent_killed_by_sigkill_takes_its_workers_along"]
fn helper_builds_a_pool_and_waits() {
    assert!(std::env::var_os(HELPER_ENV).is_some(), "run only as a helper");
    let pool = ProcessPoolExecutor::new(3);
    let _busy = pool.apply_async(sleep_ms, 600_000).unwrap();
    let attached = Process::spawn(sleep_ms, 600_000).unwrap();
    let detached = Process::builder().die_with_parent(false).spawn(sleep_ms, 600_000).unwrap();
    let mut pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    pids.push(attached.pid().to_string());
    println!("PIDS {} {} DETACHED {}", pool.fork_server_pid(), pids.join(" "), detached.pid());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Kills the helper (if still there) and reaps whatever was re-parented to us, also when the
/// test fails half-way.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        reap_orphans(Duration::from_secs(5), &[]);
    }
}

/// Reaps re-parented children until none of `pids` exists (or, with no pids, until no child is
/// left) or the time is up. Returns whether they are all gone.
fn reap_orphans(limit: Duration, pids: &[u32]) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status.pid().is_none() {
                break;
            }
        }
        let gone = if pids.is_empty() {
            matches!(waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)), Err(nix::errno::Errno::ECHILD))
        } else {
            pids.iter().all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        };
        if gone || Instant::now() > deadline {
            return gone;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn parent_killed_by_sigkill_takes_its_workers_along() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_builds_a_pool_and_waits", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut helper = Helper(child);
    let stdout = helper.0.stdout.take().unwrap();
    // Read on a thread, so a helper that never reports fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = BufReader::new(stdout).lines().map_while(Result::ok).find_map(|l| {
            // The harness prints "test <name> ... " on the same line first.
            l.find("PIDS ").map(|at| l[at..].to_owned())
        });
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).ok().flatten().expect("the helper reports its pids");
    let (pids, detached) = line.split_once(" DETACHED ").expect("both lists");
    let pids: Vec<u32> = pids.split_whitespace().skip(1).map(|p| p.parse().unwrap()).collect();
    let detached: u32 = detached.trim().parse().unwrap();
    let _detached = KillOnDrop(detached);
    assert_eq!(pids.len(), 5, "fork server, three workers and a process: {line}");

    kill(Pid::from_raw(helper.0.id() as i32), Signal::SIGKILL).unwrap();
    let _ = helper.0.wait();
    let killed = Instant::now();
    let gone = reap_orphans(Duration::from_secs(3), &pids);
    assert!(gone, "still there {:?} after the parent was killed", killed.elapsed());
    eprintln!("fork server, workers and process gone {:?} after the parent was killed", killed.elapsed());
    // The process started with die_with_parent(false) lives on (now our child: we are the
    // subreaper); `KillOnDrop` ends it.
    assert!(std::path::Path::new(&format!("/proc/{detached}")).exists(), "the detached process lives on");
    let stat = std::fs::read_to_string(format!("/proc/{detached}/stat")).unwrap();
    assert!(!stat.rsplit(')').next().unwrap().trim_start().starts_with('Z'), "and is not a zombie: {stat}");
}

/// Kills and reaps the detached process we were handed, also when the test fails.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0 as i32);
        if kill(pid, Signal::SIGKILL).is_ok() {
            let _ = waitpid(pid, None);
        }
    }
}
