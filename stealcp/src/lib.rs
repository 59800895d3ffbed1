//! The batch copy engine behind `pcp`: copies files and trees like `cp -r`/`cp -a`, with the
//! file copies spread over an [`Executor`]. Unix only.
//!
//! A copy runs in three steps:
//! 1. **Plan** ([`plan`]): resolve each source's destination with `cp`'s naming rules and reject
//!    bad arguments (missing source, directory without `recursive`, a directory into itself)
//!    before anything is written.
//! 2. **Run**: the calling thread coordinates; every piece of work is a [`Task`] on the
//!    executor. A directory is one scan task (make its copy, list it; `scan.rs`), so the walk
//!    runs on every worker at once and copies start while it goes on. Regular files go out in
//!    batches (many small files per task, so per-task cost does not dominate); a large file is
//!    split into ranges that several workers copy into one temporary file (`data.rs`: reflink,
//!    `copy_file_range`, holes kept). A final path never holds a half-written file: a
//!    directory the run creates is built under a temporary name and renamed into place once
//!    finished (`run.rs`), and a file written into an existing directory gets its final name
//!    only once complete (`entry.rs`).
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
//! This module must never leave a partially written file under its final name, and never
//! follow a symlink in a source tree unless asked to (`dereference`).

mod data;
mod entry;
mod run;
mod scan;
mod task;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use stealpool::ShutdownError;
use stealpool::{Executor, Submit};

pub use self::entry::TEMP_PREFIX;
pub use self::task::{Task, TaskOutcome};

/// What to copy and how, with the meanings of `cp`'s options.
///
/// # Examples
/// ```
/// let archive = stealcp::CopyOptions::archive();
/// assert!(archive.recursive && archive.preserve_links && !archive.dereference);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyOptions {
    /// Copy directories recursively (`-r`/`-R`).
    pub recursive: bool,
    /// Follow symlinks in the sources (`-L`); otherwise a symlink met while recursing is
    /// copied as a symlink. A symlink named on the command line without `recursive` is always
    /// followed, as `cp` does.
    pub dereference: bool,
    /// Keep permission bits (`-p`, `-a`); otherwise new files get the source's bits less the
    /// umask.
    pub preserve_mode: bool,
    /// Keep modification and access times, to the nanosecond (`-p`, `-a`).
    pub preserve_timestamps: bool,
    /// Keep owner and group where permitted (`-p`, `-a`); refusals are ignored, as by `cp`.
    pub preserve_ownership: bool,
    /// Keep hard links between copied files as hard links (`-a`).
    pub preserve_links: bool,
    /// Never overwrite an existing destination file (`-n`).
    pub no_clobber: bool,
    /// Copy a file only if the destination is missing or older (`-u`).
    pub update: bool,
    /// Re-read each copied file and compare it with its source (`--verify`).
    pub verify: bool,
    /// Append each source's path, as given, to the target directory (`--parents`): `a/b/f`
    /// into `out` becomes `out/a/b/f`, with `out/a` and `out/a/b` made as copies of `a` and
    /// `a/b`.
    pub parents: bool,
}

impl CopyOptions {
    /// `cp -a`: recursive, symlinks as symlinks, modes, times, ownership and hard links kept.
    pub fn archive() -> Self {
        CopyOptions {
            recursive: true,
            dereference: false,
            preserve_mode: true,
            preserve_timestamps: true,
            preserve_ownership: true,
            preserve_links: true,
            ..CopyOptions::default()
        }
    }

    /// `cp -p`: modes, times and ownership kept.
    pub fn preserve(mut self) -> Self {
        self.preserve_mode = true;
        self.preserve_timestamps = true;
        self.preserve_ownership = true;
        self
    }
}

/// Where the sources go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `cp SRC... DEST`: into `DEST` if it is a directory; as `DEST` if there is one source
    /// and `DEST` is not an existing directory.
    Auto(PathBuf),
    /// `cp -t DIR SRC...`: into the directory `DIR`, which must exist.
    IntoDirectory(PathBuf),
}

/// One source and the path it will be copied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The source as given.
    pub source: PathBuf,
    /// Its destination path.
    pub destination: PathBuf,
    /// Directories to make first, outermost first, each as a copy of a source directory
    /// (`--parents`; empty otherwise): (source directory, its destination).
    pub parents: Vec<(PathBuf, PathBuf)>,
}

/// An argument error found before any work starts.
#[derive(Debug)]
pub struct PlanError {
    path: PathBuf,
    kind: PlanErrorKind,
}

