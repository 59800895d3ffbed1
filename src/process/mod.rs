//! [`ProcessPoolExecutor`]: jobs run in pre-forked, supervised worker processes (`cfg(unix)`;
//! Linux first).
//!
//! What it is for: CPU-bound work that must not share memory or the parent's fate, with the
//! interface of the thread pool (the same [`Executor`] trait, the same [`Future`]s) and the
//! semantics of Python's `multiprocessing.Pool` and `concurrent.futures.ProcessPoolExecutor`,
//! without their failures: a worker that dies fails only the job it was running and is replaced
//! (nothing hangs, the pool is not left broken), overdue jobs are killed, and no worker outlives
//! the program, even one killed with `SIGKILL`.
//!
//! # How jobs reach a worker
//! A job travels as a *name* and its serialized input (serde, with postcard on the wire). The
//! name identifies the code: register functions with [`register_fn!`](crate::register_fn) and
//! job types with [`register_job!`](crate::register_job). Names are stable across builds, so
//! the same job could later run on another machine; a message naming code the worker does not
//! know fails that job with [`JobError::Unregistered`], never anything worse. Unregistered
//! closures fail the same way, with the closure's type name in the error.
//!
//! For large binary inputs use `serde_bytes::ByteBuf` (or `#[serde(with = "serde_bytes")]`):
//! the bytes are then copied as one block instead of item by item.
//!
//! # Start method
//! Workers are forked from a *fork server*: on first use, the program's own binary is started
//! again and, before `main` (a constructor in this crate), turns into a small single-threaded
//! server. Forking from it is safe however many threads the program runs; forking the program
//! itself is not (a lock held by another thread at the fork stays held in the child). Nothing
//! has to be added to `main`; it works the same in `cargo test`, examples and doc-tests.
//! Workers show as `stealpool-w0`, `stealpool-w1`, ... in `ps` and `top`.
//!
//! # Windows and order
//! Each worker is sent a few tasks ahead (its *window*) so that short jobs do not wait for a
//! round trip; the window shrinks to one when jobs are long, so that queued work does not wait
//! behind a busy worker while another is idle. A job counts as running once it is in a
//! worker's window (as in Python, where a job is running once it is in the call queue).
//!
//! # Examples
//! ```
//! use stealpool::{Executor, ProcessPoolExecutor};
//!
//! fn collatz_len(mut n: u64) -> u32 {
//!     let mut steps = 0;
//!     while n != 1 {
//!         n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
//!         steps += 1;
//!     }
//!     steps
//! }
//! stealpool::register_fn!(collatz_len);
//!
//! let pool = ProcessPoolExecutor::new(2).unwrap();
//! let lens: Vec<u32> = pool.map(collatz_len, 1..=10u64).unwrap().map(Result::unwrap).collect();
//! assert_eq!(lens, [0, 1, 7, 2, 5, 8, 16, 3, 19, 6]);
//! ```

mod child;
#[cfg(test)]
mod fuzz;
mod pool;
pub(crate) mod protocol;
pub(crate) mod registry;
mod slot;
mod worker;
mod zygote;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BuildError, JobError, JoinError, SubmitError};
use crate::executor::{Executor, Submit};
use crate::future::{Cell, Core, Ending, Future};
use crate::ipc as wire;
use crate::job::{Apply, Batch, Call, Star};

pub use self::child::{Process, ProcessBuilder};
use self::pool::{Config, Pool, Sink, Task};
use self::protocol::{Mode, Status};
pub use self::registry::RemoteJob;

/// A pool of worker processes, pre-forked and supervised: Python's `ProcessPoolExecutor` and
/// `multiprocessing.Pool` for Rust. See the [module docs](self) for how it works.
///
/// Jobs are registered functions ([`apply_async`](Executor::apply_async),
/// [`map`](Executor::map) and its relatives) and registered job types
/// ([`submit`](ProcessPoolExecutor::submit)). Dropping the pool waits for queued jobs and the
/// workers, like leaving Python's `with` block; [`terminate`](Executor::terminate) stops at
/// once.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use stealpool::{Executor, JobError, ProcessPoolBuilder};
///
/// fn slow(ms: u64) -> u64 {
///     std::thread::sleep(Duration::from_millis(ms));
///     ms
/// }
/// stealpool::register_fn!(slow);
///
/// let pool = ProcessPoolBuilder::new().workers(1).task_timeout(Duration::from_millis(200)).build().unwrap();
/// assert_eq!(pool.apply_async(slow, 1).unwrap().result(), Ok(1));
/// let late = pool.apply_async(slow, 60_000).unwrap().result().unwrap_err();
/// assert!(matches!(late, JobError::TimedOut { .. }));
/// // the overdue worker was killed and replaced; the pool goes on
/// assert_eq!(pool.apply_async(slow, 2).unwrap().result(), Ok(2));
/// ```
pub struct ProcessPoolExecutor {
    pool: Arc<Pool>,
}

