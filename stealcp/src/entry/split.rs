//! A large file copied in ranges by several workers: the coordinator makes the temporary file
//! ([`prepare_split`]), workers fill ranges at the same offsets ([`copy_piece`]), and one last
//! step seals and publishes it ([`finish_split`]).
//!
//! This module must never give the file its final name before every range is in.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::dirs::Dirs;
use super::file::{Existing, FileJob, FileOutcome, existing_destination, open_source};
use super::staged::{Naming, Staged, seal};
use crate::attributes::creation_mode;
use crate::data;
use crate::error::{Failure, fail};
use crate::options::{CopyOptions, Reflink};
use crate::path_bytes;
use crate::publish::{TempFile, temp_path};
use crate::report::Displaced;

/// A large file, once its temporary copy exists: either already complete (reflinked) or
/// sized and waiting for its ranges.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// `no_clobber` / `update` left the destination alone.
    Unchanged,
    /// `interactive`: the destination exists; ask, then prepare again confirmed.
    Ask { mode: u32, writable: bool },
    /// The temporary file shares the source's extents; only [`finish_split`] is left.
    Cloned(PathBuf),
    /// The temporary file has the source's length (all hole); copy `len` bytes into it.
    Ranges { temp: PathBuf, len: u64 },
}

/// First step of a file copied in ranges by several workers: checks the destination and makes
/// the temporary file. Cheap (no data moves), so the caller runs it inline.
/// Also returns what became of the destination it replaces.
pub(crate) fn prepare_split(job: &FileJob, o: &CopyOptions) -> Result<(Prepared, Option<Displaced>), Failure> {
    let (src, meta) = open_source(&job.source, job.follow, false)?;
    let existing = if job.check_existing {
        existing_destination(job, &meta, o, &mut Dirs::default())?
    } else {
        Existing::Absent(None)
    };
    let mut displaced = None;
    let (out, temp, dst_dev) = match existing {
        Existing::Keep => return Ok((Prepared::Unchanged, None)),
        Existing::Ask { mode, writable } => return Ok((Prepared::Ask { mode, writable }, None)),
        // Written into, as cp does: the ranges go straight into the existing file.
        Existing::Open { file, dev, regular: true } => (file, job.destination.clone(), dev),
        Existing::Open { regular: false, .. } => {
            let error = std::io::Error::other("a file this large is not written into a FIFO or device");
            return Err(Failure { path: job.destination.clone(), action: "write", error });
        }
        Existing::Absent(moved) => {
            displaced = moved;
            let temp = temp_path(&job.destination);
            let out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(o.creation_bits(creation_mode(&meta), false))
                .open(&temp)
                .map_err(fail(&job.destination, "create"))?;
            (out, temp, job.dst_dev)
        }
    };
    let mut guard = TempFile { path: Some(temp.as_path()).filter(|t| *t != job.destination) };
    let prepared = if o.reflink != Reflink::Never && data::reflink(&src, meta.dev(), &out, dst_dev) {
        Prepared::Cloned(temp.clone())
    } else if o.reflink == Reflink::Always {
        // As a whole file fails (the guard removes the temporary file).
        return Err(super::file::clone_failure(job, meta.dev() == dst_dev, true));
    } else {
        let holes = data::Holes::of(o.sparse, &meta, &out).map_err(fail(&job.destination, "create"))?;
        if holes.any() || !data::preallocate(&out, dst_dev, meta.len()).map_err(fail(&job.destination, "create"))? {
            out.set_len(meta.len()).map_err(fail(&job.destination, "create"))?;
        }
        Prepared::Ranges { temp: temp.clone(), len: meta.len() }
    };
    guard.path = None;
    Ok((prepared, displaced))
}

/// One range of a split file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RangeJob {
    #[serde(with = "path_bytes")]
    pub(crate) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(crate) temp: PathBuf,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) follow: bool,
}

/// Copies one range of a split file into its temporary file, at the same offsets, with the
/// holes `--sparse=WHEN` asks for (ranges start at multiples of [`RANGE`](crate::tuning::RANGE),
/// so blocks of zeros are counted from offset 0 as in a whole copy).
pub(crate) fn copy_piece(job: &RangeJob, o: &CopyOptions) -> Result<u64, Failure> {
    let (src, meta) = open_source(&job.source, job.follow, false)?;
    let out = OpenOptions::new().write(true).open(&job.temp).map_err(fail(&job.temp, "open"))?;
    let holes = data::Holes::of(o.sparse, &meta, &out).map_err(fail(&job.temp, "open"))?;
    data::copy_range(&src, &out, job.start, job.end, holes).map_err(fail(&job.source, "copy"))?;
    Ok(job.end - job.start)
}

/// The last step of a split file, once every range is in: attributes, verify, rename.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct FinishJob {
    #[serde(with = "path_bytes")]
    pub(crate) source: PathBuf,
    #[serde(with = "path_bytes")]
    pub(crate) destination: PathBuf,
    #[serde(with = "path_bytes")]
    pub(crate) temp: PathBuf,
    pub(crate) follow: bool,
    /// Bytes the file has (reported when it is done).
    pub(crate) len: u64,
}

/// Seals a split file: its temporary copy is complete (or failed, in which case the caller
/// removes it with [`discard`]).
pub(crate) fn finish_split(job: &FinishJob, o: &CopyOptions) -> FileOutcome {
    let result = (|| {
        let file = OpenOptions::new().read(true).write(true).open(&job.temp);
        // The temporary file, or the existing destination written into.
        let name = if job.temp == job.destination { Naming::Existing } else { Naming::Temp(job.temp.clone()) };
        let staged = Staged { file: file.map_err(fail(&job.temp, "open"))?, name };
        let (src, meta) = open_source(&job.source, job.follow, false)?;
        let sealed = seal(staged, &mut Dirs::default(), &src, &meta, &job.destination, None, o)?;
        // What the destination replaced is known to the coordinator (from `prepare_split`).
        Ok(FileOutcome::sealed(sealed, job.len, None))
    })();
    result.unwrap_or_else(|failure| {
        discard(&job.temp);
        FileOutcome::Failed(failure)
    })
}

/// Removes the temporary file of a split copy that failed; never an existing destination that
/// was being written into (only names with [`TEMP_PREFIX`](crate::TEMP_PREFIX) go).
pub(crate) fn discard(temp: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if temp.file_name().is_some_and(|n| n.as_bytes().starts_with(crate::TEMP_PREFIX.as_bytes())) {
        let _ = fs::remove_file(temp);
    }
}