#[derive(Debug)]
enum PlanErrorKind {
    NoSources,
    Missing(io::Error),
    DirectoryWithoutRecursive,
    IntoItself(PathBuf),
    NotADirectory,
    DirectoryOverFile,
    ParentsOutside,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.kind {
            PlanErrorKind::NoSources => f.write_str("no source given"),
            PlanErrorKind::Missing(e) => write!(f, "cannot stat '{p}': {e}"),
            PlanErrorKind::DirectoryWithoutRecursive => {
                write!(f, "'{p}' is a directory (use -r to copy directories)")
            }
            PlanErrorKind::IntoItself(dest) => {
                write!(f, "cannot copy a directory, '{p}', into itself, '{}'", dest.display())
            }
            PlanErrorKind::NotADirectory => write!(f, "target '{p}' is not a directory"),
            PlanErrorKind::DirectoryOverFile => {
                write!(f, "cannot overwrite non-directory '{p}' with a directory")
            }
            PlanErrorKind::ParentsOutside => {
                write!(f, "with --parents, '{p}' would be copied outside the target ('..' is refused)")
            }
        }
    }
}

impl std::error::Error for PlanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            PlanErrorKind::Missing(e) => Some(e),
            _ => None,
        }
    }
}

fn plan_error(path: &Path, kind: PlanErrorKind) -> PlanError {
    PlanError { path: path.to_path_buf(), kind }
}

/// Resolves where each source goes, with `cp`'s rules, and rejects bad arguments.
///
/// # Errors
/// [`PlanError`] for a missing source, a directory without `recursive`, a directory copied
/// into itself, several sources (or `-t`) with a target that is not a directory, or a directory
/// over an existing non-directory.
///
/// # Examples
/// ```
/// use stealcp::{plan, CopyOptions, Target};
///
/// let dir = tempfile::tempdir().unwrap();
/// let src = dir.path().join("notes.txt");
/// std::fs::write(&src, "hi").unwrap();
/// let out = dir.path().join("out");
/// std::fs::create_dir(&out).unwrap();
/// let plan = plan(&[src.clone()], &Target::Auto(out.clone()), &CopyOptions::default()).unwrap();
/// assert_eq!(plan[0].destination, out.join("notes.txt"));
/// ```
pub fn plan(sources: &[PathBuf], target: &Target, options: &CopyOptions) -> Result<Vec<Assignment>, PlanError> {
    let (dest, must_be_dir) = match target {
        Target::Auto(d) => (d, sources.len() > 1 || options.parents),
        Target::IntoDirectory(d) => (d, true),
    };
    if sources.is_empty() {
        return Err(plan_error(dest, PlanErrorKind::NoSources));
    }
    let dest_is_dir = std::fs::metadata(dest).is_ok_and(|m| m.is_dir());
    if must_be_dir && !dest_is_dir {
        return Err(plan_error(dest, PlanErrorKind::NotADirectory));
    }
    let mut out = Vec::with_capacity(sources.len());
    for source in sources {
        // A symlink named on the command line is followed unless recursing without -L.
        let follow = options.dereference || !options.recursive;
        let meta = if follow { std::fs::metadata(source) } else { std::fs::symlink_metadata(source) };
        let meta = meta.map_err(|e| plan_error(source, PlanErrorKind::Missing(e)))?;
        if meta.is_dir() && !options.recursive {
            return Err(plan_error(source, PlanErrorKind::DirectoryWithoutRecursive));
        }
        let (destination, parents) = if options.parents {
            parents_destination(source, dest)?
        } else if dest_is_dir {
            match source.file_name() {
                // `dir/.`, `.` or `..`: cp merges the directory's contents into the target.
                Some(_) if ends_in_dot(source) => (dest.clone(), Vec::new()),
                Some(name) => (dest.join(name), Vec::new()),
                None => (dest.clone(), Vec::new()),
            }
        } else {
            (dest.clone(), Vec::new())
        };
        if meta.is_dir() {
            if std::fs::symlink_metadata(&destination).is_ok_and(|m| !m.is_dir()) {
                return Err(plan_error(&destination, PlanErrorKind::DirectoryOverFile));
            }
            if is_inside(&destination, source) {
                return Err(plan_error(source, PlanErrorKind::IntoItself(destination)));
            }
        }
        out.push(Assignment { source: source.clone(), destination, parents });
    }
    Ok(out)
}

/// Whether a path ends in a `.` component (`dir/.`), which `Path` normalizes away but which
/// tells `cp` to copy the directory's contents rather than the directory.
fn ends_in_dot(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let raw = path.as_os_str().as_bytes();
    raw == b"." || raw.ends_with(b"/.")
}

