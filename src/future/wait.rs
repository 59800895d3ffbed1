//! Waiting on many futures: [`wait`] and [`as_completed`].
//!
//! Both rest on a [`CompletionQueue`]: each watched future gets an internal done callback that
//! posts its index, and the waiter blocks on the queue. A future that finishes between the check "is it
//! done?" and the registration of the callback is not missed, because a callback added to a done
//! future runs at once; and it is not counted twice, because only the futures seen not done get a
//! callback.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::completion::CompletionQueue;
use super::{Ending, Future};
use crate::deadline;
use crate::error::{JobError, TimeoutError};

/// Something [`wait`] and [`as_completed`] can watch: a [`Future<T>`] or a borrowed
/// `&Future<T>` (the caller keeps the future), a [`SharedFuture<T>`](super::SharedFuture) or a
/// borrow of one.
///
/// Sealed: implemented by this crate's future types only.
///
/// # Examples
/// ```
/// use stealpool::{wait, Future, ReturnWhen, Waitable};
///
/// fn all_done<W: Waitable>(futures: impl IntoIterator<Item = W>) -> bool {
///     wait(futures, ReturnWhen::AllCompleted, None).not_done.is_empty()
/// }
/// let futures = vec![Future::ready(Ok::<_, stealpool::JobError>(1))];
/// assert!(all_done(&futures));
/// assert_eq!(futures[0].is_done(), true); // still ours
/// ```
pub trait Waitable: sealed::Sealed {}

pub(crate) mod sealed {
    use crate::error::JobError;

    /// The hooks of [`Waitable`](super::Waitable), out of the public API.
    pub trait Sealed {
        /// `None` while not done; otherwise whether it failed (cancellation is no failure).
        fn done_failed(&self) -> Option<bool>;
        /// Runs `callback` once when the future completes (at once if it has), with whether it
        /// failed.
        fn on_done(&self, callback: Box<dyn FnOnce(bool) + Send>);
    }

    pub(crate) fn failed<T>(outcome: Result<&T, &JobError>) -> bool {
        matches!(outcome, Err(e) if !e.is_cancelled())
    }
}

impl<T: Send + 'static> sealed::Sealed for Future<T> {
    fn done_failed(&self) -> Option<bool> {
        self.ending().map(|e| e == Ending::Failed)
    }

    fn on_done(&self, callback: Box<dyn FnOnce(bool) + Send>) {
        self.add_boxed_callback(Box::new(move |o: Result<&T, &JobError>| callback(sealed::failed(o))));
    }
}

impl<T: Send + 'static> Waitable for Future<T> {}

impl<W: sealed::Sealed + ?Sized> sealed::Sealed for &W {
    fn done_failed(&self) -> Option<bool> {
        (**self).done_failed()
    }

    fn on_done(&self, callback: Box<dyn FnOnce(bool) + Send>) {
        (**self).on_done(callback);
    }
}

impl<W: Waitable + ?Sized> Waitable for &W {}

fn watch<W: Waitable>(queue: &Arc<CompletionQueue>, future: &W, index: usize) {
    let queue = Arc::clone(queue);
    future.on_done(Box::new(move |failed| queue.post(index, failed)));
}

/// When [`wait`] should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any future finishes or is cancelled.
    FirstCompleted,
    /// As soon as any future fails (cancellation is not a failure); otherwise when all are done.
    FirstException,
    /// When every future has finished or been cancelled.
    AllCompleted,
}

/// The two halves returned by [`wait`], each in the order the futures were given (Python's
/// `DoneAndNotDoneFutures`). `F` is the kind of item given: `Future<T>`, `&Future<T>`, ...
#[derive(Debug)]
pub struct DoneAndNotDone<F> {
    /// The futures that finished or were cancelled.
    pub done: Vec<F>,
    /// The others.
    pub not_done: Vec<F>,
}

