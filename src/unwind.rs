//! Running user code so that its panics become values, and failing loudly when our own code
//! panics.
//!
//! User code (jobs, callbacks, initializers, wakers, and the `Drop` of anything a job captured
//! or produced) always runs inside [`catch`]; a panic never unwinds through the pool's own
//! frames, whose invariants (locks held, counters moved) it would break. A panic that escapes
//! anyway, on a thread the pool owns, is a bug of this crate: [`AbortOnPanic`] then aborts the
//! process, as rayon-core does, since a pool that carried on without the thread (and perhaps
//! without a job it had claimed, whose future would then never resolve) would fail silently.
//!
//! With `panic = "abort"` none of this applies: a panicking job aborts the process at once.

use std::any::Any;
use std::mem;
use std::panic::{self, AssertUnwindSafe};

use crate::error::JobError;

/// Runs `f`, turning a panic into [`JobError::Panicked`].
///
/// `AssertUnwindSafe` is sound here because nothing `f` touched is observed again by us after a
/// panic: the job's state is dropped with it and the outcome slot only ever receives the error.
#[inline]
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, JobError> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let error = JobError::Panicked { message: message(payload.as_ref()) };
        drop_payload(payload);
        error
    })
}

/// Drops a panic payload, whose `Drop` is user code too (`panic_any(value)`) and may panic
/// itself. The payload of that second panic is leaked rather than dropped: a value whose drop
/// panics every time would otherwise never let go.
#[cold]
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        mem::forget(again);
    }
}

/// The human-readable part of a panic payload.
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// Aborts the process if dropped during a panic: held for the whole life of every thread a
/// pool starts, so that a panic escaping the crate's own code there (never user code, which
/// runs under [`catch`]) stops everything loudly. The string names the thread's role.
#[derive(Debug)]
pub(crate) struct AbortOnPanic(pub(crate) &'static str);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "stealpool: internal error: {} panicked outside user code; the pool's state cannot be trusted, aborting",
                self.0
            );
            std::process::abort();
        }
    }
}
