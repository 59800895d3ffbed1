//! Step 1 of a copy: resolve each source's destination with `cp`'s naming rules, and reject
//! bad arguments (missing source, directory without `recursive`) before anything is written.
//! (A directory copied into itself, to a new name or merged into an existing directory, is
//! left to the run, which copies it as cp does: see `scan::IntoSelf`, `run/into_self.rs`.)
//!
//! This module must never write anything: it only reads metadata.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
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
    /// With `interactive`, a destination an earlier source has just made: cp asks about it
    /// as about any existing destination, then refuses it (cp's just-created rule): "n"
    /// skips the source, "y" meets the refusal. Made only by [`plan_each`].
    pub(crate) refused_after_asking: Option<Refusal>,
}

/// How cp refuses a destination an earlier source on the command line has just made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// "will not overwrite just-created 'D' with 'S'".
    Overwrite,
    /// "will not copy 'S' through just-created symlink 'D'".
    ThroughSymlink,
}

/// Resolves where each source goes, with `cp`'s rules, and rejects bad arguments: the first
/// error stops it (see [`plan_each`] for `cp`'s way, which copies the other sources).
///
/// # Errors
/// [`PlanError`] for a missing source, a directory without `recursive`, several sources (or `-t`) with a target that is not a
/// directory, a directory over an existing non-directory, or a source that is its own destination.
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
    let (assignments, errors) = plan_each(sources, target, options)?;
    match errors.into_iter().find(|e| !e.is_warning()) {
        Some(error) => Err(error),
        None => Ok(assignments),
    }
}

/// Resolves where each source goes, as `cp` does: a bad source (missing, a directory without
/// `recursive`, its own destination, a second source landing on a name an earlier one took)
/// is an error of its own and the others are still copied. Returns the assignments and,
/// in the order of the sources, the errors (and warnings: [`PlanError::is_warning`]).
///
/// # Errors
/// Only for what stops every source: no sources, or a target that must be a directory (several
/// sources, `-t`, `--parents`) and is not.
///
/// # Examples
/// ```
/// use stealcp::{plan_each, CopyOptions, Target};
///
/// let dir = tempfile::tempdir().unwrap();
/// let (a, out) = (dir.path().join("a"), dir.path().join("out"));
/// std::fs::write(&a, "a").unwrap();
/// std::fs::create_dir(&out).unwrap();
/// let (plan, errors) =
///     plan_each(&[dir.path().join("missing"), a], &Target::Auto(out.clone()), &CopyOptions::default()).unwrap();
/// assert_eq!(plan[0].destination, out.join("a"));
/// assert!(errors[0].to_string().starts_with("cannot stat"), "{}", errors[0]);
/// ```
pub fn plan_each(
    sources: &[PathBuf],
    target: &Target,
    options: &CopyOptions,
) -> Result<(Vec<Assignment>, Vec<PlanError>), PlanError> {
    let (dest, must_be_dir, exact) = match target {
        Target::Auto(d) => (d, sources.len() > 1 || options.parents, false),
        Target::IntoDirectory(d) => (d, true, false),
        Target::Exactly(d) => (d, false, true),
    };
    if sources.is_empty() {
        return Err(plan_error(dest, PlanErrorKind::NoSources));
    }
    let dest_meta = std::fs::metadata(dest);
    let dest_is_dir = !exact && dest_meta.as_ref().is_ok_and(|m| m.is_dir());
    if must_be_dir && !dest_is_dir {
        let why = dest_meta.err().unwrap_or_else(|| io::Error::from_raw_os_error(nix::libc::ENOTDIR));
        let named = matches!(target, Target::IntoDirectory(_));
        return Err(plan_error(dest, PlanErrorKind::NotADirectory(why, named)));
    }
    let mut out = Vec::with_capacity(sources.len());
    let mut errors = Vec::new();
    // Destinations taken so far: what each was made as, and from what.
    let mut taken: HashMap<PathBuf, (Taken, std::fs::Metadata)> = HashMap::new();
    let mut seen_sources: HashSet<&Path> = HashSet::new();
    for source in sources {
        if !seen_sources.insert(source.as_path()) && !options.parents {
            let directory = std::fs::metadata(source).is_ok_and(|m| m.is_dir());
            errors.push(plan_error(source, PlanErrorKind::SpecifiedTwice { directory }));
            continue;
        }
        match plan_one(source, dest, dest_is_dir, exact, options, &taken) {
            Ok(Some((assignment, made_as, meta))) => {
                // A relative `-s` that will be refused makes nothing, nor does a source whose
                // destination is refused (the name stays the earlier source's).
                if !crate::entry::refused_relative_symlink(source, &assignment.destination, options)
                    && assignment.refused_after_asking.is_none()
                {
                    taken.insert(assignment.destination.clone(), (made_as, meta));
                }
                out.push(assignment);
            }
            // `-l` onto a name the source already has: nothing to do, as cp.
            Ok(None) => {}
            Err(error) => errors.push(error),
        }
    }
    Ok((out, errors))
}

