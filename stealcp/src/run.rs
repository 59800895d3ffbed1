//! The coordinator: runs on the thread that called [`copy`](super::copy), hands [`Task`]s to
//! the executor and folds their outcomes into the report.
//!
//! It keeps at most `TASKS_PER_WORKER` tasks per worker in flight; the rest waits here, scans
//! first (they find more work and finish the totals early), then batches and file ranges. A
//! batch of small files is sent when it is full, or, half full, whenever a worker would
//! otherwise be idle, so that batching never starves the pool. Tasks report completion through
//! a done callback that sends the task's id over a channel; the coordinator then takes the
//! (already finished) future's result. It never blocks on one particular task.
//!
//! State that must be kept in one place lives only here: which inodes were seen (hard links),
//! which directories to finish, and the split files whose ranges are still out.
//!
//! A directory named on the command line whose destination does not exist yet is *staged*:
//! built under a temporary name beside its destination (`.pcp-tmp-<pid>-<n>-<name>`) and
//! renamed into place once everything inside is finished. Nobody sees its files before then,
//! so they are written under their own names at once, with no temporary name or unnamed file
//! per file; a killed run leaves only the clearly named staging directory, which the next run
//! into the same place removes. Observers and failures are shown the final paths.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::entry::{self, Back, DirFinish, DirMeta, FileJob, FileOutcome, FinishJob, Prepared, RangeJob};
use super::scan::{self, Listing, ScanJob};
use super::task::{Outcome, Task, TaskOutcome, Work};
use super::{Assignment, CopyOptions, CopyReport, EntryKind, Failure, Observer, Skipped, record};
use stealpool::{Executor, Future, JobError, ShutdownError, Submit};

/// Tasks in flight per worker: enough to hide a process pool's round trip, few enough that
/// small files still gather into batches here rather than in the pool's queue.
const TASKS_PER_WORKER: usize = 4;
/// Most files in one batch.
const FILES_PER_TASK: usize = 64;
/// Most bytes in one batch: a batch of mid-sized files should not hold one worker for long.
/// Where sizes are not known up front, the worker enforces it (the rest of its batch comes
/// back uncopied).
pub(super) const BYTES_PER_TASK: u64 = 16 << 20;
/// Files this large are split into ranges of [`RANGE`] copied by several workers at once.
pub(super) const SPLIT_AT: u64 = 64 << 20;
const RANGE: u64 = 32 << 20;
/// Fewer directories of one depth than this are finished on the coordinator; more are shared
/// among the workers (a directory takes three quick calls; a task's round trip is dearer).
const DIRS_WORTH_SHARING: usize = 32;

/// What the coordinator remembers about a task in flight.
enum Pending {
    Scan(ScanCtx),
    Files(Arc<[FileJob]>),
    Range(u64),
    Finish(u64),
}

/// A directory being scanned.
struct ScanCtx {
    job: ScanJob,
    /// With `dereference`: (device, inode) of the directory and its ancestors, so that a
    /// symlink back up the tree is caught instead of copied forever.
    ancestors: Vec<(u64, u64)>,
}

/// A file copied in ranges.
struct Split {
    source: PathBuf,
    destination: PathBuf,
    temp: PathBuf,
    follow: bool,
    len: u64,
    /// Start of the next range to send.
    next: u64,
    /// Ranges not back yet.
    remaining: usize,
    /// Bytes reported to the observer so far.
    progressed: u64,
    /// The first range that failed.
    failure: Option<Failure>,
}

fn files_task(jobs: Vec<FileJob>) -> (Work, Pending) {
    let jobs: Arc<[FileJob]> = jobs.into();
    (Work::Files(Arc::clone(&jobs)), Pending::Files(jobs))
}

/// A directory built under a temporary name (see the module docs).
struct Staging {
    temp: PathBuf,
    destination: PathBuf,
}

/// The path a user should see for `path`: inside a staging directory, the path it will have.
fn shown<'p>(stagings: &[Staging], path: &'p Path) -> Cow<'p, Path> {
    use std::os::unix::ffi::OsStrExt;
    // Paths under a staging directory are built by joining onto it, so comparing bytes is
    // exact (and cheap: this runs for every entry).
    let bytes = path.as_os_str().as_bytes();
    for s in stagings {
        match bytes.strip_prefix(s.temp.as_os_str().as_bytes()) {
            Some([]) => return Cow::Owned(s.destination.clone()),
            Some([b'/', rest @ ..]) => return Cow::Owned(s.destination.join(std::ffi::OsStr::from_bytes(rest))),
            _ => {}
        }
    }
    Cow::Borrowed(path)
}

