//! Starting the sources named on the command line: a directory becomes a scan (staged if its
//! destination is new), a file joins a batch, a symlink or special file is made at once.
//!
//! This module must never copy a file's contents on the coordinator.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use stealpool::{Executor, Submit};

use super::Run;
use super::ScanCtx;
use super::staging::{Staging, shown};
use crate::entry::{self, DirFinish, DirMeta, FileJob, Made};
use crate::error::{Failure, fail};
use crate::plan::{Assignment, Refusal};
use crate::publish::{remove_stale_temps, temp_path};
use crate::report::{EntryKind, OverwriteQuestion, listed};
use crate::scan::{self, IntoSelf, ScanJob};
use crate::task::CopyTask;

impl<'a, E> Run<'a, E>
where
    E: Executor + Submit<CopyTask>,
{
    /// Starts one source named on the command line.
    pub(super) fn start(&mut self, assignment: &Assignment) {
        if let Some(refusal) = assignment.refused_after_asking {
            return self.ask_then_refuse(assignment, refusal);
        }
        let o = self.options;
        // cp gives the directories on the way the source's attributes only if it has to make
        // one of them: where the last is there already, all are used as they are.
        let all_there = assignment.parents.last().is_some_and(|(_, last)| fs::metadata(last).is_ok_and(|m| m.is_dir()));
        for (source, destination) in &assignment.parents {
            self.make_parent(source, destination, !all_there);
        }
        let (source, destination) = (&assignment.source, &assignment.destination);
        // -H/-L/-P, or cp's default: followed unless recursing (without -L).
        let follow = o.follows_arguments();
        let meta = if follow { fs::metadata(source) } else { fs::symlink_metadata(source) };
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) => return self.fail(fail(source, "stat")(e)),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            let ancestors = if o.dereference { vec![(meta.dev(), meta.ino())] } else { Vec::new() };
            let meta = DirMeta::new(&meta);
            let job = match fs::symlink_metadata(destination) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A new directory: staged (see the module docs). Clear what a killed run
                    // left beside it first.
                    let temp = temp_path(destination);
                    if let Some(parent) = temp.parent() {
                        remove_stale_temps(if parent.as_os_str().is_empty() { Path::new(".") } else { parent }, None);
                    }
                    self.stagings.push(Staging { temp: temp.clone(), destination: destination.clone() });
                    // `cp -r d d/x`: the walk stops at the copy (made as `temp`), as cp's does.
                    let into_self = crate::plan::below(destination, source).map(|mut path| {
                        if let (Some(last), Some(name)) = (path.last_mut(), temp.file_name()) {
                            *last = serde_bytes::ByteBuf::from(name.as_bytes());
                        }
                        IntoSelf { path, source: source.clone(), destination: destination.clone() }
                    });
                    ScanJob {
                        source: source.clone(),
                        destination: temp,
                        meta,
                        in_staging: true,
                        stat_files: self.stat_files(),
                        into_self,
                        copy_here: None,
                    }
                }
                _ => ScanJob {
                    source: source.clone(),
                    destination: destination.clone(),
                    meta,
                    in_staging: false,
                    stat_files: self.stat_files(),
                    into_self: None,
                    copy_here: None,
                },
            };
            self.scans.push(ScanCtx { job, ancestors });
        } else if kind.is_file()
            || o.hard_link
            || o.symbolic_link
            || (!kind.is_symlink() && (!o.recursive || o.copy_contents))
        {
            // A FIFO or device named without -r (or with --copy-contents) is read like a
            // file, as cp does; -l and -s link whatever is not a directory (a symlink itself
            // unless followed).
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
                read_special: !kind.is_file(),
                // A worker process opens the coordinator's /dev/stdin, not its own.
                open_as: entry::reachable_from_workers(source),
                confirmed: false,
                hand_back_from: None,
            };
            // cp remembers every file it reaches by following a command-line argument
            // (-H, -L, or no -r), not only those with other names: `cp -H --preserve=links a
            // b D` with b a symlink to a makes D/b a hard link to D/a.
            let followed_file = follow && kind.is_file() && !o.hard_link && !o.symbolic_link;
            let link = if followed_file { Some((meta.dev(), meta.ino())) } else { scan::Stat::new(&meta).link_key() };
            self.add_found(vec![(job, link)], None);
        } else if !self.may_replace(destination, Some(&meta)) {
            self.report.unchanged += 1;
        } else if kind.is_symlink() {
            let made = entry::make_symlink(source, destination, &meta, true, o);
            self.made(made, EntryKind::Symlink, source, destination);
        } else {
            // Its attributes are read from what is copied: the symlink's target if followed.
            let named =
                if follow { fs::canonicalize(source).unwrap_or_else(|_| source.clone()) } else { source.clone() };
            let made = entry::make_special(&named, destination, &meta, true, o);
            self.made(made, EntryKind::Special, source, destination);
        }
    }

    /// `--parents`: makes one directory on the way to a source, as a copy of `source`; one
    /// that exists gets the source's attributes (with `-p`) only if `restore_existing`.
    pub(super) fn make_parent(&mut self, source: &Path, destination: &Path, restore_existing: bool) {
        let meta = match fs::metadata(source) {
            Ok(meta) => DirMeta::new(&meta),
            Err(e) => return self.fail(fail(source, "stat")(e)),
        };
        match entry::create_directory(destination, &meta) {
            // An existing directory on the way is used as it is, as cp does; with -p it gets
            // the source directory's attributes, as cp gives them, when another is made.
            Ok(existed) => {
                if !existed {
                    self.observer.made_parent(source, destination);
                }
                let o = self.options;
                let restore = restore_existing && (o.preserve_mode || o.preserve_ownership || o.preserve_timestamps);
                if !existed || restore {
                    let (source, path) = (source.to_path_buf(), destination.to_path_buf());
                    self.directories.push(DirFinish { source, path, meta, existed });
                }
            }
            Err(failure) => self.fail(failure),
        }
    }

    /// `interactive`: whether a symlink, special file or hard link may replace what is at
    /// `destination` (a directory is refused later, without asking; with `update`, one not
    /// older than `source` is kept without asking): asked of the observer.
    pub(super) fn may_replace(&mut self, destination: &Path, source: Option<&fs::Metadata>) -> bool {
        let o = self.options;
        if !o.interactive || o.no_clobber {
            return true;
        }
        match fs::symlink_metadata(destination) {
            Ok(meta) if o.update && source.is_some_and(|s| entry::not_older(&meta, s)) => true,
            Ok(meta) if !meta.is_dir() => {
                let question = OverwriteQuestion {
                    destination: shown(&self.stagings, destination).into_owned(),
                    mode: meta.mode(),
                    // A symlink is replaced, not written.
                    writable: true,
                };
                self.observer.overwrite(&question)
            }
            _ => true,
        }
    }

    /// `interactive`, a destination an earlier source has just made: asked about as cp asks
    /// (`overwrite 'D'? `), then refused on yes, as cp refuses it; skipped on no. A symlink
    /// the earlier source made is asked about as what it leads to, and refused without a
    /// question if it leads nowhere (cp sees no destination there). If the earlier copy made
    /// nothing (it failed), there is nothing to refuse: copied as usual.
    fn ask_then_refuse(&mut self, assignment: &Assignment, refusal: Refusal) {
        let (source, destination) = (&assignment.source, &assignment.destination);
        let Ok(meta) = fs::symlink_metadata(destination) else {
            return self.start(&Assignment { refused_after_asking: None, ..assignment.clone() });
        };
        let meta = match refusal {
            Refusal::Overwrite => Some(meta),
            Refusal::ThroughSymlink => fs::metadata(destination).ok(),
        };
        if let Some(meta) = meta {
            // As cp: a symlink is replaced, not written; else writable if root or if
            // access(2) says so.
            let writable = meta.is_symlink()
                || nix::unistd::geteuid().is_root()
                || rustix::fs::accessat(
                    rustix::fs::CWD,
                    destination,
                    rustix::fs::Access::WRITE_OK,
                    rustix::fs::AtFlags::EACCESS,
                )
                .is_ok();
            let question = OverwriteQuestion {
                destination: shown(&self.stagings, destination).into_owned(),
                mode: meta.mode(),
                writable,
            };
            if !self.observer.overwrite(&question) {
                self.report.unchanged += 1;
                return;
            }
        }
        let action = match refusal {
            Refusal::Overwrite => "just created",
            Refusal::ThroughSymlink => "through just-created symlink",
        };
        let error = io::Error::other(crate::error::Quoted(source).to_string());
        self.fail(Failure { path: destination.clone(), action, error });
    }

    /// `interactive`: a symlink or special file found by a scan, whose destination exists:
    /// made here once the observer says yes.
    pub(super) fn ask_then_make(&mut self, source: &Path, destination: &Path) {
        let meta = fs::symlink_metadata(source);
        if !self.may_replace(destination, meta.as_ref().ok()) {
            self.report.unchanged += 1;
            return;
        }
        let o = self.options;
        match meta {
            Ok(meta) if meta.is_symlink() => {
                let made = entry::make_symlink(source, destination, &meta, true, o);
                self.made(made, EntryKind::Symlink, source, destination);
            }
            Ok(meta) => {
                let made = entry::make_special(source, destination, &meta, true, o);
                self.made(made, EntryKind::Special, source, destination);
            }
            Err(e) => self.fail(fail(source, "stat")(e)),
        }
    }

    pub(super) fn made(&mut self, made: Result<Made, Failure>, kind: EntryKind, source: &Path, destination: &Path) {
        match made {
            Ok((true, displaced)) => {
                match kind {
                    EntryKind::Special => self.report.specials += 1,
                    _ => self.report.symlinks += 1,
                }
                listed(self.observer, kind, source, &shown(&self.stagings, destination), displaced.as_ref());
            }
            Ok((false, _)) => self.report.unchanged += 1,
            Err(failure) => {
                if failure.listed_by_cp() {
                    self.observer.attempted(kind, source, &shown(&self.stagings, destination));
                }
                self.fail(failure);
            }
        }
    }
}
