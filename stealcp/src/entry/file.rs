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

use super::dirs::{Dirs, dir_of};
use super::staged::{Staged, seal};
use crate::attributes::creation_mode;
use crate::data;
use crate::error::{Failure, fail};
use crate::options::CopyOptions;
use crate::path_bytes;
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
    /// Copied, with this many bytes.
    Copied(u64),
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
}

impl FileOutcome {
    /// After [`seal`]: copied, or left alone because `no_clobber` found the name taken.
    pub(super) fn sealed(sealed: bool, len: u64) -> Self {
        if sealed { FileOutcome::Copied(len) } else { FileOutcome::Unchanged(len) }
    }
}

/// Copies one regular file whole, unnamed or under a temporary name until complete, or hands
/// it back (see [`FileJob`]).
pub(crate) fn copy_file(job: &FileJob, o: &CopyOptions, owner: Owner, dirs: &mut Dirs) -> FileOutcome {
    copy_whole(job, o, owner, dirs).unwrap_or_else(FileOutcome::Failed)
}

fn copy_whole(job: &FileJob, o: &CopyOptions, owner: Owner, dirs: &mut Dirs) -> Result<FileOutcome, Failure> {
    let (src, meta) = open_source_in(dirs, &job.source, job.follow)?;
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
    if job.check_existing && keep_existing(&job.destination, &meta, o)? {
        return Ok(FileOutcome::Unchanged(meta.len()));
    }
    let mode = creation_mode(&meta);
    let staged = if job.in_staging {
        Staged::in_place(dirs, &job.destination, mode)
    } else {
        Staged::create(dirs, &job.destination, job.dst_dev, mode)
    };
    let staged = staged.map_err(fail(&job.destination, "create"))?;
    let len = meta.len();
    if !data::reflink(&src, meta.dev(), &staged.file, job.dst_dev) && len > 0 {
        let sparse = data::may_be_sparse(&meta);
        if !sparse && len >= data::PREALLOCATE_FROM {
            data::preallocate(&staged.file, len).map_err(fail(&job.destination, "copy"))?;
        }
        data::copy_range(&src, &staged.file, 0, len, sparse).map_err(fail(&job.source, "copy"))?;
        if sparse {
            // A hole at the end has no data extent to copy; the length brings it back.
            staged.file.set_len(len).map_err(fail(&job.destination, "copy"))?;
        }
    }
    let created = (owner.uid, job.dst_group.unwrap_or(owner.gid));
    let sealed = seal(staged, dirs, &src, &meta, &job.destination, Some(created), o)?;
    Ok(FileOutcome::sealed(sealed, len))
}

/// [`open_source`], resolving the name from the source's open directory.
pub(super) fn open_source_in(dirs: &mut Dirs, path: &Path, follow: bool) -> Result<(File, fs::Metadata), Failure> {
    let Some(name) = path.file_name() else { return open_source(path, follow) };
    let dir = dir_of(&mut dirs.src, path).map_err(fail(path, "open"))?;
    let mut flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = nix::fcntl::openat(dir, name, flags, Mode::empty()).map_err(|e| fail(path, "open")(e.into()))?;
    checked_source(File::from(fd), path)
}

/// Opens a source file for reading; refuses anything that is no longer a regular file (it was
/// replaced since the walk) and, unless following, a symlink.
pub(super) fn open_source(path: &Path, follow: bool) -> Result<(File, fs::Metadata), Failure> {
    let mut options = OpenOptions::new();
    options.read(true);
    if !follow {
        options.custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
    }
    checked_source(options.open(path).map_err(fail(path, "open"))?, path)
}

pub(super) fn checked_source(src: File, path: &Path) -> Result<(File, fs::Metadata), Failure> {
    let meta = src.metadata().map_err(fail(path, "stat"))?;
    if !meta.is_file() {
        let error = io::Error::other("no longer a regular file");
        return Err(Failure { path: path.to_path_buf(), action: "open", error });
    }
    Ok((src, meta))
}

/// Whether an existing destination is to be left alone (`-n`, `-u`); an error if it is a
/// directory, which a file never replaces.
pub(super) fn keep_existing(destination: &Path, source: &fs::Metadata, o: &CopyOptions) -> Result<bool, Failure> {
    match fs::symlink_metadata(destination) {
        Ok(existing) if existing.is_dir() => {
            let error = io::Error::other("cannot overwrite a directory with a file");
            Err(Failure { path: destination.to_path_buf(), action: "create", error })
        }
        Ok(existing) => Ok(o.no_clobber || (o.update && existing.modified().ok() >= source.modified().ok())),
        Err(_) => Ok(false),
    }
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