/// Waits until the futures satisfy `return_when` or `timeout` passes, then splits them into
/// done and not done, like Python's `concurrent.futures.wait`.
///
/// A timeout is not an error: the futures still pending are in `not_done`. Cancelled futures
/// count as done. With `None` as timeout the wait is unbounded.
///
/// The futures may be given by value (`Vec<Future<T>>`) or borrowed (`&Vec<Future<T>>`,
/// `&[Future<T>]`, an iterator of `&Future<T>`): the halves hold the same kind of items, so a
/// caller that lends its futures keeps them all (see [`Waitable`]).
///
/// # Examples
/// ```
/// use stealpool::{wait, ReturnWhen, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(2);
/// let futures: Vec<_> = (0..4).map(|i| pool.submit(move || i * 10).unwrap()).collect();
/// let w = wait(futures, ReturnWhen::AllCompleted, None);
/// assert_eq!(w.done.len(), 4);
/// assert!(w.not_done.is_empty());
///
/// // Borrowed: the futures stay with the caller.
/// let mine: Vec<_> = (0..2).map(|i| pool.submit(move || i).unwrap()).collect();
/// let w = wait(&mine, ReturnWhen::AllCompleted, None);
/// assert_eq!(w.done.len(), 2);
/// assert_eq!(mine.into_iter().map(|f| f.result().unwrap()).sum::<i32>(), 1);
/// ```
pub fn wait<F, I>(futures: I, return_when: ReturnWhen, timeout: Option<Duration>) -> DoneAndNotDone<F>
where
    F: Waitable,
    I: IntoIterator<Item = F>,
{
    let deadline = deadline::after_opt(timeout);
    let futures: Vec<F> = futures.into_iter().collect();
    let mut done = 0;
    let mut failed = false;
    let mut pending = Vec::new();
    for (i, f) in futures.iter().enumerate() {
        match f.done_failed() {
            Some(f) => {
                done += 1;
                failed |= f;
            }
            None => pending.push(i),
        }
    }
    let satisfied = |done: usize, failed: bool| match return_when {
        ReturnWhen::FirstCompleted => done > 0,
        ReturnWhen::FirstException => failed,
        ReturnWhen::AllCompleted => false,
    } || done == futures.len();

    if !satisfied(done, failed) {
        let completed = CompletionQueue::new();
        for &i in &pending {
            watch(&completed, &futures[i], i);
        }
        while !satisfied(done, failed) {
            match completed.recv_deadline(deadline) {
                Some((_, f)) => {
                    done += 1;
                    failed |= f;
                }
                None => break,
            }
        }
    }
    let (done, not_done) = futures.into_iter().partition(|f| f.done_failed().is_some());
    DoneAndNotDone { done, not_done }
}

/// Yields the futures as they complete: first those already done (in the order given), then
/// each as it finishes or is cancelled. Each future is yielded exactly once.
///
/// If `timeout` passes (counted from this call) before all are done, the iterator yields one
/// `Err(TimeoutError)` (which says how many of how many were unfinished) and then ends. Given
/// by value, the remaining futures are then dropped (their jobs go on); given borrowed
/// (`as_completed(&futures, ..)`), they stay with the caller, who can wait on them or cancel
/// them. The items are of the kind given (see [`Waitable`]).
///
/// # Examples
/// ```
/// use stealpool::{as_completed, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(2);
/// let futures: Vec<_> = (1..=3).map(|i| pool.submit(move || i).unwrap()).collect();
/// let mut total = 0;
/// for f in as_completed(futures, None) {
///     total += f.unwrap().result().unwrap();
/// }
/// assert_eq!(total, 6);
/// ```
pub fn as_completed<F, I>(futures: I, timeout: Option<Duration>) -> AsCompleted<F>
where
    F: Waitable,
    I: IntoIterator<Item = F>,
{
    let started = Instant::now();
    let slots: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    let mut ready = VecDeque::new();
    let completed = CompletionQueue::new();
    for (i, f) in slots.iter().enumerate().filter_map(|(i, f)| Some((i, f.as_ref()?))) {
        if f.done_failed().is_some() {
            ready.push_back(i);
        } else {
            watch(&completed, f, i);
        }
    }
    AsCompleted {
        remaining: slots.len(),
        slots,
        ready,
        completed,
        started,
        deadline: timeout.and_then(|d| started.checked_add(d)),
        timed_out: false,
    }
}

/// The iterator returned by [`as_completed`], yielding items of the kind given.
pub struct AsCompleted<F> {
    slots: Vec<Option<F>>,
    ready: VecDeque<usize>,
    completed: Arc<CompletionQueue>,
    remaining: usize,
    started: Instant,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl<F: Waitable> Iterator for AsCompleted<F> {
    type Item = Result<F, TimeoutError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.timed_out {
            return None;
        }
        loop {
            let index = match self.ready.pop_front() {
                Some(i) => i,
                None => match self.completed.recv_deadline(self.deadline) {
                    Some((i, _)) => i,
                    None => {
                        self.timed_out = true;
                        return Some(Err(TimeoutError {
                            waited: self.started.elapsed(),
                            unfinished: self.remaining,
                            total: self.slots.len(),
                        }));
                    }
                },
            };
            if let Some(f) = self.slots[index].take() {
                self.remaining -= 1;
                return Some(Ok(f));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining + 1))
    }
}

impl<F> std::fmt::Debug for AsCompleted<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.remaining)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
