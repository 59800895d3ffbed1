//! Making one destination entry: a regular file (on a worker), a symlink, a hard link, and the
//! final touches on a directory.
//!
//! A regular file's final path never holds a partial copy. In a directory that already
//! existed, the file is written unnamed (`O_TMPFILE`) or under a temporary name and linked or
//! renamed into place once complete. In a directory this run makes, the whole directory is
//! built under a temporary name and renamed into place once complete (`run.rs`), so its files
//! are written under their own names at once. Temporary names start with [`TEMP_PREFIX`], so
//! leftovers of a killed run are easy to find.

use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use parking_lot::Mutex;

use super::run::SPLIT_AT;
use super::{CopyOptions, Failure, data};

/// The start of every temporary file or directory name this engine creates (followed by the
/// process id, a counter and the final name).
pub const TEMP_PREFIX: &str = ".pcp-tmp-";

/// The longest file name (in bytes) Linux file systems accept.
const NAME_MAX: usize = 255;

/// Paths as their raw bytes (Unix), so that any name survives the trip to a worker process.
pub(super) mod path_bytes {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(path.as_os_str().as_bytes())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        Ok(PathBuf::from(OsString::from_vec(bytes.into_vec())))
    }
}

/// Every `action` a [`Failure`] can name, so one that crossed from a worker process maps back
/// to the same `&'static str`.
const ACTIONS: &[&str] = &[
    "open",
    "stat",
    "create",
    "copy",
    "preserve ownership",
    "preserve mode",
    "preserve timestamps",
    "verify",
    "rename into place",
    "read symlink",
    "create symlink",
    "replace",
    "create hard link",
    "create directory",
    "set mode",
    "create special file",
    "read directory",
    "copy job",
];

/// A [`Failure`] as it travels between processes.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireFailure {
    #[serde(with = "path_bytes")]
    path: PathBuf,
    action: String,
    os_error: Option<i32>,
    message: String,
}

impl serde::Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireFailure {
            path: self.path.clone(),
            action: self.action.to_owned(),
            os_error: self.error.raw_os_error(),
            message: self.error.to_string(),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Failure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireFailure::deserialize(d)?;
        let action = ACTIONS.iter().find(|a| **a == w.action).copied().unwrap_or("copy");
        // An OS error number rebuilds the same error (and message); anything else keeps its text.
        let error = w.os_error.map_or_else(|| io::Error::other(w.message), io::Error::from_raw_os_error);
        Ok(Failure { path: w.path, action, error })
    }
}

pub(super) fn fail<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> Failure + 'a {
    move |error| Failure { path: path.to_path_buf(), action, error }
}

/// Removes a temporary file unless disarmed: a failed copy leaves nothing behind.
struct TempFile<'a> {
    path: Option<&'a Path>,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.path {
            let _ = fs::remove_file(path);
        }
    }
}

/// A temporary name for `destination`, in the same directory.
pub(super) fn temp_path(destination: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = format!("{TEMP_PREFIX}{}-{n}-", std::process::id()).into_bytes();
    if let Some(file_name) = destination.file_name() {
        // The final name is only there to help a human; keep the whole temporary name within
        // the 255 bytes a file name may have, or a long final name could not be copied at all.
        let room = NAME_MAX.saturating_sub(name.len());
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(file_name);
        name.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
    let name: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(&name);
    destination.with_file_name(name)
}

/// One regular file to copy whole, on a worker (in a thread or a worker process: it serializes,
/// paths as raw bytes so that names that are not UTF-8 travel intact).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct FileJob {
    #[serde(with = "path_bytes")]
    pub(super) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(super) destination: PathBuf,
    /// The size, if known (progress totals, and whether to split the file): as the walk saw
    /// it, or as the worker found it when it handed the file back.
    pub(super) len: Option<u64>,
    /// Nobody checked yet whether the file has other names: if it does (and links are kept),
    /// hand it back ([`Back::HardLinked`]) instead of copying it, so that it is copied once.
    pub(super) hand_back_links: bool,
    /// Nobody checked the size yet: a file of [`SPLIT_AT`] bytes or more is handed back
    /// ([`Back::Large`]) to be copied in ranges by several workers.
    pub(super) hand_back_large: bool,
    /// Follow the source if it is a symlink (`-L`, or a symlink named on the command line).
    pub(super) follow: bool,
    /// The destination directory existed before this run, so the name may already be taken;
    /// in a directory this run created, it cannot be, and the check is skipped.
    pub(super) check_existing: bool,
    /// The device of the destination directory: a reflink is only tried on the same device.
    pub(super) dst_dev: u64,
    /// The destination directory's group if it is set-group-ID (new files get that group).
    pub(super) dst_group: Option<u32>,
    /// The destination directory is inside one this run builds under a temporary name: the
    /// file is written under its own name at once (nobody sees it before it is complete).
    pub(super) in_staging: bool,
}

