//! # stealcp
//!
//! The batch copy engine behind the `stealcp` binary: copies files and trees like
//! `cp -r`/`cp -a`, with the work spread over any stealpool executor (a
//! [`ThreadPoolExecutor`](stealpool::ThreadPoolExecutor) or, in worker processes, a
//! `ProcessPoolExecutor`). Unix only.
//!
//! A copy runs in three steps:
//! 1. **Plan** ([`plan()`]): resolve each source's destination with `cp`'s naming rules and
//!    reject bad arguments (missing source, directory without `recursive`) before anything is
//!    written. (A directory copied into itself, to a new name or merged into an existing
//!    directory, is copied as cp 9 copies it: up to the first directory made, then an error.)
//! 2. **Run** ([`copy()`]): the calling thread coordinates; every piece of work is a [`CopyTask`]
//!    on the executor. A directory is one scan task (make its copy, list it; `scan.rs`), so the
//!    walk runs on every worker at once and copies start while it goes on. Regular files go out
//!    in batches (many small files per task, so per-task cost does not dominate); a large file
//!    is split into ranges that several workers copy into one temporary file (`data.rs`:
//!    reflink, `copy_file_range`, holes kept). A final path never holds a half-written file: a
//!    directory the run creates is built under a temporary name and renamed into place once
//!    finished (`run/`), and a file written into an existing directory gets its final name
//!    only once complete (`entry/`, `publish.rs`).
//!    Full batches are taken from their directories in turn, so workers rarely wait for each
//!    other on one directory's lock in the kernel.
//! 3. **Finish**: hard links (which need their first copy in place), then directory modes
//!    and times, deepest first (creating entries changes a directory's times), a depth with
//!    many directories shared among the workers, each staged directory renamed into place
//!    right after its own.
//!
//! The walk reads each directory's entries and their types; it reads a regular file's size
//! and links only if the [`Observer`] wants totals up front. Otherwise the worker that opens
//! the file finds out, and hands back to the coordinator a file with other names (copied
//! once, the other names become hard links) or one large enough to split.
//!
//! One failure never stops the rest: every failure is collected, with its path and reason, in
//! the [`CopyReport`].
//!
//! # Example
//! ```
//! use stealcp::{CopyOptions, EntryKind, Observer, Target};
//! use stealpool::ThreadPoolExecutor;
//!
//! /// Counts the files copied, as a progress bar would.
//! struct Count(u64);
//! impl Observer for Count {
//!     fn copied(&mut self, kind: EntryKind, _source: &std::path::Path, _destination: &std::path::Path) {
//!         self.0 += u64::from(kind == EntryKind::File);
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let src = dir.path().join("tree");
//! std::fs::create_dir_all(src.join("a/b")).unwrap();
//! std::fs::write(src.join("a/b/one.txt"), "1").unwrap();
//! std::fs::write(src.join("two.txt"), "22").unwrap();
//!
//! let options = CopyOptions::archive(); // cp -a
//! let plan = stealcp::plan(&[src], &Target::Auto(dir.path().join("copy")), &options).unwrap();
//! let mut count = Count(0);
//! let report = stealcp::copy(&plan, &options, &ThreadPoolExecutor::new(2), &mut count).unwrap();
//! assert!(report.is_success(), "{:?}", report.failures);
//! assert_eq!((report.files, report.bytes, count.0), (2, 3, 2));
//! assert_eq!(std::fs::read_to_string(dir.path().join("copy/a/b/one.txt")).unwrap(), "1");
//! ```
//!
//! The process pool runs the same [`CopyTask`]s: it is registered (as `stealcp::CopyTask`) in every
//! binary that links this crate.
//!
//! This crate must never leave a partially written file under its final name, and never
//! follow a symlink in a source tree unless asked to (`dereference`).

#![deny(missing_docs, missing_debug_implementations)]

mod attributes;
mod copy_debug;
mod data;
mod entry;
mod error;
mod options;
mod path_bytes;
mod plan;
mod publish;
mod report;
mod run;
mod scan;
mod task;
mod tuning;

pub use crate::copy_debug::{Attempt, CopyDebug, SparseDetection};
pub use crate::error::{Failure, PlanError};
pub use crate::options::{Backup, BackupControl, CopyOptions, Reflink, Sparse, Target};
pub use crate::plan::{Assignment, plan, plan_each};
pub use crate::publish::TEMP_PREFIX;
pub use crate::report::{CopyReport, Displaced, EntryKind, LeftStaged, Observer, OverwriteQuestion, Quiet, Skipped};
pub use crate::run::copy;
pub use crate::task::{CopyTask, TaskOutcome};

/// The README's example, run as a doc-test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
