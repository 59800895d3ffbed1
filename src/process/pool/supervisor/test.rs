//! White-box tests of the supervision rules: events in, decisions out, with fake workers (a
//! slot and a reply reader's mark in plain atomics) and fake futures.
//!
//! These tests must never start a process or a thread, touch a socket, or sleep: time is an
//! `Instant` the test moves by hand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::error::ExitStatus;
use crate::process::slot::{CONDEMNED, ENDED};

/// A worker as the rules see it: its slot and its reply reader's mark, set by the test.
struct FakeWorker {
    id: u64,
    word: AtomicU64,
    since: AtomicU64,
    reader_busy: AtomicBool,
    /// When the reply reader went idle (`None`: the `now` it is asked at).
    reader_idle: Mutex<Option<Instant>>,
    /// The copy of the replies it holds.
    held: Mutex<Vec<u8>>,
}

#[derive(Clone)]
struct Fake(Arc<FakeWorker>);

impl Fake {
    /// The worker begins task `id` at `since` (slot clock, ns).
    fn begin(&self, id: u64, since: u64) {
        self.0.since.store(since, Ordering::SeqCst);
        self.0.word.store(id, Ordering::SeqCst);
    }

    /// The worker ends task `id` (its reply is about to be sent).
    fn end(&self, id: u64) {
        let _ = self.0.word.compare_exchange(id, id | ENDED, Ordering::SeqCst, Ordering::SeqCst);
    }
}

impl WorkerHandle for Fake {
    fn slot(&self) -> (u64, u64) {
        (self.0.word.load(Ordering::SeqCst), self.0.since.load(Ordering::SeqCst))
    }

    fn condemn(&self, id: u64) -> bool {
        id & (CONDEMNED | ENDED) == 0
            && self.0.word.compare_exchange(id, id | CONDEMNED, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    fn reader_idle_since(&self, now: Instant, _now_ns: u64) -> Option<Instant> {
        if self.0.reader_busy.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.0.reader_idle.lock().unwrap().unwrap_or(now))
    }

    fn held_replies(&self) -> Vec<u8> {
        self.0.held.lock().unwrap().clone()
    }
}

/// A future's cell that records what happened to it.
#[derive(Default)]
struct Recorder {
    /// Cancelled by its user while it waited in the queue.
    cancelled: AtomicBool,
    started: AtomicBool,
    outcome: Mutex<Option<Result<Status, JobError>>>,
}

impl Sink for Recorder {
    fn start(&self) -> bool {
        if self.cancelled.load(Ordering::SeqCst) {
            return false;
        }
        self.started.store(true, Ordering::SeqCst);
        true
    }

    fn deliver(&self, status: Status, _body: &[u8]) {
        self.outcome.lock().unwrap().get_or_insert(Ok(status));
    }

    fn fail(&self, error: JobError) {
        self.outcome.lock().unwrap().get_or_insert(Err(error));
    }
}

impl Recorder {
    fn outcome(&self) -> Option<Result<Status, JobError>> {
        self.outcome.lock().unwrap().clone()
    }
}

/// A frame the rules queued for a worker, by task id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Task(u64),
    Skip(u64),
}

/// What one event decided, by worker id (futures are failed and delivered on the spot).
#[derive(Debug, Default)]
struct Applied {
    sent: Vec<(u64, Sent)>,
    closed: Vec<u64>,
    killed: Vec<u64>,
    spawn: Vec<usize>,
    wake: bool,
}

struct Harness {
    rules: Supervisor<Fake>,
    workers: Vec<Fake>,
    next_task: u64,
    /// The pool's clock, moved by hand, and the slot's clock at the same instant.
    now: Instant,
    now_ns: u64,
}

const PID_BASE: u32 = 1000;

fn pid_of(worker: u64) -> u32 {
    PID_BASE + worker as u32
}

