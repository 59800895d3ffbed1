//! The process pool's supervision rules as a pure state machine: the shared task queue, each
//! worker's window of sent tasks, and what to do on every event (a submission, a worker ready,
//! a reply, a death, a time limit, a forced cancel, retirement, shutdown).
//!
//! The driver (`pool/mod.rs`) feeds it events under the pool's lock, with the time passed in,
//! and applies the [`Decisions`] it returns: frames to queue on a worker's task channel and
//! task channels to close (both before the lock is released, so that frames keep their order),
//! then kills, failed futures, a delivered reply and replacement workers (after it). What a
//! worker's slot says and whether its reply reader is busy come through [`WorkerHandle`], so
//! the rules can be tested without a process (`supervisor/test.rs`).
//!
//! This module must never start a thread, touch a socket or a process, read the clock, block,
//! or run user code (a [`Sink`] only moves a future's state; it is failed or delivered by the
//! driver, outside the lock).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::JobError;
use crate::ipc;
use crate::process::protocol::{FromWorker, Status};

mod deaths;
mod limits;
mod shutdown;
#[cfg(test)]
mod test;
mod worker_state;

use self::worker_state::{SentTask, StopReason, WorkerState};

/// Where a task's outcome goes: the future's cell, type-erased.
pub(crate) trait Sink: Send + Sync {
    /// Moves the future from pending to running; `false` if it was cancelled meanwhile.
    fn start(&self) -> bool;
    /// Completes the future from a worker's reply.
    fn deliver(&self, status: Status, body: &[u8]);
    /// Ends the future with `error` unless it already ended.
    fn fail(&self, error: JobError);
}

/// What the rules may ask of one worker's live state without doing I/O: its slot (shared
/// memory, read with atomics; see `slot.rs`) and its reply reader's mark. The driver's handle
/// also carries what it needs to reach the worker; decisions name workers by their handle.
pub(crate) trait WorkerHandle: Clone {
    /// What the slot says: its word (task id and flags) and when that task began (ns on
    /// `slot::now_ns`'s clock). Untrusted.
    fn slot(&self) -> (u64, u64);
    /// Condemns task `id` if the worker is inside it right now (`Slot::condemn`).
    fn condemn(&self, id: u64) -> bool;
    /// `None` while the reply reader handles a frame; else since when (by `now`, which is
    /// `now_ns` on the slot's clock) it has waited for the next one.
    fn reader_idle_since(&self, now: Instant, now_ns: u64) -> Option<Instant>;
    /// Once the worker is gone: the copy of the replies it held to send together (a `Batch`
    /// message; empty: none). Untrusted.
    fn held_replies(&self) -> Vec<u8>;
}

/// A task waiting in the pool's queue.
pub(crate) struct QueuedTask {
    pub(crate) id: u64,
    pub(crate) frame: Arc<ipc::Frame>,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) limit: Option<Duration>,
    /// Already moved to running (a task given back by a worker that died before reaching it).
    pub(crate) started: bool,
}

/// Whether the pool takes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Open,
    /// No new work; queued work still runs (`close`, `shutdown`).
    Closed,
    /// Everything stops (`terminate`).
    Terminated,
}

/// A frame to queue on a worker's task channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// Task `id`, its frame as submitted.
    Task { id: u64, frame: Arc<ipc::Frame> },
    /// Ask the worker to skip task `id` if it has not begun it.
    Skip(u64),
}

/// What the driver must do after an event, in this order: `send`, `close` and `forget` before
/// it releases the pool's lock; then `deliver`, `wake`, `kill`, `recovered`, `fail`, `spawn`.
pub(crate) struct Decisions<H> {
    /// Frames to queue on workers' task channels, in order.
    pub(crate) send: Vec<(H, Outgoing)>,
    /// Workers whose task channel is to be closed (after the frames above).
    pub(crate) close: Vec<H>,
    /// Workers the pool no longer follows (their reply reader died): the fork server need not
    /// keep their exit status.
    pub(crate) forget: Vec<H>,
    /// Wake whoever waits on the pool's condition (join, build, the time-limit thread).
    pub(crate) wake: bool,
    /// Workers to kill (`SIGKILL`, through the fork server that forked them).
    pub(crate) kill: Vec<H>,
    /// Futures to fail.
    pub(crate) fail: Vec<(Arc<dyn Sink>, JobError)>,
    /// The future a `Done` reply completes, with the reply's status (the body is the frame's).
    pub(crate) deliver: Option<(Arc<dyn Sink>, Status)>,
    /// Replacement workers to start, by index (already counted as starting).
    pub(crate) spawn: Vec<usize>,
    /// Futures completed from the replies a dead worker held (a copy in its slot), with their
    /// bodies; delivered before `fail`.
    pub(crate) recovered: Vec<(Arc<dyn Sink>, Status, Vec<u8>)>,
}

