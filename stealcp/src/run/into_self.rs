//! A directory merged into an existing directory inside itself (`cp -rT d d/x` with `d/x`
//! there), copied as cp 9.1 copies it, with the design of `scan::IntoSelf` (a new copy inside
//! its source: `cp -r d d/x`).
//!
//! cp walks the source depth first, each directory's entries in inode order, and remembers
//! the first directory it makes for the argument; when its walk meets that directory as a
//! source it says "cannot copy a directory, 'd', into itself, 'd/x'", stops listing that
//! directory and every one above it, and exits with status 1. With a new destination that
//! first directory is the copy itself; merged into an existing one, it is the first directory
//! the walk has to make (`d/x/sub` for `d/sub`, or `d/x/x` for `d/x` itself), found here by
//! walking the source as cp would, before anything is written, and made first so that it
//! has a higher inode number than everything there before (and the walk's `IntoSelf` path
//! leads to it). The files cp copies into its directory before making it are copied first,
//! too, as cp copies them: cp's copy of that directory holds them.
//!
//! What differs from cp, because the copy is parallel: the directory that holds the first
//! one is listed as a source last, once everything else is copied (`Run::last_steps`), so
//! nothing in it is read while being written; cp lists it when its walk comes to it, which may
//! be before or after it merged other entries into it. Symlinks and special files cp makes
//! there before its first directory are not in stealcp's copy of it.
//!
//! This module must never write anything but that first directory and those files.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stealpool::{Executor, Submit};

use super::{InFlight, Run};
use crate::entry::{self, DirMeta, FileJob};
use crate::error::Failure;
use crate::plan::Assignment;
use crate::scan::{self, IntoSelf};
use crate::task::{CopyTask, Work};

/// How deep the walk looks for the first directory to make (each step goes one level deeper
/// into the existing destination, which is finite; this only bounds a pathological tree).
const MAX_DEPTH: usize = 4096;

impl<'a, E> Run<'a, E>
where
    E: Executor + Submit<CopyTask>,
{
    /// After [`Run::start`]: if `assignment` merges a directory into an existing directory
    /// inside it, its scan gets the walk's stop (see the module docs).
    pub(super) fn stop_at_first_made_directory(&mut self, assignment: &Assignment) {
        let (source, destination) = (&assignment.source, &assignment.destination);
        if let Some(ctx) = self.scans.last().filter(|ctx| ctx.job.into_self.is_some()) {
            // A new copy inside its source (start.rs): the walk must not list what it makes.
            let made = lexical(&ctx.job.destination);
            self.watch_made().insert(made);
            return;
        }
        if let (Some(made), Some(staging)) = (&mut self.made_dirs, self.stagings.last()) {
            // Another source's new tree, made while a directory is copied into itself.
            made.insert(lexical(&staging.temp));
        }
        let Some(at) = self.scans.iter().rposition(|ctx| {
            ctx.job.source == *source && ctx.job.destination == *destination && ctx.job.into_self.is_none()
        }) else {
            return;
        };
        if !fs::metadata(destination).is_ok_and(|m| m.is_dir())
            || crate::plan::below(destination, source).is_none_or(|p| p.is_empty())
        {
            return;
        }
        // A tree an earlier source made inside this one: cp's walk meets it as a source, says
        // so and does not list it (cp remembers the first directory made for each source).
        let made_earlier: Vec<PathBuf> = self
            .made_earlier
            .iter()
            .filter(|made| crate::plan::below(made, source).is_some_and(|p| !p.is_empty()))
            .cloned()
            .collect();
        if !made_earlier.is_empty() {
            self.watch_made().extend(made_earlier.iter().cloned());
            let error = std::io::Error::other(crate::error::Quoted(destination).to_string());
            self.fail(Failure { path: source.clone(), action: "into itself", error });
        }
        let follow = self.options.dereference;
        let Some((first_source, first)) = first_new_directory(source, destination, follow, &made_earlier, 0) else {
            return;
        };
        let Some(path) = crate::plan::below(&first, source) else { return };
        if !reachable(destination, &path, self.options) {
            // The walk is refused on the way in (a file where a directory's copy would go), so
            // it never meets the copy as a source: an ordinary copy, as cp makes it.
            return;
        }
        self.copy_before(&first_source, &first);
        let made = stat(&first_source, follow)
            .map_err(|e| crate::error::fail(&first_source, "stat")(e))
            .and_then(|meta| entry::create_directory(&first, &DirMeta::new(&meta)));
        match made {
            Ok(false) => {
                self.watch_made().insert(lexical(&first));
                self.precreated.insert(first);
                // (`d/.`'s destination is `d/x/.`, as cp names it: see `plan`.)
                let cut = IntoSelf { path, source: source.clone(), destination: destination.clone() };
                self.scans[at].job.into_self = Some(cut);
            }
            // Without its first directory the walk would have no end: refused, as before.
            _ => {
                self.scans.remove(at);
                let error = std::io::Error::other(crate::error::Quoted(destination).to_string());
                self.fail(Failure { path: source.clone(), action: "into itself", error });
            }
        }
    }

    /// [`Run::made_dirs`], from now on: with the new trees of the sources started so far.
    fn watch_made(&mut self) -> &mut HashSet<PathBuf> {
        let temps: Vec<PathBuf> = self.stagings.iter().map(|s| lexical(&s.temp)).collect();
        let made = self.made_dirs.get_or_insert_default();
        made.extend(temps);
        made
    }

    /// Copies, before the first directory is made, the regular files cp copies into its
    /// directory before it: those listed before its source in their directory (waits for the
    /// one task; nothing else is in flight yet). The walk leaves them out when it lists their
    /// directory (`Run::precopied`): each is copied once.
    fn copy_before(&mut self, first_source: &Path, first: &Path) {
        let (Some(from), Some(into)) = (first_source.parent(), first.parent()) else { return };
        let Ok(stop) = fs::symlink_metadata(first_source).map(|m| m.ino()) else { return };
        let Ok(entries) = fs::read_dir(from) else { return };
        let (dst_dev, dst_group) = scan::destination_dir(into);
        let follow = self.options.dereference;
        let links_before = self.hard_links.len();
        let found: Vec<(FileJob, Option<(u64, u64)>)> = entries
            .flatten()
            .filter(|e| e.ino() < stop)
            .filter_map(|e| {
                let meta = stat(&e.path(), follow).ok().filter(fs::Metadata::is_file)?;
                // Other names of one file are copied once and linked (here, before the first
                // directory is made, as cp links them), and later names link to this copy.
                let key = (meta.nlink() > 1 || self.links_by_inode()).then(|| (meta.dev(), meta.ino()));
                let job = FileJob {
                    source: e.path(),
                    destination: into.join(e.file_name()),
                    len: None,
                    hand_back_links: false,
                    hand_back_large: false,
                    follow,
                    check_existing: true,
                    dst_dev,
                    dst_group,
                    in_staging: false,
                    read_special: false,
                    open_as: None,
                    confirmed: false,
                    hand_back_from: None,
                };
                Some((job, key))
            })
            .collect();
        let jobs: Vec<FileJob> = found.into_iter().filter_map(|(job, key)| self.dedup(job, key)).collect();
        let linked = self.hard_links[links_before..].iter().map(|link| link.destination.clone());
        let precopied: Vec<PathBuf> = jobs.iter().map(|job| job.destination.clone()).chain(linked).collect();
        self.precopied.extend(precopied.iter().cloned());
        if !jobs.is_empty() {
            let jobs = Arc::new(jobs);
            let task = CopyTask { options: self.options.clone(), work: Work::Files(Arc::clone(&jobs)) };
            let Ok(future) = self.executor.submit(task) else {
                // Refused (the drive loop gives up on its next submit): the walk must not
                // leave them out then.
                self.hard_links.truncate(links_before);
                for destination in &precopied {
                    self.precopied.remove(destination);
                }
                return;
            };
            // Listed, counted and failed as any batch (in cp's order: before everything else).
            self.absorb(future.result(), InFlight::Files(jobs));
        }
        let links = self.hard_links.split_off(links_before);
        self.make_hard_links(links);
    }
}

