//! The cell of one job of the thread pool: the job and the state of its future in one
//! allocation, with the job (the closure) and its outcome sharing storage, and two references
//! (the queue's [`JobRef`] and the [`Future`]) counted in the state word itself.
//!
//! ```text
//!   JobCell<J>  (#[repr(C)], one allocation of 16 bytes + max(size of J, size of T, 8))
//!   ┌──────────────┬──────────┬─────────────────┬───────────────────────────────────────────┐
//!   │ state: u32   │ tag: u32 │ side: *Side     │ storage: union { job: J, outcome: T | Box<JobError> } │
//!   └──────────────┴──────────┴─────────────────┴───────────────────────────────────────────┘
//! ```
//! The head and the outcome at the start of the storage are laid out as a
//! [`Core`](crate::future::Core)'s, so the future's state machine runs on the cell as it is
//! (`JobCell::core`). The job is moved out by whoever wins the start (or the cancel) before
//! anything is written to the outcome. The state word, the orderings and the model checks are
//! argued in `JOB_CELL.md`.
//!
//! This module must never let a panic from user code (the job, the drop of what it captured
//! or produced) unwind into the pool: they run under [`unwind::catch`].

use std::cell::UnsafeCell;
use std::mem::{self, ManuallyDrop};
use std::ptr::NonNull;

use super::current;
use crate::future::{Cell, Core, Future, HANDLE_REF, Head, Outcome, PENDING, QUEUE_REF};
use crate::job::Job;
use crate::unwind;

/// A queued job, type-erased: the queue's reference to its cell.
pub(super) struct JobRef {
    cell: NonNull<()>,
    vtable: &'static JobVTable,
}

struct JobVTable {
    /// Runs the job unless it was cancelled or already started, then drops the reference.
    /// Returns whether a thread was waiting for its outcome (see [`run_job`]).
    run: unsafe fn(NonNull<()>) -> bool,
    /// Cancels the job if it has not started, then drops the reference.
    cancel: unsafe fn(NonNull<()>),
    /// Drops the reference.
    release: unsafe fn(NonNull<()>),
}

// SAFETY: a `JobRef` only ever reaches its cell through the vtable of a `JobCell<J>` with
// `J: Send` and `J::Output: Send`, which is `Send + Sync`.
unsafe impl Send for JobRef {}

impl JobRef {
    fn into_parts(self) -> (NonNull<()>, &'static JobVTable) {
        let this = ManuallyDrop::new(self);
        (this.cell, this.vtable)
    }
}

impl Drop for JobRef {
    fn drop(&mut self) {
        // SAFETY: this reference is live and dropped once, here.
        unsafe { (self.vtable.release)(self.cell) }
    }
}

/// Runs a queued job and drops the queue's reference to it. That reference may be the last
/// one (the future was dropped, or the job ran inline elsewhere), and then its drop drops the
/// job's outcome: user code, which may panic, caught here like the job itself.
///
/// Returns whether a thread had begun a blocking wait for the job's outcome before it was
/// published (false if the job did not run here): the worker then looks for its next job at
/// once, since someone is likely to submit another as soon as it has this one.
#[inline]
pub(super) fn run_job(job: JobRef) -> bool {
    let (cell, vtable) = job.into_parts();
    // SAFETY: the reference taken out of `job` is handed to `run`, which drops it.
    unwind::catch(move || unsafe { (vtable.run)(cell) }).unwrap_or(false)
}

/// Cancels a queued job and drops the queue's reference to it, both under a panic guard for
/// the same reason as in [`run_job`].
pub(super) fn cancel_job(job: JobRef) {
    let (cell, vtable) = job.into_parts();
    // SAFETY: as in `run_job`.
    let _ = unwind::catch(move || unsafe { (vtable.cancel)(cell) });
}

/// A job and the state of its future in one allocation, shared by the queue and the [`Future`].
#[repr(C)]
pub(super) struct JobCell<J: Job> {
    head: Head<J::Output>,
    storage: UnsafeCell<Storage<J>>,
}

/// The job until it starts (or is cancelled), the outcome once it is written; the state word
/// says which (`Pending`: the job; `Done`, not taken: the outcome its ending names).
#[repr(C)]
union Storage<J: Job> {
    outcome: ManuallyDrop<Outcome<J::Output>>,
    job: ManuallyDrop<J>,
}

// SAFETY: the storage is the only field not already `Sync`. Its job is moved out exactly once,
// by the thread whose compare-and-swap moved the state out of `Pending` (`execute`,
// `take_back`, `cancel`); the outcome then follows the protocol of `Core`, which is `Sync` for
// `T: Send`. A `J: Send` moved out on that thread is sound.
unsafe impl<J: Job + Send> Sync for JobCell<J> where J::Output: Send {}
// SAFETY: everything in the cell may move between threads with `J: Send, J::Output: Send`.
unsafe impl<J: Job + Send> Send for JobCell<J> where J::Output: Send {}

