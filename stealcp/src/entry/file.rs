//! A regular file copied whole on a worker ([`FileJob`]): opened, checked, written through a
//! staged copy and published; or handed back to the coordinator uncopied ([`HandBackReason`]) when it
//! has other names or is large enough to split.
//!
//! This module must never leave a partial copy under the file's final name, nor follow a
//! source symlink unless the job says `follow`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::dirs::{Dirs, dir_of, dst_dir_of, name_of};
use super::staged::{Naming, Staged, seal};
use crate::attributes::creation_mode;
use crate::copy_debug::CopyDebug;
use crate::data;
use crate::error::{Failure, fail, fail_with, link_failed};
use crate::options::{Backup, BackupControl, CopyOptions, Reflink};
use crate::path_bytes;
use crate::report::Displaced;
use crate::tuning::SPLIT_AT;

/// One regular file to copy whole, on a worker (in a thread or a worker process: it serializes,
/// paths as raw bytes so that names that are not UTF-8 travel intact).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct FileJob {
    #[serde(with = "path_bytes")]
    pub(crate) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(crate) destination: PathBuf,
    /// The size, if known (progress totals, and whether to split the file): as the walk saw
    /// it, or as the worker found it when it handed the file back.
    pub(crate) len: Option<u64>,
    /// Nobody checked yet whether the file has other names: if it does (and links are kept),
    /// hand it back ([`HandBackReason::HardLinked`]) instead of copying it, so that it is copied once.
    pub(crate) hand_back_links: bool,
    /// Nobody checked the size yet: a file of [`SPLIT_AT`] bytes or more is handed back
    /// ([`HandBackReason::Large`]) to be copied in ranges by several workers.
    pub(crate) hand_back_large: bool,
    /// Follow the source if it is a symlink (`-L`, or a symlink named on the command line).
    pub(crate) follow: bool,
    /// The destination directory existed before this run, so the name may already be taken;
    /// in a directory this run created, it cannot be, and the check is skipped.
    pub(crate) check_existing: bool,
    /// The device of the destination directory: a reflink is only tried on the same device.
    pub(crate) dst_dev: u64,
    /// The destination directory's group if it is set-group-ID (new files get that group).
    pub(crate) dst_group: Option<u32>,
    /// The destination directory is inside one this run builds under a temporary name: the
    /// file is written under its own name at once (nobody sees it before it is complete).
    pub(crate) in_staging: bool,
    /// The source may be a FIFO or a device, read like a file until end of file (named on
    /// the command line without `-r`, or `--copy-contents`); otherwise anything but a regular
    /// file is refused when opened.
    #[serde(default)]
    pub(crate) read_special: bool,
    /// The path to open instead of `source`, which stays the one shown to users: for
    /// `/dev/stdin` and the like, the coordinator's descriptor as `/proc/<pid>/fd/N` (a worker
    /// process's `/dev/stdin` is its own). See [`reachable_from_workers`].
    #[serde(default, with = "path_bytes_opt")]
    pub(crate) open_as: Option<PathBuf>,
    /// `interactive`: the coordinator asked, and the answer was yes (else an existing
    /// destination is handed back to be asked about: [`HandBackReason::Ask`]).
    #[serde(default)]
    pub(crate) confirmed: bool,
    /// Copied by the scan that listed it (`scan::copy_here`): a file of this many bytes or
    /// more is handed back uncopied ([`HandBackReason::Sized`]), so that a long copy on the
    /// scan's worker does not hold back the rest of the listing from the other workers.
    #[serde(default)]
    pub(crate) hand_back_from: Option<u64>,
}

/// `Option<PathBuf>` as raw bytes.
pub(crate) mod path_bytes_opt {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::PathBuf;

    pub(crate) fn serialize<S: serde::Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&p.as_ref().map(|p| serde_bytes::ByteBuf::from(p.as_os_str().as_bytes())), s)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let bytes: Option<serde_bytes::ByteBuf> = serde::Deserialize::deserialize(d)?;
        Ok(bytes.map(|b| PathBuf::from(std::ffi::OsString::from_vec(b.into_vec()))))
    }
}

/// The user and group that files this process creates belong to (read once per task).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    uid: u32,
    gid: u32,
}

impl Owner {
    pub(crate) fn current() -> Self {
        Owner { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() }
    }
}

