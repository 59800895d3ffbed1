//! The one job type the engine hands to an executor, so that a thread pool and a process pool
//! run exactly the same code (the process pool knows it as `stealcp::CopyTask`).

use std::sync::Arc;

use crate::copy_debug::CopyDebug;
use crate::entry::{self, DirFinish, FileJob, FileOutcome, FinishJob, HandBackReason, RangeJob};
use crate::error::Failure;
use crate::options::{CopyOptions, Sparse};
use crate::report::EntryKind;
use crate::scan::{self, Listing, ScanJob};
use crate::tuning::BYTES_PER_TASK;
use stealpool::Job;

/// One piece of a copy's work: a directory to scan, a batch of files, one range of a large
/// file, a large file's last step, or directories to finish. Made only by
/// [`copy`](crate::copy()); public because an executor's `Submit<CopyTask>` bound names it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CopyTask {
    pub(crate) options: CopyOptions,
    pub(crate) work: Work,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Work {
    Scan(ScanJob),
    /// Shared with the coordinator, which reports on the same files when the outcomes come
    /// (a `Vec` behind the `Arc`: made from the batch without copying it).
    Files(Arc<Vec<FileJob>>),
    Range(RangeJob),
    Finish(FinishJob),
    /// Directories of one depth, whose contents are all in place.
    Directories(Vec<DirFinish>),
    /// Symlinks and special files of one directory (more than its scan makes itself), shared
    /// with the coordinator as a batch is.
    Links(Arc<scan::LinksJob>),
}

/// What a [`CopyTask`] produced; read only by [`copy`](crate::copy()).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TaskOutcome(pub(crate) Outcome);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Outcome {
    Scanned(Listing),
    /// Each file's outcome, and how its contents were copied (`--debug`), if they were.
    Files(Vec<(FileOutcome, Option<CopyDebug>)>),
    /// A range's bytes, and how they were copied.
    Range(Result<u64, Failure>, Option<CopyDebug>),
    Finished(FileOutcome),
    Directories(Vec<Failure>),
    /// Each name's kind and what became of it, in the job's order.
    Links(Vec<(EntryKind, Result<entry::Made, Failure>)>),
}

impl Job for CopyTask {
    type Output = TaskOutcome;

    fn run(self) -> TaskOutcome {
        let o = &self.options;
        TaskOutcome(match self.work {
            Work::Scan(job) => Outcome::Scanned(scan::scan(&job, o)),
            Work::Links(job) => Outcome::Links(scan::make_links(&job, o)),
            Work::Files(jobs) => {
                let owner = entry::Owner::current();
                let mut dirs = entry::Dirs::default();
                // Sizes may be unknown when the batch was made: once this task has copied its
                // share of bytes, the rest goes back, so no worker holds many large files.
                let mut copied = 0;
                let outcomes = jobs.iter().map(|job| {
                    if copied >= BYTES_PER_TASK {
                        return (FileOutcome::HandedBack(HandBackReason::NotRun), None);
                    }
                    let (outcome, how) = entry::copy_file(job, o, owner, &mut dirs);
                    if let FileOutcome::Copied(bytes, _) = outcome {
                        copied += bytes;
                    }
                    (outcome, how)
                });
                Outcome::Files(outcomes.collect())
            }
            Work::Range(job) => {
                let result = entry::copy_piece(&job, o);
                let how = result.as_ref().ok().and_then(|_| range_debug(&job, o));
                Outcome::Range(result, how)
            }
            Work::Finish(job) => Outcome::Finished(entry::finish_split(&job, o)),
            Work::Directories(dirs) => {
                Outcome::Directories(dirs.iter().filter_map(|d| entry::finish_directory(d, o).err()).collect())
            }
        })
    }
}

/// How `copy_piece` copied a range of a split file (`data::copy_range`: the source's extents
/// through `copy_file_range`, or with `--sparse` holes read and written), from the same facts
/// it decided on: the source's blocks and the two files' devices. `None` if they cannot be
/// read any more.
fn range_debug(job: &RangeJob, o: &CopyOptions) -> Option<CopyDebug> {
    use std::os::unix::fs::MetadataExt;
    let source = if job.follow { std::fs::metadata(&job.source) } else { std::fs::symlink_metadata(&job.source) };
    let (source, temp) = (source.ok()?, std::fs::metadata(&job.temp).ok()?);
    let sparse = crate::data::may_be_sparse(&source);
    let zeros = match o.sparse {
        Sparse::Never => false,
        Sparse::Auto => sparse,
        Sparse::Always => true,
    };
    Some(CopyDebug::moved(o.reflink, zeros, sparse, source.dev() == temp.dev(), job.end - job.start))
}

stealpool::register_job!(CopyTask, name = "stealcp::CopyTask");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_stops_after_its_share_of_bytes_and_hands_back_the_rest_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        let jobs: Vec<FileJob> = (0..4)
            .map(|i| {
                let name = format!("f{i}");
                // Three quarters of a task's share each, all hole: the byte count is what
                // matters, not the copying.
                std::fs::File::create(src.join(&name)).unwrap().set_len(BYTES_PER_TASK / 4 * 3).unwrap();
                FileJob {
                    source: src.join(&name),
                    destination: dst.join(&name),
                    len: None,
                    hand_back_links: false,
                    hand_back_large: false,
                    follow: false,
                    check_existing: true,
                    dst_dev: 0,
                    dst_group: None,
                    in_staging: false,
                    read_special: false,
                    open_as: None,
                    confirmed: false,
                    hand_back_from: None,
                }
            })
            .collect();
        let task = CopyTask { options: CopyOptions::default(), work: Work::Files(Arc::new(jobs)) };
        let TaskOutcome(Outcome::Files(outcomes)) = task.run() else { panic!("not a batch outcome") };
        let summary: Vec<String> = outcomes
            .iter()
            .map(|(o, _)| match o {
                FileOutcome::Copied(n, _) => format!("copied {n}"),
                FileOutcome::HandedBack(HandBackReason::NotRun) => "not run".to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        // The second file crosses the task's share, the last two wait for another task.
        let each = format!("copied {}", BYTES_PER_TASK / 4 * 3);
        assert_eq!(summary, [each.as_str(), each.as_str(), "not run", "not run"]);
        assert!(!dst.join("f2").exists() && !dst.join("f3").exists());
    }
}
