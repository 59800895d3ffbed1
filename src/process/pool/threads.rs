//! The pool's internal threads (writers, reply readers, the time-limit thread): how they are
//! started, which pool a thread serves ([`OWN_POOL`], so that a done callback that shuts its
//! pool down does not wait for itself), and what happens when one panics ([`BreakOnPanic`]).
//!
//! This module must never let a panicking internal thread end quietly: the pool it served
//! breaks, loudly.

use std::sync::Arc;
use std::thread::JoinHandle;

use super::Pool;

/// Held by each internal thread of a pool: if the thread unwinds, the pool breaks loudly
/// ([`Pool::internal_panic`]) instead of carrying on without it.
pub(super) struct BreakOnPanic<'a> {
    pub(super) pool: &'a Arc<Pool>,
    pub(super) role: &'static str,
    /// The worker a reply reader serves.
    pub(super) worker: Option<u64>,
}

impl<'a> BreakOnPanic<'a> {
    pub(super) fn new(pool: &'a Arc<Pool>, role: &'static str) -> Self {
        BreakOnPanic { pool, role, worker: None }
    }
}

impl Drop for BreakOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.pool.internal_panic(self.role, self.worker);
        }
    }
}

thread_local! {
    /// The pool whose internal thread this is (its address), if any: done callbacks run on a
    /// pool's link threads, and a callback that shuts the pool down must not wait for itself.
    pub(super) static OWN_POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Starts an internal thread named `name` (as `ps -L` and panics show it).
pub(super) fn spawn_thread(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
}