/// What became of a [`FileJob`] (or of a split file's last step).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum FileOutcome {
    /// Copied, with this many bytes; and what became of the destination it replaced.
    Copied(u64, Option<Displaced>),
    /// Left alone (`no_clobber`, or `update` with a destination at least as new); the
    /// source's size, for progress.
    Unchanged(u64),
    /// Failed; nothing was left under the destination's name.
    Failed(Failure),
    /// Not copied: the coordinator has to decide (nothing was written).
    HandedBack(HandBackReason),
}

/// Why a file went back to the coordinator uncopied.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) enum HandBackReason {
    /// The task had copied its share of bytes before it came to this file.
    NotRun,
    /// The file has other names (hard links), one of which may be copied already.
    HardLinked { dev: u64, ino: u64, len: u64 },
    /// The file is large enough to be split.
    Large { len: u64 },
    /// The file is larger than its job's [`FileJob::hand_back_from`]: to be batched as usual.
    Sized { len: u64 },
    /// `interactive`: the destination exists (mode, whether writable) and may be replaced
    /// only if the coordinator's observer says yes.
    Ask { len: u64, mode: u32, writable: bool },
}

impl FileOutcome {
    /// After [`seal`]: copied, or left alone because `no_clobber` found the name taken.
    pub(super) fn sealed(sealed: bool, len: u64, displaced: Option<Displaced>) -> Self {
        if sealed { FileOutcome::Copied(len, displaced) } else { FileOutcome::Unchanged(len) }
    }
}

/// Copies one regular file whole, unnamed or under a temporary name until complete, or hands
/// it back (see [`FileJob`]); and, if its contents were copied (or a clone was tried), how.
pub(crate) fn copy_file(
    job: &FileJob,
    o: &CopyOptions,
    owner: Owner,
    dirs: &mut Dirs,
) -> (FileOutcome, Option<CopyDebug>) {
    let mut how = None;
    let outcome = copy_whole(job, o, owner, dirs, &mut how).unwrap_or_else(FileOutcome::Failed);
    (outcome, how)
}

fn copy_whole(
    job: &FileJob,
    o: &CopyOptions,
    owner: Owner,
    dirs: &mut Dirs,
    how: &mut Option<CopyDebug>,
) -> Result<FileOutcome, Failure> {
    if o.hard_link || o.symbolic_link {
        return link_instead(job, o, dirs);
    }
    if job.read_special && job.check_existing && (o.no_clobber || o.update) && kept_unopened(job, o) {
        // Decided before the source is opened: opening a FIFO waits for a writer.
        return Ok(FileOutcome::Unchanged(0));
    }
    let (src, meta) = match &job.open_as {
        Some(path) => {
            open_source(path, job.follow, job.read_special).map_err(|f| Failure { path: job.source.clone(), ..f })?
        }
        None => open_source_in(dirs, &job.source, job.follow, job.read_special)?,
    };
    if job.hand_back_links && o.preserve_links && meta.nlink() > 1 {
        return Ok(FileOutcome::HandedBack(HandBackReason::HardLinked {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
        }));
    }
    if job.hand_back_large && meta.len() >= SPLIT_AT {
        return Ok(FileOutcome::HandedBack(HandBackReason::Large { len: meta.len() }));
    }
    if job.hand_back_from.is_some_and(|from| meta.len() >= from) {
        return Ok(FileOutcome::HandedBack(HandBackReason::Sized { len: meta.len() }));
    }
    let existing = if job.check_existing { existing_destination(job, &meta, o, dirs)? } else { Existing::Absent(None) };
    let mut displaced = None;
    let (staged, dst_dev, dst_regular) = match existing {
        Existing::Keep => return Ok(FileOutcome::Unchanged(meta.len())),
        Existing::Ask { mode, writable } => {
            return Ok(FileOutcome::HandedBack(HandBackReason::Ask { len: meta.len(), mode, writable }));
        }
        Existing::Open { file, dev, regular } => (Staged { file, name: Naming::Existing }, dev, regular),
        Existing::Absent(moved) => {
            displaced = moved;
            let mode = o.creation_bits(creation_mode(&meta), false);
            let staged = if job.in_staging {
                Staged::in_place(dirs, &job.destination, mode)
            } else {
                Staged::create(dirs, &job.destination, job.dst_dev, mode)
            };
            (staged.map_err(fail(&job.destination, "create"))?, job.dst_dev, true)
        }
    };
    let len = if o.attributes_only {
        0
    } else {
        copy_contents(job, o, &src, &meta, &staged.file, dst_dev, dst_regular, how)?
    };
    let created = (owner.uid, job.dst_group.unwrap_or(owner.gid));
    let sealed = seal(staged, dirs, &src, &meta, &job.destination, Some(created), o)?;
    Ok(FileOutcome::sealed(sealed, len, displaced))
}

