//! The shared state behind a [`Future`](super::Future): one per job, shared by the handle and by
//! whoever runs the job (a worker thread, or later a process pool's dispatcher).
//!
//! # States
//! ```text
//!   Pending ──start──▶ Running ──complete──▶ Finishing ──▶ Done
//!      │                                        ▲
//!      └──────────────cancel────────────────────┘
//! ```
//! Exactly one party moves the job out of `Pending` (the `start` or `cancel` that wins the lock),
//! and that party alone later calls `complete`. `Finishing` is the window in which done
//! callbacks run on the completing thread with a borrow of the outcome the completer still owns;
//! only after the last callback returns is the outcome stored and `Done` published, so the
//! handle's owner can never move the value out while a callback still reads it. `is_done` is
//! already true during `Finishing` (as in CPython, where callbacks run after the state is
//! `FINISHED`); the blocking `result*` calls wait for `Done`.
//!
//! Callbacks added once `Done` run at once on the caller's thread: the outcome is lent to that
//! thread (`Slot::Lent`) while they run, and callbacks that arrive meanwhile (from a callback
//! itself, or from another thread sharing `&Future`) are queued and run by the lender before it
//! puts the outcome back. Nobody ever waits for a lent outcome, so a callback that adds a callback
//! to its own future cannot deadlock, and `T` only has to be `Send`.
//!
//! No user code ever runs while the mutex is held.

use std::mem;
use std::task::Waker;
use std::time::Instant;

use crate::error::JobError;
use crate::sync::{Condvar, Mutex, MutexGuard};
use crate::unwind;

/// A done callback: receives a borrow of the outcome.
pub(crate) type Callback<T> = Box<dyn FnOnce(Result<&T, &JobError>) + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Running,
    Finishing,
    Done,
}

/// How a finished job ended, kept after its outcome is moved out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Value,
    Failed,
    Cancelled,
}

impl Ending {
    fn of<T>(outcome: &Result<T, JobError>) -> Ending {
        match outcome {
            Ok(_) => Ending::Value,
            Err(JobError::Cancelled) => Ending::Cancelled,
            Err(_) => Ending::Failed,
        }
    }
}

enum Slot<T> {
    Empty,
    Owned(Result<T, JobError>),
    /// Moved to a thread running late callbacks; it will be put back.
    Lent,
    Taken,
}

struct Inner<T> {
    phase: Phase,
    ending: Option<Ending>,
    /// Threads blocked on `cond`; completion skips the notify when there are none.
    sleepers: u32,
    slot: Slot<T>,
    /// What few jobs need, allocated on first use so the common job stays small (the cell is
    /// allocated once per job, and under 128 bytes the allocator frees it without a lock).
    extra: Option<Box<Extra<T>>>,
}

struct Extra<T> {
    callbacks: Vec<Callback<T>>,
    waker: Option<Waker>,
    /// The job's error while the outcome is held elsewhere: by the completing thread while
    /// callbacks run (`Finishing`), or by a thread running late callbacks (`Slot::Lent`).
    lent_error: Option<JobError>,
}

impl<T> Inner<T> {
    fn extra(&mut self) -> &mut Extra<T> {
        self.extra.get_or_insert_with(|| Box::new(Extra { callbacks: Vec::new(), waker: None, lent_error: None }))
    }

    fn take_callbacks(&mut self) -> Vec<Callback<T>> {
        self.extra.as_mut().map(|e| mem::take(&mut e.callbacks)).unwrap_or_default()
    }
}

/// The state of one job. See the module docs for the protocol.
pub(crate) struct Core<T> {
    inner: Mutex<Inner<T>>,
    cond: Condvar,
}

impl<T> Core<T> {
    pub(crate) fn new() -> Self {
        Core {
            inner: Mutex::new(Inner {
                phase: Phase::Pending,
                ending: None,
                sleepers: 0,
                slot: Slot::Empty,
                extra: None,
            }),
            cond: Condvar::new(),
        }
    }

    /// Moves `Pending` to `Running`. Returns `false` if the job was cancelled or already
    /// started; the caller must then not run it.
    #[inline]
    pub(crate) fn try_start(&self) -> bool {
        let mut g = self.inner.lock();
        if g.phase == Phase::Pending {
            g.phase = Phase::Running;
            true
        } else {
            false
        }
    }

