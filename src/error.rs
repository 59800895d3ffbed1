//! The errors every backend shares (a job's outcome, `result*`, `submit`, `map`, `join`,
//! building a pool), one small type per operation, in the style of crossbeam-channel's `err.rs`:
//! a caller matches on exactly the failures that operation can have. Each module owns its own
//! errors beside its code: `process/error.rs`, `pipe/error.rs`, `manager/error.rs`.
//!
//! A little over 500 lines: each type's docs, `Display` and `is_*` helpers are short, and
//! splitting them further would scatter what every backend shares.
//!
//! This module must stay free of logic: it only names failures and prints them.

use std::fmt;
use std::time::Duration;

/// Why a job did not produce a value.
///
/// This is the error a [`Future`](crate::Future) resolves with. It corresponds to the exception
/// a `concurrent.futures.Future` would raise from `result()`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobError {
    /// The job panicked; the message is the panic payload if it was a string.
    ///
    /// The worker that ran the job survives and goes on with other jobs. A process pool's
    /// worker also reports where the panic happened and, when backtraces are enabled in the
    /// worker's environment, its backtrace (see [`panic_location`](JobError::panic_location)
    /// and [`panic_backtrace`](JobError::panic_backtrace)); a thread pool leaves `details`
    /// `None`.
    Panicked {
        /// The panic message (`"<non-string panic payload>"` if the payload was not a string).
        message: String,
        /// Where the panic happened and its backtrace, if the worker recorded them. Boxed, so
        /// that a `JobError` (in every job's outcome) stays 32 bytes.
        details: Option<Box<PanicDetails>>,
    },
    /// The job was cancelled before it started, by [`Future::cancel`](crate::Future::cancel),
    /// by `shutdown(_, cancel_futures = true)`, by `terminate()`, or because a `map` it belonged
    /// to stopped early.
    Cancelled,
    /// The outcome was already taken out of this future by an earlier call.
    ///
    /// The outcome of a job is moved out exactly once (it is not required to be `Clone`).
    AlreadyTaken,
    /// The worker process running the job died (killed by a signal, `abort()`, a segfault,
    /// `exit()`). Only the job it was running fails; the pool replaces the worker.
    WorkerDied {
        /// The process id of the worker.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// The job ran longer than its time limit; its worker process was killed and replaced.
    TimedOut {
        /// The limit it exceeded.
        limit: Duration,
    },
    /// The job's input or its result could not be serialized or deserialized for the trip
    /// between processes.
    Serialization {
        /// What the serializer reported.
        message: String,
    },
    /// The job names code that is not registered in the worker's binary (for a function:
    /// `stealpool::register_fn!`; for a job type: `stealpool::register_job!`).
    Unregistered {
        /// The name (or, for an unregistered function, the Rust type name) of the code.
        name: String,
    },
    /// The worker process running the job broke the pool's protocol (it wrote something to its
    /// reply channel that is not a well-formed reply: garbage, an impossible length, attached
    /// file descriptors, a reply to another task), or its slot said the job ended and no reply
    /// followed. The pool killed and replaced it; only the job it was running fails.
    ProtocolViolation {
        /// The process id of the worker.
        pid: u32,
        /// What was wrong with what it sent. (A `Box<str>`, not a `String`: it keeps
        /// `JobError`, held in every job's outcome, at 32 bytes.)
        reason: Box<str>,
    },
    /// The pool could not run the job because it cannot keep workers alive (for example the
    /// worker initializer fails); the pool has shut down.
    Broken {
        /// Why the pool broke.
        reason: String,
    },
    /// The [`Promise`](crate::Promise) of a [`Future::pending`](crate::Future::pending) was
    /// dropped without setting a result or an error, so none will ever come.
    Abandoned,
    /// (Distributed backend.) Every worker that took the job was lost while it held it (it died
    /// or stopped sending heartbeats), `max_retries + 1` times in all; the job is not run again.
    WorkersLost {
        /// The workers that held it, in order, each by its name, `host:pid:<random>`.
        workers: Box<[String]>,
    },
    /// (Distributed backend.) The job ran, but Redis refused to store its result (out of memory
    /// under `maxmemory` with `noeviction`, say: the result is too big for what Redis has left),
    /// every time its worker tried, for about a second and a half; this small answer was stored
    /// instead. The job is not run again.
    ResultRefused {
        /// The size of the result frame Redis refused.
        bytes: u64,
        /// The worker that ran it (`host:pid:<random>`) and what Redis said, as `worker NAME:
        /// REDIS ERROR` (one field, so that a `JobError` stays 32 bytes).
        reason: Box<str>,
    },
    /// (Distributed backend.) The job's outcome can no longer arrive: Redis stayed unreachable
    /// past the reconnection bound, or came back without the job (restarted without its data).
    Lost {
        /// What happened, with the Redis URL (its password hidden).
        reason: Box<str>,
    },
}