impl<H> Default for Decisions<H> {
    fn default() -> Self {
        Decisions {
            send: Vec::new(),
            close: Vec::new(),
            forget: Vec::new(),
            wake: false,
            kill: Vec::new(),
            fail: Vec::new(),
            deliver: None,
            spawn: Vec::new(),
            recovered: Vec::new(),
        }
    }
}

/// Consecutive start-up deaths after which the pool gives up instead of respawning forever.
pub(crate) const MAX_FAILED_STARTS: u32 = 3;

/// The pool's supervision state and rules (see the module doc).
pub(crate) struct Supervisor<H> {
    lifecycle: Lifecycle,
    broken: Option<String>,
    queue: VecDeque<QueuedTask>,
    workers: Vec<WorkerState<H>>,
    /// Spawns asked for and not yet registered in `workers`.
    starting: usize,
    next_worker: u64,
    /// Moving average of how long tasks run in workers, in ns (0: not known yet).
    busy_ewma_ns: u64,
    /// Workers in a row that died before they were ready.
    failed_starts: u32,
    /// What the initializer said when it failed.
    init_failure: Option<String>,
    max_window: usize,
    max_tasks_per_child: Option<u64>,
}

impl<H: WorkerHandle> Supervisor<H> {
    /// A pool whose first `starting` workers have been asked for.
    pub(crate) fn new(starting: usize, max_window: usize, max_tasks_per_child: Option<u64>) -> Self {
        Supervisor {
            lifecycle: Lifecycle::Open,
            broken: None,
            queue: VecDeque::new(),
            workers: Vec::with_capacity(starting),
            starting,
            next_worker: 0,
            busy_ewma_ns: 0,
            failed_starts: 0,
            init_failure: None,
            max_window,
            max_tasks_per_child,
        }
    }

    /// Whether a submission would be queued.
    pub(crate) fn accepts_work(&self) -> bool {
        self.lifecycle == Lifecycle::Open && self.broken.is_none()
    }

    /// `close`d, `terminate`d or broken.
    pub(crate) fn is_shutdown(&self) -> bool {
        !self.accepts_work()
    }

    pub(crate) fn is_open(&self) -> bool {
        self.lifecycle == Lifecycle::Open
    }

    pub(crate) fn broken_reason(&self) -> Option<String> {
        self.broken.clone()
    }

    /// Takes what the initializer said when it failed (for the build error).
    pub(crate) fn take_init_failure(&mut self) -> Option<String> {
        self.init_failure.take()
    }

    /// Still waiting for a worker of the first set to be forked or ready (and not broken).
    pub(crate) fn is_starting(&self) -> bool {
        self.broken.is_none() && (self.starting > 0 || self.workers.iter().any(|w| !w.ready))
    }

    /// No worker left and none coming.
    pub(crate) fn is_wound_down(&self) -> bool {
        self.workers.is_empty() && self.starting == 0
    }

    /// The time-limit thread may end: the pool is shut and wound down.
    pub(crate) fn limits_done(&self) -> bool {
        self.lifecycle != Lifecycle::Open && self.is_wound_down()
    }

    /// Calls `f` with every registered worker's handle.
    pub(crate) fn for_each_handle(&self, mut f: impl FnMut(&H)) {
        for w in &self.workers {
            f(&w.handle);
        }
    }

    /// The pids of the registered workers.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    /// Once wound down: what is still queued, which nothing would ever run.
    pub(crate) fn take_stranded(&mut self) -> Vec<QueuedTask> {
        self.queue.drain(..).collect()
    }

    /// `count` spawn requests failed before a worker existed (the build gives up).
    pub(crate) fn spawns_failed(&mut self, count: usize) {
        self.starting -= count;
    }

    /// A forked worker is about to be registered: it no longer counts as starting. Returns the
    /// id it gets, followed by [`Self::add_worker`] or [`Self::setup_failed`].
    pub(crate) fn reserve_worker_id(&mut self) -> u64 {
        self.starting -= 1;
        let id = self.next_worker;
        self.next_worker += 1;
        id
    }

