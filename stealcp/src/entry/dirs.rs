//! The directories of the files one task copies, kept open (`O_PATH`).
//!
//! This module must never create or remove anything; it only opens directories to resolve
//! names from.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// The directories of the files one task copies, kept open, so that each file's calls resolve
/// one name from an open directory instead of a whole path from the top (walking long paths
/// was about a tenth of the kernel's time per small file). Files of one batch mostly share
/// their directories.
#[derive(Debug, Default)]
pub(crate) struct Dirs {
    pub(super) src: Option<(PathBuf, OwnedFd)>,
    pub(super) dst: Option<(PathBuf, OwnedFd)>,
}

/// The open directory holding `path` (opened `O_PATH`, only to resolve names from).
pub(super) fn dir_of<'a>(slot: &'a mut Option<(PathBuf, OwnedFd)>, path: &Path) -> io::Result<BorrowedFd<'a>> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if slot.as_ref().is_none_or(|(open, _)| open != dir) {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        *slot = Some((dir.to_path_buf(), nix::fcntl::open(dir, flags, Mode::empty())?));
    }
    slot.as_ref().map(|(_, fd)| fd.as_fd()).ok_or_else(|| io::Error::other("no directory"))
}