/// `-n`, or `-u` with a destination at least as new: whether a FIFO or device source would be
/// left alone anyway (cp decides so without opening it).
fn kept_unopened(job: &FileJob, o: &CopyOptions) -> bool {
    let path = job.open_as.as_ref().unwrap_or(&job.source);
    let source = if job.follow { fs::metadata(path) } else { fs::symlink_metadata(path) };
    let (Ok(source), Ok(dest)) = (source, fs::metadata(&job.destination)) else { return false };
    !source.is_file()
        && (o.no_clobber || (o.update && (dest.mtime(), dest.mtime_nsec()) >= (source.mtime(), source.mtime_nsec())))
}

/// Moves the source's bytes into `out` (empty: new or truncated), until the source's end of
/// file whatever `stat` said of its size; returns how many, and sets `how` to how (also when a
/// `--reflink=always` clone failed, as cp reports it).
#[allow(clippy::too_many_arguments)]
fn copy_contents(
    job: &FileJob,
    o: &CopyOptions,
    src: &File,
    meta: &fs::Metadata,
    out: &File,
    dst_dev: u64,
    dst_regular: bool,
    how: &mut Option<CopyDebug>,
) -> Result<u64, Failure> {
    let len = meta.len();
    let regular = meta.is_file() && dst_regular;
    // As cp: a reflink is tried first, for every file (an empty one too), whenever asked for.
    if o.reflink != Reflink::Never {
        if regular && data::reflink(src, meta.dev(), out, dst_dev) {
            *how = Some(CopyDebug::cloned());
            return Ok(len);
        }
        if o.reflink == Reflink::Always {
            *how = Some(CopyDebug::clone_failed());
            return Err(clone_failure(job, meta.dev() == dst_dev, regular));
        }
    }
    if !regular || len == 0 {
        // A FIFO, a device, a /proc or /sys file (whose size says nothing), or a FIFO or
        // device destination: read and write in turn until the end (blocks of zeros left as
        // holes in a regular file with --sparse=always, as cp leaves them).
        let holes = match data::Holes::of(o.sparse, meta, out).map_err(fail(&job.destination, "write"))? {
            data::Holes::Zeros(block) if dst_regular => Some(block),
            _ => None,
        };
        let copied = data::stream(src, out, holes).map_err(|e| io_failure(job, e))?;
        if holes.is_some() {
            out.set_len(copied).map_err(fail(&job.destination, "write"))?;
        }
        *how = Some(CopyDebug::streamed(o.reflink, regular, holes.is_some()));
        return Ok(copied);
    }
    let holes = data::Holes::of(o.sparse, meta, out).map_err(fail(&job.destination, "write"))?;
    let preallocated = !holes.any()
        && len >= data::PREALLOCATE_FROM
        && data::preallocate(out, dst_dev, len).map_err(fail(&job.destination, "write"))?;
    let copied = data::copy_all(src, out, len, holes).map_err(|e| io_failure(job, e))?;
    if holes.any() || (preallocated && copied < len) {
        // A hole at the end has no data extent to copy, and a file that shrank while being
        // copied must not keep preallocated zeros: the length is set to what was read.
        out.set_len(copied).map_err(fail(&job.destination, "write"))?;
    }
    let same_fs = meta.dev() == dst_dev;
    *how = Some(CopyDebug::moved(o.reflink, holes.any(), data::may_be_sparse(meta), same_fs, copied));
    Ok(copied)
}

/// Whether `path` names an entry of the current directory, as cp decides it for a relative
/// `-s`: its directory is `.`, or is the current directory by device and inode (`./x`,
/// `../here/x`).
fn in_current_directory(path: &Path) -> bool {
    let dir = super::dirs::parent_of(path);
    let key = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    dir == Path::new(".") || key(Path::new(".")).is_some_and(|here| key(dir) == Some(here))
}

