//! The parent's side of a process pool: the driver that applies the supervision rules
//! ([`supervisor`]) with real workers, sockets, threads and the clock.
//!
//! One mutex guards the pool's state, the [`Supervisor`]. Every event (a submission, a reply, a
//! death, a deadline) takes it, feeds the event to the supervisor with the time, and applies
//! the decisions in two steps: frames queued on workers' outboxes and outboxes closed under the
//! lock (so that a worker's frames keep the order the rules chose), then, with the lock
//! released, what may block or run user code: completing futures (which runs user callbacks),
//! asking the fork server to kill, starting replacement workers. No user code and no blocking
//! call ever runs under the lock.
//!
//! Threads per worker: a *writer* (`writer.rs`) that moves frames from the worker's outbox into
//! its task socket, and a *link* that reads the worker's replies (`ipc/frame.rs`: nothing in them is
//! trusted) and, at end of file, handles its exit. One time-limit thread per pool (its role is
//! called "supervisor" in errors), started only if a limit is ever set, asks the supervisor at
//! each deadline; it decides through each worker's slot (`slot.rs`), so that a kill hits exactly
//! the task it is meant for. Each of these threads (started in `threads.rs`) holds a
//! [`BreakOnPanic`]: if one panics, the pool breaks loudly instead of carrying on without it.
//!
//! A pool belongs to the process that built it (its [`Owner`]): in a process forked from that
//! one, every method returns at once having touched nothing of the parent's (no lock, no
//! thread, no worker): submissions are refused with [`Pool::broken_reason`] saying why, and
//! closing, terminating and joining do nothing.
//!
//! This module must never trust a number or a message from a worker (see "What the parent
//! trusts" in `PROTOCOL.md`), nor run user code under the lock, nor decide a supervision rule
//! itself (that is the supervisor's, where it can be tested without processes).

mod reader_mark;
mod reply_reader;
mod supervisor;
#[cfg(test)]
pub(crate) mod test;
mod threads;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use nix::sys::signal::Signal;
use parking_lot::{Condvar, Mutex, MutexGuard};

use self::reader_mark::ReaderMark;
use self::supervisor::{Decisions, Outgoing, Supervisor, WorkerHandle};
pub(crate) use self::supervisor::{QueuedTask, Sink};
use self::threads::{BreakOnPanic, OWN_POOL, spawn_thread};
use crate::error::{BuildError, JobError};
use crate::ipc::{self, BufferStock, Owner};
use crate::process::fork_server::{self, ChildEnvironment, ForkServer, PendingSpawn, Spawned};
use crate::process::protocol;
use crate::process::protocol::Initializer;
use crate::process::slot::{self, Slot};

/// How the pool is configured; fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) max_tasks_per_child: Option<u64>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) initializer: Option<Initializer>,
    /// How long `terminate` waits for workers to end on `SIGTERM` before it `SIGKILL`s them.
    pub(crate) terminate_grace: Duration,
    pub(crate) max_window: usize,
    pub(crate) name_prefix: String,
    /// The workers' environment and current directory, taken at `build`.
    pub(crate) environment: Arc<ChildEnvironment>,
}

/// The driver's handle on one worker: how to reach it (its fork server, its outbox) and what
/// the supervisor may look at (its slot, its reply reader's mark).
struct Link {
    /// The fork server that forked it: the only one that can kill and reap it (the pool's
    /// later workers may come from a successor, if this one dies).
    server: Arc<ForkServer>,
    pid: u32,
    /// Shared with the worker: which task it runs (see `slot.rs`); the writer also counts
    /// there what it has sent.
    slot: Arc<Slot>,
    /// What its reply reader is doing, shared with that thread.
    reader: Arc<ReaderMark>,
    /// Frames for its writer; `None` once the task channel is being closed. Only touched
    /// under the pool's lock.
    outbox: Mutex<Option<Sender<Arc<ipc::Frame>>>>,
}

impl WorkerHandle for Arc<Link> {
    fn slot(&self) -> (u64, u64) {
        self.slot.running()
    }

    fn condemn(&self, id: u64) -> bool {
        self.slot.condemn(id)
    }

    fn reader_idle_since(&self, now: Instant, now_ns: u64) -> Option<Instant> {
        self.reader.idle_since(now, now_ns)
    }

    fn held_replies(&self) -> Vec<u8> {
        self.slot.held_replies()
    }
}

type Rules = Supervisor<Arc<Link>>;

struct State {
    rules: Rules,
    threads: Vec<JoinHandle<()>>,
    /// Whether the time-limit thread was started.
    limit_thread: bool,
    /// Whether workers may hold replies to send several together: until the first task with
    /// a time limit (a held reply would look missing to the limit rules).
    holding: bool,
}

