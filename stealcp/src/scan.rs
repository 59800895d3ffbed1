//! Listing one source directory, on a worker: the walk is spread over the executor one
//! directory per task, so a wide or deep tree is read by every worker at once.
//!
//! A scan first makes the directory's copy (so that everything the listing leads to has a place
//! to go), then reads the source directory once. Symlinks and special files are made on the
//! spot (they are one syscall or two, not worth another task). The first regular files, a
//! batch's worth, are copied on the spot too when the coordinator allows it ([`CopyHere`]);
//! the other files and the subdirectories go back to the coordinator, which dedups hard links,
//! batches the files and schedules the subdirectories. A scan never follows a symlink unless `dereference` is set.
//!
//! A regular file is known by its directory entry's type alone unless [`ScanJob::stat_files`]
//! asks for its size and links (only an observer that wants totals up front needs them): the
//! `stat` per file was a twentieth of a small-file copy's time, and the worker that copies the
//! file reads the same facts from the open file anyway (see `entry/file.rs`, `HandBackReason`).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::copy_debug::CopyDebug;
use crate::entry::{self, DirMeta, FileJob, FileOutcome, Made};
use crate::error::{Failure, fail};
use crate::options::CopyOptions;
use crate::path_bytes;
use crate::publish::remove_stale_temps;
use crate::report::{Displaced, EntryKind};
use crate::tuning::{BYTES_PER_TASK, SCAN_COPIES_BELOW};

/// Copy the directory `source` to `destination` and list what is inside.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ScanJob {
    #[serde(with = "path_bytes")]
    pub(crate) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(crate) destination: PathBuf,
    pub(crate) meta: DirMeta,
    /// The destination is (inside) a directory this run builds under a temporary name.
    pub(crate) in_staging: bool,
    /// Read each regular file's size and links now (for totals up front).
    pub(crate) stat_files: bool,
    /// The copy's own top directory is inside this directory (`cp -r d d/x`): where the walk
    /// stops, as cp's does.
    #[serde(default)]
    pub(crate) into_self: Option<IntoSelf>,
    /// Copy the first regular files found here, on the worker that listed them (see
    /// [`CopyHere`]); `None`: every file goes back to the coordinator. Set when the scan is sent.
    #[serde(default)]
    pub(crate) copy_here: Option<CopyHere>,
}

/// How many of a directory's regular files its scan copies itself, right after listing them:
/// that worker has the names, the directories and their inodes hot in its cache, and the
/// coordinator makes, sends and frees no job for them (in a tree of small directories, most
/// files). A file the coordinator must see first is left in the listing (its stat says it has
/// other names or is large enough to split) or handed back (found so when opened), exactly as
/// from a batch.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct CopyHere {
    /// Most files to copy here, and at most [`BYTES_PER_TASK`] bytes, each file under
    /// [`SCAN_COPIES_BELOW`]: the rest go back in the listing (a larger file once opened:
    /// [`FileJob::hand_back_from`]), to be batched and shared among the workers.
    pub(crate) files: usize,
    /// Files of [`SPLIT_AT`](crate::tuning::SPLIT_AT) bytes or more are left to be split (more than one worker).
    pub(crate) split_large: bool,
}

/// A directory copied into itself, as cp 9 copies it: cp lists each directory in inode order
/// and, when its walk meets the directory it made for the copy, says so ("cannot copy a
/// directory, 'd', into itself, 'd/x'") and stops listing that directory and every directory
/// above it on the way there. So in each directory on the path from the source to the copy,
/// the entries of lower inode numbers than the path's next step are copied whole, that step
/// is followed (the copy itself is skipped), and the entries after it are not copied.
/// Merged into an existing directory inside itself (`cp -rT d d/x`), the walk stops at the
/// first directory cp makes instead, which `run/into_self.rs` finds and makes first; the last
/// step's directory is listed once everything else is copied (`Run::last_steps`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct IntoSelf {
    /// The names from the scanned directory down to the copy's top directory (last: its name
    /// in the scanned source, which is the temporary name it is built under).
    pub(crate) path: Vec<serde_bytes::ByteBuf>,
    /// The source and destination as named, for the message.
    #[serde(with = "path_bytes")]
    pub(crate) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(crate) destination: PathBuf,
}