/// The user and group that files this process creates belong to (read once per task).
#[derive(Debug, Clone, Copy)]
pub(super) struct Owner {
    uid: u32,
    gid: u32,
}

impl Owner {
    pub(super) fn current() -> Self {
        Owner { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() }
    }
}

/// What became of a [`FileJob`] (or of a split file's last step).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum FileOutcome {
    /// Copied, with this many bytes.
    Copied(u64),
    /// Left alone (`no_clobber`, or `update` with a destination at least as new); the
    /// source's size, for progress.
    Unchanged(u64),
    /// Failed; nothing was left under the destination's name.
    Failed(Failure),
    /// Not copied: the coordinator has to decide (nothing was written).
    Back(Back),
}

/// Why a file went back to the coordinator uncopied.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(super) enum Back {
    /// The task had copied its share of bytes before it came to this file.
    NotRun,
    /// The file has other names (hard links), one of which may be copied already.
    HardLinked { dev: u64, ino: u64, len: u64 },
    /// The file is large enough to be split.
    Large { len: u64 },
}

impl FileOutcome {
    /// After [`seal`]: copied, or left alone because `no_clobber` found the name taken.
    fn sealed(sealed: bool, len: u64) -> Self {
        if sealed { FileOutcome::Copied(len) } else { FileOutcome::Unchanged(len) }
    }
}

/// Copies one regular file whole, unnamed or under a temporary name until complete, or hands
/// it back (see [`FileJob`]).
pub(super) fn copy_file(job: &FileJob, o: &CopyOptions, owner: Owner, dirs: &mut Dirs) -> FileOutcome {
    copy_whole(job, o, owner, dirs).unwrap_or_else(FileOutcome::Failed)
}

fn copy_whole(job: &FileJob, o: &CopyOptions, owner: Owner, dirs: &mut Dirs) -> Result<FileOutcome, Failure> {
    let (src, meta) = open_source_in(dirs, &job.source, job.follow)?;
    if job.hand_back_links && o.preserve_links && meta.nlink() > 1 {
        return Ok(FileOutcome::Back(Back::HardLinked { dev: meta.dev(), ino: meta.ino(), len: meta.len() }));
    }
    if job.hand_back_large && meta.len() >= SPLIT_AT {
        return Ok(FileOutcome::Back(Back::Large { len: meta.len() }));
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

/// A large file, once its temporary copy exists: either already complete (reflinked) or
/// sized and waiting for its ranges.
#[derive(Debug)]
pub(super) enum Prepared {
    /// `no_clobber` / `update` left the destination alone.
    Unchanged,
    /// The temporary file shares the source's extents; only [`finish_split`] is left.
    Cloned(PathBuf),
    /// The temporary file has the source's length (all hole); copy `len` bytes into it.
    Ranges { temp: PathBuf, len: u64 },
}

/// First step of a file copied in ranges by several workers: checks the destination and makes
/// the temporary file. Cheap (no data moves), so the caller runs it inline.
pub(super) fn prepare_split(job: &FileJob, o: &CopyOptions) -> Result<Prepared, Failure> {
    let (src, meta) = open_source(&job.source, job.follow)?;
    if job.check_existing && keep_existing(&job.destination, &meta, o)? {
        return Ok(Prepared::Unchanged);
    }
    let temp = temp_path(&job.destination);
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(creation_mode(&meta))
        .open(&temp)
        .map_err(fail(&job.destination, "create"))?;
    let mut guard = TempFile { path: Some(&temp) };
    let prepared = if data::reflink(&src, meta.dev(), &out, job.dst_dev) {
        Prepared::Cloned(temp.clone())
    } else {
        let sparse = data::may_be_sparse(&meta);
        if sparse || !data::preallocate(&out, meta.len()).map_err(fail(&job.destination, "create"))? {
            out.set_len(meta.len()).map_err(fail(&job.destination, "create"))?;
        }
        Prepared::Ranges { temp: temp.clone(), len: meta.len() }
    };
    guard.path = None;
    Ok(prepared)
}

/// One range of a split file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct RangeJob {
    #[serde(with = "path_bytes")]
    pub(super) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(super) temp: PathBuf,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) follow: bool,
}

