//! The errors of the copier: [`PlanError`] (bad arguments, found before anything is written)
//! and [`Failure`] (one path that could not be copied; the copy goes on past it), with the
//! form in which a `Failure` crosses from a worker process.
//!
//! This module must never decide what is a failure; it only carries and shows them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::path_bytes;

/// An argument error found before any work starts, worded as `cp` words it.
#[derive(Debug)]
pub struct PlanError {
    pub(crate) path: PathBuf,
    pub(crate) kind: PlanErrorKind,
}

#[derive(Debug)]
pub(crate) enum PlanErrorKind {
    NoSources,
    Missing(io::Error),
    DirectoryWithoutRecursive,
    /// The target must be a directory and is not: why, and whether it was named by `-t`.
    NotADirectory(io::Error, bool),
    /// A directory source over an existing non-directory (the path is the destination).
    DirectoryOverFile(PathBuf),
    /// A non-directory source over an existing directory (`-T`; the path is the destination).
    FileOverDirectory,
    ParentsOutside,
    /// The source and the destination are the same file (the path is the source).
    SameFile(PathBuf),
    /// An earlier source was copied to this destination (the path is the source).
    JustCreated(PathBuf),
    /// An earlier source was copied to this destination as a symlink (the path is the source).
    ThroughJustCreatedSymlink(PathBuf),
    /// Backing up the destination (the path) would replace the source, which is not copied.
    BackupIsSource(PathBuf),
    /// The same source named twice: a warning, the second is skipped.
    SpecifiedTwice {
        directory: bool,
    },
}

impl PlanError {
    /// Whether this is only a warning (`cp` goes on and does not fail for it): a source named
    /// twice, which is copied once.
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let f = dir.path().join("f");
    /// std::fs::write(&f, "x").unwrap();
    /// let options = stealcp::CopyOptions::default();
    /// let target = stealcp::Target::Auto(dir.path().join("out"));
    /// std::fs::create_dir(dir.path().join("out")).unwrap();
    /// let (plan, errors) = stealcp::plan_each(&[f.clone(), f], &target, &options).unwrap();
    /// assert_eq!((plan.len(), errors.len()), (1, 1));
    /// assert!(errors[0].is_warning());
    /// ```
    pub fn is_warning(&self) -> bool {
        matches!(self.kind, PlanErrorKind::SpecifiedTwice { .. })
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = Quoted(&self.path);
        match &self.kind {
            PlanErrorKind::NoSources => f.write_str("missing file operand"),
            PlanErrorKind::Missing(e) => write!(f, "cannot stat {p}: {}", Reason(e)),
            PlanErrorKind::DirectoryWithoutRecursive => write!(f, "-r not specified; omitting directory {p}"),
            PlanErrorKind::NotADirectory(e, false) => write!(f, "target {p}: {}", Reason(e)),
            PlanErrorKind::NotADirectory(e, true) => write!(f, "target directory {p}: {}", Reason(e)),
            PlanErrorKind::DirectoryOverFile(dest) => {
                write!(f, "cannot overwrite non-directory {} with directory {p}", Quoted(dest))
            }
            PlanErrorKind::FileOverDirectory => write!(f, "cannot overwrite directory {p} with non-directory"),
            PlanErrorKind::ParentsOutside => {
                write!(f, "with --parents, {p} would be copied outside the target ('..' is refused)")
            }
            PlanErrorKind::SameFile(source) => write!(f, "{} and {p} are the same file", Quoted(source)),
            PlanErrorKind::JustCreated(source) => {
                write!(f, "will not overwrite just-created {p} with {}", Quoted(source))
            }
            PlanErrorKind::ThroughJustCreatedSymlink(source) => {
                write!(f, "will not copy {} through just-created symlink {p}", Quoted(source))
            }
            PlanErrorKind::BackupIsSource(source) => {
                write!(f, "backing up {p} might destroy source;  {} not copied", Quoted(source))
            }
            PlanErrorKind::SpecifiedTwice { directory } => {
                let what = if *directory { "directory" } else { "file" };
                write!(f, "warning: source {what} {p} specified more than once")
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

pub(crate) fn plan_error(path: &Path, kind: PlanErrorKind) -> PlanError {
    PlanError { path: path.to_path_buf(), kind }
}

/// A path as `cp` shows it in messages: between single quotes (a quote inside is shown as
/// `'\''`, as by the shell quoting `cp` uses).
pub(crate) struct Quoted<'a>(pub(crate) &'a Path);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.to_string_lossy();
        if shown.contains('\'') { write!(f, "\"{shown}\"") } else { write!(f, "'{shown}'") }
    }
}

/// An error's reason as `cp` shows it: the system's words (`Permission denied`), without the
/// `(os error 13)` that Rust's `io::Error` adds.
pub(crate) struct Reason<'a>(pub(crate) &'a io::Error);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        match self.0.raw_os_error() {
            Some(code) => {
                let suffix = format!(" (os error {code})");
                f.write_str(text.strip_suffix(suffix.as_str()).unwrap_or(&text))
            }
            None => f.write_str(&text),
        }
    }
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

