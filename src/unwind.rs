//! Running user code so that its panics become values.
//!
//! User code (jobs, callbacks, initializers) always runs inside [`catch`]; a panic never unwinds
//! through the pool's own frames, whose invariants (locks held, counters moved) it would break.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

use crate::error::JobError;

/// Runs `f`, turning a panic into [`JobError::Panicked`].
///
/// `AssertUnwindSafe` is sound here because nothing `f` touched is observed again by us after a
/// panic: the job's state is dropped with it and the outcome slot only ever receives the error.
#[inline]
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, JobError> {
    panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|payload| JobError::Panicked { message: message(payload.as_ref()) })
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