impl ProcessPoolExecutor {
    /// A pool of `workers` processes (0 means the number of CPUs), with default settings.
    ///
    /// # Errors
    /// [`BuildError`] if the fork server or a worker could not be started.
    pub fn new(workers: usize) -> Result<Self, BuildError> {
        ProcessPoolBuilder::new().workers(workers).build()
    }

    /// A builder with every setting.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::new()
    }

    /// Submits a registered job type (see [`register_job!`](crate::register_job)).
    ///
    /// The job is serialized here; if that fails, the returned future holds
    /// [`JobError::Serialization`].
    ///
    /// # Errors
    /// [`SubmitError`], handing the job back, if the pool is shut down.
    pub fn submit<J: RemoteJob>(&self, job: J) -> Result<Future<J::Output>, SubmitError<J>> {
        self.submit_with_timeout(job, self.pool.default_limit())
    }

    /// [`submit`](ProcessPoolExecutor::submit) with a time limit for this job (`None`: no
    /// limit, whatever the pool's default). An overdue job's worker is killed and replaced and
    /// its future fails with [`JobError::TimedOut`].
    ///
    /// # Errors
    /// [`SubmitError`], handing the job back, if the pool is shut down.
    pub fn submit_with_timeout<J: RemoteJob>(
        &self,
        job: J,
        limit: Option<Duration>,
    ) -> Result<Future<J::Output>, SubmitError<J>> {
        self.send(job, Ok(J::NAME), Mode::One, |job, frame| protocol::append(job, frame), decode_one, limit)
    }

    /// The process ids of the current workers.
    ///
    /// # Examples
    /// ```
    /// let pool = stealpool::ProcessPoolExecutor::new(2).unwrap();
    /// assert_eq!(pool.worker_pids().len(), 2);
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pool.worker_pids()
    }

    /// The process id of the fork server new workers are forked from (shared by every pool of
    /// this process; if it dies, the next worker comes from a new one, with a new pid).
    pub fn fork_server_pid(&self) -> u32 {
        self.pool.fork_server_pid()
    }

    /// Encodes and queues one task.
    fn send<J, T>(
        &self,
        job: J,
        code: Result<&'static str, &'static str>,
        mode: Mode,
        encode: impl FnOnce(&J, Vec<u8>) -> postcard::Result<Vec<u8>>,
        decode: fn(Status, &[u8]) -> Result<T, JobError>,
        limit: Option<Duration>,
    ) -> Result<Future<T>, SubmitError<J>>
    where
        T: Send + 'static,
    {
        if !self.pool.is_open() {
            return Err(self.refused(job));
        }
        let code = match code {
            Ok(name) => name,
            Err(type_name) => return Ok(Future::ready(Err(JobError::Unregistered { name: type_name.to_owned() }))),
        };
        let id = self.pool.next_task_id();
        let frame = match encode(&job, protocol::task_frame(id, mode, code, 64)) {
            Ok(f) => f,
            Err(e) => return Ok(Future::ready(Err(JobError::Serialization { message: e.to_string() }))),
        };
        if frame.len() > wire::MAX_FRAME {
            let message =
                format!("the input takes {} bytes, more than the {} a task may carry", frame.len(), wire::MAX_FRAME);
            return Ok(Future::ready(Err(JobError::Serialization { message })));
        }
        let cell = Arc::new(ProcCell { core: Core::new(), decode, pool: Arc::downgrade(&self.pool), id });
        let task = Task { id, frame: Arc::new(frame), sink: cell.clone(), limit, started: false };
        match self.pool.submit(task) {
            Ok(()) => Ok(Future::from_cell(cell)),
            Err(_) => Err(self.refused(job)),
        }
    }

    /// The refusal of `job` by a pool that no longer takes work: says why if it broke.
    fn refused<J>(&self, job: J) -> SubmitError<J> {
        match self.pool.broken_reason() {
            Some(reason) => SubmitError::broken(job, reason),
            None => SubmitError::shutdown(job),
        }
    }
}

/// The name of the registered function `F`, or its type name if it is not registered.
fn fn_code<F: 'static>() -> Result<&'static str, &'static str> {
    registry::name_of_fn::<F>().ok_or(std::any::type_name::<F>())
}

