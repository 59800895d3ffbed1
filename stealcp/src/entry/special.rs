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
use crate::report::Displaced;

/// What making an entry did: `(made, displaced)`: `made` is false if an existing entry was
/// left alone (`no_clobber`); `displaced` says what became of one it replaced.
pub(crate) type Made = (bool, Option<Displaced>);

/// Makes room for a new non-regular entry at `destination` (a copy of the entry whose `lstat`
/// is `source`): `made` false means leave the existing one (`no_clobber`, or `update` and it is
/// not older); a directory is never replaced.
fn clear_destination(
    destination: &Path,
    source: &fs::Metadata,
    o: &CopyOptions,
    action: &'static str,
) -> Result<Made, Failure> {
    let Ok(existing) = fs::symlink_metadata(destination) else { return Ok((true, None)) };
    if o.no_clobber || (o.update && not_older(&existing, source)) {
        return Ok((false, None));
    }
    if o.attributes_only && !o.remove_destination {
        // cp --attributes-only never replaces what is there by another kind of entry.
        return Err(fail(destination, action)(io::Error::from_raw_os_error(nix::libc::EEXIST)));
    }
    if existing.is_dir() {
        let error = io::Error::other("");
        return Err(Failure { path: destination.to_path_buf(), action: "overwrite directory", error });
    }
    let displaced = match &o.backup {
        Some(backup) => {
            Displaced::BackedUp(super::file::make_backup(destination, backup).map_err(fail(destination, "backup"))?)
        }
        None => {
            fs::remove_file(destination).map_err(fail(destination, "replace"))?;
            Displaced::Removed
        }
    };
    Ok((true, Some(displaced)))
}

/// Makes `destination` a symlink with the same target as `source` (whose `lstat` is `meta`).
/// See [`Made`].
pub(crate) fn make_symlink(
    source: &Path,
    destination: &Path,
    meta: &fs::Metadata,
    check_existing: bool,
    o: &CopyOptions,
) -> Result<Made, Failure> {
    let target = fs::read_link(source).map_err(fail(source, "read symlink"))?;
    let made = if check_existing { clear_destination(destination, meta, o, "create symlink")? } else { (true, None) };
    if !made.0 {
        return Ok(made);
    }
    std::os::unix::fs::symlink(&target, destination).map_err(fail(destination, "create symlink"))?;
    preserve_unfollowed(Some(source), destination, meta, o)?;
    Ok(made)
}

/// Recreates a FIFO, socket or device node `source`, as `cp -R` does (devices need privilege;
/// without it the failure is reported like any other), with its extended attributes
/// (`preserve_xattr`: `trusted.*` and `security.*`; Linux allows no `user.*` on special files)
/// and, with the mode, its ACL, as `cp -a` keeps them. See [`Made`].
pub(crate) fn make_special(
    source: &Path,
    destination: &Path,
    meta: &fs::Metadata,
    check_existing: bool,
    o: &CopyOptions,
) -> Result<Made, Failure> {
    use nix::sys::stat::{Mode, SFlag};
    let room =
        if check_existing { clear_destination(destination, meta, o, "create special file")? } else { (true, None) };
    if !room.0 {
        return Ok(room);
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
        copy_acls(Node::Link(source), Node::Link(destination), false, None, false)
            .map_err(fail(destination, "preserve permissions"))?;
        // mknod applied the umask; -p wants the source's bits (less the set-id ones if the
        // owner could not be kept), set after the ACL (whose mask entry is the group bits).
        let mode = meta.mode() & if owner_kept { 0o7777 } else { 0o1777 };
        fs::set_permissions(destination, Permissions::from_mode(mode)).map_err(fail(destination, "preserve mode"))?;
    }
    Ok(room)
}

/// Whether `existing` is at least as new as `source` (`update` leaves it then, as cp).
pub(crate) fn not_older(existing: &fs::Metadata, source: &fs::Metadata) -> bool {
    (existing.mtime(), existing.mtime_nsec()) >= (source.mtime(), source.mtime_nsec())
}

/// Makes `destination` a hard link to `first`, the copy of the first path of the same inode;
/// returns what became of an entry that was there (backed up, as cp, or replaced).
pub(crate) fn hard_link(first: &Path, destination: &Path, o: &CopyOptions) -> Result<Option<Displaced>, Failure> {
    let mut displaced = None;
    if fs::symlink_metadata(destination).is_ok() {
        if o.no_clobber {
            return Ok(None);
        }
        displaced = Some(match &o.backup {
            Some(backup) => {
                Displaced::BackedUp(super::file::make_backup(destination, backup).map_err(fail(destination, "backup"))?)
            }
            None => {
                fs::remove_file(destination).map_err(fail(destination, "replace"))?;
                Displaced::Replaced
            }
        });
    }
    fs::hard_link(first, destination).map_err(crate::error::link_failed(destination, first))?;
    Ok(displaced)
}