/// How a child process ended: an exit code, or the signal that killed it.
///
/// Python shows a signal as a negative exit code (`-9`); here the two cases are apart.
///
/// # Examples
/// ```
/// use stealpool::ExitStatus;
///
/// assert_eq!(ExitStatus::Signaled { signal: 9 }.to_string(), "killed by signal 9 (SIGKILL)");
/// assert_eq!(ExitStatus::Exited(3).code(), Some(3));
/// assert!(!ExitStatus::Exited(3).success());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExitStatus {
    /// The process called `exit` (or returned from `main`) with this code.
    Exited(i32),
    /// The process was killed by this signal number.
    Signaled {
        /// The signal number (9 for `SIGKILL`, 6 for `SIGABRT`, 11 for `SIGSEGV`, ...).
        signal: i32,
    },
    /// The exit status could not be learned (the process was reaped by someone else).
    Unknown,
}

impl ExitStatus {
    /// The exit code, if the process exited normally.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(*c),
            _ => None,
        }
    }

    /// The signal that killed the process, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Signaled { signal } => Some(*signal),
            _ => None,
        }
    }

    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exited with code {c}"),
            ExitStatus::Signaled { signal } => match signal_name(*signal) {
                Some(name) => write!(f, "killed by signal {signal} ({name})"),
                None => write!(f, "killed by signal {signal}"),
            },
            ExitStatus::Unknown => f.write_str("ended with an unknown status"),
        }
    }
}

/// The usual names of the Linux signals a worker is likely to die of.
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return None,
    })
}

/// Where a job panicked and the backtrace captured there, as its worker recorded them (see
/// [`JobError::panic_location`] and [`JobError::panic_backtrace`]).
///
/// # Examples
/// ```
/// use stealpool::PanicDetails;
///
/// let d = PanicDetails::new(Some("src/jobs.rs:12:5".into()), None);
/// assert_eq!(d.location.as_deref(), Some("src/jobs.rs:12:5"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PanicDetails {
    /// Where the panic happened, `file:line:col`, if known.
    pub location: Option<String>,
    /// The backtrace captured at the panic, if the worker captured one (cut at 64 KiB).
    pub backtrace: Option<String>,
}

impl PanicDetails {
    /// Details with this location and backtrace.
    pub fn new(location: Option<String>, backtrace: Option<String>) -> Self {
        PanicDetails { location, backtrace }
    }
}

