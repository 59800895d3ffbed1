//! The parent's side of a process pool: the shared task queue, the workers' windows, and
//! supervision (deaths, time limits, forced cancels, retirement, shutdown).
//!
//! One mutex guards the pool's state. Every event (a submission, a reply, a death, a deadline)
//! takes it, updates the state, hands queued tasks to workers with room in their window
//! (`pump`), and collects what must happen outside the lock: completing futures (which runs
//! user callbacks), asking the fork server to kill, starting replacement workers. No user code
//! and no blocking call ever runs under the lock.
//!
//! Threads per worker: a *writer* that moves frames from the worker's outbox into its task
//! socket (a `send` blocks when the worker lags, so it gets a thread of its own and nobody else
//! ever blocks on it; it fails at once when the worker dies), and a *link* that reads the
//! worker's replies (`wire.rs`: nothing in them is trusted) and, at end of file, handles its
//! exit. One *supervisor* thread per pool watches time limits, started only if a limit is ever
//! set; it decides through each worker's slot (`slot.rs`), so that a kill hits exactly the task
//! it is meant for. Each of these threads holds a [`Watch`]: if one panics, the pool breaks
//! loudly instead of carrying on without it.
//!
//! This module must never trust a number or a message from a worker (see "What the parent
//! trusts" in `PROTOCOL.md`), nor run user code under the lock.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use nix::sys::signal::Signal;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{BuildError, ExitStatus, JobError};
use crate::ipc::{self as wire, Blocking as Wait, FrameError as WireError, Reader};
use crate::process::protocol::{self, FromWorker, Status};
use crate::process::slot::{self, CONDEMNED, ENDED, Slot};
use crate::process::zygote::{self, Pending, Spawned, Zygote};

/// Where a task's outcome goes: the future's cell, type-erased.
pub(crate) trait Sink: Send + Sync {
    /// Moves the future from pending to running; `false` if it was cancelled meanwhile.
    fn start(&self) -> bool;
    /// Completes the future from a worker's reply.
    fn deliver(&self, status: Status, body: &[u8]);
    /// Ends the future with `error` unless it already ended.
    fn fail(&self, error: JobError);
}

/// A task waiting in the pool's queue.
pub(crate) struct Task {
    pub(crate) id: u64,
    pub(crate) frame: Arc<Vec<u8>>,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) limit: Option<Duration>,
    /// Already moved to running (a task given back by a worker that died before reaching it).
    pub(crate) started: bool,
}

/// How the pool is configured; fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) max_tasks_per_child: Option<u64>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) initializer: Option<&'static str>,
    pub(crate) max_window: usize,
    pub(crate) name_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Open,
    /// No new work; queued work still runs (`close`, `shutdown`).
    Closed,
    /// Everything stops (`terminate`).
    Terminated,
}

/// Why the pool stopped a worker; decides what its unanswered head task becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Doom {
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

struct Flight {
    id: u64,
    frame: Arc<Vec<u8>>,
    sink: Arc<dyn Sink>,
    limit: Option<Duration>,
    skipped: bool,
}

struct Worker {
    id: u64,
    index: usize,
    pid: u32,
    /// The fork server that forked it: the only one that can kill and reap it (the pool's
    /// later workers may come from a successor, if this one dies).
    zygote: Arc<Zygote>,
    ready: bool,
    /// `None` once the task channel is being closed.
    outbox: Option<Sender<Arc<Vec<u8>>>>,
    /// Sent and not yet answered, in the order the worker runs them.
    flights: VecDeque<Flight>,
    assigned: u64,
    /// When the current head of `flights` (the task the worker is on) became the head.
    head_since: Instant,
    doom: Option<Doom>,
    /// Shared with the worker: which task it runs (see `slot.rs`).
    slot: Slot,
    /// What its reply reader is doing, shared with that thread.
    reader: Arc<ReaderMark>,
}

/// What a worker's reply reader is doing, told without the pool's lock: whether it is handling
/// a frame (which includes running done callbacks) and, if not, since when it has waited for
/// one. The supervisor reads it to tell a reply held up on our side (a slow callback) from a
/// reply that was never sent (a worker whose slot lies).
struct ReaderMark {
    busy: AtomicBool,
    /// When it last finished handling a frame (or started), in ns on [`slot::now_ns`]'s clock.
    idle_since_ns: AtomicU64,
}

impl ReaderMark {
    fn new() -> ReaderMark {
        ReaderMark { busy: AtomicBool::new(false), idle_since_ns: AtomicU64::new(slot::now_ns()) }
    }

    /// The reader took a frame and is handling it.
    fn enter(&self) {
        self.busy.store(true, Ordering::SeqCst);
    }

    /// The reader is done with the frame and goes back to waiting.
    fn leave(&self) {
        self.idle_since_ns.store(slot::now_ns(), Ordering::SeqCst);
        self.busy.store(false, Ordering::SeqCst);
    }

