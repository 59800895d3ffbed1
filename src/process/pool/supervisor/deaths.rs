//! The rules for a worker that is gone or must go: one that broke the protocol, and one whose
//! process has exited (which task fails, which go back to the queue, whether it is replaced,
//! when repeated start-up deaths break the pool).
//!
//! This module must never start a thread, touch a socket or a process, or read the clock.

use std::time::Instant;

use super::worker_state::WorkerState;
use super::{Decisions, Lifecycle, MAX_FAILED_STARTS, QueuedTask, StopReason, Supervisor, WorkerHandle};
use crate::error::{ExitStatus, JobError};
use crate::process::protocol::{self, FromWorker};

/// The replies a dead worker held to send together (their copy in its slot), delivered in
/// order as far as they answer the tasks at the head of its window: they ran, and their
/// results are here. Leading ones that answer nothing left were sent already and are passed
/// over; anything else (garbage, a reply out of order) ends the recovery, and the tasks left
/// are judged as for any death. Checked as strictly as a batch read from the socket.
fn recover_held<H: WorkerHandle>(w: &mut WorkerState<H>, d: &mut Decisions<H>) {
    let bytes = w.handle.held_replies();
    if bytes.is_empty() {
        return;
    }
    let Ok((FromWorker::Batch, body)) = protocol::split::<FromWorker<'_>>(&bytes) else { return };
    let Ok(replies) = protocol::reply_batch(body) else { return };
    let mut matched = false;
    for reply in replies {
        let (id, status, rest) = match protocol::split::<FromWorker<'_>>(reply) {
            Ok((FromWorker::Done { id, status, .. }, rest)) => (id, Some(status), rest),
            Ok((FromWorker::Skipped { id }, rest)) => (id, None, rest),
            _ => return,
        };
        let answers_head = w.sent.front().is_some_and(|f| f.id == id && (status.is_some() || f.skipped));
        if !answers_head {
            if matched {
                return;
            }
            continue; // sent before the worker died, and read
        }
        matched = true;
        let Some(f) = w.sent.pop_front() else { return };
        if let Some(status) = status {
            d.recovered.push((f.sink, status, rest.to_vec()));
        }
    }
}

impl<H: WorkerHandle> Supervisor<H> {
    /// Worker `worker` broke the protocol: it is stopped as faulty (unless already stopped)
    /// and its channel closed; the driver kills it whatever this returns.
    pub(crate) fn on_fault(&mut self, worker: u64, why: String) -> Decisions<H> {
        let mut d = Decisions::default();
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker)
            && w.stop.is_none()
        {
            w.stop = Some(StopReason::Faulty(why));
            w.close(&mut d);
        }
        d
    }

    /// Worker `worker`'s process is gone (and reaped) with `status`; `server_usable` says
    /// whether the fork server that forked it still is. Fails the task it was running, gives
    /// back the ones it had not reached, and starts a replacement if the pool still needs one.
    pub(crate) fn on_exit(
        &mut self,
        worker: u64,
        status: ExitStatus,
        server_usable: bool,
        now: Instant,
    ) -> Decisions<H> {
        let mut d = Decisions::default();
        let Some(wi) = self.workers.iter().position(|w| w.id == worker) else { return d };
        let mut w = self.workers.swap_remove(wi);
        recover_held(&mut w, &mut d);
        let pid = w.pid;
        let running = w.running_at_death();
        let mut unreached = Vec::new();
        // Tasks ahead of the one the slot names ended: their replies were held, to be sent
        // together, when the worker died. They ran; they fail, never run again.
        let mut before_running = running.is_some();
        for f in w.sent.drain(..) {
            if Some(f.id) == running {
                before_running = false;
            }
            if Some(f.id) != running && f.skipped {
                continue; // already resolved as cancelled
            }
            if before_running {
                d.fail.push((f.sink, JobError::WorkerDied { pid, status }));
            } else if Some(f.id) == running {
                let error = match &w.stop {
                    Some(StopReason::Faulty(reason)) => {
                        JobError::ProtocolViolation { pid, reason: reason.as_str().into() }
                    }
                    Some(StopReason::TimedOut(limit)) => JobError::TimedOut { limit: *limit },
                    Some(StopReason::Cancelled | StopReason::Terminated) => JobError::Cancelled,
                    Some(StopReason::Retired) | None => JobError::WorkerDied { pid, status },
                };
                d.fail.push((f.sink, error));
            } else {
                unreached.push(f);
            }
        }
        let give_back = self.lifecycle != Lifecycle::Terminated && self.broken.is_none();
        for f in unreached.into_iter().rev() {
            if give_back {
                self.queue.push_front(QueuedTask {
                    id: f.id,
                    frame: f.frame,
                    sink: f.sink,
                    limit: f.limit,
                    started: true,
                });
            } else {
                let error = self.broken.clone().map_or(JobError::Cancelled, |reason| JobError::Broken { reason });
                d.fail.push((f.sink, error));
            }
        }
        // A worker that broke the protocol before `Ready` failed to start as well: one that
        // always does so must not be respawned for ever. A worker that died with its fork
        // server did not fail to start.
        if !w.ready && matches!(w.stop, None | Some(StopReason::Faulty(_))) && server_usable {
            self.failed_starts += 1;
            if self.failed_starts >= MAX_FAILED_STARTS {
                let reason =
                    format!("{MAX_FAILED_STARTS} worker processes in a row died while starting (last: {status})");
                self.break_pool(reason, &mut d);
            }
        }
        let needed = self.broken.is_none()
            && w.stop != Some(StopReason::Retired)
            && w.stop != Some(StopReason::Terminated)
            && (self.lifecycle == Lifecycle::Open || !self.queue.is_empty());
        if needed {
            self.starting += 1;
            d.spawn.push(w.index);
        }
        d.wake = true;
        self.pump(now, &mut d);
        d
    }
}
