//! The fork server's children and handles: what a newly forked child inherits (nothing of the
//! server's), timeouts of any size, and a fork server killed under working pools and processes.
//! (SIGTERM storms have a binary of their own: `fork_server_storm.rs`.)

use std::time::{Duration, Instant};

use stealpool::pipe::{self, Sender};
use stealpool::process::Process;
use stealpool::{Executor, ExitStatus, PipeError, ProcessPoolBuilder};

const LONG: Duration = Duration::from_secs(60);

/// `SigBlk`, `SigCgt` and `SigIgn` of the calling process, from `/proc/self/status`.
fn signal_state() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
    };
    (field("SigBlk:"), field("SigCgt:"), field("SigIgn:"))
}

fn worker_signal_state(_: ()) -> (u64, u64, u64) {
    signal_state()
}
stealpool::register_fn!(worker_signal_state);

fn report_signal_state(out: Sender<(u64, u64, u64)>) {
    out.send(signal_state()).unwrap();
}
stealpool::register_fn!(report_signal_state);

/// Only SIGPIPE (13) is ignored, as in any Rust program.
const ONLY_SIGPIPE: u64 = 1 << (13 - 1);

/// The signals the C library keeps for itself (32 and 33 with glibc), which it manages.
fn libc_reserved() -> u64 {
    (32..nix::libc::SIGRTMIN()).fold(0, |m, s| m | 1 << (s - 1))
}

#[test]
fn a_new_child_has_default_handlers_and_nothing_blocked() {
    let pool = ProcessPoolBuilder::new().workers(2).max_tasks_per_child(1).build().unwrap();
    for _ in 0..4 {
        let (blocked, caught, ignored) = pool.apply_async(worker_signal_state, ()).unwrap().result().unwrap();
        assert_eq!(blocked, 0, "a worker starts with no signal blocked");
        assert_eq!(caught & !libc_reserved(), 0, "a worker runs none of the fork server's handlers");
        assert_eq!(ignored & !libc_reserved(), ONLY_SIGPIPE, "a worker ignores SIGPIPE only");
    }
    let (tx, rx) = pipe::one_way().unwrap();
    let p = Process::spawn(report_signal_state, tx).unwrap();
    let (blocked, caught, ignored) = rx.recv_timeout(LONG).unwrap();
    assert_eq!((blocked, caught & !libc_reserved(), ignored & !libc_reserved()), (0, 0, ONLY_SIGPIPE));
    assert_eq!(p.join(), ExitStatus::Exited(0));
}

fn sleeps_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
stealpool::register_fn!(sleeps_forever);

/// Kills and reaps a child when a test fails half-way.
struct Reap(Process);

impl Drop for Reap {
    fn drop(&mut self) {
        self.0.kill();
        self.0.join_timeout(LONG);
    }
}

fn send_later(out: Sender<u32>, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    out.send(7).unwrap();
}
stealpool::register_fn!(send_later);

#[test]
fn timeouts_of_any_size_are_accepted() {
    let (tx, rx) = pipe::one_way::<u32>().unwrap();
    let p = Process::spawn(send_later, (tx, 50)).unwrap();
    assert_eq!(rx.recv_timeout(Duration::MAX), Ok(7), "Duration::MAX waits as long as it takes");
    assert_eq!(p.join_timeout(Duration::MAX), Some(ExitStatus::Exited(0)));
    assert_eq!(rx.recv_timeout(Duration::MAX), Err(PipeError::Eof));

    // A timeout shorter than ipc-channel's millisecond is still waited out in full.
    let (_tx, rx) = pipe::one_way::<u32>().unwrap();
    for wait in [Duration::from_micros(300), Duration::from_micros(1500)] {
        let start = Instant::now();
        assert_eq!(rx.recv_timeout(wait), Err(PipeError::Timeout));
        assert!(start.elapsed() >= wait, "waited {:?} of {wait:?}", start.elapsed());
    }
    let p = Reap(Process::spawn(sleeps_forever, ()).unwrap());
    assert_eq!(p.0.join_timeout(Duration::from_millis(20)), None);
    p.0.kill();
    assert_eq!(p.0.join_timeout(Duration::MAX), Some(ExitStatus::Signaled { signal: 9 }));
}
