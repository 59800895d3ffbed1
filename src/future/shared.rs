//! [`SharedFuture<T>`]: a future many handles can read, each getting a clone of the outcome.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Future;
use super::wait::{Waitable, sealed};
use crate::error::{JobError, ResultTimeoutError, TryResultError};
use crate::unwind;

/// A [`Future`] that many handles share ([`Future::shared`]): cheap clones that all see the
/// same outcome, each getting its own clone of it (`T: Clone`).
///
/// Cancelling through one handle cancels the job for all. It works with [`wait`](crate::wait)
/// and [`as_completed`](crate::as_completed), and each clone can be `.await`ed.
///
/// # Examples
/// ```
/// use stealpool::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::new(2);
/// let shared = pool.submit(|| vec![1, 2, 3]).unwrap().shared();
/// let other = shared.clone();
/// let reader = std::thread::spawn(move || other.result().unwrap().len());
/// assert_eq!(shared.result(), Ok(vec![1, 2, 3]));
/// assert_eq!(shared.result(), Ok(vec![1, 2, 3])); // again: the outcome is not moved out
/// assert_eq!(reader.join().unwrap(), 3);
/// ```
pub struct SharedFuture<T> {
    inner: Arc<Inner<T>>,
    /// This handle's own number: its waker is kept under it, one per handle, so a pending
    /// shared future polled again and again (with new wakers, by handles made and dropped)
    /// keeps one waker per live handle.
    id: u64,
}

/// A fresh handle number (a `u64` does not wrap in practice).
fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

struct Inner<T> {
    future: Future<T>,
    state: Arc<State<T>>,
}

struct State<T> {
    slot: Mutex<Slot<T>>,
    cond: Condvar,
}

struct Slot<T> {
    /// Set once, by the future's first done callback (before the future is `Done`).
    outcome: Option<Arc<Result<T, JobError>>>,
    /// The waker of each handle that polled while pending, by handle number.
    wakers: Vec<(u64, Waker)>,
}

impl<T: Clone + Send + Sync + 'static> Future<T> {
    /// Turns this future into a [`SharedFuture`], whose clones all see the same outcome (each
    /// handle clones it, possibly on its own thread: hence `T: Clone + Sync`).
    ///
    /// # Examples
    /// ```
    /// let shared = stealpool::Future::ready(Ok::<_, stealpool::JobError>(String::from("x"))).shared();
    /// let copies = [shared.clone(), shared.clone()];
    /// assert!(copies.iter().all(|c| c.result().as_deref() == Ok("x")));
    /// ```
    pub fn shared(self) -> SharedFuture<T> {
        let state =
            Arc::new(State { slot: Mutex::new(Slot { outcome: None, wakers: Vec::new() }), cond: Condvar::new() });
        let filler = Arc::clone(&state);
        // The first callback of the future (no one else holds it): it runs before the future is
        // `Done`, so a wait on the future that returns finds the outcome here.
        self.add_boxed_callback(Box::new(move |o: Result<&T, &JobError>| {
            // `T::clone` is user code: a panic in it becomes the outcome, and waiters still wake.
            let outcome = unwind::catch(|| o.cloned().map_err(JobError::clone)).unwrap_or_else(Err);
            let wakers = {
                let mut slot = filler.slot.lock();
                slot.outcome = Some(Arc::new(outcome));
                std::mem::take(&mut slot.wakers)
            };
            filler.cond.notify_all();
            for (_, w) in wakers {
                let _ = unwind::catch(|| w.wake());
            }
        }));
        SharedFuture { inner: Arc::new(Inner { future: self, state }), id: next_id() }
    }
}

impl<T: Clone> SharedFuture<T> {
    /// The outcome if set, without blocking (the clone of `T` runs with no lock held).
    fn outcome(&self) -> Option<Result<T, JobError>> {
        let o = self.inner.state.slot.lock().outcome.clone()?;
        Some((*o).clone())
    }

    /// The outcome once the future is done: the filler runs before `Done`, so this waits on
    /// the condition only in theory.
    fn outcome_when_done(&self) -> Result<T, JobError> {
        let mut slot = self.inner.state.slot.lock();
        while slot.outcome.is_none() {
            self.inner.state.cond.wait(&mut slot);
        }
        let o = slot.outcome.clone().expect("set");
        drop(slot);
        (*o).clone()
    }

