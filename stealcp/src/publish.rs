//! Temporary names and final names: every temporary file or directory the engine makes is
//! named [`TEMP_PREFIX`]`<pid>-<n>-<name>` beside its destination, gets its final name only
//! once complete, and a killed run's leftovers are removed by the next run into the same place.
//!
//! This module must never remove an entry that does not carry [`TEMP_PREFIX`], nor one whose
//! process is still alive.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;

use crate::error::Failure;

/// The start of every temporary file or directory name this engine creates (followed by the
/// process id, a counter and the final name).
///
/// Still `.pcp-tmp-` from the copier's old name: a run cleans up what a killed run of either
/// name left, and the tests' and users' view of leftovers does not change with the rename.
pub const TEMP_PREFIX: &str = ".pcp-tmp-";

/// The longest file name (in bytes) Linux file systems accept.
const NAME_MAX: usize = 255;

/// Removes a temporary file unless disarmed: a failed copy leaves nothing behind.
pub(crate) struct TempFile<'a> {
    pub(crate) path: Option<&'a Path>,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.path {
            let _ = fs::remove_file(path);
        }
    }
}

/// A temporary name for `destination`, in the same directory.
pub(crate) fn temp_path(destination: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = format!("{TEMP_PREFIX}{}-{n}-", std::process::id()).into_bytes();
    if let Some(file_name) = destination.file_name() {
        // The final name is only there to help a human; keep the whole temporary name within
        // the 255 bytes a file name may have, or a long final name could not be copied at all.
        let room = NAME_MAX.saturating_sub(name.len());
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(file_name);
        name.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
    let name: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(&name);
    destination.with_file_name(name)
}

/// Gives a directory built under the temporary name `temp` its final name, unless something
/// took that name meanwhile (then the copy stays at `temp`: the caller reports where).
pub(crate) fn publish_directory(temp: &Path, destination: &Path) -> Result<(), Failure> {
    rename_no_replace(temp, destination).map_err(|error| Failure {
        path: destination.to_path_buf(),
        action: "rename into place",
        error,
    })
}

/// Renames `from` to `to`, failing if `to` exists.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags};
        match nix::fcntl::renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // The file system does not take the flag: check, then rename.
            Err(Errno::EINVAL | Errno::ENOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::from(io::ErrorKind::AlreadyExists));
    }
    fs::rename(from, to)
}

/// Removes the temporary files and directories that a killed run left in `dir`: those whose
/// process is gone. (A live process's are left alone: it may be another `stealcp` writing here
/// right now.) A name that `source`, the directory being copied into `dir`, holds too is
/// left alone: that is a file of the user's, named like one of ours, which the copy writes
/// into (or keeps, with `-n` or `-u`) as cp would. Returns how many were removed.
pub(crate) fn remove_stale_temps(dir: &Path, source: Option<&Path>) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.as_bytes().strip_prefix(TEMP_PREFIX.as_bytes()) else { continue };
        if source.is_some_and(|source| fs::symlink_metadata(source.join(&name)).is_ok()) {
            continue;
        }
        let pid = rest.iter().take_while(|b| b.is_ascii_digit()).fold(0i64, |n, b| n * 10 + i64::from(b - b'0'));
        let Ok(pid) = i32::try_from(pid) else { continue };
        if pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH) {
            let gone = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(entry.path()),
                _ => fs::remove_file(entry.path()),
            };
            removed += usize::from(gone.is_ok());
        }
    }
    removed
}
