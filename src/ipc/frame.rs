//! The pool's framing: length-checked frames over the Unix `SOCK_SEQPACKET` sockets that
//! ipc-channel created for a worker (`channel.rs` takes them out of its channel ends), read and
//! written with plain system calls. `README.md` beside this file says why not ipc-channel's own
//! framing and how this one compares with the manager's and the fork server's.
//!
//! - A frame is one or more records (packets). The first starts with the frame's length, a
//!   little-endian `u64`, followed by the frame's first bytes; the rest follow in records of at
//!   most [`record_size`] bytes until the length is reached.
//! - A reader refuses (as a protocol violation) a length above [`MAX_FRAME`], a record longer than
//!   what is left of its frame or than a record may be, a first record shorter than the length
//!   field and attached descriptors (it offers the kernel no room for them, so they are closed
//!   unseen). End of file inside a frame is told apart: a peer that died while sending. It
//!   reserves at most [`FIRST_RESERVE`] before the bytes arrive and grows with fallible
//!   reservations, so memory follows the bytes actually sent.
//! - A writer sends with `MSG_NOSIGNAL`; a reader that died makes it fail with `EPIPE` at once,
//!   since nothing else holds the other end.
//! - One frame may carry a descriptor, on its first record ([`send_parts`]); only
//!   [`recv_with_fd`] accepts one (`fd.rs` moves it).
//!
//! This module must never panic, allocate by a number the peer sent, or block past the peer's
//! death.

use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::LazyLock;

use nix::libc;

use crate::ipc::{Blocking, fd};

/// The longest frame either side accepts (4 GiB - 1). A task whose input, or a result, is
/// longer fails with [`JobError::Serialization`](crate::JobError::Serialization).
pub(crate) const MAX_FRAME: usize = u32::MAX as usize;

/// What a reader reserves for a frame before its bytes arrive, at most.
pub(crate) const FIRST_RESERVE: usize = 64 << 20;

const LEN: usize = std::mem::size_of::<u64>();

/// The largest record, header included: what ipc-channel itself puts in one packet on this
/// system (it is sized from the socket send buffer, leaving room for the kernel's bookkeeping).
pub(crate) fn record_size() -> usize {
    static SIZE: LazyLock<usize> =
        LazyLock::new(|| ipc_channel::platform::OsIpcSender::get_max_fragment_size().clamp(4096, 1 << 20));
    *SIZE
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// End of file between frames: the peer closed its end (or died).
    Closed,
    /// The socket failed.
    Io(io::Error),
    /// The peer broke the framing; the text says how.
    Violation(String),
    /// End of file inside a frame: the peer died (or closed its end) while sending it.
    Truncated(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Closed => f.write_str("end of file"),
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::Violation(why) | FrameError::Truncated(why) => f.write_str(why),
        }
    }
}

/// Sends one frame: the length and the first bytes in one record, the rest in full records.
/// Blocks while the peer's buffer is full; fails (`EPIPE`) once the peer is gone.
pub(crate) fn send(fd: BorrowedFd<'_>, frame: &[u8]) -> io::Result<()> {
    send_parts(fd, &[frame], None)
}

/// At most this many parts make one frame in [`send_parts`].
pub(crate) const MAX_PARTS: usize = 7;

/// [`send`] for a frame made of `parts` (at most [`MAX_PARTS`], written as if concatenated),
/// with `pass` attached to its first record as `SCM_RIGHTS` (only the parent does this, and
/// only towards a worker).
pub(crate) fn send_parts(fd: BorrowedFd<'_>, parts: &[&[u8]], pass: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).fold(0, usize::saturating_add);
    if parts.len() > MAX_PARTS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many parts for one frame"));
    }
    if total > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("a frame of {total} bytes is too long")));
    }
    let header = (total as u64).to_le_bytes();
    let mut record = record_size();
    let (mut part, mut offset) = (0, 0); // where the next unsent byte is
    let mut first = true;
    loop {
        let mut iov = [IoSlice::new(&[]); MAX_PARTS + 1];
        let mut used = 0;
        let mut room = record;
        if first {
            iov[0] = IoSlice::new(&header);
            used = 1;
            room -= LEN;
        }
        let (mut p, mut o) = (part, offset);
        while room > 0 && p < parts.len() {
            let take = (parts[p].len() - o).min(room);
            if take > 0 {
                iov[used] = IoSlice::new(&parts[p][o..o + take]);
                used += 1;
            }
            room -= take;
            o += take;
            if o == parts[p].len() {
                p += 1;
                o = 0;
            }
        }
        let passed: &[BorrowedFd<'_>] = match (first, &pass) {
            (true, Some(pass)) => std::slice::from_ref(pass),
            _ => &[],
        };
        if let Err(e) = fd::send_with_fds(fd, &iov[..used], passed, Blocking::Yes) {
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The kernel could not take a record this large: use smaller ones.
                Some(libc::EMSGSIZE | libc::ENOBUFS) if record > 4096 => {
                    record /= 2;
                    continue;
                }
                _ => return Err(e),
            }
        }
        first = false;
        (part, offset) = (p, o);
        if part >= parts.len() {
            return Ok(());
        }
    }
}