    /// Cancels a job that has not started. Returns whether the job is (now or already) cancelled.
    pub(crate) fn cancel(&self) -> bool {
        self.cancel_and(|| {})
    }

    /// Like [`cancel`](Core::cancel), and if this call is the one that cancels, runs `discard`
    /// on this thread first: the backend drops the job there, so that what it captured goes
    /// at once and not when the last handle goes.
    ///
    /// `discard` runs after the job left `Pending` under the lock (so nobody else will ever
    /// start it: whoever owns the job's storage may touch it in `discard`), and with the lock
    /// released (a job's `Drop` is user code). Meanwhile the job is already seen as done and
    /// cancelled (`Finishing`, its error lent), and the callbacks run after `discard`.
    pub(crate) fn cancel_and(&self, discard: impl FnOnce()) -> bool {
        let mut g = self.inner.lock();
        if g.phase != Phase::Pending {
            return g.ending == Some(Ending::Cancelled);
        }
        g.phase = Phase::Finishing;
        g.ending = Some(Ending::Cancelled);
        g.extra().lent_error = Some(JobError::Cancelled);
        MutexGuard::unlocked(&mut g, discard);
        self.finish(g, Err(JobError::Cancelled));
        true
    }

    /// Ends a job that was started (or is still pending) with `outcome`, unless it already
    /// ended. Returns whether this call ended it. The process pool uses it where a worker's
    /// death, a time limit or a forced cancel race with the job's own reply.
    #[cfg_attr(not(feature = "process"), allow(dead_code))] // used by the process pool only
    pub(crate) fn finish_if_unfinished(&self, outcome: Result<T, JobError>) -> bool {
        self.try_finish(outcome).is_ok()
    }

    /// Like [`finish_if_unfinished`](Core::finish_if_unfinished), but hands `outcome` back if
    /// the job had already ended (a promise set twice, or set after a cancel).
    pub(crate) fn try_finish(&self, outcome: Result<T, JobError>) -> Result<(), Result<T, JobError>> {
        let g = self.inner.lock();
        if matches!(g.phase, Phase::Pending | Phase::Running) {
            self.finish(g, outcome);
            Ok(())
        } else {
            Err(outcome)
        }
    }

    /// Stores the outcome of a job this caller started, runs the callbacks, wakes the waiters.
    pub(crate) fn complete(&self, outcome: Result<T, JobError>) {
        let g = self.inner.lock();
        debug_assert_eq!(g.phase, Phase::Running, "complete() on a job that is not running");
        self.finish(g, outcome);
    }

    fn finish(&self, mut g: MutexGuard<'_, Inner<T>>, outcome: Result<T, JobError>) {
        g.ending = Some(Ending::of(&outcome));
        g.phase = Phase::Finishing;
        let has_callbacks = g.extra.as_ref().is_some_and(|e| !e.callbacks.is_empty());
        if has_callbacks && let Err(e) = &outcome {
            // `is_done` is true from here on, so `error()` must see the error too, while the
            // callbacks borrow the outcome (a callback is what tells `wait` it is done).
            g.extra().lent_error = Some(e.clone());
        }
        run_callbacks(&mut g, &outcome);
        if let Some(extra) = g.extra.as_mut() {
            extra.lent_error = None;
        }
        g.phase = Phase::Done;
        g.slot = Slot::Owned(outcome);
        let waker = g.extra.as_mut().and_then(|e| e.waker.take());
        let sleepers = g.sleepers;
        drop(g);
        if sleepers > 0 {
            self.cond.notify_all();
        }
        if let Some(w) = waker {
            // An async runtime's code: a panic in it must not unwind through the completer.
            let _ = unwind::catch(|| w.wake());
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.inner.lock().phase, Phase::Finishing | Phase::Done)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.inner.lock().phase == Phase::Running
    }

    pub(crate) fn ending(&self) -> Option<Ending> {
        self.inner.lock().ending
    }

    /// The job's error, if it finished with one (and was not taken out).
    pub(crate) fn error(&self) -> Option<JobError> {
        let g = self.inner.lock();
        match &g.slot {
            Slot::Owned(Err(e)) => Some(e.clone()),
            Slot::Lent | Slot::Empty => g.extra.as_ref().and_then(|e| e.lent_error.clone()),
            _ => None,
        }
    }