/// Copies one range of a split file into its temporary file, at the same offsets.
pub(super) fn copy_piece(job: &RangeJob) -> Result<u64, Failure> {
    let (src, meta) = open_source(&job.source, job.follow)?;
    let out = OpenOptions::new().write(true).open(&job.temp).map_err(fail(&job.temp, "open"))?;
    data::copy_range(&src, &out, job.start, job.end, data::may_be_sparse(&meta)).map_err(fail(&job.source, "copy"))?;
    Ok(job.end - job.start)
}

/// The last step of a split file, once every range is in: attributes, verify, rename.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct FinishJob {
    #[serde(with = "path_bytes")]
    pub(super) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(super) destination: PathBuf,
    #[serde(with = "path_bytes")]
    pub(super) temp: PathBuf,
    pub(super) follow: bool,
    /// Bytes the file has (reported when it is done).
    pub(super) len: u64,
}

/// Seals a split file: its temporary copy is complete (or failed, in which case the caller
/// removes it with [`discard`]).
pub(super) fn finish_split(job: &FinishJob, o: &CopyOptions) -> FileOutcome {
    let result = (|| {
        let file = OpenOptions::new().read(true).write(true).open(&job.temp);
        let staged = Staged { file: file.map_err(fail(&job.temp, "open"))?, name: Naming::Temp(job.temp.clone()) };
        let (src, meta) = open_source(&job.source, job.follow)?;
        let sealed = seal(staged, &mut Dirs::default(), &src, &meta, &job.destination, None, o)?;
        Ok(FileOutcome::sealed(sealed, job.len))
    })();
    result.unwrap_or_else(|failure| {
        discard(&job.temp);
        FileOutcome::Failed(failure)
    })
}

/// Removes the temporary file of a split copy that failed.
pub(super) fn discard(temp: &Path) {
    let _ = fs::remove_file(temp);
}

/// The directories of the files one task copies, kept open, so that each file's calls resolve
/// one name from an open directory instead of a whole path from the top (walking long paths
/// was about a tenth of the kernel's time per small file). Files of one batch mostly share
/// their directories.
#[derive(Debug, Default)]
pub(super) struct Dirs {
    src: Option<(PathBuf, OwnedFd)>,
    dst: Option<(PathBuf, OwnedFd)>,
}

/// The open directory holding `path` (opened `O_PATH`, only to resolve names from).
fn dir_of<'a>(slot: &'a mut Option<(PathBuf, OwnedFd)>, path: &Path) -> io::Result<BorrowedFd<'a>> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if slot.as_ref().is_none_or(|(open, _)| open != dir) {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        *slot = Some((dir.to_path_buf(), nix::fcntl::open(dir, flags, Mode::empty())?));
    }
    slot.as_ref().map(|(_, fd)| fd.as_fd()).ok_or_else(|| io::Error::other("no directory"))
}

