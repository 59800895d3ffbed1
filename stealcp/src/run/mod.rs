//! The coordinator: runs on the thread that called [`copy`], hands [`CopyTask`]s to
//! the executor and folds their outcomes into the report.
//!
//! It keeps at most `TASKS_PER_WORKER` tasks per worker in flight, enough to keep the workers
//! busy while it waits for a CPU; the rest waits here, scans first (they find more work and
//! finish the totals early; files first only once very many wait, so that memory stays
//! bounded), then batches and file ranges. A batch of small files is sent when it is full, or
//! not yet full whenever few tasks are in flight (a worker may soon be idle), so that batching
//! never starves the pool. A long listing's scans and full batches go out while the rest of
//! it is folded in. A scan copies its directory's first files itself, a batch's worth, where
//! nothing needs the coordinator to see them first ([`Run::scan_task`]): in a tree of small
//! directories most files never become jobs here. Tasks report completion through
//! a done callback that sends the task's id over a channel; the coordinator then takes the
//! (already finished) future's result. It never blocks on one particular task.
//!
//! State that must be kept in one place lives only here: which inodes were seen (hard links),
//! which directories to finish, and the split files whose ranges are still out.
//!
//! A directory named on the command line whose destination does not exist yet is *staged*:
//! built under a temporary name beside its destination ([`TEMP_PREFIX`](crate::TEMP_PREFIX)`<pid>-<n>-<name>`) and
//! renamed into place once everything inside is finished. Nobody sees its files before then,
//! so they are written under their own names at once, with no temporary name or unnamed file
//! per file; a killed run leaves only the clearly named staging directory, which the next run
//! into the same place removes. Observers and failures are shown the final paths.
//!
//! - `start.rs`: the sources named on the command line (and `--parents` directories).
//! - `outcome.rs`: folding a finished task's outcome in (listings, batches, task failures).
//! - `files.rs`: batching files, dedup of hard links, files handed back by workers.
//! - `split.rs`: large files copied in ranges.
//! - `into_self.rs`: a directory merged into an existing directory inside itself.
//! - `finish.rs`: hard links, then directories deepest first, staged ones renamed into place.
//! - `staging.rs`: directories built under a temporary name, and the paths users are shown.
//!
//! This module must never block on one particular task, and never wait for work while a
//! worker could take some.

mod files;
mod finish;
mod into_self;
mod outcome;
mod split;
mod staging;
mod start;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use stealpool::{Executor, Future, ShutdownError, Submit};

use self::finish::HardLink;
use self::split::Split;
use self::staging::{Staging, shown};
use crate::copy_debug::CopyDebug;
use crate::entry::{self, DirFinish, FileJob};
use crate::error::Failure;
use crate::options::CopyOptions;
use crate::plan::Assignment;
use crate::report::{CopyReport, Observer, record};
use crate::scan::{CopyHere, ScanJob};
use crate::task::{CopyTask, TaskOutcome, Work};
use crate::tuning::{FILES_PER_TASK, PARTIAL_BATCH_BELOW, READY_BATCHES_MAX, TASKS_PER_WORKER};

/// Copies `assignments` (from [`plan`](crate::plan())) with the work running on `executor`.
///
/// # Errors
/// [`ShutdownError`] if the executor is shut down while the copy runs (files in flight are
/// finished or cleaned up first). Every other failure is in the report.
///
/// # Examples
/// ```
/// use stealcp::{copy, plan, CopyOptions, Quiet, Target};
/// use stealpool::ThreadPoolExecutor;
///
/// let dir = tempfile::tempdir().unwrap();
/// let src = dir.path().join("tree");
/// std::fs::create_dir_all(src.join("sub")).unwrap();
/// std::fs::write(src.join("sub/a.txt"), "alpha").unwrap();
/// let dest = dir.path().join("copy");
///
/// let options = CopyOptions::archive();
/// let plan = plan(&[src], &Target::Auto(dest.clone()), &options).unwrap();
/// let pool = ThreadPoolExecutor::new(2);
/// let report = copy(&plan, &options, &pool, &mut Quiet).unwrap();
/// assert!(report.is_success());
/// assert_eq!(std::fs::read_to_string(dest.join("sub/a.txt")).unwrap(), "alpha");
/// ```
pub fn copy<E>(
    assignments: &[Assignment],
    options: &CopyOptions,
    executor: &E,
    observer: &mut dyn Observer,
) -> Result<CopyReport, ShutdownError>
where
    E: Executor + Submit<CopyTask>,
{
    let mut run = Run::new(executor, options, observer);
    for wave in waves(assignments) {
        for assignment in wave {
            run.start(assignment);
            run.stop_at_first_made_directory(assignment);
        }
        run.drive()?;
        run.finish();
    }
    Ok(run.report)
}

