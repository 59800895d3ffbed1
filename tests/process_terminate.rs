//! `terminate` asks first (`SIGTERM`, then `SIGKILL` after the grace period); `kill` does not.
//! Through the public API. Every pool is joined in its test and each test checks that its
//! worker is gone (reaped, not a zombie).

use std::io::Write;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use stealpool::{Executor, JobError, ProcessPoolBuilder};

/// The file descriptor the `SIGTERM` handler writes to.
static NOTE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn note_and_exit(_: nix::libc::c_int) {
    let fd = NOTE_FD.load(Ordering::Relaxed);
    // SAFETY: `write` and `_exit` are async-signal-safe; the buffer is a static string.
    unsafe {
        nix::libc::write(fd, b"term\n".as_ptr().cast(), 5);
        nix::libc::_exit(0);
    }
}

/// Opens `path` for appending, says "ready" there once `how` is in place for `SIGTERM`, and
/// blocks for a minute.
fn prepare_and_block(path: &str, how: SigHandler) {
    let mut file = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    let action = SigAction::new(how, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only calls async-signal-safe functions (or is SIG_IGN).
    unsafe { signal::sigaction(Signal::SIGTERM, &action) }.unwrap();
    file.write_all(b"ready\n").unwrap();
    NOTE_FD.store(file.into_raw_fd(), Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(60));
}

fn handle_sigterm(path: String) {
    prepare_and_block(&path, SigHandler::Handler(note_and_exit));
}
stealpool::register_fn!(handle_sigterm);

fn ignore_sigterm(path: String) {
    prepare_and_block(&path, SigHandler::SigIgn);
}
stealpool::register_fn!(ignore_sigterm);

fn note_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("stealpool-terminate-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Waits (up to 30 s) until the job has said it is ready.
fn wait_ready(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(path).unwrap_or_default().contains("ready") {
        assert!(Instant::now() < deadline, "the job never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether `pid` still exists at all (a zombie included), waiting up to 10 s for it to go:
/// the fork server reaps its workers as their exits arrive.
fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn terminate_sends_sigterm_first_so_a_handler_runs() {
    let path = note_file("handler");
    let p = ProcessPoolBuilder::new().num_workers(1).terminate_grace(Duration::from_secs(30)).build().unwrap();
    let pid = p.worker_pids()[0];
    let job = p.apply_async(handle_sigterm, path.to_str().unwrap().to_owned()).unwrap();
    wait_ready(&path);
    let started = Instant::now();
    p.terminate();
    assert!(started.elapsed() < Duration::from_secs(30), "the worker ended on SIGTERM, before the grace ran out");
    p.join().unwrap();
    assert_eq!(job.result(), Err(JobError::Cancelled));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "ready\nterm\n", "the SIGTERM handler ran");
    assert!(!alive(pid) && gone(pid), "worker {pid} was reaped");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_the_grace() {
    let path = note_file("ignore");
    let grace = Duration::from_millis(300);
    let p = ProcessPoolBuilder::new().num_workers(1).terminate_grace(grace).build().unwrap();
    let pid = p.worker_pids()[0];
    let job = p.apply_async(ignore_sigterm, path.to_str().unwrap().to_owned()).unwrap();
    wait_ready(&path);
    let started = Instant::now();
    p.terminate();
    let took = started.elapsed();
    assert!(took >= grace, "terminate waited out the grace for the worker that ignored SIGTERM ({took:?})");
    assert!(took < grace + Duration::from_secs(10), "and then did not wait longer ({took:?})");
    p.join().unwrap();
    assert_eq!(job.result(), Err(JobError::Cancelled));
    assert!(!alive(pid) && gone(pid), "worker {pid} was killed and reaped");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn kill_sends_sigkill_at_once_so_no_handler_runs() {
    let path = note_file("kill");
    let p = ProcessPoolBuilder::new().num_workers(1).terminate_grace(Duration::from_secs(30)).build().unwrap();
    let pid = p.worker_pids()[0];
    let job = p.apply_async(handle_sigterm, path.to_str().unwrap().to_owned()).unwrap();
    wait_ready(&path);
    p.kill();
    p.join().unwrap();
    assert_eq!(job.result(), Err(JobError::Cancelled));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "ready\n", "SIGKILL: the handler never ran");
    assert!(!alive(pid) && gone(pid), "worker {pid} was reaped");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_zero_grace_is_an_immediate_kill_and_idle_workers_end_on_sigterm() {
    let path = note_file("zero");
    let p = ProcessPoolBuilder::new().num_workers(1).terminate_grace(Duration::ZERO).build().unwrap();
    let job = p.apply_async(handle_sigterm, path.to_str().unwrap().to_owned()).unwrap();
    wait_ready(&path);
    p.terminate();
    p.join().unwrap();
    assert_eq!(job.result(), Err(JobError::Cancelled));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "ready\n", "no SIGTERM was sent");
    let _ = std::fs::remove_file(&path);

    // Idle workers: SIGTERM ends them well within a long grace.
    let p = ProcessPoolBuilder::new().num_workers(2).terminate_grace(Duration::from_secs(30)).build().unwrap();
    let pids = p.worker_pids();
    let started = Instant::now();
    p.terminate();
    assert!(started.elapsed() < Duration::from_secs(30));
    p.join().unwrap();
    for pid in pids {
        assert!(gone(pid), "worker {pid} was reaped");
    }
}