impl IntoSelf {
    /// The same walk one step down, if it goes through the subdirectory `name`.
    pub(crate) fn below(&self, name: &[u8]) -> Option<IntoSelf> {
        let (first, rest) = self.path.split_first()?;
        (first.as_slice() == name && !rest.is_empty()).then(|| IntoSelf { path: rest.to_vec(), ..self.clone() })
    }

    /// The entries of the scanned directory that cp copies (see the type's docs); the copy
    /// itself, if it is here, is replaced by a failure in `failures`. Unchanged if the path's
    /// next step is not among them.
    fn keep(&self, entries: fs::ReadDir, failures: &mut Vec<Failure>) -> Vec<io::Result<fs::DirEntry>> {
        use std::os::unix::fs::DirEntryExt;
        let mut entries: Vec<_> = entries.collect();
        let Some(next) = self.path.first() else { return entries };
        let is_next = |e: &fs::DirEntry| e.file_name().as_bytes() == next.as_slice();
        let Some(at) = entries.iter().flatten().find(|e| is_next(e)).map(|e| e.ino()) else { return entries };
        let last = self.path.len() == 1;
        entries.retain(|e| match e {
            Ok(e) => e.ino() < at || (!last && e.ino() == at && is_next(e)),
            Err(_) => true,
        });
        if last {
            let error = io::Error::other(crate::error::Quoted(&self.destination).to_string());
            failures.push(Failure { path: self.source.clone(), action: "into itself", error });
        }
        entries
    }
}

/// One entry found by a scan that the coordinator handles (a regular file or a directory).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Found {
    #[serde(with = "serde_bytes")]
    pub(crate) name: Vec<u8>,
    /// Always there for a directory; for a file only if the scan was asked to `stat_files`.
    pub(crate) stat: Option<Stat>,
    /// For a directory: what its copy keeps.
    pub(crate) dir: Option<DirMeta>,
}

/// What the coordinator needs of an entry's `stat`.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Stat {
    pub(crate) len: u64,
    pub(crate) nlink: u64,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// Not a regular file: a FIFO or device read like one (`--copy-contents`).
    pub(crate) special: bool,
}

impl Stat {
    pub(crate) fn new(meta: &fs::Metadata) -> Self {
        let special = !meta.is_file();
        Stat { len: meta.len(), nlink: meta.nlink(), dev: meta.dev(), ino: meta.ino(), special }
    }

    /// The (device, inode) to dedup on, if other paths may lead to the same file.
    pub(crate) fn link_key(&self) -> Option<(u64, u64)> {
        (self.nlink > 1).then_some((self.dev, self.ino))
    }
}

impl Found {
    fn new(name: &std::ffi::OsStr, meta: &fs::Metadata) -> Self {
        Found {
            name: name.as_bytes().to_vec(),
            stat: Some(Stat::new(meta)),
            dir: meta.is_dir().then(|| DirMeta::new(meta)),
        }
    }

    pub(crate) fn name(&self) -> &std::ffi::OsStr {
        std::ffi::OsStr::from_bytes(&self.name)
    }
}

/// What a scan did and found.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Listing {
    /// The destination directory is there (made now, or reused); when false the scan stopped
    /// at once and `failures` says why.
    pub(crate) created: bool,
    /// The destination directory existed before this run.
    pub(crate) existed: bool,
    /// The destination directory's device.
    pub(crate) dst_dev: u64,
    /// The destination directory's group if it is set-group-ID.
    pub(crate) dst_group: Option<u32>,
    pub(crate) subdirs: Vec<Found>,
    pub(crate) files: Vec<Found>,
    /// Symlinks and special files made, by name, with what became of an entry they replaced.
    pub(crate) made: Vec<(serde_bytes::ByteBuf, EntryKind, Option<Displaced>)>,
    /// Entries left alone (`no_clobber`).
    pub(crate) unchanged: u64,
    /// `interactive`: symlinks and special files whose destination exists, by name, left for
    /// the coordinator to ask about and make.
    #[serde(default)]
    pub(crate) ask: Vec<serde_bytes::ByteBuf>,
    pub(crate) failures: Vec<Failure>,
    /// Regular files copied by the scan ([`ScanJob::copy_here`]), each with its outcome and how
    /// its contents were copied (`--debug`); not in `files`.
    #[serde(default)]
    pub(crate) copied: Vec<(Found, FileOutcome, Option<CopyDebug>)>,
    /// Symlinks and special files beyond the first [`LINKS_HERE`], by name, left for the
    /// coordinator to share among the workers ([`make_links`]).
    #[serde(default)]
    pub(crate) links: Vec<serde_bytes::ByteBuf>,
}

