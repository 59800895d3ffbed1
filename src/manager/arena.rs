//! The shared-memory lane for large queue items.
//!
//! Through the sockets, a 64 KiB item is copied four times by the kernel (producer to
//! server, server to consumer) and several more times in user space. Instead, the server
//! owns one memfd, the *arena* ([`CHUNKS`] chunks of [`CHUNK`] bytes), that a client process
//! maps once, after receiving it over its socket (`SCM_RIGHTS`). A producing process is
//! granted a chunk, serializes items straight into it and tells the server only where each
//! one is (`PutShared`); the server lends that position to a consumer, which copies the
//! bytes out of its mapping into private memory and deserializes that copy (shared bytes are
//! never decoded in place: another process may write them meanwhile). The payload is copied
//! three times in all, all in user space, and the server never touches it.
//!
//! Who may touch which bytes (this is what makes the unsynchronized accesses sound):
//! - a chunk is granted to one connection at a time: a process's put connection
//!   (`client/putter.rs`), on which it also sends its `PutShared` frames, so the server sees every
//!   put into a chunk before the chunk is given up. Only that process writes the chunk, and
//!   only past the items it already sent;
//! - an item's bytes are read only while the item is lent to the reader (between the `Get`
//!   reply and its `Ack`), or by the server while it holds the item;
//! - the server grants a chunk again only once its holder gave it up (asked for another, or
//!   its connection closed) and every item in it was acknowledged.
//!
//! A process that dies half-way through writing an item never sent its position: nothing
//! refers to those bytes, and its chunk is given up when the kernel closes its connection.
//!
//! The lane carries puts to unbounded queues of items from [`SHARED_MIN`] to [`CHUNK`]
//! bytes. Everything else goes inline through the sockets, and so does everything while the
//! arena is full or when it cannot be made or mapped: the lane is a shortcut, never a
//! requirement. Clients are trusted as far as the secret says: a process holding it could
//! scribble on items in the arena, as it could put garbage into a queue. It cannot make
//! anyone fault or race: the memfd is sealed against shrinking and growing before it is
//! handed out (and a client maps only a descriptor that carries those seals and the arena's
//! size), positions from messages are checked against the arena's bounds, and bytes in the
//! arena are only ever copied in and out with raw copies, then decoded from a private copy
//! as untrusted input ([`Mapping`]).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::MFdFlags;
use serde::Serialize;

/// Bytes per chunk: the largest item the lane carries.
pub(crate) const CHUNK: usize = 1 << 20;
/// Chunks in an arena (64 MiB, allocated by the kernel only as pages are first written).
pub(crate) const CHUNKS: usize = 64;
/// Smaller items go inline: for them the sockets cost no more than the lane's bookkeeping.
pub(crate) const SHARED_MIN: usize = 4 << 10;

/// Where an item lies in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) chunk: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

impl Span {
    /// The offset from the start of the arena.
    pub(crate) fn at(self) -> u64 {
        self.chunk as u64 * CHUNK as u64 + self.offset as u64
    }

    /// The span at `at`, if it lies within one chunk.
    pub(crate) fn from_at(at: u64, len: u32) -> Option<Span> {
        let chunk = u32::try_from(at / CHUNK as u64).ok()?;
        let offset = (at % CHUNK as u64) as u32;
        ((chunk as usize) < CHUNKS && offset as usize + len as usize <= CHUNK).then_some(Span { chunk, offset, len })
    }
}

/// One process's mapping of an arena.
///
/// The bytes are shared with other processes, which may break the rules above (a peer holding
/// the secret can write anywhere in the arena at any moment). So no reference to them is ever
/// made: items are copied in and out with raw copies ([`read`](Self::read),
/// [`write`](Self::write)), and what is read is decoded from the private copy as untrusted
/// bytes. A racing writer can only make that copy garbage, which fails to decode.
#[derive(Debug)]
pub(crate) struct Mapping {
    raw: MmapRaw,
}

/// The seals an arena must carry before anyone maps it: its size can never change, so no
/// access inside the mapping can fault (`SIGBUS`) because someone truncated the file.
const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW).union(SealFlag::F_SEAL_SEAL);

impl Mapping {
    /// Maps `file` if it is a sealed memfd of an arena's size (a descriptor from a peer may
    /// be anything).
    pub(crate) fn new(file: &File) -> std::io::Result<Mapping> {
        let seals = SealFlag::from_bits_retain(fcntl(file, FcntlArg::F_GET_SEALS)?);
        if !seals.contains(SEALS) {
            return Err(std::io::Error::other("the arena is not sealed against resizing"));
        }
        if file.metadata()?.len() != (CHUNKS * CHUNK) as u64 {
            return Err(std::io::Error::other("the arena has the wrong size"));
        }
        Ok(Mapping { raw: MmapOptions::new().len(CHUNKS * CHUNK).map_raw(file)? })
    }

    /// Where `span` starts in the mapping, if all of it lies inside.
    fn start(&self, span: Span) -> Option<usize> {
        let start = usize::try_from(span.at()).ok()?;
        (start.checked_add(span.len as usize)? <= self.raw.len()).then_some(start)
    }

    /// Copies the bytes of `span` into `out` (replacing what it held). `false` if the span
    /// does not lie in the arena.
    pub(crate) fn read(&self, span: Span, out: &mut Vec<u8>) -> bool {
        self.read_at(span, out, 0).is_some()
    }

