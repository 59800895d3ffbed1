//! SIGTERM storms at the fork server's newly forked children while they are being forked:
//! whatever instant a signal arrives, it may end the child it was sent to, never a sibling.
//! (Before the fix, a SIGTERM in the instant after `fork` ran the server's handler in the new
//! child, which killed every worker the server knew of.)
//!
//! The only test in this binary: it signals every new child of the fork server, which would
//! hit other tests' children. Signals go by pidfd, after checking the pid is a child of the
//! fork server, so a recycled pid is never hit. `STEALPOOL_STORM_ROUNDS` sets the number of
//! children (default 300, a second or two).

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

mod children;
use children::{Reap, sleeps_forever};

use stealpool::process::Process;
use stealpool::{ExitStatus, ProcessPoolBuilder};

const LONG: Duration = Duration::from_secs(60);

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
stealpool::register_fn!(nap);

/// The pids the fork server `server` currently has as children.
fn children_of(server: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{server}/task/{server}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn parent_of(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `signal` to `pid` only if it is (still) a child of `server`: the pidfd pins the
/// process, and the signal-0 probe after the check proves the check was about that process.
fn signal_child_of(server: u32, pid: i32, signal: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    let Ok(fd) = i32::try_from(fd) else { return false };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just returned by pidfd_open and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let send = |sig: i32| {
        // SAFETY: pidfd_send_signal with a valid pidfd, no siginfo, no flags.
        unsafe {
            nix::libc::syscall(nix::libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<u8>(), 0) == 0
        }
    };
    parent_of(pid) == Some(server) && send(0) && send(signal)
}

#[test]
fn sigterm_storm_at_new_children_never_kills_their_siblings() {
    let rounds: usize = std::env::var("STEALPOOL_STORM_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let siblings: Vec<Reap> = (0..3).map(|_| Reap(Process::spawn(sleeps_forever, ()).unwrap())).collect();
    let sibling_pids: HashSet<i32> = siblings.iter().map(|s| s.0.pid() as i32).collect();
    let server = {
        let pool = ProcessPoolBuilder::new().num_workers(1).build().unwrap();
        pool.fork_server_pid()
    };
    assert!(children_of(server).iter().any(|p| sibling_pids.contains(p)), "the siblings are the server's children");

    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let storm = {
        let (stop, hits, sibling_pids) = (Arc::clone(&stop), Arc::clone(&hits), sibling_pids.clone());
        std::thread::spawn(move || {
            let mut signalled = HashSet::new();
            while !stop.load(Ordering::Relaxed) {
                for pid in children_of(server) {
                    if !sibling_pids.contains(&pid)
                        && signalled.insert(pid)
                        && signal_child_of(server, pid, nix::libc::SIGTERM)
                    {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if signalled.len() > 10_000 {
                    signalled.clear();
                }
            }
        })
    };
    let mut terminated = 0;
    for _ in 0..rounds {
        // A child killed before it has its arguments fails the spawn: that is the signal
        // doing its job.
        let Ok(p) = Process::spawn(nap, 20) else {
            terminated += 1;
            continue;
        };
        match p.join_timeout(LONG) {
            Some(ExitStatus::Exited(0)) => {}
            Some(ExitStatus::Signaled { signal: 15 }) => terminated += 1,
            other => panic!("a child ended with {other:?}"),
        }
        if siblings.iter().any(|s| !s.0.is_alive()) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    for s in &siblings {
        assert_eq!(s.0.exit_status(), None, "sibling {} was killed by a signal meant for a new child", s.0.pid());
    }
    eprintln!("{rounds} children, {} signalled, {terminated} ended by SIGTERM", hits.load(Ordering::Relaxed));
    assert!(terminated > 0, "the storm reached some children (else this test proves nothing)");
}