impl JobError {
    /// Whether the job was cancelled rather than run.
    ///
    /// # Examples
    /// ```
    /// assert!(stealpool::JobError::Cancelled.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JobError::Cancelled)
    }

    /// Whether the job panicked.
    ///
    /// # Examples
    /// ```
    /// let e = stealpool::JobError::Panicked { message: "boom".into(), details: None };
    /// assert!(e.is_panic());
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self, JobError::Panicked { .. })
    }

    /// Where the job panicked (`file:line:col`), if the job panicked and its worker knew.
    ///
    /// A process pool's workers always record it; the thread pool does not (yet).
    ///
    /// # Examples
    /// ```
    /// use stealpool::{JobError, PanicDetails};
    ///
    /// let details = Some(Box::new(PanicDetails::new(Some("src/jobs.rs:12:5".into()), None)));
    /// let e = JobError::Panicked { message: "boom".into(), details };
    /// assert_eq!(e.panic_location(), Some("src/jobs.rs:12:5"));
    /// assert_eq!(e.to_string(), "job panicked at src/jobs.rs:12:5: boom");
    /// assert_eq!(JobError::Cancelled.panic_location(), None);
    /// ```
    pub fn panic_location(&self) -> Option<&str> {
        match self {
            JobError::Panicked { details: Some(d), .. } => d.location.as_deref(),
            _ => None,
        }
    }

    /// The backtrace captured where the job panicked, if the job panicked and its worker
    /// captured one: a process pool's worker does when `RUST_BACKTRACE` (or
    /// `RUST_LIB_BACKTRACE`) is set in its environment, as
    /// [`std::backtrace::Backtrace::capture`] decides. At most 64 KiB of text; a longer one is
    /// cut and ends with `[cut]`. Not part of the error's `Display`.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{JobError, PanicDetails};
    ///
    /// let details = Some(Box::new(PanicDetails::new(None, Some("0: main".into()))));
    /// let e = JobError::Panicked { message: "boom".into(), details };
    /// assert_eq!(e.panic_backtrace(), Some("0: main"));
    /// assert!(!e.to_string().contains("main"));
    /// ```
    pub fn panic_backtrace(&self) -> Option<&str> {
        match self {
            JobError::Panicked { details: Some(d), .. } => d.backtrace.as_deref(),
            _ => None,
        }
    }

    /// Whether the worker process running the job died.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{ExitStatus, JobError};
    /// let e = JobError::WorkerDied { pid: 42, status: ExitStatus::Signaled { signal: 9 } };
    /// assert!(e.is_worker_died());
    /// assert_eq!(e.to_string(), "worker process 42 died running the job: killed by signal 9 (SIGKILL)");
    /// ```
    pub fn is_worker_died(&self) -> bool {
        matches!(self, JobError::WorkerDied { .. })
    }

    /// Whether the job ran past its time limit.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, JobError::TimedOut { .. })
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Panicked { message, .. } => match self.panic_location() {
                Some(location) => write!(f, "job panicked at {location}: {message}"),
                None => write!(f, "job panicked: {message}"),
            },
            JobError::Cancelled => f.write_str("job was cancelled"),
            JobError::AlreadyTaken => f.write_str("the job's outcome was already taken"),
            JobError::WorkerDied { pid, status } => write!(f, "worker process {pid} died running the job: {status}"),
            JobError::TimedOut { limit } => {
                write!(f, "job exceeded its time limit of {limit:?}; its worker process was killed")
            }
            JobError::Serialization { message } => write!(f, "job input or result could not be serialized: {message}"),
            JobError::Unregistered { name } => write!(
                f,
                "`{name}` is not registered for worker processes: add `stealpool::register_fn!(...)` for a \
                 function or `stealpool::register_job!(...)` for a job type"
            ),
            JobError::ProtocolViolation { pid, reason } => {
                write!(f, "worker process {pid} broke the pool's protocol ({reason}); it was killed and replaced")
            }
            JobError::Broken { reason } => write!(f, "the process pool is broken: {reason}"),
            JobError::Abandoned => f.write_str("the promise was dropped without setting a result"),
            JobError::WorkersLost { workers } => write!(
                f,
                "the job was lost with each of the {} workers that held it ({}); it is not retried again",
                workers.len(),
                workers.join(", ")
            ),
            JobError::ResultRefused { bytes, reason } => {
                write!(f, "Redis refused to store the job's result ({bytes} bytes) from {reason}")
            }
            JobError::Lost { reason } => write!(f, "the job's outcome can no longer arrive: {reason}"),
        }
    }
}

impl std::error::Error for JobError {}

/// The error of [`Future::try_result`](crate::Future::try_result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryResultError {
    /// The job has not finished yet.
    NotReady,
    /// The job finished without a value.
    Failed(JobError),
}

impl TryResultError {
    /// Whether the job simply has not finished yet.
    pub fn is_not_ready(&self) -> bool {
        matches!(self, TryResultError::NotReady)
    }
}