/// Symlinks and special files a scan makes itself; the rest of a directory's go out in
/// [`LinksJob`]s (5,000 symlinks in one directory took 85 ms on one worker, `fcp` 28 ms).
const LINKS_HERE: usize = 64;

/// Symlinks and special files of one directory to make, on a worker, as its scan would.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct LinksJob {
    #[serde(with = "path_bytes")]
    pub(crate) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(crate) destination: PathBuf,
    pub(crate) names: Vec<serde_bytes::ByteBuf>,
    /// The destination directory existed before this run (names there may be taken).
    pub(crate) existed: bool,
}

/// Makes an entry a scan found, a symlink or a FIFO, socket or device (stat `meta`, followed
/// with `dereference`), at `destination`: what it is made as, and what became of it.
fn make_entry(
    source: &Path,
    destination: &Path,
    meta: &fs::Metadata,
    existed: bool,
    o: &CopyOptions,
) -> (EntryKind, Result<Made, Failure>) {
    if meta.file_type().is_symlink() {
        (EntryKind::Symlink, entry::make_symlink(source, destination, meta, existed, o))
    } else {
        // Attributes from what is copied: with -L, the symlink's target.
        let path = if o.dereference { fs::canonicalize(source).ok() } else { None };
        (EntryKind::Special, entry::make_special(path.as_deref().unwrap_or(source), destination, meta, existed, o))
    }
}

/// [`make_entry`] for an entry known by its path only (a [`LinksJob`]'s).
fn make_link(source: &Path, destination: &Path, existed: bool, o: &CopyOptions) -> (EntryKind, Result<Made, Failure>) {
    let meta = if o.dereference { fs::metadata(source) } else { fs::symlink_metadata(source) };
    match meta {
        Ok(meta) => make_entry(source, destination, &meta, existed, o),
        Err(e) => (EntryKind::Symlink, Err(fail(source, "stat")(e))),
    }
}

/// Runs a [`LinksJob`] (on a worker): each name's kind and what became of it.
pub(crate) fn make_links(job: &LinksJob, o: &CopyOptions) -> Vec<(EntryKind, Result<Made, Failure>)> {
    job.names
        .iter()
        .map(|name| {
            let name = OsStr::from_bytes(name);
            make_link(&entry::child(&job.source, name), &entry::child(&job.destination, name), job.existed, o)
        })
        .collect()
}

/// A destination directory's device, and its group if new entries inherit it (set-group-ID).
pub(crate) fn destination_dir(dir: &std::path::Path) -> (u64, Option<u32>) {
    match fs::metadata(dir) {
        Ok(m) => (m.dev(), (m.mode() & 0o2000 != 0).then_some(m.gid())),
        Err(_) => (0, None),
    }
}