impl<J: Job> JobCell<J> {
    /// Whether the cell's head and outcome sit where a `Core`'s do, which `core` needs. They
    /// do unless `J` is more aligned than the head's size (16 bytes) and than the outcome:
    /// such jobs are boxed first ([`Boxed`]).
    pub(super) const FITS: bool = mem::offset_of!(Self, storage) == Core::<J::Output>::OUTCOME_OFFSET
        && mem::size_of::<Core<J::Output>>() <= mem::size_of::<Self>()
        && mem::align_of::<Core<J::Output>>() <= mem::align_of::<Self>();

    /// The cell seen as the future's [`Core`].
    fn core(&self) -> &Core<J::Output> {
        debug_assert!(Self::FITS);
        // SAFETY: both types are `repr(C)`, start with the same `Head`, and (`FITS`, checked
        // before any cell is made) have their storage at the same offset; a `repr(C)` union
        // keeps every field at offset 0, so the outcome is where a `Core`'s is. The `Core`
        // is no larger and no more aligned than the cell, so the reference stays inside it.
        unsafe { &*(self as *const Self).cast::<Core<J::Output>>() }
    }

    /// Moves the job out of the storage.
    ///
    /// # Safety
    /// This thread moved the state out of `Pending` and has not taken the job yet.
    unsafe fn take_job(&self) -> J {
        // SAFETY: per the contract, the job is live and nobody else touches the storage.
        unsafe { ManuallyDrop::take(&mut (*self.storage.get()).job) }
    }
}

impl<J: Job> Drop for JobCell<J> {
    fn drop(&mut self) {
        let state = self.core().state_for_drop();
        if Core::<J::Output>::phase_of(state) == PENDING {
            // SAFETY: never started nor cancelled: the job is live, and this is the last owner.
            let job = unsafe { self.take_job() };
            let _ = unwind::catch(move || drop(job));
        }
        // SAFETY: `&mut self`: the last reference.
        unsafe { self.core().drop_contents() }
    }
}

impl<J: Job + Send + 'static> JobCell<J>
where
    J::Output: Send + 'static,
{
    const VTABLE: JobVTable =
        JobVTable { run: Self::run_queued, cancel: Self::cancel_queued, release: Self::release_queued };

    /// A cell holding `job` for the pool tagged `tag`, with the queue's reference and the
    /// future; the pointer lets the submitter take the job back while the future is alive.
    pub(super) fn new(job: J, tag: u32) -> (JobRef, Future<J::Output>, NonNull<Self>) {
        assert!(Self::FITS, "a job more aligned than its cell's head must be boxed first");
        let cell = Box::new(JobCell {
            head: Head::new(PENDING | QUEUE_REF | HANDLE_REF, tag),
            storage: UnsafeCell::new(Storage { job: ManuallyDrop::new(job) }),
        });
        let cell = NonNull::from(Box::leak(cell));
        let queued = JobRef { cell: cell.cast(), vtable: &Self::VTABLE };
        // SAFETY: the cell is alive and the handle's reference (`HANDLE_REF`) is set for it.
        let future = unsafe { Future::from_counted_cell(cell) };
        (queued, future, cell)
    }

    /// Runs the job here if it has not started, clearing `release` with its publication when
    /// it can. Returns `None` if it did not run, else what `Core::publish` returned.
    fn execute(&self, release: u32) -> Option<(u32, bool)> {
        let core = self.core();
        if !core.try_start() {
            return None;
        }
        // SAFETY: `try_start` moved the state out of `Pending` on this thread.
        let job = unsafe { self.take_job() };
        let outcome = unwind::catch(|| job.run());
        // SAFETY: a started job's outcome is written by its runner only (thread pool cells
        // never see `try_finish`), and this thread is the runner.
        let ending = unsafe { core.write_outcome(outcome) };
        Some(core.publish(ending, release))
    }

    /// Cancels the job and returns it, if it has not started.
    pub(super) fn take_back(&self) -> Option<J> {
        let mut job = None;
        // SAFETY: the discard runs only after this call moved the state out of `Pending`.
        self.core().cancel_and(|| job = Some(unsafe { self.take_job() }));
        job
    }

    /// Drops the reference `bit`, freeing the cell if it was the last.
    ///
    /// # Safety
    /// `this` is a cell this caller holds the reference `bit` of, not used by it afterwards.
    unsafe fn release(this: NonNull<Self>, bit: u32) {
        // SAFETY: the reference is held until it is dropped below.
        let core = unsafe { this.as_ref() }.core();
        // The other reference already gone (observed with `Acquire`, so after its release):
        // this is the last one, and references are never added, so nobody else can touch the
        // cell: free it without a locked read-modify-write (the common end of `result`).
        if core.state_for_drop() & (QUEUE_REF | HANDLE_REF) == bit {
            // SAFETY: the last reference, as just argued.
            unsafe { Self::free(this) };
            return;
        }
        let before = core.clear(bit);
        if before & (QUEUE_REF | HANDLE_REF) == bit {
            // SAFETY: it was the last reference; the swap acquired every other's release.
            unsafe { Self::free(this) }
        }
    }

    /// # Safety
    /// The last reference to a cell made by `new`.
    unsafe fn free(this: NonNull<Self>) {
        // SAFETY: made by `Box::leak` in `new`; per the contract nobody else holds it.
        drop(unsafe { Box::from_raw(this.as_ptr()) });
    }

    /// # Safety
    /// `cell` is a live `JobCell<J>` whose queue reference the caller hands over.
    unsafe fn run_queued(cell: NonNull<()>) -> bool {
        let this = cell.cast::<Self>();
        // SAFETY: alive: the queue's reference is held until released here or in `publish`.
        match unsafe { this.as_ref() }.execute(QUEUE_REF) {
            // Released with the publication: the cell is no longer touched, unless the
            // future's reference was gone already, and then it is this thread's to free.
            Some((before, true)) => {
                if before & HANDLE_REF == 0 {
                    // SAFETY: both references are gone; the publication acquired the handle's.
                    unsafe { Self::free(this) }
                }
                Core::<J::Output>::watched(before)
            }
            ran => {
                // SAFETY: the queue's reference, dropped once.
                unsafe { Self::release(this, QUEUE_REF) };
                ran.is_some_and(|(before, _)| Core::<J::Output>::watched(before))
            }
        }
    }

    /// # Safety
    /// As `run_queued`.
    unsafe fn cancel_queued(cell: NonNull<()>) {
        let this = cell.cast::<Self>();
        // SAFETY: alive while the queue's reference is held.
        Cell::cancel(unsafe { this.as_ref() });
        // SAFETY: the queue's reference, dropped once.
        unsafe { Self::release(this, QUEUE_REF) }
    }

    /// # Safety
    /// As `run_queued`.
    unsafe fn release_queued(cell: NonNull<()>) {
        // SAFETY: per the contract.
        unsafe { Self::release(cell.cast(), QUEUE_REF) }
    }

    /// # Safety
    /// `cell` is a live `JobCell<J>` whose future's reference the caller hands over.
    unsafe fn release_handle(cell: NonNull<dyn Cell<J::Output>>) {
        // SAFETY: per the contract.
        unsafe { Self::release(cell.cast(), HANDLE_REF) }
    }
}

