//! # stealpool
//!
//! What Python's `concurrent.futures` and `multiprocessing` give Python, for Rust: executors
//! that run jobs and hand back [`Future`]s, behind one [`Executor`] trait.
//!
//! - [`ThreadPoolExecutor`]: a work-stealing thread pool. Jobs are closures (or any [`Job`]);
//!   jobs may submit more jobs and wait for them without deadlocking the pool, even with one
//!   worker; idle workers sleep.
//! - [`Future`]: `result` / `try_result` / `result_timeout`, `cancel`, done callbacks, and
//!   `.await` from any async runtime; [`wait`] and [`as_completed`] over many futures.
//! - `ProcessPoolExecutor` (Unix, feature `process`): the same interface on pre-forked,
//!   supervised worker processes: jobs are registered functions or job types (serde), a worker
//!   that dies fails only its own job and is replaced, overdue jobs are killed, no worker
//!   outlives the program. See the `process` module.
//! - `manager` (Unix, feature `manager`): `multiprocessing.Manager()`: queues, locks,
//!   semaphores, events, barriers and maps shared by processes and threads, sturdier than
//!   Python's (a holder that dies releases its lock; an item is never lost to a dying getter).
//! - `Process` and `pipe` (Unix, feature `process`): one function in a child process, and
//!   pipes to talk to it.
//! - [`Executor`]: `map` (in order, one deadline, cancel on failure or drop), `imap`,
//!   `imap_unordered`, `starmap`, `apply_async`, `shutdown`, `close` + `join`, `terminate`.
//!
//! A job that panics does not take anything down: its future resolves to
//! [`JobError::Panicked`] with the panic message, and the worker goes on. That needs
//! unwinding: built with `panic = "abort"`, a panicking job (or callback, or `Drop`) aborts the
//! whole process, as any panic then does. A panic in the thread pool's own code on one of its
//! threads (a bug of this crate) aborts the process too, with a message, rather than leave a
//! pool that silently lost a thread.
//!
//! # A tour
//! ```
//! use std::time::Duration;
//! use stealpool::{as_completed, Executor, JobError, ThreadPoolExecutor};
//!
//! let pool = ThreadPoolExecutor::new(4);
//!
//! // submit + result, as with concurrent.futures
//! let answer = pool.submit(|| 6 * 7).unwrap();
//! assert_eq!(answer.result(), Ok(42));
//!
//! // a panic is an error value; the pool keeps working
//! let bad = pool.submit(|| -> u32 { panic!("no such file") }).unwrap();
//! assert_eq!(bad.result(), Err(JobError::Panicked { message: "no such file".into(), details: None }));
//!
//! // map keeps input order; imap_unordered yields as jobs finish
//! let lens: Vec<usize> = pool.map(|s: &str| s.len(), ["a", "bb", "ccc"]).unwrap().map(Result::unwrap).collect();
//! assert_eq!(lens, [1, 2, 3]);
//!
//! // as_completed over several futures, with an overall timeout
//! let futures: Vec<_> = (1..=3u64).map(|i| pool.submit(move || i * 100).unwrap()).collect();
//! let mut total = 0;
//! for f in as_completed(futures, Some(Duration::from_secs(60))) {
//!     total += f.unwrap().result().unwrap();
//! }
//! assert_eq!(total, 600);
//!
//! // futures are awaitable from async code, on any runtime
//! let f = pool.submit(|| "async").unwrap();
//! assert_eq!(pollster::block_on(f), Ok("async"));
//!
//! pool.shutdown(true, false); // or just drop the pool: it waits, like Python's `with`
//! ```
//!
//! # Features
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | [`ThreadPoolExecutor`], [`Future`], [`wait`], [`as_completed`], the [`Executor`] and [`Submit`] traits: portable Rust on crossbeam and parking_lot, nothing that runs before `main` |
//! | `process` | yes | `ProcessPoolExecutor`, `register_fn!` / `register_job!`, `Process` and `pipe` (Unix): serde, ipc-channel, nix, and a fork server whose start-up code runs before `main` (ctor) |
//! | `manager` | yes | `manager::Manager` and its shared objects (Unix): serde, nix, memmap2, HMAC-SHA256 |
//!
//! A program that wants only the thread pool depends on
//! `stealpool = { version = "0.1", default-features = false }`.
//!
//! # Platform
//! Linux is the first platform. The thread pool is portable Rust; the process pool, `Process`,
//! `pipe` and the manager are `cfg(unix)` and tested on Linux (the manager uses a Linux
//! abstract socket and a memfd).

#![deny(missing_docs, missing_debug_implementations)]
#![warn(unsafe_op_in_unsafe_fn)]

mod blocking;
mod deadline;
#[cfg(all(unix, feature = "redis"))]
pub mod distributed;
mod error;
mod executor;
mod future;
#[cfg(all(test, unix, any(feature = "process", feature = "manager")))]
mod fuzzing;
#[cfg(all(unix, any(feature = "process", feature = "manager")))]
mod ipc;
pub mod job;
#[cfg(all(unix, feature = "manager"))]
pub mod manager;
#[cfg(all(unix, feature = "process"))]
pub mod pipe;
#[cfg(all(unix, feature = "process"))]
pub mod process;
mod sync;
mod thread;
mod unwind;

pub use crate::error::{
    BuildError, ExitStatus, JobError, JoinError, MapError, MapErrorKind, PanicDetails, ResultTimeoutError,
    ShutdownError, SubmitError, TimeoutError, TryResultError,
};
pub use crate::executor::{Executor, MapIter, MapOptions, Submit};
pub use crate::future::{
    AlreadyCompleted, AsCompleted, DoneAndNotDone, Future, Promise, ReturnWhen, SharedFuture, Waitable, as_completed,
    wait,
};
pub use crate::job::Job;
#[cfg(all(unix, feature = "process"))]
pub use crate::process::{Process, ProcessBuilder, ProcessError, ProcessPoolBuilder, ProcessPoolExecutor, RemoteJob};
pub use crate::thread::{ThreadPoolBuilder, ThreadPoolExecutor};

/// What the registration macros expand to. Not a public API.
#[cfg(all(unix, feature = "process"))]
#[doc(hidden)]
pub mod __private {
    pub use crate::process::registration::{REGISTRY, Registration, invoke_fn, invoke_job, start_fn, type_id_of};
    pub use linkme;
}

/// The traits needed to use every executor method: `use stealpool::prelude::*;`.
pub mod prelude {
    pub use crate::executor::{Executor, Submit};
    pub use crate::job::Job;
}

/// The README's examples, run as doc-tests (they use every default feature).
#[cfg(all(doctest, feature = "process", feature = "manager"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
