//! The errors of the copier: [`PlanError`] (bad arguments, found before anything is written)
//! and [`Failure`] (one path that could not be copied; the copy goes on past it), with the
//! form in which a `Failure` crosses from a worker process.
//!
//! This module must never decide what is a failure; it only carries and shows them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::path_bytes;

/// An argument error found before any work starts.
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

pub(crate) fn plan_error(path: &Path, kind: PlanErrorKind) -> PlanError {
    PlanError { path: path.to_path_buf(), kind }
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

/// Every `action` a [`Failure`] can name, so one that crossed from a worker process maps back
/// to the same `&'static str`.
const ACTIONS: &[&str] = &[
    "open",
    "stat",
    "create",
    "copy",
    "preserve ownership",
    "preserve mode",
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
];

/// A [`Failure`] as it travels between processes.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireFailure {
    #[serde(with = "path_bytes")]
    path: PathBuf,
    action: String,
    os_error: Option<i32>,
    message: String,
}

impl serde::Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireFailure {
            path: self.path.clone(),
            action: self.action.to_owned(),
            os_error: self.error.raw_os_error(),
            message: self.error.to_string(),
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
        Ok(Failure { path: w.path, action, error })
    }
}

pub(crate) fn fail<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> Failure + 'a {
    move |error| Failure { path: path.to_path_buf(), action, error }
}
