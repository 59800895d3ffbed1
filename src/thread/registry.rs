//! The shared heart of a [`ThreadPoolExecutor`](super::ThreadPoolExecutor): the queues, the
//! worker threads' main loops, and the blocking region that lets a worker block on a future
//! without starving the pool. The per-job cells are in `job_cell.rs`. (Just over 500 lines with
//! its crash test at the end.)
//!
//! Queues: jobs submitted from outside the pool go to the global injector, and jobs submitted
//! from inside it go to the submitting worker's own LIFO deque (fork-join locality). An idle
//! worker takes from its own deque, then from the injector, then steals the oldest job of another
//! worker.
//!
//! The global injector is two queues: a preallocated ring ([`ArrayQueue`]) used while the
//! overflow queue ([`Injector`]) is empty, and the `Injector` for bursts that fill the ring. An
//! `Injector` allocates a block per 63 jobs on the submitting thread and frees it on the worker
//! that empties it; with glibc's allocator those cross-thread frees contend for the submitter's
//! arena lock on every block, which measured as most of the cost of tiny jobs. The ring never
//! allocates. Once the overflow queue is in use, new jobs go there too until it drains, so the
//! ring's jobs are always the older ones and nothing in the overflow queue can starve. Spare threads (see `SLEEP.md`) have no deque: they take from the injector and
//! steal, and what they submit goes to the injector.
//!
//! This module never lets a panic from user code unwind through it: jobs, initializers, and
//! the drops of what jobs captured or produced run under [`unwind::catch`]. Any other panic on
//! a pool thread is a bug in this crate, after which the pool's counts and queues cannot be
//! trusted: every pool thread holds an [`unwind::AbortOnPanic`] guard, so such a panic aborts
//! the process with a message instead of leaving a pool that silently lost a thread (and with
//! it, perhaps, a job whose future never resolves).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering, fence};
use std::thread::{self, JoinHandle};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::Backoff;
use parking_lot::Mutex;

use super::current;
use super::job_cell::{Boxed, JobCell, JobRef, cancel_job, run_job};
use super::sleep::{Sleep, SpareFate, Wake};
use crate::blocking::{self, BlockingRegion};
use crate::error::{BuildError, SubmitError};
use crate::future::Future;
use crate::job::Job;
use crate::unwind;

/// What a thread of a pool knows about itself.
struct WorkerCtx {
    /// `None` for spare threads.
    local: Option<Worker<JobRef>>,
}

thread_local! {
    static WORKER: RefCell<Option<WorkerCtx>> = const { RefCell::new(None) };
}

/// Makes this thread a thread of `registry` (with `local` as its deque) until `run` returns.
fn as_pool_thread(registry: &Arc<Registry>, local: Option<Worker<JobRef>>, run: impl FnOnce()) {
    WORKER.with_borrow_mut(|w| *w = Some(WorkerCtx { local }));
    current::set(registry.id(), registry.tag);
    let region = blocking::install(Arc::new(PoolThread(Arc::clone(registry))));
    run();
    drop(region);
    current::set(0, 0);
    WORKER.with_borrow_mut(|w| *w = None);
}

/// The blocking region of a pool thread: code about to block on it (a future's `result`, a
/// `wait`, a map) counts the thread as blocked, so that its pool keeps its parallelism (see
/// `SLEEP.md`).
struct PoolThread(Arc<Registry>);

impl BlockingRegion for PoolThread {
    fn enter(&self) {
        let registry = &self.0;
        if registry.sleep.enter_blocking(|| registry.has_work()) == Wake::SpawnSpare {
            registry.spawn_spare();
        }
    }

