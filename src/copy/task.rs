//! The one job type the engine hands to an executor, so that a thread pool and a process pool
//! run exactly the same code (the process pool knows it as `stealpool::copy::Task`).

use std::sync::Arc;

use super::entry::{self, FileJob, FileOutcome, FinishJob, RangeJob};
use super::scan::{self, Listing, ScanJob};
use super::{CopyOptions, Failure};
use crate::job::Job;

/// One piece of a copy's work: a directory to scan, a batch of files, one range of a large
/// file, or a large file's last step. Made only by [`copy`](super::copy); public because an
/// executor's `Submit<Task>` bound names it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Task {
    pub(super) options: CopyOptions,
    pub(super) work: Work,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Work {
    Scan(ScanJob),
    /// Shared with the coordinator, which reports on the same files when the outcomes come.
    Files(Arc<[FileJob]>),
    Range(RangeJob),
    Finish(FinishJob),
}

/// What a [`Task`] produced; read only by [`copy`](super::copy).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TaskOutcome(pub(super) Outcome);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Outcome {
    Scanned(Listing),
    Files(Vec<FileOutcome>),
    Range(Result<u64, Failure>),
    Finished(FileOutcome),
}

impl Job for Task {
    type Output = TaskOutcome;

    fn run(self) -> TaskOutcome {
        let o = &self.options;
        TaskOutcome(match self.work {
            Work::Scan(job) => Outcome::Scanned(scan::scan(&job, o)),
            Work::Files(jobs) => {
                let owner = entry::Owner::current();
                let mut dirs = entry::Dirs::default();
                Outcome::Files(jobs.iter().map(|job| entry::copy_file(job, o, owner, &mut dirs)).collect())
            }
            Work::Range(job) => Outcome::Range(entry::copy_piece(&job)),
            Work::Finish(job) => Outcome::Finished(entry::finish_split(&job, o)),
        })
    }
}

crate::register_job!(Task, name = "stealpool::copy::Task");
