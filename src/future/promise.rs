//! A future completed by hand: [`Future::pending`] and its [`Promise`] (Python's
//! `concurrent.futures.Future()` with `set_result` / `set_exception`).

use std::fmt;
use std::sync::Arc;

use super::{Core, Future};
use crate::error::JobError;

/// The writing end of a [`Future::pending`]: sets the future's outcome once.
///
/// Completing it runs the future's done callbacks on the calling thread and wakes its waiters
/// and its `.await`, as a pool's worker does for a job. Dropping the promise without setting
/// anything resolves the future with [`JobError::Abandoned`] (no waiter hangs forever).
///
/// # Examples
/// ```
/// use stealpool::Future;
///
/// let (future, promise) = Future::pending();
/// let setter = std::thread::spawn(move || promise.set_result(42).unwrap());
/// assert_eq!(future.result(), Ok(42));
/// setter.join().unwrap();
/// ```
pub struct Promise<T> {
    core: Arc<Core<T>>,
}

/// A [`Promise`] was completed after its future was already done (set before, or cancelled);
/// the value it was given is handed back. Python raises `InvalidStateError` there.
///
/// # Examples
/// ```
/// let (_future, promise) = stealpool::Future::pending();
/// promise.set_result(1).unwrap();
/// let again = promise.set_result(2).unwrap_err();
/// assert_eq!(again.into_inner(), 2);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AlreadyCompleted<V> {
    value: V,
}

impl<V> AlreadyCompleted<V> {
    /// The value that could not be set.
    pub fn into_inner(self) -> V {
        self.value
    }

    /// A borrow of the value that could not be set.
    ///
    /// # Examples
    /// ```
    /// let (future, promise) = stealpool::Future::pending();
    /// future.cancel();
    /// assert_eq!(promise.set_result(5).unwrap_err().value(), &5);
    /// ```
    pub fn value(&self) -> &V {
        &self.value
    }
}

impl<V> fmt::Debug for AlreadyCompleted<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlreadyCompleted").finish_non_exhaustive()
    }
}

impl<V> fmt::Display for AlreadyCompleted<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the future is already done (its result was set, or it was cancelled)")
    }
}

impl<V> std::error::Error for AlreadyCompleted<V> {}

impl<T: Send + 'static> Future<T> {
    /// A future that nothing runs: it is completed through the returned [`Promise`] (Python's
    /// `concurrent.futures.Future()`, completed with `set_result` / `set_exception`).
    ///
    /// The future starts pending: [`cancel`](Future::cancel) cancels it (after which the
    /// promise's setters return [`AlreadyCompleted`]), and [`wait`](crate::wait),
    /// [`as_completed`](crate::as_completed), callbacks and `.await` work as for a pool's future.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{Future, JobError};
    ///
    /// let (future, promise) = Future::<u8>::pending();
    /// assert!(!future.is_done());
    /// assert!(future.cancel());
    /// assert!(promise.is_cancelled());
    /// assert_eq!(promise.set_result(1).unwrap_err().into_inner(), 1);
    /// assert_eq!(future.result(), Err(JobError::Cancelled));
    /// ```
    pub fn pending() -> (Future<T>, Promise<T>) {
        let core = Arc::new(Core::new());
        (Future::from_cell(Arc::clone(&core) as _), Promise { core })
    }
}

impl<T> Promise<T> {
    /// Completes the future with `value`.
    ///
    /// # Errors
    /// [`AlreadyCompleted`] holding `value` if the future is already done (set before, or
    /// cancelled).
    ///
    /// # Examples
    /// ```
    /// let (future, promise) = stealpool::Future::pending();
    /// assert!(promise.set_result("ok").is_ok());
    /// assert_eq!(future.result(), Ok("ok"));
    /// ```
    pub fn set_result(&self, value: T) -> Result<(), AlreadyCompleted<T>> {
        self.core.try_finish(Ok(value)).map_err(|o| match o {
            Ok(value) => AlreadyCompleted { value },
            Err(_) => unreachable!("try_finish hands back what it was given"),
        })
    }

    /// Completes the future with `error` (Python's `set_exception`).
    ///
    /// An error of [`JobError::Cancelled`] makes the future look cancelled
    /// ([`Future::is_cancelled`]), as if it had been cancelled.
    ///
    /// # Errors
    /// [`AlreadyCompleted`] holding `error` if the future is already done.
    ///
    /// # Examples
    /// ```
    /// use stealpool::{Future, JobError};
    ///
    /// let (future, promise) = Future::<u8>::pending();
    /// let error = JobError::Panicked { message: "no input".into(), details: None };
    /// promise.set_error(error.clone()).unwrap();
    /// assert_eq!(future.result(), Err(error));
    /// ```
    pub fn set_error(&self, error: JobError) -> Result<(), AlreadyCompleted<JobError>> {
        self.core.try_finish(Err(error)).map_err(|o| match o {
            Err(value) => AlreadyCompleted { value },
            Ok(_) => unreachable!("try_finish hands back what it was given"),
        })
    }

    /// Marks the future as running, unless it was cancelled (Python's
    /// `set_running_or_notify_cancel`): once running, [`Future::cancel`] no longer cancels it.
    ///
    /// Returns `true` if the future is now running, `false` if it is not pending (cancelled,
    /// already set, or already marked running).
    ///
    /// # Examples
    /// ```
    /// let (future, promise) = stealpool::Future::<u8>::pending();
    /// assert!(promise.set_running_or_notify_cancel());
    /// assert!(future.is_running());
    /// assert!(!future.cancel());
    /// ```
    pub fn set_running_or_notify_cancel(&self) -> bool {
        self.core.try_start()
    }

    /// Whether the future was cancelled.
    ///
    /// # Examples
    /// ```
    /// let (future, promise) = stealpool::Future::<u8>::pending();
    /// assert!(!promise.is_cancelled());
    /// future.cancel();
    /// assert!(promise.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.core.ending() == Some(super::Ending::Cancelled)
    }

    /// Whether the future is done (set, or cancelled).
    ///
    /// # Examples
    /// ```
    /// let (_future, promise) = stealpool::Future::pending();
    /// assert!(!promise.is_done());
    /// promise.set_result(()).unwrap();
    /// assert!(promise.is_done());
    /// ```
    pub fn is_done(&self) -> bool {
        self.core.is_done()
    }
}

impl<T> Drop for Promise<T> {
    /// Resolves a future still unset with [`JobError::Abandoned`].
    fn drop(&mut self) {
        let _ = self.core.try_finish(Err(JobError::Abandoned));
    }
}

impl<T> fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise").field("state", &self.core.describe()).finish()
    }
}