/// One source's destination: the assignment, and what it is made as; `None` if there is
/// nothing to do.
fn plan_one(
    source: &Path,
    dest: &Path,
    dest_is_dir: bool,
    exact: bool,
    options: &CopyOptions,
    taken: &HashMap<PathBuf, (Taken, std::fs::Metadata)>,
) -> Result<Option<(Assignment, Taken, std::fs::Metadata)>, PlanError> {
    let follow = options.follows_arguments();
    let meta = if follow { std::fs::metadata(source) } else { std::fs::symlink_metadata(source) };
    let meta = meta.map_err(|e| plan_error(source, PlanErrorKind::Missing(e)))?;
    if meta.is_dir() && !options.recursive {
        return Err(plan_error(source, PlanErrorKind::DirectoryWithoutRecursive));
    }
    let (destination, parents) = if options.parents {
        parents_destination(source, dest)?
    } else if dest_is_dir {
        match source.file_name() {
            // `dir/.` or `.`: cp merges the directory's contents into the target, named
            // `target/.` (so its entries are shown as `target/./name`, as cp shows them).
            _ if ends_in_dot(source) => (dest.join("."), Vec::new()),
            Some(name) => (dest.join(name), Vec::new()),
            // `..` or `/`: merged into the target too.
            None => (dest.to_path_buf(), Vec::new()),
        }
    } else {
        (dest.to_path_buf(), Vec::new())
    };
    let existing = std::fs::symlink_metadata(&destination);
    if meta.is_dir() {
        let followed_dir = || std::fs::metadata(&destination).is_ok_and(|m| m.is_dir());
        if let Ok(existing) = &existing
            && !existing.is_dir()
            && !(existing.is_symlink() && options.keep_directory_symlink && followed_dir())
        {
            return Err(plan_error(source, PlanErrorKind::DirectoryOverFile(destination)));
        }
        // A directory inside the source, new or existing (a merge), is copied as cp copies
        // it, until the walk meets the first directory it made (see `scan::IntoSelf` and
        // `run/into_self.rs`); the source itself as destination is cp's "same file".
        if let Ok(existing) = &existing
            && is_inside(&destination, source)
        {
            use std::os::unix::fs::MetadataExt;
            let same = std::fs::metadata(&destination).is_ok_and(|d| (d.dev(), d.ino()) == (meta.dev(), meta.ino()));
            if same && !existing.is_symlink() {
                return Err(plan_error(&destination, PlanErrorKind::SameFile(source.to_path_buf())));
            }
        }
    } else {
        // A directory an earlier source makes is there when this one is copied (`copy` runs
        // overlapping destinations one after the other), which refuses it as cp does.
        if let Some((made_as, earlier)) = taken.get(&destination).filter(|(t, _)| *t != Taken::Directory) {
            match just_created(&meta, earlier, options) {
                JustCreated::Keep => return Ok(None),
                // The earlier copy is backed up when this one is made.
                JustCreated::Replace => {}
                JustCreated::Refuse => {
                    let through_symlink = *made_as == Taken::Symlink && !meta.is_symlink();
                    if options.interactive {
                        // cp asks first: the run asks once the earlier copy is made.
                        let refusal = if through_symlink { Refusal::ThroughSymlink } else { Refusal::Overwrite };
                        let assignment = Assignment {
                            source: source.to_path_buf(),
                            destination,
                            parents,
                            refused_after_asking: Some(refusal),
                        };
                        return Ok(Some((assignment, *made_as, earlier.clone())));
                    }
                    let kind = if through_symlink {
                        PlanErrorKind::ThroughJustCreatedSymlink(source.to_path_buf())
                    } else {
                        PlanErrorKind::JustCreated(source.to_path_buf())
                    };
                    return Err(plan_error(&destination, kind));
                }
            }
        }
        if let Ok(existing) = &existing {
            // With -i, cp asks first (the copy asks, then refuses on "y"); -n and -u keep the
            // directory silently (the copy decides, as for any existing destination).
            if exact && existing.is_dir() && !(options.interactive || options.no_clobber || options.update) {
                return Err(plan_error(&destination, PlanErrorKind::FileOverDirectory));
            }
            if let Some(backup) = &options.backup
                && same_entry(source, &crate::entry::backup_name(&destination, backup))
            {
                return Err(plan_error(&destination, PlanErrorKind::BackupIsSource(source.to_path_buf())));
            }
            match same_file(source, &meta, &destination, options) {
                SameFile::Proceed => {}
                SameFile::Refuse => {
                    return Err(plan_error(&destination, PlanErrorKind::SameFile(source.to_path_buf())));
                }
                SameFile::NothingToDo => return Ok(None),
            }
        }
    }
    let made_as = if meta.is_dir() {
        Taken::Directory
    } else if meta.is_symlink() {
        Taken::Symlink
    } else {
        Taken::Other
    };
    let assignment = Assignment { source: source.to_path_buf(), destination, parents, refused_after_asking: None };
    Ok(Some((assignment, made_as, meta)))
}

