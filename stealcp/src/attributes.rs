//! Attributes a copy keeps of its source: permission bits (and the umask that applies without
//! `-p`), ownership, times, extended attributes and ACLs; and the same for entries that are not
//! followed (symlinks, special files).
//!
//! The order is `cp`'s: ownership first (a chown clears set-user-ID bits and file
//! capabilities), then extended attributes (`security.capability` among them), then the ACL
//! and the mode. Which extended attributes are copied follows libattr's defaults
//! (`/etc/xattr.conf`), as GNU `cp` does: ACLs go with the mode, not with the xattrs, and a few
//! kernel- or file-system-private names are never copied.
//!
//! This module must never create, rename or remove an entry; it only sets attributes on one
//! that exists.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use nix::errno::Errno;
use xattr::FileExt;

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

/// Sets ownership, extended attributes (copied from `source`, if given) and times of an entry
/// that is not followed (a symlink or special file). Returns whether the owner is the source's (when
/// not, the caller drops set-id and sticky bits from the mode it sets).
pub(crate) fn preserve_unfollowed(
    source: Option<&Path>,
    destination: &Path,
    meta: &fs::Metadata,
    o: &CopyOptions,
) -> Result<bool, Failure> {
    let mut owner_kept = true;
    if o.preserve_ownership {
        let chown = |uid, gid| std::os::unix::fs::lchown(destination, uid, gid);
        owner_kept = set_owner(chown, meta.uid(), meta.gid()).map_err(fail(destination, "preserve ownership"))?;
    }
    if let Some(source) = source {
        copy_xattrs(Node::Link(source), Node::Link(destination), destination, o)?;
    }
    if o.preserve_timestamps {
        let (atime, mtime) = filetimes(meta);
        filetime::set_symlink_file_times(destination, atime, mtime)
            .map_err(fail(destination, "preserve timestamps"))?;
    }
    Ok(owner_kept)
}

pub(crate) fn filetimes(meta: &fs::Metadata) -> (filetime::FileTime, filetime::FileTime) {
    (filetime::FileTime::from_last_access_time(meta), filetime::FileTime::from_last_modification_time(meta))
}

/// The set-user-ID and set-group-ID bits: a copy whose owner could not be kept loses them,
/// as with GNU `cp` 9.1 (a set-user-ID program must not run as whoever copied it); the sticky
/// bit stays.
pub(crate) const SPECIAL_BITS: u32 = 0o6000;