    /// `None` while the reader handles a frame; else when (by `now`, which is `now_ns` on the
    /// other clock) it began to wait for the next one.
    fn idle_since(&self, now: Instant, now_ns: u64) -> Option<Instant> {
        if self.busy.load(Ordering::SeqCst) {
            return None;
        }
        let since = self.idle_since_ns.load(Ordering::SeqCst);
        Some(now.checked_sub(Duration::from_nanos(now_ns.saturating_sub(since))).unwrap_or(now))
    }
}

impl Worker {
    /// The task the worker is running (or about to), if any: the first one not skipped, as
    /// long as only skipped ones are ahead of it.
    fn running(&self) -> Option<&Flight> {
        self.flights.iter().find(|f| !f.skipped)
    }

    /// The task a dead worker was running, by its slot: the one the slot names, if it is one
    /// the worker could have begun (up to the first not skipped: a task cancelled in the
    /// instant it began may have run all the same); none if the slot says the worker had begun
    /// nothing since its last answer. A slot that makes no sense blames the first task not
    /// answered, as if there were no slot.
    fn running_at_death(&self) -> Option<u64> {
        let word = self.slot.running().0;
        let said = word & !(CONDEMNED | ENDED);
        let mut could = Vec::new();
        for f in &self.flights {
            could.push(f.id);
            if !f.skipped {
                break;
            }
        }
        if said != 0 && could.contains(&said) {
            Some(said)
        } else if word == 0 || (word & ENDED != 0 && !self.flights.iter().any(|f| f.id == said)) {
            None
        } else {
            self.running().map(|f| f.id)
        }
    }

    fn takes_work(&self, window: usize, max_tasks: Option<u64>) -> bool {
        self.ready
            && self.doom.is_none()
            && self.outbox.is_some()
            && self.flights.len() < window
            && max_tasks.is_none_or(|m| self.assigned < m)
    }
}

struct State {
    life: Life,
    broken: Option<String>,
    queue: VecDeque<Task>,
    workers: Vec<Worker>,
    /// Spawns asked for and not yet registered in `workers`.
    starting: usize,
    next_worker: u64,
    /// Moving average of how long tasks run in workers, in ns (0: not known yet).
    busy_ewma_ns: u64,
    /// Workers in a row that died before they were ready.
    failed_starts: u32,
    /// What the initializer said when it failed.
    init_failure: Option<String>,
    threads: Vec<JoinHandle<()>>,
    supervisor: bool,
}

/// What to do once the lock is released.
#[derive(Default)]
struct Actions {
    fail: Vec<(Arc<dyn Sink>, JobError)>,
    kill: Vec<(Arc<Zygote>, u32)>,
    spawn: Vec<usize>,
    wake: bool,
}

pub(crate) struct Pool {
    state: Mutex<State>,
    /// Notified on every change a waiter could care about: join, build, the supervisor.
    changed: Condvar,
    config: Config,
    next_task: AtomicU64,
}

/// Consecutive start-up deaths after which the pool gives up instead of respawning forever.
const MAX_FAILED_STARTS: u32 = 3;

impl Pool {
    /// Starts the workers and waits until all are ready.
    pub(crate) fn start(config: Config) -> Result<Arc<Pool>, BuildError> {
        zygote::get().map_err(|e| BuildError::process(format!("cannot start the fork server: {e}")))?;
        let n = config.workers;
        let pool = Arc::new(Pool {
            state: Mutex::new(State {
                life: Life::Open,
                broken: None,
                queue: VecDeque::new(),
                workers: Vec::with_capacity(n),
                starting: n,
                next_worker: 0,
                busy_ewma_ns: 0,
                failed_starts: 0,
                init_failure: None,
                threads: Vec::new(),
                supervisor: false,
            }),
            changed: Condvar::new(),
            config,
            next_task: AtomicU64::new(1),
        });
        // Ask for every worker first, then collect them: the forks overlap the waiting.
        let mut pending = Vec::with_capacity(n);
        for index in 0..n {
            match zygote::request_spawn(&pool.worker_name(index), pool.config.initializer) {
                Ok(p) => pending.push((index, p)),
                Err(e) => {
                    pool.state.lock().starting -= n - index;
                    pool.abandon_start();
                    return Err(BuildError::process(format!("cannot start a worker: {e}")));
                }
            }
        }
        let mut error = None;
        for (index, p) in pending {
            match p.wait() {
                Ok(spawned) => pool.register(index, spawned),
                Err(e) => {
                    pool.state.lock().starting -= 1;
                    error.get_or_insert(format!("cannot start a worker: {e}"));
                }
            }
        }
        if let Some(e) = error {
            pool.abandon_start();
            return Err(BuildError::process(e));
        }
        let mut st = pool.state.lock();
        while st.broken.is_none() && (st.starting > 0 || st.workers.iter().any(|w| !w.ready)) {
            pool.changed.wait(&mut st);
        }
        if let Some(reason) = st.broken.clone() {
            let init = st.init_failure.take();
            drop(st);
            pool.abandon_start();
            return Err(match init {
                Some(message) => BuildError::initializer(message),
                None => BuildError::process(reason),
            });
        }
        Ok(Arc::clone(&pool))
    }

