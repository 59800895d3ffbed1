//! The process that made an object: [`Owner`], its pid recorded at creation.
//!
//! `fork(2)` copies every object into the child, including handles on the parent's threads,
//! sockets and children, with nothing in them saying they were inherited. An object that must
//! not be used from another process records its `Owner` when it is made and asks
//! [`Owner::is_current`] before it touches anything of its maker's.
//!
//! The calling process's pid is cached (a process pool asks on every submission, and `getpid`
//! is a system call): a `pthread_atfork` child handler clears the cache in every child that
//! `fork(2)` makes (glibc's `fork`, which `nix` and `libc` call), so a forked child asks the
//! kernel again. A child made by a raw `clone` system call, which runs no such handler, would
//! keep its parent's pid: nothing in this crate does that, and a program that does it cannot
//! run Rust code there safely anyway (the allocator's locks are not reset either).
//!
//! This module must never take a lock or allocate: an inherited object asks it first, before
//! it touches a lock that a thread of its maker may have held at the fork.

use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::libc;

/// The calling process's pid, or 0 if not known yet (or cleared in a forked child).
static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn forget_pid_in_child() {
    PID.store(0, Ordering::Relaxed);
}

/// Whether the child handler is registered (else the cache stays unused).
static ATFORK_OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The calling process's pid: from the cache once the child handler that clears it is
/// registered (an `Owner` exists only after [`Owner::current`] registered it), else asked.
fn pid_now() -> u32 {
    if ATFORK_OK.load(Ordering::Relaxed) { current_pid() } else { std::process::id() }
}

/// The calling process's pid, from the cache when it is filled.
fn current_pid() -> u32 {
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// The process that made an object (its pid when it was made). See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner(u32);

impl Owner {
    /// The calling process.
    pub(crate) fn current() -> Self {
        static ATFORK: Once = Once::new();
        ATFORK.call_once(|| {
            // SAFETY: registers a child handler that only stores to an atomic (async-signal
            // safe, as a handler run in a forked child must be); no other handlers.
            let registered = unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) } == 0;
            if !registered {
                // Without the handler the cache could outlive a fork: never fill it.
                PID.store(0, Ordering::Relaxed);
            }
            ATFORK_OK.store(registered, Ordering::Relaxed);
        });
        Owner(pid_now())
    }

    /// Whether the calling process is the owner (`false` in a process forked from it).
    pub(crate) fn is_current(self) -> bool {
        self.0 == pid_now()
    }

    /// The owner's pid.
    pub(crate) fn pid(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_maker_is_the_owner() {
        let here = Owner::current();
        assert!(here.is_current());
        assert_eq!(here.pid(), std::process::id());
        // SAFETY: the child only compares two numbers (`getpid`, no lock, no allocation) and
        // leaves with `_exit`, running nothing of the parent's.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let inherited = !here.is_current() && Owner::current().is_current();
                // SAFETY: `_exit` ends the process at once, running nothing else.
                unsafe { nix::libc::_exit(if inherited { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0), "the child is not the owner");
            }
        }
        assert!(here.is_current(), "still the parent's");
    }
}
