//! A consumer process stopped with `SIGSTOP` while it drains a manager queue (so, most likely,
//! while it holds read-ahead items): the others go on, and once it resumes no item has been
//! delivered twice or lost.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use stealpool::manager::{Manager, Queue};
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
    let at_stop = out.len().unwrap();
    // We are served although it may hold read-ahead items (the server takes them back after
    // its lease): every item left comes to us.
    let mut ours = Vec::new();
    while let Ok(item) = q.get_timeout(Duration::from_millis(500)) {
        ours.push(item);
    }
    kill(Pid::from_raw(child.pid() as i32), Signal::SIGCONT).unwrap();
    q.put(END).unwrap();
    assert_eq!(child.join_timeout(LONG), Some(stealpool::ExitStatus::Exited(0)));
    drop(reap);
    // Once resumed, it could hand on at most the one item it had in hand: the rest of its
    // read-ahead went to us (its acknowledgement is refused, it asks afresh and finds the end).
    let after = out.len().unwrap();
    assert!(after - at_stop <= 1, "the stopped consumer kept {} items from us", after - at_stop);
    let mut all = ours;
    while let Ok(item) = out.try_get() {
        all.push(item);
    }
    all.sort_unstable();
    let total = all.len();
    all.dedup();
    assert_eq!(all.len(), total, "an item was delivered twice");
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every item once");
}
