//! [`ThreadPoolExecutor`]: a work-stealing thread pool with `concurrent.futures` semantics.
//!
//! See `registry.rs` for the queues and worker loops and `SLEEP.md` for how idle workers sleep
//! and how a worker blocked on a future is compensated for.

mod current;
mod job_cell;
mod registry;
mod sleep;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use self::registry::{Registry, ThreadConfig};
use crate::error::{BuildError, JoinError, SubmitError};
use crate::executor::{Executor, Submit};
use crate::future::Future;
use crate::job::Job;

/// A pool of worker threads that run submitted jobs, with work stealing.
///
/// The Rust counterpart of Python's `concurrent.futures.ThreadPoolExecutor` (and of
/// `multiprocessing.pool.ThreadPool`): [`submit`](ThreadPoolExecutor::submit) returns a
/// [`Future`]; the [`Executor`] trait adds `map`, `imap`, `imap_unordered`, `apply_async` and the
/// lifecycle (`shutdown`, `close`/`join`, `terminate`).
///
/// Jobs submitted from outside go to a global queue; jobs submitted by a job running on a worker
/// go to that worker's own deque, and idle workers steal. Workers take outside jobs in small
/// batches, so jobs start roughly, not strictly, in submission order (Python's pool is strictly
/// FIFO); an idle worker never waits while queued work sits behind a busy one, since it steals. Idle workers sleep without using CPU.
/// A job may submit more jobs and wait for them, even on a pool of one worker (see [`Future`]).
///
/// **Dropping the pool** behaves like leaving Python's `with ThreadPoolExecutor() as ex:` block:
/// it is [`shutdown(wait = true, cancel_futures = false)`](Executor::shutdown), so it blocks
/// until every submitted job has run. Call [`terminate`](Executor::terminate) or
/// `shutdown(_, true)` first to drop queued work instead.
///
/// # Examples
/// ```
/// use stealpool::{Executor, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::builder().num_workers(4).name_prefix("crunch").build().unwrap();
/// let futures: Vec<_> = (0..8u64).map(|i| pool.submit(move || i * i).unwrap()).collect();
/// let squares: Vec<u64> = futures.into_iter().map(|f| f.result().unwrap()).collect();
/// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49]);
/// pool.shutdown(true, false);
/// ```
pub struct ThreadPoolExecutor {
    registry: Arc<Registry>,
}

impl ThreadPoolExecutor {
    /// A pool of `num_workers` threads (0 means the number of CPUs), with default settings.
    ///
    /// Both pools follow the rule of `std::thread::spawn` and `thread::Builder::spawn`: `new`
    /// panics, [`builder`](ThreadPoolExecutor::builder)`().build()` returns the error.
    ///
    /// # Panics
    /// If the operating system refuses to start the threads; use
    /// [`builder`](ThreadPoolExecutor::builder) to get that as an error instead.
    pub fn new(num_workers: usize) -> Self {
        match ThreadPoolBuilder::new().num_workers(num_workers).build() {
            Ok(pool) => pool,
            Err(e) => panic!("stealpool: cannot start the thread pool: {e}"),
        }
    }

    /// A builder to configure the pool.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::new()
    }

    /// Schedules `job` (any `FnOnce() -> R + Send + 'static`, or any [`Job`]) and returns the
    /// [`Future`] of its output. Same as [`Submit::submit`], without importing the trait.
    ///
    /// # Errors
    /// [`SubmitError`], handing the job back, after `shutdown`, `close` or `terminate`. A job
    /// running on this pool may still submit more jobs after `shutdown`/`close` (so that
    /// fork-join work already started can finish), but not after `terminate`.
    ///
    /// # Examples
    /// ```
    /// let pool = stealpool::ThreadPoolExecutor::new(2);
    /// let f = pool.submit(|| (1..=10).sum::<u32>()).unwrap();
    /// assert_eq!(f.result(), Ok(55));
    /// ```
    pub fn submit<J>(&self, job: J) -> Result<Future<J::Output>, SubmitError<J>>
    where
        J: Job + Send + 'static,
        J::Output: Send + 'static,
    {
        self.registry.submit(job)
    }

    /// Shuts the pool down: see [`Executor::shutdown`]. Inherent so no import is needed.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.registry.close(cancel_futures);
        if wait {
            self.registry.join_all();
        }
    }
}

impl Executor for ThreadPoolExecutor {
    fn max_workers(&self) -> usize {
        self.registry.num_workers()
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        ThreadPoolExecutor::shutdown(self, wait, cancel_futures);
    }

    fn close(&self) {
        self.registry.close(false);
    }

    fn join(&self) -> Result<(), JoinError> {
        if self.registry.is_running() {
            return Err(JoinError);
        }
        self.registry.join_all();
        Ok(())
    }

    /// Cancels queued jobs and stops the workers after their current job. Threads cannot be
    /// interrupted safely, so running jobs finish and their futures get their results.
    fn terminate(&self) {
        self.registry.terminate();
    }

    fn is_shutdown(&self) -> bool {
        !self.registry.is_running()
    }
}

impl<J> Submit<J> for ThreadPoolExecutor
where
    J: Job + Send + 'static,
    J::Output: Send + 'static,
{
    fn submit(&self, job: J) -> Result<Future<J::Output>, SubmitError<J>> {
        self.registry.submit(job)
    }
}

impl Drop for ThreadPoolExecutor {
    fn drop(&mut self) {
        ThreadPoolExecutor::shutdown(self, true, false);
    }
}