    /// Worker `id` (from [`Self::reserve_worker_id`]) is forked and served; it is not ready
    /// until it says so.
    pub(crate) fn add_worker(&mut self, id: u64, index: usize, pid: u32, handle: H, now: Instant) {
        self.workers.push(WorkerState {
            id,
            index,
            pid,
            handle,
            ready: false,
            open: true,
            sent: VecDeque::new(),
            assigned: 0,
            head_since: now,
            stop: None,
        });
    }

    /// A worker could not be served (its channels or threads could not be set up); the
    /// driver kills it. The pool breaks.
    pub(crate) fn setup_failed(&mut self, reason: String) -> Decisions<H> {
        let mut d = Decisions::default();
        self.break_pool(reason, &mut d);
        self.settle(&mut d);
        d
    }

    /// A replacement worker could not be started. The pool breaks.
    pub(crate) fn replacement_failed(&mut self, reason: String) -> Decisions<H> {
        self.starting -= 1;
        self.setup_failed(reason)
    }

    /// Queues a task (the caller checked [`Self::accepts_work`]) and hands out work.
    pub(crate) fn submit(&mut self, task: QueuedTask, now: Instant) -> Decisions<H> {
        let mut d = Decisions::default();
        self.queue.push_back(task);
        self.pump(now, &mut d);
        d
    }

    /// Hands queued tasks to ready workers with room in their window, least loaded first.
    fn pump(&mut self, now: Instant, d: &mut Decisions<H>) {
        let window = self.window();
        let max = self.max_tasks_per_child;
        while !self.queue.is_empty() {
            let Some(w) = self.workers.iter_mut().filter(|w| w.takes_work(window, max)).min_by_key(|w| w.sent.len())
            else {
                break;
            };
            let Some(task) = self.queue.pop_front() else { break };
            if !task.started && !task.sink.start() {
                continue; // cancelled while it waited
            }
            if w.sent.is_empty() {
                w.head_since = now;
                d.wake |= task.limit.is_some();
            }
            w.assigned += 1;
            w.send(Outgoing::Task { id: task.id, frame: Arc::clone(&task.frame) }, d);
            w.sent.push_back(SentTask {
                id: task.id,
                frame: task.frame,
                sink: task.sink,
                limit: task.limit,
                skipped: false,
            });
        }
        self.settle(d);
    }

    /// Retires workers that are done: those at their task limit, and, once the pool is closed
    /// and its queue empty, every idle one.
    fn settle(&mut self, d: &mut Decisions<H>) {
        let draining = self.lifecycle != Lifecycle::Open && self.queue.is_empty();
        let max = self.max_tasks_per_child;
        // A closed pool still replaces workers while queued tasks wait for one (CPython's
        // gh-119592: with a task limit, `shutdown(wait=True)` stranded the queue).
        let keep_going = self.broken.is_none()
            && (self.lifecycle == Lifecycle::Open || (self.lifecycle == Lifecycle::Closed && !self.queue.is_empty()));
        let mut replacements = 0;
        for w in self.workers.iter_mut().filter(|w| w.stop.is_none() && w.sent.is_empty()) {
            let worn_out = max.is_some_and(|m| w.assigned >= m);
            if worn_out || draining {
                w.stop = Some(StopReason::Retired);
                w.close(d); // the writer ends, the worker reads end of file and exits
                if worn_out && keep_going {
                    d.spawn.push(w.index);
                    replacements += 1;
                }
            }
        }
        self.starting += replacements;
    }

    /// How many tasks a worker may hold: enough to hide the round trip when tasks are short,
    /// one when they are long, so that work does not wait behind a busy worker.
    fn window(&self) -> usize {
        let w = match self.busy_ewma_ns {
            0 => 2,
            ns if ns < 200_000 => self.max_window,
            ns if ns < 5_000_000 => 2,
            _ => 1,
        };
        w.clamp(1, self.max_window.max(1))
    }

    /// Marks the pool broken: it takes no more work and fails what is queued.
    fn break_pool(&mut self, reason: String, d: &mut Decisions<H>) {
        if self.broken.is_none() {
            self.broken = Some(reason.clone());
        }
        if self.lifecycle == Lifecycle::Open {
            self.lifecycle = Lifecycle::Closed;
        }
        for t in self.queue.drain(..) {
            d.fail.push((t.sink, JobError::Broken { reason: reason.clone() }));
        }
    }