/// What cp does with a source whose destination an earlier source on the command line has
/// just made.
#[derive(Debug, PartialEq, Eq)]
enum JustCreated {
    /// Leave the earlier copy, successfully: `-n`; `-u` and it is not older than this source
    /// (its time is the earlier source's with `-p` or `-l`, else the time of the copy); `-l`
    /// and this source is the very file the earlier one linked there.
    Keep,
    /// `--backup=numbered`: the earlier copy is backed up and replaced.
    Replace,
    /// "will not overwrite just-created" (or "... through just-created symlink").
    Refuse,
}

/// cp's order of checks for an existing destination (same file, `-u`, `-n`, then the
/// just-created rule, which numbered backups are exempt from) applied to the destination an
/// earlier source (stat `earlier`) makes, before it is made: `copy` runs the two in turn.
fn just_created(src: &std::fs::Metadata, earlier: &std::fs::Metadata, o: &CopyOptions) -> JustCreated {
    use std::os::unix::fs::MetadataExt;
    let same_inode = (src.dev(), src.ino()) == (earlier.dev(), earlier.ino());
    if o.hard_link && same_inode {
        return JustCreated::Keep;
    }
    if o.update && !src.is_dir() {
        // A hard link is the earlier source itself.
        let kept = o.preserve_timestamps || o.hard_link;
        let made_at = if kept { earlier.modified().ok() } else { Some(std::time::SystemTime::now()) };
        if made_at.zip(src.modified().ok()).is_some_and(|(made, source)| made >= source) {
            return JustCreated::Keep;
        }
    }
    if o.no_clobber {
        return JustCreated::Keep;
    }
    match &o.backup {
        Some(b) if b.control == crate::options::BackupControl::Numbered => JustCreated::Replace,
        _ => JustCreated::Refuse,
    }
}

/// What an earlier source's destination is made as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Taken {
    Directory,
    Symlink,
    Other,
}

/// What cp decides when a source meets an existing destination that may be the same file.
#[derive(Debug, PartialEq, Eq)]
enum SameFile {
    Proceed,
    /// `'S' and 'D' are the same file`.
    Refuse,
    /// Succeed without doing anything (`-l` onto a name of the source).
    NothingToDo,
}

