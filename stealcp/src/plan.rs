//! Step 1 of a copy: resolve each source's destination with `cp`'s naming rules, and reject
//! bad arguments (missing source, directory without `recursive`, a directory into itself)
//! before anything is written.
//!
//! This module must never write anything: it only reads metadata.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{PlanError, PlanErrorKind, plan_error};
use crate::options::{CopyOptions, Target};

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
