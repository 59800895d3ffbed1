//! What to copy and how: [`CopyOptions`] (the meanings of `cp`'s options) and [`Target`].
//!
//! This module must never touch the file system; it only says what a copy should do.

use std::path::PathBuf;

/// What to copy and how, with the meanings of `cp`'s options.
///
/// # Examples
/// ```
/// let archive = stealcp::CopyOptions::archive();
/// assert!(archive.recursive && archive.preserve_links && archive.preserve_xattr && !archive.dereference);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyOptions {
    /// Copy directories recursively (`-r`/`-R`).
    pub recursive: bool,
    /// Follow symlinks in the sources (`-L`); otherwise a symlink met while recursing is
    /// copied as a symlink. A symlink named on the command line without `recursive` is always
    /// followed, as `cp` does.
    pub dereference: bool,
    /// Keep permission bits and ACLs (`-p`, `-a`); otherwise new files get the source's bits
    /// less the umask. An owner that could not be kept (an unprivileged copy of another user's
    /// file) drops the set-user-ID and set-group-ID bits, as with `cp`.
    pub preserve_mode: bool,
    /// Keep modification and access times, to the nanosecond (`-p`, `-a`).
    pub preserve_timestamps: bool,
    /// Keep owner and group where permitted (`-p`, `-a`); refusals are ignored, as by `cp`.
    pub preserve_ownership: bool,
    /// Keep hard links between copied files as hard links (`-a`).
    pub preserve_links: bool,
    /// Keep extended attributes (`-a`, `--preserve=xattr`): `user.*`, `trusted.*` and
    /// `security.*` ones (file capabilities are `security.capability`), on files, directories
    /// and symlinks, as `cp` does. ACLs are kept with the mode ([`preserve_mode`](Self::preserve_mode)),
    /// as by `cp -p`. Where the kernel or file system refuses one (`user.*` on a symlink, a
    /// file system without xattrs, `security.capability` without privilege), it is left out
    /// silently unless [`require_xattr`](Self::require_xattr).
    pub preserve_xattr: bool,
    /// Every extended attribute that could not be kept is a failure (`--preserve=xattr` named
    /// explicitly, as with `cp`); `-a` leaves them out silently.
    pub require_xattr: bool,
    /// Never overwrite an existing destination file (`-n`).
    pub no_clobber: bool,
    /// Copy a file only if the destination is missing or older (`-u`).
    pub update: bool,
    /// Re-read each copied file and compare it with its source (`--verify`).
    pub verify: bool,
    /// Append each source's path, as given, to the target directory (`--parents`): `a/b/f`
    /// into `out` becomes `out/a/b/f`, with `out/a` and `out/a/b` made as copies of `a` and
    /// `a/b`.
    pub parents: bool,
}

impl CopyOptions {
    /// `cp -a`: recursive, symlinks as symlinks, modes (with ACLs), times, ownership, hard
    /// links and extended attributes kept.
    pub fn archive() -> Self {
        CopyOptions {
            recursive: true,
            dereference: false,
            preserve_mode: true,
            preserve_timestamps: true,
            preserve_ownership: true,
            preserve_links: true,
            preserve_xattr: true,
            ..CopyOptions::default()
        }
    }

    /// `cp -p`: modes, times and ownership kept.
    pub fn preserve(mut self) -> Self {
        self.preserve_mode = true;
        self.preserve_timestamps = true;
        self.preserve_ownership = true;
        self
    }
}

/// Where the sources go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `cp SRC... DEST`: into `DEST` if it is a directory; as `DEST` if there is one source
    /// and `DEST` is not an existing directory.
    Auto(PathBuf),
    /// `cp -t DIR SRC...`: into the directory `DIR`, which must exist.
    IntoDirectory(PathBuf),
}
