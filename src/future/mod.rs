//! [`Future<T>`]: the handle to one submitted job, with the behaviour of Python's
//! `concurrent.futures.Future`, plus [`wait`] and [`as_completed`] over many of them.
//!
//! | Python                         | stealpool                                   |
//! |--------------------------------|---------------------------------------------|
//! | `f.result()`                   | [`Future::result`]                          |
//! | `f.result(timeout=t)`          | [`Future::result_timeout`] / [`Future::result_deadline`] |
//! | (none)                         | [`Future::try_result`]                      |
//! | `f.exception()`                | [`Future::error`] (after [`Future::wait`])  |
//! | `f.cancel()`                   | [`Future::cancel`]                          |
//! | `f.cancelled()` / `running()` / `done()` | [`Future::is_cancelled`] / [`Future::is_running`] / [`Future::is_done`] |
//! | `f.add_done_callback(fn)`      | [`Future::add_done_callback`]               |
//! | `await asyncio.wrap_future(f)` | `f.await` (any async runtime)               |
//! | `wait(fs, timeout, return_when)` | [`wait`] (`fs` owned or borrowed: `wait(&fs, ..)`, see [`Waitable`]) |
//! | `Future()` + `f.set_result(v)` / `f.set_exception(e)` | [`Future::pending`] + [`Promise::set_result`] / [`Promise::set_error`] |
//! | `f.set_running_or_notify_cancel()` | [`Promise::set_running_or_notify_cancel`] |
//! | `InvalidStateError` (set twice) | [`AlreadyCompleted`] (holds the value back) |
//! | (asyncio `shield`, many readers of one outcome) | [`Future::shared`] → [`SharedFuture`]: clones, `result()` clones the outcome |
//! | `as_completed(fs, timeout)`    | [`as_completed`] (borrowed `&fs`: the caller keeps the unfinished ones after a timeout) |
//! | `TimeoutError("2 (of 4) futures unfinished")` | [`TimeoutError`](crate::TimeoutError) with [`unfinished`](crate::TimeoutError::unfinished) / [`total`](crate::TimeoutError::total) |
//!
//! The outcome of a job (`Result<T, JobError>`) is moved out of the future exactly once, by
//! value: `T` need not be `Clone`. After that, the `result*` calls return
//! [`JobError::AlreadyTaken`].

mod completion;
mod core;
mod promise;
mod shared;
mod wait;

use std::fmt;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::blocking::block_in_place;
use crate::deadline;
use crate::error::{JobError, ResultTimeoutError, TryResultError};

pub(crate) use self::completion::CompletionQueue;
pub(crate) use self::core::{Callback, Cell, Core, Ending, HANDLE_REF, Head, Outcome, PENDING, QUEUE_REF};
pub use self::promise::{AlreadyCompleted, Promise};
pub use self::shared::SharedFuture;
pub use self::wait::{AsCompleted, DoneAndNotDone, ReturnWhen, Waitable, as_completed, wait};