/// cp's rules (coreutils' `same_file_ok`, for a copy) for `source`, whose stat as the copy
/// sees it (followed or not) is `src`, and its existing `destination`. They keep a copy from
/// truncating, removing or replacing by a symlink loop the very file it reads, while letting
/// `--remove-destination`, `--backup`, `-l` and `-s` do what they can do safely.
fn same_file(source: &Path, src: &std::fs::Metadata, destination: &Path, o: &CopyOptions) -> SameFile {
    use SameFile::{NothingToDo, Proceed, Refuse};
    use std::fs::{metadata, symlink_metadata};
    use std::os::unix::fs::MetadataExt;
    if o.no_clobber {
        // Nothing will be written: no question of sameness.
        return Proceed;
    }
    let key = |m: &std::fs::Metadata| (m.dev(), m.ino());
    let never_follow = !o.follows_arguments();
    // A regular file may be written through a symlink; anything else, a link made, or a
    // destination moved away first, meets the destination's own entry.
    let as_regular = !o.recursive || o.copy_contents;
    let own_entry = (!src.is_file() && (!as_regular || src.is_dir() || src.is_symlink()))
        || o.symbolic_link
        || o.hard_link
        || o.backup.is_some()
        || o.remove_destination;
    let dst = if own_entry { symlink_metadata(destination) } else { metadata(destination) };
    // Dangling, a loop, or gone: nothing there to be the source.
    let Ok(dst) = dst else { return Proceed };
    let same = key(src) == key(&dst);
    if same && o.hard_link {
        return NothingToDo;
    }
    let same_name = || same_entry(source, destination);
    let (src_link, dst_link, same_link) = if never_follow {
        if src.is_symlink() && dst.is_symlink() {
            // Two symlinks: one replaces the other, unless they are one entry.
            return match same_name() {
                true => Refuse,
                false if o.backup.is_none() && same => NothingToDo,
                false => Proceed,
            };
        }
        (src.clone(), dst, same)
    } else {
        if !same {
            return Proceed;
        }
        let (Ok(s), Ok(d)) = (symlink_metadata(source), symlink_metadata(destination)) else { return Proceed };
        if s.is_symlink() && d.is_symlink() && o.remove_destination {
            return Proceed;
        }
        let same_link = key(&s) == key(&d);
        (s, d, same_link)
    };
    if o.backup.is_some() {
        // The backup keeps the file: fine, unless it would move the source itself away, or
        // leave a followed source symlink dangling.
        if !same_link {
            return if !never_follow && src_link.is_symlink() && !dst_link.is_symlink() { Refuse } else { Proceed };
        }
        return if same_name() { Refuse } else { Proceed };
    }
    if o.remove_destination && (dst_link.is_symlink() || (same_link && dst_link.nlink() > 1 && !same_name())) {
        return Proceed;
    }
    if !src_link.is_symlink() && !dst_link.is_symlink() {
        if key(&src_link) != key(&dst_link) {
            return Proceed;
        }
        if o.hard_link {
            return NothingToDo;
        }
    }
    if o.symbolic_link && dst_link.is_symlink() {
        return Proceed;
    }
    if never_follow {
        let followed =
            |m: &std::fs::Metadata, p: &Path| if m.is_symlink() { metadata(p).ok() } else { Some(m.clone()) };
        let (Some(s), Some(d)) = (followed(&src_link, source), followed(&dst_link, destination)) else {
            return Proceed;
        };
        if key(&s) != key(&d) {
            return Proceed;
        }
        if o.hard_link {
            return if dst_link.is_symlink() { Proceed } else { NothingToDo };
        }
    }
    Refuse
}

/// Whether two paths name the same directory entry (not merely the same file).
fn same_entry(a: &Path, b: &Path) -> bool {
    let parent = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        dir.canonicalize().ok()
    };
    a.file_name() == b.file_name() && parent(a).is_some() && parent(a) == parent(b)
}

/// Whether a path ends in a `.` component (`dir/.`), which `Path` normalizes away but which
/// tells `cp` to copy the directory's contents rather than the directory.
pub(crate) fn ends_in_dot(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let mut raw = path.as_os_str().as_bytes();
    while let [rest @ .., b'/'] = raw {
        raw = rest;
    }
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
    below(path, dir).is_some()
}

/// The names that lead from `dir` down to `path` (which need not exist), if `path` is `dir`
/// or inside it, both seen without symlinks; empty if `path` is `dir`.
pub(crate) fn below(path: &Path, dir: &Path) -> Option<Vec<serde_bytes::ByteBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let dir = dir.canonicalize().ok()?;
    // Canonicalize the deepest existing ancestor and re-append the rest.
    let mut existing = path.to_path_buf();
    let mut rest: Vec<OsString> = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(OsString::from), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return None,
        }
        if existing.as_os_str().is_empty() {
            existing = PathBuf::from(".");
        }
    }
    let mut full = existing.canonicalize().ok()?;
    full.extend(rest.iter().rev());
    let inside = full.strip_prefix(&dir).ok()?;
    Some(inside.iter().map(|name| serde_bytes::ByteBuf::from(name.as_bytes())).collect())
}