/// The assignments cut, in order, into runs whose destinations do not overlap (none is, or
/// is inside, another's): each is copied and finished before the next starts. cp copies its
/// sources one after the other, so `cp -r x/d y/d o` merges `y/d` into the finished `o/d`,
/// and a file both write holds `y/d`'s copy; copied side by side, the second tree would
/// find the first half made, and two workers could write one file at once.
///
/// Destinations are compared where they really are: the deepest part of each that exists
/// with symlinks resolved, and an existing file by its inode (two names of one file are one
/// destination).
fn waves(assignments: &[Assignment]) -> Vec<&[Assignment]> {
    use std::os::unix::fs::MetadataExt;
    let mut waves = Vec::new();
    let mut start = 0;
    // The current wave's destinations, every directory above one of them, and the files
    // they already are.
    let mut taken: HashSet<PathBuf> = HashSet::new();
    let mut above: HashSet<PathBuf> = HashSet::new();
    let mut files: HashSet<(u64, u64)> = HashSet::new();
    for (i, assignment) in assignments.iter().enumerate() {
        let destination = resolved(&assignment.destination);
        let file = fs::metadata(&assignment.destination).ok().filter(|m| !m.is_dir()).map(|m| (m.dev(), m.ino()));
        let overlaps = taken.contains(&destination)
            || above.contains(&destination)
            || destination.ancestors().skip(1).any(|a| taken.contains(a))
            || file.is_some_and(|f| files.contains(&f));
        if overlaps {
            waves.push(&assignments[start..i]);
            start = i;
            taken.clear();
            above.clear();
            files.clear();
        }
        above.extend(destination.ancestors().skip(1).map(Path::to_path_buf));
        taken.insert(destination);
        files.extend(file);
    }
    waves.push(&assignments[start..]);
    waves
}

/// `path` with its deepest existing part resolved (symlinks followed, `.` and `..` gone) and
/// the rest as written.
fn resolved(path: &Path) -> PathBuf {
    let lexical = into_self::lexical(path);
    for there in lexical.ancestors() {
        let real = fs::canonicalize(if there.as_os_str().is_empty() { Path::new(".") } else { there });
        if let (Ok(real), Ok(rest)) = (real, lexical.strip_prefix(there)) {
            return if rest.as_os_str().is_empty() { real } else { real.join(rest) };
        }
    }
    lexical
}

/// What the coordinator remembers about a task in flight.
enum InFlight {
    /// Boxed: by far the largest, and one allocation per directory is nothing beside its listing.
    Scan(Box<ScanCtx>),
    Files(Arc<Vec<FileJob>>),
    Range(u64),
    Finish(u64),
    Links(Arc<crate::scan::LinksJob>),
}

/// A directory being scanned.
struct ScanCtx {
    job: ScanJob,
    /// With `dereference`: (device, inode) of the directory and its ancestors, so that a
    /// symlink back up the tree is caught instead of copied forever.
    ancestors: Vec<(u64, u64)>,
}

fn files_task(jobs: Vec<FileJob>) -> (Work, InFlight) {
    let jobs = Arc::new(jobs);
    (Work::Files(Arc::clone(&jobs)), InFlight::Files(jobs))
}

/// Full batches waiting to be sent that came from one directory listing (`listing`, numbered
/// in the order read), or from no listing (files handed back, each group on its own).
struct Group {
    listing: Option<u64>,
    /// Never empty while in [`Run::ready`].
    batches: VecDeque<Vec<FileJob>>,
}