/// Runs a [`ScanJob`] (on a worker).
pub(crate) fn scan(job: &ScanJob, o: &CopyOptions) -> Listing {
    let mut out = Listing::default();
    match entry::create_directory(&job.destination, &job.meta) {
        Ok(existed) => (out.created, out.existed) = (true, existed),
        Err(mut failure) => {
            if failure.action == "overwrite non-directory" {
                // cp names the source directory too.
                failure.error = io::Error::other(format!("'{}'", job.source.display()));
            }
            out.failures.push(failure);
            return out;
        }
    }
    if out.existed {
        if !o.keep_directory_symlink && fs::symlink_metadata(&job.destination).is_ok_and(|m| m.is_symlink()) {
            // cp puts a directory where a symlink to one is only with --keep-directory-symlink.
            let error = io::Error::other(format!("'{}'", job.source.display()));
            out.failures.push(Failure { path: job.destination.clone(), action: "overwrite non-directory", error });
            out.created = false;
            return out;
        }
        // A re-run after a killed run: its temporary files go now.
        remove_stale_temps(&job.destination, Some(&job.source));
    }
    if job.meta.skip_contents {
        // -x: a mount point, copied empty.
        return out;
    }
    (out.dst_dev, out.dst_group) = destination_dir(&job.destination);
    let entries = match fs::read_dir(&job.source) {
        Ok(entries) => entries,
        Err(e) => {
            out.failures.push(fail(&job.source, "read directory")(e));
            return out;
        }
    };
    let entries: Box<dyn Iterator<Item = io::Result<fs::DirEntry>>> = match &job.into_self {
        None => Box::new(entries),
        Some(cut) => Box::new(cut.keep(entries, &mut out.failures).into_iter()),
    };
    // Symlinks and special files made here so far (see LINKS_HERE), and whether the rest may
    // be made elsewhere: not when each is linked to or followed (-l, -s, -L: those are
    // files' business), nor when -i may have to ask about them.
    let mut made_here = 0;
    let links_elsewhere = !(o.dereference || o.hard_link || o.symbolic_link || o.interactive);
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                out.failures.push(fail(&job.source, "read directory")(e));
                continue;
            }
        };
        let name = entry.file_name();
        // The entry's type comes with the listing (std stats only where the file system does
        // not say); a regular file needs nothing more unless totals are wanted.
        match entry.file_type() {
            Ok(kind) if kind.is_file() && !job.stat_files => {
                out.files.push(Found { name: name.into_vec(), stat: None, dir: None });
                continue;
            }
            // A symlink copied as one, beyond those made here: its worker stats it.
            Ok(kind) if kind.is_symlink() && links_elsewhere && made_here >= LINKS_HERE => {
                out.links.push(serde_bytes::ByteBuf::from(name.into_vec()));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                out.failures.push(fail(&entry.path(), "stat")(e));
                continue;
            }
        }
        let meta = if o.dereference { fs::metadata(entry.path()) } else { entry.metadata() };
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) => {
                out.failures.push(fail(&entry.path(), "stat")(e));
                continue;
            }
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            let mut found = Found::new(&name, &meta);
            if o.one_file_system
                && let Some(dir) = &mut found.dir
            {
                dir.skip_contents = dir.dev != job.meta.dev;
            }
            out.subdirs.push(found);
        } else if kind.is_file()
            || o.hard_link
            || o.symbolic_link
            || (o.copy_contents && !kind.is_symlink() && !kind.is_socket())
        {
            // --copy-contents: FIFOs and devices are read like files. -l and -s link every
            // entry that is not a directory, symlinks and FIFOs too, as cp does.
            out.files.push(Found::new(&name, &meta));
        } else if o.interactive && out.existed && fs::symlink_metadata(job.destination.join(&name)).is_ok() {
            out.ask.push(serde_bytes::ByteBuf::from(name.as_bytes()));
        } else if links_elsewhere && made_here >= LINKS_HERE {
            out.links.push(serde_bytes::ByteBuf::from(name.as_bytes()));
        } else {
            made_here += 1;
            let destination = entry::child(&job.destination, &name);
            match make_entry(&entry.path(), &destination, &meta, out.existed, o) {
                (kind, Ok((true, displaced))) => {
                    out.made.push((serde_bytes::ByteBuf::from(name.as_bytes()), kind, displaced));
                }
                (_, Ok((false, _))) => out.unchanged += 1,
                (_, Err(failure)) => out.failures.push(failure),
            }
        }
    }
    if let Some(here) = job.copy_here {
        copy_here(job, here, o, &mut out);
    }
    out
}

