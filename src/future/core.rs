//! The shared state behind a [`Future`](super::Future): one per job, shared by the handle and by
//! whoever runs the job (a worker thread, a process pool's dispatcher, a promise).
//!
//! # States
//! ```text
//!   Pending ──start──▶ Running ──claim──▶ Completing ──▶ Finishing ──▶ Done
//!      │                                                  ▲
//!      └──────────────────────cancel──────────────────────┘
//! ```
//! The whole state is one atomic word (`Head::state`): the phase, how the job ended, and a
//! few flags. Exactly one party moves the job out of `Pending` (the `start`, `cancel` or
//! `try_finish` whose compare-and-swap wins), and one party claims the outcome for writing
//! (`Completing`, or `Finishing` straight from `Pending` for a cancel). That party owns the
//! outcome's storage until it publishes it. `Finishing` is the window in which done callbacks
//! run on the completing thread with a borrow of the outcome, in place; only after the last
//! callback returns is `Done` published, so the handle's owner can never move the value out
//! while a callback still reads it. `is_done` is already true during `Finishing` (as in
//! CPython, where callbacks run after the state is `FINISHED`); the blocking `result*` calls
//! wait for `Done`.
//!
//! What few jobs need (callbacks, an async waker) lives in a side box allocated on first use;
//! an error is boxed into the outcome's own storage. A job with no callback, no waker and no
//! error therefore costs its outcome plus a 16-byte head, and takes no lock: the threads that
//! block on it park on the state word's address (`crate::sync::Parker`, parking_lot_core).
//!
//! Callbacks added once `Done` run at once on the caller's thread: the outcome is lent to that
//! thread (the `LENT` flag) while they run, and callbacks that arrive meanwhile (from a
//! callback itself, or from another thread sharing `&Future`) are queued in the side box and
//! run by the lender before it clears the flag. Nobody ever waits for a lent outcome, so a
//! callback that adds a callback to its own future cannot deadlock, and `T` only has to be
//! `Send` (one thread at a time borrows it).
//!
//! The memory orderings are argued in `src/thread/JOB_CELL.md`. No user code ever runs while
//! the side box's mutex is held.
//!
//! (Over 500 lines: one state machine whose every step carries its safety argument; the loom
//! models are in `core_loom.rs`.)

use std::cell::UnsafeCell;
use std::mem::{self, ManuallyDrop, MaybeUninit};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use crate::error::JobError;
use crate::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use crate::sync::{Mutex, Parker};
use crate::unwind;

/// A done callback: receives a borrow of the outcome.
pub(crate) type Callback<T> = Box<dyn FnOnce(Result<&T, &JobError>) + Send>;

// The state word. Bits 0-2: the phase.
const PHASE: u32 = 0b111;
pub(crate) const PENDING: u32 = 0;
const RUNNING: u32 = 1;
/// The outcome is being written by the party that claimed it.
const COMPLETING: u32 = 2;
const FINISHING: u32 = 3;
const DONE: u32 = 4;
// Bits 3-4: how the job ended, set with `Finishing` (or `Done`).
const ENDING: u32 = 0b11 << 3;
const VALUE: u32 = 1 << 3;
const FAILED: u32 = 2 << 3;
const CANCELLED: u32 = 3 << 3;
/// The outcome was moved out.
const TAKEN: u32 = 1 << 5;
/// The outcome is lent to a thread running late callbacks.
const LENT: u32 = 1 << 6;
/// The side box holds callbacks (or a waker) for whoever owns the outcome.
const NOTIFY: u32 = 1 << 7;
/// A thread is (or was) parked on the state word, waiting for `Done`.
const PARKED: u32 = 1 << 8;
/// References of a thread pool's job cell (`thread/job_cell.rs`): the queue's and the
/// future's. Cells owned through an `Arc` leave them clear.
pub(crate) const QUEUE_REF: u32 = 1 << 9;
pub(crate) const HANDLE_REF: u32 = 1 << 10;
/// A thread began a blocking wait for the outcome: a hint to the thread pool's runner that
/// someone is waiting on its jobs, so that it looks for the next one without delay
/// (`thread/registry.rs`, `Registry::search`). Never cleared; nothing depends on it for safety.
const WATCHED: u32 = 1 << 11;

static CANCELLED_ERROR: JobError = JobError::Cancelled;
static TAKEN_ERROR: JobError = JobError::AlreadyTaken;

