//! A copy being written ([`Staged`]): an unnamed file (`O_TMPFILE`), a file under a temporary
//! name, or one under its own name in a staging directory; sealed with the source's attributes
//! (and `--verify`) and then published under its final name.
//!
//! This module must never publish a copy before it is complete, and never leave a staged copy
//! behind when it is dropped unpublished.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use parking_lot::Mutex;

use super::dirs::{Dirs, dst_dir_of, name_of};
use crate::attributes::{Node, SPECIAL_BITS, copy_acls, copy_xattrs, file_times, set_owner, umask};
use crate::error::{Failure, fail};
use crate::options::CopyOptions;
use crate::publish::temp_path;

/// Devices whose file systems refused `O_TMPFILE`: asked once per device per process.
static NO_TMPFILE: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// Whether `linkat(AT_EMPTY_PATH)` was refused (it needs `CAP_DAC_READ_SEARCH`); the
/// `/proc/self/fd` route is then taken at once.
static NO_EMPTY_PATH_LINK: AtomicBool = AtomicBool::new(false);

/// A copy being written: an unnamed file (`O_TMPFILE`) in the destination directory where the
/// file system has them, else a file with a temporary name there, or, inside a directory still
/// under its temporary name, the file itself. Either way it gets its final name only once
/// complete ([`Staged::publish`]); dropped before that, it leaves nothing behind (an unnamed
/// file vanishes with its descriptor, a named one is removed).
pub(super) struct Staged {
    pub(super) file: File,
    pub(super) name: Naming,
}

#[derive(Debug)]
pub(super) enum Naming {
    Unnamed,
    Temp(PathBuf),
    /// Under its final name in a staging directory; removed if dropped unpublished.
    InPlace(PathBuf),
    /// An existing destination written into (as `cp` does): it has its name already, and is
    /// never removed.
    Existing,
    /// Published.
    Done,
}

impl Staged {
    pub(super) fn create(dirs: &mut Dirs, destination: &Path, dst_dev: u64, mode: u32) -> io::Result<Staged> {
        if !NO_TMPFILE.lock().contains(&dst_dev) {
            let dir = dst_dir_of(&mut dirs.dst, destination)?;
            let flags = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
            match nix::fcntl::openat(dir, ".", flags, Mode::from_bits_truncate(mode)) {
                Ok(fd) => return Ok(Staged { file: File::from(fd), name: Naming::Unnamed }),
                // No O_TMPFILE on this file system (or kernel): named temporary files instead.
                Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => NO_TMPFILE.lock().push(dst_dev),
                Err(e) => return Err(e.into()),
            }
        }
        let temp = temp_path(destination);
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(mode).open(&temp)?;
        Ok(Staged { file, name: Naming::Temp(temp) })
    }

    /// Creates the file under its own name, in a directory nobody sees yet.
    pub(super) fn in_place(dirs: &mut Dirs, destination: &Path, mode: u32) -> io::Result<Staged> {
        let Some(name) = name_of(destination) else { return Err(io::Error::from(io::ErrorKind::InvalidInput)) };
        let dir = dst_dir_of(&mut dirs.dst, destination)?;
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(dir, name, flags, Mode::from_bits_truncate(mode))?;
        Ok(Staged { file: File::from(fd), name: Naming::InPlace(destination.to_path_buf()) })
    }

    /// Gives the complete copy its final name, replacing what is there unless `no_clobber`.
    /// Returns `false` if the name was taken (since the check) and left alone.
    fn publish(mut self, dirs: &mut Dirs, destination: &Path, no_clobber: bool) -> io::Result<bool> {
        match std::mem::replace(&mut self.name, Naming::Done) {
            Naming::Done | Naming::InPlace(_) | Naming::Existing => return Ok(true),
            Naming::Temp(temp) => {
                return fs::rename(&temp, destination).map(|()| true).inspect_err(|_| {
                    let _ = fs::remove_file(&temp);
                });
            }
            Naming::Unnamed => {}
        }
        match link_unnamed(&self.file, dirs, destination) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && no_clobber => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Replacing a file: link under a temporary name, then rename over it, so the
                // old file stays whole until the new one takes its place.
                let temp = temp_path(destination);
                link_unnamed(&self.file, dirs, &temp)?;
                fs::rename(&temp, destination).inspect_err(|_| {
                    let _ = fs::remove_file(&temp);
                })?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Naming::Temp(path) | Naming::InPlace(path) = &self.name {
            let _ = fs::remove_file(path);
        }
    }
}

