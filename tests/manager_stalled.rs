//! A consumer process stopped with `SIGSTOP` while it drains a manager queue (so, most likely,
//! while it holds read-ahead items): the others go on, and once it resumes no item has been
//! delivered twice or lost.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use stealpool::manager::{Manager, Queue, TryGetError};
use stealpool::process::Process;

const LONG: Duration = Duration::from_secs(60);
const END: u64 = u64::MAX;

/// Moves every item of `q` to `out` until the end marker.
fn drain((q, out): (Queue<u64>, Queue<u64>)) {
    loop {
        let item = q.get().unwrap();
        if item == END {
            return;
        }
        out.put(item).unwrap();
    }
}
stealpool::register_fn!(drain);

/// Kills the child when a test fails half-way, so none outlives the test.
struct Reap<'a>(&'a Process);

impl Drop for Reap<'_> {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.pid() as i32), Signal::SIGCONT);
        self.0.kill();
        self.0.join();
    }
}

#[test]
fn a_stopped_consumer_delays_others_briefly_and_nothing_runs_twice() {
    let n = 50_000u64;
    let manager = Manager::new().unwrap();
    let q = manager.queue::<u64>().unwrap();
    let out = manager.queue::<u64>().unwrap();
    (0..n).for_each(|i| q.put(i).unwrap());
    let child = Process::spawn(drain, (q.clone(), out.clone())).unwrap();
    let reap = Reap(&child);
    // Stop it in the middle of draining.
    while out.len().unwrap() < 1000 {
        std::thread::yield_now();
    }
    kill(Pid::from_raw(child.pid() as i32), Signal::SIGSTOP).unwrap();
    // What it had handed on when it stopped (its puts are in the manager's socket).
    let at_stop = out.len().unwrap() as u64;
    // We are served although it may hold read-ahead items (the server takes them back after
    // its lease): every item left comes to us, but for the one it may have in hand (taken,
    // not yet handed on). Counted, not timed: a pause under load is no sign of the end.
    let mut ours = Vec::new();
    while (ours.len() as u64) < n - at_stop - 1 {
        ours.push(q.get_timeout(LONG).expect("the stopped consumer kept items from us"));
    }
    kill(Pid::from_raw(child.pid() as i32), Signal::SIGCONT).unwrap();
    q.put(END).unwrap();
    assert_eq!(child.join_timeout(LONG), Some(stealpool::ExitStatus::Exited(0)));
    drop(reap);
    // Once resumed, it could hand on at most one item: the one it had in hand, or else the one
    // left in the queue (unless the end marker reached it first). The rest of its read-ahead
    // went to us (its acknowledgement is refused, it asks afresh).
    let after = out.len().unwrap() as u64;
    assert!(after - at_stop <= 1, "the stopped consumer kept {} items from us", after - at_stop);
    let mut all = ours;
    for _ in 0..after {
        all.push(out.get_timeout(LONG).expect("an item it handed on"));
    }
    if after == at_stop {
        all.push(q.get_timeout(LONG).expect("the item it neither had in hand nor took"));
    }
    assert_eq!(out.try_get(), Err(TryGetError::Empty), "nothing more was handed on");
    assert_eq!(q.try_get(), Err(TryGetError::Empty), "nothing is left behind");
    all.sort_unstable();
    let total = all.len();
    all.dedup();
    assert_eq!(all.len(), total, "an item was delivered twice");
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every item once");
}