impl Failure {
    /// Whether `cp -v` would have listed the entry (`'SOURCE' -> 'DEST'`) before this failure:
    /// cp lists an entry once its checks of the destination pass (same file, directory, backup,
    /// removal), before it opens, creates, writes or links anything.
    ///
    /// # Examples
    /// ```
    /// let failure = |action| stealcp::Failure { path: "d".into(), action, error: std::io::Error::other("") };
    /// assert!(failure("open").listed_by_cp() && failure("dangling symlink").listed_by_cp());
    /// assert!(!failure("same file").listed_by_cp() && !failure("backup").listed_by_cp());
    /// ```
    pub fn listed_by_cp(&self) -> bool {
        matches!(
            self.action,
            "open"
                | "create"
                | "copy"
                | "read"
                | "write"
                | "clone"
                | "preserve ownership"
                | "preserve mode"
                | "preserve permissions"
                | "preserve timestamps"
                | "verify"
                | "rename into place"
                | "dangling symlink"
                | "create hard link"
                | "create symlink"
                | "relative symlink"
                | "read symlink"
                | "create special file"
        )
    }
}

impl fmt::Display for Failure {
    /// Worded as `cp` words the same failure (`cannot open 'a' for reading: Permission denied`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, e) = (Quoted(&self.path), Reason(&self.error));
        match self.action {
            "open" => write!(f, "cannot open {p} for reading: {e}"),
            "stat" => write!(f, "cannot stat {p}: {e}"),
            "create" => write!(f, "cannot create regular file {p}: {e}"),
            "read" => write!(f, "error reading {p}: {e}"),
            "write" => write!(f, "error writing {p}: {e}"),
            "copy" => write!(f, "error copying {p}: {e}"),
            "preserve ownership" => write!(f, "failed to preserve ownership for {p}: {e}"),
            "preserve mode" | "preserve permissions" => write!(f, "preserving permissions for {p}: {e}"),
            // cp (libattr) names the attribute too: "setting attribute 'user.x' for 'd'".
            "preserve extended attributes" => write!(f, "setting attributes for {p}: {e}"),
            "preserve timestamps" => write!(f, "preserving times for {p}: {e}"),
            "verify" => write!(f, "verifying {p}: {e}"),
            "rename into place" => write!(f, "cannot move the copy into place at {p}: {e}"),
            "read symlink" => write!(f, "cannot read symbolic link {p}: {e}"),
            "create symlink" => match self.other_path() {
                Some((other, e)) => write!(f, "cannot create symbolic link {p} to {}: {}", Quoted(other), Reason(e)),
                None => write!(f, "cannot create symbolic link {p}: {e}"),
            },
            "replace" => write!(f, "cannot remove {p}: {e}"),
            "backup" => write!(f, "cannot backup {p}: {e}"),
            "create hard link" => match self.other_path() {
                Some((other, e)) => write!(f, "cannot create hard link {p} to {}: {}", Quoted(other), Reason(e)),
                None => write!(f, "cannot create hard link {p}: {e}"),
            },
            "create directory" => write!(f, "cannot create directory {p}: {e}"),
            "set mode" => write!(f, "setting permissions for {p}: {e}"),
            "create special file" => write!(f, "cannot create special file {p}: {e}"),
            "read directory" => write!(f, "cannot access {p}: {e}"),
            "clone" => match self.other_path() {
                Some((other, e)) => write!(f, "failed to clone {p} from {}: {}", Quoted(other), Reason(e)),
                None => write!(f, "failed to clone {p}: {e}"),
            },
            // Whole sentences: the error only carries the other path, if any.
            "overwrite directory" => write!(f, "cannot overwrite directory {p} with non-directory"),
            "overwrite non-directory" => match self.error.to_string() {
                source if source.is_empty() => write!(f, "cannot overwrite non-directory {p} with directory"),
                source => write!(f, "cannot overwrite non-directory {p} with directory {source}"),
            },
            "dangling symlink" => write!(f, "not writing through dangling symlink {p}"),
            "same file" => write!(f, "{e} and {p} are the same file"),
            "just created" => write!(f, "will not overwrite just-created {p} with {e}"),
            "through just-created symlink" => write!(f, "will not copy {e} through just-created symlink {p}"),
            "into itself" => write!(f, "cannot copy a directory, {p}, into itself, {e}"),
            "relative symlink" => {
                write!(f, "{}: can make relative symbolic links only in current directory", self.path.display())
            }
            action => write!(f, "cannot copy {p} ({action}): {e}"),
        }
    }
}

/// Every `action` a [`Failure`] can name, so one that crossed from a worker process maps back
/// to the same `&'static str`.
const ACTIONS: &[&str] = &[
    "open",
    "stat",
    "create",
    "copy",
    "preserve ownership",
    "preserve mode",
    "preserve permissions",
    "preserve extended attributes",
    "preserve timestamps",
    "verify",
    "rename into place",
    "read symlink",
    "create symlink",
    "replace",
    "create hard link",
    "create directory",
    "set mode",
    "create special file",
    "read directory",
    "copy job",
    "read",
    "write",
    "backup",
    "clone",
    "overwrite directory",
    "overwrite non-directory",
    "dangling symlink",
    "same file",
    "just created",
    "through just-created symlink",
    "relative symlink",
    "into itself",
];

