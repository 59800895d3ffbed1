//! What a worker's reply reader is doing, told without the pool's lock.
//!
//! The time-limit check reads it to tell a reply held up on our side (a slow done callback,
//! which runs on the reply reader) from a reply that was never sent (a worker whose slot lies).
//!
//! This module must never block or take a lock: it is two atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::process::slot;

/// Whether a reply reader is handling a frame (which includes running done callbacks) and, if
/// not, since when it has waited for one.
pub(super) struct ReaderMark {
    busy: AtomicBool,
    /// When it last finished handling a frame (or started), in ns on [`slot::now_ns`]'s clock.
    idle_since_ns: AtomicU64,
}

impl ReaderMark {
    pub(super) fn new() -> ReaderMark {
        ReaderMark { busy: AtomicBool::new(false), idle_since_ns: AtomicU64::new(slot::now_ns()) }
    }

    /// The reader took a frame and is handling it.
    pub(super) fn enter(&self) {
        self.busy.store(true, Ordering::SeqCst);
    }

    /// The reader is done with the frame and goes back to waiting.
    pub(super) fn leave(&self) {
        self.idle_since_ns.store(slot::now_ns(), Ordering::SeqCst);
        self.busy.store(false, Ordering::SeqCst);
    }

    /// `None` while the reader handles a frame; else when (by `now`, which is `now_ns` on the
    /// other clock) it began to wait for the next one.
    pub(super) fn idle_since(&self, now: Instant, now_ns: u64) -> Option<Instant> {
        if self.busy.load(Ordering::SeqCst) {
            return None;
        }
        let since = self.idle_since_ns.load(Ordering::SeqCst);
        Some(now.checked_sub(Duration::from_nanos(now_ns.saturating_sub(since))).unwrap_or(now))
    }
}
