//! The time-limit rule: which worker's running task is overdue, judged by its slot and by
//! the pool's own clock, and when to look again.
//!
//! This module must never read the clock (the time is passed in), start a thread, touch a
//! socket or a process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Decisions, StopReason, Supervisor, WorkerHandle};
use crate::error::JobError;
use crate::process::slot::ENDED;

impl<H: WorkerHandle> Supervisor<H> {
    /// Judges time limits at `now` (`now_ns` on the slot's clock): kills the worker whose
    /// running task is overdue, and the one whose slot claims an end it never replied to.
    /// Also returns when to look again (`None`: when something changes).
    pub(crate) fn check_limits(&mut self, now: Instant, now_ns: u64) -> (Decisions<H>, Option<Instant>) {
        let mut next: Option<Instant> = None;
        let mut wake = |at: Option<Instant>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        };
        let mut d = Decisions::default();
        for w in self.workers.iter_mut().filter(|w| w.stop.is_none()) {
            let Some((id, limit, sink)) = w.running().and_then(|f| f.limit.map(|l| (f.id, l, Arc::clone(&f.sink))))
            else {
                continue;
            };
            // By the pool's clock, from when the task became the head (no earlier than the
            // worker began it, for a worker whose reply reader keeps up). A limit too large
            // to add means no limit (Duration::MAX from a caller).
            let Some(deadline) = w.head_since.checked_add(limit) else { continue };
            let (said, since) = w.handle.slot();
            let overdue = if said == id {
                // Inside it, by the worker's own account: judge by when it began it.
                let ran = Duration::from_nanos(now_ns.saturating_sub(since));
                match limit.checked_sub(ran) {
                    Some(left) if !left.is_zero() => {
                        wake(now.checked_add(left));
                        false
                    }
                    _ => true,
                }
            } else {
                false
            };
            // Whatever the slot says, a task stays the head for no longer than twice its
            // limit and a second by the pool's clock. If the worker says it ended the task or
            // is on a later one, the reply is on the way (its arrival wakes us) and may only
            // be held up on our side, by a slow done callback on the reply reader: that must
            // not turn a finished task into a timed-out one. So the same span then counts
            // from when the reader was last free to read it, and never while it is busy; a
            // worker whose reply is still missing then lied in its slot (a reply follows
            // "ended" at once): it broke the protocol, and is killed as faulty.
            let span = limit.saturating_mul(2).saturating_add(Duration::from_secs(1));
            let backstop = w.head_since.checked_add(span);
            let plain = said & !ENDED;
            let ended = said == id | ENDED;
            let moved_on = ended || (plain != id && w.sent.iter().any(|f| f.id == plain));
            if moved_on {
                match w.handle.reader_idle_since(now, now_ns) {
                    // Busy delivering: look again once a span has passed from now.
                    None => wake(now.checked_add(span)),
                    Some(idle) => {
                        let lie_at = w.head_since.max(idle).checked_add(span);
                        if lie_at.is_some_and(|t| t <= now) {
                            let reason = format!(
                                "its slot says task {id} ended or a later one began, but no reply came in {span:?}"
                            );
                            w.stop = Some(StopReason::Faulty(reason.clone()));
                            w.close(&mut d);
                            d.kill.push(w.handle.clone());
                            d.fail.push((sink, JobError::ProtocolViolation { pid: w.pid, reason: reason.into() }));
                            continue;
                        }
                        wake(lie_at);
                    }
                }
                continue;
            }
            let kill = if overdue {
                // It ended just now if this fails: its reply is coming.
                w.handle.condemn(id)
            } else {
                backstop.is_some_and(|b| b <= now)
            };
            if kill {
                w.stop = Some(StopReason::TimedOut(limit));
                d.kill.push(w.handle.clone());
                d.fail.push((sink, JobError::TimedOut { limit }));
                continue;
            }
            if overdue || (said != id && deadline <= now) {
                // Not begun yet (or the slot makes no sense): look again in a moment.
                wake(now.checked_add(Duration::from_millis(1)));
            } else if said != id {
                wake(Some(deadline));
            }
            wake(backstop);
        }
        (d, next)
    }
}