/// Copies the first of the listing's regular files on this worker ([`CopyHere`]), moving them
/// from `files` to `copied`.
fn copy_here(job: &ScanJob, here: CopyHere, o: &CopyOptions, out: &mut Listing) {
    let owner = entry::Owner::current();
    let mut dirs = entry::Dirs::default();
    let mut bytes = 0;
    for found in std::mem::take(&mut out.files) {
        let room = out.copied.len() < here.files && bytes < BYTES_PER_TASK;
        // A FIFO or device (`--copy-contents`) may block until a writer comes: it never holds
        // up the scan, whose subdirectories are not sent before it returns; nor does a file
        // too large to copy here.
        // (SCAN_COPIES_BELOW is below SPLIT_AT: a file to split is left too.)
        let coordinator_first =
            found.stat.is_some_and(|s| s.special || (o.preserve_links && s.nlink > 1) || s.len >= SCAN_COPIES_BELOW);
        if !room || coordinator_first {
            out.files.push(found);
            continue;
        }
        let file =
            FileJob { hand_back_from: Some(SCAN_COPIES_BELOW), ..file_job(job, &found, out, o, here.split_large) };
        let (outcome, how) = entry::copy_file(&file, o, owner, &mut dirs);
        if let FileOutcome::Copied(n, _) = outcome {
            bytes += n;
        }
        out.copied.push((found, outcome, how));
    }
}