/// [`open_source`], resolving the name from the source's open directory.
fn open_source_in(dirs: &mut Dirs, path: &Path, follow: bool) -> Result<(File, fs::Metadata), Failure> {
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
fn open_source(path: &Path, follow: bool) -> Result<(File, fs::Metadata), Failure> {
    let mut options = OpenOptions::new();
    options.read(true);
    if !follow {
        options.custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
    }
    checked_source(options.open(path).map_err(fail(path, "open"))?, path)
}

fn checked_source(src: File, path: &Path) -> Result<(File, fs::Metadata), Failure> {
    let meta = src.metadata().map_err(fail(path, "stat"))?;
    if !meta.is_file() {
        let error = io::Error::other("no longer a regular file");
        return Err(Failure { path: path.to_path_buf(), action: "open", error });
    }
    Ok((src, meta))
}

/// Whether an existing destination is to be left alone (`-n`, `-u`); an error if it is a
/// directory, which a file never replaces.
fn keep_existing(destination: &Path, source: &fs::Metadata, o: &CopyOptions) -> Result<bool, Failure> {
    match fs::symlink_metadata(destination) {
        Ok(existing) if existing.is_dir() => {
            let error = io::Error::other("cannot overwrite a directory with a file");
            Err(Failure { path: destination.to_path_buf(), action: "create", error })
        }
        Ok(existing) => Ok(o.no_clobber || (o.update && existing.modified().ok() >= source.modified().ok())),
        Err(_) => Ok(false),
    }
}

/// The mode a copy is created with. Without -p the kernel applies the umask to the source's
/// bits, as for `cp`; with -p the final bits are set by [`seal`] unless the umask lets these
/// through already.
fn creation_mode(source: &fs::Metadata) -> u32 {
    source.mode() & 0o777
}

/// The process's umask, read once (from /proc: asking the kernel for it means changing it,
/// which would race with other threads creating files).
fn umask() -> Option<u32> {
    static UMASK: OnceLock<Option<u32>> = OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

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
struct Staged {
    file: File,
    name: Naming,
}

#[derive(Debug)]
enum Naming {
    Unnamed,
    Temp(PathBuf),
    /// Under its final name in a staging directory; removed if dropped unpublished.
    InPlace(PathBuf),
    /// Published.
    Done,
}

impl Staged {
    fn create(dirs: &mut Dirs, destination: &Path, dst_dev: u64, mode: u32) -> io::Result<Staged> {
        if !NO_TMPFILE.lock().contains(&dst_dev) {
            let dir = dir_of(&mut dirs.dst, destination)?;
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
    fn in_place(dirs: &mut Dirs, destination: &Path, mode: u32) -> io::Result<Staged> {
        let Some(name) = destination.file_name() else { return Err(io::Error::from(io::ErrorKind::InvalidInput)) };
        let dir = dir_of(&mut dirs.dst, destination)?;
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(dir, name, flags, Mode::from_bits_truncate(mode))?;
        Ok(Staged { file: File::from(fd), name: Naming::InPlace(destination.to_path_buf()) })
    }

    /// Gives the complete copy its final name, replacing what is there unless `no_clobber`.
    /// Returns `false` if the name was taken (since the check) and left alone.
    fn publish(mut self, dirs: &mut Dirs, destination: &Path, no_clobber: bool) -> io::Result<bool> {
        match std::mem::replace(&mut self.name, Naming::Done) {
            Naming::Done | Naming::InPlace(_) => return Ok(true),
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
    let Some(name) = to.file_name() else { return Err(io::Error::from(io::ErrorKind::InvalidInput)) };
    let dir = dir_of(&mut dirs.dst, to)?;
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
fn seal(
    staged: Staged,
    dirs: &mut Dirs,
    src: &File,
    meta: &fs::Metadata,
    destination: &Path,
    created: Option<(u32, u32)>,
    o: &CopyOptions,
) -> Result<bool, Failure> {
    let out = &staged.file;
    let mode = meta.mode() & 0o7777;
    if o.preserve_ownership && created != Some((meta.uid(), meta.gid())) {
        // Ownership first: chown clears set-user-ID bits that chmod then restores.
        ignore_eperm(std::os::unix::fs::fchown(out, Some(meta.uid()), Some(meta.gid())))
            .map_err(fail(destination, "preserve ownership"))?;
    }
    // The file was created with the source's bits less the umask: only -p with bits the umask
    // took, or with set-id and sticky bits (which creation never sets), needs a chmod.
    let bits = umask().map(|u| mode & 0o777 & !u);
    if o.preserve_mode && bits != Some(mode) {
        out.set_permissions(Permissions::from_mode(mode)).map_err(fail(destination, "preserve mode"))?;
    }
    if o.preserve_timestamps {
        out.set_times(file_times(meta)).map_err(fail(destination, "preserve timestamps"))?;
    }
    if o.verify {
        verify(src, out).map_err(fail(destination, "verify"))?;
    }
    staged.publish(dirs, destination, o.no_clobber).map_err(fail(destination, "rename into place"))
}

fn file_times(meta: &fs::Metadata) -> FileTimes {
    let mut times = FileTimes::new();
    if let Ok(t) = meta.accessed() {
        times = times.set_accessed(t);
    }
    if let Ok(t) = meta.modified() {
        times = times.set_modified(t);
    }
    times
}

/// `cp` does not complain when an unprivileged user cannot give a file away.
fn ignore_eperm(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
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

/// Makes room for a new non-regular entry at `destination`: `Ok(false)` means leave the
/// existing one (`no_clobber`); a directory is never replaced.
fn clear_destination(destination: &Path, o: &CopyOptions, action: &'static str) -> Result<bool, Failure> {
    let Ok(existing) = fs::symlink_metadata(destination) else { return Ok(true) };
    if o.no_clobber {
        return Ok(false);
    }
    if existing.is_dir() {
        let error = io::Error::other("cannot overwrite a directory");
        return Err(Failure { path: destination.to_path_buf(), action, error });
    }
    fs::remove_file(destination).map_err(fail(destination, "replace"))?;
    Ok(true)
}

/// Sets ownership and times of an entry that is not followed (a symlink or special file).
fn preserve_unfollowed(destination: &Path, meta: &fs::Metadata, o: &CopyOptions) -> Result<(), Failure> {
    if o.preserve_ownership {
        ignore_eperm(std::os::unix::fs::lchown(destination, Some(meta.uid()), Some(meta.gid())))
            .map_err(fail(destination, "preserve ownership"))?;
    }
    if o.preserve_timestamps {
        let (atime, mtime) = filetimes(meta);
        filetime::set_symlink_file_times(destination, atime, mtime)
            .map_err(fail(destination, "preserve timestamps"))?;
    }
    Ok(())
}

/// Makes `destination` a symlink with the same target as `source` (whose `lstat` is `meta`).
/// Returns `Ok(false)` if an existing entry was left alone.
pub(super) fn make_symlink(
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
    preserve_unfollowed(destination, meta, o)?;
    Ok(true)
}

/// Recreates a FIFO, socket or device node, as `cp -R` does (devices need privilege; without
/// it the failure is reported like any other).
pub(super) fn make_special(
    destination: &Path,
    meta: &fs::Metadata,
    check_existing: bool,
    o: &CopyOptions,
) -> Result<bool, Failure> {
    use nix::sys::stat::{Mode, SFlag};
    if check_existing && !clear_destination(destination, o, "create special file")? {
        return Ok(false);
    }
    let perm = Mode::from_bits_truncate(meta.mode() & 0o7777);
    let kind = SFlag::from_bits_truncate(meta.mode() & SFlag::S_IFMT.bits());
    let made = if kind == SFlag::S_IFIFO {
        nix::unistd::mkfifo(destination, perm)
    } else {
        nix::sys::stat::mknod(destination, kind, perm, meta.rdev())
    };
    made.map_err(|e| fail(destination, "create special file")(e.into()))?;
    preserve_unfollowed(destination, meta, o)?;
    if o.preserve_mode {
        // mknod applied the umask; -p wants the source's bits.
        fs::set_permissions(destination, Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(fail(destination, "preserve mode"))?;
    }
    Ok(true)
}

fn filetimes(meta: &fs::Metadata) -> (filetime::FileTime, filetime::FileTime) {
    (filetime::FileTime::from_last_access_time(meta), filetime::FileTime::from_last_modification_time(meta))
}

/// Makes `destination` a hard link to `first`, the copy of the first path of the same inode.
pub(super) fn hard_link(first: &Path, destination: &Path, o: &CopyOptions) -> Result<(), Failure> {
    if fs::symlink_metadata(destination).is_ok() {
        if o.no_clobber {
            return Ok(());
        }
        fs::remove_file(destination).map_err(fail(destination, "replace"))?;
    }
    fs::hard_link(first, destination).map_err(fail(destination, "create hard link"))
}

/// What a copied directory keeps of its source: applied at the end, once everything inside is
/// in place (creating entries changes a directory's times).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(super) struct DirMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: (i64, u32),
    mtime: (i64, u32),
}

impl DirMeta {
    pub(super) fn new(meta: &fs::Metadata) -> Self {
        let (a, m) = filetimes(meta);
        DirMeta {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            atime: (a.unix_seconds(), a.nanoseconds()),
            mtime: (m.unix_seconds(), m.nanoseconds()),
        }
    }
}

/// Creates a destination directory, writable by us whatever the source's mode (the final mode
/// is set by [`finish_directory`]). An existing directory is reused: returns whether it existed.
pub(super) fn create_directory(destination: &Path, meta: &DirMeta) -> Result<bool, Failure> {
    match fs::DirBuilder::new().mode(meta.mode | 0o700).create(destination) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::metadata(destination) {
            Ok(m) if m.is_dir() => Ok(true),
            _ => {
                let error = io::Error::other("cannot overwrite a non-directory with a directory");
                Err(Failure { path: destination.to_path_buf(), action: "create directory", error })
            }
        },
        Err(e) => Err(fail(destination, "create directory")(e)),
    }
}

/// A copied directory to finish once everything inside is in place.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct DirFinish {
    #[serde(with = "path_bytes")]
    pub(super) path: PathBuf,
    pub(super) meta: DirMeta,
    /// It existed before this run.
    pub(super) existed: bool,
}

/// Sets a copied directory's ownership, mode and times, once everything inside is in place.
/// Without `preserve_mode`, a directory that `existed` before the run keeps its mode, as with
/// `cp -r`.
pub(super) fn finish_directory(job: &DirFinish, o: &CopyOptions) -> Result<(), Failure> {
    let (path, dir, existed) = (job.path.as_path(), &job.meta, job.existed);
    if o.preserve_ownership {
        ignore_eperm(std::os::unix::fs::chown(path, Some(dir.uid), Some(dir.gid)))
            .map_err(fail(path, "preserve ownership"))?;
    }
    if o.preserve_mode {
        fs::set_permissions(path, Permissions::from_mode(dir.mode)).map_err(fail(path, "set mode"))?;
    } else if !existed && dir.mode & 0o700 != 0o700 {
        // Take back the owner bits added so we could fill the directory.
        let current = fs::metadata(path).map_err(fail(path, "stat"))?.mode() & 0o7777;
        let mode = current & !(0o700 & !dir.mode);
        fs::set_permissions(path, Permissions::from_mode(mode)).map_err(fail(path, "set mode"))?;
    }
    if o.preserve_timestamps {
        let time = |(s, ns): (i64, u32)| filetime::FileTime::from_unix_time(s, ns);
        filetime::set_file_times(path, time(dir.atime), time(dir.mtime)).map_err(fail(path, "preserve timestamps"))?;
    }
    Ok(())
}

/// Gives a directory built under the temporary name `temp` its final name, unless something
/// took that name meanwhile (then the copy stays at `temp`, and the error says so).
pub(super) fn publish_directory(temp: &Path, destination: &Path) -> Result<(), Failure> {
    rename_no_replace(temp, destination).map_err(|e| Failure {
        path: destination.to_path_buf(),
        action: "rename into place",
        error: io::Error::new(e.kind(), format!("{e}; the copy is left at {}", temp.display())),
    })
}

/// Renames `from` to `to`, failing if `to` exists.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags};
        match nix::fcntl::renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // The file system does not take the flag: check, then rename.
            Err(Errno::EINVAL | Errno::ENOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::from(io::ErrorKind::AlreadyExists));
    }
    fs::rename(from, to)
}

/// Removes the temporary files and directories that a killed run left in `dir`: those whose
/// process is gone. (A live process's are left alone: it may be another `pcp` writing here
/// right now.) Returns how many were removed.
pub(super) fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.as_bytes().strip_prefix(TEMP_PREFIX.as_bytes()) else { continue };
        let pid = rest.iter().take_while(|b| b.is_ascii_digit()).fold(0i64, |n, b| n * 10 + i64::from(b - b'0'));
        let Ok(pid) = i32::try_from(pid) else { continue };
        if pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH) {
            let gone = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(entry.path()),
                _ => fs::remove_file(entry.path()),
            };
            removed += usize::from(gone.is_ok());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

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