/// The handle to a submitted job and, once it finishes, to its outcome.
///
/// Returned by [`Submit::submit`](crate::Submit::submit) and the other ways of starting work.
/// Dropping a `Future` does not cancel its job (as in Python); call [`cancel`](Future::cancel)
/// for that.
///
/// A worker thread of a [`ThreadPoolExecutor`](crate::ThreadPoolExecutor) may wait on futures
/// of its own pool without deadlocking it, even with one worker: a job that has not started
/// runs inline on the waiting thread, and while the waiter blocks on a job that is already
/// running, the pool starts a spare thread if queued work would otherwise have no thread.
/// The waiting thread itself never picks up unrelated jobs, so a job that holds a lock while it
/// waits cannot find that lock taken by another job on its own stack.
///
/// Only the waits without a deadline ([`result`](Future::result), [`wait`](Future::wait), and
/// the timed ones given a timeout too large to mean anything) run the job inline: a job run
/// inline cannot be left when the time is up. The timed waits (`result_timeout`,
/// `result_deadline`, `wait_timeout`) block instead, counted as blocked, so the job runs on
/// another thread of the pool (a spare one if every worker is taken) and the wait returns at
/// its deadline whatever the job does.
///
/// `Future<T>` implements [`std::future::Future`], so async code can `.await` it on any runtime;
/// awaiting does not block a thread.
///
/// # Examples
/// ```
/// use stealpool::ThreadPoolExecutor;
/// use std::time::Duration;
///
/// let pool = ThreadPoolExecutor::new(2);
/// let mut fut = pool.submit(|| 6 * 7).unwrap();
/// assert_eq!(fut.result_timeout(Duration::from_secs(10)), Ok(42));
/// assert!(fut.is_done());
/// ```
pub struct Future<T> {
    /// The cell, referenced as its [`Cell::releaser`] says: through an `Arc` (promises, the
    /// process pool) or counted by the thread pool's job cell itself. One pointer-sized
    /// handle plus the vtable: a held job costs its cell and these 16 bytes.
    cell: NonNull<dyn Cell<T>>,
}

// SAFETY: the handle is a shared reference to a `dyn Cell<T>`, which is `Send + Sync` by the
// trait's bounds: exactly what made the `Arc<dyn Cell<T>>` this replaces `Send` and `Sync`.
unsafe impl<T> Send for Future<T> {}
// SAFETY: as for `Send`.
unsafe impl<T> Sync for Future<T> {}

impl<T> Drop for Future<T> {
    fn drop(&mut self) {
        // SAFETY: the cell is alive while this handle holds its reference; the releaser is the
        // one that reference was made for, called once, after the borrow for it ended.
        unsafe {
            let release = self.cell.as_ref().releaser();
            release(self.cell);
        }
    }
}

impl<T: Send + 'static> Future<T> {
    pub(crate) fn from_cell(cell: Arc<dyn Cell<T>>) -> Self {
        // SAFETY: `Arc::into_raw` never returns null; the default releaser undoes it.
        Future { cell: unsafe { NonNull::new_unchecked(Arc::into_raw(cell).cast_mut()) } }
    }

    /// A handle to a cell that counts its own references.
    ///
    /// # Safety
    /// `cell` is alive and this handle owns one of its references, which the cell's
    /// [`Cell::releaser`] drops.
    pub(crate) unsafe fn from_counted_cell(cell: NonNull<dyn Cell<T>>) -> Self {
        Future { cell }
    }

    /// A future that is already finished with `outcome`.
    ///
    /// Useful in code generic over executors and in tests.
    ///
    /// # Examples
    /// ```
    /// let f = stealpool::Future::ready(Ok::<_, stealpool::JobError>(5));
    /// assert!(f.is_done());
    /// assert_eq!(f.result(), Ok(5));
    /// ```
    pub fn ready(outcome: Result<T, JobError>) -> Self {
        let core = Core::new();
        if core.try_start() {
            core.complete(outcome);
        }
        Future::from_cell(Arc::new(core))
    }
}

impl<T> Future<T> {
    fn cell(&self) -> &dyn Cell<T> {
        // SAFETY: the cell is alive while this handle holds its reference.
        unsafe { self.cell.as_ref() }
    }

    fn core(&self) -> &Core<T> {
        self.cell().core()
    }

    /// Blocks until the job has finished, then moves its outcome out.
    ///
    /// # Errors
    /// The [`JobError`] the job ended with: a panic, cancellation, or (later backends) the loss
    /// of its worker.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{JobError, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(1);
    /// assert_eq!(pool.submit(|| "done").unwrap().result(), Ok("done"));
    /// let err = pool.submit(|| -> u8 { panic!("bad input") }).unwrap().result().unwrap_err();
    /// assert_eq!(err, JobError::Panicked { message: "bad input".into(), details: None });
    /// ```
    pub fn result(mut self) -> Result<T, JobError> {
        match self.result_inner(None) {
            Ok(v) => Ok(v),
            Err(ResultTimeoutError::Failed(e)) => Err(e),
            // Without a deadline the wait cannot time out.
            Err(ResultTimeoutError::Timeout) => Err(JobError::AlreadyTaken),
        }
    }

