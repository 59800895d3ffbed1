//! Tests of the driver that need real workers: an internal thread that panics must break the
//! pool loudly and leave no worker behind.
//!
//! These tests must never leave a process behind: each waits until the pool's workers are gone.

use std::time::Duration;

use crate::{Executor, JobError, ProcessPoolBuilder};

/// A pool whose workers carry this name prefix gets a supervisor that panics at once.
pub(crate) const PANIC_PREFIX: &str = "stealpool-panic";

/// A pool whose workers carry this name prefix gets reply readers that panic at once.
pub(crate) const PANIC_LINK_PREFIX: &str = "stealpool-panrx";

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
crate::register_fn!(nap);

#[test]
fn a_panicking_supervisor_breaks_the_pool_loudly() {
    let p = ProcessPoolBuilder::new()
        .num_workers(1)
        .name_prefix(PANIC_PREFIX)
        .task_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let pid = p.worker_pids()[0];
    // The first job with a limit starts the supervisor, which panics: the job fails loudly
    // instead of running on without a time limit.
    let err = p.apply_async(nap, 60_000).unwrap().result().unwrap_err();
    assert!(matches!(&err, JobError::Broken { reason } if reason.contains("supervisor")), "{err:?}");
    assert!(p.is_shutdown());
    let refused = p.apply_async(nap, 1).unwrap_err();
    assert!(refused.broken_reason().is_some_and(|r| r.contains("supervisor")), "{refused}");
    assert!(refused.to_string().contains("broken"), "{refused}");
    p.join().unwrap();
    assert!(p.worker_pids().is_empty());
    // SAFETY: kill with signal 0 only checks whether the pid exists.
    let gone = unsafe { nix::libc::kill(pid as i32, 0) } != 0;
    assert!(gone, "the worker was killed and reaped");
}

#[test]
fn a_panicking_reply_reader_breaks_the_pool_loudly_and_leaves_no_worker() {
    let started = std::time::Instant::now();
    let err = ProcessPoolBuilder::new().num_workers(2).name_prefix(PANIC_LINK_PREFIX).build().unwrap_err();
    assert!(err.to_string().contains("reply reader"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "build returned promptly");
    // Its workers were killed and reaped (names are cut to 15 bytes).
    let ours = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
            .filter(|e| {
                std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.starts_with(&PANIC_LINK_PREFIX[..15]))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ours() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(ours(), 0, "no worker of the broken pool is left");
}