impl fmt::Display for TryResultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryResultError::NotReady => f.write_str("job has not finished yet"),
            TryResultError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TryResultError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TryResultError::NotReady => None,
            TryResultError::Failed(e) => Some(e),
        }
    }
}

/// The error of [`Future::result_timeout`](crate::Future::result_timeout) and
/// [`Future::result_deadline`](crate::Future::result_deadline).
///
/// A timeout leaves the job running (or queued): only the wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultTimeoutError {
    /// The time ran out before the job finished.
    Timeout,
    /// The job finished without a value.
    Failed(JobError),
}

impl ResultTimeoutError {
    /// Whether the wait timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ResultTimeoutError::Timeout)
    }
}

impl fmt::Display for ResultTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResultTimeoutError::Timeout => f.write_str("timed out waiting for the job"),
            ResultTimeoutError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ResultTimeoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResultTimeoutError::Timeout => None,
            ResultTimeoutError::Failed(e) => Some(e),
        }
    }
}

/// A submission that the executor refused; the job is handed back.
///
/// The only reason today is that the executor was shut down (`shutdown`, `close` or
/// `terminate`), like the `RuntimeError` of Python's `submit` after `shutdown`.
///
/// # Examples
/// ```
/// use stealpool::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::new(1);
/// pool.shutdown(true, false);
/// let err = pool.submit(|| 7).unwrap_err();
/// let job = err.into_inner();
/// assert_eq!(job(), 7);
/// ```
pub struct SubmitError<J> {
    job: J,
    /// Why the pool broke, if it shut down because it broke.
    broken: Option<String>,
}

impl<J> SubmitError<J> {
    pub(crate) fn shutdown(job: J) -> Self {
        SubmitError { job, broken: None }
    }

    #[cfg_attr(not(feature = "process"), allow(dead_code))] // used by the process pool only
    pub(crate) fn broken(job: J, reason: String) -> Self {
        SubmitError { job, broken: Some(reason) }
    }

    /// Why the pool refused the job, if it shut down because it broke (a process pool that
    /// cannot keep workers alive, or one of whose internal threads failed); `None` after an
    /// ordinary shutdown.
    pub fn broken_reason(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The job that was not submitted.
    pub fn into_inner(self) -> J {
        self.job
    }

    /// Whether the executor refused the job because it was shut down (always true today).
    pub fn is_shutdown(&self) -> bool {
        true
    }
}

impl<J> fmt::Debug for SubmitError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = self.broken.as_deref().unwrap_or("executor is shut down");
        f.debug_struct("SubmitError").field("reason", &reason).finish_non_exhaustive()
    }
}

impl<J> fmt::Display for SubmitError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.broken {
            Some(reason) => write!(f, "cannot submit a job: the process pool is broken: {reason}"),
            None => f.write_str("cannot submit a job: the executor is shut down"),
        }
    }
}

impl<J> std::error::Error for SubmitError<J> {}

/// The executor was shut down, so the operation could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownError;

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the executor is shut down")
    }
}

impl std::error::Error for ShutdownError {}

/// An item of a `map` that produced no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    pub(crate) index: usize,
    pub(crate) kind: MapErrorKind,
}

/// What went wrong with a `map` item.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapErrorKind {
    /// The job for this item failed.
    Failed(JobError),
    /// The overall deadline of the `map` passed before this item's result was ready.
    Timeout,
    /// The executor was shut down before this item could be submitted.
    Shutdown,
}

impl MapError {
    /// The position of the item in the input.
    pub fn index(&self) -> usize {
        self.index
    }

    /// What went wrong.
    pub fn kind(&self) -> &MapErrorKind {
        &self.kind
    }

    /// Whether the `map` ran out of time at this item.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, MapErrorKind::Timeout)
    }

    /// The job's error, if the job itself failed.
    pub fn job_error(&self) -> Option<&JobError> {
        match &self.kind {
            MapErrorKind::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            MapErrorKind::Failed(e) => write!(f, "map item {}: {e}", self.index),
            MapErrorKind::Timeout => write!(f, "map item {}: deadline passed", self.index),
            MapErrorKind::Shutdown => write!(f, "map item {}: executor shut down", self.index),
        }
    }
}