fn decode_one<T: DeserializeOwned>(status: Status, body: &[u8]) -> Result<T, JobError> {
    match status {
        Status::Ok => postcard::from_bytes(body).map_err(|e| JobError::Serialization { message: e.to_string() }),
        other => Err(failure(other, body)),
    }
}

fn decode_many<R: DeserializeOwned>(status: Status, body: &[u8]) -> Result<Vec<Result<R, JobError>>, JobError> {
    let items: Vec<Result<R, String>> = decode_one(status, body)?;
    Ok(items.into_iter().map(|r| r.map_err(|message| JobError::Panicked { message })).collect())
}

fn failure(status: Status, body: &[u8]) -> JobError {
    let text = String::from_utf8_lossy(body).into_owned();
    match status {
        Status::Panicked => JobError::Panicked { message: text },
        Status::Unregistered => JobError::Unregistered { name: text },
        Status::BadInput => JobError::Serialization { message: format!("in the worker, reading the input: {text}") },
        Status::BadOutput | Status::Ok => {
            JobError::Serialization { message: format!("in the worker, writing the result: {text}") }
        }
    }
}

/// A process-pool job's future: its core, how to read its result, and the way back to the
/// pool for a forced cancel.
struct ProcCell<T> {
    core: Core<T>,
    decode: fn(Status, &[u8]) -> Result<T, JobError>,
    pool: Weak<Pool>,
    id: u64,
}

impl<T: Send> Cell<T> for ProcCell<T> {
    fn core(&self) -> &Core<T> {
        &self.core
    }

    fn force_cancel(&self) -> bool {
        if self.core.cancel() {
            return true;
        }
        if self.core.finish_if_unfinished(Err(JobError::Cancelled)) {
            if let Some(pool) = self.pool.upgrade() {
                pool.force_cancel(self.id);
            }
            return true;
        }
        self.core.ending() == Some(Ending::Cancelled)
    }
}

impl<T: Send> Sink for ProcCell<T> {
    fn start(&self) -> bool {
        self.core.try_start()
    }

    fn deliver(&self, status: Status, body: &[u8]) {
        // The result's `Deserialize` is user code: a panic in it fails this future only (it
        // runs on the pool's reply reader, which must go on).
        let outcome = crate::unwind::catch(|| (self.decode)(status, body)).unwrap_or_else(|e| {
            let message = match e {
                JobError::Panicked { message } => message,
                other => other.to_string(),
            };
            Err(JobError::Serialization { message: format!("reading the result panicked: {message}") })
        });
        self.core.finish_if_unfinished(outcome);
    }

    fn fail(&self, error: JobError) {
        self.core.finish_if_unfinished(Err(error));
    }
}

impl Executor for ProcessPoolExecutor {
    fn max_workers(&self) -> usize {
        self.pool.max_workers()
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.pool.close(cancel_futures);
        if wait {
            self.pool.join();
        }
    }

    fn close(&self) {
        self.pool.close(false);
    }

    fn join(&self) -> Result<(), JoinError> {
        if self.pool.is_open() {
            return Err(JoinError);
        }
        self.pool.join();
        Ok(())
    }

    /// Stops at once: queued jobs are cancelled and every worker is killed, so running jobs end
    /// with [`JobError::Cancelled`].
    fn terminate(&self) {
        self.pool.terminate();
    }

    fn is_shutdown(&self) -> bool {
        self.pool.is_shutdown()
    }
}

impl<J: RemoteJob> Submit<J> for ProcessPoolExecutor {
    fn submit(&self, job: J) -> Result<Future<J::Output>, SubmitError<J>> {
        ProcessPoolExecutor::submit(self, job)
    }
}

/// `apply_async(f, args)` with a registered function of one argument.
impl<F, A, R> Submit<Call<F, A>> for ProcessPoolExecutor
where
    F: Fn(A) -> R + 'static,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    fn submit(&self, call: Call<F, A>) -> Result<Future<R>, SubmitError<Call<F, A>>> {
        let limit = self.pool.default_limit();
        self.send(call, fn_code::<F>(), Mode::One, |c, frame| protocol::append(&c.args, frame), decode_one, limit)
    }
}

/// One chunk of `map` / `imap` / `imap_unordered` with a registered function of one argument.
impl<F, A, R> Submit<Batch<F, A>> for ProcessPoolExecutor
where
    F: Fn(A) -> R + 'static,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    fn submit(&self, batch: Batch<F, A>) -> Result<Future<Vec<Result<R, JobError>>>, SubmitError<Batch<F, A>>> {
        let limit = self.pool.default_limit();
        self.send(batch, fn_code::<F>(), Mode::Many, |b, frame| protocol::append(&b.items, frame), decode_many, limit)
    }
}

