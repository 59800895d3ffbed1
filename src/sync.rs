//! The synchronization primitives of the parts checked with loom: the thread pool's sleep
//! protocol (`thread/sleep.rs`) and the future's state machine (`future/core.rs`) take their
//! atomics, `Mutex`, `MutexGuard` and `Condvar` from here, as rayon-core does.
//!
//! Normally these are re-exports of `std::sync::atomic` and `parking_lot`: the very same types,
//! so the indirection costs nothing. Under `cfg(loom)` they are loom's, wrapped to offer the
//! parking_lot API those modules use (`lock()` without poisoning, `Condvar::wait(&mut guard)`,
//! `MutexGuard::unlocked`). Loom does not model time: a timed wait there is an untimed wait
//! that never reports a timeout, so the models check the paths without deadlines.
//!
//! Run the models with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --lib loom`.
//!
//! This module must stay a leaf: it depends on nothing else in the crate.

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};

/// Atomics: `std`'s, or loom's under `cfg(loom)`.
pub(crate) mod atomic {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering, fence};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicUsize, Ordering, fence};
}

#[cfg(loom)]
pub(crate) use self::model::{Condvar, Mutex, MutexGuard};

#[cfg(loom)]
mod model {
    use std::fmt;
    use std::ops::{Deref, DerefMut};
    use std::time::{Duration, Instant};

    /// loom's mutex with parking_lot's API.
    pub(crate) struct Mutex<T> {
        inner: loom::sync::Mutex<T>,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex { inner: loom::sync::Mutex::new(value) }
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard { mutex: self, guard: Some(self.inner.lock().unwrap_or_else(|e| e.into_inner())) }
        }
    }

    impl<T> fmt::Debug for Mutex<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Mutex")
        }
    }

    /// The guard: `None` only inside `Condvar::wait` and `MutexGuard::unlocked`.
    pub(crate) struct MutexGuard<'a, T> {
        mutex: &'a Mutex<T>,
        guard: Option<loom::sync::MutexGuard<'a, T>>,
    }

    impl<T> MutexGuard<'_, T> {
        /// Runs `f` with the mutex released, as parking_lot's `MutexGuard::unlocked`.
        pub(crate) fn unlocked<U>(this: &mut Self, f: impl FnOnce() -> U) -> U {
            drop(this.guard.take());
            let out = f();
            this.guard = Some(this.mutex.inner.lock().unwrap_or_else(|e| e.into_inner()));
            out
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;

        fn deref(&self) -> &T {
            self.guard.as_ref().expect("guard is held")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.guard.as_mut().expect("guard is held")
        }
    }

    /// What a timed wait returned; under loom it never timed out.
    #[derive(Debug)]
    pub(crate) struct WaitTimeoutResult;

    impl WaitTimeoutResult {
        pub(crate) fn timed_out(&self) -> bool {
            false
        }
    }

    /// loom's condition variable with parking_lot's API.
    pub(crate) struct Condvar {
        inner: loom::sync::Condvar,
    }

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar { inner: loom::sync::Condvar::new() }
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let held = guard.guard.take().expect("guard is held");
            guard.guard = Some(self.inner.wait(held).unwrap_or_else(|e| e.into_inner()));
        }

        /// Loom has no time: waits for a notification.
        pub(crate) fn wait_until<T>(&self, guard: &mut MutexGuard<'_, T>, _deadline: Instant) -> WaitTimeoutResult {
            self.wait(guard);
            WaitTimeoutResult
        }

        /// Loom has no time: waits for a notification.
        pub(crate) fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, _timeout: Duration) -> WaitTimeoutResult {
            self.wait(guard);
            WaitTimeoutResult
        }

        pub(crate) fn notify_one(&self) {
            self.inner.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.inner.notify_all();
        }
    }

    impl fmt::Debug for Condvar {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Condvar")
        }
    }
}
