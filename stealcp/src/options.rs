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
    /// Ask before replacing an existing destination (`-i`), after the checks that may leave it
    /// alone (`no_clobber`, `update`, same file): the coordinator asks its observer
    /// ([`Observer::overwrite`](crate::Observer::overwrite)), never a worker; a "no" leaves
    /// the destination alone and is no failure. Directories are merged without asking.
    pub interactive: bool,
    /// Re-read each copied file and compare it with its source (`--verify`).
    pub verify: bool,
    /// Append each source's path, as given, to the target directory (`--parents`): `a/b/f`
    /// into `out` becomes `out/a/b/f`, with `out/a` and `out/a/b` made as copies of `a` and
    /// `a/b`.
    pub parents: bool,
    /// Whether symlinks named as sources are followed: `Some(true)` for `-H` (or `-L`),
    /// `Some(false)` for `-P`; `None` means `cp`'s default: followed unless recursing without
    /// `dereference`. See [`CopyOptions::follows_arguments`].
    pub follow_arguments: Option<bool>,
    /// Remove an existing destination before copying (`--remove-destination`), instead of
    /// writing into it.
    pub remove_destination: bool,
    /// If an existing destination cannot be opened for writing, remove it and try again
    /// (`-f`).
    pub force: bool,
    /// Read FIFOs and devices met while recursing as files (`--copy-contents`), instead of
    /// recreating them.
    pub copy_contents: bool,
    /// Write through a dangling destination symlink, creating the file it names, as GNU cp
    /// does when `POSIXLY_CORRECT` is set; otherwise such a destination is refused ("not
    /// writing through dangling symlink").
    #[serde(default)]
    pub write_through_dangling: bool,
    /// Do not descend into directories on other file systems (`-x`): their mount points are
    /// copied as empty directories.
    pub one_file_system: bool,
    /// Make hard links to the source files instead of copying them (`-l`).
    pub hard_link: bool,
    /// Make symlinks to the source files instead of copying them (`-s`).
    pub symbolic_link: bool,
    /// Copy only attributes, not contents (`--attributes-only`).
    pub attributes_only: bool,
    /// Follow a symlink to a directory at the destination instead of refusing to put a
    /// directory there (`--keep-directory-symlink`).
    pub keep_directory_symlink: bool,
    /// Holes in the copies (`--sparse=WHEN`).
    pub sparse: Sparse,
    /// Reflinks (`--reflink[=WHEN]`).
    pub reflink: Reflink,
    /// Back up each existing destination before it is overwritten (`-b`, `--backup`).
    pub backup: Option<Backup>,
    /// `--no-preserve=mode` said explicitly: new entries get the default bits (0666 for files,
    /// 0777 for directories) less the umask, as with cp, instead of the source's less the umask.
    pub default_modes: bool,
}

/// `--sparse=WHEN`: where copies have holes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Sparse {
    /// Where the source has holes (found with `SEEK_DATA`/`SEEK_HOLE`).
    #[default]
    Auto,
    /// Also wherever a block of the destination's block size (counted from the start of the
    /// file) holds only zeros, as cp makes them, even if the source has no holes.
    Always,
    /// Never: every byte is written.
    Never,
}

/// `--reflink[=WHEN]`: whether copies share the source's extents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reflink {
    /// Where the file system can (the default, as in cp 9).
    #[default]
    Auto,
    /// Always: a file that cannot be cloned fails.
    Always,
    /// Never: the bytes are copied.
    Never,
}

/// `--backup[=CONTROL]` and `-S SUFFIX`: how an existing destination is kept before it is
/// replaced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backup {
    /// Numbered (`name.~N~`), simple (`name` + suffix), or numbered only where numbered backups
    /// exist already.
    pub control: BackupControl,
    /// The simple backups' suffix (`~` unless `-S` or `SIMPLE_BACKUP_SUFFIX` says otherwise).
    pub suffix: String,
}

/// The `CONTROL` of `--backup=CONTROL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BackupControl {
    /// `simple`, `never`: `name~`.
    Simple,
    /// `numbered`, `t`: `name.~1~`, `name.~2~`, ...
    Numbered,
    /// `existing`, `nil`: numbered if numbered backups exist, else simple.
    Existing,
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

    /// Whether a symlink named as a source is followed: `-H`/`-L` yes, `-P` no; by default,
    /// as `cp`, unless recursing without `dereference`.
    ///
    /// # Examples
    /// ```
    /// let mut o = stealcp::CopyOptions::default();
    /// assert!(o.follows_arguments()); // cp a-link copy: copies the file it leads to
    /// o.recursive = true;
    /// assert!(!o.follows_arguments()); // cp -r a-link copy: copies the link
    /// o.follow_arguments = Some(true); // -H
    /// assert!(o.follows_arguments());
    /// ```
    pub fn follows_arguments(&self) -> bool {
        self.follow_arguments.unwrap_or(self.dereference || !self.recursive)
    }

    /// The permission bits a new entry is created with, before the umask: the source's, or
    /// with [`default_modes`](CopyOptions::default_modes) the default ones.
    pub(crate) fn creation_bits(&self, source_mode: u32, directory: bool) -> u32 {
        match (self.default_modes, directory) {
            (false, _) => source_mode & 0o777,
            (true, false) => 0o666,
            (true, true) => 0o777,
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
    /// `cp -T SRC DEST`: `DEST` itself, even if it is a directory (a directory source is then
    /// merged into it).
    Exactly(PathBuf),
}
