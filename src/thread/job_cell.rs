//! The cell of one job of the thread pool: the job, type-erased behind [`JobRef`] for the
//! queues, and the core of its future, in one allocation.
//!
//! This module must never let a panic from user code (the job, the drop of what it captured
//! or produced) unwind into the pool: they run under [`unwind::catch`].

use std::cell::UnsafeCell;
use std::sync::Arc;

use super::current;
use crate::future::{Cell, Core};
use crate::job::Job;
use crate::unwind;

/// A queued job, type-erased.
pub(super) type JobRef = Arc<dyn Runnable>;

pub(super) trait Runnable: Send + Sync {
    /// Runs the job unless it was cancelled or already started elsewhere (inline by a waiter).
    fn run(&self);
    /// Cancels the job if it has not started, dropping it at once.
    fn cancel(&self);
}

/// Runs a queued job and drops the queue's reference to it. That reference may be the last
/// one (the future was dropped, or the job ran inline elsewhere), and then its drop drops the
/// job's outcome: user code, which may panic, caught here like the job itself.
#[inline]
pub(super) fn run_job(job: JobRef) {
    let _ = unwind::catch(move || job.run());
}

/// Cancels a queued job and drops the queue's reference to it, both under a panic guard for
/// the same reason as in [`run_job`].
pub(super) fn cancel_job(job: JobRef) {
    let _ = unwind::catch(move || job.cancel());
}

/// A job and the state of its future in one allocation, shared by the queue and the [`Future`].
pub(super) struct JobCell<J: Job> {
    core: Core<J::Output>,
    /// Taken by whoever wins `core.try_start()`; see the `Sync` impl.
    job: UnsafeCell<Option<J>>,
    /// The address of the owning registry: jobs run inline only on that pool's threads.
    registry: usize,
}

// SAFETY: `job` is the only field not already `Sync`. It is written once, in `new`, before the
// cell is shared (the `Arc` is published to other threads through the deques and the future,
// which synchronize). After that it is touched only by the one party that moves the core out
// of `Pending`, a move made under the core's mutex and so made exactly once: `execute` and
// `take_back` after `core.try_start()` returned true, or `cancel`'s discard closure, which
// `Core::cancel_and` runs only after that call itself moved the core out of `Pending` (and
// after the mutex, whose release and acquisition order it after the cell's publication). So at
// most one thread accesses `job`, and moving a `J: Send` out of it on that thread is sound.
// `Core<T>` is `Sync` for `T: Send`.
unsafe impl<J: Job + Send> Sync for JobCell<J> where J::Output: Send {}

impl<J: Job + Send> JobCell<J>
where
    J::Output: Send,
{
    /// A cell holding `job`, owned by the registry whose address is `registry`.
    pub(super) fn new(job: J, registry: usize) -> Arc<Self> {
        Arc::new(JobCell { core: Core::new(), job: UnsafeCell::new(Some(job)), registry })
    }

    /// Runs the job here if it has not started. Returns whether it ran.
    fn execute(&self) -> bool {
        if !self.core.try_start() {
            return false;
        }
        // SAFETY: `try_start` returned true, so this thread is the only one that will ever
        // access `job` (see the `Sync` impl).
        let job = unsafe { (*self.job.get()).take() };
        let outcome = match job {
            Some(job) => unwind::catch(|| job.run()),
            None => Err(crate::JobError::AlreadyTaken),
        };
        self.core.complete(outcome);
        true
    }
}

impl<J: Job + Send> JobCell<J>
where
    J::Output: Send,
{
    /// Cancels the job and returns it, if it has not started.
    pub(super) fn take_back(&self) -> Option<J> {
        if !self.core.try_start() {
            return None;
        }
        // SAFETY: as in `execute`: `try_start` returned true, so only this thread ever
        // accesses `job` from now on.
        let job = unsafe { (*self.job.get()).take() };
        self.core.complete(Err(crate::JobError::Cancelled));
        job
    }
}

impl<J: Job + Send> Runnable for JobCell<J>
where
    J::Output: Send,
{
    fn run(&self) {
        self.execute();
    }

    fn cancel(&self) {
        Cell::cancel(self);
    }
}

impl<J: Job + Send> Cell<J::Output> for JobCell<J>
where
    J::Output: Send,
{
    fn core(&self) -> &Core<J::Output> {
        &self.core
    }

    fn run_inline(&self) -> bool {
        current::registry() == Some(self.registry) && self.execute()
    }

    fn cancel(&self) -> bool {
        self.core.cancel_and(|| {
            // SAFETY: `cancel_and` runs this only after this very call moved the core out of
            // `Pending`, so this thread is the only one that will ever access `job` (see the
            // `Sync` impl).
            let job = unsafe { (*self.job.get()).take() };
            // The job's captures are user values whose `Drop` may panic: caught, as a job's
            // own panic would be; the job is cancelled either way.
            let _ = unwind::catch(move || drop(job));
        })
    }
}

/// Models of a job cell's hand-over, checked with loom (see `crate::sync`).
#[cfg(all(test, loom))]
mod loom_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use loom::thread;

    use super::*;

    /// A worker runs the job while its future cancels it: exactly one of them wins, and the
    /// closure (with what it captured) is dropped exactly once, by the winner, whether it ran.
    #[test]
    fn loom_execute_and_cancel_drop_the_job_once() {
        loom::model(|| {
            struct Counted(std::sync::Arc<AtomicUsize>);
            impl Drop for Counted {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let drops = std::sync::Arc::new(AtomicUsize::new(0));
            let ran = std::sync::Arc::new(AtomicUsize::new(0));
            let (captured, r) = (Counted(std::sync::Arc::clone(&drops)), std::sync::Arc::clone(&ran));
            let job = move || {
                let _keep = &captured;
                r.fetch_add(1, Ordering::SeqCst);
            };
            let cell = JobCell::new(job, 0);
            let worker = {
                let cell = Arc::clone(&cell);
                thread::spawn(move || cell.execute())
            };
            let cancelled = Cell::cancel(&*cell);
            let executed = worker.join().unwrap();
            assert!(executed ^ cancelled, "executed {executed}, cancelled {cancelled}");
            assert_eq!(ran.load(Ordering::SeqCst), usize::from(executed));
            assert_eq!(drops.load(Ordering::SeqCst), 1, "the job must be gone while the cell lives");
            assert!(cell.core.is_done());
        });
    }
}