impl Harness {
    /// A pool with `workers` ready workers (ids `0..workers`, index = id).
    fn new(workers: usize, max_window: usize, max_tasks_per_child: Option<u64>) -> Harness {
        let mut h = Harness::starting(workers, max_window, max_tasks_per_child);
        for index in 0..workers {
            h.register(index);
        }
        assert!(!h.rules.is_starting());
        h
    }

    /// A pool that has asked for `workers` workers, none forked yet.
    fn starting(workers: usize, max_window: usize, max_tasks_per_child: Option<u64>) -> Harness {
        Harness {
            rules: Supervisor::new(workers, max_window, max_tasks_per_child),
            workers: Vec::new(),
            next_task: 1,
            now: Instant::now(),
            now_ns: 1_000_000_000,
        }
    }

    /// A worker for `index` (counted as starting) is forked and registered, not yet ready.
    fn fork(&mut self, index: usize) -> u64 {
        let id = self.rules.reserve_worker_id();
        let fake = Fake(Arc::new(FakeWorker {
            id,
            word: AtomicU64::new(0),
            since: AtomicU64::new(0),
            reader_busy: AtomicBool::new(false),
            reader_idle: Mutex::new(None),
            held: Mutex::new(Vec::new()),
        }));
        self.workers.push(fake.clone());
        self.rules.add_worker(id, index, pid_of(id), fake, self.now);
        id
    }

    /// Forks a worker for `index` and lets it say `Ready`.
    fn register(&mut self, index: usize) -> u64 {
        let id = self.fork(index);
        self.reply(id, FromWorker::Ready { pid: pid_of(id), init_error: None }).unwrap();
        id
    }

    fn worker(&self, id: u64) -> &Fake {
        self.workers.iter().find(|w| w.0.id == id).unwrap()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.now_ns += by.as_nanos() as u64;
    }

    fn submit_with(&mut self, limit: Option<Duration>) -> (Arc<Recorder>, Applied) {
        let sink = Arc::new(Recorder::default());
        let id = self.next_task;
        self.next_task += 1;
        assert!(self.rules.accepts_work());
        let task = QueuedTask {
            id,
            frame: Arc::new(id.to_le_bytes().to_vec().into()),
            sink: sink.clone(),
            limit,
            started: false,
        };
        let d = self.rules.submit(task, self.now);
        (sink, apply(d))
    }

    fn submit(&mut self) -> Arc<Recorder> {
        self.submit_with(None).0
    }

    fn reply(&mut self, worker: u64, header: FromWorker<'_>) -> Result<Applied, String> {
        let d = self.rules.on_reply(worker, header, self.now)?;
        Ok(apply(d))
    }

    fn done(&mut self, worker: u64, task: u64, busy_ns: u64) -> Applied {
        self.reply(worker, FromWorker::Done { id: task, status: Status::Ok, busy_ns }).unwrap()
    }

    fn exit(&mut self, worker: u64, status: ExitStatus) -> Applied {
        let d = self.rules.on_exit(worker, status, true, self.now);
        apply(d)
    }

    fn check_limits(&mut self) -> (Applied, Option<Instant>) {
        let (d, next) = self.rules.check_limits(self.now, self.now_ns);
        (apply(d), next)
    }

    /// Tasks sent to `worker` by all events so far (the test collects them itself).
    fn tasks_to(applied: &[&Applied], worker: u64) -> Vec<u64> {
        applied
            .iter()
            .flat_map(|a| a.sent.iter())
            .filter_map(|&(w, s)| match s {
                Sent::Task(t) if w == worker => Some(t),
                _ => None,
            })
            .collect()
    }
}

