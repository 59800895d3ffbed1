//! A process forked (by the program itself, `fork()`, not through `Process`) from one that
//! runs a process pool: what the child can do with its parent's pool and fork-server handle.
//!
//! The fork-server handle is per-process state (`ipc::PerProcess`): the child finds none and
//! starts its own (`fork_server_restart.rs` shows an inherited handle refused and replaced).
//! The pool records the process that built it: in the child its threads (writer, reply reader,
//! supervisor) do not exist and its sockets and workers are the parent's, so there it refuses
//! work at once, with a reason, and its shutdown, terminate, join and drop return at once,
//! touching nothing of the parent's. An inherited `Process` handle signals nothing and its
//! waits return at once, even while a thread of the parent was joining it at the fork. And the
//! child's copies of the parent's descriptors do not hold up the parent's shutdown.
//!
//! Every child is waited for with a deadline and killed and reaped if it hangs, so no process
//! outlives a test. The tests run one at a time: a fork copies whatever lock another test's
//! threads hold at that instant.

use std::cell::RefCell;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use stealpool::{Executor, ProcessPoolExecutor, ResultTimeoutError};

const LONG: Duration = Duration::from_secs(60);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn double(x: u64) -> u64 {
    x * 2
}
stealpool::register_fn!(double);

/// Forks; the child runs `child` and exits with the code it returns (`std::process::exit`:
/// `atexit` hooks run, so a fork server the child started is stopped and reaped, but no
/// destructor of the parent's objects does). The parent waits for the child at most `wait`,
/// then kills and reaps it: `None` means it hung.
fn in_child(wait: Duration, child: impl FnOnce() -> i32) -> Option<WaitStatus> {
    // SAFETY: called while the parent's pool is idle (every job it was given has returned), so
    // its threads wait on condition variables and hold no lock the child takes; the test
    // harness's threads hold none either (`ONE_AT_A_TIME`), and glibc's allocator is safe
    // after fork.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => std::process::exit(child()),
        nix::unistd::ForkResult::Parent { child } => {
            let deadline = Instant::now() + wait;
            loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                    WaitStatus::StillAlive if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    WaitStatus::StillAlive => {
                        kill(child, Signal::SIGKILL).unwrap();
                        waitpid(child, None).unwrap();
                        return None;
                    }
                    status => return Some(status),
                }
            }
        }
    }
}

fn exited(code: i32) -> impl Fn(Option<WaitStatus>) -> bool {
    move |s| matches!(s, Some(WaitStatus::Exited(_, c)) if c == code)
}

#[test]
fn a_forked_child_runs_a_pool_of_its_own_and_leaves_the_parents_alone() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pool = ProcessPoolExecutor::new(1);
    assert_eq!(pool.apply_async(double, 21).unwrap().result(), Ok(42));
    let server = pool.fork_server_pid();
    let status = in_child(LONG, || {
        let Ok(own) = ProcessPoolExecutor::builder().num_workers(1).build() else { return 10 };
        if own.fork_server_pid() == server {
            return 11; // it would fork the child's workers from the parent's server
        }
        let Ok(mut f) = own.apply_async(double, 5) else { return 12 };
        match f.result_timeout(LONG) {
            Ok(10) => {}
            _ => return 13,
        }
        drop(own);
        0
    });
    assert!(
        exited(0)(status),
        "{status:?} (10: no pool, 11: the parent's server, 12: submit failed, 13: no result; None: hung)"
    );
    // The child's handles, sockets and server are gone; the parent's pool did not notice.
    assert_eq!(pool.fork_server_pid(), server);
    assert_eq!(pool.apply_async(double, 4).unwrap().result(), Ok(8));
}

