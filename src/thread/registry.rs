//! The shared heart of a [`ThreadPoolExecutor`](super::ThreadPoolExecutor): the queues, the
//! worker threads' main loops, the per-job cells, and the hook that lets a worker block on a
//! future without starving the pool.
//!
//! Queues: one global [`Injector`] for jobs submitted from outside the pool, and one LIFO deque
//! per regular worker for jobs submitted from inside it (fork-join locality). An idle worker
//! takes from its own deque, then a batch from the injector, then steals the oldest job of
//! another worker. Spare threads (see `SLEEP.md`) have no deque: they take from the injector and
//! steal, and what they submit goes to the injector.
//!
//! This module never lets a panic from user code unwind through it: jobs and initializers run
//! under [`unwind::catch`].

use std::cell::{RefCell, UnsafeCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_utils::{Backoff, CachePadded};
use parking_lot::Mutex;

use super::sleep::{Sleep, SpareFate, Wake};
use crate::error::{BuildError, SubmitError};
use crate::future::{Cell, Core, Future};
use crate::job::Job;
use crate::unwind;

/// A queued job, type-erased.
pub(super) type JobRef = Arc<dyn Runnable>;

pub(super) trait Runnable: Send + Sync {
    /// Runs the job unless it was cancelled or already started elsewhere (inline by a waiter).
    fn run(&self);
    /// Cancels the job if it has not started.
    fn cancel(&self);
}

/// A job and the state of its future in one allocation, shared by the queue and the [`Future`].
struct JobCell<J: Job> {
    core: Core<J::Output>,
    /// Taken by whoever wins `core.try_start()`; see the `Sync` impl.
    job: UnsafeCell<Option<J>>,
    /// The address of the owning registry: jobs run inline only on that pool's threads.
    registry: usize,
}

// SAFETY: `job` is the only field not already `Sync`. It is written once, in `new`, before the
// cell is shared (the `Arc` is published to other threads through the deques and the future,
// which synchronize). After that it is touched only by `execute`, and only after
// `core.try_start()` returned true, which happens for exactly one caller ever (the transition
// `Pending -> Running` is made under the core's mutex). So at most one thread accesses `job`,
// and moving a `J: Send` out of it on that thread is sound. `Core<T>` is `Sync` for `T: Send`.
unsafe impl<J: Job + Send> Sync for JobCell<J> where J::Output: Send {}

impl<J: Job + Send> JobCell<J>
where
    J::Output: Send,
{
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

impl<J: Job + Send> Runnable for JobCell<J>
where
    J::Output: Send,
{
    fn run(&self) {
        self.execute();
    }

    fn cancel(&self) {
        self.core.cancel();
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
        current_registry() == Some(self.registry) && self.execute()
    }
}

/// What a thread of a pool knows about itself.
struct WorkerCtx {
    registry: Arc<Registry>,
    /// `None` for spare threads.
    local: Option<Worker<JobRef>>,
}

thread_local! {
    static WORKER: RefCell<Option<WorkerCtx>> = const { RefCell::new(None) };
}

fn current_registry() -> Option<usize> {
    WORKER.with_borrow(|w| w.as_ref().map(|ctx| Arc::as_ptr(&ctx.registry) as usize))
}

/// Runs `f`, which is about to block, with the current thread counted as blocked if it is a
/// pool thread, so that its pool can keep its parallelism (see `SLEEP.md`).
pub(crate) fn block_in_place<R>(f: impl FnOnce() -> R) -> R {
    let Some(registry) = WORKER.with_borrow(|w| w.as_ref().map(|ctx| Arc::clone(&ctx.registry))) else {
        return f();
    };
    if registry.sleep.enter_blocking(|| registry.has_work()) == Wake::SpawnSpare {
        registry.spawn_spare();
    }
    struct Unblock<'a>(&'a Sleep);
    impl Drop for Unblock<'_> {
        fn drop(&mut self) {
            self.0.exit_blocking();
        }
    }
    let _unblock = Unblock(&registry.sleep);
    f()
}

const RUNNING: u8 = 0;
const CLOSED: u8 = 1;
const TERMINATED: u8 = 2;

/// How to start the pool's threads.
pub(super) struct ThreadConfig {
    pub(super) name_prefix: String,
    pub(super) stack_size: Option<usize>,
    pub(super) initializer: Option<Arc<dyn Fn() + Send + Sync>>,
}

pub(crate) struct Registry {
    injector: Injector<JobRef>,
    stealers: Vec<Stealer<JobRef>>,
    sleep: Sleep,
    lifecycle: AtomicU8,
    /// Outside submissions in progress; workers do not exit while one may still push.
    submitting: CachePadded<AtomicUsize>,
    config: ThreadConfig,
    threads: Mutex<Vec<JoinHandle<()>>>,
    spares_started: AtomicUsize,
    /// Set when a spare's initializer panicked: no more spares are started.
    spares_disabled: AtomicBool,
}