/// Gives a copy the source's owner and group with `chown`, as `cp` does: if that is refused
/// (`EPERM`, `EINVAL`: an unprivileged copy of another user's file), the group alone is tried
/// (kept if we are a member), and `Ok(false)` says the owner was not kept. Other errors are
/// errors.
pub(crate) fn set_owner(
    chown: impl Fn(Option<u32>, Option<u32>) -> io::Result<()>,
    uid: u32,
    gid: u32,
) -> io::Result<bool> {
    match chown(Some(uid), Some(gid)) {
        Ok(()) => Ok(true),
        Err(e) if [Some(Errno::EPERM as i32), Some(Errno::EINVAL as i32)].contains(&e.raw_os_error()) => {
            // Only the group, then; its failure is not an error either (cp ignores it too).
            let _ = chown(None, Some(gid));
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The ACL names: copied with the mode (`-p`), not with the other extended attributes.
const ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_DEFAULT: &str = "system.posix_acl_default";

/// What a copy does with an extended attribute of this name: libattr's defaults
/// (`/etc/xattr.conf` as shipped by Debian and Fedora), which GNU `cp` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XattrClass {
    /// Copied by `preserve_xattr`.
    Plain,
    /// An ACL or other permissions: copied with the mode (`preserve_mode`).
    Permissions,
    /// Never copied (written only by the kernel, or private to one file system).
    Skip,
}

fn xattr_class(name: &[u8]) -> XattrClass {
    const PERMISSIONS: [&[u8]; 5] = [
        b"system.nfs4_acl",
        b"system.nfs4acl",
        b"system.richacl",
        b"system.posix_acl_access",
        b"system.posix_acl_default",
    ];
    const SKIP_EXACT: [&[u8]; 4] =
        [b"trusted.SGI_ACL_DEFAULT", b"trusted.SGI_ACL_FILE", b"trusted.SGI_CAP_FILE", b"trusted.SGI_MAC_FILE"];
    const SKIP_PREFIX: [&[u8]; 5] = [b"trusted.SGI_DMI_", b"xfsroot.", b"user.Beagle.", b"afs.", b"security.evm"];
    if PERMISSIONS.contains(&name) {
        XattrClass::Permissions
    } else if SKIP_EXACT.contains(&name) || SKIP_PREFIX.iter().any(|p| name.starts_with(p)) {
        XattrClass::Skip
    } else {
        XattrClass::Plain
    }
}

/// The buffer the names of an open file's extended attributes, or one value, are first read
/// into, on the stack: most files have no such attribute or a few short ones, and the kernel
/// allocates (for a value, also zeroes) a buffer as large as the one it is given, at every
/// call. Larger lists and values are read by the `xattr` crate, which asks for their size.
const SMALL_XATTR: usize = 256;

/// Something whose extended attributes are read or written: an open file, a path followed to
/// what it names (a directory), or a path not followed (a symlink, a special file).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Node<'a> {
    Open(&'a File),
    Followed(&'a Path),
    Link(&'a Path),
}

impl Node<'_> {
    fn list(self) -> io::Result<Vec<OsString>> {
        let names = match self {
            Node::Open(f) => {
                let mut buf = [0u8; SMALL_XATTR];
                match rustix::fs::flistxattr(f, &mut buf) {
                    Ok(len) => {
                        let names = buf[..len].split(|&b| b == 0).filter(|name| !name.is_empty());
                        return Ok(names.map(|name| OsStr::from_bytes(name).to_owned()).collect());
                    }
                    // More names than fit: the crate asks for their size and reads them.
                    Err(rustix::io::Errno::RANGE) => f.list_xattr(),
                    Err(e) => Err(e.into()),
                }
            }
            Node::Followed(p) => xattr::list_deref(p),
            Node::Link(p) => xattr::list(p),
        };
        match names {
            Ok(names) => Ok(names.collect()),
            Err(e) if unsupported(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn get(self, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
        let value = match self {
            Node::Open(f) => {
                let mut buf = [0u8; SMALL_XATTR];
                match rustix::fs::fgetxattr(f, name, &mut buf) {
                    Ok(len) => Ok(Some(buf[..len].to_vec())),
                    Err(rustix::io::Errno::NODATA) => Ok(None),
                    // A larger value: the crate asks for its size and reads it.
                    Err(rustix::io::Errno::RANGE) => f.get_xattr(name),
                    Err(e) => Err(e.into()),
                }
            }
            Node::Followed(p) => xattr::get_deref(p, name),
            Node::Link(p) => xattr::get(p, name),
        };
        match value {
            Err(e) if unsupported(&e) => Ok(None),
            other => other,
        }
    }

    fn set(self, name: &OsStr, value: &[u8]) -> io::Result<()> {
        match self {
            Node::Open(f) => f.set_xattr(name, value),
            Node::Followed(p) => xattr::set_deref(p, name, value),
            Node::Link(p) => xattr::set(p, name, value),
        }
    }

    /// Removes `name`; its absence (or no xattrs at all) is not an error. Returns whether
    /// something was removed.
    fn remove(self, name: &OsStr) -> io::Result<bool> {
        let removed = match self {
            Node::Open(f) => f.remove_xattr(name),
            Node::Followed(p) => xattr::remove_deref(p, name),
            Node::Link(p) => xattr::remove(p, name),
        };
        match removed {
            Ok(()) => Ok(true),
            Err(e) if unsupported(&e) || e.raw_os_error() == Some(Errno::ENODATA as i32) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The file system (or the kernel, for this kind of entry) has no extended attributes.
fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::EOPNOTSUPP as i32)
}

/// Copies the extended attributes of `src` to `dst` (`preserve_xattr`), all but ACLs and the
/// names never copied (see [`XattrClass`]). Run after the chown, which clears file
/// capabilities. A refusal is a failure only with `require_xattr`; without, the attribute is
/// left out silently, as by `cp -a`. Returns the source's names, when listed, so that
/// [`copy_acls`] need not ask again.
pub(crate) fn copy_xattrs(
    src: Node<'_>,
    dst: Node<'_>,
    destination: &Path,
    o: &CopyOptions,
) -> Result<Option<Vec<OsString>>, Failure> {
    if !o.preserve_xattr {
        return Ok(None);
    }
    let mut first_error = None;
    let names = src.list().map_err(|e| first_error = Some(e)).ok();
    for name in names.iter().flatten().filter(|n| xattr_class(n.as_bytes()) == XattrClass::Plain) {
        let copied = src.get(name).and_then(|value| match value {
            Some(value) => dst.set(name, &value),
            None => Ok(()), // removed since the listing
        });
        if let Err(e) = copied {
            // The error as it came (cp names no attribute: "setting attributes for 'D': ...").
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) if o.require_xattr => Err(fail(destination, "preserve extended attributes")(e)),
        _ => Ok(names),
    }
}

/// Gives `dst` the ACLs of `src` (`preserve_mode`, as `cp -p`): the access ACL and, for a
/// directory, the default one; an ACL the source does not have is removed from the copy (it
/// may have inherited one from its new parent), unless `dst_bare` says the copy cannot have
/// one (see [`has_default_acl`]). Returns what changed ([`AclsCopied`]). A file system without ACLs is not
/// an error when the source has none to keep. `listed`: the source's names, if
/// [`copy_xattrs`] listed them (then an ACL not among them is not asked for).
///
/// (Removing an ACL that is not there succeeds on Linux, so without `dst_bare` every copy
/// would cost a `removexattr` and then a `chmod` for nothing.)
pub(crate) fn copy_acls(
    src: Node<'_>,
    dst: Node<'_>,
    is_dir: bool,
    listed: Option<&[OsString]>,
    dst_bare: bool,
) -> io::Result<AclsCopied> {
    let mut changed = AclsCopied::default();
    let names: &[&str] = if is_dir { &[ACL_ACCESS, ACL_DEFAULT] } else { &[ACL_ACCESS] };
    for name in names {
        let name = OsStr::new(name);
        let value = match listed {
            Some(listed) if !listed.iter().any(|n| n == name) => None,
            _ => src.get(name)?,
        };
        match value {
            Some(value) => {
                dst.set(name, &value)?;
                changed.set = true;
            }
            None if dst_bare => {}
            None => changed.removed |= dst.remove(name)?,
        }
    }
    Ok(changed)
}

/// What [`copy_acls`] did to a copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AclsCopied {
    /// The source's ACL was given to the copy. The kernel then derives the copy's permission
    /// bits from the access ACL (owner, mask as the group bits, other), which are the
    /// source's: a copy whose bits were already the source's needs no chmod after it.
    pub(crate) set: bool,
    /// An ACL the copy had (inherited) and the source has not was removed: the copy's group
    /// bits are still that ACL's mask, so its mode must be set again.
    pub(crate) removed: bool,
}

/// Whether the directory open as `dir` has a default ACL, which what is created in it
/// inherits: if not, a new file there has no ACL. `true` when that cannot be told (no
/// `/proc`, an error), so that the caller assumes the worst.
pub(crate) fn has_default_acl(dir: BorrowedFd<'_>) -> bool {
    use rustix::io::Errno;
    // Only the size is asked for: no buffer, in the kernel either.
    match rustix::fs::fgetxattr_query(dir, ACL_DEFAULT) {
        Ok(_) => true,
        Err(Errno::NODATA | Errno::OPNOTSUPP) => false,
        // An O_PATH descriptor takes no fgetxattr; its /proc/self/fd link leads to the very
        // directory it was opened on, whatever its path names now.
        Err(Errno::BADF) => has_default_acl_at(Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd()))),
        Err(_) => true,
    }
}

/// [`has_default_acl`] for the directory `dir` names (followed).
pub(crate) fn has_default_acl_at(dir: &Path) -> bool {
    !matches!(Node::Followed(dir).get(OsStr::new(ACL_DEFAULT)), Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_names_are_classed_as_libattr_does() {
        assert_eq!(xattr_class(b"user.comment"), XattrClass::Plain);
        assert_eq!(xattr_class(b"security.capability"), XattrClass::Plain);
        assert_eq!(xattr_class(b"trusted.overlay.opaque"), XattrClass::Plain);
        assert_eq!(xattr_class(b"system.posix_acl_access"), XattrClass::Permissions);
        assert_eq!(xattr_class(b"system.posix_acl_default"), XattrClass::Permissions);
        assert_eq!(xattr_class(b"security.evm"), XattrClass::Skip);
        assert_eq!(xattr_class(b"user.Beagle.x"), XattrClass::Skip);
        assert_eq!(xattr_class(b"trusted.SGI_DMI_y"), XattrClass::Skip);
    }

    /// The kernel refuses `user.*` xattrs on a symlink: left out silently by `-a`, a failure
    /// when `--preserve=xattr` is asked for explicitly, as with `cp`.
    #[test]
    fn a_refused_xattr_fails_only_when_required() {
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let (file, link) = (dir.path().join("f"), dir.path().join("l"));
        fs::write(&file, "").unwrap();
        if let Err(e) = xattr::set(&file, "user.x", b"1") {
            return eprintln!("skipped: no user xattrs here: {e}");
        }
        std::os::unix::fs::symlink("f", &link).unwrap();
        let mut o = CopyOptions::archive();
        let listed = copy_xattrs(Node::Followed(&file), Node::Link(&link), &link, &o).unwrap();
        assert_eq!(listed, Some(vec![OsString::from("user.x")]));
        o.require_xattr = true;
        let failure = copy_xattrs(Node::Followed(&file), Node::Link(&link), &link, &o).unwrap_err();
        assert_eq!(
            (failure.action, failure.error.kind()),
            ("preserve extended attributes", io::ErrorKind::PermissionDenied)
        );
    }

    /// Names and values that do not fit the first buffer on the stack are read whole.
    #[test]
    fn long_xattr_lists_and_values_are_copied_whole() {
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "").unwrap();
        fs::write(&b, "").unwrap();
        let long: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        if let Err(e) = xattr::set(&a, "user.long", &long) {
            return eprintln!("skipped: no user xattrs here: {e}");
        }
        let names: Vec<String> = (0..40).map(|i| format!("user.name-number-{i:03}")).collect();
        for name in &names {
            xattr::set(&a, name, name.as_bytes()).unwrap();
        }
        let (fa, fb) = (File::open(&a).unwrap(), File::options().write(true).open(&b).unwrap());
        let listed = copy_xattrs(Node::Open(&fa), Node::Open(&fb), &b, &CopyOptions::archive()).unwrap().unwrap();
        assert_eq!(listed.len(), names.len() + 1, "every name, though the list is longer than {SMALL_XATTR} bytes");
        assert_eq!(xattr::get(&b, "user.long").unwrap(), Some(long));
        for name in &names {
            assert_eq!(xattr::get(&b, name).unwrap().as_deref(), Some(name.as_bytes()));
        }
    }

    /// Through the descriptor itself (opened for reading) and, for an `O_PATH` one, which takes
    /// no `fgetxattr`, through its `/proc/self/fd` link.
    #[test]
    fn a_default_acl_is_seen_through_a_readable_or_an_o_path_descriptor() {
        use nix::fcntl::OFlag;
        use std::os::fd::AsFd;
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let open = |how| {
            nix::fcntl::open(dir.path(), how | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
                .unwrap()
        };
        let (fd, readable) = (open(OFlag::O_PATH), open(OFlag::O_RDONLY));
        assert!(!has_default_acl(fd.as_fd()));
        assert!(!has_default_acl(readable.as_fd()));
        // user::rwx user:65534:r-x group::r-x mask::r-x other::r-x: (tag, perm, id) after the
        // version (an ACL of the mode's entries alone would not be inherited as an ACL).
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in
            [(1u16, 7u16, u32::MAX), (2, 5, 65534), (4, 5, u32::MAX), (0x10, 5, u32::MAX), (0x20, 5, u32::MAX)]
        {
            acl.extend([tag.to_le_bytes(), perm.to_le_bytes()].concat());
            acl.extend(id.to_le_bytes());
        }
        if let Err(e) = xattr::set(dir.path(), ACL_DEFAULT, &acl) {
            return eprintln!("skipped: no ACLs here: {e}");
        }
        assert!(has_default_acl(fd.as_fd()));
        assert!(has_default_acl(readable.as_fd()));
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        assert!(xattr::get(&file, ACL_ACCESS).unwrap().is_some(), "a new file inherits the default ACL");
    }

    #[test]
    fn a_refused_owner_keeps_the_group_alone_and_says_so() {
        use std::cell::RefCell;
        let calls = RefCell::new(Vec::new());
        let refuse_owner = |uid: Option<u32>, gid| {
            calls.borrow_mut().push((uid, gid));
            if uid.is_some() { Err(io::Error::from_raw_os_error(Errno::EPERM as i32)) } else { Ok(()) }
        };
        assert!(!set_owner(refuse_owner, 7, 8).unwrap());
        assert_eq!(*calls.borrow(), [(Some(7), Some(8)), (None, Some(8))]);
        assert!(set_owner(|_, _| Ok(()), 7, 8).unwrap());
        let broken = |_, _| Err(io::Error::from_raw_os_error(Errno::EIO as i32));
        assert_eq!(set_owner(broken, 7, 8).unwrap_err().raw_os_error(), Some(Errno::EIO as i32));
    }
}
