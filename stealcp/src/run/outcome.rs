//! Folding a finished task's outcome into the run: a directory listing becomes more scans and
//! files, a batch's outcomes are counted (or handed back), and a task that panicked or whose
//! worker died fails everything it covered.
//!
//! This module must never drop an outcome silently: every path a task covered ends up copied,
//! failed or queued again.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use stealpool::JobError;

use stealpool::{Executor, Submit};

use super::Run;
use super::into_self::lexical;
use super::staging::shown;
use super::{InFlight, ScanCtx};
use crate::copy_debug::CopyDebug;
use crate::entry::{self, DirFinish, FileOutcome, HandBackReason};
use crate::error::Failure;
use crate::publish::remove_stale_temps;
use crate::report::EntryKind;
use crate::scan::{self, Listing, ScanJob};
use crate::task::CopyTask;
use crate::task::{Outcome, TaskOutcome, Work};
use crate::tuning::FILES_PER_TASK;

/// A large directory's files are made into jobs this many at a time, the full batches among
/// them sent out in between.
const FILES_PER_PUMP: usize = 4 * FILES_PER_TASK;

/// Symlinks and special files in one task (each is a few quick calls).
const LINKS_PER_TASK: usize = 256;

impl<'a, E> Run<'a, E>
where
    E: Executor + Submit<CopyTask>,
{
    pub(super) fn absorb(&mut self, outcome: Result<TaskOutcome, JobError>, pending: InFlight) {
        match (outcome, pending) {
            (Ok(TaskOutcome(Outcome::Scanned(listing))), InFlight::Scan(ctx)) => self.listing(*ctx, listing),
            (Ok(TaskOutcome(Outcome::Files(outcomes))), InFlight::Files(jobs)) if outcomes.len() == jobs.len() => {
                let mut not_run = Vec::new();
                for (job, (outcome, how)) in jobs.iter().zip(outcomes) {
                    match outcome {
                        FileOutcome::HandedBack(HandBackReason::NotRun) => not_run.push(job.clone()),
                        outcome => self.file_finished(job, outcome, how),
                    }
                }
                self.requeue(not_run);
            }
            (Ok(TaskOutcome(Outcome::Links(made))), InFlight::Links(job)) if made.len() == job.names.len() => {
                for (name, (kind, made)) in job.names.iter().zip(made) {
                    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name);
                    self.made(made, kind, &entry::child(&job.source, name), &entry::child(&job.destination, name));
                }
            }
            (Ok(TaskOutcome(Outcome::Range(result, how))), InFlight::Range(id)) => {
                // Every range of a file is copied the same way: the first one says how.
                if let Some(how) = how {
                    self.split_debug.entry(id).or_insert(how);
                }
                self.range_done(id, result);
                if !self.splits.contains_key(&id) {
                    // Failed and discarded: nothing to say of it.
                    self.split_debug.remove(&id);
                }
            }
            (Ok(TaskOutcome(Outcome::Finished(outcome))), InFlight::Finish(id)) => {
                let copied = matches!(outcome, FileOutcome::Copied(..));
                let paths = self.splits.get(&id).map(|s| (s.source.clone(), s.destination.clone()));
                // No range: the file was cloned whole.
                let how = self.split_debug.remove(&id).unwrap_or_else(CopyDebug::cloned);
                self.finish_done(id, outcome);
                if let (true, true, Some((source, destination))) = (self.debug, copied, paths) {
                    self.observer.data_copied(&source, &shown(&self.stagings, &destination), &how);
                }
            }
            (outcome, pending) => {
                // A task that panicked, or whose worker process died (or, impossibly, an
                // outcome that does not match its task): everything it covered failed.
                let reason = match outcome {
                    Err(e) => e.to_string(),
                    Ok(_) => "the task returned an unexpected outcome".to_owned(),
                };
                self.task_failed(pending, &reason);
            }
        }
    }

    pub(super) fn task_failed(&mut self, pending: InFlight, reason: &str) {
        let failure =
            |path: &Path| Failure { path: path.to_path_buf(), action: "copy job", error: io::Error::other(reason) };
        match pending {
            InFlight::Scan(ctx) => {
                if ctx.job.copy_here.is_some() {
                    // The scan may have been copying its first files when it died: as for a
                    // batch, nothing it left may be published (see `sweep_scan`).
                    sweep_scan(&ctx.job);
                }
                self.fail(failure(&ctx.job.source));
            }
            InFlight::Files(jobs) => {
                // Whatever the worker left is removed here, since it cannot do it any more (a
                // killed process runs no destructor): a file in a staging directory was
                // written under its own name, maybe only partly (preallocated, zero-filled),
                // and must not be published with the tree; a named temporary copy elsewhere
                // is removed with the other leftovers of processes that are gone.
                let mut swept: Vec<&Path> = Vec::new();
                for job in jobs.iter() {
                    if job.in_staging {
                        let _ = std::fs::remove_file(&job.destination);
                    } else if let Some(dir) = job.destination.parent().filter(|d| !swept.contains(d)) {
                        swept.push(dir);
                        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
                        remove_stale_temps(dir, job.source.parent());
                    }
                    self.fail(failure(&job.source));
                }
            }
            InFlight::Links(job) => {
                // Each entry is made whole or not at all: nothing to remove.
                for name in &job.names {
                    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name);
                    self.fail(failure(&entry::child(&job.source, name)));
                }
            }
            InFlight::Range(id) => {
                let source = self.splits.get(&id).map(|s| s.source.clone()).unwrap_or_default();
                self.range_done(id, Err(failure(&source)));
                if !self.splits.contains_key(&id) {
                    self.split_debug.remove(&id);
                }
            }
            InFlight::Finish(id) => {
                self.split_debug.remove(&id);
                if let Some(split) = self.splits.remove(&id) {
                    entry::discard(&split.temp);
                    self.fail(failure(&split.source));
                }
            }
        }
    }

    pub(super) fn listing(&mut self, ctx: ScanCtx, mut listing: Listing) {
        let job = ctx.job;
        let (source, destination) = (&job.source, &job.destination);
        // A directory made before its scan (into_self.rs) is new all the same.
        let existed = listing.existed && !self.precreated.remove(destination);
        if listing.created {
            self.report.directories += 1;
            if !existed {
                // As cp -v: a directory is listed when it is made (before what it holds), not
                // when it was there.
                self.observer.copied(EntryKind::Directory, source, &shown(&self.stagings, destination));
            }
        }
        for failure in std::mem::take(&mut listing.failures) {
            self.fail(failure);
        }
        self.report.unchanged += listing.unchanged;
        for (name, kind, displaced) in std::mem::take(&mut listing.made) {
            let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name);
            self.made(Ok((true, displaced)), kind, &entry::child(source, name), &entry::child(destination, name));
        }
        for name in std::mem::take(&mut listing.ask) {
            let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name);
            self.ask_then_make(&entry::child(source, name), &entry::child(destination, name));
        }
        // The rest of the directory's symlinks and special files, shared among the workers
        // (the directory is finished with the others, once the wave's tasks are all done).
        let links = std::mem::take(&mut listing.links);
        for names in links.chunks(LINKS_PER_TASK) {
            let job = Arc::new(scan::LinksJob {
                source: source.clone(),
                destination: destination.clone(),
                names: names.to_vec(),
                existed: listing.existed,
            });
            self.queued.push_back((Work::Links(Arc::clone(&job)), InFlight::Links(job)));
        }
        if !listing.created {
            return;
        }
        for dir in &listing.subdirs {
            let (Some(meta), Some(stat)) = (dir.dir, dir.stat) else { continue };
            let child = entry::child(source, dir.name());
            if self.made_dirs.as_ref().is_some_and(|made| made.contains(&lexical(&child))) {
                // A copy this run makes, met inside its own source (see `Run::made_dirs`).
                continue;
            }
            let mut ancestors = Vec::new();
            if self.options.dereference {
                if ctx.ancestors.contains(&(stat.dev, stat.ino)) {
                    let error = io::Error::other("a symlink leads back to a directory above it (loop not followed)");
                    self.fail(Failure { path: child, action: "read directory", error });
                    continue;
                }
                ancestors = ctx.ancestors.clone();
                ancestors.push((stat.dev, stat.ino));
            }
            let destination = entry::child(destination, dir.name());
            if let Some(made) = &mut self.made_dirs
                && fs::symlink_metadata(&destination).is_err()
            {
                made.insert(lexical(&destination));
            }
            let into_self = job.into_self.as_ref().and_then(|cut| cut.below(&dir.name));
            let last_step = into_self.as_ref().is_some_and(|cut| cut.path.len() == 1);
            let job = ScanJob {
                source: child,
                destination,
                meta,
                in_staging: job.in_staging,
                stat_files: self.stat_files(),
                into_self,
                copy_here: None,
            };
            if last_step {
                self.last_steps.push(ScanCtx { job, ancestors });
            } else {
                self.scans.push(ScanCtx { job, ancestors });
            }
        }
        // The subdirectories' scans go out now, before this directory's files are made
        // into jobs (thousands, for a large one), so that no worker waits for them meanwhile.
        self.pump();
        self.copied_here(&job, &mut listing);
        let number = self.next_listing;
        self.next_listing += 1;
        for files in listing.files.chunks(FILES_PER_PUMP) {
            let found = files.iter().map(|file| {
                let link = file.stat.and_then(|s| self.link_key(s));
                (scan::file_job(&job, file, &listing, self.options, self.split_workers), link)
            });
            let mut found: Vec<_> = found.collect();
            if !self.precopied.is_empty() {
                // Copied before the walk (into_self.rs).
                found.retain(|(job, _)| !self.precopied.remove(&job.destination));
            }
            self.add_found(found, Some(number));
            self.pump();
        }
        self.directories.push(DirFinish { source: job.source, path: job.destination, meta: job.meta, existed });
    }

    /// The files a scan copied itself ([`ScanJob::copy_here`]), counted as a batch's are; the
    /// paths are made only where something is said of the file (or it was handed back).
    fn copied_here(&mut self, job: &ScanJob, listing: &mut Listing) {
        // Never with totals wanted (see `Run::scan_task`): `found` is not owed for these.
        let copied = std::mem::take(&mut listing.copied);
        for (found, outcome, how) in copied {
            match outcome {
                // Nothing to say of it: counted without making its paths.
                FileOutcome::Copied(bytes, None) if !self.entries && !self.debug => self.count_copied(bytes),
                FileOutcome::Unchanged(bytes) if !self.debug => self.count_unchanged(bytes),
                outcome => {
                    let file = scan::file_job(job, &found, listing, self.options, self.split_workers);
                    self.file_finished(&file, outcome, how);
                }
            }
        }
    }
}

