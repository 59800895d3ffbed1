//! Making one destination entry: a regular file (on a worker), a symlink, a hard link, and the
//! final touches on a directory.
//!
//! A regular file is always written under a temporary name in its destination directory and
//! renamed into place only once complete, so its final name never holds a partial copy. The
//! temporary names start with [`TEMP_PREFIX`], so leftovers of a killed run are easy to find.

use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CopyOptions, Failure};

/// The start of every temporary file name this engine creates (followed by the process id, a
/// counter and the final name).
pub const TEMP_PREFIX: &str = ".pcp-tmp-";

/// The longest file name (in bytes) Linux file systems accept.
const NAME_MAX: usize = 255;

/// One regular file to copy: the job a worker runs (in a thread, or in a worker process: it
/// serializes, paths as raw bytes so that names that are not UTF-8 travel intact).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FileJob {
    #[serde(with = "path_bytes")]
    pub(super) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(super) destination: PathBuf,
    /// The size seen by the walk, for progress totals.
    pub(super) len: u64,
    pub(super) options: CopyOptions,
}

/// What became of a [`FileJob`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum FileOutcome {
    /// Copied, with this many bytes.
    Copied {
        /// The source path.
        #[serde(with = "path_bytes")]
        source: PathBuf,
        /// The destination path.
        #[serde(with = "path_bytes")]
        destination: PathBuf,
        /// Bytes copied.
        bytes: u64,
    },
    /// Left alone (`no_clobber`, or `update` with a destination at least as new).
    Unchanged,
    /// Failed; nothing was left under the destination's name.
    Failed(Failure),
}

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

