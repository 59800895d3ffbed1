//! The synchronization primitives of the parts checked with loom: the thread pool's sleep
//! protocol (`thread/sleep.rs`), the future's state machine (`future/core.rs`) and the thread
//! pool's job cell (`thread/job_cell.rs`) take their atomics, `Mutex`, `Condvar` and `Parker`
//! from here, as rayon-core does.
//!
//! Normally these are re-exports of `std::sync::atomic` and `parking_lot`: the very same types,
//! so the indirection costs nothing. Under `cfg(loom)` they are loom's, wrapped to offer the
//! parking_lot API those modules use (`lock()` without poisoning, `Condvar::wait(&mut guard)`).
//! Loom does not model time: a timed wait on a `Condvar` there is an untimed wait that never
//! reports a timeout; a `Parker` with a deadline times out at once (see `Parker::park`).
//!
//! Run the models with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --no-default-features --lib loom`
//! (they are all in the core, so the optional features only lengthen the build).
//!
//! This module must stay a leaf: it depends on nothing else in the crate.

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex};

/// Atomics: `std`'s, or loom's under `cfg(loom)`.
pub(crate) mod atomic {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering, fence};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering, fence};
}

/// Parking a thread on an address until another thread says the condition it waits for may
/// hold: `parking_lot_core`'s `park`/`unpark_all` (a global table of queues keyed by address,
/// so the thing waited on needs no lock or condition variable of its own), or under `cfg(loom)`
/// a loom mutex and condition variable inside the `Parker` (which is then not empty).
///
/// The contract is parking_lot_core's: `validate` runs under the queue's lock, and
/// `unpark_all` takes that lock, so a thread that validated before the waker changed the
/// condition is in the queue when the waker looks, and one that validates after sees the change.
pub(crate) struct Parker {
    #[cfg(loom)]
    lock: loom::sync::Mutex<()>,
    #[cfg(loom)]
    cond: loom::sync::Condvar,
}

impl Parker {
    pub(crate) fn new() -> Self {
        Parker {
            #[cfg(loom)]
            lock: loom::sync::Mutex::new(()),
            #[cfg(loom)]
            cond: loom::sync::Condvar::new(),
        }
    }

    /// Blocks this thread on `key` if `validate()` holds, until an `unpark_all(key)` or the
    /// deadline. Returns whether the deadline passed. `validate` must not panic or park.
    #[cfg(not(loom))]
    pub(crate) fn park(
        &self,
        key: usize,
        validate: impl FnOnce() -> bool,
        deadline: Option<std::time::Instant>,
    ) -> bool {
        // SAFETY: `validate` and the two empty callbacks neither panic nor call into the
        // parking lot, which is all `park` asks of them; `key` is only compared.
        let result = unsafe {
            parking_lot_core::park(key, validate, || {}, |_, _| {}, parking_lot_core::DEFAULT_PARK_TOKEN, deadline)
        };
        result == parking_lot_core::ParkResult::TimedOut
    }

    /// Wakes every thread parked on `key`.
    #[cfg(not(loom))]
    pub(crate) fn unpark_all(&self, key: usize) {
        // SAFETY: `unpark_all` has no precondition beyond not being called from a parking
        // callback, which this is not.
        unsafe {
            parking_lot_core::unpark_all(key, parking_lot_core::DEFAULT_UNPARK_TOKEN);
        }
    }

    /// Loom has no time: a wait with a deadline is modelled as timing out at once (after
    /// `validate`), the earliest deadline there is, so the models explore a waiter that leaves
    /// while the job completes; a wait without one blocks until notified.
    #[cfg(loom)]
    pub(crate) fn park(
        &self,
        _key: usize,
        validate: impl FnOnce() -> bool,
        deadline: Option<std::time::Instant>,
    ) -> bool {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !validate() {
            return false;
        }
        if deadline.is_some() {
            return true;
        }
        drop(self.cond.wait(guard).unwrap_or_else(|e| e.into_inner()));
        false
    }

    #[cfg(loom)]
    pub(crate) fn unpark_all(&self, _key: usize) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cond.notify_all();
    }
}

#[cfg(loom)]
pub(crate) use self::model::{Condvar, Mutex};

#[cfg(loom)]
mod model {
    use std::fmt;
    use std::ops::{Deref, DerefMut};
    use std::time::Duration;

    /// loom's mutex with parking_lot's API.
    pub(crate) struct Mutex<T> {
        inner: loom::sync::Mutex<T>,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex { inner: loom::sync::Mutex::new(value) }
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard { guard: Some(self.inner.lock().unwrap_or_else(|e| e.into_inner())) }
        }
    }

    impl<T> fmt::Debug for Mutex<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Mutex")
        }
    }

    /// The guard: `None` only inside `Condvar::wait`.
    pub(crate) struct MutexGuard<'a, T> {
        guard: Option<loom::sync::MutexGuard<'a, T>>,
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
