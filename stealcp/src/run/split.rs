//! Large files on the coordinator: the temporary file is made here, its ranges go out to the
//! workers in turn with other split files' ranges, and the last step seals it once every
//! range is in.
//!
//! This module must never publish a split file with a range missing: a failed range discards
//! the temporary file.

use std::io;
use std::path::PathBuf;

use stealpool::{Executor, Submit};

use super::InFlight;
use super::Run;
use super::staging::shown;
use crate::entry::{self, FileJob, FileOutcome, FinishJob, Prepared, RangeJob};
use crate::error::Failure;
use crate::report::{Displaced, EntryKind, listed};
use crate::task::CopyTask;
use crate::task::Work;
use crate::tuning::RANGE;

/// A file copied in ranges.
pub(super) struct Split {
    pub(super) source: PathBuf,
    pub(super) destination: PathBuf,
    pub(super) temp: PathBuf,
    pub(super) follow: bool,
    pub(super) len: u64,
    /// Start of the next range to send.
    pub(super) next: u64,
    /// Ranges not back yet.
    pub(super) remaining: usize,
    /// Bytes reported to the observer so far.
    pub(super) progressed: u64,
    /// The first range that failed.
    pub(super) failure: Option<Failure>,
    /// What became of the destination it replaces.
    pub(super) displaced: Option<Displaced>,
}

impl<'a, E> Run<'a, E>
where
    E: Executor + Submit<CopyTask>,
{
    /// Starts a large file (of `len` bytes): its temporary copy is made here, its ranges go to
    /// the workers.
    pub(super) fn split(&mut self, job: FileJob, len: u64) {
        let (prepared, displaced) = match entry::prepare_split(&job, self.options) {
            Err(failure) => return self.file_failed(&job.source, &job.destination, failure),
            Ok(prepared) => prepared,
        };
        let (temp, len, ranges) = match prepared {
            Prepared::Unchanged => {
                self.report.unchanged += 1;
                return self.observer.progressed(len);
            }
            Prepared::Ask { mode, writable } => {
                if self.ask(&job.destination, mode, writable) {
                    return self.split(FileJob { confirmed: true, ..job }, len);
                }
                self.report.unchanged += 1;
                return self.observer.progressed(len);
            }
            Prepared::Cloned(temp) => (temp, len, 0),
            Prepared::Ranges { temp, len } => (temp, len, len.div_ceil(RANGE) as usize),
        };
        let id = self.next_id;
        self.next_id += 1;
        let split = Split {
            source: job.source,
            destination: job.destination,
            temp,
            follow: job.follow,
            len,
            next: 0,
            remaining: ranges,
            progressed: 0,
            failure: None,
            displaced,
        };
        self.splits.insert(id, split);
        if ranges == 0 {
            self.queue_finish(id);
        } else {
            self.range_turns.push_back(id);
        }
    }

    /// The next range of the split file whose turn it is.
    pub(super) fn next_range(&mut self) -> Option<(Work, InFlight)> {
        let id = self.range_turns.pop_front()?;
        let split = self.splits.get_mut(&id)?;
        let (start, end) = (split.next, (split.next + RANGE).min(split.len));
        split.next = end;
        let job = RangeJob { source: split.source.clone(), temp: split.temp.clone(), start, end, follow: split.follow };
        if end < split.len {
            self.range_turns.push_back(id);
        }
        Some((Work::Range(job), InFlight::Range(id)))
    }

    pub(super) fn queue_finish(&mut self, id: u64) {
        let Some(split) = self.splits.get(&id) else { return };
        let job = FinishJob {
            source: split.source.clone(),
            destination: split.destination.clone(),
            temp: split.temp.clone(),
            follow: split.follow,
            len: split.len,
        };
        // First in line: the file is otherwise done, and its temporary file takes up space.
        self.queued.push_front((Work::Finish(job), InFlight::Finish(id)));
    }

    pub(super) fn range_done(&mut self, id: u64, result: Result<u64, Failure>) {
        let Some(split) = self.splits.get_mut(&id) else { return };
        match result {
            Ok(bytes) => {
                split.progressed += bytes;
                self.observer.progressed(bytes);
            }
            Err(failure) => {
                split.failure.get_or_insert(failure);
            }
        }
        split.remaining = split.remaining.saturating_sub(1);
        if split.remaining > 0 {
            return;
        }
        if split.failure.is_some() {
            let Some(mut split) = self.splits.remove(&id) else { return };
            entry::discard(&split.temp);
            if let Some(failure) = split.failure.take() {
                self.file_failed(&split.source, &split.destination, failure);
            }
        } else {
            self.queue_finish(id);
        }
    }

    pub(super) fn finish_done(&mut self, id: u64, outcome: FileOutcome) {
        let Some(split) = self.splits.remove(&id) else { return };
        match outcome {
            FileOutcome::Copied(bytes, _) => {
                self.report.files += 1;
                self.report.bytes += bytes;
                // A reflinked file had no ranges: its bytes count now.
                self.observer.progressed(bytes.saturating_sub(split.progressed));
                let destination = shown(&self.stagings, &split.destination);
                listed(self.observer, EntryKind::File, &split.source, &destination, split.displaced.as_ref());
            }
            FileOutcome::Unchanged(_) => self.report.unchanged += 1,
            FileOutcome::Failed(failure) => self.file_failed(&split.source, &split.destination, failure),
            // A finishing step never hands its file back.
            FileOutcome::HandedBack(_) => {
                entry::discard(&split.temp);
                let error = io::Error::other("the task returned an unexpected outcome");
                self.fail(Failure { path: split.source, action: "copy job", error });
            }
        }
    }
}
