//! The byte transport between the pool and its workers: frames of our own framing over the
//! Unix `SOCK_SEQPACKET` sockets that ipc-channel created for the worker, read and written by
//! this module with plain system calls.
//!
//! Why not ipc-channel's own `send` / `recv` (0.23): its receiver trusts the peer. It reads a
//! total length from the first packet and reserves that much at once (`reserve_exact`; a huge
//! length aborts the process on the failed allocation, one smaller than the packet underflows),
//! unwraps the follow-up channel it expects beside a long message (a panic if the peer sent
//! none), and maps every descriptor that arrives that is not a socket as shared memory, asserting
//! that `mmap` works (a panic for a pipe). Its sender keeps the receiving end of a long message's
//! follow-up channel open until the whole message is written, so a receiver that dies after the
//! first packet leaves the sender blocked for ever. None of this can be guarded from outside, so
//! the pool keeps ipc-channel only to create the sockets and carry them through the fork server,
//! and moves its frames itself:
//!
//! - A frame is one or more records (packets). The first starts with the frame's length, a
//!   little-endian `u64`, followed by the frame's first bytes; the rest follow in records of at
//!   most [`record_size`] bytes until the length is reached.
//! - A reader refuses (as a protocol violation) a length above [`MAX_FRAME`], a record longer than
//!   what is left of its frame or than a record may be, a first record shorter than the length
//!   field and attached descriptors (it offers the kernel no room for them, so they are closed
//!   unseen). End of file inside a frame is told apart: a peer that died while sending. It reserves at most [`FIRST_RESERVE`] before the
//!   bytes arrive and grows with fallible reservations, so memory follows the bytes actually sent.
//! - A writer sends with `MSG_NOSIGNAL`; a reader that died makes it fail with `EPIPE` at once,
//!   since nothing else holds the other end.
//!
//! This module must never panic, allocate by a number the peer sent, or block past the peer's
//! death.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::LazyLock;

use nix::libc;

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
pub(crate) enum WireError {
    /// End of file between frames: the peer closed its end (or died).
    Closed,
    /// The socket failed.
    Io(io::Error),
    /// The peer broke the framing; the text says how.
    Violation(String),
    /// End of file inside a frame: the peer died (or closed its end) while sending it.
    Truncated(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Closed => f.write_str("end of file"),
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Violation(why) | WireError::Truncated(why) => f.write_str(why),
        }
    }
}

/// Takes the socket out of an ipc-channel bytes channel end: a duplicate of its descriptor,
/// owned by the caller (the end itself is then dropped).
///
/// ipc-channel 0.23 offers no accessor for the descriptor; its channel ends derive `Debug`,
/// which prints it (`... { fd: SharedFileDescriptor(7) }`, `... { fd: Cell { value: 7 } }`).
/// The version is pinned in `Cargo.toml`, the descriptor found must be an open Unix
/// `SOCK_SEQPACKET` socket, and a unit test checks both ends against real traffic, so a change
/// of that format fails loudly instead of picking another descriptor.
pub(crate) fn take_socket<E: fmt::Debug>(end: E) -> io::Result<OwnedFd> {
    let text = format!("{end:?}");
    let mut numbers = text.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    let fd = match (numbers.next(), numbers.next()) {
        (Some(n), None) if text.contains("fd") => n.parse::<RawFd>().ok(),
        _ => None,
    };
    let Some(fd) = fd.filter(|&fd| fd >= 0) else {
        return Err(io::Error::other(format!("cannot find the descriptor of an ipc-channel end in `{text}`")));
    };
    // SAFETY: F_GETFD only reads the flags of `fd` in this process' table; on a closed
    // descriptor it fails with EBADF and touches nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked just above) and stays open while `end`, which owns it, is
    // alive, which it is until the end of this function.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if sockopt(borrowed, libc::SO_DOMAIN)? != libc::AF_UNIX || sockopt(borrowed, libc::SO_TYPE)? != libc::SOCK_SEQPACKET
    {
        return Err(io::Error::other(format!("descriptor {fd} of an ipc-channel end is not a Unix seqpacket socket")));
    }
    let own = borrowed.try_clone_to_owned()?;
    drop(end);
    Ok(own)
}

