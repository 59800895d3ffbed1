//! Sleeping, waking, and keeping `n` threads busy while some are blocked: the protocol is
//! described in `SLEEP.md` beside this file.
//!
//! This module only counts threads and parks or wakes them; it never runs jobs and never looks
//! inside the queues except through the `has_work` closures it is given.

use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicUsize, Ordering, fence};
use crate::sync::{Condvar, Mutex};

/// How long an idle spare thread waits to be reused before it exits.
const SPARE_KEEPALIVE: Duration = Duration::from_secs(5);

/// What the caller of [`Sleep::wake_one`] must do after the lock is released.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wake {
    /// Someone was woken, or nobody needs to be.
    Done,
    /// No thread could be woken: start a spare thread, already counted as live.
    SpawnSpare,
}

/// What a spare does after offering to retire.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SpareFate {
    /// Keep working.
    Continue,
    /// Exit the thread; it is no longer counted anywhere.
    Exit,
}

#[derive(Debug, Default)]
struct Counts {
    /// Regular workers parked for lack of work.
    sleeping: usize,
    /// Wake-ups granted to sleeping workers and not yet consumed.
    worker_tokens: usize,
    /// Spare threads parked, waiting to be reused.
    idle_spares: usize,
    spare_tokens: usize,
    /// Threads blocked waiting on a future (or on `wait`, `as_completed`, a map).
    blocked: usize,
    /// Set once: every parked thread is to wake up and look at the pool's state.
    shutdown: bool,
}

#[derive(Debug)]
pub(super) struct Sleep {
    /// The parallelism to keep: the number of regular workers.
    target: usize,
    /// Threads neither parked nor blocked: running a job or looking for one.
    live: CachePadded<AtomicUsize>,
    counts: Mutex<Counts>,
    worker_cond: Condvar,
    spare_cond: Condvar,
}

impl Sleep {
    /// All `target` workers start live.
    pub(super) fn new(target: usize) -> Self {
        Sleep {
            target,
            live: CachePadded::new(AtomicUsize::new(target)),
            counts: Mutex::new(Counts::default()),
            worker_cond: Condvar::new(),
            spare_cond: Condvar::new(),
        }
    }

    /// Called after work was pushed. Wakes a thread if fewer than `target` are live.
    ///
    /// The `SeqCst` fence pairs with the one in [`sleep_worker`](Sleep::sleep_worker): either
    /// this load sees the sleeper's decrement of `live`, or the sleeper's re-check of the queues
    /// sees our push.
    #[inline]
    pub(super) fn notify_work(&self) -> Wake {
        fence(Ordering::SeqCst);
        if self.live.load(Ordering::SeqCst) >= self.target {
            return Wake::Done;
        }
        self.wake_one()
    }

    #[cold]
    fn wake_one(&self) -> Wake {
        let mut c = self.counts.lock();
        self.wake_one_locked(&mut c)
    }

    fn wake_one_locked(&self, c: &mut Counts) -> Wake {
        if self.live.load(Ordering::SeqCst) >= self.target {
            return Wake::Done;
        }
        if c.sleeping > 0 {
            c.sleeping -= 1;
            c.worker_tokens += 1;
            self.live.fetch_add(1, Ordering::SeqCst);
            self.worker_cond.notify_one();
            Wake::Done
        } else if c.idle_spares > 0 {
            c.idle_spares -= 1;
            c.spare_tokens += 1;
            self.live.fetch_add(1, Ordering::SeqCst);
            self.spare_cond.notify_one();
            Wake::Done
        } else if c.blocked > 0 {
            // Every thread is busy or blocked on a future: keep the parallelism with a spare.
            self.live.fetch_add(1, Ordering::SeqCst);
            Wake::SpawnSpare
        } else {
            Wake::Done
        }
    }

    /// A spare could not be started after all: take back the count `wake_one` gave it.
    pub(super) fn spare_failed(&self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }

    /// Parks a regular worker that found no work, unless `has_work` says work appeared.
    /// Returns when woken (by new work or by shutdown).
    pub(super) fn sleep_worker(&self, has_work: impl Fn() -> bool) {
        let mut c = self.counts.lock();
        if c.shutdown {
            return;
        }
        self.live.fetch_sub(1, Ordering::SeqCst);
        c.sleeping += 1;
        fence(Ordering::SeqCst);
        if has_work() {
            c.sleeping -= 1;
            self.live.fetch_add(1, Ordering::SeqCst);
            return;
        }
        while c.worker_tokens == 0 {
            self.worker_cond.wait(&mut c);
        }
        // The waker moved us from `sleeping` to `live` when it granted the token.
        c.worker_tokens -= 1;
    }

    /// Offers to retire a spare: it parks if more than `target` threads are live, or if it is
    /// `idle` and there is no work. Returns whether to go on or to exit (after a keep-alive
    /// without reuse, or when the pool is shutting down and there is nothing for it).
    pub(super) fn retire_spare(&self, has_work: impl Fn() -> bool, idle: bool) -> SpareFate {
        let mut c = self.counts.lock();
        let surplus = self.live.load(Ordering::SeqCst) > self.target;
        if !surplus && !idle {
            return SpareFate::Continue;
        }
        self.live.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !surplus && has_work() {
            self.live.fetch_add(1, Ordering::SeqCst);
            return SpareFate::Continue;
        }
        if c.shutdown {
            // Nothing left for this spare; after shutdown nobody would reuse it.
            return SpareFate::Exit;
        }
        c.idle_spares += 1;
        while c.spare_tokens == 0 {
            if self.spare_cond.wait_for(&mut c, SPARE_KEEPALIVE).timed_out() && c.spare_tokens == 0 {
                c.idle_spares -= 1;
                return SpareFate::Exit;
            }
        }
        c.spare_tokens -= 1;
        SpareFate::Continue
    }

