//! [`ProcessPoolExecutor`]: jobs run in pre-forked, supervised worker processes (`cfg(unix)`;
//! Linux first).
//!
//! (Over 500 lines because about 200 of them are these module docs: how jobs reach a worker,
//! what a worker process sees, supervision, fork safety.)
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
//! know fails that job with [`JobError::Unregistered`], never anything worse. A closure given
//! to [`submit`](ProcessPoolExecutor::submit) is a compile-time error (it is no
//! [`RemoteJob`]). One given to `apply_async` or `map` is refused when the program is built if
//! it captures anything (its type has a size, a function's has none):
//!
//! ```compile_fail
//! # use stealpool::{Executor, ProcessPoolExecutor};
//! let pool = ProcessPoolExecutor::new(1);
//! let factor = 3;
//! let _ = pool.map(move |x: u64| x * factor, 0..10u64); // error: registered functions only
//! ```
//!
//! A closure that captures nothing cannot be told apart from a function by its type on stable
//! Rust, so it compiles and fails its jobs with [`JobError::Unregistered`], naming the closure's
//! type. A function whose arguments or result are not serde types is refused by
//! [`register_fn!`](crate::register_fn) at compile time (see [`RemoteFn`]).
//!
//! For large binary inputs use `serde_bytes::ByteBuf` (or `#[serde(with = "serde_bytes")]`):
//! the bytes are then copied as one block instead of item by item.
//!
//! # Start method
//! Workers are forked from a *fork server*: on first use, the program's own binary is started
//! again and, before `main` (a constructor in this crate), turns into a small single-threaded
//! server. Forking from it is safe however many threads the program runs; forking the program
//! itself is not (a lock held by another thread at the fork stays held in the child; see
//! [below](#a-child-the-program-forks-itself) for what such a child may do with a pool). Nothing
//! has to be added to `main`; it works the same in `cargo test`, examples and doc-tests.
//! Workers show as `stealpool-w0`, `stealpool-w1`, ... in `ps` and `top`.
//!
//! # What a worker process sees
//! A worker (and a [`Process`] child) is a fork of the fork server, which is a fresh start of
//! the program's binary that stopped before `main`. So, exactly:
//!
//! - **`main` never runs** in it, nor anything `main` calls: state set up there (a logger, a
//!   global configured from the command line, a `static` filled at run time) is absent. Use the
//!   pool's [`initializer`](ProcessPoolBuilder::initializer) for per-worker set-up, or
//!   [`initializer_with`](ProcessPoolBuilder::initializer_with) to hand it what `main` learned
//!   (Python's `initargs`).
//! - **Statics** are as a fresh program has them after its constructors (the fork server's
//!   start), never the parent's values at the time of the pool.
//! - **argv** is the parent's `argv[0]` only (`std::env::args()` yields one item); the binary
//!   is the very file the parent runs (`/proc/self/exe`), even if its path was replaced since.
//! - **Environment variables and current directory** are the parent's as they are when the
//!   pool is built ([`ProcessPoolBuilder::build`]; for a `Process`, at
//!   [`spawn`](ProcessBuilder::spawn)), changed by the builders' `env`, `envs`, `env_remove`,
//!   `env_clear` and `current_dir`. A pool built after `std::env::set_var` or
//!   `std::env::set_current_dir` sees the new values; an older pool keeps its own (also in the
//!   workers it starts later to replace others). At most [`MAX_ENVIRONMENT_BYTES`]; an
//!   inherited entry whose name `setenv` refuses (such as `=x=1`) is left out.
//! - **Threads**: one. None of the parent's threads, locks or thread-locals exist there.
//! - **Signals**: every disposition is the default, except `SIGPIPE`, ignored as after Rust's
//!   own start-up; the signal mask is empty. A worker dies (`SIGKILL`) when the fork server
//!   does, which dies when the parent does (`PR_SET_PDEATHSIG`); a `Process` built with
//!   [`die_with_parent(false)`](ProcessBuilder::die_with_parent) does not.
//! - **Descriptors**: standard input is `/dev/null`; standard output and error are the
//!   parent's as they were when the fork server started (a later `dup2` onto fd 1 in the parent
//!   does not reach workers); besides those, a worker holds only its own two sockets to the
//!   pool (its status page is mapped, its descriptor closed); a `Process`, its arguments'
//!   channel and what the arguments carry, such as [`pipe`](crate::pipe) ends. Nothing else the parent had open is inherited: every other
//!   descriptor is closed at the fork server's start.
//! - **Everything else the kernel keeps per process** (user and group ids, resource limits,
//!   umask, scheduling priority, session and process group, control terminal) is the fork
//!   server's, that is, the parent's at the moment the first pool (or `Process`) of the parent
//!   started it. The parent process id is the fork server's; the process name (`ps`, `top`) is
//!   the pool's [`name_prefix`](ProcessPoolBuilder::name_prefix) and the worker's index.
//!
//! # A child the program forks itself
//! Pools, [`Process`] handles and the fork server belong to the process that made them. A
//! child the program forks itself (`fork(2)`, not a worker or a `Process`) inherits copies of
//! them whose threads do not exist there and whose workers and children are not its own. In
//! such a child:
//!
//! - **An inherited pool refuses work, at once.** [`submit`](ProcessPoolExecutor::submit),
//!   `apply_async`, `map` and the rest fail without creating a future (a [`SubmitError`] whose
//!   [`broken_reason`](SubmitError::broken_reason) is "this pool belongs to process N; a forked
//!   child must build its own"); [`is_shutdown`](Executor::is_shutdown) is `true`,
//!   [`worker_pids`](ProcessPoolExecutor::worker_pids) is empty and
//!   [`fork_server_pid`](ProcessPoolExecutor::fork_server_pid) is 0. `shutdown`, `close`,
//!   `terminate`, `join` and dropping it return at once and do nothing to the parent's workers.
//! - **An inherited [`Process`]** is not the child's child: `kill` and `terminate` do nothing;
//!   `join`, `join_timeout` and `exit_status` return at once with the status the parent had
//!   already seen, else [`ExitStatus::Unknown`](crate::ExitStatus::Unknown).
//! - **New pools and `Process`es work**: the child starts a fork server of its own on first
//!   use, stopped when the child exits, as in any process.
//! - **Not guarded**: a future of the parent's pool still pending at the fork never resolves in
//!   the child (nothing there completes it): do not wait on one. The child holds copies of the
//!   parent's descriptors: the pool shuts its task sockets down, so the parent's shutdown does
//!   not wait for the child, but the parent's exit may wait up to 2 s for its fork server, whose
//!   request channel the child holds too (the server still ends with the parent, by its death
//!   signal).
//! - **Locks**: the pool and the handles check whose they are before they take any lock, but
//!   the child is only as safe as the locks the parent's other threads held at the fork (the
//!   allocator's, a logger's, the program's own); fork a threaded program only to `exec` or to
//!   run code that takes no such lock.
//!
//! # Stopping
//! [`shutdown`](Executor::shutdown) and [`close`](Executor::close) let workers finish and
//! retire. [`terminate`](Executor::terminate) stops now, as CPython's `terminate_workers`:
//! queued jobs are cancelled, each worker is sent `SIGTERM` (so a job's handler for it runs)
//! and, if still there after [`terminate_grace`](ProcessPoolBuilder::terminate_grace)
//! (default 1 s), `SIGKILL`. [`ProcessPoolExecutor::kill`] is CPython's `kill_workers`:
//! `SIGKILL` at once.
//!
//! # Windows and order
//! Each worker is sent a few tasks ahead (its *window*) so that short jobs do not wait for a
//! round trip; the window shrinks to one when jobs are long, so that queued work does not wait
//! behind a busy worker while another is idle. A job counts as running once it is in a
//! worker's window (as in Python, where a job is running once it is in the call queue).
//!
//! # A panic in a worker
//! A job that panics fails its future with [`JobError::Panicked`], and the worker goes on.
//! Where Python hands back the exception with the worker's formatted traceback attached
//! (`_RemoteTraceback` as the `__cause__`), the error here carries the panic's location
//! ([`JobError::panic_location`], also in its `Display`) and, when the worker's environment
//! enables backtraces (`RUST_BACKTRACE=1`, set with [`ProcessPoolBuilder::env`] or inherited),
//! the backtrace text ([`JobError::panic_backtrace`], cut at 64 KiB). The worker's panic hook
//! still prints the message to its stderr.
//!
//! ```
//! use stealpool::{Executor, ProcessPoolBuilder};
//!
//! fn checked_div(pair: (u32, u32)) -> u32 {
//!     pair.0.checked_div(pair.1).expect("division by zero")
//! }
//! stealpool::register_fn!(checked_div);
//!
//! let pool = ProcessPoolBuilder::new().num_workers(1).env("RUST_BACKTRACE", "1").build().unwrap();
//! let err = pool.apply_async(checked_div, (1, 0)).unwrap().result().unwrap_err();
//! let location = err.panic_location().expect("a worker always reports where");
//! assert_eq!(err.to_string(), format!("job panicked at {location}: division by zero"));
//! assert!(err.panic_backtrace().is_some(), "RUST_BACKTRACE=1 in the worker");
//! ```
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
//! let pool = ProcessPoolExecutor::new(2);
//! let lens: Vec<u32> = pool.map(collatz_len, 1..=10u64).unwrap().map(Result::unwrap).collect();
//! assert_eq!(lens, [0, 1, 7, 2, 5, 8, 16, 3, 19, 6]);
//! ```