    fn exit(&self) {
        self.0.sleep.exit_blocking();
    }
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

/// How many spin hints a worker whose last job nobody waited for spins before it polls the
/// queues again (see `Registry::search`): 1.6 µs on this machine (25 ns a hint), in which a
/// submitter queues some ten tiny jobs, and half of what a waiting `result()` spins before it
/// parks. Measured on 100k tiny jobs (`COMPARE_PROFILE`), 64 to 256 hints were alike, 32 too
/// few to help.
const PATIENCE: u32 = 64;

/// Jobs the preallocated ring holds per worker before submissions overflow to the injector.
const RING_PER_WORKER: usize = 1024;

/// The ring grows with the workers up to this many (64 Ki jobs, 1 MiB): larger pools share it.
const RING_WORKERS_MAX: usize = 64;

pub(crate) struct Registry {
    ring: ArrayQueue<JobRef>,
    injector: Injector<JobRef>,
    stealers: Vec<Stealer<JobRef>>,
    sleep: Sleep,
    lifecycle: AtomicU8,
    config: ThreadConfig,
    threads: Mutex<Vec<JoinHandle<()>>>,
    spares_started: AtomicUsize,
    /// Set when a spare's initializer panicked: no more spares are started.
    spares_disabled: AtomicBool,
    /// This pool's number, carried by its job cells so that a waiting thread runs a job inline
    /// only on a thread of the job's own pool: 1, 2, ... in the order pools are built, and 0
    /// (no job runs inline; waits block, compensated) after 2^32 - 1 pools.
    tag: u32,
}

/// The tag of the next pool (see `Registry::tag`).
fn next_tag() -> u32 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    u32::try_from(NEXT.fetch_add(1, Ordering::Relaxed)).unwrap_or(0)
}