#[test]
fn an_inherited_pool_refuses_work_in_a_forked_child() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pool = ProcessPoolExecutor::new(1);
    assert_eq!(pool.apply_async(double, 1).unwrap().result(), Ok(2));
    let workers = pool.worker_pids();
    let status = in_child(LONG, || {
        let reason = format!(
            "this pool belongs to process {}; a forked child must build its own",
            std::os::unix::process::parent_id()
        );
        match pool.apply_async(double, 3) {
            Err(e) if e.broken_reason() == Some(reason.as_str()) => {}
            Err(_) => return 22,
            Ok(mut f) => {
                return match f.result_timeout(Duration::from_secs(5)) {
                    Err(ResultTimeoutError::Timeout) => 20,
                    // Ran on the parent's worker, through sockets the parent writes to as well.
                    Ok(_) => 21,
                    Err(ResultTimeoutError::Failed(_)) => 23,
                };
            }
        }
        if pool.map(double, 0..3u64).is_ok() {
            return 24;
        }
        if !pool.is_shutdown() || !pool.worker_pids().is_empty() || pool.fork_server_pid() != 0 {
            return 25; // it would report (or start) what belongs to the parent
        }
        // Each returns at once and leaves the parent's workers alone.
        pool.terminate();
        pool.shutdown(true, true);
        if pool.join().is_err() {
            return 26;
        }
        0
    });
    assert!(
        exited(0)(status),
        "{status:?} (20: the future never resolved, 21: ran on the parent's worker, 22: another refusal, \
         23: accepted then failed, 24: map accepted, 25: reports the parent's workers, 26: join refused; None: hung)"
    );
    assert_eq!(pool.worker_pids(), workers, "the child's terminate killed none of the parent's workers");
    assert!(!pool.is_shutdown(), "the child's shutdown did not reach the parent's pool");
    assert_eq!(pool.apply_async(double, 4).unwrap().result(), Ok(8), "the parent's pool still works");
}

#[test]
fn dropping_an_inherited_pool_in_a_forked_child_returns() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pool = RefCell::new(Some(ProcessPoolExecutor::new(1)));
    let first = pool.borrow().as_ref().map(|p| p.apply_async(double, 1).unwrap().result());
    assert_eq!(first, Some(Ok(2)));
    let status = in_child(Duration::from_secs(20), || {
        drop(pool.borrow_mut().take());
        0
    });
    assert!(exited(0)(status), "{status:?} (None: the drop hung)");
    let pool = pool.borrow_mut().take().unwrap();
    assert_eq!(pool.apply_async(double, 4).unwrap().result(), Ok(8), "the parent's pool still works");
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
stealpool::register_fn!(sleep_ms);

/// Whether thread `tid` of this process is blocked (state `S`: asleep in a system call).
fn is_blocked(tid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
}

#[test]
fn an_inherited_process_handle_returns_at_once_in_a_forked_child() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let process = std::sync::Arc::new(stealpool::process::Process::spawn(sleep_ms, 600_000).unwrap());
    // A thread of the parent waits in `join` (holding the handle's status lock) at the fork.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let joiner = {
        let process = std::sync::Arc::clone(&process);
        std::thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            process.join()
        })
    };
    let tid = tid_rx.recv().unwrap();
    let deadline = Instant::now() + LONG;
    while !is_blocked(tid) {
        assert!(Instant::now() < deadline, "the joining thread never blocked");
        std::thread::yield_now();
    }
    let status = in_child(LONG, || {
        // Not this process's child: the signals do nothing and the waits return at once.
        process.terminate();
        process.kill();
        if process.join() != stealpool::ExitStatus::Unknown {
            return 30;
        }
        if process.join_timeout(LONG) != Some(stealpool::ExitStatus::Unknown) || process.is_alive() {
            return 31;
        }
        0
    });
    // (`is_alive` would wait here for the joining thread, which holds the status lock.)
    let state = std::fs::read_to_string(format!("/proc/{}/stat", process.pid())).unwrap_or_default();
    let running = state.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
    process.kill();
    let ended = joiner.join().unwrap();
    assert!(exited(0)(status), "{status:?} (30: join, 31: join_timeout or is_alive; None: hung)");
    assert!(running, "the child's signals reached the parent's process: {state:?}");
    // A SIGTERM from the child would have ended it with signal 15.
    assert_eq!(ended, stealpool::ExitStatus::Signaled { signal: 9 });
}

#[test]
fn the_parents_pool_shuts_down_while_a_forked_child_lives() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pool = ProcessPoolExecutor::new(2);
    assert_eq!(pool.apply_async(double, 1).unwrap().result(), Ok(2));
    // The child holds copies of every descriptor of ours, the pool's task sockets among them,
    // and lives until we close our end of `hold` (or a minute has passed).
    let (hold_read, hold_write) = nix::unistd::pipe().unwrap();
    // SAFETY: as in `in_child`; the child only polls a pipe and leaves with `_exit`.
    let child = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop(hold_write);
            let mut fds = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&hold_read), nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(60_000u16));
            // SAFETY: `_exit` ends the process at once, running nothing of the parent's.
            unsafe { nix::libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(hold_read);
    // Ends each worker by ending its task stream: that must not wait for the child's copies.
    drop(pool);
    let early = waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap();
    drop(hold_write);
    // Reaped by now unless it was still alive: then it ends at once, its pipe closed.
    assert_eq!(early, WaitStatus::StillAlive, "the pool's drop waited until the forked child had exited");
    assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
}
