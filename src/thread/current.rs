//! Which registry the current thread belongs to, if any: a leaf that both the registry and
//! the job cells read (a job runs inline only on a thread of its own pool).
//!
//! This module must stay a leaf: a plain thread-local value, no destructor, no imports.

use std::cell::Cell;

thread_local! {
    /// The address of the registry whose thread this is, or 0: a plain value (no destructor),
    /// so that the check every submission makes is a bare thread-local load.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The address of the registry whose thread this is, if it is a pool thread.
#[inline]
pub(super) fn registry() -> Option<usize> {
    Some(CURRENT.get()).filter(|&id| id != 0)
}

/// Marks this thread as a thread of the registry at address `id` (0: of none).
pub(super) fn set(id: usize) {
    CURRENT.set(id);
}
