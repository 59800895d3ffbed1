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
//!
//! Where a panic happened (file:line:col) and its backtrace are not in the payload: only the
//! panic hook sees them. [`record_panic_details`] installs, once per process, a hook that keeps
//! them in a thread-local for [`catch`] to pick up, then calls the hook that was there before
//! (so the message still reaches stderr). Worker processes install it; a process that does not
//! gets errors without a location.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::Cell;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::JobError;

/// The longest backtrace text a panic carries; a longer one is cut there (on a character
/// boundary) and says so.
pub(crate) const MAX_BACKTRACE: usize = 64 << 10;

/// The longest location text a panic carries (a file path, a line and a column).
pub(crate) const MAX_LOCATION: usize = 4 << 10;

/// What the panic hook saw of the last panic on this thread.
struct PanicDetails {
    location: Option<String>,
    backtrace: Option<String>,
}

/// Whether [`record_panic_details`] installed its hook: until then [`catch`] has nothing to clear
/// or pick up, and skips the thread-local (the thread pool's per-job path stays as it was).
static RECORDING: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LAST_PANIC: Cell<Option<Box<PanicDetails>>> = const { Cell::new(None) };
}

/// Installs (once per process) the panic hook that records each panic's location and, when
/// backtraces are enabled (`RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` in the environment), its
/// backtrace, for [`catch`]. The hook that was installed before runs after it.
#[cfg_attr(not(feature = "process"), allow(dead_code))] // installed by worker processes only
pub(crate) fn record_panic_details() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let backtrace = Backtrace::capture();
            let details = PanicDetails {
                location: info.location().map(|l| bounded(l.to_string(), MAX_LOCATION)),
                backtrace: (backtrace.status() == BacktraceStatus::Captured)
                    .then(|| bounded(backtrace.to_string(), MAX_BACKTRACE)),
            };
            // `try_with`: a panic while this thread's locals are being destroyed records nothing.
            let _ = LAST_PANIC.try_with(|last| last.set(Some(Box::new(details))));
            previous(info);
        }));
        RECORDING.store(true, Ordering::Relaxed);
    });
}

/// `text` cut to at most `limit` bytes (on a character boundary), saying so if it was cut.
pub(crate) fn bounded(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [cut]");
    }
    text
}

/// Runs `f`, turning a panic into [`JobError::Panicked`], with the panic's location and
/// backtrace if [`record_panic_details`]' hook saw them.
///
/// `AssertUnwindSafe` is sound here because nothing `f` touched is observed again by us after a
/// panic: the job's state is dropped with it and the outcome slot only ever receives the error.
#[inline(always)] // on every job's path: out of line it costs a call and its frame per job
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, JobError> {
    // A record left by a panic that `f`'s caller (or an earlier job) caught itself is not this
    // panic's: `resume_unwind` does not run the hook.
    // Relaxed: a thread that has not seen the store yet was not running a job when the hook was
    // installed, so nothing of its own can be stale.
    let recording = RECORDING.load(Ordering::Relaxed);
    if recording {
        forget_recorded();
    }
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panicked(payload, recording))
}

/// Drops this thread's record of an earlier panic (kept out of line: only worker processes
/// record panics, and the thread pool's per-job path should not carry this code).
#[inline(never)]
fn forget_recorded() {
    drop(LAST_PANIC.try_with(Cell::take));
}

/// The error for a caught panic, with what the hook recorded of it.
#[cold]
fn panicked(payload: Box<dyn Any + Send>, recording: bool) -> JobError {
    let details = if recording { LAST_PANIC.try_with(Cell::take).ok().flatten() } else { None };
    let details = details.map(|d| Box::new(crate::error::PanicDetails::new(d.location, d.backtrace)));
    let error = JobError::Panicked { message: message(payload.as_ref()), details };
    drop_payload(payload);
    error
}

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