/// `-s` with a relative source, refused unless the link is made in the current directory (it
/// would point elsewhere), as cp refuses it.
pub(crate) fn refused_relative_symlink(source: &Path, dest: &Path, o: &CopyOptions) -> bool {
    o.symbolic_link && source.is_relative() && !in_current_directory(dest)
}

/// `--reflink=always` where no clone can be made, worded as cp: `failed to clone 'D' from 'S'`
/// with the kernel's reason (`FICLONE` refuses another file system first, then anything but
/// two regular files, then a file system without reflinks).
pub(super) fn clone_failure(job: &FileJob, same_fs: bool, regular: bool) -> Failure {
    use nix::errno::Errno;
    let errno = match (same_fs, regular) {
        (false, _) => Errno::EXDEV,
        (true, false) => Errno::EINVAL,
        (true, true) => Errno::EOPNOTSUPP,
    };
    fail_with(&job.destination, "clone", &job.source)(io::Error::from_raw_os_error(errno as i32))
}

/// A failure while moving bytes, blamed on the side that `cp` would name: the destination
/// when it is full (or too big for it), else the source.
fn io_failure(job: &FileJob, error: io::Error) -> Failure {
    use nix::errno::Errno;
    let writing = matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG | Errno::EROFS | Errno::EPIPE)
    );
    if writing {
        Failure { path: job.destination.clone(), action: "write", error }
    } else {
        Failure { path: job.source.clone(), action: "read", error }
    }
}

/// `-l` / `-s`: a hard link to the source, or a symlink to it, instead of a copy. An existing
/// destination is replaced only once the link exists (made under a temporary name, then renamed
/// over it), and a backup is put back if the link cannot be made, as cp does: a link that
/// fails never costs the destination.
fn link_instead(job: &FileJob, o: &CopyOptions, dirs: &mut Dirs) -> Result<FileOutcome, Failure> {
    let (dest, source) = (&job.destination, &job.source);
    let _ = dirs;
    if refused_relative_symlink(source, dest, o) {
        return Err(Failure { path: dest.clone(), action: "relative symlink", error: io::Error::other("") });
    }
    let mut displaced = None;
    let mut backup = None;
    let mut replace = false;
    if job.check_existing
        && let Ok(existing) = fs::symlink_metadata(dest)
    {
        let key = |m: &fs::Metadata| (m.dev(), m.ino());
        let src = if job.follow { fs::metadata(source) } else { fs::symlink_metadata(source) };
        if o.hard_link && src.as_ref().is_ok_and(|src| key(src) == key(&existing)) {
            // Already a name of what would be linked: nothing to do, as cp.
            return Ok(FileOutcome::Copied(0, None));
        }
        // -u looks at the destination itself (a link replaces it, never writes through it).
        let newer = o.update && src.as_ref().is_ok_and(|src| super::special::not_older(&existing, src));
        if o.no_clobber || newer {
            return Ok(FileOutcome::Unchanged(0));
        }
        // cp removes the destination first for a source it does not follow that is not a
        // regular file (a symlink replaces a symlink), and, with --preserve=links, for a
        // destination with other names.
        let unlink_first = !existing.is_dir()
            && !o.attributes_only
            && ((o.preserve_links && existing.nlink() > 1) || (!job.follow && src.is_ok_and(|s| !s.is_file())));
        if let Some(control) = &o.backup {
            let to = make_backup(dest, control).map_err(fail(dest, "backup"))?;
            backup = Some(to.clone());
            displaced = Some(Displaced::BackedUp(to));
        } else if o.force || o.remove_destination || unlink_first {
            replace = true;
            // cp -v says so for --remove-destination and its own unlinking (-f replaces the
            // link silently).
            displaced = (o.remove_destination || unlink_first).then_some(Displaced::Removed);
        }
    }
    let at = if replace { crate::publish::temp_path(dest) } else { dest.clone() };
    let made = if o.symbolic_link {
        std::os::unix::fs::symlink(source, &at).map_err(fail_with(dest, "create symlink", source))
    } else {
        let flags = if job.follow { nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW } else { nix::fcntl::AtFlags::empty() };
        nix::unistd::linkat(nix::fcntl::AT_FDCWD, source, nix::fcntl::AT_FDCWD, &at, flags)
            .map_err(|e| link_failed(dest, source)(e.into()))
    };
    if let Err(failure) = made {
        if let Some(backup) = backup {
            // As cp: the destination comes back from its backup.
            let _ = fs::rename(backup, dest);
        }
        return Err(failure);
    }
    if replace && let Err(e) = fs::rename(&at, dest) {
        let _ = fs::remove_file(&at);
        return Err(fail(dest, "replace")(e));
    }
    Ok(FileOutcome::Copied(0, displaced))
}