struct Run<'a, E> {
    executor: &'a E,
    options: &'a CopyOptions,
    observer: &'a mut dyn Observer,
    report: CopyReport,
    done_tx: Sender<u64>,
    done_rx: Receiver<u64>,
    next_id: u64,
    in_flight: HashMap<u64, (Future<TaskOutcome>, InFlight)>,
    limit: usize,
    /// A partial batch is sent only while fewer tasks are in flight ([`PARTIAL_BATCH_BELOW`]).
    partial_below: usize,
    /// Scans waiting to be sent (taken last in, first out: depth first, which keeps this short).
    scans: Vec<ScanCtx>,
    /// Scans of the directory that holds a copy made inside its own source (`scan::IntoSelf`,
    /// the walk's last step): sent once nothing else is left, so that what they list is no
    /// longer being written.
    last_steps: Vec<ScanCtx>,
    /// Directories made before their scan (`into_self.rs`): new, though their scan finds them.
    precreated: HashSet<PathBuf>,
    /// Files copied before the walk (`into_self.rs`), which it leaves out when it finds them.
    precopied: HashSet<PathBuf>,
    /// When a directory is copied into itself: every directory this run makes, which the walk
    /// never lists as a source (it may be met inside the source with a lower inode number
    /// than the walk's next step, and a copy of it would be a copy of a copy without end).
    made_dirs: Option<HashSet<PathBuf>>,
    /// The new trees earlier waves published (`run::waves`), by their final names: the first
    /// directory cp makes for each of those sources, which a later source's walk never lists
    /// (`cp -r y/x d/x d/x` stops at the `d/x/x` the first source made, as cp does).
    made_earlier: Vec<PathBuf>,
    /// Finishing steps of split files waiting to be sent.
    queued: VecDeque<(Work, InFlight)>,
    /// Full batches waiting to be sent, grouped by the listing (directory) they came from and
    /// taken from the groups in turn: workers creating files in one directory at the same time
    /// queue up on its lock in the kernel, workers in different directories do not.
    ready: VecDeque<Group>,
    /// The number of the next directory listing whose files are queued (see [`Group`]).
    next_listing: u64,
    /// How many batches `ready` holds.
    ready_batches: usize,
    batch: Vec<FileJob>,
    batch_bytes: u64,
    inodes: HashMap<(u64, u64), PathBuf>,
    hard_links: Vec<HardLink>,
    /// Directories to finish once everything is copied.
    directories: Vec<DirFinish>,
    splits: HashMap<u64, Split>,
    /// How the ranges of each split file were copied (`--debug`), once one is back.
    split_debug: HashMap<u64, CopyDebug>,
    /// Split files with ranges still to send, taken in turn: concurrent ranges then mostly
    /// belong to different files, because writes to one file are serialized by the kernel
    /// (the inode lock), while writes to different files run in parallel.
    range_turns: VecDeque<u64>,
    split_workers: bool,
    stagings: Vec<Staging>,
    /// The observer wants totals up front, so the walk reads every file's size.
    totals: bool,
    /// The observer wants [`Observer::data_copied`] (`--debug`).
    debug: bool,
    /// The observer wants to hear of each entry ([`Observer::wants_entries`]).
    entries: bool,
}