/// Applies what the rules decided: futures are failed or delivered, the rest is recorded.
fn apply(d: Decisions<Fake>) -> Applied {
    let mut a = Applied { wake: d.wake, spawn: d.spawn, ..Applied::default() };
    for (w, frame) in d.send {
        a.sent.push((
            w.0.id,
            match frame {
                Outgoing::Task { id, .. } => Sent::Task(id),
                Outgoing::Skip(id) => Sent::Skip(id),
            },
        ));
    }
    a.closed = d.close.iter().map(|w| w.0.id).collect();
    a.killed = d.kill.iter().map(|w| w.0.id).collect();
    if let Some((sink, status)) = d.deliver {
        sink.deliver(status, &[]);
    }
    for (sink, status, body) in d.recovered {
        sink.deliver(status, &body);
    }
    for (sink, error) in d.fail {
        sink.fail(error);
    }
    a
}

const SIGKILL: ExitStatus = ExitStatus::Signaled { signal: 9 };

#[test]
fn tasks_go_to_the_least_loaded_worker() {
    let mut h = Harness::new(2, 16, None);
    let sent: Vec<_> = (0..4).map(|_| h.submit_with(None).1).collect();
    let sent: Vec<&Applied> = sent.iter().collect();
    // Window 2 before any task has been timed: one each, then one more each.
    assert_eq!(Harness::tasks_to(&sent, 0), [1, 3]);
    assert_eq!(Harness::tasks_to(&sent, 1), [2, 4]);
}

#[test]
fn a_worker_death_fails_only_its_running_task_and_asks_for_a_replacement() {
    let mut h = Harness::new(2, 16, None);
    let t: Vec<_> = (0..4).map(|_| h.submit()).collect(); // w0: 1, 3; w1: 2, 4
    h.worker(0).begin(1, h.now_ns);
    h.worker(1).begin(2, h.now_ns);
    let a = h.exit(0, SIGKILL);
    assert_eq!(t[0].outcome(), Some(Err(JobError::WorkerDied { pid: pid_of(0), status: SIGKILL })));
    for other in &t[1..] {
        assert_eq!(other.outcome(), None, "only the task the worker was running fails");
    }
    assert_eq!(a.spawn, [0], "a replacement for index 0 is asked for");
    assert!(a.sent.is_empty(), "w1's window is full: task 3 waits in the queue");
    assert_eq!(h.rules.worker_pids(), [pid_of(1)]);
    // The replacement takes the task the dead worker never reached, without starting its
    // future a second time.
    let id = h.fork(0);
    let a = h.reply(id, FromWorker::Ready { pid: pid_of(id), init_error: None }).unwrap();
    assert_eq!(a.sent, [(id, Sent::Task(3))]);
}

