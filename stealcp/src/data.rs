//! Moving a regular file's bytes: reflink (FICLONE) where the file system shares extents,
//! `copy_file_range` (the kernel copies, page cache to page cache), and plain `pread`/`pwrite`
//! where neither works; holes found with `SEEK_DATA`/`SEEK_HOLE` stay holes, and with
//! `--sparse=always` ([`Holes::Zeros`]) blocks of zeros become holes too, as cp makes them.
//!
//! Every function here works at explicit offsets and never moves a file position, so several
//! workers can fill different ranges of one file at once. Nothing here ever decides where a
//! file goes or what it is called; that is `entry/`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use nix::errno::Errno;
use nix::unistd::Whence;
use parking_lot::Mutex;

// FICLONE = _IOW(0x94, 9, int): make the destination share the source's extents.
nix::ioctl_write_int!(ficlone, 0x94, 9);

/// The most `copy_file_range` is asked for at once: large enough to keep the syscalls few,
/// small enough that a huge file does not pin one call for seconds.
const CHUNK: u64 = 1 << 30;

/// Buffer size of the `pread`/`pwrite` fallback.
const FALLBACK_BUFFER: usize = 256 * 1024;

/// Where a copy gets holes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holes {
    /// Nowhere: every byte is written (`--sparse=never`, or `auto` and a source without holes).
    None,
    /// Where the source has them (`SEEK_DATA`/`SEEK_HOLE`), and wherever an aligned block of
    /// this many bytes (the destination's block size) holds only zeros, as cp makes them for
    /// `--sparse=always`, and for `auto` when the source has holes: its blocks are counted
    /// from the start of each read (so from offset 0 for a file), a last, shorter block of
    /// zeros included.
    Zeros(usize),
}

impl Holes {
    /// The holes `--sparse=WHEN` asks for in a copy of `src` into `dst`.
    pub(super) fn of(sparse: crate::options::Sparse, src: &std::fs::Metadata, dst: &File) -> io::Result<Self> {
        use crate::options::Sparse;
        let sparse = match sparse {
            Sparse::Never => false,
            Sparse::Auto => may_be_sparse(src),
            Sparse::Always => true,
        };
        if !sparse {
            return Ok(Holes::None);
        }
        Ok(Holes::Zeros(usize::try_from(dst.metadata()?.blksize()).unwrap_or(4096).clamp(512, 1 << 20)))
    }

    /// Whether the copy may end in a hole, so that the caller must set its length.
    pub(super) fn any(self) -> bool {
        self != Holes::None
    }
}

/// Whether a file may have holes worth keeping: it occupies fewer blocks than its length needs.
/// (A file with data inlined in its inode also qualifies; the hole search then costs two
/// `lseek`s and finds one extent.)
pub(super) fn may_be_sparse(meta: &std::fs::Metadata) -> bool {
    meta.blocks().saturating_mul(512) < meta.len()
}

/// Device pairs (source, destination) on which FICLONE failed: asked once per pair per process,
/// not once per file.
static NO_REFLINK: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// Makes `dst` (empty, writable) share all of `src`'s extents. Returns `false`, having changed
/// nothing, when the file systems cannot (different devices, or no reflink support).
pub(super) fn reflink(src: &File, src_dev: u64, dst: &File, dst_dev: u64) -> bool {
    if src_dev != dst_dev || NO_REFLINK.lock().contains(&(src_dev, dst_dev)) {
        return false;
    }
    // SAFETY: FICLONE reads one int argument, the source descriptor, passed by value; both
    // descriptors are open for the whole call because `src` and `dst` are borrowed.
    match unsafe { ficlone(dst.as_raw_fd(), src.as_raw_fd() as nix::sys::ioctl::ioctl_param_type) } {
        Ok(_) => true,
        Err(_) => {
            // EOPNOTSUPP / EINVAL / EXDEV / ENOTTY: this pair cannot clone; do not ask again.
            // (A transient error also lands here; the copy just takes the slower path.)
            let mut no = NO_REFLINK.lock();
            if !no.contains(&(src_dev, dst_dev)) {
                no.push((src_dev, dst_dev));
            }
            false
        }
    }
}

