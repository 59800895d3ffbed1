//! The end of a run: hard links (which need their first copy in place), then directories
//! deepest first (modes and times, shared among the workers when there are many of one
//! depth), each staged directory renamed into place right after its own.
//!
//! This module must never finish a directory before everything inside it is in place.

use std::path::PathBuf;

use stealpool::{Executor, Submit};

use super::Run;
use super::staging::shown;
use crate::entry::{self, DirFinish};
use crate::error::Failure;
use crate::publish::publish_directory;
use crate::report::{EntryKind, listed, record_left_staged};
use crate::task::CopyTask;
use crate::task::{Outcome, TaskOutcome, Work};
use crate::tuning::DIRS_WORTH_SHARING;

/// A hard link to make once the file it points at has been copied.
pub(super) struct HardLink {
    pub(super) source: PathBuf,
    pub(super) destination: PathBuf,
    /// The destination of the first path seen with the same (device, inode).
    pub(super) first: PathBuf,
}

impl<'a, E> Run<'a, E>
where
    E: Executor + Submit<CopyTask>,
{
    /// Makes each of `links` a hard link to the copy of its first name.
    pub(super) fn make_hard_links(&mut self, links: Vec<HardLink>) {
        for link in links {
            if !self.may_replace(&link.destination, None) {
                self.report.unchanged += 1;
                continue;
            }
            match entry::hard_link(&link.first, &link.destination, self.options) {
                Ok(displaced) => {
                    self.report.hard_links += 1;
                    let destination = shown(&self.stagings, &link.destination);
                    listed(self.observer, EntryKind::HardLink, &link.source, &destination, displaced.as_ref());
                }
                Err(failure) => self.fail(failure),
            }
        }
    }

    /// Hard links, then directories deepest first, each staged one renamed into place once
    /// finished (once everything in flight is done).
    pub(super) fn finish(&mut self) {
        let links = std::mem::take(&mut self.hard_links);
        self.make_hard_links(links);
        let mut directories = std::mem::take(&mut self.directories);
        // Deepest first: setting a directory's times must come after everything inside it,
        // and renaming a staged directory (which changes its parent's times) before its parent.
        // Directories of one depth do not contain each other: they are finished together.
        let depth = |d: &DirFinish| d.path.components().count();
        directories.sort_by_cached_key(|d| std::cmp::Reverse(depth(d)));
        let mut published = Vec::new();
        for level in directories.chunk_by(|a, b| depth(a) == depth(b)) {
            self.finish_directories(level);
            for dir in level {
                if let Some(i) = self.stagings.iter().position(|s| s.temp == dir.path) {
                    let staging = self.stagings.remove(i);
                    match publish_directory(&staging.temp, &staging.destination) {
                        Ok(()) => published.push(staging),
                        Err(failure) => record_left_staged(
                            &mut self.report,
                            self.observer,
                            failure,
                            staging.temp,
                            staging.destination,
                        ),
                    }
                }
            }
        }
        self.made_earlier.extend(published.iter().map(|s| super::into_self::lexical(&s.destination)));
        // A later wave may link to a file copied in this one: by the name it has now.
        if !published.is_empty() {
            for first in self.inodes.values_mut() {
                if let std::borrow::Cow::Owned(now) = shown(&published, first) {
                    *first = now;
                }
            }
        }
    }

    /// Finishes directories none of which contains another: shared among the workers when
    /// there are enough to be worth a task each, else here.
    pub(super) fn finish_directories(&mut self, dirs: &[DirFinish]) {
        let o = self.options;
        let here = |dirs: &[DirFinish]| -> Vec<Failure> {
            dirs.iter().filter_map(|d| entry::finish_directory(d, o).err()).collect()
        };
        let workers = self.executor.max_workers();
        if dirs.len() < DIRS_WORTH_SHARING || workers < 2 {
            return here(dirs).into_iter().for_each(|f| self.fail(f));
        }
        let mut failures = Vec::new();
        let mut futures = Vec::new();
        for chunk in dirs.chunks(dirs.len().div_ceil(workers)) {
            let task = CopyTask { options: o.clone(), work: Work::Directories(chunk.to_vec()) };
            match self.executor.submit(task) {
                Ok(future) => futures.push((future, chunk)),
                Err(_) => failures.extend(here(chunk)),
            }
        }
        for (future, chunk) in futures {
            match future.result() {
                Ok(TaskOutcome(Outcome::Directories(failed))) => failures.extend(failed),
                // The task panicked or its worker died: do those here (every step can be
                // repeated safely).
                _ => failures.extend(here(chunk)),
            }
        }
        failures.into_iter().for_each(|f| self.fail(f));
    }
}
