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
use crate::error::TimeoutError;

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
/// `DoneAndNotDoneFutures`).
#[derive(Debug)]
pub struct DoneAndNotDone<T> {
    /// The futures that finished or were cancelled.
    pub done: Vec<Future<T>>,
    /// The others.
    pub not_done: Vec<Future<T>>,
}

/// Waits until the futures satisfy `return_when` or `timeout` passes, then splits them into
/// done and not done, like Python's `concurrent.futures.wait`.
///
/// A timeout is not an error: the futures still pending are in `not_done`. Cancelled futures
/// count as done. With `None` as timeout the wait is unbounded.
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
/// ```
pub fn wait<T, I>(futures: I, return_when: ReturnWhen, timeout: Option<Duration>) -> DoneAndNotDone<T>
where
    T: Send + 'static,
    I: IntoIterator<Item = Future<T>>,
{
    let deadline = deadline::after_opt(timeout);
    let futures: Vec<Future<T>> = futures.into_iter().collect();
    let mut done = 0;
    let mut failed = false;
    let mut pending = Vec::new();
    for (i, f) in futures.iter().enumerate() {
        match f.ending() {
            Some(e) => {
                done += 1;
                failed |= e == Ending::Failed;
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
            completed.watch(&futures[i], i);
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
    let (done, not_done) = futures.into_iter().partition(|f| f.is_done());
    DoneAndNotDone { done, not_done }
}

/// Yields the futures as they complete: first those already done (in the order given), then
/// each as it finishes or is cancelled. Each future is yielded exactly once.
///
/// If `timeout` passes (counted from this call) before all are done, the iterator yields one
/// `Err(TimeoutError)` and then ends; the remaining futures are dropped, their jobs go on.
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
pub fn as_completed<T, I>(futures: I, timeout: Option<Duration>) -> AsCompleted<T>
where
    T: Send + 'static,
    I: IntoIterator<Item = Future<T>>,
{
    let started = Instant::now();
    let slots: Vec<Option<Future<T>>> = futures.into_iter().map(Some).collect();
    let mut ready = VecDeque::new();
    let completed = CompletionQueue::new();
    for (i, f) in slots.iter().enumerate().filter_map(|(i, f)| Some((i, f.as_ref()?))) {
        if f.is_done() {
            ready.push_back(i);
        } else {
            completed.watch(f, i);
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

/// The iterator returned by [`as_completed`].
pub struct AsCompleted<T> {
    slots: Vec<Option<Future<T>>>,
    ready: VecDeque<usize>,
    completed: Arc<CompletionQueue>,
    remaining: usize,
    started: Instant,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl<T: Send + 'static> Iterator for AsCompleted<T> {
    type Item = Result<Future<T>, TimeoutError>;

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
                        return Some(Err(TimeoutError { waited: self.started.elapsed() }));
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

impl<T> std::fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.remaining)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
