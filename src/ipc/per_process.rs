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

use std::time::Duration;

use parking_lot::Mutex;

use super::Owner;

/// State of one process, reset in a process forked from it. See the module docs.
///
/// The lock is an ordinary mutex: a child forked while another thread of its parent held it
/// would find it held for ever, as with any lock (forking a threaded process is only safe
/// when the child then runs no such code, which is why workers come from the fork server).
/// Code that must return whatever happened at a fork (an `atexit` hook) uses
/// [`PerProcess::try_with_for`].
pub(crate) struct PerProcess<T> {
    state: Mutex<Option<(Owner, T)>>,
}

impl<T: Default> PerProcess<T> {
    /// Empty state: filled with `T::default()` on first use in each process.
    pub(crate) const fn new() -> Self {
        PerProcess { state: Mutex::new(None) }
    }

    /// Runs `f` on this process's state (under a lock: keep it short).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(Self::own(&mut self.state.lock()))
    }

    /// [`with`](Self::with), waiting at most `timeout` for the lock: `None` if it stayed held
    /// (by another thread of this process, or by a thread of the parent at the fork).
    #[cfg_attr(
        not(any(test, feature = "process")),
        expect(dead_code, reason = "the fork-server handle is its one user")
    )]
    pub(crate) fn try_with_for<R>(&self, timeout: Duration, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut state = self.state.try_lock_for(timeout)?;
        Some(f(Self::own(&mut state)))
    }

    /// This process's value in `state`: an inherited one is dropped (closing only this
    /// process's copies of its descriptors) and replaced by `T::default()`.
    fn own(state: &mut Option<(Owner, T)>) -> &mut T {
        if state.as_ref().is_some_and(|(owner, _)| !owner.is_current()) {
            *state = None;
        }
        &mut state.get_or_insert_with(|| (Owner::current(), T::default())).1
    }
}

impl<T> std::fmt::Debug for PerProcess<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owner = self.state.try_lock().map(|s| s.as_ref().map(|(owner, _)| owner.pid()));
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

    #[test]
    fn try_with_for_gives_up_while_another_thread_holds_the_lock() {
        static HELD: PerProcess<u64> = PerProcess::new();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            HELD.with(|v| {
                *v = 3;
                locked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            });
        });
        locked_rx.recv().unwrap();
        assert_eq!(HELD.try_with_for(Duration::from_millis(20), |v| *v), None, "held: it gives up");
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(HELD.try_with_for(Duration::from_secs(60), |v| std::mem::replace(v, 4)), Some(3), "free: it runs");
        assert_eq!(HELD.with(|v| *v), 4, "on the same state as `with`");
    }
}