impl Registry {
    /// Creates the registry and starts `n` workers; returns once every initializer has run.
    pub(super) fn start(n: usize, config: ThreadConfig) -> Result<Arc<Registry>, BuildError> {
        let deques: Vec<Worker<JobRef>> = (0..n).map(|_| Worker::new_lifo()).collect();
        let registry = Arc::new(Registry {
            injector: Injector::new(),
            stealers: deques.iter().map(Worker::stealer).collect(),
            sleep: Sleep::new(n),
            lifecycle: AtomicU8::new(RUNNING),
            submitting: CachePadded::new(AtomicUsize::new(0)),
            config,
            threads: Mutex::new(Vec::with_capacity(n)),
            spares_started: AtomicUsize::new(0),
            spares_disabled: AtomicBool::new(false),
        });
        let (report, reports) = std::sync::mpsc::channel::<Result<(), String>>();
        let mut failure = None;
        for (index, deque) in deques.into_iter().enumerate() {
            let reg = Arc::clone(&registry);
            let report = report.clone();
            let spawned =
                registry.thread_builder(format!("{}-{index}", registry.config.name_prefix)).spawn(move || {
                    let init = reg.run_initializer();
                    let failed = init.is_err();
                    let _ = report.send(init);
                    drop(report);
                    if failed {
                        reg.sleep.thread_exited();
                        return;
                    }
                    WORKER.with_borrow_mut(|w| *w = Some(WorkerCtx { registry: Arc::clone(&reg), local: Some(deque) }));
                    reg.worker_loop(index);
                    WORKER.with_borrow_mut(|w| *w = None);
                });
            match spawned {
                Ok(handle) => registry.threads.lock().push(handle),
                Err(e) => {
                    failure = Some(BuildError::spawn(e));
                    break;
                }
            }
        }
        drop(report);
        for init in reports {
            if let (Err(message), None) = (init, &failure) {
                failure = Some(BuildError::initializer(message));
            }
        }
        match failure {
            None => Ok(registry),
            Some(e) => {
                registry.terminate();
                registry.join_all();
                Err(e)
            }
        }
    }

    fn thread_builder(&self, name: String) -> thread::Builder {
        let builder = thread::Builder::new().name(name);
        match self.config.stack_size {
            Some(size) => builder.stack_size(size),
            None => builder,
        }
    }

    fn run_initializer(&self) -> Result<(), String> {
        match &self.config.initializer {
            None => Ok(()),
            Some(init) => unwind::catch(|| init()).map_err(|e| e.to_string()),
        }
    }

    pub(super) fn num_workers(&self) -> usize {
        self.stealers.len()
    }

    fn id(&self) -> usize {
        self as *const Registry as usize
    }