fn temp_path(destination: &Path) -> PathBuf {
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

/// Copies one regular file (the function the workers run).
pub fn copy_file(job: FileJob) -> FileOutcome {
    match copy_file_inner(&job) {
        Ok(Some(bytes)) => FileOutcome::Copied { source: job.source, destination: job.destination, bytes },
        Ok(None) => FileOutcome::Unchanged,
        Err(failure) => FileOutcome::Failed(failure),
    }
}

fn copy_file_inner(job: &FileJob) -> Result<Option<u64>, Failure> {
    let (src_path, dst_path, o) = (&job.source, &job.destination, &job.options);
    let mut src = File::open(src_path).map_err(fail(src_path, "open"))?;
    let meta = src.metadata().map_err(fail(src_path, "stat"))?;
    if !meta.is_file() {
        let error = io::Error::other("no longer a regular file");
        return Err(Failure { path: src_path.clone(), action: "open", error });
    }
    if let Ok(existing) = fs::symlink_metadata(dst_path) {
        if existing.is_dir() {
            let error = io::Error::other("cannot overwrite a directory with a file");
            return Err(Failure { path: dst_path.clone(), action: "create", error });
        }
        if o.no_clobber || (o.update && existing.modified().ok() >= meta.modified().ok()) {
            return Ok(None);
        }
    }

    let temp = temp_path(dst_path);
    let mode = meta.mode() & 0o7777;
    // Without -p the kernel applies the umask to the source's bits, as for `cp`.
    let create_mode = if o.preserve_mode { 0o600 } else { mode & 0o777 };
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(create_mode)
        .open(&temp)
        .map_err(fail(dst_path, "create"))?;
    let mut guard = TempFile { path: Some(&temp) };
    // On Linux, std copies File to File with copy_file_range (falling back to read/write).
    let bytes = io::copy(&mut src, &mut out).map_err(fail(src_path, "copy"))?;
    if o.preserve_ownership {
        // Ownership first: chown clears set-user-ID bits that chmod then restores.
        ignore_eperm(std::os::unix::fs::fchown(&out, Some(meta.uid()), Some(meta.gid())))
            .map_err(fail(dst_path, "preserve ownership"))?;
    }
    if o.preserve_mode {
        out.set_permissions(Permissions::from_mode(mode)).map_err(fail(dst_path, "preserve mode"))?;
    }
    if o.preserve_timestamps {
        out.set_times(file_times(&meta)).map_err(fail(dst_path, "preserve timestamps"))?;
    }
    drop(out);
    if o.verify {
        verify(src_path, &temp).map_err(fail(dst_path, "verify"))?;
    }
    fs::rename(&temp, dst_path).map_err(fail(dst_path, "rename into place"))?;
    guard.path = None;
    Ok(Some(bytes))
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

/// Re-reads both files and compares them.
fn verify(a: &Path, b: &Path) -> io::Result<()> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Err(io::Error::other("the copy differs from the source"));
        }
        if n == 0 {
            return Ok(());
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Makes `destination` a symlink with the same target as `source`.
pub(super) fn make_symlink(source: &Path, destination: &Path, o: &CopyOptions) -> Result<bool, Failure> {
    let target = fs::read_link(source).map_err(fail(source, "read symlink"))?;
    if let Ok(existing) = fs::symlink_metadata(destination) {
        if o.no_clobber {
            return Ok(false);
        }
        if existing.is_dir() {
            let error = io::Error::other("cannot overwrite a directory with a symlink");
            return Err(Failure { path: destination.to_path_buf(), action: "create symlink", error });
        }
        fs::remove_file(destination).map_err(fail(destination, "replace"))?;
    }
    std::os::unix::fs::symlink(&target, destination).map_err(fail(destination, "create symlink"))?;
    let meta = fs::symlink_metadata(source).map_err(fail(source, "stat"))?;
    if o.preserve_ownership {
        ignore_eperm(std::os::unix::fs::lchown(destination, Some(meta.uid()), Some(meta.gid())))
            .map_err(fail(destination, "preserve ownership"))?;
    }
    if o.preserve_timestamps {
        let (atime, mtime) = filetimes(&meta);
        filetime::set_symlink_file_times(destination, atime, mtime)
            .map_err(fail(destination, "preserve timestamps"))?;
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

/// A directory made by the walk, whose mode and times are set at the end.
#[derive(Debug)]
pub(super) struct DirJob {
    pub(super) destination: PathBuf,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) times: (filetime::FileTime, filetime::FileTime),
}

impl DirJob {
    pub(super) fn new(destination: PathBuf, meta: &fs::Metadata) -> Self {
        DirJob { destination, mode: meta.mode() & 0o7777, uid: meta.uid(), gid: meta.gid(), times: filetimes(meta) }
    }
}

/// Creates a destination directory, writable by us whatever the source's mode (the final mode
/// is set by [`finish_directory`]). An existing directory is reused.
pub(super) fn create_directory(dir: &DirJob) -> Result<(), Failure> {
    match fs::symlink_metadata(&dir.destination) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            let error = io::Error::other("cannot overwrite a non-directory with a directory");
            Err(Failure { path: dir.destination.clone(), action: "create directory", error })
        }
        Err(_) => fs::DirBuilder::new()
            .mode(dir.mode | 0o700)
            .create(&dir.destination)
            .map_err(fail(&dir.destination, "create directory")),
    }
}

/// Sets a copied directory's ownership, mode and times, once everything inside is in place.
pub(super) fn finish_directory(dir: &DirJob, o: &CopyOptions) -> Result<(), Failure> {
    let path = &dir.destination;
    if o.preserve_ownership {
        ignore_eperm(std::os::unix::fs::chown(path, Some(dir.uid), Some(dir.gid)))
            .map_err(fail(path, "preserve ownership"))?;
    }
    let mode = if o.preserve_mode {
        dir.mode
    } else {
        // Take back the owner bits added so we could fill the directory.
        let current = fs::metadata(path).map_err(fail(path, "stat"))?.mode() & 0o7777;
        current & !(0o700 & !dir.mode)
    };
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(fail(path, "set mode"))?;
    if o.preserve_timestamps {
        filetime::set_file_times(path, dir.times.0, dir.times.1).map_err(fail(path, "preserve timestamps"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[test]
    fn jobs_and_failures_cross_processes_intact() {
        let odd = PathBuf::from(OsStr::from_bytes(b"/tmp/caf\xe9/x"));
        let job = FileJob { source: odd.clone(), destination: "/d".into(), len: 7, options: CopyOptions::archive() };
        let back: FileJob = postcard::from_bytes(&postcard::to_stdvec(&job).unwrap()).unwrap();
        assert_eq!((back.source, back.len, back.options), (odd.clone(), 7, CopyOptions::archive()));

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