/// A hard link to make once the file it points at has been copied.
struct HardLink {
    source: PathBuf,
    destination: PathBuf,
    /// The destination of the first path seen with the same (device, inode).
    first: PathBuf,
}

pub(super) struct Run<'a, E> {
    executor: &'a E,
    options: &'a CopyOptions,
    observer: &'a mut dyn Observer,
    report: CopyReport,
    done_tx: Sender<u64>,
    done_rx: Receiver<u64>,
    next_id: u64,
    in_flight: HashMap<u64, (Future<TaskOutcome>, Pending)>,
    limit: usize,
    /// Scans waiting to be sent (taken last in, first out: depth first, which keeps this short).
    scans: Vec<ScanCtx>,
    /// Finishing steps of split files waiting to be sent.
    queued: VecDeque<(Work, Pending)>,
    /// Full batches waiting to be sent, grouped by the listing (directory) they came from and
    /// taken from the groups in turn: workers creating files in one directory at the same time
    /// queue up on its lock in the kernel, workers in different directories do not.
    ready: VecDeque<VecDeque<Vec<FileJob>>>,
    batch: Vec<FileJob>,
    batch_bytes: u64,
    inodes: HashMap<(u64, u64), PathBuf>,
    hard_links: Vec<HardLink>,
    /// Directories to finish once everything is copied.
    directories: Vec<DirFinish>,
    splits: HashMap<u64, Split>,
    /// Split files with ranges still to send, taken in turn: concurrent ranges then mostly
    /// belong to different files, because writes to one file are serialized by the kernel
    /// (the inode lock), while writes to different files run in parallel.
    range_turns: VecDeque<u64>,
    split_workers: bool,
    stagings: Vec<Staging>,
    /// The observer wants totals up front, so the walk reads every file's size.
    totals: bool,
}