/// What is at a destination that may exist (its directory existed before the run).
pub(super) enum Existing {
    /// Nothing (or nothing any more: removed or backed up, as it says): make a new file.
    Absent(Option<Displaced>),
    /// Leave it (`-n`, `-u`).
    Keep,
    /// `interactive` and not yet confirmed: the coordinator must ask first.
    Ask { mode: u32, writable: bool },
    /// Opened for writing and truncated, as `cp` writes into an existing file (through a
    /// symlink to it); `dev` is the file's device, `regular` whether it is a regular file
    /// (else a FIFO or device, written to in order).
    Open { file: File, dev: u64, regular: bool },
}

/// Looks at an existing destination as `cp` does: a directory is refused, a dangling symlink
/// is refused (unless removed or backed up), the same file as the source is refused; `-n` and
/// `-u` leave it; `--backup` and `--remove-destination` move it out of the way; otherwise it is
/// opened for writing and truncated (`-f`: removed if it cannot be opened). One `fstatat` when
/// nothing is there.
pub(super) fn existing_destination(
    job: &FileJob,
    source: &fs::Metadata,
    o: &CopyOptions,
    dirs: &mut Dirs,
) -> Result<Existing, Failure> {
    use nix::errno::Errno;
    use nix::fcntl::AtFlags;
    use nix::sys::stat::{SFlag, fstatat};
    let dest = &job.destination;
    let Some(name) = dest.file_name() else { return Ok(Existing::Absent(None)) };
    let dir = dst_dir_of(&mut dirs.dst, dest).map_err(fail(dest, "stat"))?;
    let kind = |st: &nix::sys::stat::FileStat| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let here = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(Existing::Absent(None)),
        Err(e) => return Err(fail(dest, "stat")(e.into())),
    };
    let followed = if kind(&here) == SFlag::S_IFLNK {
        match fstatat(dir, name, AtFlags::empty()) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            // A symlink loop is no file to write through: cp cannot stat it, unless it is to
            // be removed (-f, which removes what cannot be opened) or moved away.
            Err(Errno::ELOOP) if o.force || o.remove_destination || o.backup.is_some() => Some(here),
            Err(e) => return Err(fail(dest, "stat")(e.into())),
        }
    } else {
        Some(here)
    };
    // cp looks at the destination through a symlink unless it will move it away: a dangling
    // one is then no file, so -n, -u and -i do not keep it, and writing through it is refused.
    let moved_away = o.remove_destination || o.backup.is_some();
    let dangling = followed.is_none() && !moved_away;
    if o.no_clobber && !dangling {
        return Ok(Existing::Keep);
    }
    if o.update && !dangling {
        let st = followed.as_ref().unwrap_or(&here);
        let dest_time = (st.st_mtime, st.st_mtime_nsec);
        if dest_time >= (source.mtime(), source.mtime_nsec()) {
            return Ok(Existing::Keep);
        }
    }
    // A directory is refused after -n and -u have had their say (they keep it silently, as
    // cp), and after -i has asked below: "n" leaves it (status 0), "y" meets the refusal.
    let asking = o.interactive && !job.confirmed && !dangling;
    if followed.as_ref().is_some_and(|st| kind(st) == SFlag::S_IFDIR) && !asking {
        return Err(Failure { path: dest.clone(), action: "overwrite directory", error: io::Error::other("") });
    }
    // cp's same-file rule: another name of the source may be moved away first.
    if let Some(st) = &followed
        && (st.st_dev, st.st_ino) == (source.dev(), source.ino())
        && !moved_away
    {
        let error = io::Error::other(format!("'{}'", job.source.display()));
        return Err(Failure { path: dest.clone(), action: "same file", error });
    }
    if asking {
        // As cp: the destination as it will be replaced (a symlink itself if it is moved
        // away), writable if root or if access(2) says so.
        let st = if moved_away { &here } else { followed.as_ref().unwrap_or(&here) };
        let writable = kind(st) == SFlag::S_IFLNK
            || nix::unistd::geteuid().is_root()
            || nix::unistd::faccessat(dir, name, nix::unistd::AccessFlags::W_OK, AtFlags::AT_EACCESS).is_ok();
        return Ok(Existing::Ask { mode: st.st_mode, writable });
    }
    if let Some(backup) = &o.backup {
        let to = make_backup(dest, backup).map_err(fail(dest, "backup"))?;
        return Ok(Existing::Absent(Some(Displaced::BackedUp(to))));
    }
    let remove = |dirs: &mut Dirs, displaced| -> Result<Existing, Failure> {
        let dir = dst_dir_of(&mut dirs.dst, dest).map_err(fail(dest, "replace"))?;
        nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| fail(dest, "replace")(e.into()))?;
        Ok(Existing::Absent(Some(displaced)))
    };
    // cp removes the file first for --remove-destination, and with -a (links kept) when the
    // file has other names, which then keep the old contents.
    let other_names = o.preserve_links && !o.attributes_only && followed.as_ref().is_some_and(|st| st.st_nlink > 1);
    if o.remove_destination || other_names {
        return remove(dirs, Displaced::Removed);
    }
    let Some(target) = followed else {
        if o.write_through_dangling {
            // POSIXLY_CORRECT: the file the symlink names is created through it.
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC;
            let mode = Mode::from_bits_truncate(o.creation_bits(creation_mode(source), false));
            let fd = nix::fcntl::openat(dir, name, flags, mode).map_err(|e| fail(dest, "create")(e.into()))?;
            let file = File::from(fd);
            let dev = file.metadata().map_err(fail(dest, "stat"))?.dev();
            return Ok(Existing::Open { file, dev, regular: true });
        }
        return Err(Failure { path: dest.clone(), action: "dangling symlink", error: io::Error::other("") });
    };
    let regular = kind(&target) == SFlag::S_IFREG;
    // --verify reads the copy back.
    let mut flags = if o.verify && regular { OFlag::O_RDWR } else { OFlag::O_WRONLY } | OFlag::O_CLOEXEC;
    if !o.attributes_only {
        flags |= OFlag::O_TRUNC;
    }
    match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Existing::Open { file: File::from(fd), dev: target.st_dev, regular }),
        Err(_) if o.force => remove(dirs, Displaced::Replaced),
        Err(e) => Err(fail(dest, "create")(e.into())),
    }
}

