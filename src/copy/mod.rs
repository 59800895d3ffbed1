//! The batch copy engine behind `pcp`: copies files and trees like `cp -r`/`cp -a`, with the
//! file copies spread over an [`Executor`]. Unix only.
//!
//! A copy runs in four steps:
//! 1. **Plan** ([`plan`]): resolve each source's destination with `cp`'s naming rules and reject
//!    bad arguments (missing source, directory without `recursive`, a directory into itself)
//!    before anything is written.
//! 2. **Walk** (`walk.rs`): walk the sources, create the destination directories, and list the
//!    files, symlinks and hard links to make.
//! 3. **Copy**: regular files are copied on the executor in chunks (`imap_unordered`), each into
//!    a temporary name in its destination directory and then renamed into place, so a final name
//!    never holds a half-written file. Symlinks are made on the calling thread.
//! 4. **Finish**: hard links (which need their first copy in place), then directory modes and
//!    times, deepest first (creating entries changes a directory's times).
//!
//! One failure never stops the rest: every failure is collected, with its path and reason, in
//! the [`CopyReport`].
//!
//! This module must never leave a partially written file under its final name, and never
//! follow a symlink in a source tree unless asked to (`dereference`).

mod entry;
mod walk;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::ShutdownError;
use crate::executor::{Executor, MapOptions, Submit};
use crate::job::{Apply, Batch};

pub use self::entry::{FileJob, FileOutcome, TEMP_PREFIX};

/// The function the engine maps over the files: copies one [`FileJob`]. A named type (not a
/// closure) so that a [`ProcessPoolExecutor`](crate::ProcessPoolExecutor) can run it in its
/// workers, where it is registered as `stealpool::copy::file`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyFile;

impl Apply<FileJob> for CopyFile {
    type Output = FileOutcome;

    fn apply(&self, job: FileJob) -> FileOutcome {
        entry::copy_file(job)
    }
}

crate::register_fn!(entry::copy_file, name = "stealpool::copy::file");

/// What to copy and how, with the meanings of `cp`'s options.
///
/// # Examples
/// ```
/// let archive = stealpool::copy::CopyOptions::archive();
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
/// use stealpool::copy::{plan, CopyOptions, Target};
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
        Target::Auto(d) => (d, sources.len() > 1),
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
        let destination = if dest_is_dir {
            match source.file_name() {
                Some(name) => dest.join(name),
                // `.` or `..`: cp merges the directory's contents into the target.
                None => dest.clone(),
            }
        } else {
            dest.clone()
        };
        if meta.is_dir() {
            if std::fs::symlink_metadata(&destination).is_ok_and(|m| !m.is_dir()) {
                return Err(plan_error(&destination, PlanErrorKind::DirectoryOverFile));
            }
            if is_inside(&destination, source) {
                return Err(plan_error(source, PlanErrorKind::IntoItself(destination)));
            }
        }
        out.push(Assignment { source: source.clone(), destination });
    }
    Ok(out)
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

/// Something skipped on purpose (not a failure), such as a FIFO or socket.
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
    /// Hard links made.
    pub hard_links: u64,
    /// Files left alone because of `no_clobber` or `update`.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file's contents were copied.
    File,
    /// A symlink was made.
    Symlink,
    /// A hard link to an already copied file was made.
    HardLink,
}

/// Progress events, for a progress bar or a verbose listing.
///
/// Calls come from the thread that called [`copy`].
pub trait Observer {
    /// The walk is done: this many regular files and bytes will be copied.
    fn planned(&mut self, _files: u64, _bytes: u64) {}
    /// One entry was made (`bytes` is 0 except for files).
    fn copied(&mut self, _kind: EntryKind, _source: &Path, _destination: &Path, _bytes: u64) {}
    /// One path failed.
    fn failed(&mut self, _failure: &Failure) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Observer for Quiet {}

/// Files per job when copying many small files: enough to amortize the per-job cost, few
/// enough to keep every worker busy until the end.
const FILES_PER_CHUNK: usize = 16;

/// Copies `assignments` (from [`plan`]) with the file copies running on `executor`.
///
/// # Errors
/// [`ShutdownError`] if the executor is shut down. Every other failure is in the report.
///
/// # Examples
/// ```
/// use stealpool::copy::{copy, plan, CopyOptions, Quiet, Target};
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
    E: Executor + Submit<Batch<CopyFile, FileJob>>,
{
    let mut report = CopyReport::default();
    let work = walk::walk(assignments, options, &mut report, observer);
    let total_bytes = work.files.iter().map(|f| f.len).sum();
    observer.planned(work.files.len() as u64, total_bytes);

    let opts = MapOptions::new().chunksize(FILES_PER_CHUNK);
    for outcome in crate::executor::imap_unordered_apply(executor, CopyFile, work.files, opts)? {
        match outcome {
            Ok(FileOutcome::Copied { source, destination, bytes }) => {
                report.files += 1;
                report.bytes += bytes;
                observer.copied(EntryKind::File, &source, &destination, bytes);
            }
            Ok(FileOutcome::Unchanged) => report.unchanged += 1,
            Ok(FileOutcome::Failed(failure)) => record(&mut report, observer, failure),
            Err(e) => {
                let error = io::Error::other(e.to_string());
                record(&mut report, observer, Failure { path: PathBuf::new(), action: "copy job", error });
            }
        }
    }
    for link in work.hard_links {
        match entry::hard_link(&link.first_destination, &link.destination, options) {
            Ok(()) => {
                report.hard_links += 1;
                observer.copied(EntryKind::HardLink, &link.source, &link.destination, 0);
            }
            Err(failure) => record(&mut report, observer, failure),
        }
    }
    // Deepest first: setting a directory's times must come after everything inside it.
    for dir in work.directories.iter().rev() {
        if let Err(failure) = entry::finish_directory(dir, options) {
            record(&mut report, observer, failure);
        }
    }
    Ok(report)
}

fn record(report: &mut CopyReport, observer: &mut dyn Observer, failure: Failure) {
    observer.failed(&failure);
    report.failures.push(failure);
}
