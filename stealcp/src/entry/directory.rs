//! A directory's copy: made early ([`create_directory`], writable by us whatever the source's
//! mode) and finished at the end, once everything inside is in place ([`finish_directory`]:
//! ownership, mode, times).
//!
//! This module must never remove a directory or anything in it.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::dirs::parent_of;
use crate::attributes::{Node, SPECIAL_BITS, copy_acls, copy_xattrs, filetimes, has_default_acl_at, set_owner};
use crate::error::{Failure, fail};
use crate::options::CopyOptions;
use crate::path_bytes;

/// What a copied directory keeps of its source: applied at the end, once everything inside is
/// in place (creating entries changes a directory's times).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct DirMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: (i64, u32),
    mtime: (i64, u32),
    /// The source directory's device (`-x` compares it with its parent's).
    #[serde(default)]
    pub(crate) dev: u64,
    /// Copy the directory but not what is inside (`-x`: a mount point of another file system).
    #[serde(default)]
    pub(crate) skip_contents: bool,
}

impl DirMeta {
    pub(crate) fn new(meta: &fs::Metadata) -> Self {
        let (a, m) = filetimes(meta);
        DirMeta {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            atime: (a.unix_seconds(), a.nanoseconds()),
            mtime: (m.unix_seconds(), m.nanoseconds()),
            dev: meta.dev(),
            skip_contents: false,
        }
    }
}

/// Creates a destination directory, writable by us whatever the source's mode, and closed to
/// everyone else while it is filled (the final mode is set by [`finish_directory`]): a group
/// or others must not be able to add or rename entries in a copy under way (coreutils
/// parent-perm-race; cp closes it so with -p). Where the parent has a default ACL the
/// directory is made with the source's bits, as before: its ACL is derived from the mode it
/// is made with, and a later chmod would not give the same one. An existing directory is
/// reused: returns whether it existed.
pub(crate) fn create_directory(destination: &Path, meta: &DirMeta) -> Result<bool, Failure> {
    let mut mode = meta.mode | 0o700;
    if mode & 0o077 != 0 && !has_default_acl_at(parent_of(destination)) {
        mode &= !0o077;
    }
    match fs::DirBuilder::new().mode(mode).create(destination) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::metadata(destination) {
            Ok(m) if m.is_dir() => Ok(true),
            _ => {
                let error = io::Error::other("");
                Err(Failure { path: destination.to_path_buf(), action: "overwrite non-directory", error })
            }
        },
        Err(e) => Err(fail(destination, "create directory")(e)),
    }
}

/// A copied directory to finish once everything inside is in place.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct DirFinish {
    /// The source directory (its extended attributes and ACLs are read at the end).
    #[serde(with = "path_bytes")]
    pub(crate) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(crate) path: PathBuf,
    pub(crate) meta: DirMeta,
    /// It existed before this run.
    pub(crate) existed: bool,
}

/// Sets a copied directory's ownership, extended attributes, ACLs, mode and times, once
/// everything inside is in place (so that nothing inside inherits its default ACL, as with `cp`).
/// Without `preserve_mode`, a directory that `existed` before the run keeps its mode, as with
/// `cp -r`.
pub(crate) fn finish_directory(job: &DirFinish, o: &CopyOptions) -> Result<(), Failure> {
    let (path, dir, existed) = (job.path.as_path(), &job.meta, job.existed);
    let mut mode = dir.mode;
    if o.preserve_ownership {
        let chown = |uid, gid| std::os::unix::fs::chown(path, uid, gid);
        if !set_owner(chown, dir.uid, dir.gid).map_err(fail(path, "preserve ownership"))? {
            mode &= !SPECIAL_BITS;
        }
    }
    let (src, dst) = (Node::Followed(&job.source), Node::Followed(path));
    let listed = copy_xattrs(src, dst, path, o)?;
    if o.preserve_mode {
        // A directory made new has ACLs only if its parent passed on a default one when it
        // was made: its parent, finished after it, still has what it had then.
        let bare = !existed && !has_default_acl_at(parent_of(path));
        copy_acls(src, dst, true, listed.as_deref(), bare).map_err(fail(path, "preserve permissions"))?;
        if !existed {
            // A setgid bit the new directory got from its parent stays, as with cp -p.
            mode |= fs::metadata(path).map_err(fail(path, "stat"))?.mode() & 0o2000;
        }
        fs::set_permissions(path, Permissions::from_mode(mode)).map_err(fail(path, "set mode"))?;
    } else if !existed && o.default_modes {
        // --no-preserve=mode: the default bits less the umask, as cp.
        let mode = 0o777 & !crate::attributes::umask().unwrap_or(0o022);
        fs::set_permissions(path, Permissions::from_mode(mode)).map_err(fail(path, "set mode"))?;
    } else if !existed {
        // What making it with the source's bits would have given (less the umask; setgid as
        // inherited from the parent), had it not been closed while filled (see
        // create_directory), and without the owner bits added so we could fill it.
        let current = fs::metadata(path).map_err(fail(path, "stat"))?.mode() & 0o7777;
        let umask = crate::attributes::umask().unwrap_or(0o022);
        let closed = current & 0o077 == 0 && dir.mode & !umask & 0o077 != 0;
        let mode = if closed && !has_default_acl_at(parent_of(path)) {
            (dir.mode & 0o1777 & !umask) | (current & 0o2000)
        } else {
            current & !(0o700 & !dir.mode)
        };
        if mode != current {
            fs::set_permissions(path, Permissions::from_mode(mode)).map_err(fail(path, "set mode"))?;
        }
    }
    if o.preserve_timestamps {
        // One utimensat by path (filetime's set_file_times opens the directory first).
        use nix::sys::stat::{UtimensatFlags, utimensat};
        let time = |(s, ns): (i64, u32)| nix::sys::time::TimeSpec::new(s, ns.into());
        utimensat(nix::fcntl::AT_FDCWD, path, &time(dir.atime), &time(dir.mtime), UtimensatFlags::FollowSymlink)
            .map_err(|e| fail(path, "preserve timestamps")(e.into()))?;
    }
    Ok(())
}