/// How a finished job ended, kept after its outcome is moved out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Value,
    Failed,
    Cancelled,
}

/// A finished job's outcome in place: which field is live is in the state word (`VALUE`,
/// `FAILED`; a cancel stores nothing). An error is boxed, so the common outcome costs `T`.
#[repr(C)]
pub(crate) union Outcome<T> {
    value: ManuallyDrop<T>,
    error: ManuallyDrop<Box<JobError>>,
}

/// The rare parts, allocated on first use and freed with the cell.
struct Side<T> {
    inner: Mutex<SideInner<T>>,
}

struct SideInner<T> {
    callbacks: Vec<Callback<T>>,
    waker: Option<Waker>,
}

/// The part of a cell before its storage: the same in a [`Core`] and in a thread pool's job
/// cell, whose storage starts with an [`Outcome`] too (see `thread/job_cell.rs`).
#[repr(C)]
pub(crate) struct Head<T> {
    state: AtomicU32,
    /// For the thread pool: the number of the pool that may run the job inline (0: none).
    tag: u32,
    side: AtomicPtr<Side<T>>,
    parker: Parker,
}

impl<T> Head<T> {
    pub(crate) fn new(state: u32, tag: u32) -> Self {
        Head { state: AtomicU32::new(state), tag, side: AtomicPtr::new(ptr::null_mut()), parker: Parker::new() }
    }
}

/// The state of one job. See the module docs for the protocol.
#[repr(C)]
pub(crate) struct Core<T> {
    head: Head<T>,
    outcome: UnsafeCell<MaybeUninit<Outcome<T>>>,
}

// SAFETY: the outcome is accessed by one thread at a time (the protocol of the module docs:
// its writer before publication, then a callback runner or the lender, then the taker), or
// read by several only where it is an error (`JobError` is `Sync`); moving a `T: Send` between
// those threads is sound. The side box is behind a mutex; the callbacks and waker are `Send`.
unsafe impl<T: Send> Sync for Core<T> {}
// SAFETY: as for `Sync`: everything in it may move to another thread with `T: Send`.
unsafe impl<T: Send> Send for Core<T> {}

impl<T> Core<T> {
    /// Where the outcome starts: a thread pool's job cell puts its storage at the same place.
    pub(crate) const OUTCOME_OFFSET: usize = mem::offset_of!(Core<T>, outcome);

