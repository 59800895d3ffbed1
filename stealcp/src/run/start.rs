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
use crate::entry::{self, DirFinish, DirMeta, FileJob};
use crate::error::{Failure, fail};
use crate::plan::Assignment;
use crate::publish::{remove_stale_temps, temp_path};
use crate::report::EntryKind;
use crate::scan::{self, IntoSelf, ScanJob};
use crate::task::CopyTask;

impl<'a, E> Run<'a, E>
where
    E: Executor + Submit<CopyTask>,
{
    /// Starts one source named on the command line.
    pub(super) fn start(&mut self, assignment: &Assignment) {
        let o = self.options;
        for (source, destination) in &assignment.parents {
            self.make_parent(source, destination);
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
                        remove_stale_temps(if parent.as_os_str().is_empty() { Path::new(".") } else { parent });
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
                        stat_files: self.totals,
                        into_self,
                    }
                }
                _ => ScanJob {
                    source: source.clone(),
                    destination: destination.clone(),
                    meta,
                    in_staging: false,
                    stat_files: self.totals,
                    into_self: None,
                },
            };
            self.scans.push(ScanCtx { job, ancestors });
        } else if kind.is_file() || (!kind.is_symlink() && (!o.recursive || o.copy_contents)) {
            // A FIFO or device named without -r (or with --copy-contents) is read like a
            // file, as cp does.
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
            };
            self.add_found(vec![(job, scan::Stat::new(&meta).link_key())]);
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

    /// `--parents`: makes one directory on the way to a source, as a copy of `source`.
    pub(super) fn make_parent(&mut self, source: &Path, destination: &Path) {
        let meta = match fs::metadata(source) {
            Ok(meta) => DirMeta::new(&meta),
            Err(e) => return self.fail(fail(source, "stat")(e)),
        };
        match entry::create_directory(destination, &meta) {
            // An existing directory on the way is used as it is, as cp does; with -p it gets
            // the source directory's attributes, as cp gives them.
            Ok(existed) => {
                let o = self.options;
                if !existed || o.preserve_mode || o.preserve_ownership || o.preserve_timestamps {
                    let (source, path) = (source.to_path_buf(), destination.to_path_buf());
                    self.directories.push(DirFinish { source, path, meta, existed });
                }
            }
            Err(failure) => self.fail(failure),
        }
    }

    pub(super) fn made(&mut self, made: Result<bool, Failure>, kind: EntryKind, source: &Path, destination: &Path) {
        match made {
            Ok(true) => {
                match kind {
                    EntryKind::Special => self.report.specials += 1,
                    _ => self.report.symlinks += 1,
                }
                self.observer.copied(kind, source, &shown(&self.stagings, destination));
            }
            Ok(false) => self.report.unchanged += 1,
            Err(failure) => self.fail(failure),
        }
    }
}