    fn abandon_start(self: &Arc<Self>) {
        self.terminate();
        self.join();
    }

    fn worker_name(&self, index: usize) -> String {
        format!("{}{index}", self.config.name_prefix)
    }

    pub(crate) fn max_workers(&self) -> usize {
        self.config.workers
    }

    pub(crate) fn next_task_id(&self) -> u64 {
        self.next_task.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn default_limit(&self) -> Option<Duration> {
        self.config.task_timeout
    }

    /// The pids of the live workers (for `ps`-style inspection and tests).
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        self.state.lock().workers.iter().map(|w| w.pid).collect()
    }

    /// The pid of the fork server new workers come from (started anew if it died).
    pub(crate) fn fork_server_pid(&self) -> u32 {
        zygote::get().map_or(0, |z| z.pid())
    }

    /// Registers a forked worker and starts its writer and link threads.
    fn register(self: &Arc<Self>, index: usize, spawned: Spawned) {
        let Spawned { zygote, pid, tasks, replies } = spawned;
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut st = self.state.lock();
        // Threads of workers gone by now have ended or are about to: join them, so that their
        // stacks are given back (an unjoined thread keeps its stack mapped).
        let (ended, live): (Vec<_>, Vec<_>) =
            std::mem::take(&mut st.threads).into_iter().partition(|t| t.is_finished());
        st.threads = live;
        st.starting -= 1;
        let id = st.next_worker;
        st.next_worker += 1;
        let started = (|| {
            let (tasks, replies) = (wire::take_socket(tasks)?, wire::take_socket(replies)?);
            let (slot, slot_fd) = Slot::create()?;
            let pool = Arc::clone(self);
            let writer = spawn_thread(format!("stealpool-tx{index}"), move || {
                let _watch = Watch::new(&pool, "writer");
                write_frames(rx, tasks, slot_fd)
            })?;
            st.threads.push(writer);
            let pool = Arc::clone(self);
            let zygote = Arc::clone(&zygote);
            let reader = Arc::new(ReaderMark::new());
            let mark = Arc::clone(&reader);
            let link = spawn_thread(format!("stealpool-rx{index}"), move || {
                let _watch = Watch { pool: &pool, role: "reply reader", worker: Some((id, pid)) };
                pool.link(id, &zygote, pid, replies, &mark)
            })?;
            st.threads.push(link);
            std::io::Result::Ok((slot, reader))
        })();
        match started {
            Ok((slot, reader)) => st.workers.push(Worker {
                id,
                index,
                pid,
                zygote: Arc::clone(&zygote),
                ready: false,
                outbox: Some(tx),
                flights: VecDeque::new(),
                assigned: 0,
                head_since: Instant::now(),
                doom: None,
                slot,
                reader,
            }),
            Err(e) => {
                // Without its threads the worker cannot be served: stop it and give up.
                zygote.forget_exit(pid);
                let mut acts = Actions::default();
                acts.kill.push((zygote, pid));
                Self::break_pool(&mut st, format!("cannot set up the channels of a worker: {e}"), &mut acts);
                self.settle(&mut st, &mut acts);
                drop(st);
                self.changed.notify_all();
                self.act(acts);
                return;
            }
        }
        drop(st);
        for t in ended {
            let _ = t.join();
        }
    }

    /// Queues a task. Returns it back if the pool no longer accepts work.
    pub(crate) fn submit(self: &Arc<Self>, task: Task) -> Result<(), Task> {
        let mut acts = Actions::default();
        {
            let mut st = self.state.lock();
            if st.life != Life::Open || st.broken.is_some() {
                return Err(task);
            }
            if task.limit.is_some() && !st.supervisor {
                let pool = Arc::clone(self);
                match spawn_thread("stealpool-supervisor".into(), move || {
                    let _watch = Watch::new(&pool, "supervisor");
                    pool.supervise()
                }) {
                    Ok(h) => {
                        st.supervisor = true;
                        st.threads.push(h);
                    }
                    Err(e) => {
                        // A job with a time limit never runs without the thread that enforces
                        // it: it fails, and a later one tries to start the thread again.
                        let reason = format!("cannot start the thread that enforces time limits: {e}");
                        drop(st);
                        task.sink.fail(JobError::Broken { reason });
                        return Ok(());
                    }
                }
            }
            st.queue.push_back(task);
            self.pump(&mut st, &mut acts);
        }
        self.act(acts);
        Ok(())
    }

