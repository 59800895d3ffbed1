//! What a copy tells its caller: the [`CopyReport`] at the end, and the [`Observer`] events
//! while it runs (a progress bar, a verbose listing).
//!
//! This module must never do any copying; the coordinator (`run/`) fills the report.

use std::path::{Path, PathBuf};

use crate::error::Failure;

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
    /// New directories copied whole but left under their temporary names, because their
    /// final name could not be given to them at the end (see [`LeftStaged`]).
    pub left_staged: Vec<LeftStaged>,
}

/// A new directory built under a temporary name beside its destination that could not be
/// renamed into place at the end (something took the name meanwhile, or the rename was
/// refused): the copy stays at `temp`, and its failure is in [`CopyReport::failures`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftStaged {
    /// Where the copy should have gone.
    pub destination: PathBuf,
    /// Where the copy is.
    pub temp: PathBuf,
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

/// An existing destination that `-i` asks about ([`Observer::overwrite`]).
///
/// # Examples
/// ```
/// use stealcp::{CopyOptions, Observer, OverwriteQuestion, Target};
///
/// /// Says no to every question, and remembers them.
/// struct No(Vec<std::path::PathBuf>);
/// impl Observer for No {
///     fn overwrite(&mut self, question: &OverwriteQuestion) -> bool {
///         self.0.push(question.destination.clone());
///         false
///     }
/// }
///
/// let dir = tempfile::tempdir().unwrap();
/// let (src, out) = (dir.path().join("tree"), dir.path().join("out"));
/// std::fs::create_dir_all(src.join("sub")).unwrap();
/// std::fs::write(src.join("sub/kept.txt"), "new").unwrap();
/// std::fs::write(src.join("added.txt"), "added").unwrap();
/// std::fs::create_dir_all(out.join("tree/sub")).unwrap();
/// std::fs::write(out.join("tree/sub/kept.txt"), "old").unwrap();
///
/// let options = CopyOptions { recursive: true, interactive: true, ..CopyOptions::default() };
/// let plan = stealcp::plan(&[src], &Target::Auto(out.clone()), &options).unwrap();
/// let mut no = No(Vec::new());
/// let pool = stealpool::ThreadPoolExecutor::new(2);
/// let report = stealcp::copy(&plan, &options, &pool, &mut no).unwrap();
/// assert!(report.is_success());
/// assert_eq!(no.0, [out.join("tree/sub/kept.txt")]);
/// assert_eq!(std::fs::read_to_string(out.join("tree/sub/kept.txt")).unwrap(), "old");
/// assert_eq!(std::fs::read_to_string(out.join("tree/added.txt")).unwrap(), "added");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverwriteQuestion {
    /// The destination.
    pub destination: PathBuf,
    /// Its mode (type and permission bits, as `st_mode`).
    pub mode: u32,
    /// Whether this process may write it (else cp asks whether to "try anyway").
    pub writable: bool,
}

/// What became of an existing destination that a new entry replaced: what `cp -v` says of it.
///
/// # Examples
/// ```
/// use stealcp::Displaced;
/// let backup = Displaced::BackedUp("d~".into());
/// assert!(Displaced::Removed.listed_before() && !backup.listed_before() && !Displaced::Replaced.listed_before());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Displaced {
    /// Removed before the new entry was made: `--remove-destination`, a symlink or special
    /// file copied over it, `-a` over a file with other names. `cp -v` prints
    /// `removed 'DEST'` before the entry's line.
    Removed,
    /// Removed after all: it could not be opened for writing (`-f`), or a hard link took its
    /// place. `cp -v` prints `removed 'DEST'` after the entry's line.
    Replaced,
    /// Renamed to this backup name first (`--backup`): `cp -v` ends the entry's line with
    /// ` (backup: 'NAME')`.
    BackedUp(#[serde(with = "crate::path_bytes")] PathBuf),
}

impl Displaced {
    /// Whether `cp -v` says `removed 'DEST'` before the entry's own line.
    pub fn listed_before(&self) -> bool {
        matches!(self, Displaced::Removed)
    }
}

