//! State that belongs to the process that created it: [`PerProcess`].
//!
//! A `static` survives `fork`: a child forked while it was filled finds its parent's copy, with
//! descriptors it shares with the parent (sockets whose frames would interleave with the
//! parent's, a fork server that answers only the parent) and memory the parent goes on writing.
//! `PerProcess` records the pid with the state; in any other process the state reads as fresh
//! (`T::default()`), and the stale copy is dropped, which closes only this process's copies of
//! its descriptors, nothing of the parent's.
//!
//! This module must never hand a process state that another process filled.

use parking_lot::Mutex;

/// State of one process, reset in a process forked from it. See the module docs.
///
/// The lock is an ordinary mutex: a child forked while another thread of its parent held it
/// would find it held for ever, as with any lock (forking a threaded process is only safe
/// when the child then runs no such code, which is why workers come from the fork server).
pub(crate) struct PerProcess<T> {
    state: Mutex<Option<(u32, T)>>,
}

#[cfg_attr(
    not(test),
    expect(dead_code, reason = "adopted by the manager and the fork-server handle in wave 2 of issue 14")
)]
impl<T: Default> PerProcess<T> {
    /// Empty state: filled with `T::default()` on first use in each process.
    pub(crate) const fn new() -> Self {
        PerProcess { state: Mutex::new(None) }
    }

    /// Runs `f` on this process's state (under a lock: keep it short).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let pid = std::process::id();
        let mut state = self.state.lock();
        if state.as_ref().is_some_and(|(owner, _)| *owner != pid) {
            // Inherited: drop the parent's copy (closing only this process's descriptors).
            *state = None;
        }
        let (_, value) = state.get_or_insert_with(|| (pid, T::default()));
        f(value)
    }
}

impl<T> std::fmt::Debug for PerProcess<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owner = self.state.try_lock().map(|s| s.as_ref().map(|(pid, _)| *pid));
        f.debug_struct("PerProcess").field("owner", &owner).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static STATE: PerProcess<u64> = PerProcess::new();

    #[test]
    fn a_forked_child_starts_afresh_and_leaves_its_parent_alone() {
        STATE.with(|v| *v = 7);
        assert_eq!(STATE.with(|v| *v), 7, "kept in its own process");
        // SAFETY: the child only locks `STATE` (which no other thread of this test binary
        // touches), reads and writes a number (nothing that allocates or takes another lock),
        // and leaves with `_exit`, running nothing of the parent's (no destructors, no atexit
        // hooks, no test harness).
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let fresh = STATE.with(|v| *v == 0);
                STATE.with(|v| *v = 9);
                let own = STATE.with(|v| *v == 9);
                // SAFETY: `_exit` ends the process at once, running nothing else.
                unsafe { nix::libc::_exit(if fresh && own { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0), "the child saw fresh state");
            }
        }
        assert_eq!(STATE.with(|v| *v), 7, "the child's state never reaches the parent");
    }
}