/// Moves an existing destination to its backup name (`--backup`).
pub(crate) fn make_backup(destination: &Path, backup: &Backup) -> io::Result<PathBuf> {
    let to = backup_name(destination, backup);
    fs::rename(destination, &to)?;
    Ok(to)
}

impl Backup {
    /// The name this backup gives an existing `destination` now: `name` + the suffix, or
    /// `name.~N~` one past the highest numbered backup there (which it reads the directory
    /// for).
    ///
    /// # Examples
    /// ```
    /// use stealcp::{Backup, BackupControl};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let d = dir.path().join("d");
    /// std::fs::write(dir.path().join("d.~1~"), "older").unwrap();
    /// let numbered = Backup { control: BackupControl::Numbered, suffix: "~".into() };
    /// assert_eq!(numbered.name_for(&d), dir.path().join("d.~2~"));
    /// let simple = Backup { control: BackupControl::Simple, suffix: ".old".into() };
    /// assert_eq!(simple.name_for(&d), dir.path().join("d.old"));
    /// ```
    pub fn name_for(&self, destination: &Path) -> PathBuf {
        backup_name(destination, self)
    }
}

/// The name `--backup` gives an existing `destination`: `name~` (the suffix) or `name.~N~`.
pub(crate) fn backup_name(destination: &Path, backup: &Backup) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let name = destination.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
    let parent = match destination.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The highest N of the existing `name.~N~`.
    let numbered = || -> u64 {
        let Ok(entries) = fs::read_dir(parent) else { return 0 };
        let mut prefix = name.clone();
        prefix.extend_from_slice(b".~");
        entries
            .flatten()
            .filter_map(|e| {
                let n = e.file_name();
                let rest = n.as_bytes().strip_prefix(prefix.as_slice())?.strip_suffix(b"~")?.to_vec();
                std::str::from_utf8(&rest).ok()?.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(0)
    };
    let mut backup_name = name.clone();
    match backup.control {
        BackupControl::Simple => backup_name.extend_from_slice(backup.suffix.as_bytes()),
        BackupControl::Numbered => backup_name.extend_from_slice(format!(".~{}~", numbered() + 1).as_bytes()),
        BackupControl::Existing => match numbered() {
            0 => backup_name.extend_from_slice(backup.suffix.as_bytes()),
            n => backup_name.extend_from_slice(format!(".~{}~", n + 1).as_bytes()),
        },
    }
    destination.with_file_name(std::ffi::OsStr::from_bytes(&backup_name))
}

/// A path naming one of this process's descriptors (`/dev/stdin`, `/dev/fd/N`,
/// `/proc/self/fd/N`) as `/proc/<pid>/fd/N`, which names the same file from a worker process
/// too (where `/dev/stdin` would be the worker's own); `None` for other paths.
pub(crate) fn reachable_from_workers(path: &Path) -> Option<PathBuf> {
    let fd = match path.to_str() {
        Some("/dev/stdin") => Some("0"),
        Some("/dev/stdout") => Some("1"),
        Some("/dev/stderr") => Some("2"),
        Some(p) => p.strip_prefix("/dev/fd/").or_else(|| p.strip_prefix("/proc/self/fd/")),
        None => None,
    };
    let fd = fd.filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?;
    Some(PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id())))
}

