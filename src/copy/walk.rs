//! Walking the sources: creates the destination directories and symlinks as it goes and lists
//! the regular files (for the workers), the hard links (for after the files) and the
//! directories (to finish last).
//!
//! The walk uses an explicit stack, so a deep tree cannot overflow the thread's stack. It never
//! follows a symlink inside a tree unless `dereference` is set.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use super::entry::{self, DirJob, FileJob, fail};
use super::{Assignment, CopyOptions, CopyReport, EntryKind, Observer, Skipped};

/// A hard link to make once the file it points at has been copied.
pub(super) struct HardLink {
    pub(super) source: PathBuf,
    pub(super) destination: PathBuf,
    /// The destination of the first path seen with the same (device, inode).
    pub(super) first_destination: PathBuf,
}

#[derive(Default)]
pub(super) struct Work {
    pub(super) files: Vec<FileJob>,
    pub(super) hard_links: Vec<HardLink>,
    /// In creation order: parents before children.
    pub(super) directories: Vec<DirJob>,
}

pub(super) fn walk(
    assignments: &[Assignment],
    options: &CopyOptions,
    report: &mut CopyReport,
    observer: &mut dyn Observer,
) -> Work {
    let mut work = Work::default();
    let mut seen_inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // (source, destination, named on the command line)
    let mut stack: Vec<(PathBuf, PathBuf, bool)> =
        assignments.iter().rev().map(|a| (a.source.clone(), a.destination.clone(), true)).collect();

    while let Some((source, destination, top)) = stack.pop() {
        // cp follows a symlink named on the command line unless recursing (without -L).
        let follow = options.dereference || (top && !options.recursive);
        let meta = if follow { fs::metadata(&source) } else { fs::symlink_metadata(&source) };
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                super::record(report, observer, fail(&source, "stat")(e));
                continue;
            }
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            let dir = DirJob::new(destination.clone(), &meta);
            if let Err(failure) = entry::create_directory(&dir) {
                super::record(report, observer, failure);
                continue; // nothing inside can be copied
            }
            report.directories += 1;
            work.directories.push(dir);
            match fs::read_dir(&source) {
                Ok(entries) => {
                    for child in entries {
                        match child {
                            Ok(child) => stack.push((child.path(), destination.join(child.file_name()), false)),
                            Err(e) => super::record(report, observer, fail(&source, "read directory")(e)),
                        }
                    }
                }
                Err(e) => super::record(report, observer, fail(&source, "read directory")(e)),
            }
        } else if kind.is_symlink() {
            match entry::make_symlink(&source, &destination, options) {
                Ok(true) => {
                    report.symlinks += 1;
                    observer.copied(EntryKind::Symlink, &source, &destination, 0);
                }
                Ok(false) => report.unchanged += 1,
                Err(failure) => super::record(report, observer, failure),
            }
        } else if kind.is_file() {
            if options.preserve_links && meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = seen_inodes.get(&key) {
                    work.hard_links.push(HardLink { source, destination, first_destination: first.clone() });
                    continue;
                }
                seen_inodes.insert(key, destination.clone());
            }
            work.files.push(FileJob { source, destination, len: meta.len(), options: options.clone() });
        } else {
            let reason = if kind.is_fifo() {
                "FIFO not copied"
            } else if kind.is_socket() {
                "socket not copied"
            } else {
                "device file not copied"
            };
            report.skipped.push(Skipped { path: source, reason });
        }
    }
    work
}
