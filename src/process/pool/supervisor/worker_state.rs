//! One worker as the supervision rules see it: its window of sent tasks, why it was
//! stopped, and what its slot says it was doing when it died.
//!
//! This module must never start a thread, touch a socket or a process, or read the clock; the
//! slot is read only through [`WorkerHandle`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Decisions, Outgoing, Sink, WorkerHandle};
use crate::ipc;
use crate::process::slot::{CONDEMNED, ENDED};

/// Why the pool stopped a worker; decides what its unanswered head task becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StopReason {
    /// It broke the protocol (garbage on its reply channel); the text says how.
    Faulty(String),
    /// Its task ran out of time.
    TimedOut(Duration),
    /// Its task was force-cancelled.
    Cancelled,
    /// The pool was terminated.
    Terminated,
    /// Retired on purpose (task limit, shutdown, failed initializer): an expected exit.
    Retired,
}

/// A task sent to a worker and not yet answered.
pub(super) struct SentTask {
    pub(super) id: u64,
    pub(super) frame: Arc<ipc::Frame>,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) limit: Option<Duration>,
    pub(super) skipped: bool,
}

/// One worker as the rules see it.
pub(super) struct WorkerState<H> {
    pub(super) id: u64,
    pub(super) index: usize,
    pub(super) pid: u32,
    pub(super) handle: H,
    pub(super) ready: bool,
    /// `false` once its task channel is being closed.
    pub(super) open: bool,
    /// Sent and not yet answered, in the order the worker runs them.
    pub(super) sent: VecDeque<SentTask>,
    pub(super) assigned: u64,
    /// When the current head of `sent` (the task the worker is on) became the head.
    pub(super) head_since: Instant,
    pub(super) stop: Option<StopReason>,
}

impl<H: WorkerHandle> WorkerState<H> {
    /// The task the worker is running (or about to), if any: the first one not skipped, as
    /// long as only skipped ones are ahead of it.
    pub(super) fn running(&self) -> Option<&SentTask> {
        self.sent.iter().find(|f| !f.skipped)
    }

    /// The task a dead worker was running, by its slot: the one the slot names, if it is one
    /// the worker had been sent (the tasks before it ended, their replies held to be sent
    /// together, and fail with the worker: `deaths.rs`; a task cancelled in the instant it began may
    /// have run all the same); none if the slot says the worker had begun nothing since its
    /// last answer. A slot that makes no sense blames the first task not answered, as if there
    /// were no slot.
    pub(super) fn running_at_death(&self) -> Option<u64> {
        let word = self.handle.slot().0;
        let said = word & !(CONDEMNED | ENDED);
        if said != 0 && self.sent.iter().any(|f| f.id == said) {
            Some(said)
        } else if word == 0 || (word & ENDED != 0 && !self.sent.iter().any(|f| f.id == said)) {
            None
        } else {
            self.running().map(|f| f.id)
        }
    }

    pub(super) fn takes_work(&self, window: usize, max_tasks: Option<u64>) -> bool {
        self.ready
            && self.stop.is_none()
            && self.open
            && self.sent.len() < window
            && max_tasks.is_none_or(|m| self.assigned < m)
    }

    /// Stops feeding it: the driver closes its task channel (the writer ends, the worker reads
    /// end of file).
    pub(super) fn close(&mut self, d: &mut Decisions<H>) {
        if self.open {
            self.open = false;
            d.close.push(self.handle.clone());
        }
    }

    pub(super) fn send(&self, frame: Outgoing, d: &mut Decisions<H>) {
        if self.open {
            d.send.push((self.handle.clone(), frame));
        }
    }
}