    pub(crate) fn new() -> Self {
        Core { head: Head::new(PENDING, 0), outcome: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    fn state(&self) -> &AtomicU32 {
        &self.head.state
    }

    /// The number of the pool this job belongs to (0: none).
    pub(crate) fn tag(&self) -> u32 {
        self.head.tag
    }

    /// The parking key: the state word's address.
    fn key(&self) -> usize {
        &self.head.state as *const AtomicU32 as usize
    }

    fn storage(&self) -> *mut Outcome<T> {
        self.outcome.get().cast()
    }

    /// Moves `Pending` to `Running`. Returns `false` if the job was cancelled or already
    /// started; the caller must then not run it.
    #[inline]
    pub(crate) fn try_start(&self) -> bool {
        let mut s = self.state().load(Ordering::Relaxed);
        loop {
            if s & PHASE != PENDING {
                return false;
            }
            match self.state().compare_exchange_weak(s, s | RUNNING, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => s = actual,
            }
        }
    }

    /// Cancels a job that has not started. Returns whether the job is (now or already) cancelled.
    pub(crate) fn cancel(&self) -> bool {
        self.cancel_and(|| {})
    }

    /// Like [`cancel`](Core::cancel), and if this call is the one that cancels, runs `discard`
    /// on this thread first: the backend drops the job there, so that what it captured goes
    /// at once and not when the last handle goes.
    ///
    /// `discard` runs after the job left `Pending` (so nobody else will ever start it: whoever
    /// owns the job's storage may touch it in `discard`). Meanwhile the job is already seen as
    /// done and cancelled (`Finishing`), and the callbacks run after `discard`.
    pub(crate) fn cancel_and(&self, discard: impl FnOnce()) -> bool {
        let mut s = self.state().load(Ordering::Relaxed);
        loop {
            if s & PHASE != PENDING {
                return s & PHASE >= FINISHING && s & ENDING == CANCELLED;
            }
            let cancelled = s | FINISHING | CANCELLED;
            match self.state().compare_exchange_weak(s, cancelled, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        discard();
        self.publish(CANCELLED, 0);
        true
    }

    /// Ends a job that was started (or is still pending) with `outcome`, unless it already
    /// ended. Returns whether this call ended it. The process pool uses it where a worker's
    /// death, a time limit or a forced cancel race with the job's own reply.
    #[cfg_attr(not(feature = "process"), allow(dead_code))] // used by the process pool only
    pub(crate) fn finish_if_unfinished(&self, outcome: Result<T, JobError>) -> bool {
        self.try_finish(outcome).is_ok()
    }

    /// Like [`finish_if_unfinished`](Core::finish_if_unfinished), but hands `outcome` back if
    /// the job had already ended (a promise set twice, or set after a cancel).
    pub(crate) fn try_finish(&self, outcome: Result<T, JobError>) -> Result<(), Result<T, JobError>> {
        let mut s = self.state().load(Ordering::Relaxed);
        loop {
            if !matches!(s & PHASE, PENDING | RUNNING) {
                return Err(outcome);
            }
            let claimed = (s & !PHASE) | COMPLETING;
            match self.state().compare_exchange_weak(s, claimed, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        // SAFETY: the swap to `Completing` made this thread the outcome's only writer.
        let ending = unsafe { self.write_outcome(outcome) };
        self.publish(ending, 0);
        Ok(())
    }

    /// Stores the outcome of a job this caller started, runs the callbacks, wakes the waiters.
    pub(crate) fn complete(&self, outcome: Result<T, JobError>) {
        let finished = self.try_finish(outcome);
        debug_assert!(finished.is_ok(), "complete() on a job that had ended");
    }

    /// Writes `outcome` into the storage; returns its ending bits.
    ///
    /// # Safety
    /// The caller owns the storage: it claimed the outcome and has not published it.
    pub(crate) unsafe fn write_outcome(&self, outcome: Result<T, JobError>) -> u32 {
        let (stored, ending) = match outcome {
            Ok(value) => (Outcome { value: ManuallyDrop::new(value) }, VALUE),
            Err(JobError::Cancelled) => return CANCELLED,
            Err(e) => (Outcome { error: ManuallyDrop::new(Box::new(e)) }, FAILED),
        };
        // SAFETY: the caller owns the storage, which holds nothing live.
        unsafe { ptr::write(self.storage(), stored) };
        ending
    }

    /// A borrow of the published outcome whose ending is `ending`.
    ///
    /// # Safety
    /// The outcome is published with `ending` (observed with `Acquire`), not taken, and this
    /// thread may borrow it: it runs the callbacks (`Finishing`), holds it lent, or reads an
    /// error (shared by design: `JobError` is `Sync`).
    unsafe fn outcome_ref(&self, ending: u32) -> Result<&T, &JobError> {
        // SAFETY: per the contract, the field the ending names is live and not written.
        unsafe {
            match ending {
                VALUE => Ok(&(*self.storage()).value),
                FAILED => Err(&(*self.storage()).error),
                _ => Err(&CANCELLED_ERROR),
            }
        }
    }

    /// Publishes the outcome this thread owns (written, or none for a cancel): runs the
    /// callbacks queued so far with it in `Finishing`, then moves to `Done` and wakes the
    /// waker and the parked threads. `release` is reference bits to clear in the same step
    /// when no thread is parked (the thread pool's queue reference). Returns the state just
    /// before `Done` and whether `release` was applied; if it was, this thread must not touch
    /// the cell again unless it still holds another reference.
    pub(crate) fn publish(&self, ending: u32, release: u32) -> (u32, bool) {
        let state = self.state();
        let mut waker: Option<Waker> = None;
        let mut s = state.load(Ordering::Acquire);
        let (before, released) = loop {
            if s & NOTIFY != 0 {
                if s & PHASE != FINISHING {
                    // Release: a callback's own thread (another `&Future`) may read the
                    // outcome's ending and an error from here on.
                    let finishing = (s & !PHASE) | FINISHING | ending;
                    if let Err(actual) = state.compare_exchange_weak(s, finishing, Ordering::AcqRel, Ordering::Acquire)
                    {
                        s = actual;
                        continue;
                    }
                }
                // SAFETY: this thread owns the published outcome until `Done`.
                let outcome = unsafe { self.outcome_ref(ending) };
                self.run_queued(outcome, &mut waker);
                s = state.load(Ordering::Acquire);
                continue;
            }
            let dropped = if s & PARKED == 0 { release } else { 0 };
            let done = (s & !(PHASE | dropped)) | DONE | ending;
            match state.compare_exchange_weak(s, done, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break (s, dropped != 0),
                Err(actual) => s = actual,
            }
        };
        if before & PARKED != 0 {
            // Not released (a parked thread may not hold a reference): the cell is alive.
            self.head.parker.unpark_all(self.key());
        }
        if let Some(w) = waker {
            // An async runtime's code: a panic in it must not unwind through the completer.
            let _ = unwind::catch(|| w.wake());
        }
        (before, released)
    }

    /// Takes the queued callbacks (and waker) out of the side box and clears `NOTIFY`, under
    /// the box's lock; then runs the callbacks with the lock released.
    fn run_queued(&self, outcome: Result<&T, &JobError>, waker: &mut Option<Waker>) {
        // Acquire: `NOTIFY` is set only once the box is installed.
        let side = self.head.side.load(Ordering::Acquire);
        debug_assert!(!side.is_null(), "NOTIFY without a side box");
        // SAFETY: installed boxes live as long as the cell.
        let side = unsafe { &*side };
        let (batch, new_waker) = {
            let mut g = side.inner.lock();
            let batch = mem::take(&mut g.callbacks);
            let new_waker = g.waker.take();
            self.state().fetch_and(!NOTIFY, Ordering::Relaxed);
            (batch, new_waker)
        };
        if let Some(new) = new_waker
            && let Some(old) = waker.replace(new)
            && !waker.as_ref().is_some_and(|w| w.will_wake(&old))
        {
            // A task that polled again with another waker: wake the old one too (it re-polls).
            let _ = unwind::catch(|| old.wake());
        }
        for cb in batch {
            let _ = unwind::catch(|| cb(outcome));
        }
    }

    /// The side box, installed now if there is none.
    fn side(&self) -> &Side<T> {
        let p = self.head.side.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: installed boxes live as long as the cell.
            return unsafe { &*p };
        }
        let fresh =
            Box::into_raw(Box::new(Side { inner: Mutex::new(SideInner { callbacks: Vec::new(), waker: None }) }));
        match self.head.side.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just installed; it lives as long as the cell.
            Ok(_) => unsafe { &*fresh },
            Err(installed) => {
                // SAFETY: `fresh` was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                // SAFETY: installed boxes live as long as the cell.
                unsafe { &*installed }
            }
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state().load(Ordering::Acquire) & PHASE >= FINISHING
    }

    pub(crate) fn is_running(&self) -> bool {
        matches!(self.state().load(Ordering::Acquire) & PHASE, RUNNING | COMPLETING)
    }

    pub(crate) fn ending(&self) -> Option<Ending> {
        let s = self.state().load(Ordering::Acquire);
        if s & PHASE < FINISHING {
            return None;
        }
        Some(match s & ENDING {
            VALUE => Ending::Value,
            FAILED => Ending::Failed,
            _ => Ending::Cancelled,
        })
    }

    /// The job's error, if it finished with one (and was not taken out).
    pub(crate) fn error(&self) -> Option<JobError> {
        let s = self.state().load(Ordering::Acquire);
        if s & PHASE < FINISHING || s & TAKEN != 0 || s & ENDING == VALUE {
            return None;
        }
        // SAFETY: published (`Acquire`), not taken (a take needs the only handle, and this
        // caller holds one), and an error: shared reads are allowed.
        unsafe { self.outcome_ref(s & ENDING) }.err().cloned()
    }

    /// Adds a callback; runs it now, on this thread, if the job is done.
    pub(crate) fn add_callback(&self, cb: Callback<T>) {
        let state = self.state();
        let mut s = state.load(Ordering::Acquire);
        loop {
            if s & PHASE != DONE || s & LENT != 0 {
                // The outcome has an owner (its completer, or a lender), who runs what is
                // queued before giving it up: queue it, unless it was given up meanwhile.
                let side = self.side();
                let mut g = side.inner.lock();
                s = state.load(Ordering::Relaxed);
                loop {
                    if s & PHASE == DONE && s & LENT == 0 {
                        break;
                    }
                    match state.compare_exchange_weak(s, s | NOTIFY, Ordering::Release, Ordering::Relaxed) {
                        Ok(_) => {
                            g.callbacks.push(cb);
                            return;
                        }
                        Err(actual) => s = actual,
                    }
                }
                drop(g);
                s = state.load(Ordering::Acquire);
                continue;
            }
            if s & TAKEN != 0 || s & ENDING == CANCELLED {
                // Nothing in the storage to borrow: no need to lend it.
                let e = if s & TAKEN != 0 { &TAKEN_ERROR } else { &CANCELLED_ERROR };
                let _ = unwind::catch(|| cb(Err(e)));
                return;
            }
            match state.compare_exchange_weak(s, s | LENT, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        // SAFETY: `Done`, not taken, and lent to this thread by the swap above.
        let outcome = unsafe { self.outcome_ref(s & ENDING) };
        let _ = unwind::catch(|| cb(outcome));
        let mut waker = None;
        let mut s = state.load(Ordering::Acquire);
        loop {
            if s & NOTIFY != 0 {
                self.run_queued(outcome, &mut waker);
                s = state.load(Ordering::Acquire);
                continue;
            }
            match state.compare_exchange_weak(s, s & !LENT, Ordering::Release, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        if let Some(w) = waker {
            let _ = unwind::catch(|| w.wake());
        }
    }

    /// Blocks until `Done` or the deadline. Returns whether the job is done.
    pub(crate) fn wait_done(&self, deadline: Option<Instant>) -> bool {
        let state = self.state();
        // Relaxed: a hint for the runner's scheduling (see `WATCHED`), which orders nothing.
        if state.fetch_or(WATCHED, Ordering::Relaxed) & PHASE == DONE {
            return true;
        }
        // A tiny job is done within a microsecond or so, less than a park and an unpark cost:
        // spin briefly first (about 127 spin hints, doubling; never yielding the core).
        #[cfg(not(loom))]
        for step in 0..7 {
            if state.load(Ordering::Acquire) & PHASE == DONE {
                return true;
            }
            for _ in 0..1u32 << step {
                std::hint::spin_loop();
            }
        }
        loop {
            let s = state.load(Ordering::Acquire);
            if s & PHASE == DONE {
                return true;
            }
            if s & PARKED == 0
                && state.compare_exchange_weak(s, s | PARKED, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            let still_waiting = || {
                let s = state.load(Ordering::Relaxed);
                s & PHASE != DONE && s & PARKED != 0
            };
            if self.head.parker.park(self.key(), still_waiting, deadline) {
                return state.load(Ordering::Acquire) & PHASE == DONE;
            }
        }
    }

    /// Moves the outcome out if the job is `Done`; `None` if it is not.
    ///
    /// Callers hold the only handle (`&mut Future` or `Future` by value), so no late callback
    /// can be borrowing the outcome (`LENT` needs a `&Future` running `add_callback`).
    pub(crate) fn try_take(&self) -> Option<Result<T, JobError>> {
        let s = self.state().load(Ordering::Acquire);
        if s & PHASE != DONE {
            return None;
        }
        if s & (TAKEN | LENT) != 0 {
            return Some(Err(JobError::AlreadyTaken));
        }
        // SAFETY: `Done` observed with `Acquire`, not taken, not lent, and this caller holds
        // the only handle: the live field is this thread's to move out, once (`TAKEN`).
        let outcome = unsafe {
            match s & ENDING {
                VALUE => Ok(ManuallyDrop::into_inner(ptr::read(&(*self.storage()).value))),
                FAILED => Err(*ManuallyDrop::into_inner(ptr::read(&(*self.storage()).error))),
                _ => Err(JobError::Cancelled),
            }
        };
        if s & (QUEUE_REF | HANDLE_REF) == HANDLE_REF {
            // A job cell whose queue reference is gone: this handle is its only reference,
            // so no other thread reads or writes the word any more (the queue's release was
            // observed with `Acquire` above), and a plain store does what `fetch_or` would,
            // without a locked instruction.
            self.state().store(s | TAKEN, Ordering::Relaxed);
        } else {
            self.state().fetch_or(TAKEN, Ordering::Relaxed);
        }
        Some(outcome)
    }

    /// Like `try_take`, but registers `waker` when the job is not done.
    pub(crate) fn poll_take(&self, waker: &Waker) -> Option<Result<T, JobError>> {
        if self.state().load(Ordering::Acquire) & PHASE != DONE {
            let side = self.side();
            let mut g = side.inner.lock();
            let mut s = self.state().load(Ordering::Relaxed);
            while s & PHASE != DONE {
                match self.state().compare_exchange_weak(s, s | NOTIFY, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => {
                        match &g.waker {
                            Some(w) if w.will_wake(waker) => {}
                            _ => g.waker = Some(waker.clone()),
                        }
                        return None;
                    }
                    Err(actual) => s = actual,
                }
            }
        }
        self.try_take()
    }

    pub(crate) fn describe(&self) -> &'static str {
        let s = self.state().load(Ordering::Acquire);
        match (s & PHASE, s & ENDING) {
            (PENDING, _) => "pending",
            (RUNNING | COMPLETING, _) => "running",
            (_, CANCELLED) => "cancelled",
            (_, FAILED) => "failed",
            _ => "finished",
        }
    }

    /// The phase bits of a state (for the job cell).
    pub(crate) fn phase_of(state: u32) -> u32 {
        state & PHASE
    }

    /// Whether a thread began a blocking wait for the outcome before `state` (for the job
    /// cell's runner, given the state `publish` replaced).
    pub(crate) fn watched(state: u32) -> bool {
        state & WATCHED != 0
    }

    /// Clears `bits` (reference bits) from the state; returns the state before.
    pub(crate) fn clear(&self, bits: u32) -> u32 {
        // AcqRel: as an `Arc`'s count, this thread's uses of the cell come before the free,
        // and the thread that frees sees every other thread's.
        self.state().fetch_and(!bits, Ordering::AcqRel)
    }

    /// The state, for the cell's last owner (`Acquire`: after everyone else's release).
    pub(crate) fn state_for_drop(&self) -> u32 {
        self.state().load(Ordering::Acquire)
    }

    /// Drops the outcome (if stored and not taken) and the side box.
    ///
    /// # Safety
    /// The caller holds the last reference to the cell; it is not used afterwards.
    pub(crate) unsafe fn drop_contents(&self) {
        let s = self.state_for_drop();
        if s & PHASE == DONE && s & TAKEN == 0 {
            // SAFETY: the live field, dropped once by the last owner.
            unsafe {
                match s & ENDING {
                    VALUE => ManuallyDrop::drop(&mut (*self.storage()).value),
                    FAILED => ManuallyDrop::drop(&mut (*self.storage()).error),
                    _ => {}
                }
            }
        }
        let side = self.head.side.load(Ordering::Acquire);
        if !side.is_null() {
            // SAFETY: installed by `side()`, freed once, here.
            drop(unsafe { Box::from_raw(side) });
        }
    }
}

impl<T> Drop for Core<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: the last reference.
        unsafe { self.drop_contents() }
    }
}

/// Frees a cell owned through an `Arc` (what [`Future::from_cell`](super::Future) was given).
///
/// # Safety
/// `cell` came from `Arc::into_raw` and this is its reference's release.
unsafe fn release_arc<T>(cell: NonNull<dyn Cell<T>>) {
    // SAFETY: per the contract.
    drop(unsafe { Arc::from_raw(cell.as_ptr().cast_const()) });
}

/// What a [`Future`](super::Future) points at: the job's [`Core`] plus, for backends that can,
/// a way to run a job that has not started on the waiting thread.
pub(crate) trait Cell<T>: Send + Sync {
    fn core(&self) -> &Core<T>;

    /// Cancels the job if it has not started, dropping it (and what it captured) at once where
    /// the backend holds it. Returns whether the job is now cancelled.
    fn cancel(&self) -> bool {
        self.core().cancel()
    }

    /// Runs the job here and now if it has not started and the current thread may run it
    /// (a worker of the pool that owns it). Returns whether it ran.
    fn run_inline(&self) -> bool {
        false
    }

    /// Cancels the job even if it is running, where the backend can stop it. Returns whether
    /// the job is now cancelled.
    fn force_cancel(&self) -> bool {
        self.cancel()
    }

    /// How the future's reference to the cell is dropped: by default the cell is owned
    /// through an `Arc`; the thread pool's job cell counts its two references itself.
    fn releaser(&self) -> unsafe fn(NonNull<dyn Cell<T>>) {
        release_arc::<T>
    }
}

impl<T: Send> Cell<T> for Core<T> {
    fn core(&self) -> &Core<T> {
        self
    }
}

#[cfg(all(test, loom))]
#[path = "core_loom.rs"]
mod loom_tests;
