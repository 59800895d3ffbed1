//! The process that made an object: [`Owner`], its pid recorded at creation.
//!
//! `fork(2)` copies every object into the child, including handles on the parent's threads,
//! sockets and children, with nothing in them saying they were inherited. An object that must
//! not be used from another process records its `Owner` when it is made and asks
//! [`Owner::is_current`] before it touches anything of its maker's.
//!
//! This module must never take a lock or allocate: an inherited object asks it first, before
//! it touches a lock that a thread of its maker may have held at the fork.

/// The process that made an object (its pid when it was made). See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner(u32);

impl Owner {
    /// The calling process.
    pub(crate) fn current() -> Self {
        Owner(std::process::id())
    }

    /// Whether the calling process is the owner (`false` in a process forked from it).
    pub(crate) fn is_current(self) -> bool {
        self.0 == std::process::id()
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
