//! The shutdown rules: `close` (with or without cancelling the queue), `terminate`, and the
//! pool breaking because one of its own threads panicked.
//!
//! This module must never start a thread, touch a socket or a process, or read the clock.

use super::{Decisions, Lifecycle, StopReason, Supervisor, WorkerHandle};
use crate::error::JobError;

impl<H: WorkerHandle> Supervisor<H> {
    /// `shutdown(wait, cancel_futures)` without the wait: no new work; with `cancel_queued`
    /// the queue is cancelled; idle workers retire.
    pub(crate) fn close(&mut self, cancel_queued: bool) -> Decisions<H> {
        let mut d = Decisions::default();
        if self.lifecycle == Lifecycle::Open {
            self.lifecycle = Lifecycle::Closed;
        }
        if cancel_queued {
            for t in self.queue.drain(..) {
                d.fail.push((t.sink, JobError::Cancelled));
            }
        }
        d.wake = true;
        self.settle(&mut d);
        d
    }

    /// Stops everything now: queued tasks are cancelled, workers are killed (their running
    /// tasks fail as cancelled when their exits are reported).
    pub(crate) fn terminate(&mut self) -> Decisions<H> {
        let mut d = Decisions::default();
        self.lifecycle = Lifecycle::Terminated;
        for t in self.queue.drain(..) {
            d.fail.push((t.sink, JobError::Cancelled));
        }
        for w in self.workers.iter_mut() {
            if w.stop.is_none() || w.stop == Some(StopReason::Retired) {
                w.stop = Some(StopReason::Terminated);
            }
            w.close(&mut d);
            d.kill.push(w.handle.clone());
        }
        d.wake = true;
        d
    }

    /// An internal thread panicked (`reason` says which): the pool breaks, every queued and
    /// sent task fails with [`JobError::Broken`], every worker is killed. `dead_reader` is the
    /// worker whose reply reader it was: nobody will report its exit, so it is forgotten now.
    pub(crate) fn break_on_panic(&mut self, reason: String, dead_reader: Option<u64>) -> Decisions<H> {
        let mut d = Decisions::default();
        self.break_pool(reason.clone(), &mut d);
        self.lifecycle = Lifecycle::Terminated;
        for w in self.workers.iter_mut() {
            for f in w.sent.drain(..).filter(|f| !f.skipped) {
                d.fail.push((f.sink, JobError::Broken { reason: reason.clone() }));
            }
            w.stop = Some(StopReason::Terminated);
            w.close(&mut d);
            d.kill.push(w.handle.clone());
        }
        if let Some(id) = dead_reader
            && let Some(pos) = self.workers.iter().position(|w| w.id == id)
        {
            d.forget.push(self.workers.remove(pos).handle);
        }
        d.wake = true;
        d
    }
}