impl std::error::Error for MapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            MapErrorKind::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// The time given to [`as_completed`](crate::as_completed) ran out.
///
/// Displayed as CPython words it: `2 (of 4) futures unfinished`.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use stealpool::{as_completed, Future, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(1);
/// let (tx, rx) = std::sync::mpsc::channel::<()>();
/// let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
/// let blocker = pool.submit(move || { started_tx.send(()).unwrap(); rx.recv().unwrap() }).unwrap();
/// started_rx.recv().unwrap(); // the only worker is busy: the next job stays queued
/// let futures = [Future::ready(Ok(())), pool.submit(|| ()).unwrap()];
/// let mut it = as_completed(&futures, Some(Duration::from_millis(10)));
/// assert!(it.next().unwrap().is_ok());
/// let err = it.next().unwrap().unwrap_err();
/// assert_eq!((err.unfinished(), err.total()), (1, 2));
/// assert_eq!(err.to_string(), "1 (of 2) futures unfinished");
/// assert!(err.waited() >= Duration::from_millis(10));
/// assert!(futures[1].cancel()); // the caller still holds the unfinished one
/// tx.send(()).unwrap();
/// blocker.result().unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutError {
    pub(crate) waited: Duration,
    pub(crate) unfinished: usize,
    pub(crate) total: usize,
}

impl TimeoutError {
    /// How many of the futures had not finished when the time ran out.
    pub fn unfinished(&self) -> usize {
        self.unfinished
    }

    /// How many futures were given.
    pub fn total(&self) -> usize {
        self.total
    }

    /// How long the iterator had been waiting (since [`as_completed`](crate::as_completed)).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (of {}) futures unfinished", self.unfinished, self.total)
    }
}

impl std::error::Error for TimeoutError {}

/// `join` was called on an executor that is still accepting work.
///
/// Like `multiprocessing.Pool.join`, joining is only valid after `close` or `terminate`
/// (or `shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinError;

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("join called on a running executor: call close() or terminate() first")
    }
}

impl std::error::Error for JoinError {}

/// Building a pool failed.
///
/// Opaque on purpose (like rayon's `ThreadPoolBuildError`); [`source`](std::error::Error::source)
/// gives the underlying I/O error when there is one.
#[derive(Debug)]
pub struct BuildError {
    kind: BuildErrorKind,
}

#[derive(Debug)]
enum BuildErrorKind {
    Spawn(std::io::Error),
    Initializer(String),
    #[cfg_attr(not(feature = "process"), allow(dead_code))] // used by the process pool only
    Process(String),
}

impl BuildError {
    pub(crate) fn spawn(e: std::io::Error) -> Self {
        BuildError { kind: BuildErrorKind::Spawn(e) }
    }

    pub(crate) fn initializer(message: String) -> Self {
        BuildError { kind: BuildErrorKind::Initializer(message) }
    }

    #[cfg_attr(not(feature = "process"), allow(dead_code))] // used by the process pool only
    pub(crate) fn process(message: String) -> Self {
        BuildError { kind: BuildErrorKind::Process(message) }
    }

    /// Whether the worker initializer panicked.
    pub fn is_initializer_failure(&self) -> bool {
        matches!(self.kind, BuildErrorKind::Initializer(_))
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BuildErrorKind::Spawn(e) => write!(f, "could not start a worker thread: {e}"),
            BuildErrorKind::Initializer(m) => write!(f, "worker initializer panicked: {m}"),
            BuildErrorKind::Process(m) => write!(f, "could not start worker processes: {m}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            BuildErrorKind::Spawn(e) => Some(e),
            BuildErrorKind::Initializer(_) | BuildErrorKind::Process(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every job's outcome holds a `JobError`: the panic details are boxed so that it stays as
    /// small as its largest common variant (issue 17's bar: a job costs no more than before).
    #[test]
    fn a_job_error_stays_32_bytes() {
        assert!(std::mem::size_of::<super::JobError>() <= 32, "{}", std::mem::size_of::<super::JobError>());
    }
}