fn sockopt(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds the size of `value`.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, name, (&raw mut value).cast(), &raw mut len) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(value) }
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
        let empty = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let mut iov = [empty; MAX_PARTS + 1];
        let mut used = 0;
        let mut room = record;
        if first {
            iov[0] = libc::iovec { iov_base: header.as_ptr() as *mut libc::c_void, iov_len: LEN };
            used = 1;
            room -= LEN;
        }
        let (mut p, mut o) = (part, offset);
        while room > 0 && p < parts.len() {
            let take = (parts[p].len() - o).min(room);
            if take > 0 {
                iov[used] = libc::iovec { iov_base: parts[p][o..].as_ptr() as *mut libc::c_void, iov_len: take };
                used += 1;
            }
            room -= take;
            o += take;
            if o == parts[p].len() {
                p += 1;
                o = 0;
            }
        }
        let mut cmsg = [0u64; 4]; // room for one descriptor's control message, aligned
        // SAFETY: an all-zero msghdr is a valid empty message header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = used as _;
        if let (true, Some(pass)) = (first, pass) {
            // SAFETY: CMSG_SPACE is a pure size computation.
            let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
            msg.msg_control = cmsg.as_mut_ptr().cast();
            msg.msg_controllen = space.min(std::mem::size_of_val(&cmsg)) as _;
            // SAFETY: the control buffer is `msg_controllen` bytes long, aligned for cmsghdr and
            // large enough for one header and one descriptor, so CMSG_FIRSTHDR is non-null and
            // CMSG_DATA points at room for one `RawFd`.
            unsafe {
                let h = libc::CMSG_FIRSTHDR(&msg);
                (*h).cmsg_level = libc::SOL_SOCKET;
                (*h).cmsg_type = libc::SCM_RIGHTS;
                (*h).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
                libc::CMSG_DATA(h).cast::<RawFd>().write_unaligned(pass.as_raw_fd());
            }
        }
        // SAFETY: `msg` points at iovecs over live buffers (`header`, `parts`) and, if set, at
        // the control buffer above; all outlive the call.
        let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
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

/// Whether [`Reader::recv`] waits for a frame to begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    Yes,
    No,
}

impl Reader {
    /// A reader of frames of at most `limit` bytes.
    pub(crate) fn new(fd: OwnedFd, limit: usize) -> Reader {
        Reader { fd, buf: Vec::new(), limit: limit.min(MAX_FRAME) }
    }