    /// Moves the outcome out if the job has finished; never blocks.
    ///
    /// # Errors
    /// [`TryResultError::NotReady`] while the job is pending or running, otherwise
    /// [`TryResultError::Failed`] with the job's error.
    ///
    /// # Examples
    /// ```
    /// let mut f = stealpool::Future::ready(Ok::<_, stealpool::JobError>(1));
    /// assert_eq!(f.try_result(), Ok(1));
    /// ```
    pub fn try_result(&mut self) -> Result<T, TryResultError> {
        match self.core().try_take() {
            None => Err(TryResultError::NotReady),
            Some(o) => o.map_err(TryResultError::Failed),
        }
    }

    /// Blocks for at most `timeout` for the job to finish, then moves its outcome out.
    ///
    /// A timeout leaves the job running (or queued); call again to keep waiting. Called from a
    /// thread of the job's pool, it does not run a queued job inline (see [`Future`]), so it
    /// returns at its deadline; a `timeout` too large to add to now (`Duration::MAX`) means no
    /// deadline, as in [`result`](Future::result).
    ///
    /// # Errors
    /// [`ResultTimeoutError::Timeout`] if the time ran out, otherwise
    /// [`ResultTimeoutError::Failed`] with the job's error.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use stealpool::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(1);
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let mut f = pool.submit(move || rx.recv().is_ok()).unwrap();
    /// assert!(f.result_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// tx.send(()).unwrap(); // the job was still running; let it finish
    /// assert_eq!(f.result_timeout(Duration::from_secs(30)), Ok(true));
    /// ```
    pub fn result_timeout(&mut self, timeout: Duration) -> Result<T, ResultTimeoutError> {
        self.result_inner(deadline::after(timeout))
    }

    /// Like [`result_timeout`](Future::result_timeout), with a point in time instead of a span.
    ///
    /// # Errors
    /// As [`result_timeout`](Future::result_timeout).
    pub fn result_deadline(&mut self, deadline: Instant) -> Result<T, ResultTimeoutError> {
        self.result_inner(Some(deadline))
    }

    pub(crate) fn result_inner(&mut self, deadline: Option<Instant>) -> Result<T, ResultTimeoutError> {
        if let Some(o) = self.core().try_take() {
            return o.map_err(ResultTimeoutError::Failed);
        }
        self.wait_inner(deadline);
        match self.core().try_take() {
            Some(o) => o.map_err(ResultTimeoutError::Failed),
            None => Err(ResultTimeoutError::Timeout),
        }
    }

    /// Blocks until the job is done or the deadline passes; returns whether it is done.
    ///
    /// Without a deadline a job that has not started runs inline here if this is a thread of
    /// its pool (what sequential code would do, so no deadlock). With one it must not: the
    /// wait could not end before the job does. It blocks, compensated (see `SLEEP.md`), so the
    /// queued job still gets a thread while this one waits.
    fn wait_inner(&self, deadline: Option<Instant>) -> bool {
        match deadline {
            None if self.cell().run_inline() => return true,
            None => {}
            // Already past: a poll, which never blocks, so it needs no compensation.
            Some(t) if t <= Instant::now() => return self.core().wait_done(deadline),
            Some(_) => {}
        }
        let core = self.core();
        block_in_place(|| core.wait_done(deadline))
    }

    /// Blocks until the job has finished, without taking its outcome.
    ///
    /// Like [`result`](Future::result), this runs a not yet started job inline when called
    /// from a worker of the job's own pool.
    pub fn wait(&self) {
        self.wait_inner(None);
    }