    /// Blocks until the job has finished, then returns a clone of its outcome.
    ///
    /// Like [`Future::result`], from a worker of the job's pool it runs a job that has not
    /// started inline.
    ///
    /// # Errors
    /// The [`JobError`] the job ended with (a clone of it), as [`Future::result`].
    ///
    /// # Examples
    /// ```
    /// use stealpool::{JobError, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(1);
    /// let s = pool.submit(|| -> u8 { panic!("once") }).unwrap().shared();
    /// let expected = Err(JobError::Panicked { message: "once".into(), details: None });
    /// assert_eq!(s.result(), expected);
    /// assert_eq!(s.clone().result(), expected); // every handle, every call
    /// ```
    pub fn result(&self) -> Result<T, JobError> {
        self.inner.future.wait();
        self.outcome_when_done()
    }

    /// Blocks for at most `timeout`, then returns a clone of the outcome.
    ///
    /// # Errors
    /// [`ResultTimeoutError::Timeout`] if the time ran out, otherwise
    /// [`ResultTimeoutError::Failed`] with the job's error.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let (future, promise) = stealpool::Future::pending();
    /// let s = future.shared();
    /// assert!(s.result_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
    /// promise.set_result(4).unwrap();
    /// assert_eq!(s.result_timeout(Duration::from_secs(1)), Ok(4));
    /// ```
    pub fn result_timeout(&self, timeout: Duration) -> Result<T, ResultTimeoutError> {
        if !self.inner.future.wait_timeout(timeout) {
            return Err(ResultTimeoutError::Timeout);
        }
        self.outcome_when_done().map_err(ResultTimeoutError::Failed)
    }

    /// A clone of the outcome if the job has finished; never blocks.
    ///
    /// # Errors
    /// [`TryResultError::NotReady`] while the job is pending or running, otherwise
    /// [`TryResultError::Failed`] with the job's error.
    ///
    /// # Examples
    /// ```
    /// use stealpool::TryResultError;
    ///
    /// let (future, promise) = stealpool::Future::pending();
    /// let s = future.shared();
    /// assert_eq!(s.try_result(), Err(TryResultError::NotReady));
    /// promise.set_result('a').unwrap();
    /// assert_eq!(s.try_result(), Ok('a'));
    /// ```
    pub fn try_result(&self) -> Result<T, TryResultError> {
        match self.outcome() {
            None => Err(TryResultError::NotReady),
            Some(o) => o.map_err(TryResultError::Failed),
        }
    }
}

impl<T> SharedFuture<T> {
    /// Blocks until the job has finished (see [`Future::wait`]).
    ///
    /// # Examples
    /// ```
    /// let s = stealpool::Future::ready(Ok::<_, stealpool::JobError>(1)).shared();
    /// s.wait();
    /// assert!(s.is_done() && !s.is_running());
    /// ```
    pub fn wait(&self) {
        self.inner.future.wait();
    }