/// `path` as the walk sees it: what a symlink leads to under `-L` (`follow`), else itself.
fn stat(path: &Path, follow: bool) -> std::io::Result<fs::Metadata> {
    if follow { fs::metadata(path) } else { fs::symlink_metadata(path) }
}

/// Whether the directory entry `e` is a directory as the walk sees it ([`stat`]; without
/// `-L`, its type from the listing is enough).
fn is_dir(e: &fs::DirEntry, follow: bool) -> bool {
    let kind = if follow { stat(&e.path(), true).map(|m| m.file_type()) } else { e.file_type() };
    kind.is_ok_and(|t| t.is_dir())
}

/// `path` without its `.` components (`./d/x` and `d/x` are one path in `Run::made_dirs`).
pub(super) fn lexical(path: &Path) -> PathBuf {
    path.components().filter(|c| *c != std::path::Component::CurDir).collect()
}

/// Whether the walk of a copy into `destination` can reach `path` below its source (where it
/// meets the directory it made first, as a source): no step on the way is copied onto
/// something that is not a directory (a symlink to one counts only with
/// `--keep-directory-symlink`, as cp follows it); a missing one the walk makes as it goes.
fn reachable(destination: &Path, path: &[serde_bytes::ByteBuf], o: &crate::options::CopyOptions) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let mut at = destination.to_path_buf();
    for step in path.iter().take(path.len().saturating_sub(1)) {
        at.push(std::ffi::OsStr::from_bytes(step));
        let meta = if o.keep_directory_symlink { fs::metadata(&at) } else { fs::symlink_metadata(&at) };
        match meta {
            Ok(meta) if !meta.is_dir() => return false,
            _ => {}
        }
    }
    true
}

/// cp's walk of `source` into `destination` (each directory's entries in inode order, depth
/// first, into the directories that exist), up to the first directory it would make: (its
/// source, its destination). `None` if there is none. Under `-L` (`follow`), a symlink to a
/// directory is one. The walk does not enter `skip` (trees earlier sources made).
fn first_new_directory(
    source: &Path,
    destination: &Path,
    follow: bool,
    skip: &[PathBuf],
    depth: usize,
) -> Option<(PathBuf, PathBuf)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut dirs: Vec<(u64, std::ffi::OsString)> =
        fs::read_dir(source).ok()?.flatten().filter(|e| is_dir(e, follow)).map(|e| (e.ino(), e.file_name())).collect();
    dirs.sort();
    for (_, name) in dirs {
        let (from, to) = (source.join(&name), destination.join(&name));
        if skip.contains(&lexical(&from)) {
            continue;
        }
        match fs::symlink_metadata(&to) {
            Err(_) => return Some((from, to)),
            Ok(meta) if meta.is_dir() => {
                if let Some(found) = first_new_directory(&from, &to, follow, skip, depth + 1) {
                    return Some(found);
                }
            }
            // cp refuses a directory over a file and goes on.
            Ok(_) => {}
        }
    }
    None
}