    /// Copies the bytes of `span` into `out` from `skew` on (what `out` held before is
    /// replaced; its first `skew` bytes are left as some initialized bytes) and returns them.
    /// `None` if the span does not lie in the arena.
    pub(crate) fn read_at<'a>(&self, span: Span, out: &'a mut Vec<u8>, skew: usize) -> Option<&'a [u8]> {
        let start = self.start(span)?;
        let len = span.len as usize;
        out.resize(skew, 0);
        out.reserve(len);
        // SAFETY: `start..start + len` lies inside the mapping (checked above), which lives
        // as long as `self` and cannot shrink under us (sealed, checked in `new`); `out` has
        // room for `len` bytes past its `skew` initialized ones and does not overlap the
        // mapping. No reference to the shared
        // bytes is made: they are copied as they are at this moment into memory we own (if a
        // peer writes them meanwhile, against the protocol, the copy is garbage that fails
        // to decode). All `len` bytes of `out` are then initialized.
        unsafe {
            std::ptr::copy_nonoverlapping(self.raw.as_ptr().add(start), out.as_mut_ptr().add(skew), len);
            out.set_len(skew + len);
        }
        Some(&out[skew..])
    }

    /// Serializes `item` into `span` (at most `span.len` bytes), returning how many bytes it
    /// took, or `None` if it does not fit or the span does not lie in the arena.
    ///
    /// The caller's process holds `span`'s chunk and has not sent the position of any item in
    /// `span`, so by the protocol nobody else reads or writes those bytes meanwhile; if a peer
    /// does anyway, it only spoils an item, as it could by putting garbage.
    pub(crate) fn write<T: Serialize>(&self, span: Span, item: &T) -> Option<usize> {
        let start = self.start(span)?;
        // SAFETY: `start` lies inside the mapping, `span.len` bytes from it too (checked by
        // `start`); the pointer is valid for writes for as long as `self` lives.
        let at = unsafe { self.raw.as_mut_ptr().add(start) };
        postcard::serialize_with_flavor(item, Writer { at, room: span.len as usize, used: 0 }).ok()
    }
}

/// A postcard output that copies into shared memory through a raw pointer (never a `&mut`
/// to bytes another process can see).
struct Writer {
    at: *mut u8,
    room: usize,
    used: usize,
}

impl postcard::ser_flavors::Flavor for Writer {
    type Output = usize;

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > self.room - self.used {
            return Err(postcard::Error::SerializeBufferFull);
        }
        // SAFETY: `at..at + room` is valid for writes (see `Mapping::write`) and
        // `used + data.len() <= room` (checked above); `data` is our own memory, not the
        // mapping, so they do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.at.add(self.used), data.len()) };
        self.used += data.len();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.used)
    }
}

/// The server's side: the memfd and who holds which chunk.
pub(crate) struct Arena {
    file: File,
    mapping: Mapping,
    chunks: Vec<Chunk>,
    /// Chunks nobody holds and nothing lives in; the most recently freed last, so the pages
    /// that are already allocated and warm are used again first.
    free: Vec<u32>,
}

#[derive(Clone, Copy)]
struct Chunk {
    /// The connection writing into it.
    holder: Option<u64>,
    /// Items in it that are not yet acknowledged.
    live: u32,
}

impl Arena {
    pub(crate) fn new() -> std::io::Result<Arena> {
        let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        let fd: OwnedFd = nix::sys::memfd::memfd_create(c"stealpool-manager-arena", flags)?;
        let file = File::from(fd);
        file.set_len((CHUNKS * CHUNK) as u64)?;
        // Neither a client nor this process can change its size from now on.
        fcntl(&file, FcntlArg::F_ADD_SEALS(SEALS))?;
        let mapping = Mapping::new(&file)?;
        Ok(Arena {
            file,
            mapping,
            chunks: vec![Chunk { holder: None, live: 0 }; CHUNKS],
            free: (0..CHUNKS as u32).rev().collect(),
        })
    }

    /// The memfd, to be sent to a client.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// `conn` gives up `retire` (if it holds it) and is granted a free chunk, if there is one.
    /// A connection holds one chunk at most: whatever it held is given up, named or not.
    pub(crate) fn grant(&mut self, conn: u64, retire: Option<u32>) -> Option<u32> {
        if let Some(old) = retire
            && self.chunks.get(old as usize).is_some_and(|c| c.holder == Some(conn))
        {
            self.give_up(old);
        } else {
            self.closed(conn);
        }
        let chunk = self.free.pop()?;
        self.chunks[chunk as usize].holder = Some(conn);
        Some(chunk)
    }

    /// Takes in an item `conn` wrote: its span must lie in a chunk `conn` holds.
    pub(crate) fn put(&mut self, conn: u64, span: Span) -> bool {
        match self.chunks.get_mut(span.chunk as usize) {
            Some(c) if c.holder == Some(conn) && span.offset as usize + span.len as usize <= CHUNK => {
                c.live += 1;
                true
            }
            _ => false,
        }
    }

    /// An item is gone for good (acknowledged, or copied out inline).
    pub(crate) fn release(&mut self, span: Span) {
        let c = &mut self.chunks[span.chunk as usize];
        c.live = c.live.saturating_sub(1);
        if c.live == 0 && c.holder.is_none() {
            self.free.push(span.chunk);
        }
    }

    /// `conn` closed: it writes no more.
    pub(crate) fn closed(&mut self, conn: u64) {
        for chunk in 0..CHUNKS as u32 {
            if self.chunks[chunk as usize].holder == Some(conn) {
                self.give_up(chunk);
            }
        }
    }

    fn give_up(&mut self, chunk: u32) {
        let c = &mut self.chunks[chunk as usize];
        c.holder = None;
        if c.live == 0 {
            self.free.push(chunk);
        }
    }

    /// A copy of an item the server holds (for a client that has no mapping).
    pub(crate) fn copy(&self, span: Span) -> Vec<u8> {
        let mut copy = Vec::new();
        // Spans the server holds were checked when they came in (`Span::from_at`).
        self.mapping.read(span, &mut copy);
        copy
    }
}