/// Files from this size on are given their blocks before their bytes ([`preallocate`]):
/// measured on ext4, files of 256 KiB and more copy 15-20% faster so; for files under about
/// 64 KiB the extra call costs more than it saves (preallocating every file of the small-file
/// corpus made its copy 25% slower).
pub(super) const PREALLOCATE_FROM: u64 = 128 << 10;

/// Gives the empty file `dst` (on device `dst_dev`) all `len` bytes' blocks at once
/// (`fallocate`): the writes that follow then fill blocks already allocated instead of
/// reserving space page by page (on ext4, a sixth less kernel time for large files), and the
/// file gets one contiguous allocation. Only for files without holes (it would fill them).
///
/// Returns `false`, doing nothing, on file systems where it does not pay
/// ([`preallocation_pays`]), where the file system cannot, and also on `ENOSPC`: a
/// compressing file system reserves the full length, so a copy that would fit may not
/// preallocate; a disk that is really full fails the copy itself, as without preallocation.
pub(super) fn preallocate(dst: &File, dst_dev: u64, len: u64) -> io::Result<bool> {
    if !preallocation_pays(dst, dst_dev) {
        return Ok(false);
    }
    let len = to_off(len)?;
    loop {
        match nix::fcntl::fallocate(dst, nix::fcntl::FallocateFlags::empty(), 0, len) {
            Ok(()) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL | Errno::ENOSPC) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Devices already asked whether preallocation pays there, with the answer: one `fstatfs`
/// per device per process, not one per file.
static PREALLOCATES: Mutex<Vec<(u64, bool)>> = Mutex::new(Vec::new());

/// Whether `fallocate` before the copy makes it faster on `dst`'s file system: on ext4 and
/// XFS, which then allocate the file's extents in one step. Nowhere else: tmpfs zeroes every
/// page it preallocates (measured: 67 ms per 256 MiB, a fifth of the whole copy, for no
/// gain), and a copy-on-write file system (btrfs) writes new extents anyway. A file system
/// that cannot be asked counts as one where it does not pay.
fn preallocation_pays(dst: &File, dst_dev: u64) -> bool {
    use nix::sys::statfs::{EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, fstatfs};
    // Held across the one `fstatfs` of a new device: it is quick, and asked once.
    let mut known = PREALLOCATES.lock();
    if let Some(&(_, pays)) = known.iter().find(|(dev, _)| *dev == dst_dev) {
        return pays;
    }
    let pays = fstatfs(dst).is_ok_and(|fs| [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC].contains(&fs.filesystem_type()));
    known.push((dst_dev, pays));
    pays
}

/// Copies the bytes `[start, end)` of `src` into `dst` at the same offsets. With
/// [`Holes::Zeros`] only the data extents are copied, less their blocks of zeros, so the holes
/// of the source stay holes in `dst`, which must then be (or be made) as long as the source
/// (`start` must be a multiple of the block size). Returns `end`.
///
/// # Errors
/// The first I/O error; `UnexpectedEof` if the source ends before `end` (it shrank while being
/// copied).
pub(super) fn copy_range(src: &File, dst: &File, start: u64, end: u64, holes: Holes) -> io::Result<u64> {
    let Holes::Zeros(block) = holes else { return copy_extent(src, dst, start, end) };
    let mut pos = start;
    while pos < end {
        let data = match nix::unistd::lseek(src, to_off(pos)?, Whence::SeekData) {
            Ok(data) => data as u64,
            // No data after `pos`: the rest is a hole, if the file still reaches `end`.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = nix::unistd::lseek(src, to_off(data)?, Whence::SeekHole).map_err(io::Error::from)? as u64;
        pos = read_write_holes(src, dst, data, hole.min(end), block)?;
    }
    if src.metadata()?.len() < end {
        return Err(shrank());
    }
    Ok(end)
}

fn shrank() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was being copied")
}

fn to_off(pos: u64) -> io::Result<i64> {
    i64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Copies `[start, end)` with `copy_file_range`, falling back to `pread`/`pwrite` where the
/// kernel cannot (across file systems on old kernels, special files).
fn copy_extent(src: &File, dst: &File, start: u64, end: u64) -> io::Result<u64> {
    let mut off_in = to_off(start)?;
    let mut off_out = off_in;
    while (off_in as u64) < end {
        let want = (end - off_in as u64).min(CHUNK) as usize;
        match nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => return Err(shrank()),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL | Errno::EPERM) => {
                return read_write(src, dst, off_in as u64, end);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(end)
}

/// Copies the whole of `src` into the empty `dst`, until `src`'s end of file: `len` (what
/// `stat` said) is only where to expect it. A file that grew is copied to its new end; one that
/// shrank to where it ends now. With [`Holes::Zeros`], only data extents are copied, less
/// their blocks of zeros (the caller sets the length). Returns the bytes the copy has.
///
/// No call is added for the usual file: `copy_file_range` is asked for more than `len`, and a
/// short answer once `len` is reached is the end of file.
pub(super) fn copy_all(src: &File, dst: &File, len: u64, holes: Holes) -> io::Result<u64> {
    if let Holes::Zeros(block) = holes {
        // The source's data extents, each to its end, blocks of zeros in them left unwritten.
        let zeros = Some(block);
        let mut pos = 0u64;
        loop {
            let data = match nix::unistd::lseek(src, to_off(pos)?, Whence::SeekData) {
                Ok(data) => data as u64,
                Err(Errno::ENXIO) => break,
                Err(e) => return Err(e.into()),
            };
            let hole = nix::unistd::lseek(src, to_off(data)?, Whence::SeekHole).map_err(io::Error::from)? as u64;
            let reached = copy_to_eof_with(src, dst, data, Some(hole), zeros)?;
            if reached < hole {
                break;
            }
            pos = hole;
        }
        return Ok(src.metadata()?.len());
    }
    let mut off_in = 0i64;
    let mut off_out = 0i64;
    let want = CHUNK as usize;
    loop {
        match nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => return Ok(off_in as u64),
            Ok(n) if n < want && off_in as u64 >= len => return Ok(off_in as u64),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL | Errno::EPERM) => {
                return copy_to_eof(src, dst, off_in as u64, None);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `pread`/`pwrite` from `start` to `end` or, without one, to the end of file; returns where
/// it stopped (short of `end` if the file ends first).
fn copy_to_eof(src: &File, dst: &File, start: u64, end: Option<u64>) -> io::Result<u64> {
    copy_to_eof_with(src, dst, start, end, None)
}

/// [`copy_to_eof`], leaving every block of `hole` bytes that holds only zeros unwritten (the
/// caller sets the length, in case the copy ends in one).
fn copy_to_eof_with(src: &File, dst: &File, start: u64, end: Option<u64>, hole: Option<usize>) -> io::Result<u64> {
    let room = end.map_or(FALLBACK_BUFFER as u64, |end| end.saturating_sub(start).min(FALLBACK_BUFFER as u64));
    let mut buf = vec![0u8; room as usize];
    let mut pos = start;
    while end.is_none_or(|end| pos < end) {
        let want = end.map_or(buf.len() as u64, |end| (end - pos).min(buf.len() as u64)) as usize;
        match src.read_at(&mut buf[..want], pos) {
            Ok(0) => break,
            Ok(n) => {
                write_at(dst, &buf[..n], pos, hole)?;
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(pos)
}

/// Writes `buf` at `pos`, or with `hole`, only its blocks of `hole` bytes (counted from the
/// start of `buf`, as cp counts them from the start of each read) that are not all zeros.
/// Neighbouring blocks to write go in one call.
fn write_at(dst: &File, buf: &[u8], pos: u64, hole: Option<usize>) -> io::Result<()> {
    let Some(block) = hole else { return dst.write_all_at(buf, pos) };
    let mut run: Option<usize> = None;
    for (i, chunk) in buf.chunks(block).enumerate() {
        let at = i * block;
        // All zeros: the first byte is, and each byte equals the next (one memcmp, as cp's
        // is_nul).
        let zeros = chunk.first() == Some(&0) && chunk[1..] == chunk[..chunk.len() - 1];
        match (zeros, run) {
            (false, None) => run = Some(at),
            (true, Some(from)) => {
                dst.write_all_at(&buf[from..at], pos + from as u64)?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(from) = run {
        dst.write_all_at(&buf[from..], pos + from as u64)?;
    }
    Ok(())
}

/// The portable path with [`Holes::Zeros`]: `[start, end)` read through a buffer, blocks of
/// zeros left unwritten; the source must reach `end`.
fn read_write_holes(src: &File, dst: &File, start: u64, end: u64, block: usize) -> io::Result<u64> {
    if copy_to_eof_with(src, dst, start, Some(end), Some(block))? < end {
        return Err(shrank());
    }
    Ok(end)
}

/// Reads `src` from where it is to its end and writes it to `dst` in order: for FIFOs and
/// devices on either side, and for files whose size says nothing (`/proc`, `/sys`: 0). An
/// empty file costs one `read`. Returns the bytes copied.
///
/// With `hole` (`--sparse=always`; `dst` must then be a regular file, written at offsets from
/// 0), blocks of zeros of each read are left unwritten, and the caller sets the length.
pub(super) fn stream(src: &File, dst: &File, hole: Option<usize>) -> io::Result<u64> {
    if hole.is_some() {
        return stream_at(src, dst, hole);
    }
    stream_in_order(src, dst)
}

fn stream_at(mut src: &File, dst: &File, hole: Option<usize>) -> io::Result<u64> {
    use std::io::Read;
    let mut buf = vec![0u8; FALLBACK_BUFFER];
    let mut total = 0u64;
    loop {
        match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                write_at(dst, &buf[..n], total, hole)?;
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn stream_in_order(mut src: &File, mut dst: &File) -> io::Result<u64> {
    use std::io::{Read, Write};
    let mut small = [0u8; 8192];
    let mut big = Vec::new();
    let mut total = 0u64;
    loop {
        let buf: &mut [u8] = if big.is_empty() { &mut small } else { &mut big };
        match src.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                dst.write_all(&buf[..n])?;
                total += n as u64;
                if big.is_empty() && n == small.len() {
                    big = vec![0u8; FALLBACK_BUFFER];
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The portable path: read and write through a buffer, at explicit offsets; the source must
/// reach `end`.
fn read_write(src: &File, dst: &File, start: u64, end: u64) -> io::Result<u64> {
    if copy_to_eof(src, dst, start, Some(end))? < end {
        return Err(shrank());
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    fn sparse_file(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
        let path = dir.join("sparse");
        let mut f = File::create(&path).unwrap();
        let mut expect = vec![0u8; 8 << 20];
        // Data at 1 MiB and at 6 MiB; holes elsewhere, including the last 1 MiB.
        for (at, byte) in [(1u64 << 20, 0xabu8), (6 << 20, 0xcd)] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&vec![byte; 100_000]).unwrap();
            expect[at as usize..at as usize + 100_000].fill(byte);
        }
        f.set_len(8 << 20).unwrap();
        (path, expect)
    }

    #[test]
    fn holes_stay_holes_and_contents_match() {
        let dir = tempfile::tempdir().unwrap();
        let (path, expect) = sparse_file(dir.path());
        let src = File::open(&path).unwrap();
        let meta = src.metadata().unwrap();
        assert!(may_be_sparse(&meta), "the test file system keeps holes");
        let out_path = dir.path().join("out");
        let dst = File::create(&out_path).unwrap();
        assert_eq!(copy_range(&src, &dst, 0, 8 << 20, Holes::Zeros(4096)).unwrap(), 8 << 20);
        dst.set_len(8 << 20).unwrap();
        assert_eq!(std::fs::read(&out_path).unwrap(), expect);
        let out_meta = dst.metadata().unwrap();
        assert!(out_meta.blocks() * 512 < 1 << 20, "copy allocated {} blocks", out_meta.blocks());
    }

    #[test]
    fn preallocated_files_have_their_blocks_and_length_before_any_byte() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(1u32 << 20) + 5).map(|i| (i % 241) as u8).collect();
        std::fs::write(dir.path().join("src"), &data).unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        if !preallocate(&dst, dst.metadata().unwrap().dev(), data.len() as u64).unwrap() {
            eprintln!("skipped: this file system cannot preallocate, or it does not pay there");
            return;
        }
        let meta = dst.metadata().unwrap();
        assert_eq!(meta.len(), data.len() as u64);
        assert!(meta.blocks() * 512 >= data.len() as u64, "only {} blocks", meta.blocks());
        copy_range(&src, &dst, 0, data.len() as u64, Holes::None).unwrap();
        assert!(std::fs::read(dir.path().join("dst")).unwrap() == data);
    }

    #[test]
    fn tmpfs_is_not_preallocated() {
        use nix::sys::statfs::{TMPFS_MAGIC, statfs};
        let shm = std::path::Path::new("/dev/shm");
        if !statfs(shm).is_ok_and(|fs| fs.filesystem_type() == TMPFS_MAGIC) {
            eprintln!("skipped: /dev/shm is not a tmpfs here");
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        let dev = dst.metadata().unwrap().dev();
        assert!(!preallocate(&dst, dev, 64 << 20).unwrap());
        let meta = dst.metadata().unwrap();
        assert_eq!((meta.len(), meta.blocks()), (0, 0), "a refused preallocation changed the file");
    }

    #[test]
    fn ranges_filled_separately_make_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_001u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.path().join("src"), &data).unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        dst.set_len(data.len() as u64).unwrap();
        // Out of order, as workers would finish them.
        for (a, b) in [(2_000_000, 3_000_001), (0, 1_000_000), (1_000_000, 2_000_000)] {
            assert_eq!(copy_range(&src, &dst, a, b, Holes::None).unwrap(), b);
            assert_eq!(read_write(&src, &dst, a, b).unwrap(), b);
        }
        assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), data);
    }

    #[test]
    fn a_range_past_the_end_is_an_error_not_a_short_copy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("src"), [7u8; 1000]).unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        for holes in [Holes::None, Holes::Zeros(4096)] {
            let e = copy_range(&src, &dst, 0, 5000, holes).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
        let e = read_write(&src, &dst, 0, 5000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_whole_copy_goes_to_the_end_of_file_whatever_size_it_was_told() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
        std::fs::write(dir.path().join("src"), &data).unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        // Told too little (it grew since stat), too much (it shrank), or 0 (/proc).
        for (told, holes) in
            [(1000, Holes::None), (5_000_000, Holes::None), (0, Holes::None), (1000, Holes::Zeros(4096))]
        {
            let out = dir.path().join(format!("out-{told}-{holes:?}"));
            let dst = File::create(&out).unwrap();
            let copied = copy_all(&src, &dst, told, holes).unwrap();
            dst.set_len(copied).unwrap();
            assert_eq!(copied, data.len() as u64, "told {told}");
            assert!(std::fs::read(&out).unwrap() == data, "told {told}");
        }
        // A small file told its size, too much, too little, 0.
        std::fs::write(dir.path().join("small"), &data[..3000]).unwrap();
        let small = File::open(dir.path().join("small")).unwrap();
        for told in [3000, 5000, 2000, 0] {
            let out = dir.path().join(format!("small-{told}"));
            let dst = File::create(&out).unwrap();
            assert_eq!(copy_all(&small, &dst, told, Holes::None).unwrap(), 3000, "told {told}");
            assert!(std::fs::read(&out).unwrap() == data[..3000], "told {told}");
        }
        // (SEEK_DATA moved the first one's position; a stream reads from where a file is.)
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::create(dir.path().join("streamed")).unwrap();
        assert_eq!(stream(&src, &dst, None).unwrap(), data.len() as u64);
        assert!(std::fs::read(dir.path().join("streamed")).unwrap() == data);
    }

    #[test]
    fn reflink_is_refused_cleanly_across_devices() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("src"), b"x").unwrap();
        let src = File::open(dir.path().join("src")).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        assert!(!reflink(&src, 1, &dst, 2));
        assert_eq!(dst.metadata().unwrap().len(), 0);
    }
}