pub(crate) struct Pool {
    /// The process that built the pool: its workers, threads and sockets are that process's.
    owner: Owner,
    state: Mutex<State>,
    /// Notified on every change a waiter could care about: join, build, the time-limit thread.
    changed: Condvar,
    config: Config,
    next_task: AtomicU64,
    /// Buffers that large task frames are built in and given back to (at most a few kept).
    buffers: Arc<BufferStock>,
}

/// Applies the part of `d` that must happen under the pool's lock: frames to outboxes (in the
/// order decided), closed outboxes (after their frames), forgotten exits.
fn apply_locked(d: &mut Decisions<Arc<Link>>) {
    for (link, frame) in d.send.drain(..) {
        if let Some(out) = &*link.outbox.lock() {
            let frame = match frame {
                Outgoing::Task { frame, .. } => frame,
                Outgoing::Skip(id) => Arc::new(protocol::skip_frame(id).into()),
            };
            let _ = out.send(frame);
        }
    }
    for link in d.close.drain(..) {
        *link.outbox.lock() = None;
    }
    for link in d.forget.drain(..) {
        link.server.forget_exit(link.pid);
    }
}

impl Pool {
    /// Starts the workers and waits until all are ready.
    pub(crate) fn start(config: Config) -> Result<Arc<Pool>, BuildError> {
        fork_server::get().map_err(|e| BuildError::process(format!("cannot start the fork server: {e}")))?;
        let n = config.workers;
        let pool = Arc::new(Pool {
            owner: Owner::current(),
            state: Mutex::new(State {
                rules: Supervisor::new(n, config.max_window, config.max_tasks_per_child),
                threads: Vec::new(),
                limit_thread: false,
                holding: true,
            }),
            changed: Condvar::new(),
            config,
            next_task: AtomicU64::new(1),
            buffers: BufferStock::new(),
        });
        // Ask for every worker first, then collect them: the forks overlap the waiting.
        let mut pending = Vec::with_capacity(n);
        for index in 0..n {
            match pool.request_worker(index) {
                Ok(p) => pending.push((index, p)),
                Err(e) => {
                    pool.state.lock().rules.spawns_failed(n - index);
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
                    pool.state.lock().rules.spawns_failed(1);
                    error.get_or_insert(format!("cannot start a worker: {e}"));
                }
            }
        }
        if let Some(e) = error {
            pool.abandon_start();
            return Err(BuildError::process(e));
        }
        let mut st = pool.state.lock();
        while st.rules.is_starting() {
            pool.changed.wait(&mut st);
        }
        if let Some(reason) = st.rules.broken_reason() {
            let init = st.rules.take_init_failure();
            drop(st);
            pool.abandon_start();
            return Err(match init {
                Some(message) => BuildError::initializer(message),
                None => BuildError::process(reason),
            });
        }
        Ok(Arc::clone(&pool))
    }

    /// `true` in a process forked from the one that built the pool. Asked before any lock is
    /// taken: a thread of the parent may have held the pool's lock at the fork, and none of
    /// its threads exist here.
    fn is_inherited(&self) -> bool {
        !self.owner.is_current()
    }

    fn abandon_start(self: &Arc<Self>) {
        self.terminate(Duration::ZERO);
        self.join();
    }