impl<'a, E> Run<'a, E>
where
    E: Executor + Submit<CopyTask>,
{
    fn new(executor: &'a E, options: &'a CopyOptions, observer: &'a mut dyn Observer) -> Self {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let workers = executor.max_workers().max(1);
        let totals = observer.wants_totals();
        let debug = observer.wants_debug();
        let entries = observer.wants_entries();
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
            partial_below: workers * PARTIAL_BATCH_BELOW,
            scans: Vec::new(),
            last_steps: Vec::new(),
            precreated: HashSet::new(),
            precopied: HashSet::new(),
            made_dirs: None,
            made_earlier: Vec::new(),
            queued: VecDeque::new(),
            ready: VecDeque::new(),
            next_listing: 0,
            ready_batches: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            inodes: HashMap::new(),
            hard_links: Vec::new(),
            directories: Vec::new(),
            splits: HashMap::new(),
            split_debug: HashMap::new(),
            range_turns: VecDeque::new(),
            split_workers: workers > 1,
            stagings: Vec::new(),
            totals,
            debug,
            entries,
        }
    }

    /// Whether scans stat every regular file: for totals up front, and under `-L` with
    /// `--preserve=links`, where a file and a symlink to it are one file to link (cp remembers
    /// every file it reaches so), whatever its link count.
    fn stat_files(&self) -> bool {
        self.totals || self.links_by_inode()
    }

    /// `-L` with `--preserve=links`: every regular file is deduplicated by (device, inode).
    fn links_by_inode(&self) -> bool {
        self.options.dereference && self.options.preserve_links
    }

    /// The (device, inode) a found file is deduplicated on, if any.
    fn link_key(&self, stat: crate::scan::Stat) -> Option<(u64, u64)> {
        if self.links_by_inode() { Some((stat.dev, stat.ino)) } else { stat.link_key() }
    }

    fn fail(&mut self, mut failure: Failure) {
        if let Cow::Owned(path) = shown(&self.stagings, &failure.path) {
            failure.path = path;
        }
        failure.map_other_path(|other| match shown(&self.stagings, other) {
            Cow::Owned(other) => Some(other),
            Cow::Borrowed(_) => None,
        });
        record(&mut self.report, self.observer, failure);
    }

    /// Hands out work and folds in outcomes until nothing is left.
    fn drive(&mut self) -> Result<(), ShutdownError> {
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
        self.send_waiting(true)
    }

    /// Sends what is waiting while an outcome is being folded in, so that workers need not
    /// wait for the rest of it (the last steps of a copy into itself wait for the drive loop:
    /// more files may be on their way). The executor's refusal is met again by the drive
    /// loop's own [`fill`](Run::fill), which gives up then.
    fn pump(&mut self) {
        let _ = self.send_waiting(false);
    }

    fn send_waiting(&mut self, last_steps: bool) -> Result<(), ShutdownError> {
        while self.in_flight.len() < self.limit {
            // Scans go first: they find more work, so that no worker waits for a directory
            // to be read (and totals are known sooner). Only once very many files are waiting
            // here do they go first, so that the memory held for them stays bounded, however
            // large the tree (not when totals are wanted: those need the whole walk).
            let files_first = !self.totals && self.ready_batches >= READY_BATCHES_MAX;
            let (work, pending) = if let Some(ctx) = self.scans.pop_if(|_| !files_first) {
                self.scan_task(ctx)
            } else if let Some(next) = self.queued.pop_front() {
                next
            } else if let Some(jobs) = self.next_batch() {
                files_task(jobs)
            } else if let Some(ctx) = self.scans.pop() {
                self.scan_task(ctx)
            } else if let Some(range) = self.next_range() {
                range
            } else if !self.batch.is_empty() && self.in_flight.len() < self.partial_below {
                files_task(self.take_batch())
            } else if last_steps
                && self.in_flight.is_empty()
                && let Some(ctx) = self.last_steps.pop()
            {
                self.scan_task(ctx)
            } else {
                break;
            };
            self.submit(work, pending)?;
        }
        Ok(())
    }

    /// A scan to send: allowed to copy its first files itself ([`CopyHere`]) unless the
    /// coordinator must see every file first: totals up front (the observer hears of every
    /// file as found before any of it is copied), `-L` with `--preserve=links` (every file is
    /// deduplicated by inode), `-i` (questions are asked here), or a copy into itself (files
    /// copied before the walk, or directories it must not list).
    fn scan_task(&self, mut ctx: ScanCtx) -> (Work, InFlight) {
        let here = !self.stat_files()
            && !self.options.interactive
            && self.precopied.is_empty()
            && self.made_dirs.is_none()
            && ctx.job.into_self.is_none();
        ctx.job.copy_here = here.then_some(CopyHere { files: FILES_PER_TASK, split_large: self.split_workers });
        (Work::Scan(ctx.job.clone()), InFlight::Scan(Box::new(ctx)))
    }

    /// The next full batch to send, from the groups in turn (see [`Run::ready`]).
    fn next_batch(&mut self) -> Option<Vec<FileJob>> {
        let mut group = self.ready.pop_front()?;
        let jobs = group.batches.pop_front();
        if !group.batches.is_empty() {
            self.ready.push_back(group);
        }
        self.ready_batches -= usize::from(jobs.is_some());
        jobs
    }

    fn submit(&mut self, work: Work, pending: InFlight) -> Result<(), ShutdownError> {
        let id = self.next_id;
        self.next_id += 1;
        let task = CopyTask { options: self.options.clone(), work };
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

    fn take_batch(&mut self) -> Vec<FileJob> {
        self.batch_bytes = 0;
        std::mem::replace(&mut self.batch, Vec::with_capacity(crate::tuning::FILES_PER_TASK))
    }
}