/// Removes what a scan that died ([`ScanJob::copy_here`]) may have left half-written: in a
/// staging directory, where files are written under their own names, every regular file in
/// its destination directory (only that scan wrote there: its subdirectories are made by
/// scans sent once its listing is back, and it never came); elsewhere, the temporary names of
/// copies not finished.
fn sweep_scan(job: &ScanJob) {
    if !job.in_staging {
        remove_stale_temps(&job.destination, Some(&job.source));
        return;
    }
    let Ok(entries) = fs::read_dir(&job.destination) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::entry::{FileJob, FileOutcome, HandBackReason};
    use crate::options::CopyOptions;
    use stealpool::{Job, ThreadPoolExecutor};

    fn job(i: usize) -> FileJob {
        FileJob {
            source: format!("/src/f{i}").into(),
            destination: format!("/dst/f{i}").into(),
            len: None,
            hand_back_links: true,
            hand_back_large: true,
            follow: false,
            check_existing: false,
            dst_dev: 0,
            dst_group: None,
            in_staging: false,
            read_special: false,
            open_as: None,
            confirmed: false,
            hand_back_from: None,
        }
    }

    /// A large directory's files come from its listing in several parts: they join one group,
    /// so that the batches sent in turn come from different directories (two workers creating
    /// files in one directory queue up on its lock in the kernel).
    #[test]
    fn parts_of_one_listing_join_its_group_and_groups_take_turns() {
        let pool = ThreadPoolExecutor::new(2);
        let options = CopyOptions::default();
        let mut quiet = crate::Quiet;
        let mut run = Run::new(&pool, &options, &mut quiet);
        let part = |range: std::ops::Range<usize>, dir: &str| -> Vec<FileJob> {
            range.map(|i| FileJob { destination: format!("/dst/{dir}/f{i}").into(), ..job(i) }).collect()
        };
        let batch = FILES_PER_TASK;
        run.queue_files(part(0..2 * batch, "a"), Some(0));
        run.queue_files(part(0..batch, "b"), Some(1));
        run.queue_files(part(2 * batch..3 * batch, "a"), Some(0));
        run.queue_files(part(0..batch, "handed-back"), None);
        let groups: Vec<usize> = run.ready.iter().map(|group| group.batches.len()).collect();
        assert_eq!(groups, [3, 1, 1], "the third part of a joined its group");
        assert_eq!(run.ready_batches, 5);
        // The order in which the batches go out: a group at a time, each in turn.
        let dirs: Vec<_> = std::iter::from_fn(|| run.next_batch())
            .map(|jobs| jobs[0].destination.parent().unwrap().to_path_buf())
            .collect();
        let dirs: Vec<&str> = dirs.iter().map(|d| d.to_str().unwrap()).collect();
        assert_eq!(dirs, ["/dst/a", "/dst/b", "/dst/handed-back", "/dst/a", "/dst/a"]);
    }

    /// However large the tree, the files waiting on the coordinator stay bounded: while
    /// `READY_BATCHES_MAX` full batches or more wait, files go out before any directory is
    /// read (each scan finds more); below it, scans go first.
    #[test]
    fn files_go_before_scans_once_ready_batches_reach_their_bound() {
        use crate::entry::DirMeta;
        use crate::scan::ScanJob;
        use crate::tuning::READY_BATCHES_MAX;
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        fs::create_dir(&source).unwrap();
        let meta = DirMeta::new(&fs::metadata(&source).unwrap());
        let scan = |name: &str| ScanCtx {
            job: ScanJob {
                source: source.clone(),
                destination: dir.path().join(name),
                meta,
                in_staging: false,
                stat_files: false,
                into_self: None,
                copy_here: None,
            },
            ancestors: Vec::new(),
        };
        let pool = ThreadPoolExecutor::new(2);
        let options = CopyOptions::default();
        // Sources that do not exist: each file fails at once, harmlessly.
        let missing = |i: usize| FileJob { source: dir.path().join(format!("gone{i}")), ..job(i) };
        // Ten batches over the bound: ten go out, then one more brings the count below it, then
        // the scan. Below the bound: the scan first.
        for (waiting, scan_sent_after) in [(READY_BATCHES_MAX + 10, 11), (READY_BATCHES_MAX - 1, 0)] {
            let mut quiet = crate::Quiet;
            let mut run = Run::new(&pool, &options, &mut quiet);
            run.queue_files((0..waiting * FILES_PER_TASK).map(missing).collect(), Some(0));
            assert_eq!(run.ready_batches, waiting);
            run.scans.push(scan(&format!("waiting-{waiting}")));
            run.fill().unwrap();
            assert_eq!(run.in_flight.len(), run.limit, "every slot filled");
            let scans: Vec<u64> =
                run.in_flight.iter().filter(|(_, (_, p))| matches!(p, InFlight::Scan(_))).map(|(id, _)| *id).collect();
            assert_eq!(
                scans,
                [scan_sent_after],
                "{waiting} batches waiting: the scan is sent after {scan_sent_after} batches"
            );
            run.drive().unwrap();
            assert!(run.scans.is_empty() && run.ready.is_empty(), "everything went out in the end");
            assert_eq!((run.report.files, run.report.failures.len()), (0, waiting * FILES_PER_TASK));
        }
    }

    /// Files a batch handed back uncopied have unknown sizes: they go out again spread over the
    /// workers, not as one batch that only one worker at a time could take.
    #[test]
    fn files_a_batch_hands_back_are_spread_over_the_workers() {
        let pool = ThreadPoolExecutor::new(2);
        let options = CopyOptions::default();
        let mut quiet = crate::Quiet;
        let mut run = Run::new(&pool, &options, &mut quiet);
        let jobs = Arc::new((0..9).map(job).collect::<Vec<_>>());
        let outcomes = (0..9)
            .map(|i| {
                let outcome = if i < 2 {
                    FileOutcome::Copied(8 << 20, None)
                } else {
                    FileOutcome::HandedBack(HandBackReason::NotRun)
                };
                (outcome, None)
            })
            .collect();
        run.absorb(Ok(TaskOutcome(Outcome::Files(outcomes))), InFlight::Files(jobs));
        let sizes: Vec<usize> = run.ready.iter().map(|group| group.batches.iter().map(Vec::len).sum()).collect();
        assert_eq!(sizes, [4, 3], "one batch per worker, next out");
        let first = &run.ready[0].batches[0][0];
        assert_eq!(first.source, Path::new("/src/f2"), "in their order");
        assert!(first.hand_back_links && first.hand_back_large, "nothing was checked: the checks are still due");
        assert_eq!(run.report.files, 2);
    }

    /// A scan that copied files of a new tree's directory and then died (its worker process
    /// killed): every regular file it may have left half-written there goes, whatever else it
    /// made stays, and the directory is reported failed.
    #[test]
    fn a_scan_that_died_while_copying_leaves_no_file_in_a_staged_directory() {
        use crate::entry::DirMeta;
        use crate::scan::CopyHere;
        let dir = tempfile::tempdir().unwrap();
        let (source, destination) = (dir.path().join("src"), dir.path().join("staged"));
        fs::create_dir(&source).unwrap();
        fs::create_dir_all(destination.join("sub")).unwrap();
        fs::write(destination.join("half-written"), [0u8; 4096]).unwrap();
        std::os::unix::fs::symlink("target", destination.join("symlink")).unwrap();
        let job = ScanJob {
            source: source.clone(),
            destination: destination.clone(),
            meta: DirMeta::new(&fs::metadata(&source).unwrap()),
            in_staging: true,
            stat_files: false,
            into_self: None,
            copy_here: Some(CopyHere { files: FILES_PER_TASK, split_large: true }),
        };
        let pool = ThreadPoolExecutor::new(1);
        let options = CopyOptions::default();
        let mut quiet = crate::Quiet;
        let mut run = Run::new(&pool, &options, &mut quiet);
        run.task_failed(InFlight::Scan(Box::new(ScanCtx { job, ancestors: Vec::new() })), "the worker process died");
        assert!(!destination.join("half-written").exists(), "the file it was writing is gone");
        assert!(destination.join("sub").is_dir() && destination.join("symlink").is_symlink());
        assert_eq!(run.report.failures.len(), 1);
        assert_eq!(run.report.failures[0].path, source);
    }

    /// A links task's outcome counts each entry as made, left or failed; a links task whose
    /// worker died fails every entry it held, by its source path.
    #[test]
    fn a_links_task_counts_its_entries_and_a_dead_one_fails_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let (source, destination) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&source).unwrap();
        fs::create_dir(&destination).unwrap();
        for name in ["a", "b"] {
            std::os::unix::fs::symlink("target", source.join(name)).unwrap();
        }
        let names = ["a", "b", "missing"].map(|n| serde_bytes::ByteBuf::from(n.as_bytes().to_vec())).to_vec();
        let job = Arc::new(scan::LinksJob {
            source: source.clone(),
            destination: destination.clone(),
            names,
            existed: false,
        });
        let pool = ThreadPoolExecutor::new(1);
        let options = CopyOptions::archive();
        let mut quiet = crate::Quiet;
        let mut run = Run::new(&pool, &options, &mut quiet);
        let TaskOutcome(outcome) = CopyTask { options: options.clone(), work: Work::Links(Arc::clone(&job)) }.run();
        run.absorb(Ok(TaskOutcome(outcome)), InFlight::Links(Arc::clone(&job)));
        assert_eq!(run.report.symlinks, 2);
        assert!(destination.join("a").is_symlink() && destination.join("b").is_symlink());
        let failed: Vec<_> = run.report.failures.iter().map(|f| f.path.clone()).collect();
        assert_eq!(failed, [source.join("missing")], "the entry that vanished fails alone");
        run.task_failed(InFlight::Links(job), "the worker process died");
        let failed: Vec<_> = run.report.failures.iter().skip(1).map(|f| f.path.clone()).collect();
        assert_eq!(failed, [source.join("a"), source.join("b"), source.join("missing")]);
    }
}