mod builder;
mod child;
pub(crate) mod encoded;
mod error;
mod fork_server;
#[cfg(test)]
mod fuzz;
mod pool;
pub(crate) mod protocol;
pub(crate) mod registration;
mod slot;
mod worker;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{JobError, JoinError, SubmitError};
use crate::executor::Executor;
use crate::future::{Cell, Core, Ending, Future};
use crate::ipc;

pub use self::builder::ProcessPoolBuilder;
pub use self::child::{Process, ProcessBuilder};
use self::encoded::EncodedSubmit;
pub use self::error::ProcessError;
pub use self::fork_server::MAX_ENVIRONMENT_BYTES;
use self::pool::{Pool, QueuedTask, Sink};
use self::protocol::{InputLayout, PanicReport, Status};
pub use self::registration::{RemoteFn, RemoteJob};

/// A pool of worker processes, pre-forked and supervised: Python's `ProcessPoolExecutor` and
/// `multiprocessing.Pool` for Rust. See the [module docs](self) for how it works.
///
/// Jobs are registered functions ([`apply_async`](Executor::apply_async),
/// [`map`](Executor::map) and its relatives) and registered job types
/// ([`submit`](ProcessPoolExecutor::submit)). Dropping the pool waits for queued jobs and the
/// workers, like leaving Python's `with` block; [`terminate`](Executor::terminate) stops at
/// once.
///
/// A pool belongs to the process that built it: in a child the program forks, it refuses work
/// and its shutdown does nothing (see [the module docs](self#a-child-the-program-forks-itself)).
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
/// let pool = ProcessPoolBuilder::new().num_workers(1).task_timeout(Duration::from_millis(200)).build().unwrap();
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
    /// A pool of `num_workers` processes (0 means the number of CPUs), with default settings.
    ///
    /// Both pools follow the rule of `std::thread::spawn` and `thread::Builder::spawn`: `new`
    /// panics, [`builder`](ProcessPoolExecutor::builder)`().build()` returns the error.
    ///
    /// # Panics
    /// If the fork server or a worker could not be started (the [`BuildError`](crate::BuildError) is in the
    /// message); use [`builder`](ProcessPoolExecutor::builder) to get it as an error instead.
    pub fn new(num_workers: usize) -> Self {
        match ProcessPoolBuilder::new().num_workers(num_workers).build() {
            Ok(pool) => pool,
            Err(e) => panic!("stealpool: cannot start the process pool: {e}"),
        }
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
        self.send(job, Ok(J::NAME), InputLayout::One, |job, frame| protocol::append(job, frame), decode_one, limit)
    }

    /// Like [`terminate`](Executor::terminate), without the grace period: every worker is sent
    /// `SIGKILL` at once (CPython's `ProcessPoolExecutor.kill_workers`; `terminate` is its
    /// `terminate_workers`, with a `SIGKILL` after the grace).
    ///
    /// # Examples
    /// ```
    /// use stealpool::{Executor, JobError, ProcessPoolExecutor};
    ///
    /// fn nap(ms: u64) {
    ///     std::thread::sleep(std::time::Duration::from_millis(ms));
    /// }
    /// stealpool::register_fn!(nap);
    ///
    /// let pool = ProcessPoolExecutor::new(1);
    /// let long = pool.apply_async(nap, 60_000).unwrap();
    /// pool.kill();
    /// pool.join().unwrap();
    /// assert_eq!(long.result(), Err(JobError::Cancelled));
    /// assert!(pool.worker_pids().is_empty());
    /// ```
    pub fn kill(&self) {
        self.pool.terminate(Duration::ZERO);
    }

    /// The process ids of the current workers (none in a child the program forked).
    ///
    /// # Examples
    /// ```
    /// let pool = stealpool::ProcessPoolExecutor::new(2);
    /// assert_eq!(pool.worker_pids().len(), 2);
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pool.worker_pids()
    }

    /// The process id of the fork server new workers are forked from (shared by every pool of
    /// this process; if it dies, the next worker comes from a new one, with a new pid). 0 in a
    /// child the program forked, where this pool starts no workers.
    pub fn fork_server_pid(&self) -> u32 {
        self.pool.fork_server_pid()
    }

    /// Queues a task already encoded elsewhere: the name of the code, the layout and the
    /// postcard input as they came from another machine (the distributed worker's side). The
    /// future holds the worker's status and reply body, undecoded; a worker's death, a time
    /// limit or a cancel are its errors, as for any task. A `limit` of `None` is the pool's
    /// default.
    #[cfg(feature = "redis")]
    pub(crate) fn submit_encoded(
        &self,
        code: &str,
        mode: InputLayout,
        input: &[u8],
        limit: Option<Duration>,
    ) -> Result<Future<(Status, Vec<u8>)>, SubmitError<()>> {
        fn raw(status: Status, body: &[u8]) -> Result<(Status, Vec<u8>), JobError> {
            Ok((status, body.to_vec()))
        }
        let encode = |(): &(), mut frame: Vec<u8>| {
            frame.extend_from_slice(input);
            Ok(frame)
        };
        self.send((), Ok(code), mode, encode, raw, limit.or(self.pool.default_limit()))
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
///
/// A registered function is a function item, a type of size zero. A closure that captures
/// anything (or a function pointer) has a size, so it is refused when the program is built, by
/// a constant evaluated for each `F` (a post-monomorphization error: `cargo build` reports it,
/// `cargo check` may not).
pub(crate) fn fn_code<F: 'static>() -> Result<&'static str, &'static str> {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "the process pool runs registered functions only: a closure that captures values (or a function \
             pointer) cannot be sent to a worker process; register a `fn` with `stealpool::register_fn!(f)` and pass \
             `f`, with the captured values as its arguments"
        )
    };
    registration::name_of_fn::<F>().ok_or(std::any::type_name::<F>())
}

