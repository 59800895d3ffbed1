//! Files found by the walk, on the coordinator: hard links deduplicated (one copy, the other
//! names linked at the end), large files split, the rest batched; and the files a worker
//! handed back uncopied.
//!
//! This module must never copy anything itself; it only decides where files go.

use std::collections::VecDeque;

use stealpool::{Executor, Submit};

use super::finish::HardLink;
use super::staging::shown;
use super::{Group, Run};
use crate::copy_debug::CopyDebug;
use crate::entry::{FileJob, FileOutcome, HandBackReason};
use crate::error::Failure;
use crate::report::{EntryKind, OverwriteQuestion, listed};
use crate::task::CopyTask;
use crate::tuning::{BYTES_PER_TASK, FILES_PER_TASK, SPLIT_AT};
use std::path::Path;

impl<'a, E> Run<'a, E>
where
    E: Executor + Submit<CopyTask>,
{
    /// Files found by the walk, each with the (device, inode) to dedup on if it has other
    /// names, from the listing numbered `listing` if they came from one: see [`Run::queue_files`].
    pub(super) fn add_found(&mut self, found: Vec<(FileJob, Option<(u64, u64)>)>, listing: Option<u64>) {
        let jobs: Vec<FileJob> = found.into_iter().filter_map(|(job, link)| self.dedup(job, link)).collect();
        if self.totals {
            self.observer.found(jobs.len() as u64, jobs.iter().filter_map(|j| j.len).sum());
        }
        self.queue_files(jobs, listing);
    }

    /// A file with other names (`link`) is copied once: the first path seen is copied, the
    /// others are kept (returning `None`) to become hard links at the end.
    pub(super) fn dedup(&mut self, job: FileJob, link: Option<(u64, u64)>) -> Option<FileJob> {
        let Some(key) = link.filter(|_| self.options.preserve_links) else { return Some(job) };
        if let Some(first) = self.inodes.get(&key) {
            let first = first.clone();
            self.hard_links.push(HardLink { source: job.source, destination: job.destination, first });
            return None;
        }
        self.inodes.insert(key, job.destination.clone());
        Some(job)
    }

    /// Files to copy: large ones (of a known size) are split, the rest batched. A source
    /// reached through one of this process's descriptors (`/dev/stdin` redirected from a large
    /// file) is copied whole: a worker process opening it by name would get its own
    /// descriptor. (A FIFO or device has no size, so it is never split either.)
    ///
    /// The full batches join the group of their `listing` (a large directory's files come in
    /// several parts), so that the groups taken in turn are different directories.
    pub(super) fn queue_files(&mut self, jobs: Vec<FileJob>, listing: Option<u64>) {
        let mut full = VecDeque::new();
        for job in jobs {
            let splittable = self.split_workers && job.open_as.is_none();
            if let Some(len) = job.len.filter(|&len| len >= SPLIT_AT && splittable) {
                self.split(job, len);
                continue;
            }
            self.batch_bytes += job.len.unwrap_or(0);
            self.batch.push(job);
            if self.batch.len() >= FILES_PER_TASK || self.batch_bytes >= BYTES_PER_TASK {
                full.push_back(self.take_batch());
            }
        }
        if full.is_empty() {
            return;
        }
        self.ready_batches += full.len();
        // A listing's group is near the back, if it is still waiting: it went there when its
        // first part came, and moves only when it is at the front.
        match self.ready.iter_mut().rev().find(|group| listing.is_some() && group.listing == listing) {
            Some(group) => group.batches.extend(full),
            None => self.ready.push_back(Group { listing, batches: full }),
        }
    }

    /// A file's outcome from a worker, then how its contents were copied (`--debug`: after the
    /// file's -v line and failure, as cp prints it).
    pub(super) fn file_finished(&mut self, job: &FileJob, outcome: FileOutcome, how: Option<CopyDebug>) {
        self.file_done(job, outcome);
        if let Some(how) = how.filter(|_| self.debug) {
            self.observer.data_copied(&job.source, &shown(&self.stagings, &job.destination), &how);
        }
    }

    pub(super) fn file_done(&mut self, job: &FileJob, outcome: FileOutcome) {
        match outcome {
            FileOutcome::Copied(bytes, displaced) => {
                self.count_copied(bytes);
                if self.entries {
                    let destination = shown(&self.stagings, &job.destination);
                    listed(self.observer, EntryKind::File, &job.source, &destination, displaced.as_ref());
                }
            }
            FileOutcome::Unchanged(bytes) => self.count_unchanged(bytes),
            FileOutcome::Failed(failure) => self.file_failed(&job.source, &job.destination, failure),
            FileOutcome::HandedBack(back) => self.handed_back(job.clone(), back),
        }
    }

    /// A regular file copied, `bytes` long.
    pub(super) fn count_copied(&mut self, bytes: u64) {
        self.report.files += 1;
        self.report.bytes += bytes;
        self.observer.progressed(bytes);
    }

    /// A regular file left alone (`no_clobber`, `update`), `bytes` long.
    pub(super) fn count_unchanged(&mut self, bytes: u64) {
        self.report.unchanged += 1;
        self.observer.progressed(bytes);
    }

    /// Files a batch handed back uncopied: next out (they were due already), spread over the
    /// workers, since their sizes are still unknown and one batch would keep them all on one
    /// worker in turn.
    pub(super) fn requeue(&mut self, mut jobs: Vec<FileJob>) {
        let per_batch = jobs.len().div_ceil(self.executor.max_workers().max(1)).max(1);
        // The last part first, each pushed in front of the one after it, so they go out in order.
        while !jobs.is_empty() {
            let part = jobs.split_off((jobs.len() - 1) / per_batch * per_batch);
            self.ready.push_front(Group { listing: None, batches: VecDeque::from([part]) });
            self.ready_batches += 1;
        }
    }

    /// A file its worker did not copy (see [`HandBackReason`]); its size is known now unless the batch
    /// simply did not come to it.
    pub(super) fn handed_back(&mut self, job: FileJob, back: HandBackReason) {
        // The worker checked links and size: it must not hand the file back again.
        let checked = |len| FileJob {
            len: Some(len),
            hand_back_links: false,
            hand_back_large: false,
            hand_back_from: None,
            ..job.clone()
        };
        match back {
            // Nothing was checked: it goes out again as it came.
            HandBackReason::NotRun => self.requeue(vec![job]),
            HandBackReason::HardLinked { dev, ino, len } => {
                if let Some(job) = self.dedup(checked(len), Some((dev, ino))) {
                    self.queue_files(vec![job], None);
                }
            }
            HandBackReason::Large { len } => self.split(checked(len), len),
            HandBackReason::Sized { len } => self.queue_files(vec![checked(len)], None),
            HandBackReason::Ask { len, mode, writable } => {
                if self.ask(&job.destination, mode, writable) {
                    self.queue_files(vec![FileJob { confirmed: true, ..job }], None);
                } else {
                    self.count_unchanged(len);
                }
            }
        }
    }

    /// A file failed: listed first if `cp -v` lists it before such a failure.
    pub(super) fn file_failed(&mut self, source: &Path, destination: &Path, failure: Failure) {
        if failure.listed_by_cp() {
            self.observer.attempted(EntryKind::File, source, &shown(&self.stagings, destination));
        }
        self.fail(failure);
    }

    /// `interactive`: asks the observer whether to replace `destination`.
    pub(super) fn ask(&mut self, destination: &Path, mode: u32, writable: bool) -> bool {
        let destination = shown(&self.stagings, destination).into_owned();
        self.observer.overwrite(&OverwriteQuestion { destination, mode, writable })
    }
}