/// [`open_source`], resolving the name from the source's open directory.
pub(super) fn open_source_in(
    dirs: &mut Dirs,
    path: &Path,
    follow: bool,
    read_special: bool,
) -> Result<(File, fs::Metadata), Failure> {
    let Some(name) = name_of(path) else { return open_source(path, follow, read_special) };
    let dir = dir_of(&mut dirs.src, path).map_err(fail(path, "open"))?;
    let mut flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = nix::fcntl::openat(dir, name, flags, Mode::empty()).map_err(|e| fail(path, "open")(e.into()))?;
    checked_source(File::from(fd), path, read_special)
}

/// Opens a source file for reading; refuses anything that is no longer a regular file (it was
/// replaced since the walk) and, unless following, a symlink.
pub(super) fn open_source(path: &Path, follow: bool, read_special: bool) -> Result<(File, fs::Metadata), Failure> {
    let mut options = OpenOptions::new();
    options.read(true);
    if !follow {
        options.custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
    }
    checked_source(options.open(path).map_err(fail(path, "open"))?, path, read_special)
}

pub(super) fn checked_source(src: File, path: &Path, read_special: bool) -> Result<(File, fs::Metadata), Failure> {
    let meta = src.metadata().map_err(fail(path, "stat"))?;
    let readable_special = read_special && !meta.is_dir();
    if !meta.is_file() && !readable_special {
        let error = io::Error::other("no longer a regular file");
        return Err(Failure { path: path.to_path_buf(), action: "open", error });
    }
    Ok((src, meta))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;
    use crate::error::Failure;

    #[test]
    fn jobs_and_failures_cross_processes_intact() {
        let odd = PathBuf::from(OsStr::from_bytes(b"/tmp/caf\xe9/x"));
        let job = FileJob {
            source: odd.clone(),
            destination: "/d".into(),
            len: Some(7),
            hand_back_links: true,
            hand_back_large: false,
            follow: false,
            check_existing: true,
            dst_dev: 3,
            dst_group: Some(5),
            in_staging: true,
            read_special: false,
            open_as: None,
            confirmed: false,
            hand_back_from: None,
        };
        let back: FileJob = postcard::from_bytes(&postcard::to_stdvec(&job).unwrap()).unwrap();
        assert_eq!((back.source, back.len, back.dst_dev, back.in_staging), (odd.clone(), Some(7), 3, true));

        let failure = Failure { path: odd.clone(), action: "open", error: io::Error::from_raw_os_error(13) };
        let outcome = FileOutcome::Failed(failure);
        let back: FileOutcome = postcard::from_bytes(&postcard::to_stdvec(&outcome).unwrap()).unwrap();
        let FileOutcome::Failed(f) = back else { panic!("not a failure: {back:?}") };
        assert_eq!((f.path, f.action), (odd, "open"));
        assert_eq!(f.error.kind(), io::ErrorKind::PermissionDenied);

        let other = Failure { path: "/p".into(), action: "verify", error: io::Error::other("contents differ") };
        let back: Failure = postcard::from_bytes(&postcard::to_stdvec(&other).unwrap()).unwrap();
        assert_eq!((back.action, back.error.to_string()), ("verify", "contents differ".to_owned()));
    }
}