    /// Blocks for at most `timeout`; returns whether the job has finished.
    ///
    /// # Examples
    /// ```
    /// let (future, _promise) = stealpool::Future::<u8>::pending();
    /// assert!(!future.shared().wait_timeout(std::time::Duration::from_millis(1)));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.inner.future.wait_timeout(timeout)
    }

    /// Cancels the job if it has not started, for every handle (see [`Future::cancel`]).
    ///
    /// # Examples
    /// ```
    /// use stealpool::JobError;
    ///
    /// let (future, _promise) = stealpool::Future::<u8>::pending();
    /// let a = future.shared();
    /// let b = a.clone();
    /// assert!(a.cancel());
    /// assert!(b.is_cancelled());
    /// assert_eq!(b.result(), Err(JobError::Cancelled));
    /// ```
    pub fn cancel(&self) -> bool {
        self.inner.future.cancel()
    }

    /// See [`Future::force_cancel`].
    ///
    /// # Examples
    /// ```
    /// let s = stealpool::Future::ready(Ok::<_, stealpool::JobError>(1)).shared();
    /// assert!(!s.force_cancel()); // already finished
    /// ```
    pub fn force_cancel(&self) -> bool {
        self.inner.future.force_cancel()
    }

    /// Whether the job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.future.is_cancelled()
    }

    /// Whether the job is running now.
    pub fn is_running(&self) -> bool {
        self.inner.future.is_running()
    }

    /// Whether the job has finished or was cancelled.
    pub fn is_done(&self) -> bool {
        self.inner.future.is_done()
    }

    /// The error the job ended with, if it has ended with one; never blocks.
    ///
    /// # Examples
    /// ```
    /// use stealpool::JobError;
    ///
    /// let s = stealpool::Future::<u8>::ready(Err(JobError::Cancelled)).shared();
    /// assert_eq!(s.error(), Some(JobError::Cancelled));
    /// assert!(s.is_cancelled());
    /// ```
    pub fn error(&self) -> Option<JobError> {
        self.inner.future.error()
    }

    /// Adds a callback that runs once when the job finishes (see
    /// [`Future::add_done_callback`]).
    ///
    /// # Examples
    /// ```
    /// let (future, promise) = stealpool::Future::pending();
    /// let s = future.shared();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// s.add_done_callback(move |r| tx.send(*r.unwrap()).unwrap());
    /// promise.set_result(3).unwrap();
    /// assert_eq!(rx.recv().unwrap(), 3);
    /// assert_eq!(s.result(), Ok(3));
    /// ```
    pub fn add_done_callback<F>(&self, callback: F)
    where
        F: FnOnce(Result<&T, &JobError>) + Send + 'static,
    {
        self.inner.future.add_done_callback(callback);
    }
}

impl<T> Clone for SharedFuture<T> {
    fn clone(&self) -> Self {
        SharedFuture { inner: Arc::clone(&self.inner), id: next_id() }
    }
}

impl<T> Drop for SharedFuture<T> {
    fn drop(&mut self) {
        let mut slot = self.inner.state.slot.lock();
        slot.wakers.retain(|(id, _)| *id != self.id);
    }
}

impl<T: Clone> std::future::Future for SharedFuture<T> {
    type Output = Result<T, JobError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let o = {
            let mut slot = self.inner.state.slot.lock();
            match slot.outcome.clone() {
                Some(o) => o,
                None => {
                    let id = self.id;
                    match slot.wakers.iter_mut().find(|(owner, _)| *owner == id) {
                        Some((_, w)) => w.clone_from(cx.waker()),
                        None => slot.wakers.push((id, cx.waker().clone())),
                    }
                    return Poll::Pending;
                }
            }
        };
        Poll::Ready((*o).clone())
    }
}

impl<T: Send + 'static> sealed::Sealed for SharedFuture<T> {
    fn done_failed(&self) -> Option<bool> {
        self.inner.future.done_failed()
    }

    fn on_done(&self, callback: Box<dyn FnOnce(bool) + Send>) {
        self.inner.future.on_done(callback);
    }
}

impl<T: Send + 'static> Waitable for SharedFuture<T> {}

impl<T> fmt::Debug for SharedFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedFuture").field("future", &self.inner.future).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn a_pending_shared_future_keeps_one_waker_per_live_handle() {
        let (future, promise) = Future::<u32>::pending();
        let shared = future.shared();
        for _ in 0..1000 {
            // a new waker each time, and a handle made and dropped each time
            let waker = Waker::from(Arc::new(Noop));
            let mut cx = Context::from_waker(&waker);
            assert!(Pin::new(&mut shared.clone()).poll(&mut cx).is_pending());
            assert!(Pin::new(&mut { shared.clone() }).poll(&mut cx).is_pending());
            let mut handle = shared.clone();
            assert!(Pin::new(&mut handle).poll(&mut cx).is_pending());
            drop(handle);
        }
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let mut kept = shared.clone();
        for _ in 0..10 {
            assert!(Pin::new(&mut kept).poll(&mut cx).is_pending());
        }
        assert_eq!(shared.inner.state.slot.lock().wakers.len(), 1, "only the live handle's waker");
        promise.set_result(7).unwrap();
        assert_eq!(Pin::new(&mut kept).poll(&mut cx), Poll::Ready(Ok(7)));
    }
}