/// Reads frames from one socket, into a buffer it reuses.
pub(crate) struct Reader {
    fd: OwnedFd,
    buf: Vec<u8>,
    limit: usize,
}

impl Reader {
    /// A reader of frames of at most `limit` bytes.
    pub(crate) fn new(fd: OwnedFd, limit: usize) -> Reader {
        Reader { fd, buf: Vec::new(), limit: limit.min(MAX_FRAME) }
    }

    /// The socket.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The next frame. With [`Blocking::No`], `Ok(None)` if no frame has begun; once one has,
    /// the rest is waited for.
    pub(crate) fn recv(&mut self, blocking: Blocking) -> Result<Option<&[u8]>, FrameError> {
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::new(); // do not pin a large frame's buffer between frames
        }
        self.buf.clear();
        let record = record_size();
        reserve(&mut self.buf, record)?;
        let n = match recv_record(self.fd.as_fd(), &mut self.buf, record, blocking)? {
            None => return Ok(None),
            Some(0) => return Err(FrameError::Closed),
            Some(n) => n,
        };
        if n < LEN {
            return Err(FrameError::Violation(format!("a record of {n} bytes, too short for a frame's length")));
        }
        let mut len = [0u8; LEN];
        len.copy_from_slice(&self.buf[..LEN]);
        let declared = u64::from_le_bytes(len);
        let total = match usize::try_from(declared) {
            Ok(t) if t <= self.limit => t,
            _ => {
                return Err(FrameError::Violation(format!(
                    "a frame of {declared} bytes, more than the {} a frame may have",
                    self.limit
                )));
            }
        };
        let end = total + LEN; // cannot overflow: total <= MAX_FRAME
        if n > end {
            return Err(FrameError::Violation(format!("a record of {n} bytes in a frame of {total}")));
        }
        if end > n {
            reserve(&mut self.buf, (end - n).min(FIRST_RESERVE))?;
        }
        while self.buf.len() < end {
            let want = (end - self.buf.len()).min(record);
            reserve(&mut self.buf, want)?;
            match recv_record(self.fd.as_fd(), &mut self.buf, want, Blocking::Yes)? {
                Some(0) | None => {
                    return Err(FrameError::Truncated(format!(
                        "end of file after {} of a frame's {total} bytes",
                        self.buf.len() - LEN
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(Some(&self.buf[LEN..]))
    }

    /// [`recv`](Self::recv) into a buffer of the caller's: the frame's bytes are
    /// `buf[start..]`. A large frame hands over the reader's own buffer instead of a copy.
    pub(crate) fn recv_owned(&mut self, blocking: Blocking) -> Result<Option<(Vec<u8>, usize)>, FrameError> {
        let len = match self.recv(blocking)? {
            None => return Ok(None),
            Some(frame) => frame.len(),
        };
        if len >= 64 << 10 {
            Ok(Some((std::mem::take(&mut self.buf), LEN)))
        } else {
            Ok(Some((self.buf[LEN..].to_vec(), 0)))
        }
    }
}

fn reserve(buf: &mut Vec<u8>, more: usize) -> Result<(), FrameError> {
    buf.try_reserve(more).map_err(|_| FrameError::Io(io::Error::from(io::ErrorKind::OutOfMemory)))
}

/// Receives one record into the spare capacity of `buf` (at most `max` bytes, which the caller
/// has reserved), appending it. `Ok(None)`: nothing to read without waiting. A record that does
/// not fit, or that came with descriptors, is a violation.
fn recv_record(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
    blocking: Blocking,
) -> Result<Option<usize>, FrameError> {
    let spare = buf.spare_capacity_mut();
    let max = max.min(spare.len());
    let got = match fd::recv(fd, &mut spare[..max], false, blocking) {
        Ok(got) => got,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::EAGAIN) if blocking == Blocking::No => Ok(None),
                Some(libc::ECONNRESET) => Ok(Some(0)),
                _ => Err(FrameError::Io(e)),
            };
        }
    };
    if got.fds_refused {
        return Err(FrameError::Violation("a record with file descriptors attached".into()));
    }
    if got.truncated {
        return Err(FrameError::Violation(format!("a record longer than the {max} bytes left for it")));
    }
    // SAFETY: `fd::recv` initialized the first `got.len <= max` bytes of the spare capacity,
    // just past `len`.
    unsafe { buf.set_len(buf.len() + got.len) };
    Ok(Some(got.len))
}

/// Receives the first frame on a fresh socket together with the one descriptor the parent
/// attaches to it (the worker's side of the start-up handshake). The frame must fit in one
/// record.
pub(crate) fn recv_with_fd(fd: BorrowedFd<'_>) -> Result<(Vec<u8>, Option<OwnedFd>), FrameError> {
    let record = record_size();
    // Not zeroed: writing a whole record's worth of zeros (and faulting its pages in) cost
    // every new worker more than the rest of its start; the kernel fills what it returns.
    let mut buf = Vec::new();
    reserve(&mut buf, record)?;
    let got = fd::recv(fd, &mut buf.spare_capacity_mut()[..record], true, Blocking::Yes).map_err(FrameError::Io)?;
    let n = got.len;
    // SAFETY: `fd::recv` initialized the first `n <= record` bytes of the reserved capacity.
    unsafe { buf.set_len(n) };
    let passed = got.fd;
    if n == 0 {
        return Err(FrameError::Closed);
    }
    if got.truncated || got.fds_refused || n < LEN {
        return Err(FrameError::Violation("a malformed start-up record".into()));
    }
    let mut len = [0u8; LEN];
    len.copy_from_slice(&buf[..LEN]);
    if usize::try_from(u64::from_le_bytes(len)).ok() != Some(n - LEN) {
        return Err(FrameError::Violation("a start-up frame longer than one record".into()));
    }
    buf.drain(..LEN);
    Ok((buf, passed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::channel::take_socket;
    use std::os::fd::AsRawFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        let (tx, rx) = ipc_channel::ipc::bytes_channel().unwrap();
        (take_socket(tx).unwrap(), take_socket(rx).unwrap())
    }

    #[test]
    fn frames_of_every_size_round_trip() {
        let (tx, rx) = pair();
        let mut r = Reader::new(rx, MAX_FRAME);
        let record = record_size();
        for len in [0, 1, record - LEN - 1, record - LEN, record - LEN + 1, 3 * record + 17, 5 << 20] {
            let frame: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let t = std::thread::spawn({
                let tx = tx.try_clone().unwrap();
                move || send(tx.as_fd(), &frame).map(|()| frame)
            });
            let got = r.recv(Blocking::Yes).unwrap().unwrap().to_vec();
            assert_eq!(got, t.join().unwrap().unwrap(), "length {len}");
        }
        assert!(r.recv(Blocking::No).unwrap().is_none());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_any_allocation() {
        let (tx, rx) = pair();
        let mut r = Reader::new(rx, 1000);
        raw(&tx, &[&u64::MAX.to_le_bytes()[..]]);
        assert!(matches!(r.recv(Blocking::Yes), Err(FrameError::Violation(_))));
        raw(&tx, &[&1001u64.to_le_bytes()[..]]);
        assert!(matches!(r.recv(Blocking::Yes), Err(FrameError::Violation(_))));
    }

    #[test]
    fn broken_framing_is_a_violation_not_a_panic() {
        let (tx, rx) = pair();
        let mut r = Reader::new(rx, MAX_FRAME);
        raw(&tx, &[b"abc"]); // shorter than the length field
        assert!(matches!(r.recv(Blocking::Yes), Err(FrameError::Violation(_))));
        raw(&tx, &[&2u64.to_le_bytes()[..], b"abcdef"]); // more bytes than declared
        assert!(matches!(r.recv(Blocking::Yes), Err(FrameError::Violation(_))));
        raw(&tx, &[&4u64.to_le_bytes()[..], b"ab"]);
        raw(&tx, &[b"abcdef"]); // a follow-up longer than what is left
        assert!(matches!(r.recv(Blocking::Yes), Err(FrameError::Violation(_))));
        // Descriptors attached to a record.
        let (a, _b) = pair();
        send_parts(tx.as_fd(), &[b"x"], Some(a.as_fd())).unwrap();
        assert!(matches!(r.recv(Blocking::Yes), Err(FrameError::Violation(_))));
        // End of file inside a frame.
        raw(&tx, &[&100u64.to_le_bytes()[..], b"ab"]);
        drop(tx);
        assert!(matches!(r.recv(Blocking::Yes), Err(FrameError::Truncated(_))));
        assert!(matches!(r.recv(Blocking::Yes), Err(FrameError::Closed)));
    }

    #[test]
    fn a_descriptor_travels_with_the_first_frame() {
        let (tx, rx) = pair();
        let (a, b) = pair();
        send_parts(tx.as_fd(), &[b"he", b"llo"], Some(a.as_fd())).unwrap();
        let (frame, fd) = recv_with_fd(rx.as_fd()).unwrap();
        assert_eq!(frame, b"hello");
        send(fd.unwrap().as_fd(), b"through it").unwrap();
        assert_eq!(Reader::new(b, 100).recv(Blocking::Yes).unwrap().unwrap(), b"through it");
    }

    #[test]
    fn a_writer_fails_at_once_when_its_reader_dies_mid_frame() {
        let (tx, rx) = pair();
        let t = std::thread::spawn(move || send(tx.as_fd(), &vec![1u8; 64 << 20]));
        std::thread::sleep(std::time::Duration::from_millis(20)); // let it fill the buffer
        drop(rx);
        assert!(t.join().unwrap().is_err());
    }

    /// One record of the concatenated `parts`, written with no framing of ours.
    pub(crate) fn raw(fd: &OwnedFd, parts: &[&[u8]]) {
        let bytes = parts.concat();
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        assert_eq!(n as usize, bytes.len());
    }
}