/// A reply batch as a worker holds it (and keeps a copy of in its slot).
fn held_batch(replies: &[FromWorker<'_>]) -> Vec<u8> {
    let mut batch = Vec::new();
    crate::process::protocol::reply_frame(&FromWorker::Batch, &[], &mut batch);
    for r in replies {
        let mut one = Vec::new();
        crate::process::protocol::reply_frame(r, &[7], &mut one);
        crate::process::protocol::batch_push(&mut batch, &one);
    }
    batch
}

#[test]
fn a_worker_that_dies_holding_replies_delivers_them_and_gives_back_the_rest() {
    let mut h = Harness::new(1, 16, None);
    let first = h.submit();
    h.done(0, 1, 1_000); // short tasks: the window opens
    assert!(first.outcome().is_some());
    let t: Vec<_> = (0..5).map(|_| h.submit()).collect(); // tasks 2..=6, all sent
    // Task 2's reply was sent and read; 3 and 4 ended, held (their copy in the slot, with 2's
    // stale one first); 5 runs; 6 waits.
    h.done(0, 2, 1_000);
    *h.worker(0).0.held.lock().unwrap() = held_batch(&[
        FromWorker::Done { id: 2, status: Status::Ok, busy_ns: 1 },
        FromWorker::Done { id: 3, status: Status::Ok, busy_ns: 1 },
        FromWorker::Done { id: 4, status: Status::Ok, busy_ns: 1 },
    ]);
    h.worker(0).begin(5, h.now_ns);
    let a = h.exit(0, SIGKILL);
    assert_eq!(t[1].outcome(), Some(Ok(Status::Ok)), "delivered from the held copy");
    assert_eq!(t[2].outcome(), Some(Ok(Status::Ok)));
    assert_eq!(t[3].outcome(), Some(Err(JobError::WorkerDied { pid: pid_of(0), status: SIGKILL })));
    assert_eq!(t[4].outcome(), None, "task 6 never began: it goes back to the queue");
    let id = h.fork(a.spawn[0]);
    let a = h.reply(id, FromWorker::Ready { pid: pid_of(id), init_error: None }).unwrap();
    assert_eq!(a.sent, [(id, Sent::Task(6))], "only the task that never began runs again");
}

#[test]
fn force_cancel_of_a_task_run_behind_held_replies_kills_it_and_delivers_them() {
    let mut h = Harness::new(1, 16, None);
    let t: Vec<_> = (0..2).map(|_| h.submit()).collect(); // tasks 1, 2
    *h.worker(0).0.held.lock().unwrap() = held_batch(&[FromWorker::Done { id: 1, status: Status::Ok, busy_ns: 1 }]);
    h.worker(0).begin(2, h.now_ns);
    t[1].fail(JobError::Cancelled); // the caller resolves the future first
    let a = apply(h.rules.force_cancel(2));
    assert_eq!(a.killed, [0], "inside task 2 by its slot: killed");
    assert_eq!(h.worker(0).slot().0, 2 | CONDEMNED);
    h.exit(0, SIGKILL);
    assert_eq!(t[0].outcome(), Some(Ok(Status::Ok)), "task 1's held reply is delivered");
    assert_eq!(t[1].outcome(), Some(Err(JobError::Cancelled)));
}

#[test]
fn held_replies_that_are_garbage_or_out_of_order_deliver_nothing_wrong() {
    for held in [
        vec![3, 9, 9],                                                             // a broken batch
        held_batch(&[FromWorker::Done { id: 3, status: Status::Ok, busy_ns: 1 }]), // not the head
        held_batch(&[FromWorker::Ready { pid: 1, init_error: None }]),             // not a reply
    ] {
        let mut h = Harness::new(1, 16, None);
        let t: Vec<_> = (0..2).map(|_| h.submit()).collect(); // tasks 1, 2
        *h.worker(0).0.held.lock().unwrap() = held;
        h.worker(0).begin(2, h.now_ns); // it says it ended 1 and runs 2
        h.exit(0, SIGKILL);
        let died = Some(Err(JobError::WorkerDied { pid: pid_of(0), status: SIGKILL }));
        assert_eq!([t[0].outcome(), t[1].outcome()], [died.clone(), died], "both began: both fail");
    }
}

#[test]
fn a_worker_that_dies_before_beginning_its_head_gives_every_task_back() {
    let mut h = Harness::new(1, 16, None);
    let t: Vec<_> = (0..2).map(|_| h.submit()).collect();
    // The slot says nothing was begun: nothing fails, both go back to the queue.
    let a = h.exit(0, SIGKILL);
    assert!(t.iter().all(|t| t.outcome().is_none()));
    assert_eq!(a.spawn, [0]);
    let id = h.register(0);
    assert_eq!(h.rules.worker_pids(), [pid_of(id)]);
}

#[test]
fn the_time_limit_kills_exactly_the_overdue_tasks_worker() {
    let mut h = Harness::new(2, 16, None);
    let limit = Duration::from_secs(1);
    let (late, a) = h.submit_with(Some(limit));
    assert!(a.wake, "the time-limit thread learns of a new deadline");
    let (on_time, _) = h.submit_with(Some(limit));
    h.worker(0).begin(1, h.now_ns);
    h.advance(Duration::from_millis(600));
    h.worker(1).begin(2, h.now_ns);
    let (a, next) = h.check_limits();
    assert!(a.killed.is_empty());
    assert_eq!(next, Some(h.now + Duration::from_millis(400)), "wakes when task 1's second is up");
    h.advance(Duration::from_millis(400));
    let (a, next) = h.check_limits();
    assert_eq!(a.killed, [0], "only the worker running the overdue task");
    assert_eq!(late.outcome(), Some(Err(JobError::TimedOut { limit })));
    assert_eq!(on_time.outcome(), None);
    assert_eq!(next, Some(h.now + Duration::from_millis(600)), "then when task 2's is up");
    assert_eq!(h.worker(0).slot().0, 1 | CONDEMNED, "condemned before the kill");
    // Its exit reports the same error (the future keeps the first) and a replacement.
    let a = h.exit(0, SIGKILL);
    assert_eq!(a.spawn, [0]);
    assert_eq!(late.outcome(), Some(Err(JobError::TimedOut { limit })));
}

#[test]
fn a_task_that_ended_in_time_is_not_killed_while_its_reply_is_on_the_way() {
    let mut h = Harness::new(1, 16, None);
    let limit = Duration::from_secs(1);
    let (t, _) = h.submit_with(Some(limit));
    h.worker(0).begin(1, h.now_ns);
    h.advance(Duration::from_millis(900));
    h.worker(0).end(1);
    h.advance(Duration::from_millis(200));
    // Past the limit, but the slot says it ended: the reply is coming.
    let (a, _) = h.check_limits();
    assert!(a.killed.is_empty());
    assert_eq!(t.outcome(), None);
    h.done(0, 1, 900_000_000);
    assert_eq!(t.outcome(), Some(Ok(Status::Ok)));
}

#[test]
fn a_slot_that_claims_an_end_with_no_reply_is_a_protocol_violation() {
    let mut h = Harness::new(1, 16, None);
    let limit = Duration::from_secs(1);
    let (t, _) = h.submit_with(Some(limit));
    h.worker(0).begin(1, h.now_ns);
    h.worker(0).end(1);
    // While the reply reader is busy (a slow callback) the span never runs out.
    h.worker(0).0.reader_busy.store(true, Ordering::SeqCst);
    h.advance(Duration::from_secs(10));
    assert!(h.check_limits().0.killed.is_empty());
    // Idle for a whole span (2 × limit + 1 s) with no reply: the worker lied.
    h.worker(0).0.reader_busy.store(false, Ordering::SeqCst);
    *h.worker(0).0.reader_idle.lock().unwrap() = Some(h.now);
    h.advance(Duration::from_secs(3));
    let (a, _) = h.check_limits();
    assert_eq!(a.killed, [0]);
    assert_eq!(a.closed, [0]);
    assert!(matches!(t.outcome(), Some(Err(JobError::ProtocolViolation { pid, .. })) if pid == pid_of(0)));
}

#[test]
fn a_task_not_begun_past_its_limit_kills_nobody_until_the_pools_own_span() {
    let mut h = Harness::new(1, 16, None);
    let limit = Duration::from_secs(1);
    let (t, _) = h.submit_with(Some(limit));
    h.advance(Duration::from_millis(1500));
    let (a, next) = h.check_limits();
    assert!(a.killed.is_empty(), "the slot shows it has not begun");
    assert_eq!(next, Some(h.now + Duration::from_millis(1)), "look again in a moment");
    // Whatever the slot says, the head may stay no longer than 2 × limit + 1 s.
    h.advance(Duration::from_millis(1500));
    let (a, _) = h.check_limits();
    assert_eq!(a.killed, [0]);
    assert_eq!(t.outcome(), Some(Err(JobError::TimedOut { limit })));
}

#[test]
fn force_cancel_of_a_running_task_kills_its_worker_and_gives_back_the_rest() {
    let mut h = Harness::new(1, 16, None);
    let running = h.submit();
    let behind = h.submit();
    h.worker(0).begin(1, h.now_ns);
    running.fail(JobError::Cancelled); // the caller resolves the future first
    let a = apply(h.rules.force_cancel(1));
    assert_eq!(a.killed, [0]);
    assert!(a.sent.is_empty());
    let a = h.exit(0, SIGKILL);
    assert_eq!(a.spawn, [0], "a cancelled task's worker is replaced");
    assert_eq!(behind.outcome(), None, "the task behind it goes back to the queue");
    let id = h.register(0);
    assert_eq!(h.rules.worker_pids(), [pid_of(id)]);
}

#[test]
fn force_cancel_of_a_task_not_begun_sends_a_skip_and_kills_nobody() {
    let mut h = Harness::new(1, 16, None);
    let first = h.submit();
    let second = h.submit();
    // The head has not begun (slot 0): a skip, no kill.
    let a = apply(h.rules.force_cancel(1));
    assert_eq!(a.sent, [(0, Sent::Skip(1))]);
    assert!(a.killed.is_empty());
    // A task waiting behind the head: a skip too.
    let a = apply(h.rules.force_cancel(2));
    assert_eq!(a.sent, [(0, Sent::Skip(2))]);
    // The worker answers both skips; nothing was delivered, and it is idle again.
    h.reply(0, FromWorker::Skipped { id: 1 }).unwrap();
    h.reply(0, FromWorker::Skipped { id: 2 }).unwrap();
    assert_eq!(first.outcome(), None);
    assert_eq!(second.outcome(), None);
    let (_, a) = h.submit_with(None);
    assert_eq!(a.sent, [(0, Sent::Task(3))]);
}

#[test]
fn a_cancelled_queued_task_is_never_sent() {
    let mut h = Harness::new(1, 1, None); // window 1
    h.submit(); // task 1: in the window
    let forced = h.submit(); // task 2: queued
    let cancelled = h.submit(); // task 3: queued
    let kept = h.submit(); // task 4: queued
    assert!(apply(h.rules.force_cancel(2)).sent.is_empty(), "dropped from the queue");
    cancelled.cancelled.store(true, Ordering::SeqCst); // `Future::cancel` while it waits
    let a = h.done(0, 1, 1_000);
    assert_eq!(a.sent, [(0, Sent::Task(4))], "tasks 2 and 3 are skipped over");
    assert!(!forced.started.load(Ordering::SeqCst));
    assert!(!cancelled.started.load(Ordering::SeqCst));
    assert!(kept.started.load(Ordering::SeqCst));
}

#[test]
fn max_tasks_per_child_retires_a_worker_after_n_and_starts_its_replacement() {
    let mut h = Harness::new(1, 16, Some(2));
    h.submit();
    h.submit();
    let third = h.submit();
    assert_eq!(h.done(0, 1, 1_000).sent, [], "its two tasks are all it will get");
    let a = h.done(0, 2, 1_000);
    assert_eq!(a.closed, [0], "retired: its task channel closes");
    assert_eq!(a.spawn, [0], "and its replacement is started at once");
    assert!(a.killed.is_empty());
    let a = h.exit(0, ExitStatus::Exited(0));
    assert!(a.spawn.is_empty(), "a retired worker is not replaced twice");
    assert_eq!(third.outcome(), None);
    let id = h.register(0);
    let a = h.done(id, 3, 1_000);
    assert_eq!(third.outcome(), Some(Ok(Status::Ok)));
    assert!(a.closed.is_empty(), "one task of two: not worn out yet");
}

#[test]
fn an_idle_worker_is_never_left_waiting_while_work_sits_behind_a_busy_one() {
    let mut h = Harness::new(2, 16, None);
    // Long tasks (10 ms on average): the window shrinks to 1.
    h.submit();
    h.done(0, 1, 10_000_000);
    let (_, a) = h.submit_with(None);
    let (_, b) = h.submit_with(None);
    let (_, c) = h.submit_with(None);
    assert_eq!(a.sent, [(0, Sent::Task(2))]);
    assert_eq!(b.sent, [(1, Sent::Task(3))]);
    assert!(c.sent.is_empty(), "task 4 waits in the shared queue, not behind a busy worker");
    // Whichever worker frees first takes it.
    let a = h.done(1, 3, 10_000_000);
    assert_eq!(a.sent, [(1, Sent::Task(4))]);
}

#[test]
fn short_tasks_open_the_window_to_hide_the_round_trip() {
    let mut h = Harness::new(1, 16, None);
    h.submit();
    h.done(0, 1, 10_000); // 10 µs
    let sent: Vec<_> = (0..20).map(|_| h.submit_with(None).1).collect();
    let sent: Vec<&Applied> = sent.iter().collect();
    assert_eq!(Harness::tasks_to(&sent, 0).len(), 16, "max_window tasks ahead, the rest queued");
}

#[test]
fn close_runs_what_is_queued_then_retires_idle_workers() {
    let mut h = Harness::new(2, 1, None);
    let t: Vec<_> = (0..3).map(|_| h.submit()).collect(); // w0: 1, w1: 2, queued: 3
    let a = apply(h.rules.close(false));
    assert!(a.closed.is_empty(), "both are busy and work is queued");
    assert!(!h.rules.accepts_work() && h.rules.is_shutdown() && !h.rules.is_open());
    let a = h.done(0, 1, 1_000);
    assert_eq!(a.sent, [(0, Sent::Task(3))], "queued work still runs after close");
    let a = h.done(1, 2, 1_000);
    assert_eq!(a.closed, [1], "idle with the queue empty: retired");
    let a = h.done(0, 3, 1_000);
    assert_eq!(a.closed, [0]);
    assert!(t.iter().all(|t| t.outcome() == Some(Ok(Status::Ok))));
    for w in [0, 1] {
        assert!(h.exit(w, ExitStatus::Exited(0)).spawn.is_empty(), "retired workers are not replaced");
    }
    assert!(h.rules.is_wound_down() && h.rules.limits_done());
}

#[test]
fn shutdown_with_cancel_futures_cancels_the_queue_but_not_running_tasks() {
    let mut h = Harness::new(1, 1, None);
    let running = h.submit();
    let queued = h.submit();
    let a = apply(h.rules.close(true));
    assert_eq!(queued.outcome(), Some(Err(JobError::Cancelled)));
    assert!(a.closed.is_empty() && a.killed.is_empty(), "the running task goes on");
    let a = h.done(0, 1, 1_000);
    assert_eq!(running.outcome(), Some(Ok(Status::Ok)));
    assert_eq!(a.closed, [0]);
}

#[test]
fn a_closed_pool_still_replaces_a_worn_out_worker_while_tasks_wait() {
    // CPython's gh-119592: a task limit with `shutdown(wait=True)` must not strand the queue.
    let mut h = Harness::new(1, 1, Some(1));
    h.submit();
    let queued = h.submit();
    apply(h.rules.close(false));
    let a = h.done(0, 1, 1_000);
    assert_eq!(a.spawn, [0]);
    h.exit(0, ExitStatus::Exited(0));
    let id = h.register(0);
    h.done(id, 2, 1_000);
    assert_eq!(queued.outcome(), Some(Ok(Status::Ok)));
}

#[test]
fn terminate_fails_what_is_pending_and_kills_every_worker() {
    let mut h = Harness::new(2, 16, None);
    let t: Vec<_> = (0..5).map(|_| h.submit()).collect(); // w0: 1, 3; w1: 2, 4; queued: 5
    h.worker(0).begin(1, h.now_ns);
    let a = apply(h.rules.terminate());
    assert_eq!(a.killed, [0, 1]);
    assert_eq!(a.closed, [0, 1]);
    assert_eq!(t[4].outcome(), Some(Err(JobError::Cancelled)), "the queue is cancelled");
    assert!(!h.rules.accepts_work());
    for w in [0, 1] {
        assert!(h.exit(w, SIGKILL).spawn.is_empty(), "nobody is replaced");
    }
    // The running task and the unreached ones fail as cancelled; none goes back to a queue.
    assert!(t.iter().all(|t| t.outcome() == Some(Err(JobError::Cancelled))), "everything pending fails");
    assert!(h.rules.is_wound_down() && h.rules.take_stranded().is_empty());
}

#[test]
fn replies_out_of_order_are_protocol_violations() {
    let mut h = Harness::new(1, 16, None);
    let first = h.submit();
    h.submit();
    assert!(h.reply(0, FromWorker::Done { id: 2, status: Status::Ok, busy_ns: 1 }).is_err());
    assert!(h.reply(0, FromWorker::Skipped { id: 1 }).is_err(), "task 1 was never skipped");
    assert!(h.reply(0, FromWorker::Ready { pid: 1, init_error: None }).is_err());
    assert!(h.reply(7, FromWorker::Skipped { id: 1 }).is_err(), "no such worker");
    assert_eq!(first.outcome(), None, "a refused reply changes nothing");
    // The driver reports the fault: the worker is stopped and closed (and killed by the
    // driver); the task it was running fails with the reason, and it is replaced.
    let a = apply(h.rules.on_fault(0, "garbage".into()));
    assert_eq!(a.closed, [0]);
    h.worker(0).begin(1, h.now_ns);
    let a = h.exit(0, SIGKILL);
    assert_eq!(a.spawn, [0]);
    let reason = "garbage".to_owned();
    assert_eq!(first.outcome(), Some(Err(JobError::ProtocolViolation { pid: pid_of(0), reason: reason.into() })));
}

#[test]
fn three_failed_starts_in_a_row_break_the_pool() {
    let mut h = Harness::starting(1, 16, None);
    let queued = h.submit(); // no worker yet: it waits
    for n in 0..3 {
        let id = h.fork(0);
        let a = h.exit(id, ExitStatus::Exited(1));
        assert_eq!(a.spawn.len(), usize::from(n < 2), "respawned until the third failure");
    }
    assert!(h.rules.broken_reason().is_some_and(|r| r.contains("in a row")));
    assert!(matches!(queued.outcome(), Some(Err(JobError::Broken { .. }))));
    assert!(h.rules.is_wound_down());
}

#[test]
fn a_failed_initializer_breaks_the_pool_and_says_why() {
    let mut h = Harness::starting(1, 16, None);
    let id = h.fork(0);
    let a = h.reply(id, FromWorker::Ready { pid: pid_of(id), init_error: Some("no config") }).unwrap();
    assert_eq!(a.closed, [id]);
    assert!(!h.rules.is_starting(), "the build stops waiting");
    assert_eq!(h.rules.take_init_failure().as_deref(), Some("no config"));
    assert!(h.exit(id, ExitStatus::Exited(1)).spawn.is_empty());
}

#[test]
fn an_internal_panic_fails_everything_and_forgets_the_dead_readers_worker() {
    let mut h = Harness::new(2, 16, None);
    let t: Vec<_> = (0..3).map(|_| h.submit()).collect();
    let d = h.rules.break_on_panic("panicked".into(), Some(1));
    let forgotten: Vec<u64> = d.forget.iter().map(|w| w.0.id).collect();
    let a = apply(d);
    assert_eq!(forgotten, [1]);
    assert_eq!(a.killed, [0, 1]);
    assert!(t.iter().all(|t| matches!(t.outcome(), Some(Err(JobError::Broken { .. })))));
    assert_eq!(h.rules.worker_pids(), [pid_of(0)], "the other worker's exit is still awaited");
}