impl<J: Job + Send + 'static> Cell<J::Output> for JobCell<J>
where
    J::Output: Send + 'static,
{
    fn core(&self) -> &Core<J::Output> {
        JobCell::core(self)
    }

    fn run_inline(&self) -> bool {
        current::tag() == Some(self.core().tag()) && self.execute(0).is_some()
    }

    fn cancel(&self) -> bool {
        self.core().cancel_and(|| {
            // SAFETY: `cancel_and` runs this only after this very call moved the state out of
            // `Pending`.
            let job = unsafe { self.take_job() };
            // The job's captures are user values whose `Drop` may panic: caught, as a job's
            // own panic would be; the job is cancelled either way.
            let _ = unwind::catch(move || drop(job));
        })
    }

    fn releaser(&self) -> unsafe fn(NonNull<dyn Cell<J::Output>>) {
        Self::release_handle
    }
}

/// A job more aligned than a cell's head (a closure capturing a cache-padded value), boxed so
/// that its cell keeps the layout of a `Core` (see [`JobCell::FITS`]).
pub(super) struct Boxed<J>(pub(super) Box<J>);

impl<J: Job> Job for Boxed<J> {
    type Output = J::Output;

    fn run(self) -> J::Output {
        (*self.0).run()
    }
}

#[cfg(all(test, loom))]
#[path = "job_cell_loom.rs"]
mod loom_tests;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The cell of a job capturing a `u64` and returning one is 24 bytes (glibc's 32-byte
    /// chunk): the head, and one word both the closure and its result use in turn.
    #[test]
    fn a_tiny_job_cell_is_three_words() {
        fn size_of_cell<J: Job>(_: &J) -> usize {
            mem::size_of::<JobCell<J>>()
        }
        let x = 7u64;
        assert_eq!(size_of_cell(&move || x + 1), 24);
        assert_eq!(mem::size_of::<Future<u64>>(), 16);
        const { assert!(JobCell::<fn() -> u64>::FITS) };
    }

    /// A job more aligned than the head does not fit; the registry boxes it, and it runs,
    /// cancels and comes back like any other.
    #[test]
    fn an_over_aligned_job_is_flagged() {
        #[repr(align(64))]
        struct Padded(u8);
        struct Job64(Padded);
        impl Job for Job64 {
            type Output = u8;
            fn run(self) -> u8 {
                self.0.0
            }
        }
        const { assert!(!JobCell::<Job64>::FITS && JobCell::<Boxed<Job64>>::FITS) };
        let pool = crate::ThreadPoolExecutor::new(1);
        assert_eq!(pool.submit(Job64(Padded(9))).unwrap().result(), Ok(9));
        pool.shutdown(true, false);
        let refused = pool.submit(Job64(Padded(3))).unwrap_err();
        assert_eq!(refused.into_inner().0.0, 3, "handed back unboxed");
    }
}
