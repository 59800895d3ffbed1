//! A queue of the indices of finished futures, posted by their done callbacks: what [`wait`],
//! [`as_completed`] and the executors' unordered maps block on.
//!
//! [`wait`]: super::wait
//! [`as_completed`]: super::as_completed
//!
//! This module must never hold its lock while running a callback or blocking without counting
//! the thread as blocked (`block_in_place`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::Future;
use crate::blocking::block_in_place;

/// Indices of finished futures, posted by their done callbacks.
pub(crate) struct CompletionQueue {
    queue: Mutex<VecDeque<(usize, bool)>>,
    cond: Condvar,
}

impl CompletionQueue {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(CompletionQueue { queue: Mutex::new(VecDeque::new()), cond: Condvar::new() })
    }

    /// Posts `index` to this queue when `future` completes (at once if it already has).
    /// The flag says whether it failed (ended with an error other than cancellation).
    pub(crate) fn watch<T: Send + 'static>(self: &Arc<Self>, future: &Future<T>, index: usize) {
        let queue = Arc::clone(self);
        future.add_boxed_callback(Box::new(move |outcome| {
            queue.post(index, matches!(outcome, Err(e) if !e.is_cancelled()));
        }));
    }

    /// Posts `index` now.
    pub(crate) fn post(&self, index: usize, failed: bool) {
        self.queue.lock().push_back((index, failed));
        self.cond.notify_one();
    }

    /// Takes the next posted index, blocking until one arrives or the deadline passes.
    pub(crate) fn recv_deadline(&self, deadline: Option<Instant>) -> Option<(usize, bool)> {
        let mut q = self.queue.lock();
        if let Some(x) = q.pop_front() {
            return Some(x);
        }
        block_in_place(|| {
            loop {
                if let Some(x) = q.pop_front() {
                    return Some(x);
                }
                match deadline {
                    Some(t) => {
                        if self.cond.wait_until(&mut q, t).timed_out() {
                            return q.pop_front();
                        }
                    }
                    None => self.cond.wait(&mut q),
                }
            }
        })
    }
}