    /// Blocks for at most `timeout` until the job has finished. Returns whether it has.
    ///
    /// Unlike [`wait`](Future::wait), it never runs the job inline (see [`Future`]), unless
    /// `timeout` is too large to add to now (such as `Duration::MAX`), which means no deadline.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_inner(deadline::after(timeout))
    }

    /// Cancels the job if it has not started.
    ///
    /// Returns `true` if the job is cancelled (now, or by an earlier call), `false` if it is
    /// running or has finished: a running job is never interrupted. The future then resolves to
    /// [`JobError::Cancelled`], and its callbacks run on this thread. The job itself (a closure
    /// and everything it captured) is dropped at once, on this thread, not when the future is.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{JobError, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(1);
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    /// let blocker = pool.submit(move || { started_tx.send(()).unwrap(); rx.recv().unwrap() }).unwrap();
    /// started_rx.recv().unwrap();           // the only worker is now busy
    /// let queued = pool.submit(|| 1).unwrap();
    /// assert!(queued.cancel());
    /// assert!(!blocker.cancel());           // running jobs are not cancelled
    /// tx.send(()).unwrap();
    /// assert_eq!(queued.result(), Err(JobError::Cancelled));
    /// ```
    pub fn cancel(&self) -> bool {
        self.cell().cancel()
    }

    /// Cancels the job even if it is already running, where the backend can stop it.
    ///
    /// On a `ProcessPoolExecutor` a running job is stopped by
    /// killing the worker process that runs it (the pool starts a replacement); the future then
    /// resolves to [`JobError::Cancelled`]. A thread cannot be stopped safely, so on the thread
    /// pool this is the same as [`cancel`](Future::cancel). Returns whether the job is now
    /// cancelled.
    ///
    /// # Examples
    /// ```
    /// let f = stealpool::Future::ready(Ok::<_, stealpool::JobError>(1));
    /// assert!(!f.force_cancel()); // already finished
    /// ```
    pub fn force_cancel(&self) -> bool {
        self.cell().force_cancel()
    }

    /// Whether the job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.core().ending() == Some(Ending::Cancelled)
    }

    /// Whether the job is running now.
    pub fn is_running(&self) -> bool {
        self.core().is_running()
    }

    /// Whether the job has finished or was cancelled.
    pub fn is_done(&self) -> bool {
        self.core().is_done()
    }

    /// The error the job ended with, if it has ended with one; never blocks.
    ///
    /// This is Python's `exception()` without the wait: call [`wait`](Future::wait) first to
    /// block until the job is done. Unlike the `result*` calls it does not take the outcome.
    pub fn error(&self) -> Option<JobError> {
        self.core().error()
    }

    /// Adds a callback that runs once when the job finishes or is cancelled.
    ///
    /// Callbacks run in the order added, on the thread that completes the job, before the
    /// blocking `result*` calls return. One added to a job that is already done runs at once, on
    /// the calling thread. A panicking callback is caught and ignored: it does not affect the
    /// job, the future or the other callbacks.
    ///
    /// # Examples
    /// ```
    /// use std::sync::mpsc;
    /// use stealpool::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(1);
    /// let (tx, rx) = mpsc::channel();
    /// let f = pool.submit(|| 21 * 2).unwrap();
    /// f.add_done_callback(move |r| tx.send(*r.unwrap()).unwrap());
    /// assert_eq!(rx.recv().unwrap(), 42);
    /// ```
    pub fn add_done_callback<F>(&self, callback: F)
    where
        F: FnOnce(Result<&T, &JobError>) + Send + 'static,
    {
        self.core().add_callback(Box::new(callback));
    }

    pub(crate) fn add_boxed_callback(&self, callback: Callback<T>) {
        self.core().add_callback(callback);
    }

    pub(crate) fn ending(&self) -> Option<Ending> {
        self.core().ending()
    }
}

impl<T> std::future::Future for Future<T> {
    type Output = Result<T, JobError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.core().poll_take(cx.waker()) {
            Some(o) => Poll::Ready(o),
            None => Poll::Pending,
        }
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Future").field("state", &self.core().describe()).finish()
    }
}