/// `--parents`: the source's path appended to the target, and the directories on the way.
fn parents_destination(source: &Path, dest: &Path) -> Result<(PathBuf, Vec<(PathBuf, PathBuf)>), PlanError> {
    use std::path::Component;
    let components: Vec<Component<'_>> = source.components().collect();
    let (mut src, mut dst) = (PathBuf::new(), dest.to_path_buf());
    let mut parents = Vec::new();
    for (i, component) in components.iter().enumerate() {
        src.push(component);
        match component {
            Component::Normal(name) => {
                dst.push(name);
                if i + 1 < components.len() {
                    parents.push((src.clone(), dst.clone()));
                }
            }
            Component::ParentDir => return Err(plan_error(source, PlanErrorKind::ParentsOutside)),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok((dst, parents))
}

/// Whether `path` (which may not exist yet) is `dir` or lies inside it.
fn is_inside(path: &Path, dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else { return false };
    // Canonicalize the deepest existing ancestor and re-append the rest.
    let mut existing = path.to_path_buf();
    let mut rest: Vec<OsString> = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(OsString::from), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return false,
        }
        if existing.as_os_str().is_empty() {
            existing = PathBuf::from(".");
        }
    }
    let Ok(mut full) = existing.canonicalize() else { return false };
    full.extend(rest.iter().rev());
    full.starts_with(&dir)
}

/// What went wrong with one path.
#[derive(Debug)]
pub struct Failure {
    /// The source (or, for destination-side steps, the destination) path.
    pub path: PathBuf,
    /// What was being done: "read directory", "copy", "create directory", ...
    pub action: &'static str,
    /// The operating system's reason.
    pub error: io::Error,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path.display(), self.action, self.error)
    }
}

/// Something skipped on purpose (not a failure): a FIFO, socket or device named on the command
/// line without `recursive` (`cp` would read from it, which can block forever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The source path.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: &'static str,
}

/// The outcome of a whole copy.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// Regular files copied.
    pub files: u64,
    /// Bytes of regular files copied.
    pub bytes: u64,
    /// Directories created or updated.
    pub directories: u64,
    /// Symlinks made.
    pub symlinks: u64,
    /// FIFOs, sockets and device nodes made.
    pub specials: u64,
    /// Hard links made.
    pub hard_links: u64,
    /// Entries left alone because of `no_clobber` or `update`.
    pub unchanged: u64,
    /// Special files not copied.
    pub skipped: Vec<Skipped>,
    /// Everything that failed; the copy went on past each.
    pub failures: Vec<Failure>,
}

impl CopyReport {
    /// Whether nothing failed.
    pub fn is_success(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What kind of entry an [`Observer`] is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EntryKind {
    /// A regular file's contents were copied.
    File,
    /// A directory was made (or an existing one reused).
    Directory,
    /// A symlink was made.
    Symlink,
    /// A FIFO, socket or device node was made.
    Special,
    /// A hard link to an already copied file was made.
    HardLink,
}

/// Progress events, for a progress bar or a verbose listing.
///
/// Calls come from the thread that called [`copy`]. The walk runs alongside the copies, so
/// [`found`](Observer::found) keeps being called while bytes are being copied.
pub trait Observer {
    /// Whether to learn the totals up front: then the walk reads every file's size (one
    /// `stat` per file, about a twentieth of a small-file copy's time) and reports them
    /// through [`found`](Observer::found). Without, `found` is never called, and hard links
    /// and large files are recognized by the workers as they open the files. Defaults to
    /// `true`; [`Quiet`] says `false`.
    fn wants_totals(&self) -> bool {
        true
    }
    /// The walk found this many more regular files and bytes to copy (only if
    /// [`wants_totals`](Observer::wants_totals)).
    fn found(&mut self, _files: u64, _bytes: u64) {}
    /// This many more bytes were copied (or left alone: `no_clobber`, `update`).
    fn progressed(&mut self, _bytes: u64) {}
    /// One entry is complete.
    fn copied(&mut self, _kind: EntryKind, _source: &Path, _destination: &Path) {}
    /// One path failed.
    fn failed(&mut self, _failure: &Failure) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Observer for Quiet {
    fn wants_totals(&self) -> bool {
        false
    }
}

/// Copies `assignments` (from [`plan`]) with the work running on `executor`.
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
    E: Executor + Submit<Task>,
{
    let mut run = run::Run::new(executor, options, observer);
    for assignment in assignments {
        run.start(assignment);
    }
    run.drive()?;
    Ok(run.finish())
}

fn record(report: &mut CopyReport, observer: &mut dyn Observer, failure: Failure) {
    observer.failed(&failure);
    report.failures.push(failure);
}

/// The README's example, run as a doc-test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
