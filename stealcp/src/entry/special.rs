//! Entries that are not a regular file's contents: symlinks, hard links to a file already
//! copied, FIFOs, sockets and device nodes (recreated, as `cp -R` does).
//!
//! This module must never read from a special file (a FIFO can block forever), and never
//! replace a directory.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::attributes::{Node, copy_acls, preserve_unfollowed};
use crate::error::{Failure, fail};
use crate::options::CopyOptions;

/// Makes room for a new non-regular entry at `destination`: `Ok(false)` means leave the
/// existing one (`no_clobber`); a directory is never replaced.
fn clear_destination(destination: &Path, o: &CopyOptions, action: &'static str) -> Result<bool, Failure> {
    let Ok(existing) = fs::symlink_metadata(destination) else { return Ok(true) };
    if o.no_clobber {
        return Ok(false);
    }
    if o.attributes_only && !o.remove_destination {
        // cp --attributes-only never replaces what is there by another kind of entry.
        return Err(fail(destination, action)(io::Error::from_raw_os_error(nix::libc::EEXIST)));
    }
    if existing.is_dir() {
        let error = io::Error::other("");
        return Err(Failure { path: destination.to_path_buf(), action: "overwrite directory", error });
    }
    match &o.backup {
        Some(backup) => {
            super::file::make_backup(destination, backup).map_err(fail(destination, "backup"))?;
        }
        None => fs::remove_file(destination).map_err(fail(destination, "replace"))?,
    }
    Ok(true)
}

/// Makes `destination` a symlink with the same target as `source` (whose `lstat` is `meta`).
/// Returns `Ok(false)` if an existing entry was left alone.
pub(crate) fn make_symlink(
    source: &Path,
    destination: &Path,
    meta: &fs::Metadata,
    check_existing: bool,
    o: &CopyOptions,
) -> Result<bool, Failure> {
    let target = fs::read_link(source).map_err(fail(source, "read symlink"))?;
    if check_existing && !clear_destination(destination, o, "create symlink")? {
        return Ok(false);
    }
    std::os::unix::fs::symlink(&target, destination).map_err(fail(destination, "create symlink"))?;
    preserve_unfollowed(Some(source), destination, meta, o)?;
    Ok(true)
}

/// Recreates a FIFO, socket or device node `source`, as `cp -R` does (devices need privilege;
/// without it the failure is reported like any other), with its extended attributes
/// (`preserve_xattr`: `trusted.*` and `security.*`; Linux allows no `user.*` on special files)
/// and, with the mode, its ACL, as `cp -a` keeps them.
pub(crate) fn make_special(
    source: &Path,
    destination: &Path,
    meta: &fs::Metadata,
    check_existing: bool,
    o: &CopyOptions,
) -> Result<bool, Failure> {
    use nix::sys::stat::{Mode, SFlag};
    if check_existing && !clear_destination(destination, o, "create special file")? {
        return Ok(false);
    }
    let perm = Mode::from_bits_truncate(if o.default_modes { 0o666 } else { meta.mode() & 0o7777 });
    let kind = SFlag::from_bits_truncate(meta.mode() & SFlag::S_IFMT.bits());
    let made = if kind == SFlag::S_IFIFO {
        nix::unistd::mkfifo(destination, perm)
    } else {
        nix::sys::stat::mknod(destination, kind, perm, meta.rdev())
    };
    made.map_err(|e| fail(destination, "create special file")(e.into()))?;
    let owner_kept = preserve_unfollowed(Some(source), destination, meta, o)?;
    if o.preserve_mode {
        copy_acls(Node::Link(source), Node::Link(destination), false, None)
            .map_err(fail(destination, "preserve permissions"))?;
        // mknod applied the umask; -p wants the source's bits (less the set-id ones if the
        // owner could not be kept), set after the ACL (whose mask entry is the group bits).
        let mode = meta.mode() & if owner_kept { 0o7777 } else { 0o1777 };
        fs::set_permissions(destination, Permissions::from_mode(mode)).map_err(fail(destination, "preserve mode"))?;
    }
    Ok(true)
}

/// Makes `destination` a hard link to `first`, the copy of the first path of the same inode.
pub(crate) fn hard_link(first: &Path, destination: &Path, o: &CopyOptions) -> Result<(), Failure> {
    if fs::symlink_metadata(destination).is_ok() {
        if o.no_clobber {
            return Ok(());
        }
        fs::remove_file(destination).map_err(fail(destination, "replace"))?;
    }
    fs::hard_link(first, destination).map_err(fail(destination, "create hard link"))
}