    /// Schedules a job. From a thread of this pool it goes to that thread's deque and is
    /// accepted until `terminate`; from outside it goes to the injector and is accepted only
    /// while the pool runs.
    pub(super) fn submit<J>(self: &Arc<Self>, job: J) -> Result<Future<J::Output>, SubmitError<J>>
    where
        J: Job + Send + 'static,
        J::Output: Send + 'static,
    {
        let inside = current_registry() == Some(self.id());
        if inside {
            if self.lifecycle.load(Ordering::Acquire) == TERMINATED {
                return Err(SubmitError::shutdown(job));
            }
        } else {
            // Announce the submission before checking the state; `shutdown` sets the state
            // before workers read `submitting`, so a worker never exits under our push.
            self.submitting.fetch_add(1, Ordering::SeqCst);
            if self.lifecycle.load(Ordering::SeqCst) != RUNNING {
                self.submitting.fetch_sub(1, Ordering::SeqCst);
                return Err(SubmitError::shutdown(job));
            }
        }
        let cell = Arc::new(JobCell { core: Core::new(), job: UnsafeCell::new(Some(job)), registry: self.id() });
        let future = Future::from_cell(Arc::clone(&cell) as Arc<dyn Cell<J::Output>>);
        self.push(cell);
        if !inside {
            self.submitting.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(future)
    }

    #[inline]
    fn push(self: &Arc<Self>, job: JobRef) {
        let job = WORKER.with_borrow(|w| match w {
            Some(WorkerCtx { registry, local: Some(local) }) if Arc::ptr_eq(registry, self) => {
                local.push(job);
                None
            }
            _ => Some(job),
        });
        if let Some(job) = job {
            self.injector.push(job);
        }
        if self.sleep.notify_work() == Wake::SpawnSpare {
            self.spawn_spare();
        }
    }

    fn find_work(&self, local: Option<&Worker<JobRef>>, start: usize) -> Option<JobRef> {
        if let Some(job) = local.and_then(Worker::pop) {
            return Some(job);
        }
        loop {
            let from_injector = match local {
                Some(local) => self.injector.steal_batch_and_pop(local),
                None => self.injector.steal(),
            };
            let mut retry = match from_injector {
                Steal::Success(job) => return Some(job),
                Steal::Retry => true,
                Steal::Empty => false,
            };
            let n = self.stealers.len();
            for k in 0..n {
                match self.stealers[(start + k) % n].steal() {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    fn is_terminated(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == TERMINATED
    }

    /// Closed, and nothing is queued or about to be: an idle thread may exit.
    fn is_drained(&self) -> bool {
        self.lifecycle.load(Ordering::SeqCst) != RUNNING
            && self.submitting.load(Ordering::SeqCst) == 0
            && !self.has_work()
    }

    /// Looks for work, spinning briefly before giving up.
    fn search(&self, local: Option<&Worker<JobRef>>, start: usize) -> Option<JobRef> {
        let backoff = Backoff::new();
        loop {
            if let Some(job) = self.find_work(local, start) {
                return Some(job);
            }
            if backoff.is_completed() || self.is_terminated() {
                return None;
            }
            backoff.snooze();
        }
    }

    fn worker_loop(&self, index: usize) {
        let mut start = index;
        while !self.is_terminated() {
            let found = WORKER.with_borrow(|w| {
                let local = w.as_ref().and_then(|ctx| ctx.local.as_ref());
                self.search(local, start)
            });
            match found {
                Some(job) => job.run(),
                None if self.is_drained() => break,
                None => self.sleep.sleep_worker(|| self.has_work()),
            }
            start = start.wrapping_add(1);
        }
        self.sleep.thread_exited();
    }

    fn spare_loop(&self) {
        let mut start = 0;
        loop {
            if self.is_terminated() {
                self.sleep.thread_exited();
                return;
            }
            let fate = match self.search(None, start) {
                Some(job) => {
                    job.run();
                    self.sleep.retire_spare(|| self.has_work(), false)
                }
                None if self.is_drained() => {
                    self.sleep.thread_exited();
                    return;
                }
                None => self.sleep.retire_spare(|| self.has_work(), true),
            };
            if fate == SpareFate::Exit {
                return;
            }
            start = start.wrapping_add(1);
        }
    }

    /// Starts a spare thread, already counted as live by the sleep protocol.
    #[cold]
    fn spawn_spare(self: &Arc<Self>) {
        if self.is_terminated() || self.spares_disabled.load(Ordering::Acquire) {
            self.sleep.spare_failed();
            return;
        }
        let k = self.spares_started.fetch_add(1, Ordering::Relaxed);
        let reg = Arc::clone(self);
        let spawned = self.thread_builder(format!("{}-spare-{k}", self.config.name_prefix)).spawn(move || {
            if reg.run_initializer().is_err() {
                reg.spares_disabled.store(true, Ordering::Release);
                reg.sleep.thread_exited();
                return;
            }
            WORKER.with_borrow_mut(|w| *w = Some(WorkerCtx { registry: Arc::clone(&reg), local: None }));
            reg.spare_loop();
            WORKER.with_borrow_mut(|w| *w = None);
        });
        match spawned {
            Ok(handle) => {
                let mut threads = self.threads.lock();
                threads.retain(|h| !h.is_finished());
                threads.push(handle);
            }
            Err(_) => self.sleep.spare_failed(),
        }
    }

    /// Cancels every queued job that has not started.
    fn cancel_queued(&self) {
        let cancel_all = |steal: &dyn Fn() -> Steal<JobRef>| {
            loop {
                match steal() {
                    Steal::Success(job) => job.cancel(),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        };
        cancel_all(&|| self.injector.steal());
        for stealer in &self.stealers {
            cancel_all(&|| stealer.steal());
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.lifecycle.load(Ordering::SeqCst) == RUNNING
    }

    /// Stops outside submissions; optionally cancels what has not started.
    pub(super) fn close(&self, cancel_queued: bool) {
        let _ = self.lifecycle.compare_exchange(RUNNING, CLOSED, Ordering::SeqCst, Ordering::SeqCst);
        if cancel_queued {
            self.cancel_queued();
        }
        self.sleep.shutdown();
    }

    pub(super) fn terminate(&self) {
        self.lifecycle.store(TERMINATED, Ordering::SeqCst);
        self.cancel_queued();
        self.sleep.shutdown();
    }

    /// Joins every thread of the pool except the calling one.
    pub(super) fn join_all(&self) {
        let me = thread::current().id();
        loop {
            let handles = std::mem::take(&mut *self.threads.lock());
            if handles.is_empty() {
                return;
            }
            for handle in handles {
                if handle.thread().id() != me {
                    let _ = handle.join();
                }
            }
        }
    }
}