/// Gives an unnamed (`O_TMPFILE`) file the name `to`.
fn link_unnamed(file: &File, dirs: &mut Dirs, to: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, AtFlags};
    let Some(name) = name_of(to) else { return Err(io::Error::from(io::ErrorKind::InvalidInput)) };
    let dir = dst_dir_of(&mut dirs.dst, to)?;
    if !NO_EMPTY_PATH_LINK.load(Ordering::Relaxed) {
        match nix::unistd::linkat(file, "", dir, name, AtFlags::AT_EMPTY_PATH) {
            Ok(()) => return Ok(()),
            // ENOENT: no CAP_DAC_READ_SEARCH (or no AT_EMPTY_PATH support).
            Err(Errno::ENOENT | Errno::EPERM) => NO_EMPTY_PATH_LINK.store(true, Ordering::Relaxed),
            Err(e) => return Err(e.into()),
        }
    }
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    nix::unistd::linkat(AT_FDCWD, proc_path.as_str(), dir, name, AtFlags::AT_SYMLINK_FOLLOW).map_err(io::Error::from)
}

/// Gives a complete copy the source's attributes, checks it against the source if asked, and
/// publishes it under its final name. `created` is the owner and group the copy was created
/// with, when known: no chown is needed if they already match. Returns `false` if
/// `no_clobber` found the name taken.
///
/// An attribute that cannot be kept is an error, but, as with cp, the rest are still applied
/// and the copy (its contents complete) is published: the first such failure is returned
/// after it. A copy that differs from its source (`verify`) is never published.
pub(super) fn seal(
    staged: Staged,
    dirs: &mut Dirs,
    src: &File,
    meta: &fs::Metadata,
    destination: &Path,
    created: Option<(u32, u32)>,
    o: &CopyOptions,
) -> Result<bool, Failure> {
    let out = &staged.file;
    // An existing file written into was not created by us: it has its own owner and group.
    let created = created.filter(|_| !matches!(staged.name, Naming::Existing));
    let mut first_failure: Option<Failure> = None;
    let mut note = |failure: Failure| {
        first_failure.get_or_insert(failure);
    };
    let mut mode = meta.mode() & 0o7777;
    if o.preserve_ownership && created != Some((meta.uid(), meta.gid())) {
        // Ownership first: chown clears set-user-ID bits (that chmod then restores) and file
        // capabilities (that the xattrs then bring back).
        let chown = |uid, gid| std::os::unix::fs::fchown(out, uid, gid);
        match set_owner(chown, meta.uid(), meta.gid()) {
            Ok(true) => {}
            Ok(false) => mode &= !SPECIAL_BITS,
            Err(e) => {
                mode &= !SPECIAL_BITS;
                note(fail(destination, "preserve ownership")(e));
            }
        }
    }
    let listed = copy_xattrs(Node::Open(src), Node::Open(out), destination, o).unwrap_or_else(|failure| {
        note(failure);
        None
    });
    let mut acl_removed = false;
    if o.preserve_mode {
        // A copy made new has an ACL only if its directory passed on a default one: else
        // there is nothing to remove when the source has none.
        let bare = !matches!(staged.name, Naming::Existing) && !dirs.may_inherit_acl(destination);
        match copy_acls(Node::Open(src), Node::Open(out), false, listed.as_deref(), bare) {
            Ok(changed) => acl_removed = changed.removed,
            Err(e) => note(fail(destination, "preserve permissions")(e)),
        }
    }
    // The file was created with the source's bits less the umask: only -p with bits the umask
    // took, or with set-id and sticky bits (which creation never sets), or an inherited ACL
    // removed (its mask is still the group bits), needs a chmod. The source's ACL set on a copy
    // whose bits were already the source's leaves them so: the kernel derives the bits from
    // the ACL, which are the source's (and a file system keeping the ACL apart from the mode
    // leaves them as created). An existing file written into has its own mode: -p always
    // sets it.
    let bits = umask().map(|u| mode & 0o777 & !u).filter(|_| !matches!(staged.name, Naming::Existing));
    if o.preserve_mode
        && (bits != Some(mode) || acl_removed)
        && let Err(e) = out.set_permissions(Permissions::from_mode(mode))
    {
        note(fail(destination, "preserve mode")(e));
    }
    if o.preserve_timestamps
        && let Err(e) = out.set_times(file_times(meta))
    {
        note(fail(destination, "preserve timestamps")(e));
    }
    if o.verify {
        verify(src, out).map_err(fail(destination, "verify"))?;
    }
    let published = staged.publish(dirs, destination, o.no_clobber).map_err(fail(destination, "rename into place"))?;
    match first_failure {
        Some(failure) => Err(failure),
        None => Ok(published),
    }
}

/// Re-reads both files from the start and compares them.
fn verify(a: &File, b: &File) -> io::Result<()> {
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut pos = 0u64;
    loop {
        let n = read_full(a, &mut ba, pos)?;
        let m = read_full(b, &mut bb, pos)?;
        if n != m || ba[..n] != bb[..m] {
            return Err(io::Error::other("the copy differs from the source"));
        }
        if n == 0 {
            return Ok(());
        }
        pos += n as u64;
    }
}

fn read_full(f: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