/// Progress events, for a progress bar or a verbose listing.
///
/// Calls come from the thread that called [`copy`](crate::copy()). The walk runs alongside the copies, so
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
    /// Whether to be told of each entry ([`copied`](Observer::copied),
    /// [`replaced`](Observer::replaced)); asked once per copy. Without, those are not called
    /// for regular files, and the engine does not make their paths for them (a
    /// `cp -v` listing, or a count of files, wants them). Defaults to `true`; [`Quiet`] says
    /// `false`.
    fn wants_entries(&self) -> bool {
        true
    }
    /// One entry is complete.
    fn copied(&mut self, _kind: EntryKind, _source: &Path, _destination: &Path) {}
    /// One entry is complete, and it replaced an existing destination ([`Displaced`] says
    /// how). Defaults to [`copied`](Observer::copied).
    fn replaced(&mut self, kind: EntryKind, source: &Path, destination: &Path, _displaced: &Displaced) {
        self.copied(kind, source, destination);
    }
    /// An entry was tried and failed (its failure comes next, through
    /// [`failed`](Observer::failed)) after the point where `cp -v` lists it (see
    /// [`Failure::listed_by_cp`]). Defaults to nothing.
    fn attempted(&mut self, _kind: EntryKind, _source: &Path, _destination: &Path) {}
    /// A regular file's contents were copied this way (after its [`copied`](Observer::copied)
    /// or [`replaced`](Observer::replaced), or after [`attempted`](Observer::attempted) and the
    /// failure of a `--reflink=always` copy): what `cp --debug` prints after the file's `-v`
    /// line. Not called for links (`-l`, `-s`) or `--attributes-only`, nor at all unless
    /// [`wants_debug`](Observer::wants_debug). Defaults to nothing.
    fn data_copied(&mut self, _source: &Path, _destination: &Path, _how: &crate::CopyDebug) {}
    /// Whether to be told how each file's contents were copied
    /// ([`data_copied`](Observer::data_copied)); asked once per copy. Defaults to `false`, so
    /// that a copy without `--debug` spends nothing on it.
    fn wants_debug(&self) -> bool {
        false
    }
    /// `--parents` made the directory `destination` on the way to a source, as a copy of
    /// `source` (`cp -v` lists it unquoted). Defaults to nothing.
    fn made_parent(&mut self, _source: &Path, _destination: &Path) {}
    /// One path failed.
    fn failed(&mut self, _failure: &Failure) {}
    /// `interactive`: whether to replace this existing destination (asked on the thread that
    /// called [`copy`](crate::copy()), never on a worker). Defaults to `false`: nothing is
    /// replaced without a yes.
    fn overwrite(&mut self, _question: &OverwriteQuestion) -> bool {
        false
    }
    /// A new directory's copy could not be renamed into place and stays at `temp`; called
    /// right after [`failed`](Observer::failed) reported why.
    fn left_staged(&mut self, _destination: &Path, _temp: &Path) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Observer for Quiet {
    fn wants_totals(&self) -> bool {
        false
    }

    fn wants_entries(&self) -> bool {
        false
    }
}

/// One entry is complete: [`Observer::replaced`] if it took the place of an existing one, else
/// [`Observer::copied`].
pub(crate) fn listed(
    observer: &mut dyn Observer,
    kind: EntryKind,
    source: &Path,
    destination: &Path,
    displaced: Option<&Displaced>,
) {
    match displaced {
        Some(displaced) => observer.replaced(kind, source, destination, displaced),
        None => observer.copied(kind, source, destination),
    }
}

pub(crate) fn record(report: &mut CopyReport, observer: &mut dyn Observer, failure: Failure) {
    observer.failed(&failure);
    report.failures.push(failure);
}

/// A staged directory that could not be published: its failure first, then where it is.
pub(crate) fn record_left_staged(
    report: &mut CopyReport,
    observer: &mut dyn Observer,
    failure: Failure,
    temp: PathBuf,
    destination: PathBuf,
) {
    record(report, observer, failure);
    observer.left_staged(&destination, &temp);
    report.left_staged.push(LeftStaged { destination, temp });
}