    /// Adds a callback; runs it now, on this thread, if the job is done.
    pub(crate) fn add_callback(&self, cb: Callback<T>) {
        let mut g = self.inner.lock();
        if g.phase != Phase::Done || matches!(g.slot, Slot::Lent) {
            // Not done: the completer runs it. Lent: the lender runs it before giving back.
            g.extra().callbacks.push(cb);
            return;
        }
        let outcome = match mem::replace(&mut g.slot, Slot::Lent) {
            Slot::Owned(o) => o,
            other => {
                g.slot = other;
                drop(g);
                let _ = unwind::catch(|| cb(Err(&JobError::AlreadyTaken)));
                return;
            }
        };
        g.extra().lent_error = outcome.as_ref().err().cloned();
        drop(g);
        let _ = unwind::catch(|| cb(outcome.as_ref()));
        let mut g = self.inner.lock();
        run_callbacks(&mut g, &outcome);
        g.extra().lent_error = None;
        g.slot = Slot::Owned(outcome);
    }

    /// Blocks until `Done` or the deadline. Returns whether the job is done.
    pub(crate) fn wait_done(&self, deadline: Option<Instant>) -> bool {
        let mut g = self.inner.lock();
        if g.phase == Phase::Done {
            return true;
        }
        g.sleepers += 1;
        while g.phase != Phase::Done {
            match deadline {
                Some(t) => {
                    if self.cond.wait_until(&mut g, t).timed_out() && g.phase != Phase::Done {
                        break;
                    }
                }
                None => self.cond.wait(&mut g),
            }
        }
        g.sleepers -= 1;
        g.phase == Phase::Done
    }

    /// Moves the outcome out if the job is `Done`; `None` if it is not.
    ///
    /// Callers hold the only handle (`&mut Future` or `Future` by value), so no late callback
    /// can be borrowing the outcome (`Slot::Lent` needs a `&Future` running `add_callback`).
    pub(crate) fn try_take(&self) -> Option<Result<T, JobError>> {
        let mut g = self.inner.lock();
        if g.phase != Phase::Done {
            return None;
        }
        Some(match mem::replace(&mut g.slot, Slot::Taken) {
            Slot::Owned(o) => o,
            Slot::Lent => {
                g.slot = Slot::Lent;
                Err(JobError::AlreadyTaken)
            }
            Slot::Taken | Slot::Empty => Err(JobError::AlreadyTaken),
        })
    }

    /// Like `try_take`, but registers `waker` when the job is not done.
    pub(crate) fn poll_take(&self, waker: &Waker) -> Option<Result<T, JobError>> {
        {
            let mut g = self.inner.lock();
            if g.phase != Phase::Done {
                let slot = &mut g.extra().waker;
                match slot {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *slot = Some(waker.clone()),
                }
                return None;
            }
        }
        self.try_take()
    }

    pub(crate) fn describe(&self) -> &'static str {
        let g = self.inner.lock();
        match (g.phase, g.ending) {
            (Phase::Pending, _) => "pending",
            (Phase::Running, _) => "running",
            (_, Some(Ending::Cancelled)) => "cancelled",
            (_, Some(Ending::Failed)) => "failed",
            _ => "finished",
        }
    }
}

/// Runs the pending callbacks with the lock released, until none are left: callbacks added
/// while a batch runs join the next batch, so each runs exactly once and in the order added.
fn run_callbacks<T>(g: &mut MutexGuard<'_, Inner<T>>, outcome: &Result<T, JobError>) {
    loop {
        let batch = g.take_callbacks();
        if batch.is_empty() {
            return;
        }
        MutexGuard::unlocked(g, || {
            for cb in batch {
                let _ = unwind::catch(|| cb(outcome.as_ref()));
            }
        });
    }
}

/// What a [`Future`](super::Future) points at: the job's [`Core`] plus, for backends that can,
/// a way to run a job that has not started on the waiting thread.
pub(crate) trait Cell<T>: Send + Sync {
    fn core(&self) -> &Core<T>;

    /// Cancels the job if it has not started, dropping it (and what it captured) at once where
    /// the backend holds it. Returns whether the job is now cancelled.
    fn cancel(&self) -> bool {
        self.core().cancel()
    }

    /// Runs the job here and now if it has not started and the current thread may run it
    /// (a worker of the pool that owns it). Returns whether it ran.
    fn run_inline(&self) -> bool {
        false
    }

    /// Cancels the job even if it is running, where the backend can stop it. Returns whether
    /// the job is now cancelled.
    fn force_cancel(&self) -> bool {
        self.cancel()
    }
}