    /// Hands queued tasks to ready workers with room in their window, least loaded first.
    fn pump(&self, st: &mut State, acts: &mut Actions) {
        let window = self.window(st);
        let max = self.config.max_tasks_per_child;
        while !st.queue.is_empty() {
            let Some(w) = st.workers.iter_mut().filter(|w| w.takes_work(window, max)).min_by_key(|w| w.flights.len())
            else {
                break;
            };
            let Some(task) = st.queue.pop_front() else { break };
            if !task.started && !task.sink.start() {
                continue; // cancelled while it waited
            }
            if w.flights.is_empty() {
                w.head_since = Instant::now();
                acts.wake |= task.limit.is_some();
            }
            w.assigned += 1;
            if let Some(out) = &w.outbox {
                let _ = out.send(Arc::clone(&task.frame));
            }
            w.flights.push_back(Flight {
                id: task.id,
                frame: task.frame,
                sink: task.sink,
                limit: task.limit,
                skipped: false,
            });
        }
        self.settle(st, acts);
    }

    /// Retires workers that are done: those at their task limit, and, once the pool is closed
    /// and its queue empty, every idle one.
    fn settle(&self, st: &mut State, acts: &mut Actions) {
        let draining = st.life != Life::Open && st.queue.is_empty();
        let max = self.config.max_tasks_per_child;
        // A closed pool still replaces workers while queued tasks wait for one (CPython's
        // gh-119592: with a task limit, `shutdown(wait=True)` stranded the queue).
        let keep_going =
            st.broken.is_none() && (st.life == Life::Open || (st.life == Life::Closed && !st.queue.is_empty()));
        let mut replacements = 0;
        for w in st.workers.iter_mut().filter(|w| w.doom.is_none() && w.flights.is_empty()) {
            let worn_out = max.is_some_and(|m| w.assigned >= m);
            if worn_out || draining {
                w.doom = Some(Doom::Retired);
                w.outbox = None; // the writer ends, the worker reads end of file and exits
                if worn_out && keep_going {
                    acts.spawn.push(w.index);
                    replacements += 1;
                }
            }
        }
        st.starting += replacements;
    }

    /// How many tasks a worker may hold: enough to hide the round trip when tasks are short,
    /// one when they are long, so that work does not wait behind a busy worker.
    fn window(&self, st: &State) -> usize {
        let w = match st.busy_ewma_ns {
            0 => 2,
            ns if ns < 200_000 => self.config.max_window,
            ns if ns < 5_000_000 => 2,
            _ => 1,
        };
        w.clamp(1, self.config.max_window.max(1))
    }

    /// Runs what was collected under the lock.
    fn act(self: &Arc<Self>, acts: Actions) {
        if acts.wake {
            self.changed.notify_all();
        }
        for (zygote, pid) in acts.kill {
            zygote.kill(pid, Signal::SIGKILL);
        }
        for (sink, error) in acts.fail {
            sink.fail(error);
        }
        for index in acts.spawn {
            self.respawn(index);
        }
    }

    fn respawn(self: &Arc<Self>, index: usize) {
        let started = zygote::request_spawn(&self.worker_name(index), self.config.initializer).and_then(Pending::wait);
        match started {
            Ok(spawned) => self.register(index, spawned),
            Err(e) => {
                let mut acts = Actions::default();
                {
                    let mut st = self.state.lock();
                    st.starting -= 1;
                    Self::break_pool(&mut st, format!("cannot start a replacement worker: {e}"), &mut acts);
                    self.settle(&mut st, &mut acts);
                }
                self.changed.notify_all();
                self.act(acts);
            }
        }
    }

    /// Marks the pool broken: it takes no more work and fails what is queued.
    fn break_pool(st: &mut State, reason: String, acts: &mut Actions) {
        if st.broken.is_none() {
            st.broken = Some(reason.clone());
        }
        if st.life == Life::Open {
            st.life = Life::Closed;
        }
        for t in st.queue.drain(..) {
            acts.fail.push((t.sink, JobError::Broken { reason: reason.clone() }));
        }
    }

    /// A worker's link thread: reads replies until end of file, then handles the exit. A reply
    /// that breaks the framing or makes no sense means the worker is not following the
    /// protocol: it is killed (and replaced, as for any death) and nothing more is read from it.
    fn link(self: &Arc<Self>, worker: u64, zygote: &Zygote, pid: u32, replies: OwnedFd, mark: &ReaderMark) {
        OWN_POOL.with(|p| p.set(Arc::as_ptr(self) as usize));
        #[cfg(test)]
        if self.config.name_prefix == tests::PANIC_LINK_PREFIX {
            panic!("a reply reader panic, injected by a test");
        }
        let mut replies = Reader::new(replies, wire::MAX_FRAME);
        loop {
            let fault = match replies.recv(Wait::Yes) {
                Ok(Some(frame)) => {
                    mark.enter();
                    let handled = self.on_frame(worker, frame);
                    mark.leave();
                    match handled {
                        Ok(()) => continue,
                        Err(fault) => fault,
                    }
                }
                Ok(None) => continue,
                // End of file, also inside a frame: the worker died (or closed its end), which
                // its exit status tells.
                Err(WireError::Closed | WireError::Truncated(_)) => break,
                Err(WireError::Io(e)) => format!("reading its replies failed: {e}"),
                Err(WireError::Violation(why)) => why,
            };
            self.fault(worker, zygote, pid, fault);
            break;
        }
        drop(replies);
        let mut status = zygote.wait_exit(pid, Duration::from_secs(5));
        if status == ExitStatus::Unknown {
            // Still alive after closing its reply channel: it can no longer be served.
            zygote.kill(pid, Signal::SIGKILL);
            status = zygote.wait_exit(pid, Duration::from_secs(5));
        }
        self.on_exit(worker, pid, status);
    }