    /// Asks the fork server for worker `index`: the one place the pool starts a worker.
    fn request_worker(&self, index: usize) -> std::io::Result<PendingSpawn> {
        fork_server::request_spawn(&self.worker_name(index), self.config.initializer.as_ref(), &self.config.environment)
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

    /// The stock of buffers this pool's large task frames are built in.
    pub(crate) fn buffers(&self) -> &Arc<BufferStock> {
        &self.buffers
    }

    pub(crate) fn default_limit(&self) -> Option<Duration> {
        self.config.task_timeout
    }

    /// The pids of the live workers (for `ps`-style inspection and tests).
    /// None in a forked child: the parent's workers are not this process's.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        if self.is_inherited() {
            return Vec::new();
        }
        self.state.lock().rules.worker_pids()
    }

    /// The pid of the fork server new workers come from (started anew if it died); 0 in a
    /// forked child, where the pool starts no workers (and no fork server).
    pub(crate) fn fork_server_pid(&self) -> u32 {
        if self.is_inherited() {
            return 0;
        }
        fork_server::get().map_or(0, |z| z.pid())
    }

    /// Feeds one event to the rules under the lock and applies what must happen there; the
    /// rest is for [`Pool::act`], once the lock is released.
    fn event(&self, f: impl FnOnce(&mut Rules) -> Decisions<Arc<Link>>) -> Decisions<Arc<Link>> {
        let mut st = self.state.lock();
        let mut d = f(&mut st.rules);
        apply_locked(&mut d);
        d
    }

    /// Runs what was decided under the lock and left for after it.
    fn act(self: &Arc<Self>, d: Decisions<Arc<Link>>) {
        if d.wake {
            self.changed.notify_all();
        }
        for link in d.kill {
            link.server.kill(link.pid, Signal::SIGKILL);
        }
        for (sink, status, body) in d.recovered {
            sink.deliver(status, &body);
        }
        for (sink, error) in d.fail {
            sink.fail(error);
        }
        for index in d.spawn {
            self.respawn(index);
        }
    }

    /// Registers a forked worker and starts its writer and link threads.
    fn register(self: &Arc<Self>, index: usize, spawned: Spawned) {
        let Spawned { server, pid, tasks, replies } = spawned;
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut st = self.state.lock();
        // Threads of workers gone by now have ended or are about to: join them, so that their
        // stacks are given back (an unjoined thread keeps its stack mapped).
        let (ended, live): (Vec<_>, Vec<_>) =
            std::mem::take(&mut st.threads).into_iter().partition(|t| t.is_finished());
        st.threads = live;
        let id = st.rules.reserve_worker_id();
        let started = (|| {
            let (tasks, replies) = (ipc::take_socket(tasks)?, ipc::take_socket(replies)?);
            let (slot, slot_fd) = Slot::create()?;
            let slot = Arc::new(slot);
            let pool = Arc::clone(self);
            let counts = Arc::clone(&slot);
            let writer = spawn_thread(format!("stealpool-tx{index}"), move || {
                let _guard = BreakOnPanic::new(&pool, "writer");
                writer::write_frames(rx, tasks, slot_fd, &counts)
            })?;
            st.threads.push(writer);
            let pool = Arc::clone(self);
            let server = Arc::clone(&server);
            let reader = Arc::new(ReaderMark::new());
            let mark = Arc::clone(&reader);
            slot.allow_holding(st.holding);
            let read_counts = Arc::clone(&slot);
            let link = spawn_thread(format!("stealpool-rx{index}"), move || {
                let _guard = BreakOnPanic { pool: &pool, role: "reply reader", worker: Some(id) };
                pool.read_replies(id, &server, pid, replies, &mark, &read_counts)
            })?;
            st.threads.push(link);
            std::io::Result::Ok((slot, reader))
        })();
        match started {
            Ok((slot, reader)) => {
                let link = Link { server: Arc::clone(&server), pid, slot, reader, outbox: Mutex::new(Some(tx)) };
                st.rules.add_worker(id, index, pid, Arc::new(link), Instant::now());
            }
            Err(e) => {
                // Without its threads the worker cannot be served: stop it and give up.
                server.forget_exit(pid);
                let mut d = st.rules.setup_failed(format!("cannot set up the channels of a worker: {e}"));
                apply_locked(&mut d);
                drop(st);
                self.changed.notify_all();
                server.kill(pid, Signal::SIGKILL);
                self.act(d);
                return;
            }
        }
        drop(st);
        for t in ended {
            let _ = t.join();
        }
    }

    /// Queues a task. Returns it back if the pool no longer accepts work.
    pub(crate) fn submit(self: &Arc<Self>, task: QueuedTask) -> Result<(), QueuedTask> {
        if self.is_inherited() {
            return Err(task);
        }
        let d = {
            let mut st = self.state.lock();
            if !st.rules.accepts_work() {
                return Err(task);
            }
            if task.limit.is_some() && st.holding {
                // From now on no worker holds a reply: each sees this before it reads the task.
                st.holding = false;
                st.rules.for_each_handle(|link| link.slot.allow_holding(false));
            }
            if task.limit.is_some() && !st.limit_thread {
                let pool = Arc::clone(self);
                match spawn_thread("stealpool-supervisor".into(), move || {
                    let _guard = BreakOnPanic::new(&pool, "supervisor");
                    pool.enforce_limits()
                }) {
                    Ok(h) => {
                        st.limit_thread = true;
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
            let mut d = st.rules.submit(task, Instant::now());
            apply_locked(&mut d);
            d
        };
        self.act(d);
        Ok(())
    }

    fn respawn(self: &Arc<Self>, index: usize) {
        match self.request_worker(index).and_then(PendingSpawn::wait) {
            Ok(spawned) => self.register(index, spawned),
            Err(e) => {
                let d = self.event(|r| r.replacement_failed(format!("cannot start a replacement worker: {e}")));
                self.changed.notify_all();
                self.act(d);
            }
        }
    }

    /// Stops the job `id` where it is: skipped if it waits in a worker's window, the worker
    /// killed if it runs, dropped if it is queued. The caller has already resolved its future.
    pub(crate) fn force_cancel(self: &Arc<Self>, id: u64) {
        if self.is_inherited() {
            return;
        }
        let d = self.event(|r| r.force_cancel(id));
        self.act(d);
    }

    /// The time-limit thread: at each deadline the rules judge, and the overdue are killed.
    fn enforce_limits(self: &Arc<Self>) {
        OWN_POOL.with(|p| p.set(Arc::as_ptr(self) as usize));
        #[cfg(test)]
        if self.config.name_prefix == test::PANIC_PREFIX {
            panic!("a supervisor panic, injected by a test");
        }
        let mut st = self.state.lock();
        loop {
            if st.rules.limits_done() {
                return;
            }
            let (mut d, next) = st.rules.check_limits(Instant::now(), slot::now_ns());
            if !d.kill.is_empty() {
                apply_locked(&mut d);
                MutexGuard::unlocked(&mut st, || self.act(d));
                continue;
            }
            match next {
                Some(at) => {
                    self.changed.wait_until(&mut st, at);
                }
                None => self.changed.wait(&mut st),
            }
        }
    }

    /// `shutdown(wait, cancel_futures)` without the wait.
    pub(crate) fn close(self: &Arc<Self>, cancel_queued: bool) {
        if self.is_inherited() {
            return;
        }
        let d = self.event(|r| r.close(cancel_queued));
        self.act(d);
    }

    /// Stops everything now: queued tasks are cancelled, workers are stopped: `SIGTERM`, then
    /// `SIGKILL` to those still there after `grace` (at once if `grace` is zero, or if called
    /// from one of the pool's own threads, which the wait could hold up: a reply reader
    /// reports its own worker's exit).
    pub(crate) fn terminate(self: &Arc<Self>, grace: Duration) {
        if self.is_inherited() {
            return; // the parent's workers are the parent's to stop
        }
        let mut d = self.event(Rules::terminate);
        let on_own_thread = OWN_POOL.with(|p| p.get()) == Arc::as_ptr(self) as usize;
        if grace.is_zero() || on_own_thread {
            self.act(d);
            return;
        }
        let doomed = std::mem::take(&mut d.kill);
        for link in &doomed {
            link.server.kill(link.pid, Signal::SIGTERM);
        }
        self.act(d);
        let deadline = Instant::now() + grace;
        let mut st = self.state.lock();
        let still_there = |st: &State| {
            let live = st.rules.worker_pids();
            doomed.iter().filter(|l| live.contains(&l.pid)).cloned().collect::<Vec<_>>()
        };
        let mut left = still_there(&st);
        while !left.is_empty() && !self.changed.wait_until(&mut st, deadline).timed_out() {
            left = still_there(&st);
        }
        left = still_there(&st);
        drop(st);
        for link in left {
            link.server.kill(link.pid, Signal::SIGKILL);
        }
    }

    /// The grace period `terminate` gives workers by default (the builder's setting).
    pub(crate) fn terminate_grace(&self) -> Duration {
        self.config.terminate_grace
    }

    /// `true` in a forked child, where the pool takes no work.
    pub(crate) fn is_shutdown(&self) -> bool {
        self.is_inherited() || self.state.lock().rules.is_shutdown()
    }

    /// Why the pool broke, if it did; in a forked child, that it is the parent's.
    pub(crate) fn broken_reason(&self) -> Option<String> {
        if self.is_inherited() {
            return Some(format!(
                "this pool belongs to process {}; a forked child must build its own",
                self.owner.pid()
            ));
        }
        self.state.lock().rules.broken_reason()
    }

    /// `false` in a forked child.
    pub(crate) fn is_open(&self) -> bool {
        !self.is_inherited() && self.state.lock().rules.is_open()
    }

    /// Waits until every worker has exited and been reaped, and the pool's threads have ended.
    /// Called from one of the pool's own threads (a done callback that shuts the pool down),
    /// it returns at once instead of waiting for itself; the pool still winds down. In a forked
    /// child it returns at once: the workers and threads it would wait for are the parent's.
    pub(crate) fn join(&self) {
        if self.is_inherited() {
            return;
        }
        if OWN_POOL.with(|p| p.get()) == std::ptr::from_ref(self) as usize {
            return;
        }
        let (threads, stranded) = {
            let mut st = self.state.lock();
            while !st.rules.is_wound_down() {
                self.changed.wait(&mut st);
            }
            // With no worker left and none coming, nothing would ever run what is still queued:
            // fail it rather than leave futures that never resolve.
            let stranded = st.rules.take_stranded();
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
    /// dead time-limit thread enforces no time limits, a dead reply reader delivers nothing),
    /// so it breaks loudly: every queued and running task fails with [`JobError::Broken`],
    /// every worker is killed, and no more work is accepted.
    fn internal_panic(self: &Arc<Self>, role: &str, worker: Option<u64>) {
        let reason = format!("an internal thread of the pool ({role}) panicked");
        let d = self.event(|r| r.break_on_panic(reason, worker));
        self.changed.notify_all();
        self.act(d);
    }
}
