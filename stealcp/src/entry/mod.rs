//! Making one destination entry: a regular file (on a worker), a symlink, a hard link, and the
//! final touches on a directory.
//!
//! A regular file's final path never holds a partial copy. In a directory that already
//! existed, the file is written unnamed (`O_TMPFILE`) or under a temporary name and linked or
//! renamed into place once complete. In a directory this run makes, the whole directory is
//! built under a temporary name and renamed into place once complete (`run/`), so its files
//! are written under their own names at once. Temporary names start with [`TEMP_PREFIX`](crate::TEMP_PREFIX), so
//! leftovers of a killed run are easy to find.
//!
//! - `file.rs`: a regular file copied whole (the usual case), or handed back to the coordinator.
//! - `split.rs`: a large file copied in ranges by several workers into one temporary file.
//! - `staged.rs`: a copy being written, unnamed or under a temporary name, and sealed
//!   (attributes, `--verify`) and published under its final name.
//! - `special.rs`: symlinks, hard links, FIFOs, sockets and device nodes.
//! - `directory.rs`: making a directory's copy and, at the end, its mode and times.
//! - `dirs.rs`: the directories a task works in, kept open.
//!
//! This module must never leave a partial copy under its final name.

mod directory;
mod dirs;
mod file;
mod special;
mod split;
mod staged;

pub(crate) use self::directory::{DirFinish, DirMeta, create_directory, finish_directory};
pub(crate) use self::dirs::{Dirs, child};
pub(crate) use self::file::{
    FileJob, FileOutcome, HandBackReason, Owner, backup_name, copy_file, path_bytes_opt, reachable_from_workers,
    refused_relative_symlink,
};
pub(crate) use self::special::{Made, hard_link, make_special, make_symlink, not_older};
pub(crate) use self::split::{FinishJob, Prepared, RangeJob, copy_piece, discard, finish_split, prepare_split};