    /// Worker `worker` broke the protocol: doom it (unless already doomed) and kill it.
    fn fault(self: &Arc<Self>, worker: u64, zygote: &Zygote, pid: u32, why: String) {
        {
            let mut st = self.state.lock();
            if let Some(w) = st.workers.iter_mut().find(|w| w.id == worker)
                && w.doom.is_none()
            {
                w.doom = Some(Doom::Faulty(why));
                w.outbox = None;
            }
        }
        zygote.kill(pid, Signal::SIGKILL);
    }

    /// Handles one reply. `Err` says how it breaks the protocol.
    fn on_frame(self: &Arc<Self>, worker: u64, frame: &[u8]) -> Result<(), String> {
        let (header, body) = protocol::split::<FromWorker<'_>>(frame)
            .map_err(|e| format!("an unreadable reply header ({e}) in a frame of {} bytes", frame.len()))?;
        let mut acts = Actions::default();
        let mut deliver = None;
        {
            let mut st = self.state.lock();
            let Some(wi) = st.workers.iter().position(|w| w.id == worker) else {
                return Err("a reply from a worker the pool no longer serves".into());
            };
            if matches!(header, FromWorker::Ready { .. }) && st.workers[wi].ready {
                return Err("a second `Ready`".into());
            }
            match header {
                FromWorker::Ready { init_error: Some(e), .. } => {
                    let w = &mut st.workers[wi];
                    w.doom = Some(Doom::Retired);
                    w.outbox = None;
                    st.init_failure = Some(e.to_owned());
                    Self::break_pool(&mut st, format!("worker initializer failed: {e}"), &mut acts);
                    self.settle(&mut st, &mut acts);
                }
                FromWorker::Ready { init_error: None, .. } => {
                    st.workers[wi].ready = true;
                    st.failed_starts = 0;
                    acts.wake = true;
                }
                FromWorker::Done { id, status, busy_ns } => {
                    let w = &mut st.workers[wi];
                    // A skipped head may still answer `Done`: cancelled in the instant it began,
                    // it ran all the same (its future is resolved already; the result is dropped).
                    let head = w.flights.front().map(|f| f.id);
                    if head != Some(id) {
                        return Err(format!("`Done` for task {id}, but its next task is {head:?}"));
                    }
                    let Some(f) = w.flights.pop_front() else { return Err("`Done` with no task".into()) };
                    w.head_since = Instant::now();
                    // The worker's figure is not trusted in arithmetic: an hour at most, and
                    // saturating sums.
                    let busy_ns = busy_ns.min(3_600_000_000_000);
                    st.busy_ewma_ns = if st.busy_ewma_ns == 0 {
                        busy_ns.max(1)
                    } else {
                        st.busy_ewma_ns.saturating_mul(7).saturating_add(busy_ns) / 8
                    };
                    deliver = Some((f.sink, status));
                    acts.wake = true;
                }
                FromWorker::Skipped { id } => {
                    let w = &mut st.workers[wi];
                    let head = w.flights.front().map(|f| (f.id, f.skipped));
                    if head != Some((id, true)) {
                        return Err(format!("`Skipped` for task {id}, but its next task is {head:?}"));
                    }
                    w.flights.pop_front();
                    w.head_since = Instant::now();
                }
            }
            self.pump(&mut st, &mut acts);
        }
        if let Some((sink, status)) = deliver {
            sink.deliver(status, body);
        }
        self.act(acts);
        Ok(())
    }