/// An error about two paths, of which the [`Failure`]'s is the first: cp names both for a hard
/// link (`cannot create hard link 'D' to 'S': ...`) and a clone (`failed to clone 'D' from 'S'`).
#[derive(Debug)]
struct TwoPaths {
    other: PathBuf,
    error: io::Error,
}

impl fmt::Display for TwoPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", Quoted(&self.other), Reason(&self.error))
    }
}

impl std::error::Error for TwoPaths {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl Failure {
    /// Rewrites the other path a two-path failure names, where `map` gives a new one (a
    /// staged name becomes the name it will have).
    pub(crate) fn map_other_path(&mut self, map: impl FnOnce(&Path) -> Option<PathBuf>) {
        if let Some(two) = self.error.get_mut().and_then(|e| e.downcast_mut::<TwoPaths>())
            && let Some(other) = map(&two.other)
        {
            two.other = other;
        }
    }

    /// The other path a two-path failure names, and the OS error.
    fn other_path(&self) -> Option<(&Path, &io::Error)> {
        let two = self.error.get_ref()?.downcast_ref::<TwoPaths>()?;
        Some((&two.other, &two.error))
    }
}

/// A failure of `action` on `path` that names `other` too (see [`TwoPaths`]); the error's kind
/// is kept, and the OS error is its [`source`](std::error::Error::source).
pub(crate) fn fail_with<'a>(
    path: &'a Path,
    action: &'static str,
    other: &'a Path,
) -> impl FnOnce(io::Error) -> Failure + 'a {
    move |error| {
        let error = io::Error::new(error.kind(), TwoPaths { other: other.to_path_buf(), error });
        Failure { path: path.to_path_buf(), action, error }
    }
}

/// The failure to make `destination` a hard link to `target`.
pub(crate) fn link_failed<'a>(destination: &'a Path, target: &'a Path) -> impl FnOnce(io::Error) -> Failure + 'a {
    fail_with(destination, "create hard link", target)
}

/// A [`Failure`] as it travels between processes.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireFailure {
    #[serde(with = "path_bytes")]
    path: PathBuf,
    action: String,
    os_error: Option<i32>,
    message: String,
    /// The other path of a [`TwoPaths`] error; `os_error` and `message` are then its error's.
    #[serde(default, with = "crate::entry::path_bytes_opt")]
    other_path: Option<PathBuf>,
}

impl serde::Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let other = self.other_path();
        let error = other.map_or(&self.error, |(_, error)| error);
        WireFailure {
            path: self.path.clone(),
            action: self.action.to_owned(),
            os_error: error.raw_os_error(),
            message: error.to_string(),
            other_path: other.map(|(path, _)| path.to_path_buf()),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Failure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireFailure::deserialize(d)?;
        let action = ACTIONS.iter().find(|a| **a == w.action).copied().unwrap_or("copy");
        // An OS error number rebuilds the same error (and message); anything else keeps its text.
        let error = w.os_error.map_or_else(|| io::Error::other(w.message), io::Error::from_raw_os_error);
        let error = match w.other_path {
            Some(other) => io::Error::new(error.kind(), TwoPaths { other, error }),
            None => error,
        };
        Ok(Failure { path: w.path, action, error })
    }
}

pub(crate) fn fail<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> Failure + 'a {
    move |error| Failure { path: path.to_path_buf(), action, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure from a worker process keeps its action (and so its wording): ACL and xattr
    /// failures were shown as "cannot copy ... (copy)" after the trip.
    #[test]
    fn acl_and_xattr_failures_keep_their_wording_across_processes() {
        for (action, words) in [
            ("preserve permissions", "preserving permissions for 'd': "),
            ("preserve extended attributes", "setting attributes for 'd': "),
        ] {
            let failure = Failure { path: "d".into(), action, error: io::Error::from_raw_os_error(nix::libc::EPERM) };
            let back: Failure = postcard::from_bytes(&postcard::to_stdvec(&failure).unwrap()).unwrap();
            assert_eq!(back.action, action);
            assert!(back.to_string().starts_with(words), "{back}");
        }
    }

    /// Hard link and clone failures name both paths, as cp's, also after a trip from a worker
    /// process.
    #[test]
    fn two_path_failures_name_both_across_processes() {
        let exdev = || io::Error::from_raw_os_error(nix::libc::EXDEV);
        let link = link_failed(Path::new("d"), Path::new("s"))(exdev());
        let clone = fail_with(Path::new("d"), "clone", Path::new("s"))(exdev());
        for (failure, words) in [
            (link, "cannot create hard link 'd' to 's': Invalid cross-device link"),
            (clone, "failed to clone 'd' from 's': Invalid cross-device link"),
        ] {
            let back: Failure = postcard::from_bytes(&postcard::to_stdvec(&failure).unwrap()).unwrap();
            for f in [&failure, &back] {
                assert_eq!(f.to_string(), words);
                assert_eq!(f.error.kind(), io::ErrorKind::CrossesDevices);
            }
        }
    }
}