pub(crate) fn decode_one<T: DeserializeOwned>(status: Status, body: &[u8]) -> Result<T, JobError> {
    match status {
        Status::Ok => postcard::from_bytes(body).map_err(|e| JobError::Serialization { message: e.to_string() }),
        other => Err(failure(other, body)),
    }
}

pub(crate) fn decode_many<R: DeserializeOwned>(
    status: Status,
    body: &[u8],
) -> Result<Vec<Result<R, JobError>>, JobError> {
    let items: Vec<Result<R, PanicReport>> = decode_one(status, body)?;
    Ok(items.into_iter().map(|r| r.map_err(PanicReport::into_error)).collect())
}

fn failure(status: Status, body: &[u8]) -> JobError {
    let text = String::from_utf8_lossy(body).into_owned();
    match status {
        Status::Panicked => PanicReport::decode(body).into_error(),
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
                JobError::Panicked { message, .. } => message,
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

    /// Stops now: queued jobs are cancelled and every worker is stopped, so running jobs end
    /// with [`JobError::Cancelled`]. Each worker is first sent `SIGTERM` (a job's handler for it
    /// runs); those still there after the grace period
    /// ([`ProcessPoolBuilder::terminate_grace`], default 1 s) are sent `SIGKILL`. Returns once
    /// every worker has ended or been sent `SIGKILL`; [`ProcessPoolExecutor::kill`] skips the
    /// grace. Called from one of the pool's own threads (a done callback), it does not wait:
    /// every worker is sent `SIGKILL` at once.
    fn terminate(&self) {
        self.pool.terminate(self.pool.terminate_grace());
    }

    fn is_shutdown(&self) -> bool {
        self.pool.is_shutdown()
    }
}

impl EncodedSubmit for ProcessPoolExecutor {
    fn default_limit(&self) -> Option<Duration> {
        self.pool.default_limit()
    }

    /// Encodes and queues one task.
    fn send<J, T>(
        &self,
        job: J,
        code: Result<&str, &'static str>,
        layout: InputLayout,
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
        let buffers = self.pool.buffers();
        let start = protocol::task_frame_in(buffers.take(64 + code.len() + 24), id, layout, code);
        let frame = match encode(&job, start) {
            Ok(f) => f,
            Err(e) => return Ok(Future::ready(Err(JobError::Serialization { message: e.to_string() }))),
        };
        if frame.len() > ipc::MAX_FRAME {
            let message =
                format!("the input takes {} bytes, more than the {} a task may carry", frame.len(), ipc::MAX_FRAME);
            return Ok(Future::ready(Err(JobError::Serialization { message })));
        }
        let cell = Arc::new(ProcCell { core: Core::new(), decode, pool: Arc::downgrade(&self.pool), id });
        let task = QueuedTask {
            id,
            frame: Arc::new(ipc::Frame::returning(frame, buffers)),
            sink: cell.clone(),
            limit,
            started: false,
        };
        match self.pool.submit(task) {
            Ok(()) => Ok(Future::from_cell(cell)),
            Err(_) => Err(self.refused(job)),
        }
    }
}

encoded::encoded_submit_impls!(ProcessPoolExecutor);

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