    /// A worker's process is gone (and reaped). Fails the task it was running, gives back the
    /// ones it had not reached, and starts a replacement if the pool still needs one.
    fn on_exit(self: &Arc<Self>, worker: u64, pid: u32, status: ExitStatus) {
        let mut acts = Actions::default();
        {
            let mut st = self.state.lock();
            let Some(wi) = st.workers.iter().position(|w| w.id == worker) else { return };
            let mut w = st.workers.swap_remove(wi);
            let running = w.running_at_death();
            let mut unreached = Vec::new();
            for f in w.flights.drain(..) {
                if Some(f.id) != running && f.skipped {
                    continue; // already resolved as cancelled
                }
                if Some(f.id) == running {
                    let error = match &w.doom {
                        Some(Doom::Faulty(reason)) => JobError::ProtocolViolation { pid, reason: reason.clone() },
                        Some(Doom::TimedOut(limit)) => JobError::TimedOut { limit: *limit },
                        Some(Doom::Cancelled | Doom::Terminated) => JobError::Cancelled,
                        Some(Doom::Retired) | None => JobError::WorkerDied { pid, status },
                    };
                    acts.fail.push((f.sink, error));
                } else {
                    unreached.push(f);
                }
            }
            let give_back = st.life != Life::Terminated && st.broken.is_none();
            for f in unreached.into_iter().rev() {
                if give_back {
                    st.queue.push_front(Task { id: f.id, frame: f.frame, sink: f.sink, limit: f.limit, started: true });
                } else {
                    let error = st.broken.clone().map_or(JobError::Cancelled, |reason| JobError::Broken { reason });
                    acts.fail.push((f.sink, error));
                }
            }
            // A worker that broke the protocol before `Ready` failed to start as well: one that
            // always does so must not be respawned for ever. A worker that died with its fork
            // server did not fail to start.
            if !w.ready && matches!(w.doom, None | Some(Doom::Faulty(_))) && w.zygote.is_usable() {
                st.failed_starts += 1;
                if st.failed_starts >= MAX_FAILED_STARTS {
                    let reason =
                        format!("{MAX_FAILED_STARTS} worker processes in a row died while starting (last: {status})");
                    Self::break_pool(&mut st, reason, &mut acts);
                }
            }
            let needed = st.broken.is_none()
                && w.doom != Some(Doom::Retired)
                && w.doom != Some(Doom::Terminated)
                && (st.life == Life::Open || !st.queue.is_empty());
            if needed {
                st.starting += 1;
                acts.spawn.push(w.index);
            }
            acts.wake = true;
            self.pump(&mut st, &mut acts);
        }
        self.act(acts);
    }

    /// Stops the job `id` where it is: skipped if it waits in a worker's window, the worker
    /// killed if it runs, dropped if it is queued. The caller has already resolved its future.
    pub(crate) fn force_cancel(self: &Arc<Self>, id: u64) {
        let mut acts = Actions::default();
        {
            let mut st = self.state.lock();
            if let Some(pos) = st.queue.iter().position(|t| t.id == id) {
                st.queue.remove(pos);
                return;
            }
            for w in st.workers.iter_mut() {
                let running = w.running().map(|f| f.id);
                let Some(f) = w.flights.iter_mut().find(|f| f.id == id) else { continue };
                if Some(id) == running {
                    if w.doom.is_none() {
                        if w.slot.condemn(id) {
                            // Inside it right now, and it cannot start another: kill.
                            w.doom = Some(Doom::Cancelled);
                            acts.kill.push((Arc::clone(&w.zygote), w.pid));
                        } else if !f.skipped {
                            // Not inside it: ended (its reply is on the way; the result will be
                            // dropped) or not begun, which a skip prevents if it arrives in time.
                            f.skipped = true;
                            if let Some(out) = &w.outbox {
                                let _ = out.send(Arc::new(protocol::skip_frame(id)));
                            }
                        }
                    }
                } else if !f.skipped {
                    f.skipped = true;
                    if let Some(out) = &w.outbox {
                        let _ = out.send(Arc::new(protocol::skip_frame(id)));
                    }
                }
                break;
            }
        }
        self.act(acts);
    }

