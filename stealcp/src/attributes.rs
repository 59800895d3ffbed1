//! Attributes a copy keeps of its source: permission bits (and the umask that applies without
//! `-p`), ownership, times; and the same for entries that are not followed (symlinks, special
//! files).
//!
//! This module must never create, rename or remove an entry; it only sets attributes on one
//! that exists.

use std::fs::{self, FileTimes};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::{Failure, fail};
use crate::options::CopyOptions;

/// The mode a copy is created with. Without -p the kernel applies the umask to the source's
/// bits, as for `cp`; with -p the final bits are set by `seal` (`entry/staged.rs`) unless the umask lets these
/// through already.
pub(crate) fn creation_mode(source: &fs::Metadata) -> u32 {
    source.mode() & 0o777
}

/// The process's umask, read once (from /proc: asking the kernel for it means changing it,
/// which would race with other threads creating files).
pub(crate) fn umask() -> Option<u32> {
    static UMASK: OnceLock<Option<u32>> = OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

pub(crate) fn file_times(meta: &fs::Metadata) -> FileTimes {
    let mut times = FileTimes::new();
    if let Ok(t) = meta.accessed() {
        times = times.set_accessed(t);
    }
    if let Ok(t) = meta.modified() {
        times = times.set_modified(t);
    }
    times
}

/// `cp` does not complain when an unprivileged user cannot give a file away.
pub(crate) fn ignore_eperm(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

/// Sets ownership and times of an entry that is not followed (a symlink or special file).
pub(crate) fn preserve_unfollowed(destination: &Path, meta: &fs::Metadata, o: &CopyOptions) -> Result<(), Failure> {
    if o.preserve_ownership {
        ignore_eperm(std::os::unix::fs::lchown(destination, Some(meta.uid()), Some(meta.gid())))
            .map_err(fail(destination, "preserve ownership"))?;
    }
    if o.preserve_timestamps {
        let (atime, mtime) = filetimes(meta);
        filetime::set_symlink_file_times(destination, atime, mtime)
            .map_err(fail(destination, "preserve timestamps"))?;
    }
    Ok(())
}

pub(crate) fn filetimes(meta: &fs::Metadata) -> (filetime::FileTime, filetime::FileTime) {
    (filetime::FileTime::from_last_access_time(meta), filetime::FileTime::from_last_modification_time(meta))
}