/// One chunk of `starmap` with a registered function of two to four arguments.
impl<F, A, R> Submit<Batch<Star<F>, A>> for ProcessPoolExecutor
where
    Star<F>: Apply<A, Output = R>,
    F: 'static,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    fn submit(
        &self,
        batch: Batch<Star<F>, A>,
    ) -> Result<Future<Vec<Result<R, JobError>>>, SubmitError<Batch<Star<F>, A>>> {
        let limit = self.pool.default_limit();
        self.send(batch, fn_code::<F>(), Mode::Many, |b, frame| protocol::append(&b.items, frame), decode_many, limit)
    }
}

impl Drop for ProcessPoolExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.pool.max_workers())
            .field("worker_pids", &self.pool.worker_pids())
            .field("is_shutdown", &self.pool.is_shutdown())
            .finish()
    }
}

/// Settings for a [`ProcessPoolExecutor`], with by-value setters and a fallible
/// [`build`](ProcessPoolBuilder::build).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use stealpool::ProcessPoolBuilder;
///
/// fn setup() {}
/// stealpool::register_fn!(setup);
///
/// let pool = ProcessPoolBuilder::new()
///     .workers(2)
///     .max_tasks_per_child(1000)
///     .task_timeout(Duration::from_secs(60))
///     .initializer(setup)
///     .build()
///     .unwrap();
/// assert_eq!(pool.worker_pids().len(), 2);
/// ```
#[derive(Clone)]
pub struct ProcessPoolBuilder {
    workers: usize,
    max_tasks_per_child: Option<u64>,
    task_timeout: Option<Duration>,
    initializer: Option<Result<&'static str, &'static str>>,
    window: usize,
    name_prefix: String,
}

impl ProcessPoolBuilder {
    /// Default settings: one worker per CPU, no task limit, no time limit, no initializer.
    pub fn new() -> Self {
        ProcessPoolBuilder {
            workers: 0,
            max_tasks_per_child: None,
            task_timeout: None,
            initializer: None,
            window: 16,
            name_prefix: "stealpool-w".into(),
        }
    }

    /// Number of worker processes; 0 (the default) means the number of CPUs.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Replace a worker after it has run this many tasks (Python's `maxtasksperchild`).
    /// Default: never. A chunk of a `map` counts as one task.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = (n > 0).then_some(n);
        self
    }

    /// A time limit for every task: a task still running after `limit` has its worker killed
    /// (and replaced), and its future fails with [`JobError::TimedOut`]. Default: none.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// A registered function (see [`register_fn!`](crate::register_fn)) that every worker runs
    /// once before its first task. If it panics, [`build`](ProcessPoolBuilder::build) fails (or,
    /// for a replacement worker, the pool stops with [`JobError::Broken`]) rather than
    /// respawning workers forever.
    pub fn initializer<F: Fn() + 'static>(mut self, f: F) -> Self {
        let _ = f;
        self.initializer = Some(fn_code::<F>());
        self
    }

    /// The most tasks sent ahead to one worker (default 16; the pool uses fewer when tasks are
    /// long). 1 disables sending ahead.
    pub fn window(mut self, tasks: usize) -> Self {
        self.window = tasks.max(1);
        self
    }

    /// The process name prefix of the workers, shown by `ps` and `top` (default
    /// `"stealpool-w"`; Linux keeps 15 bytes of a process name).
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Starts the fork server (once per process) and the workers, and waits until every worker
    /// is ready (its initializer has run).
    ///
    /// # Errors
    /// [`BuildError`] if the initializer is not registered or fails, or if processes cannot be
    /// started.
    pub fn build(self) -> Result<ProcessPoolExecutor, BuildError> {
        let initializer = match self.initializer {
            None => None,
            Some(Ok(name)) => Some(name),
            Some(Err(type_name)) => {
                return Err(BuildError::process(format!(
                    "the initializer `{type_name}` is not registered: add `stealpool::register_fn!(...)` next to it"
                )));
            }
        };
        let config = Config {
            workers: if self.workers == 0 { num_cpus::get().max(1) } else { self.workers },
            max_tasks_per_child: self.max_tasks_per_child,
            task_timeout: self.task_timeout,
            initializer,
            max_window: self.window,
            name_prefix: self.name_prefix,
        };
        Ok(ProcessPoolExecutor { pool: Pool::start(config)? })
    }
}

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ProcessPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolBuilder")
            .field("workers", &self.workers)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("task_timeout", &self.task_timeout)
            .field("initializer", &self.initializer.map(|r| r.unwrap_or_else(|t| t)))
            .field("window", &self.window)
            .field("name_prefix", &self.name_prefix)
            .finish()
    }
}