    /// Watches time limits: kills the worker whose running task is overdue.
    fn supervise(self: &Arc<Self>) {
        OWN_POOL.with(|p| p.set(Arc::as_ptr(self) as usize));
        #[cfg(test)]
        if self.config.name_prefix == tests::PANIC_PREFIX {
            panic!("a supervisor panic, injected by a test");
        }
        let this = self;
        let mut st = self.state.lock();
        loop {
            if st.life != Life::Open && st.workers.is_empty() && st.starting == 0 {
                return;
            }
            let now = Instant::now();
            let now_ns = slot::now_ns();
            let mut next: Option<Instant> = None;
            let mut wake = |at: Option<Instant>| {
                if let Some(at) = at {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            };
            let mut acts = Actions::default();
            for w in st.workers.iter_mut().filter(|w| w.doom.is_none()) {
                let Some((id, limit, sink)) = w.running().and_then(|f| f.limit.map(|l| (f.id, l, Arc::clone(&f.sink))))
                else {
                    continue;
                };
                // By the pool's clock, from when the task became the head (no earlier than the
                // worker began it, for a worker whose reply reader keeps up). A limit too large
                // to add means no limit (Duration::MAX from a caller).
                let Some(deadline) = w.head_since.checked_add(limit) else { continue };
                let (said, since) = w.slot.running();
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
                let moved_on = ended || (plain != id && w.flights.iter().any(|f| f.id == plain));
                if moved_on {
                    match w.reader.idle_since(now, now_ns) {
                        // Busy delivering: look again once a span has passed from now.
                        None => wake(now.checked_add(span)),
                        Some(idle) => {
                            let lie_at = w.head_since.max(idle).checked_add(span);
                            if lie_at.is_some_and(|t| t <= now) {
                                let reason = format!(
                                    "its slot says task {id} ended or a later one began, but no reply came in {span:?}"
                                );
                                w.doom = Some(Doom::Faulty(reason.clone()));
                                w.outbox = None;
                                acts.kill.push((Arc::clone(&w.zygote), w.pid));
                                acts.fail.push((sink, JobError::ProtocolViolation { pid: w.pid, reason }));
                                continue;
                            }
                            wake(lie_at);
                        }
                    }
                    continue;
                }
                let kill = if overdue {
                    // It ended just now if this fails: its reply is coming.
                    w.slot.condemn(id)
                } else {
                    backstop.is_some_and(|b| b <= now)
                };
                if kill {
                    w.doom = Some(Doom::TimedOut(limit));
                    acts.kill.push((Arc::clone(&w.zygote), w.pid));
                    acts.fail.push((sink, JobError::TimedOut { limit }));
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
            if !acts.kill.is_empty() {
                MutexGuard::unlocked(&mut st, || this.act(acts));
                continue;
            }
            match next {
                Some(d) => {
                    self.changed.wait_until(&mut st, d);
                }
                None => self.changed.wait(&mut st),
            }
        }
    }

    /// `shutdown(wait, cancel_futures)` without the wait.
    pub(crate) fn close(self: &Arc<Self>, cancel_queued: bool) {
        let mut acts = Actions::default();
        {
            let mut st = self.state.lock();
            if st.life == Life::Open {
                st.life = Life::Closed;
            }
            if cancel_queued {
                for t in st.queue.drain(..) {
                    acts.fail.push((t.sink, JobError::Cancelled));
                }
            }
            acts.wake = true;
            self.settle(&mut st, &mut acts);
        }
        self.act(acts);
    }

    /// Stops everything now: queued tasks are cancelled, workers are killed.
    pub(crate) fn terminate(self: &Arc<Self>) {
        let mut acts = Actions::default();
        {
            let mut st = self.state.lock();
            st.life = Life::Terminated;
            for t in st.queue.drain(..) {
                acts.fail.push((t.sink, JobError::Cancelled));
            }
            for w in st.workers.iter_mut() {
                if w.doom.is_none() || w.doom == Some(Doom::Retired) {
                    w.doom = Some(Doom::Terminated);
                }
                w.outbox = None;
                acts.kill.push((Arc::clone(&w.zygote), w.pid));
            }
            acts.wake = true;
        }
        self.act(acts);
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        let st = self.state.lock();
        st.life != Life::Open || st.broken.is_some()
    }

    /// Why the pool broke, if it did.
    pub(crate) fn broken_reason(&self) -> Option<String> {
        self.state.lock().broken.clone()
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state.lock().life == Life::Open
    }

    /// Waits until every worker has exited and been reaped, and the pool's threads have ended.
    /// Called from one of the pool's own threads (a done callback that shuts the pool down),
    /// it returns at once instead of waiting for itself; the pool still winds down.
    pub(crate) fn join(&self) {
        if OWN_POOL.with(|p| p.get()) == std::ptr::from_ref(self) as usize {
            return;
        }
        let (threads, stranded) = {
            let mut st = self.state.lock();
            while !st.workers.is_empty() || st.starting > 0 {
                self.changed.wait(&mut st);
            }
            // With no worker left and none coming, nothing would ever run what is still queued:
            // fail it rather than leave futures that never resolve.
            let stranded: Vec<_> = st.queue.drain(..).collect();
            (std::mem::take(&mut st.threads), stranded)
        };
        for t in stranded {
            t.sink.fail(JobError::Broken { reason: "the pool has no workers left to run it".into() });
        }
        for t in threads {
            let _ = t.join();
        }
    }

    /// An internal thread (`role`) panicked: without it the pool cannot keep its promises (a
    /// dead supervisor enforces no time limits, a dead reply reader delivers nothing), so it
    /// breaks loudly: every queued and running task fails with [`JobError::Broken`], every
    /// worker is killed, and no more work is accepted.
    fn internal_panic(self: &Arc<Self>, role: &str, worker: Option<(u64, u32)>) {
        let reason = format!("an internal thread of the pool ({role}) panicked");
        let mut acts = Actions::default();
        {
            let mut st = self.state.lock();
            Self::break_pool(&mut st, reason.clone(), &mut acts);
            st.life = Life::Terminated;
            for w in st.workers.iter_mut() {
                for f in w.flights.drain(..).filter(|f| !f.skipped) {
                    acts.fail.push((f.sink, JobError::Broken { reason: reason.clone() }));
                }
                w.doom = Some(Doom::Terminated);
                w.outbox = None;
                acts.kill.push((Arc::clone(&w.zygote), w.pid));
            }
            // A dead reply reader will never report its worker's exit: forget the worker here.
            if let Some((id, pid)) = worker
                && let Some(pos) = st.workers.iter().position(|w| w.id == id)
            {
                st.workers.remove(pos).zygote.forget_exit(pid);
            }
            acts.wake = true;
        }
        self.changed.notify_all();
        self.act(acts);
    }
}

/// Held by each internal thread of a pool: if the thread unwinds, the pool breaks loudly
/// ([`Pool::internal_panic`]) instead of carrying on without it.
struct Watch<'a> {
    pool: &'a Arc<Pool>,
    role: &'static str,
    /// The worker a reply reader serves: its id and pid.
    worker: Option<(u64, u32)>,
}

impl<'a> Watch<'a> {
    fn new(pool: &'a Arc<Pool>, role: &'static str) -> Self {
        Watch { pool, role, worker: None }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.pool.internal_panic(self.role, self.worker);
        }
    }
}

thread_local! {
    /// The pool whose internal thread this is (its address), if any: done callbacks run on a
    /// pool's link threads, and a callback that shuts the pool down must not wait for itself.
    static OWN_POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn spawn_thread(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
}

/// A worker's writer thread: frames from the outbox into the task channel, until the outbox
/// closes (the worker then reads end of file) or the worker is gone. Small frames that queued
/// up meanwhile go together in one batch message; large ones go alone, without a copy.
fn write_frames(outbox: Receiver<Arc<Vec<u8>>>, tasks: OwnedFd, slot: OwnedFd) {
    // The first frame, empty, carries the worker's slot.
    if wire::send_parts(tasks.as_fd(), &[], Some(slot.as_fd())).is_err() {
        return;
    }
    drop(slot);
    let mut batch = Vec::new();
    let mut carried: Option<Arc<Vec<u8>>> = None;
    loop {
        let first = match carried.take() {
            Some(f) => f,
            None => match outbox.recv() {
                Ok(f) => f,
                Err(_) => return,
            },
        };
        let mut count = 1;
        if first.len() <= protocol::BATCHABLE {
            while batch.len() < protocol::BATCH_BYTES {
                match outbox.try_recv() {
                    Ok(next) if next.len() <= protocol::BATCHABLE => {
                        if count == 1 {
                            protocol::batch_start(&mut batch);
                            protocol::batch_push(&mut batch, &first);
                        }
                        protocol::batch_push(&mut batch, &next);
                        count += 1;
                    }
                    Ok(large) => {
                        carried = Some(large);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let sent = wire::send(tasks.as_fd(), if count == 1 { &first } else { &batch });
        batch.clear();
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use crate::{Executor, JobError, ProcessPoolBuilder};

    /// A pool whose workers carry this name prefix gets a supervisor that panics at once.
    pub(crate) const PANIC_PREFIX: &str = "stealpool-panic";

    /// A pool whose workers carry this name prefix gets reply readers that panic at once.
    pub(crate) const PANIC_LINK_PREFIX: &str = "stealpool-panrx";

    fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    crate::register_fn!(nap);

    #[test]
    fn a_panicking_supervisor_breaks_the_pool_loudly() {
        let p = ProcessPoolBuilder::new()
            .workers(1)
            .name_prefix(PANIC_PREFIX)
            .task_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let pid = p.worker_pids()[0];
        // The first job with a limit starts the supervisor, which panics: the job fails loudly
        // instead of running on without a time limit.
        let err = p.apply_async(nap, 60_000).unwrap().result().unwrap_err();
        assert!(matches!(&err, JobError::Broken { reason } if reason.contains("supervisor")), "{err:?}");
        assert!(p.is_shutdown());
        let refused = p.apply_async(nap, 1).unwrap_err();
        assert!(refused.broken_reason().is_some_and(|r| r.contains("supervisor")), "{refused}");
        assert!(refused.to_string().contains("broken"), "{refused}");
        p.join().unwrap();
        assert!(p.worker_pids().is_empty());
        // SAFETY: kill with signal 0 only checks whether the pid exists.
        let gone = unsafe { nix::libc::kill(pid as i32, 0) } != 0;
        assert!(gone, "the worker was killed and reaped");
    }

    #[test]
    fn a_panicking_reply_reader_breaks_the_pool_loudly_and_leaves_no_worker() {
        let started = std::time::Instant::now();
        let err = ProcessPoolBuilder::new().workers(2).name_prefix(PANIC_LINK_PREFIX).build().unwrap_err();
        assert!(err.to_string().contains("reply reader"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20), "build returned promptly");
        // Its workers were killed and reaped (names are cut to 15 bytes).
        let ours = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.starts_with(&PANIC_LINK_PREFIX[..15]))
                })
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ours() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ours(), 0, "no worker of the broken pool is left");
    }
}