    /// A live thread is about to block on a future. If that leaves queued work without enough
    /// live threads, wakes or asks for a spare.
    pub(super) fn enter_blocking(&self, has_work: impl Fn() -> bool) -> Wake {
        let mut c = self.counts.lock();
        c.blocked += 1;
        self.live.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if has_work() { self.wake_one_locked(&mut c) } else { Wake::Done }
    }

    /// The blocked thread is back.
    pub(super) fn exit_blocking(&self) {
        let mut c = self.counts.lock();
        c.blocked -= 1;
        self.live.fetch_add(1, Ordering::SeqCst);
    }

    /// A live thread leaves for good.
    pub(super) fn thread_exited(&self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }

    /// Wakes every parked thread so it can see that the pool is shutting down.
    pub(super) fn shutdown(&self) {
        let mut c = self.counts.lock();
        c.shutdown = true;
        let (workers, spares) = (c.sleeping, c.idle_spares);
        c.worker_tokens += workers;
        c.spare_tokens += spares;
        c.sleeping = 0;
        c.idle_spares = 0;
        self.live.fetch_add(workers + spares, Ordering::SeqCst);
        self.worker_cond.notify_all();
        self.spare_cond.notify_all();
    }
}

/// Models of the protocol in `SLEEP.md`, checked with loom (see `crate::sync`). The queue is
/// a counter pushed with `Release` and read with `Acquire`, weaker than crossbeam's queues:
/// the protocol's own fences must be what prevents a lost wake-up.
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;
    use loom::thread;

    use super::*;

    /// Takes one job if there is one.
    fn take(queue: &AtomicUsize) -> bool {
        queue.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    /// A worker's loop, cut down: look, else sleep; return after one job.
    fn work_once(sleep: &Sleep, queue: &AtomicUsize) {
        loop {
            if take(queue) {
                return;
            }
            sleep.sleep_worker(|| queue.load(Ordering::Acquire) > 0);
        }
    }

    /// A job pushed while the only worker goes to sleep is never missed: either the submitter
    /// sees the worker gone and wakes it, or the worker's re-check sees the job. A lost wake-up
    /// leaves the worker parked for ever, which loom reports as a deadlock.
    #[test]
    fn loom_no_lost_wakeup_with_one_worker() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::new(1));
            let queue = Arc::new(AtomicUsize::new(0));
            let worker = {
                let (sleep, queue) = (Arc::clone(&sleep), Arc::clone(&queue));
                thread::spawn(move || work_once(&sleep, &queue))
            };
            queue.fetch_add(1, Ordering::Release);
            assert_eq!(sleep.notify_work(), Wake::Done, "no thread is blocked: nothing to spawn");
            worker.join().unwrap();
        });
    }

    /// Two workers, two jobs pushed one after the other, each worker leaving after one job:
    /// the second job needs the second worker, asleep or not.
    #[test]
    fn loom_no_lost_wakeup_with_two_workers() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::new(2));
            let queue = Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (sleep, queue) = (Arc::clone(&sleep), Arc::clone(&queue));
                    thread::spawn(move || work_once(&sleep, &queue))
                })
                .collect();
            for _ in 0..2 {
                queue.fetch_add(1, Ordering::Release);
                assert_eq!(sleep.notify_work(), Wake::Done);
            }
            for w in workers {
                w.join().unwrap();
            }
        });
    }

    /// `shutdown` racing with a worker going to sleep: the worker never stays parked.
    #[test]
    fn loom_shutdown_wakes_a_worker_going_to_sleep() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::new(1));
            let worker = {
                let sleep = Arc::clone(&sleep);
                thread::spawn(move || sleep.sleep_worker(|| false))
            };
            sleep.shutdown();
            worker.join().unwrap();
        });
    }

    /// The only live thread blocks on a future while a job is pushed: exactly one of the two
    /// (the blocker's `enter_blocking`, the submitter's `notify_work`) asks for a spare.
    #[test]
    fn loom_a_blocked_worker_is_replaced_exactly_once() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::new(1));
            let queue = Arc::new(AtomicUsize::new(0));
            let blocker = {
                let (sleep, queue) = (Arc::clone(&sleep), Arc::clone(&queue));
                thread::spawn(move || sleep.enter_blocking(|| queue.load(Ordering::Acquire) > 0))
            };
            queue.fetch_add(1, Ordering::Release);
            let by_submitter = sleep.notify_work() == Wake::SpawnSpare;
            let by_blocker = blocker.join().unwrap() == Wake::SpawnSpare;
            assert!(by_submitter ^ by_blocker, "spares asked for: submitter {by_submitter}, blocker {by_blocker}");
            assert_eq!(sleep.live.load(Ordering::SeqCst), 1, "the spare is counted live, the blocker is not");
        });
    }
}