    /// The socket.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The next frame. With [`Wait::No`], `Ok(None)` if no frame has begun; once one has, the
    /// rest is waited for.
    pub(crate) fn recv(&mut self, wait: Wait) -> Result<Option<&[u8]>, WireError> {
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::new(); // do not pin a large frame's buffer between frames
        }
        self.buf.clear();
        let record = record_size();
        reserve(&mut self.buf, record)?;
        let flags = if wait == Wait::No { libc::MSG_DONTWAIT } else { 0 };
        let n = match recv_record(self.fd.as_raw_fd(), &mut self.buf, record, flags)? {
            None => return Ok(None),
            Some(0) => return Err(WireError::Closed),
            Some(n) => n,
        };
        if n < LEN {
            return Err(WireError::Violation(format!("a record of {n} bytes, too short for a frame's length")));
        }
        let mut len = [0u8; LEN];
        len.copy_from_slice(&self.buf[..LEN]);
        let declared = u64::from_le_bytes(len);
        let total = match usize::try_from(declared) {
            Ok(t) if t <= self.limit => t,
            _ => {
                return Err(WireError::Violation(format!(
                    "a frame of {declared} bytes, more than the {} a frame may have",
                    self.limit
                )));
            }
        };
        let end = total + LEN; // cannot overflow: total <= MAX_FRAME
        if n > end {
            return Err(WireError::Violation(format!("a record of {n} bytes in a frame of {total}")));
        }
        if end > n {
            reserve(&mut self.buf, (end - n).min(FIRST_RESERVE))?;
        }
        while self.buf.len() < end {
            let want = (end - self.buf.len()).min(record);
            reserve(&mut self.buf, want)?;
            match recv_record(self.fd.as_raw_fd(), &mut self.buf, want, 0)? {
                Some(0) | None => {
                    return Err(WireError::Truncated(format!(
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
    pub(crate) fn recv_owned(&mut self, wait: Wait) -> Result<Option<(Vec<u8>, usize)>, WireError> {
        let len = match self.recv(wait)? {
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

fn reserve(buf: &mut Vec<u8>, more: usize) -> Result<(), WireError> {
    buf.try_reserve(more).map_err(|_| WireError::Io(io::Error::from(io::ErrorKind::OutOfMemory)))
}

/// Receives one record into the spare capacity of `buf` (at most `max` bytes, which the caller
/// has reserved), appending it. `Ok(None)`: nothing to read without waiting. A record that does
/// not fit, or that came with descriptors, is a violation.
fn recv_record(fd: RawFd, buf: &mut Vec<u8>, max: usize, flags: libc::c_int) -> Result<Option<usize>, WireError> {
    let spare = buf.spare_capacity_mut();
    let max = max.min(spare.len());
    let mut iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: max };
    // SAFETY: an all-zero msghdr is a valid empty message header (no name, no control buffer).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    let n = loop {
        // SAFETY: the iovec covers `max` bytes of `buf`'s spare capacity, writable and not
        // otherwise borrowed during the call.
        let n = unsafe { libc::recvmsg(fd, &raw mut msg, flags) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) if flags & libc::MSG_DONTWAIT != 0 => return Ok(None),
            Some(libc::ECONNRESET) => return Ok(Some(0)),
            _ => return Err(WireError::Io(e)),
        }
    };
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(WireError::Violation("a record with file descriptors attached".into()));
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(WireError::Violation(format!("a record longer than the {max} bytes left for it")));
    }
    // SAFETY: the kernel wrote `n <= max` bytes into the spare capacity just past `len`.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(Some(n))
}

/// Receives the first frame on a fresh socket together with the one descriptor the parent
/// attaches to it (the worker's side of the start-up handshake). The frame must fit in one
/// record.
pub(crate) fn recv_with_fd(fd: BorrowedFd<'_>) -> Result<(Vec<u8>, Option<OwnedFd>), WireError> {
    let record = record_size();
    // Not zeroed: writing a whole record's worth of zeros (and faulting its pages in) cost
    // every new worker more than the rest of its start; the kernel fills what it returns.
    let mut buf = Vec::new();
    reserve(&mut buf, record)?;
    let mut cmsg = [0u64; 4];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: record };
    // SAFETY: an all-zero msghdr is a valid empty message header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
    let n = loop {
        // SAFETY: the iovec covers `buf` and the control pointer covers `cmsg`, both writable
        // for the lengths given.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(WireError::Io(e));
        }
    };
    // SAFETY: `recvmsg` wrote `n` bytes into the iovec, which covers the first `record` bytes
    // of `buf`'s reserved capacity, so `n <= record <= capacity` and those bytes are initialized.
    unsafe { buf.set_len(n.min(record)) };
    let mut passed = None;
    // SAFETY: the kernel filled `msg.msg_control` with well-formed control messages and set
    // `msg_controllen`; CMSG_FIRSTHDR / CMSG_NXTHDR walk only within it.
    unsafe {
        let mut h = libc::CMSG_FIRSTHDR(&msg);
        while !h.is_null() {
            if (*h).cmsg_level == libc::SOL_SOCKET && (*h).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(h).cast::<RawFd>();
                let count =
                    ((*h).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = data.add(i).read_unaligned();
                    // The kernel installed these descriptors for us: each is ours to own.
                    let own = OwnedFd::from_raw_fd(fd);
                    if passed.is_none() {
                        passed = Some(own);
                    }
                }
            }
            h = libc::CMSG_NXTHDR(&msg, h);
        }
    }
    if n == 0 {
        return Err(WireError::Closed);
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || n < LEN {
        return Err(WireError::Violation("a malformed start-up record".into()));
    }
    let mut len = [0u8; LEN];
    len.copy_from_slice(&buf[..LEN]);
    if usize::try_from(u64::from_le_bytes(len)).ok() != Some(n - LEN) {
        return Err(WireError::Violation("a start-up frame longer than one record".into()));
    }
    buf.drain(..LEN);
    Ok((buf, passed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        let (tx, rx) = ipc_channel::ipc::bytes_channel().unwrap();
        (take_socket(tx).unwrap(), take_socket(rx).unwrap())
    }

    #[test]
    fn both_ends_of_an_ipc_bytes_channel_are_found() {
        let (tx, rx) = ipc_channel::ipc::bytes_channel().unwrap();
        let (tx2, rx2) = ipc_channel::ipc::bytes_channel().unwrap();
        // Our framing one way, ipc-channel's the other: the sockets found are the right ones.
        let txs = take_socket(tx).unwrap();
        let mut r = Reader::new(take_socket(rx).unwrap(), MAX_FRAME);
        send(txs.as_fd(), b"hello").unwrap();
        assert_eq!(r.recv(Wait::Yes).unwrap().unwrap(), b"hello");
        drop(txs);
        assert!(matches!(r.recv(Wait::Yes), Err(WireError::Closed)));
        let raw_tx = take_socket(tx2.clone()).unwrap();
        drop(raw_tx);
        tx2.send(b"via ipc").unwrap();
        assert_eq!(rx2.recv().unwrap(), b"via ipc");
        assert!(take_socket("no descriptor here").is_err());
        assert!(take_socket("fd: 0").is_err(), "stdin is not a seqpacket socket");
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
            let got = r.recv(Wait::Yes).unwrap().unwrap().to_vec();
            assert_eq!(got, t.join().unwrap().unwrap(), "length {len}");
        }
        assert!(r.recv(Wait::No).unwrap().is_none());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_any_allocation() {
        let (tx, rx) = pair();
        let mut r = Reader::new(rx, 1000);
        raw(&tx, &[&u64::MAX.to_le_bytes()[..]]);
        assert!(matches!(r.recv(Wait::Yes), Err(WireError::Violation(_))));
        raw(&tx, &[&1001u64.to_le_bytes()[..]]);
        assert!(matches!(r.recv(Wait::Yes), Err(WireError::Violation(_))));
    }

    #[test]
    fn broken_framing_is_a_violation_not_a_panic() {
        let (tx, rx) = pair();
        let mut r = Reader::new(rx, MAX_FRAME);
        raw(&tx, &[b"abc"]); // shorter than the length field
        assert!(matches!(r.recv(Wait::Yes), Err(WireError::Violation(_))));
        raw(&tx, &[&2u64.to_le_bytes()[..], b"abcdef"]); // more bytes than declared
        assert!(matches!(r.recv(Wait::Yes), Err(WireError::Violation(_))));
        raw(&tx, &[&4u64.to_le_bytes()[..], b"ab"]);
        raw(&tx, &[b"abcdef"]); // a follow-up longer than what is left
        assert!(matches!(r.recv(Wait::Yes), Err(WireError::Violation(_))));
        // Descriptors attached to a record.
        let (a, _b) = pair();
        send_parts(tx.as_fd(), &[b"x"], Some(a.as_fd())).unwrap();
        assert!(matches!(r.recv(Wait::Yes), Err(WireError::Violation(_))));
        // End of file inside a frame.
        raw(&tx, &[&100u64.to_le_bytes()[..], b"ab"]);
        drop(tx);
        assert!(matches!(r.recv(Wait::Yes), Err(WireError::Truncated(_))));
        assert!(matches!(r.recv(Wait::Yes), Err(WireError::Closed)));
    }

    #[test]
    fn a_descriptor_travels_with_the_first_frame() {
        let (tx, rx) = pair();
        let (a, b) = pair();
        send_parts(tx.as_fd(), &[b"he", b"llo"], Some(a.as_fd())).unwrap();
        let (frame, fd) = recv_with_fd(rx.as_fd()).unwrap();
        assert_eq!(frame, b"hello");
        send(fd.unwrap().as_fd(), b"through it").unwrap();
        assert_eq!(Reader::new(b, 100).recv(Wait::Yes).unwrap().unwrap(), b"through it");
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