impl fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolExecutor")
            .field("num_workers", &self.registry.num_workers())
            .field("running", &self.registry.is_running())
            .finish()
    }
}

/// Configures and builds a [`ThreadPoolExecutor`].
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use stealpool::{Executor, ThreadPoolBuilder};
///
/// let started = Arc::new(AtomicUsize::new(0));
/// let counter = Arc::clone(&started);
/// let pool = ThreadPoolBuilder::new()
///     .num_workers(3)
///     .name_prefix("io")
///     .stack_size(256 * 1024)
///     .initializer(move || { counter.fetch_add(1, Ordering::SeqCst); })
///     .build()
///     .unwrap();
/// assert_eq!(pool.max_workers(), 3);
/// assert_eq!(started.load(Ordering::SeqCst), 3); // build() returns after every initializer ran
/// ```
pub struct ThreadPoolBuilder {
    num_workers: usize,
    /// `None`: `stealpool-N`, N the pool's number (see [`ThreadPoolBuilder::new`]).
    name_prefix: Option<String>,
    stack_size: Option<usize>,
    initializer: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl ThreadPoolBuilder {
    /// The largest number of workers a pool may have (32,768): far more threads than any
    /// machine runs usefully, and small enough that the pool's per-worker queues always fit in
    /// memory. A larger `num_workers` is an error from `build`, not an attempt.
    ///
    /// # Examples
    /// ```
    /// use stealpool::ThreadPoolBuilder;
    ///
    /// let too_many = ThreadPoolBuilder::new().num_workers(ThreadPoolBuilder::MAX_WORKERS + 1);
    /// assert!(too_many.build().is_err());
    /// ```
    pub const MAX_WORKERS: usize = 1 << 15;

    /// The defaults: one worker per CPU, threads named `stealpool-N-M` (worker `M` of the
    /// `N`th pool this process built, counted from 0, as Python's `ThreadPoolExecutor-N_M`), the
    /// platform's stack size, no initializer.
    ///
    /// # Examples
    /// ```
    /// use stealpool::ThreadPoolExecutor;
    ///
    /// let name = |pool: &ThreadPoolExecutor| {
    ///     pool.submit(|| std::thread::current().name().map(str::to_owned)).unwrap().result().unwrap().unwrap()
    /// };
    /// let (a, b) = (ThreadPoolExecutor::new(1), ThreadPoolExecutor::new(1));
    /// let (a, b) = (name(&a), name(&b));
    /// assert!(a.starts_with("stealpool-") && a.ends_with("-0"), "{a}");
    /// assert_ne!(a, b, "two pools' workers are told apart by the pool number");
    /// ```
    pub fn new() -> Self {
        ThreadPoolBuilder { num_workers: 0, name_prefix: None, stack_size: None, initializer: None }
    }

    /// The number of worker threads. 0 (the default) means the number of CPUs (`num_cpus::get`).
    /// At most [`MAX_WORKERS`](ThreadPoolBuilder::MAX_WORKERS); more makes
    /// [`build`](ThreadPoolBuilder::build) fail.
    pub fn num_workers(mut self, n: usize) -> Self {
        self.num_workers = n;
        self
    }

    /// The prefix of the worker threads' names: workers are `PREFIX-0`, `PREFIX-1`, ... and
    /// spare threads (started while workers are blocked) `PREFIX-spare-N`. Default:
    /// `stealpool-N`, N the pool's number in this process (Linux shows 15 bytes of a name).
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }

    /// The stack size of each worker thread, in bytes. Default: the platform's default.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// A function run once on each worker thread before it takes any job (also on each spare
    /// thread). If it panics in a worker, [`build`](ThreadPoolBuilder::build) fails; if it
    /// panics in a spare, no further spares are started.
    pub fn initializer(mut self, init: impl Fn() + Send + Sync + 'static) -> Self {
        self.initializer = Some(Arc::new(init));
        self
    }

    /// Starts the threads; returns once every worker has run its initializer.
    ///
    /// # Errors
    /// [`BuildError`] if a thread could not be started (also when `num_workers` is above
    /// [`MAX_WORKERS`](ThreadPoolBuilder::MAX_WORKERS), or the stack size is one the system
    /// refuses) or an initializer panicked; the threads already started are stopped.
    pub fn build(self) -> Result<ThreadPoolExecutor, BuildError> {
        let n = if self.num_workers == 0 { num_cpus::get().max(1) } else { self.num_workers };
        if n > Self::MAX_WORKERS {
            let message = format!("{n} workers asked for, at most {} allowed", Self::MAX_WORKERS);
            return Err(BuildError::spawn(std::io::Error::new(std::io::ErrorKind::InvalidInput, message)));
        }
        // Numbered only when the default name is used, like Python's counter of executors.
        static POOLS: AtomicUsize = AtomicUsize::new(0);
        let name_prefix =
            self.name_prefix.unwrap_or_else(|| format!("stealpool-{}", POOLS.fetch_add(1, Ordering::Relaxed)));
        let config = ThreadConfig { name_prefix, stack_size: self.stack_size, initializer: self.initializer };
        Ok(ThreadPoolExecutor { registry: Registry::start(n, config)? })
    }
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder::new()
    }
}

impl fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("num_workers", &self.num_workers)
            .field("name_prefix", &self.name_prefix)
            .field("stack_size", &self.stack_size)
            .field("initializer", &self.initializer.as_ref().map(|_| "Fn()"))
            .finish()
    }
}