    /// One decoded reply from worker `worker`. `Err` says how it breaks the protocol (the
    /// state is then unchanged).
    pub(crate) fn on_reply(
        &mut self,
        worker: u64,
        header: FromWorker<'_>,
        now: Instant,
    ) -> Result<Decisions<H>, String> {
        let mut d = Decisions::default();
        let Some(wi) = self.workers.iter().position(|w| w.id == worker) else {
            return Err("a reply from a worker the pool no longer serves".into());
        };
        if matches!(header, FromWorker::Ready { .. }) && self.workers[wi].ready {
            return Err("a second `Ready`".into());
        }
        match header {
            FromWorker::Batch => return Err("a reply batch inside a reply batch".into()),
            FromWorker::Ready { init_error: Some(e), .. } => {
                let w = &mut self.workers[wi];
                w.stop = Some(StopReason::Retired);
                w.close(&mut d);
                self.init_failure = Some(e.to_owned());
                self.break_pool(format!("worker initializer failed: {e}"), &mut d);
                self.settle(&mut d);
            }
            FromWorker::Ready { init_error: None, .. } => {
                self.workers[wi].ready = true;
                self.failed_starts = 0;
                d.wake = true;
            }
            FromWorker::Done { id, status, busy_ns } => {
                let w = &mut self.workers[wi];
                // A skipped head may still answer `Done`: cancelled in the instant it began,
                // it ran all the same (its future is resolved already; the result is dropped).
                let head = w.sent.front().map(|f| f.id);
                if head != Some(id) {
                    return Err(format!("`Done` for task {id}, but its next task is {head:?}"));
                }
                let Some(f) = w.sent.pop_front() else { return Err("`Done` with no task".into()) };
                w.head_since = now;
                // The worker's figure is not trusted in arithmetic: an hour at most, and
                // saturating sums.
                let busy_ns = busy_ns.min(3_600_000_000_000);
                self.busy_ewma_ns = if self.busy_ewma_ns == 0 {
                    busy_ns.max(1)
                } else {
                    self.busy_ewma_ns.saturating_mul(7).saturating_add(busy_ns) / 8
                };
                d.deliver = Some((f.sink, status));
                d.wake = true;
            }
            FromWorker::Skipped { id } => {
                let w = &mut self.workers[wi];
                let head = w.sent.front().map(|f| (f.id, f.skipped));
                if head != Some((id, true)) {
                    return Err(format!("`Skipped` for task {id}, but its next task is {head:?}"));
                }
                w.sent.pop_front();
                w.head_since = now;
            }
        }
        self.pump(now, &mut d);
        Ok(d)
    }

    /// Stops the job `id` where it is: skipped if it waits in a worker's window, the worker
    /// killed if it runs, dropped if it is queued. The caller has already resolved its future.
    pub(crate) fn force_cancel(&mut self, id: u64) -> Decisions<H> {
        let mut d = Decisions::default();
        if let Some(pos) = self.queue.iter().position(|t| t.id == id) {
            self.queue.remove(pos);
            return d;
        }
        for w in self.workers.iter_mut() {
            let running = w.running().map(|f| f.id);
            let Some(fi) = w.sent.iter().position(|f| f.id == id) else { continue };
            if Some(id) == running {
                if w.stop.is_none() {
                    if w.handle.condemn(id) {
                        // Inside it right now, and it cannot start another: kill.
                        w.stop = Some(StopReason::Cancelled);
                        d.kill.push(w.handle.clone());
                    } else if !w.sent[fi].skipped {
                        // Not inside it: ended (its reply is on the way; the result will be
                        // dropped) or not begun, which a skip prevents if it arrives in time.
                        w.sent[fi].skipped = true;
                        w.send(Outgoing::Skip(id), &mut d);
                    }
                }
            } else if w.stop.is_none() && w.handle.condemn(id) {
                // Inside a later task, the replies before it held to go together: kill it all
                // the same (the held replies are delivered from the slot's copy at the exit).
                w.stop = Some(StopReason::Cancelled);
                d.kill.push(w.handle.clone());
            } else if !w.sent[fi].skipped {
                w.sent[fi].skipped = true;
                w.send(Outgoing::Skip(id), &mut d);
            }
            break;
        }
        d
    }
}