/// The job that copies the regular file `found`, listed by the scan `job` (with what the
/// scan learned of the destination directory, in `listing`): made on the worker for a file it
/// copies itself, on the coordinator for the files it batches. A file the scan did not stat is
/// checked by the worker that opens it, which hands it back if it has to be deduplicated or
/// (with `split_large`) split.
pub(crate) fn file_job(job: &ScanJob, found: &Found, listing: &Listing, o: &CopyOptions, split_large: bool) -> FileJob {
    FileJob {
        source: entry::child(&job.source, found.name()),
        destination: entry::child(&job.destination, found.name()),
        len: found.stat.map(|s| s.len),
        hand_back_links: found.stat.is_none(),
        hand_back_large: found.stat.is_none() && split_large,
        follow: o.dereference,
        check_existing: listing.existed,
        dst_dev: listing.dst_dev,
        dst_group: listing.dst_group,
        in_staging: job.in_staging,
        read_special: o.copy_contents,
        open_as: None,
        confirmed: false,
        hand_back_from: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::HandBackReason;

    fn scan_of(src: &std::path::Path, dst: &std::path::Path, files: usize) -> ScanJob {
        ScanJob {
            source: src.to_path_buf(),
            destination: dst.to_path_buf(),
            meta: DirMeta::new(&fs::metadata(src).unwrap()),
            in_staging: true,
            stat_files: false,
            into_self: None,
            copy_here: Some(CopyHere { files, split_large: true }),
        }
    }

    /// A scan allowed to copy its first files copies that many, whole, and lists the rest for
    /// the coordinator; a file with another name is handed back uncopied (it must be copied
    /// once, whichever name is met first).
    #[test]
    fn a_scan_copies_its_first_files_and_hands_back_what_the_coordinator_must_see() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&src).unwrap();
        for i in 0..6 {
            fs::write(src.join(format!("f{i}")), format!("file {i}")).unwrap();
        }
        fs::hard_link(src.join("f0"), src.join("link")).unwrap();
        let o = CopyOptions::archive();
        let listing = scan(&scan_of(&src, &dst, 4), &o);
        assert!(listing.created && listing.failures.is_empty(), "{:?}", listing.failures);
        assert_eq!(listing.copied.len(), 4, "four files tried here");
        assert_eq!(listing.files.len(), 3, "the other three listed");
        let mut copied = 0;
        for (found, outcome, _) in &listing.copied {
            let name = found.name();
            match outcome {
                FileOutcome::Copied(len, None) => {
                    copied += 1;
                    assert_eq!(fs::read(dst.join(name)).unwrap(), fs::read(src.join(name)).unwrap());
                    assert_eq!(*len, fs::metadata(src.join(name)).unwrap().len());
                }
                FileOutcome::HandedBack(HandBackReason::HardLinked { .. }) => {
                    assert!(name == "f0" || name == "link", "{name:?} has one name");
                    assert!(!dst.join(name).exists(), "a file handed back is not written");
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert!(copied >= 2);
        for found in &listing.files {
            assert!(!dst.join(found.name()).exists(), "{:?} is left to the coordinator", found.name());
        }
    }

    /// A file of [`SCAN_COPIES_BELOW`] bytes or more is handed back uncopied, its size known,
    /// so that the coordinator batches it and the scan returns without copying it; the
    /// smaller ones are copied here.
    #[test]
    fn a_scan_hands_back_a_file_too_large_to_copy_here() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::write(src.join("small"), "small").unwrap();
        fs::File::create(src.join("mid")).unwrap().set_len(SCAN_COPIES_BELOW).unwrap();
        fs::File::create(src.join("under")).unwrap().set_len(SCAN_COPIES_BELOW - 1).unwrap();
        let listing = scan(&scan_of(&src, &dst, 64), &CopyOptions::archive());
        let mut outcomes: Vec<_> = listing
            .copied
            .iter()
            .map(|(f, outcome, _)| match outcome {
                FileOutcome::Copied(len, None) => format!("{} copied {len}", f.name().to_string_lossy()),
                FileOutcome::HandedBack(HandBackReason::Sized { len }) => {
                    format!("{} handed back {len}", f.name().to_string_lossy())
                }
                other => panic!("{:?}: {other:?}", f.name()),
            })
            .collect();
        outcomes.sort();
        let (mid, under) = (SCAN_COPIES_BELOW, SCAN_COPIES_BELOW - 1);
        assert_eq!(
            outcomes,
            [format!("mid handed back {mid}"), "small copied 5".into(), format!("under copied {under}")]
        );
        assert!(!dst.join("mid").exists(), "a file handed back is not written");
    }

    /// With the files' stat known (totals), a file with other names, one to split or one too
    /// large to copy here is left in the listing, not tried: the coordinator dedups or splits it before anything is copied.
    #[test]
    fn with_stat_files_links_and_large_files_are_left_for_the_coordinator() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::write(src.join("plain"), "plain").unwrap();
        fs::write(src.join("linked"), "linked").unwrap();
        fs::hard_link(src.join("linked"), src.join("other-name")).unwrap();
        fs::File::create(src.join("large")).unwrap().set_len(crate::tuning::SPLIT_AT).unwrap();
        fs::File::create(src.join("mid")).unwrap().set_len(SCAN_COPIES_BELOW).unwrap();
        let job = ScanJob { stat_files: true, ..scan_of(&src, &dst, 64) };
        let listing = scan(&job, &CopyOptions::archive());
        let copied: Vec<_> = listing.copied.iter().map(|(f, ..)| f.name().to_owned()).collect();
        assert_eq!(copied, ["plain"]);
        let mut left: Vec<_> = listing.files.iter().map(|f| f.name().to_owned()).collect();
        left.sort();
        assert_eq!(left, ["large", "linked", "mid", "other-name"]);
        assert!(!dst.join("large").exists() && !dst.join("linked").exists());
    }

    /// With `--copy-contents`, a FIFO (read like a file, which blocks until a writer comes)
    /// is left to a batch: the scan returns, and its subdirectories go out, without a writer.
    #[test]
    fn a_fifo_read_for_copy_contents_is_left_for_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("plain"), "plain").unwrap();
        nix::unistd::mkfifo(&src.join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let o = CopyOptions { recursive: true, copy_contents: true, ..CopyOptions::default() };
        let job = scan_of(&src, &dst, 64);
        let (tx, rx) = std::sync::mpsc::channel();
        let scanning = std::thread::spawn(move || tx.send(scan(&job, &o)).unwrap());
        // A scan that opened the FIFO waits for a writer: after a bound this test is that
        // writer (so that nothing hangs), and fails.
        let listing = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap_or_else(|_| {
            use std::os::unix::fs::OpenOptionsExt;
            let writer = fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(src.join("pipe"));
            drop(writer);
            scanning.join().unwrap();
            panic!("the scan opened the FIFO and waited for a writer");
        });
        let copied: Vec<_> = listing.copied.iter().map(|(f, ..)| f.name().to_owned()).collect();
        assert_eq!(copied, ["plain"]);
        let left: Vec<_> = listing.files.iter().map(|f| f.name().to_owned()).collect();
        assert_eq!(left, ["pipe"]);
        assert_eq!(listing.subdirs.len(), 1);
    }
}