impl<T: Send> Cell<T> for Core<T> {
    fn core(&self) -> &Core<T> {
        self
    }
}

/// Models of the state machine, checked with loom (see `crate::sync`).
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    use super::*;

    /// `start` and `cancel` race: exactly one wins, and the outcome says which.
    #[test]
    fn loom_cancel_and_start_exactly_one_wins() {
        loom::model(|| {
            let core = Arc::new(Core::<u32>::new());
            let starter = {
                let core = Arc::clone(&core);
                thread::spawn(move || {
                    let started = core.try_start();
                    if started {
                        core.complete(Ok(1));
                    }
                    started
                })
            };
            let cancelled = core.cancel();
            let started = starter.join().unwrap();
            assert!(started ^ cancelled, "started {started}, cancelled {cancelled}");
            assert!(core.wait_done(None));
            let expected = if started { Ok(1) } else { Err(JobError::Cancelled) };
            assert_eq!(core.try_take(), Some(expected));
        });
    }

    /// A promise's `try_finish` and a cancel race on a pending job: exactly one wins, and the
    /// loser's value is handed back.
    #[test]
    fn loom_try_finish_and_cancel_exactly_one_wins() {
        loom::model(|| {
            let core = Arc::new(Core::<u32>::new());
            let setter = {
                let core = Arc::clone(&core);
                thread::spawn(move || core.try_finish(Ok(5)))
            };
            let cancelled = core.cancel();
            let set = setter.join().unwrap();
            assert!(set.is_ok() ^ cancelled, "set {set:?}, cancelled {cancelled}");
            if !cancelled {
                assert_eq!(core.try_take(), Some(Ok(5)));
            } else {
                assert_eq!(set, Err(Ok(5)));
                assert_eq!(core.try_take(), Some(Err(JobError::Cancelled)));
            }
        });
    }

    /// A callback added while the job completes runs exactly once, and sees the value.
    #[test]
    fn loom_complete_and_add_callback_runs_it_once() {
        loom::model(|| {
            let core = Arc::new(Core::<u32>::new());
            assert!(core.try_start());
            let calls = Arc::new(AtomicUsize::new(0));
            let adder = {
                let (core, calls) = (Arc::clone(&core), Arc::clone(&calls));
                thread::spawn(move || {
                    core.add_callback(Box::new(move |r| {
                        assert_eq!(r.ok(), Some(&7));
                        calls.fetch_add(1, Ordering::SeqCst);
                    }))
                })
            };
            core.complete(Ok(7));
            adder.join().unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(core.try_take(), Some(Ok(7)));
        });
    }

    /// A waiter that blocks while the job completes is woken (else loom reports a deadlock),
    /// and so is one that blocks while the job is cancelled.
    #[test]
    fn loom_complete_or_cancel_wakes_the_waiter() {
        for cancel in [false, true] {
            loom::model(move || {
                let core = Arc::new(Core::<u32>::new());
                if !cancel {
                    assert!(core.try_start());
                }
                let waiter = {
                    let core = Arc::clone(&core);
                    thread::spawn(move || core.wait_done(None))
                };
                if cancel {
                    assert!(core.cancel());
                } else {
                    core.complete(Ok(3));
                }
                assert!(waiter.join().unwrap());
                assert!(core.is_done());
            });
        }
    }

    /// A cancel whose discard runs while another thread adds a callback and a third waits:
    /// the callback runs once, with `Cancelled`, and the discard runs once, before it.
    #[test]
    fn loom_cancel_discard_callback_and_wait() {
        loom::model(|| {
            let core = Arc::new(Core::<u32>::new());
            let log = Arc::new(AtomicUsize::new(0));
            let adder = {
                let (core, log) = (Arc::clone(&core), Arc::clone(&log));
                thread::spawn(move || {
                    core.add_callback(Box::new(move |r| {
                        assert_eq!(r.err(), Some(&JobError::Cancelled));
                        // The discard (1) came first; the callback adds 10, once.
                        assert_eq!(log.fetch_add(10, Ordering::SeqCst) % 10, 1);
                    }))
                })
            };
            let discard_log = Arc::clone(&log);
            assert!(core.cancel_and(move || {
                discard_log.fetch_add(1, Ordering::SeqCst);
            }));
            assert!(core.wait_done(None));
            adder.join().unwrap();
            assert_eq!(log.load(Ordering::SeqCst), 11);
        });
    }
}
