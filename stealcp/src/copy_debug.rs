//! What `--debug` says of one regular file's copy ([`CopyDebug`]), in GNU cp's words (cp 9.2
//! and later print it; the `copy offload: ..., reflink: ..., sparse detection: ...` line after
//! each file's `-v` line): whether the kernel moved the bytes (`copy_file_range`), whether the
//! copy shares the source's extents (a reflink), and how holes were looked for.
//!
//! The worker that copied the file fills it in with what it did; the coordinator hands it to
//! the observer. This module must never copy anything or touch the file system.

use std::fmt;

use crate::options::Reflink;

/// Whether a way of copying was used, in cp's words (`copy offload:` and `reflink:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Attempt {
    /// Not come to: a reflink made the data copy needless, or nothing was read by it (an
    /// empty file, a `/proc` file).
    Unknown,
    /// Not asked for (`--reflink=never`).
    No,
    /// Used.
    Yes,
    /// Left out on purpose: the bytes were read and written, looking for blocks of zeros.
    Avoided,
    /// Tried, or known to be refused, and not possible here: no reflinks on this file system
    /// or across file systems; no `copy_file_range` across file systems or for FIFOs and
    /// devices (the bytes were then read and written).
    Unsupported,
}

/// How holes were looked for, in cp's words (`sparse detection:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SparseDetection {
    /// Not come to (the file was reflinked).
    Unknown,
    /// Not at all: every byte was copied.
    No,
    /// Blocks of zeros were left as holes (`--sparse=always`).
    Zeros,
    /// The source's holes were found with `SEEK_DATA`/`SEEK_HOLE`.
    SeekHole,
    /// Both: the source's holes, and blocks of zeros in its data.
    SeekHoleAndZeros,
}

/// How one regular file's bytes were copied: what `cp --debug` prints for it.
///
/// # Examples
/// ```
/// use stealcp::{Attempt, CopyDebug, SparseDetection};
///
/// let plain = CopyDebug { offload: Attempt::Yes, reflink: Attempt::Unsupported, sparse_detection: SparseDetection::No };
/// assert_eq!(plain.to_string(), "copy offload: yes, reflink: unsupported, sparse detection: no");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyDebug {
    /// `copy_file_range`: the kernel copied the bytes, page cache to page cache.
    pub offload: Attempt,
    /// The copy shares the source's extents (`FICLONE`).
    pub reflink: Attempt,
    /// How holes were looked for.
    pub sparse_detection: SparseDetection,
}

impl CopyDebug {
    /// A reflink: nothing else was done.
    pub(crate) fn cloned() -> Self {
        CopyDebug { offload: Attempt::Unknown, reflink: Attempt::Yes, sparse_detection: SparseDetection::Unknown }
    }

    /// `--reflink=always` and no reflink possible: nothing was copied.
    pub(crate) fn clone_failed() -> Self {
        CopyDebug { reflink: Attempt::Unsupported, ..Self::cloned() }
    }

    /// The reflink word when none was made: not asked for, or not possible.
    fn no_reflink(mode: Reflink) -> Attempt {
        if mode == Reflink::Never { Attempt::No } else { Attempt::Unsupported }
    }

    /// A regular file's data extents (all of it, or one range of a split file) copied without
    /// a reflink, as `data::copy_all` and `data::copy_range` copy them: with `zeros` (a scan for
    /// blocks of zeros) they are found with `SEEK_DATA`/`SEEK_HOLE` and read and written, else
    /// handed to `copy_file_range`, which the kernel does within one file system (`same_fs`)
    /// and refuses across two (they are then read and written too). `source_sparse`: the
    /// source has fewer blocks than its length needs, which is when cp looks for its holes;
    /// `bytes`: how many were copied (none: `copy_file_range` never came to work, as cp says
    /// of an empty file).
    pub(crate) fn moved(mode: Reflink, zeros: bool, source_sparse: bool, same_fs: bool, bytes: u64) -> Self {
        let offload = match (zeros, bytes, same_fs) {
            (true, _, _) => Attempt::Avoided,
            (false, 0, _) => Attempt::Unknown,
            (false, _, true) => Attempt::Yes,
            (false, _, false) => Attempt::Unsupported,
        };
        let sparse_detection = match (zeros, source_sparse) {
            (true, true) => SparseDetection::SeekHoleAndZeros,
            (true, false) => SparseDetection::Zeros,
            (false, _) => SparseDetection::No,
        };
        CopyDebug { offload, reflink: Self::no_reflink(mode), sparse_detection }
    }

    /// Bytes read and written in order until the end (`data::stream`): a FIFO or device on
    /// either side (`regular` false), where `copy_file_range` and reflinks are refused, or an
    /// empty or `/proc` file (size 0), where cp's `copy_file_range` copies nothing.
    pub(crate) fn streamed(mode: Reflink, regular: bool, zeros: bool) -> Self {
        CopyDebug {
            offload: if regular { Attempt::Unknown } else { Attempt::Unsupported },
            reflink: Self::no_reflink(mode),
            sparse_detection: if zeros { SparseDetection::Zeros } else { SparseDetection::No },
        }
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attempt::Unknown => "unknown",
            Attempt::No => "no",
            Attempt::Yes => "yes",
            Attempt::Avoided => "avoided",
            Attempt::Unsupported => "unsupported",
        })
    }
}

impl fmt::Display for SparseDetection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SparseDetection::Unknown => "unknown",
            SparseDetection::No => "no",
            SparseDetection::Zeros => "zeros",
            SparseDetection::SeekHole => "SEEK_HOLE",
            SparseDetection::SeekHoleAndZeros => "SEEK_HOLE + zeros",
        })
    }
}

impl fmt::Display for CopyDebug {
    /// cp's line: `copy offload: yes, reflink: unsupported, sparse detection: no`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "copy offload: {}, reflink: {}, sparse detection: {}",
            self.offload, self.reflink, self.sparse_detection
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines cp 9.2+ prints for the cases stealcp meets on a file system without reflinks.
    #[test]
    fn each_way_of_copying_is_worded_as_cp_words_it() {
        let cases = [
            (
                CopyDebug::moved(Reflink::Auto, false, false, true, 3),
                "copy offload: yes, reflink: unsupported, sparse detection: no",
            ),
            (
                CopyDebug::moved(Reflink::Auto, false, false, false, 3),
                "copy offload: unsupported, reflink: unsupported, sparse detection: no",
            ),
            (
                CopyDebug::moved(Reflink::Never, false, false, true, 3),
                "copy offload: yes, reflink: no, sparse detection: no",
            ),
            (
                CopyDebug::moved(Reflink::Auto, true, false, true, 3),
                "copy offload: avoided, reflink: unsupported, sparse detection: zeros",
            ),
            (
                CopyDebug::moved(Reflink::Auto, true, true, true, 3),
                "copy offload: avoided, reflink: unsupported, sparse detection: SEEK_HOLE + zeros",
            ),
            (
                CopyDebug::streamed(Reflink::Auto, true, false),
                "copy offload: unknown, reflink: unsupported, sparse detection: no",
            ),
            (
                CopyDebug::streamed(Reflink::Auto, false, false),
                "copy offload: unsupported, reflink: unsupported, sparse detection: no",
            ),
            (CopyDebug::cloned(), "copy offload: unknown, reflink: yes, sparse detection: unknown"),
            (CopyDebug::clone_failed(), "copy offload: unknown, reflink: unsupported, sparse detection: unknown"),
        ];
        for (debug, line) in cases {
            assert_eq!(debug.to_string(), line);
        }
        assert_eq!(SparseDetection::SeekHole.to_string(), "SEEK_HOLE");
    }
}
