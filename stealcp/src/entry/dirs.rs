//! The directories of the files one task copies, kept open (`O_PATH`), and whether the
//! destination directory passes a default ACL on to what is created in it.
//!
//! This module must never create, remove or change anything; it only opens directories to
//! resolve names from, and reads one of their attributes.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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
    /// A destination directory and whether it has a default ACL ([`Dirs::may_inherit_acl`]).
    dst_acl: Option<(PathBuf, bool)>,
}

impl Dirs {
    /// Whether an entry created now at `destination` may have inherited an ACL: its directory
    /// has a default ACL, or that cannot be told. Asked once per directory per task (a
    /// directory gets its own ACLs only once everything in it is in place, so a task's files
    /// all see the same answer).
    pub(super) fn may_inherit_acl(&mut self, destination: &Path) -> bool {
        let dir = parent_of(destination);
        if let Some((known, inherits)) = &self.dst_acl
            && same_spelling(known, dir)
        {
            return *inherits;
        }
        let inherits = dst_dir_of(&mut self.dst, destination).map_or(true, crate::attributes::has_default_acl);
        self.dst_acl = Some((dir.to_path_buf(), inherits));
        inherits
    }
}

/// The directory holding `path` (`.` for a bare name).
pub(super) fn parent_of(path: &Path) -> &Path {
    if let Some((dir, _)) = split_name(path) {
        return dir;
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The last name of `path` ([`Path::file_name`]).
pub(super) fn name_of(path: &Path) -> Option<&OsStr> {
    split_name(path).map(|(_, name)| name).or_else(|| path.file_name())
}

/// `path`'s directory (`.` for a bare name) and last name, found from its bytes: each file
/// of a task asks this several times, and `Path::parent` parses every component of a long
/// path. `None` where only a parse gives the answer (a path ending in `/`, `.` or `..`).
fn split_name(path: &Path) -> Option<(&Path, &OsStr)> {
    let bytes = path.as_os_str().as_bytes();
    let (dir, name) = match memchr::memrchr(b'/', bytes) {
        None => (&b"."[..], bytes),
        Some(0) => (&b"/"[..], &bytes[1..]),
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
    };
    if matches!(name, b"" | b"." | b"..") {
        return None;
    }
    Some((Path::new(OsStr::from_bytes(dir)), OsStr::from_bytes(name)))
}

/// `dir` joined with `name`, as [`Path::join`] joins them, with the buffer allocated once at
/// its final size (`join` copies `dir`, then grows the copy for the name): the walk makes two
/// such paths for every entry it finds.
pub(crate) fn child(dir: &Path, name: &OsStr) -> PathBuf {
    let (d, n) = (dir.as_os_str().as_bytes(), name.as_bytes());
    if n.first() == Some(&b'/') {
        return dir.join(name); // an absolute name replaces the directory
    }
    let mut out = Vec::with_capacity(d.len() + 1 + n.len());
    out.extend_from_slice(d);
    if !d.is_empty() && !d.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(n);
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Whether `open` and `wanted` are spelled alike: cheaper than comparing [`Path`]s, which
/// parses both into components. Two spellings of one directory only cost a second `open`.
fn same_spelling(open: &Path, wanted: &Path) -> bool {
    open.as_os_str().as_bytes() == wanted.as_os_str().as_bytes()
}

/// The open directory holding `path` (opened `O_PATH`, only to resolve names from).
pub(super) fn dir_of<'a>(slot: &'a mut Option<(PathBuf, OwnedFd)>, path: &Path) -> io::Result<BorrowedFd<'a>> {
    open_dir_of(slot, path, false)
}

/// The open destination directory holding `path`: opened for reading where it may be, so
/// that its default ACL is read from the descriptor ([`Dirs::may_inherit_acl`]), else `O_PATH`.
pub(super) fn dst_dir_of<'a>(slot: &'a mut Option<(PathBuf, OwnedFd)>, path: &Path) -> io::Result<BorrowedFd<'a>> {
    open_dir_of(slot, path, true)
}

fn open_dir_of<'a>(
    slot: &'a mut Option<(PathBuf, OwnedFd)>,
    path: &Path,
    readable: bool,
) -> io::Result<BorrowedFd<'a>> {
    let dir = parent_of(path);
    if slot.as_ref().is_none_or(|(open, _)| !same_spelling(open, dir)) {
        let flags = OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let only_path = || nix::fcntl::open(dir, flags | OFlag::O_PATH, Mode::empty());
        let fd = if readable {
            match nix::fcntl::open(dir, flags | OFlag::O_RDONLY, Mode::empty()) {
                // A directory we may search but not read (mode 0300) is still one to create in.
                Err(nix::errno::Errno::EACCES) => only_path()?,
                opened => opened?,
            }
        } else {
            only_path()?
        };
        *slot = Some((dir.to_path_buf(), fd));
    }
    slot.as_ref().map(|(_, fd)| fd.as_fd()).ok_or_else(|| io::Error::other("no directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_path_is_what_join_makes() {
        for (dir, name) in [("a/b", "c"), ("a/b/", "c"), ("", "c"), ("/", "c"), (".", "c"), ("a", "c/d"), ("a", "/c")] {
            let (dir, name) = (Path::new(dir), OsStr::new(name));
            assert_eq!(child(dir, name), dir.join(name), "{dir:?} + {name:?}");
            assert_eq!(child(dir, name).as_os_str().as_bytes(), dir.join(name).as_os_str().as_bytes());
        }
    }

    #[test]
    fn names_split_by_bytes_match_the_std_parse() {
        for path in
            ["a/b/c", "c", "/c", "./c", "a//c", "a/./c", "a/../c", ".hidden", "/", "a/b/", "a/.", "a/..", ".", ".."]
        {
            let p = Path::new(path);
            let std_parent = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            // The same directory (as a parse sees it) and the same name.
            assert!(parent_of(p).components().eq(std_parent.components()), "{path}: {:?}", parent_of(p));
            assert_eq!(name_of(p), p.file_name(), "{path}");
        }
    }
}