impl Registry {
    /// Creates the registry and starts `n` workers; returns once every initializer has run.
    pub(super) fn start(n: usize, config: ThreadConfig) -> Result<Arc<Registry>, BuildError> {
        let deques: Vec<Worker<JobRef>> = (0..n).map(|_| Worker::new_lifo()).collect();
        let registry = Arc::new(Registry {
            ring: ArrayQueue::new(RING_PER_WORKER * n.clamp(1, RING_WORKERS_MAX)),
            injector: Injector::new(),
            stealers: deques.iter().map(Worker::stealer).collect(),
            sleep: Sleep::new(n),
            lifecycle: AtomicU8::new(RUNNING),
            config,
            threads: Mutex::new(Vec::with_capacity(n)),
            spares_started: AtomicUsize::new(0),
            spares_disabled: AtomicBool::new(false),
            tag: next_tag(),
        });
        let (report, reports) = std::sync::mpsc::channel::<Result<(), String>>();
        let mut failure = None;
        for (index, deque) in deques.into_iter().enumerate() {
            let reg = Arc::clone(&registry);
            let report = report.clone();
            let spawned =
                registry.thread_builder(format!("{}-{index}", registry.config.name_prefix)).spawn(move || {
                    let _abort = unwind::AbortOnPanic("a worker thread");
                    let init = reg.run_initializer();
                    let failed = init.is_err();
                    let _ = report.send(init);
                    drop(report);
                    if failed {
                        reg.sleep.thread_exited();
                        return;
                    }
                    as_pool_thread(&reg, Some(deque), || reg.worker_loop(index));
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
    ///
    /// An outside submission that races with `close` is settled after the push: the submitter
    /// fences and re-reads the state, while an exiting worker reads the state and then (after a
    /// fence) the queues, so either the worker sees the job or the submitter sees the pool
    /// closed. In the latter case the submitter takes its job back by cancelling it, which
    /// succeeds unless a worker already started it (and then it runs to completion). Any
    /// submission that races with `terminate` is settled the same way against its
    /// `cancel_queued`: either that sees the job and cancels it, or the submitter sees the pool
    /// terminated and takes the job back, so no job is left in a queue nobody will empty.
    pub(super) fn submit<J>(self: &Arc<Self>, job: J) -> Result<Future<J::Output>, SubmitError<J>>
    where
        J: Job + Send + 'static,
        J::Output: Send + 'static,
    {
        let inside = current::registry() == Some(self.id());
        let refused = match self.lifecycle.load(Ordering::Acquire) {
            RUNNING => false,
            TERMINATED => true,
            _ => !inside, // closed: only jobs running on the pool may still submit
        };
        if refused {
            return Err(SubmitError::shutdown(job));
        }
        if !JobCell::<J>::FITS {
            return self.submit_cell(Boxed(Box::new(job)), inside).map_err(|b| SubmitError::shutdown(*b.0));
        }
        self.submit_cell(job, inside).map_err(SubmitError::shutdown)
    }

    /// Makes `job`'s cell and queues it; hands the job back if the pool closed meanwhile.
    #[inline]
    fn submit_cell<J>(self: &Arc<Self>, job: J, inside: bool) -> Result<Future<J::Output>, J>
    where
        J: Job + Send + 'static,
        J::Output: Send + 'static,
    {
        let (queued, future, cell) = JobCell::new(job, self.tag);
        self.push(queued, inside);
        let state = self.lifecycle.load(Ordering::SeqCst);
        if state != RUNNING && (state == TERMINATED || !inside) {
            // SAFETY: `future` holds a reference to the cell, so it is alive.
            if let Some(job) = unsafe { cell.as_ref() }.take_back() {
                return Err(job);
            }
        }
        Ok(future)
    }

    /// Queues `job`: on this thread's deque if `inside` (a thread of this pool) and it has one,
    /// else on the shared queue; then wakes a thread if needed.
    #[inline]
    fn push(self: &Arc<Self>, job: JobRef, inside: bool) {
        let job = if inside {
            WORKER.with_borrow(|w| match w.as_ref().and_then(|ctx| ctx.local.as_ref()) {
                Some(local) => {
                    local.push(job);
                    None
                }
                None => Some(job),
            })
        } else {
            Some(job)
        };
        if let Some(job) = job {
            let overflow = if self.injector.is_empty() { self.ring.push(job).err() } else { Some(job) };
            if let Some(job) = overflow {
                self.injector.push(job);
            }
        }
        // `notify_work` issues the `SeqCst` fence that `submit`'s re-check relies on.
        if self.sleep.notify_work() == Wake::SpawnSpare {
            self.spawn_spare();
        }
    }

    fn find_work(&self, local: Option<&Worker<JobRef>>, start: usize) -> Option<JobRef> {
        if let Some(job) = local.and_then(Worker::pop).or_else(|| self.ring.pop()) {
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
        !self.ring.is_empty() || !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    fn is_terminated(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == TERMINATED
    }

    /// Closed, and nothing is queued: an idle thread may exit. See `submit` for the race with
    /// a submission in flight.
    fn is_drained(&self) -> bool {
        if self.lifecycle.load(Ordering::SeqCst) == RUNNING {
            return false;
        }
        fence(Ordering::SeqCst);
        !self.has_work()
    }

    /// Looks for work, spinning briefly before giving up.
    ///
    /// Parking and waking costs a futex round trip on both sides, far more than a tiny job, so
    /// a thread that runs dry first spins and then yields (`Backoff::snooze`) for a few
    /// microseconds. Measured on 100k tiny jobs, longer yielding bought nothing.
    ///
    /// `patient`: nobody was waiting for the job this thread just ran, so its submitter is
    /// probably still submitting. Polling the queue again at once would then chase it job by
    /// job: each poll of the ring pulls the cache lines the submitter writes next (its tail,
    /// its next slot, the neighbouring job cell) over to this core, and the submitter's next
    /// push waits for them to come back. A patient thread that finds nothing first spins
    /// [`PATIENCE`] hints without touching shared memory, so the submitter queues a few jobs
    /// undisturbed and this thread then takes them in a row. A thread someone waits on (a
    /// `result()` of one job at a time) polls at once: its next job comes right after.
    fn search(&self, local: Option<&Worker<JobRef>>, start: usize, mut patient: bool) -> Option<JobRef> {
        let backoff = Backoff::new();
        loop {
            if let Some(job) = self.find_work(local, start) {
                return Some(job);
            }
            if patient {
                patient = false;
                for _ in 0..PATIENCE {
                    std::hint::spin_loop();
                }
                continue;
            }
            if backoff.is_completed() || self.is_terminated() {
                return None;
            }
            backoff.snooze();
        }
    }

    fn worker_loop(&self, index: usize) {
        let mut start = index;
        let mut patient = false;
        while !self.is_terminated() {
            let found = WORKER.with_borrow(|w| {
                let local = w.as_ref().and_then(|ctx| ctx.local.as_ref());
                self.search(local, start, patient)
            });
            patient = false;
            match found {
                Some(job) => patient = !run_job(job),
                None if self.is_drained() => break,
                None => self.sleep.sleep_worker(|| self.has_work()),
            }
            #[cfg(test)]
            tests::maybe_fail_internally();
            start = start.wrapping_add(1);
        }
        // After `terminate` the deque may still hold jobs (`cancel_queued` and the submitters
        // settle every race, but this costs nothing): cancel them rather than drop them unrun.
        WORKER.with_borrow(|w| {
            if let Some(local) = w.as_ref().and_then(|ctx| ctx.local.as_ref()) {
                while let Some(job) = local.pop() {
                    cancel_job(job);
                }
            }
        });
        self.sleep.thread_exited();
    }

    fn spare_loop(&self) {
        let mut start = 0;
        loop {
            if self.is_terminated() {
                self.sleep.thread_exited();
                return;
            }
            let fate = match self.search(None, start, false) {
                Some(job) => {
                    run_job(job);
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
            let _abort = unwind::AbortOnPanic("a spare thread");
            if reg.run_initializer().is_err() {
                reg.spares_disabled.store(true, Ordering::Release);
                reg.sleep.thread_exited();
                return;
            }
            as_pool_thread(&reg, None, || reg.spare_loop());
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
                    Steal::Success(job) => cancel_job(job),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        };
        while let Some(job) = self.ring.pop() {
            cancel_job(job);
        }
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
        // Pairs with the fence in `notify_work` after a push: see `submit`.
        fence(Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// Set by the child role below: the next worker to finish a job panics in the pool's own
    /// code, standing for a bug of this crate.
    static FAIL_INTERNALLY: AtomicBool = AtomicBool::new(false);

    pub(super) fn maybe_fail_internally() {
        if FAIL_INTERNALLY.load(Ordering::Relaxed) {
            panic!("injected internal failure");
        }
    }

    const CHILD_ENV: &str = "STEALPOOL_TEST_INTERNAL_PANIC_CHILD";

    /// The child role of `an_internal_panic_on_a_pool_thread_aborts_the_process`; without its
    /// environment variable it does nothing.
    #[test]
    fn internal_panic_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let pool = crate::ThreadPoolExecutor::new(1);
        FAIL_INTERNALLY.store(true, Ordering::SeqCst);
        assert_eq!(pool.submit(|| 1).unwrap().result(), Ok(1));
        // Dropping the pool joins its worker: a worker that died quietly would let it return,
        // and this test would pass; the guard aborts the process first.
        drop(pool);
    }

    #[cfg(unix)]
    #[test]
    fn an_internal_panic_on_a_pool_thread_aborts_the_process() {
        use std::os::unix::process::ExitStatusExt;

        let exe = std::env::current_exe().unwrap();
        // `ulimit -c 0`: the abort must not leave a core file behind.
        let out = std::process::Command::new("sh")
            .args(["-c", "ulimit -c 0; exec \"$0\" \"$@\""])
            .arg(exe)
            .args(["--exact", "thread::registry::tests::internal_panic_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(nix::libc::SIGABRT), "{:?}: {stderr}", out.status);
        assert!(stderr.contains("stealpool: internal error: a worker thread panicked"), "{stderr}");
    }
}
