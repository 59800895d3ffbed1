//! Which registry the current thread belongs to, if any: a leaf that both the registry and
//! the job cells read (a job runs inline only on a thread of its own pool).
//!
//! This module must stay a leaf: a plain thread-local value, no destructor, no imports.

use std::cell::Cell;

thread_local! {
    /// The address of the registry whose thread this is (or 0) and that registry's tag, the
    /// number its job cells carry: a plain value (no destructor), so that the check every
    /// submission makes is a bare thread-local load.
    static CURRENT: Cell<(usize, u32)> = const { Cell::new((0, 0)) };
}

/// The address of the registry whose thread this is, if it is a pool thread.
#[inline]
pub(super) fn registry() -> Option<usize> {
    Some(CURRENT.get().0).filter(|&id| id != 0)
}

/// The tag of the registry whose thread this is (see `Registry::tag`), if it has one.
#[inline]
pub(super) fn tag() -> Option<u32> {
    Some(CURRENT.get().1).filter(|&tag| tag != 0)
}

/// Marks this thread as a thread of the registry at address `id` with tag `tag` (0, 0: of none).
pub(super) fn set(id: usize, tag: u32) {
    CURRENT.set((id, tag));
}