impl<'a, E> Run<'a, E>
where
    E: Executor + Submit<Task>,
{
    pub(super) fn new(executor: &'a E, options: &'a CopyOptions, observer: &'a mut dyn Observer) -> Self {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let workers = executor.max_workers().max(1);
        let totals = observer.wants_totals();
        Run {
            executor,
            options,
            observer,
            report: CopyReport::default(),
            done_tx,
            done_rx,
            next_id: 0,
            in_flight: HashMap::new(),
            limit: workers * TASKS_PER_WORKER,
            scans: Vec::new(),
            queued: VecDeque::new(),
            ready: VecDeque::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            inodes: HashMap::new(),
            hard_links: Vec::new(),
            directories: Vec::new(),
            splits: HashMap::new(),
            range_turns: VecDeque::new(),
            split_workers: workers > 1,
            stagings: Vec::new(),
            totals,
        }
    }

    fn fail(&mut self, mut failure: Failure) {
        if let Cow::Owned(path) = shown(&self.stagings, &failure.path) {
            failure.path = path;
        }
        record(&mut self.report, self.observer, failure);
    }

    /// Starts one source named on the command line.
    pub(super) fn start(&mut self, assignment: &Assignment) {
        let o = self.options;
        for (source, destination) in &assignment.parents {
            self.make_parent(source, destination);
        }
        let (source, destination) = (&assignment.source, &assignment.destination);
        // cp follows a symlink named on the command line unless recursing (without -L).
        let follow = o.dereference || !o.recursive;
        let meta = if follow { fs::metadata(source) } else { fs::symlink_metadata(source) };
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) => return self.fail(entry::fail(source, "stat")(e)),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            let ancestors = if o.dereference { vec![(meta.dev(), meta.ino())] } else { Vec::new() };
            let meta = DirMeta::new(&meta);
            let job = match fs::symlink_metadata(destination) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A new directory: staged (see the module docs). Clear what a killed run
                    // left beside it first.
                    let temp = entry::temp_path(destination);
                    if let Some(parent) = temp.parent() {
                        entry::remove_stale_temps(if parent.as_os_str().is_empty() { Path::new(".") } else { parent });
                    }
                    self.stagings.push(Staging { temp: temp.clone(), destination: destination.clone() });
                    ScanJob {
                        source: source.clone(),
                        destination: temp,
                        meta,
                        in_staging: true,
                        stat_files: self.totals,
                    }
                }
                _ => ScanJob {
                    source: source.clone(),
                    destination: destination.clone(),
                    meta,
                    in_staging: false,
                    stat_files: self.totals,
                },
            };
            self.scans.push(ScanCtx { job, ancestors });
        } else if kind.is_file() {
            let parent = match destination.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let (dst_dev, dst_group) = scan::destination_dir(parent);
            let job = FileJob {
                source: source.clone(),
                destination: destination.clone(),
                len: Some(meta.len()),
                hand_back_links: false,
                hand_back_large: false,
                follow,
                check_existing: true,
                dst_dev,
                dst_group,
                in_staging: false,
            };
            self.add_found(vec![(job, scan::Stat::new(&meta).link_key())]);
        } else if kind.is_symlink() {
            let made = entry::make_symlink(source, destination, &meta, true, o);
            self.made(made, EntryKind::Symlink, source, destination);
        } else if o.recursive {
            let made = entry::make_special(destination, &meta, true, o);
            self.made(made, EntryKind::Special, source, destination);
        } else {
            let reason = "special file not copied without -r";
            self.report.skipped.push(Skipped { path: source.clone(), reason });
        }
    }

    /// `--parents`: makes one directory on the way to a source, as a copy of `source`.
    fn make_parent(&mut self, source: &Path, destination: &Path) {
        let meta = match fs::metadata(source) {
            Ok(meta) => DirMeta::new(&meta),
            Err(e) => return self.fail(entry::fail(source, "stat")(e)),
        };
        match entry::create_directory(destination, &meta) {
            // An existing directory on the way is used as it is, as cp does.
            Ok(true) => {}
            Ok(false) => self.directories.push(DirFinish { path: destination.to_path_buf(), meta, existed: false }),
            Err(failure) => self.fail(failure),
        }
    }

    fn made(&mut self, made: Result<bool, Failure>, kind: EntryKind, source: &Path, destination: &Path) {
        match made {
            Ok(true) => {
                match kind {
                    EntryKind::Special => self.report.specials += 1,
                    _ => self.report.symlinks += 1,
                }
                self.observer.copied(kind, source, &shown(&self.stagings, destination));
            }
            Ok(false) => self.report.unchanged += 1,
            Err(failure) => self.fail(failure),
        }
    }

    /// Hands out work and folds in outcomes until nothing is left.
    pub(super) fn drive(&mut self) -> Result<(), ShutdownError> {
        loop {
            if let Err(e) = self.fill() {
                self.abandon();
                return Err(e);
            }
            if self.in_flight.is_empty() {
                return Ok(());
            }
            // We hold a sender, so this never reports disconnection; each id arrives once.
            let Ok(id) = self.done_rx.recv() else { return Ok(()) };
            if let Some((future, pending)) = self.in_flight.remove(&id) {
                let outcome = future.result();
                self.absorb(outcome, pending);
            }
        }
    }

    /// Sends waiting work while there is room in flight.
    fn fill(&mut self) -> Result<(), ShutdownError> {
        while self.in_flight.len() < self.limit {
            let (work, pending) = if let Some(ctx) = self.scans.pop() {
                (Work::Scan(ctx.job.clone()), Pending::Scan(ctx))
            } else if let Some(next) = self.queued.pop_front() {
                next
            } else if let Some(mut group) = self.ready.pop_front() {
                let jobs = group.pop_front().expect("groups are never empty");
                if !group.is_empty() {
                    self.ready.push_back(group);
                }
                files_task(jobs)
            } else if let Some(range) = self.next_range() {
                range
            } else if !self.batch.is_empty() {
                files_task(self.take_batch())
            } else {
                break;
            };
            self.submit(work, pending)?;
        }
        Ok(())
    }

    fn submit(&mut self, work: Work, pending: Pending) -> Result<(), ShutdownError> {
        let id = self.next_id;
        self.next_id += 1;
        let task = Task { options: self.options.clone(), work };
        let future = self.executor.submit(task).map_err(|_| ShutdownError)?;
        let done = self.done_tx.clone();
        future.add_done_callback(move |_| {
            let _ = done.send(id);
        });
        self.in_flight.insert(id, (future, pending));
        Ok(())
    }

    /// The executor refused work: wait for what is in flight, then drop everything else,
    /// including the temporary files of split copies.
    fn abandon(&mut self) {
        for (_, (future, _)) in self.in_flight.drain() {
            future.wait();
        }
        for split in self.splits.values() {
            entry::discard(&split.temp);
        }
        self.splits.clear();
        // A directory that was never finished does not appear at all.
        for staging in self.stagings.drain(..) {
            let _ = fs::remove_dir_all(&staging.temp);
        }
    }

    /// The next range of the split file whose turn it is.
    fn next_range(&mut self) -> Option<(Work, Pending)> {
        let id = self.range_turns.pop_front()?;
        let split = self.splits.get_mut(&id)?;
        let (start, end) = (split.next, (split.next + RANGE).min(split.len));
        split.next = end;
        let job = RangeJob { source: split.source.clone(), temp: split.temp.clone(), start, end, follow: split.follow };
        if end < split.len {
            self.range_turns.push_back(id);
        }
        Some((Work::Range(job), Pending::Range(id)))
    }

    fn take_batch(&mut self) -> Vec<FileJob> {
        self.batch_bytes = 0;
        std::mem::take(&mut self.batch)
    }

    /// Files found by the walk, each with the (device, inode) to dedup on if it has other
    /// names: see [`Run::queue_files`].
    fn add_found(&mut self, found: Vec<(FileJob, Option<(u64, u64)>)>) {
        let jobs: Vec<FileJob> = found.into_iter().filter_map(|(job, link)| self.dedup(job, link)).collect();
        if self.totals {
            self.observer.found(jobs.len() as u64, jobs.iter().filter_map(|j| j.len).sum());
        }
        self.queue_files(jobs);
    }

    /// A file with other names (`link`) is copied once: the first path seen is copied, the
    /// others are kept (returning `None`) to become hard links at the end.
    fn dedup(&mut self, job: FileJob, link: Option<(u64, u64)>) -> Option<FileJob> {
        let Some(key) = link.filter(|_| self.options.preserve_links) else { return Some(job) };
        if let Some(first) = self.inodes.get(&key) {
            let first = first.clone();
            self.hard_links.push(HardLink { source: job.source, destination: job.destination, first });
            return None;
        }
        self.inodes.insert(key, job.destination.clone());
        Some(job)
    }

    /// Files to copy: large ones (of a known size) are split, the rest batched.
    fn queue_files(&mut self, jobs: Vec<FileJob>) {
        let mut full = VecDeque::new();
        for job in jobs {
            if let Some(len) = job.len.filter(|&len| len >= SPLIT_AT && self.split_workers) {
                self.split(job, len);
                continue;
            }
            self.batch_bytes += job.len.unwrap_or(0);
            self.batch.push(job);
            if self.batch.len() >= FILES_PER_TASK || self.batch_bytes >= BYTES_PER_TASK {
                full.push_back(self.take_batch());
            }
        }
        if !full.is_empty() {
            self.ready.push_back(full);
        }
    }

    /// Starts a large file (of `len` bytes): its temporary copy is made here, its ranges go to
    /// the workers.
    fn split(&mut self, job: FileJob, len: u64) {
        let (temp, len, ranges) = match entry::prepare_split(&job, self.options) {
            Err(failure) => return self.fail(failure),
            Ok(Prepared::Unchanged) => {
                self.report.unchanged += 1;
                return self.observer.progressed(len);
            }
            Ok(Prepared::Cloned(temp)) => (temp, len, 0),
            Ok(Prepared::Ranges { temp, len }) => (temp, len, len.div_ceil(RANGE) as usize),
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
        };
        self.splits.insert(id, split);
        if ranges == 0 {
            self.queue_finish(id);
        } else {
            self.range_turns.push_back(id);
        }
    }

    fn queue_finish(&mut self, id: u64) {
        let Some(split) = self.splits.get(&id) else { return };
        let job = FinishJob {
            source: split.source.clone(),
            destination: split.destination.clone(),
            temp: split.temp.clone(),
            follow: split.follow,
            len: split.len,
        };
        // First in line: the file is otherwise done, and its temporary file takes up space.
        self.queued.push_front((Work::Finish(job), Pending::Finish(id)));
    }

    fn absorb(&mut self, outcome: Result<TaskOutcome, JobError>, pending: Pending) {
        match (outcome, pending) {
            (Ok(TaskOutcome(Outcome::Scanned(listing))), Pending::Scan(ctx)) => self.listing(ctx, listing),
            (Ok(TaskOutcome(Outcome::Files(outcomes))), Pending::Files(jobs)) if outcomes.len() == jobs.len() => {
                let mut not_run = Vec::new();
                for (job, outcome) in jobs.iter().zip(outcomes) {
                    match outcome {
                        FileOutcome::Back(Back::NotRun) => not_run.push(job.clone()),
                        outcome => self.file_done(job, outcome),
                    }
                }
                self.requeue(not_run);
            }
            (Ok(TaskOutcome(Outcome::Range(result))), Pending::Range(id)) => self.range_done(id, result),
            (Ok(TaskOutcome(Outcome::Finished(outcome))), Pending::Finish(id)) => self.finish_done(id, outcome),
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

    fn task_failed(&mut self, pending: Pending, reason: &str) {
        let failure =
            |path: &Path| Failure { path: path.to_path_buf(), action: "copy job", error: io::Error::other(reason) };
        match pending {
            Pending::Scan(ctx) => self.fail(failure(&ctx.job.source)),
            Pending::Files(jobs) => {
                for job in jobs.iter() {
                    self.fail(failure(&job.source));
                }
            }
            Pending::Range(id) => {
                let source = self.splits.get(&id).map(|s| s.source.clone()).unwrap_or_default();
                self.range_done(id, Err(failure(&source)));
            }
            Pending::Finish(id) => {
                if let Some(split) = self.splits.remove(&id) {
                    entry::discard(&split.temp);
                    self.fail(failure(&split.source));
                }
            }
        }
    }

    fn listing(&mut self, ctx: ScanCtx, listing: Listing) {
        for failure in listing.failures {
            self.fail(failure);
        }
        self.report.unchanged += listing.unchanged;
        let ScanJob { source, destination, meta, in_staging, .. } = ctx.job;
        for (name, kind) in &listing.made {
            let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name);
            self.made(Ok(true), *kind, &source.join(name), &destination.join(name));
        }
        if !listing.created {
            return;
        }
        self.report.directories += 1;
        self.observer.copied(EntryKind::Directory, &source, &shown(&self.stagings, &destination));
        for dir in &listing.subdirs {
            let (Some(meta), Some(stat)) = (dir.dir, dir.stat) else { continue };
            let child = source.join(dir.name());
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
            let destination = destination.join(dir.name());
            let job = ScanJob { source: child, destination, meta, in_staging, stat_files: self.totals };
            self.scans.push(ScanCtx { job, ancestors });
        }
        let found = listing.files.iter().map(|file| {
            // A file the scan did not stat is checked by its worker, which hands it back if
            // it has to be deduplicated or split.
            let job = FileJob {
                source: source.join(file.name()),
                destination: destination.join(file.name()),
                len: file.stat.map(|s| s.len),
                hand_back_links: file.stat.is_none(),
                hand_back_large: file.stat.is_none() && self.split_workers,
                follow: self.options.dereference,
                check_existing: listing.existed,
                dst_dev: listing.dst_dev,
                dst_group: listing.dst_group,
                in_staging,
            };
            (job, file.stat.and_then(|s| s.link_key()))
        });
        let found: Vec<_> = found.collect();
        self.add_found(found);
        self.directories.push(DirFinish { path: destination, meta, existed: listing.existed });
    }

    fn file_done(&mut self, job: &FileJob, outcome: FileOutcome) {
        match outcome {
            FileOutcome::Copied(bytes) => {
                self.report.files += 1;
                self.report.bytes += bytes;
                self.observer.progressed(bytes);
                self.observer.copied(EntryKind::File, &job.source, &shown(&self.stagings, &job.destination));
            }
            FileOutcome::Unchanged(bytes) => {
                self.report.unchanged += 1;
                self.observer.progressed(bytes);
            }
            FileOutcome::Failed(failure) => self.fail(failure),
            FileOutcome::Back(back) => self.handed_back(job.clone(), back),
        }
    }

    /// Files a batch handed back uncopied: next out (they were due already), spread over the
    /// workers, since their sizes are still unknown and one batch would keep them all on one
    /// worker in turn.
    fn requeue(&mut self, mut jobs: Vec<FileJob>) {
        let per_batch = jobs.len().div_ceil(self.executor.max_workers().max(1)).max(1);
        // The last part first, each pushed in front of the one after it, so they go out in order.
        while !jobs.is_empty() {
            let part = jobs.split_off((jobs.len() - 1) / per_batch * per_batch);
            self.ready.push_front(VecDeque::from([part]));
        }
    }

    /// A file its worker did not copy (see [`Back`]); its size is known now unless the batch
    /// simply did not come to it.
    fn handed_back(&mut self, job: FileJob, back: Back) {
        // The worker checked links and size: it must not hand the file back again.
        let checked = |len| FileJob { len: Some(len), hand_back_links: false, hand_back_large: false, ..job.clone() };
        match back {
            // Nothing was checked: it goes out again as it came.
            Back::NotRun => self.requeue(vec![job]),
            Back::HardLinked { dev, ino, len } => {
                if let Some(job) = self.dedup(checked(len), Some((dev, ino))) {
                    self.queue_files(vec![job]);
                }
            }
            Back::Large { len } => self.split(checked(len), len),
        }
    }

    fn range_done(&mut self, id: u64, result: Result<u64, Failure>) {
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
                self.fail(failure);
            }
        } else {
            self.queue_finish(id);
        }
    }

    fn finish_done(&mut self, id: u64, outcome: FileOutcome) {
        let Some(split) = self.splits.remove(&id) else { return };
        match outcome {
            FileOutcome::Copied(bytes) => {
                self.report.files += 1;
                self.report.bytes += bytes;
                // A reflinked file had no ranges: its bytes count now.
                self.observer.progressed(bytes.saturating_sub(split.progressed));
                self.observer.copied(EntryKind::File, &split.source, &shown(&self.stagings, &split.destination));
            }
            FileOutcome::Unchanged(_) => self.report.unchanged += 1,
            FileOutcome::Failed(failure) => self.fail(failure),
            // A finishing step never hands its file back.
            FileOutcome::Back(_) => {
                entry::discard(&split.temp);
                let error = io::Error::other("the task returned an unexpected outcome");
                self.fail(Failure { path: split.source, action: "copy job", error });
            }
        }
    }

    /// Hard links, then directories deepest first, each staged one renamed into place once
    /// finished; returns the report.
    pub(super) fn finish(mut self) -> CopyReport {
        for link in std::mem::take(&mut self.hard_links) {
            match entry::hard_link(&link.first, &link.destination, self.options) {
                Ok(()) => {
                    self.report.hard_links += 1;
                    self.observer.copied(EntryKind::HardLink, &link.source, &shown(&self.stagings, &link.destination));
                }
                Err(failure) => self.fail(failure),
            }
        }
        let mut directories = std::mem::take(&mut self.directories);
        // Deepest first: setting a directory's times must come after everything inside it,
        // and renaming a staged directory (which changes its parent's times) before its parent.
        // Directories of one depth do not contain each other: they are finished together.
        let depth = |d: &DirFinish| d.path.components().count();
        directories.sort_by_cached_key(|d| std::cmp::Reverse(depth(d)));
        for level in directories.chunk_by(|a, b| depth(a) == depth(b)) {
            self.finish_directories(level);
            for dir in level {
                if let Some(i) = self.stagings.iter().position(|s| s.temp == dir.path) {
                    let staging = self.stagings.remove(i);
                    if let Err(failure) = entry::publish_directory(&staging.temp, &staging.destination) {
                        self.fail(failure);
                    }
                }
            }
        }
        self.report
    }

    /// Finishes directories none of which contains another: shared among the workers when
    /// there are enough to be worth a task each, else here.
    fn finish_directories(&mut self, dirs: &[DirFinish]) {
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
            let task = Task { options: o.clone(), work: Work::Directories(chunk.to_vec()) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use stealpool::ThreadPoolExecutor;

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
        }
    }

    /// Files a batch handed back uncopied have unknown sizes: they go out again spread over the
    /// workers, not as one batch that only one worker at a time could take.
    #[test]
    fn files_a_batch_hands_back_are_spread_over_the_workers() {
        let pool = ThreadPoolExecutor::new(2);
        let options = CopyOptions::default();
        let mut quiet = super::super::Quiet;
        let mut run = Run::new(&pool, &options, &mut quiet);
        let jobs: Arc<[FileJob]> = (0..9).map(job).collect::<Vec<_>>().into();
        let outcomes = (0..9)
            .map(|i| if i < 2 { FileOutcome::Copied(8 << 20) } else { FileOutcome::Back(Back::NotRun) })
            .collect();
        run.absorb(Ok(TaskOutcome(Outcome::Files(outcomes))), Pending::Files(jobs));
        let sizes: Vec<usize> = run.ready.iter().map(|group| group.iter().map(Vec::len).sum()).collect();
        assert_eq!(sizes, [4, 3], "one batch per worker, next out");
        let first = &run.ready[0][0][0];
        assert_eq!(first.source, Path::new("/src/f2"), "in their order");
        assert!(first.hand_back_links && first.hand_back_large, "nothing was checked: the checks are still due");
        assert_eq!(run.report.files, 2);
    }
}
