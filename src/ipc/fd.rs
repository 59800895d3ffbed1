//! Descriptor passing (`SCM_RIGHTS`) over Unix sockets, seqpacket or stream: the one sender and
//! the one receiver for every side that passes a descriptor (the pool hands a worker its slot,
//! the manager hands a client its arena).
//!
//! The sender is nix's safe `sendmsg`. The receiver calls `recvmsg` itself, because it must be
//! able to write into memory not yet initialized (a worker's first record is received into
//! reserved, unzeroed capacity: zeroing it cost every new worker more than the rest of its
//! start), which nix's `IoSliceMut` cannot express.
//!
//! Every descriptor the kernel installs is owned at once, close-on-exec (`MSG_CMSG_CLOEXEC`):
//! the first is handed to the caller, the others are closed, so a peer that attaches more than
//! one leaks nothing into this process. A receive that offers no room for descriptors makes the
//! kernel close whatever came (and say so with `MSG_CTRUNC`, reported as
//! [`Received::fds_refused`]).
//!
//! This module must never leave a received descriptor unowned, read a control message outside
//! the buffer it offered, or block when asked not to.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;
use nix::sys::socket::{ControlMessage, MsgFlags};

use crate::ipc::Blocking;

/// At most this many descriptors go with one message (and fit in the room a receiver offers).
pub(crate) const MAX_FDS: usize = 4;

/// Room for the control message of [`MAX_FDS`] descriptors, aligned for `cmsghdr`.
type ControlBuf = [u64; 4];

/// Sends `bufs` as one message with `fds` (at most [`MAX_FDS`]) attached as `SCM_RIGHTS`, and
/// `MSG_NOSIGNAL` (a peer that is gone is `EPIPE`, never a signal). Retries `EINTR`. Returns
/// the bytes sent: on a seqpacket socket all of them (or `EMSGSIZE`), on a stream possibly
/// fewer, the descriptors travelling with the first byte. With [`Blocking::No`], a full socket
/// is `WouldBlock`.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    blocking: Blocking,
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors for one message"));
    }
    let mut raw: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    for (r, fd) in raw.iter_mut().zip(fds) {
        *r = fd.as_raw_fd();
    }
    let rights = [ControlMessage::ScmRights(&raw[..fds.len()])];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let mut flags = MsgFlags::MSG_NOSIGNAL;
    if blocking == Blocking::No {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    loop {
        match nix::sys::socket::sendmsg::<()>(sock.as_raw_fd(), bufs, cmsgs, flags, None) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What one [`recv`] took from the socket.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes written at the start of the buffer (0: end of file).
    pub(crate) len: usize,
    /// The first descriptor that came with them, close-on-exec; any others were closed.
    pub(crate) fd: Option<OwnedFd>,
    /// `MSG_TRUNC`: the record was longer than the buffer; the rest of it is lost (seqpacket).
    pub(crate) truncated: bool,
    /// `MSG_CTRUNC`: descriptors came that found no room (none was offered, or more than
    /// [`MAX_FDS`]); the kernel closed those.
    pub(crate) fds_refused: bool,
}

/// Receives one message (a record on a seqpacket socket; what is there, up to `buf`'s length,
/// on a stream) into `buf`, which need not be initialized: on success its first
/// [`Received::len`] bytes are. `take_fds`: offer room for up to [`MAX_FDS`] descriptors;
/// without it any that come are closed by the kernel. Retries `EINTR`; with [`Blocking::No`],
/// nothing to read is `WouldBlock`. Other errors (`ECONNRESET`, ...) are the caller's to read.
pub(crate) fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
    take_fds: bool,
    blocking: Blocking,
) -> io::Result<Received> {
    let mut control: ControlBuf = [0; 4];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is a valid empty message header (no name, no control buffer).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if take_fds {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
    }
    let mut flags = libc::MSG_CMSG_CLOEXEC;
    if blocking == Blocking::No {
        flags |= libc::MSG_DONTWAIT;
    }
    let n = loop {
        // SAFETY: the iovec covers `buf`, writable for its length and not otherwise borrowed
        // during the call; the control pointer, if set, covers `control`, writable for
        // `msg_controllen` bytes.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, flags) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    };
    let mut fd = None;
    if take_fds {
        // SAFETY: the kernel filled `msg.msg_control` with well-formed control messages and set
        // `msg_controllen` to their length (at most the buffer's); CMSG_FIRSTHDR / CMSG_NXTHDR
        // walk only within it, and CMSG_DATA of an `SCM_RIGHTS` message points at `count`
        // descriptors inside it.
        unsafe {
            let mut h = libc::CMSG_FIRSTHDR(&msg);
            while !h.is_null() {
                if (*h).cmsg_level == libc::SOL_SOCKET && (*h).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(h).cast::<RawFd>();
                    let count = ((*h).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        let raw = data.add(i).read_unaligned();
                        // The kernel installed these descriptors for us: each is ours to own
                        // (and to close, unless it is the first).
                        let own = OwnedFd::from_raw_fd(raw);
                        if fd.is_none() {
                            fd = Some(own);
                        }
                    }
                }
                h = libc::CMSG_NXTHDR(&msg, h);
            }
        }
    }
    Ok(Received {
        len: n.min(buf.len()),
        fd,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        fds_refused: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// [`recv`] into initialized memory (a stream's frame header, say).
#[cfg_attr(
    not(any(test, feature = "manager")),
    expect(dead_code, reason = "the manager's client is its one user (the pool receives into reserved memory)")
)]
pub(crate) fn recv_into(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    take_fds: bool,
    blocking: Blocking,
) -> io::Result<Received> {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and `recv` only ever stores bytes into
    // the buffer (the kernel writes data, never uninitialized memory), so `buf` stays
    // initialized.
    let uninit = unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [MaybeUninit<u8>]) };
    recv(sock, uninit, take_fds, blocking)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    /// Whether every copy of the write end of the pipe whose read end is `read` is closed:
    /// a read then says end of file instead of "would block".
    fn writers_closed(read: &OwnedFd) -> bool {
        let mut byte = [0u8; 1];
        // SAFETY: `byte` is valid for writes of one byte.
        let n = unsafe { libc::read(read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        n == 0
    }

    fn nonblocking_pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).unwrap()
    }

    #[test]
    fn a_descriptor_travels_over_a_stream_with_the_first_byte() {
        let (a, b) = UnixStream::pair().unwrap();
        let (pr, pw) = nix::unistd::pipe().unwrap();
        let sent = send_with_fds(a.as_fd(), &[IoSlice::new(b"he"), IoSlice::new(b"llo")], &[pw.as_fd()], Blocking::Yes)
            .unwrap();
        assert_eq!(sent, 5);
        drop(pw);
        // A stream reader may take the message in pieces: the descriptor comes with the first.
        let mut head = [0u8; 2];
        let got = recv_into(b.as_fd(), &mut head, true, Blocking::Yes).unwrap();
        assert_eq!((got.len, &head, got.truncated, got.fds_refused), (2, b"he", false, false));
        let fd = got.fd.expect("the descriptor");
        // SAFETY: F_GETFD only reads the flags of a descriptor we own.
        assert_ne!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC, 0, "close-on-exec");
        let mut rest = [0u8; 3];
        (&b).read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"llo");
        std::fs::File::from(fd).write_all(b"x").unwrap();
        let mut x = [0u8; 1];
        std::fs::File::from(pr).read_exact(&mut x).unwrap();
        assert_eq!(&x, b"x", "the received descriptor is the pipe's write end");
        assert!(matches!(
            recv_into(b.as_fd(), &mut head, true, Blocking::No),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        ));
        drop(a);
        assert_eq!(recv_into(b.as_fd(), &mut head, true, Blocking::No).unwrap().len, 0, "end of file");
    }

    #[test]
    fn descriptors_beyond_the_first_and_refused_ones_are_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r1, w1) = nonblocking_pipe();
        let (r2, w2) = nonblocking_pipe();
        let (r3, w3) = nonblocking_pipe();
        send_with_fds(a.as_fd(), &[IoSlice::new(b"x")], &[w1.as_fd(), w2.as_fd(), w3.as_fd()], Blocking::Yes).unwrap();
        drop((w1, w2, w3));
        let mut buf = [0u8; 8];
        let got = recv_into(b.as_fd(), &mut buf, true, Blocking::Yes).unwrap();
        assert!(got.fd.is_some() && !got.fds_refused);
        assert!(!writers_closed(&r1), "the first is the caller's");
        assert!(writers_closed(&r2) && writers_closed(&r3), "the others are closed, not leaked");
        drop(got);
        assert!(writers_closed(&r1));

        // No room offered: the kernel closes what came, and says so.
        let (r4, w4) = nonblocking_pipe();
        send_with_fds(a.as_fd(), &[IoSlice::new(b"y")], &[w4.as_fd()], Blocking::Yes).unwrap();
        drop(w4);
        let got = recv_into(b.as_fd(), &mut buf, false, Blocking::Yes).unwrap();
        assert!(got.fd.is_none() && got.fds_refused && got.len == 1);
        assert!(writers_closed(&r4));

        let too_many = [a.as_fd(); MAX_FDS + 1];
        assert!(send_with_fds(a.as_fd(), &[IoSlice::new(b"z")], &too_many, Blocking::Yes).is_err());
    }

    #[test]
    fn a_seqpacket_record_longer_than_the_buffer_is_marked_truncated() {
        let (a, b) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        assert_eq!(send_with_fds(a.as_fd(), &[IoSlice::new(b"abcdef")], &[], Blocking::Yes).unwrap(), 6);
        let mut buf = [MaybeUninit::uninit(); 4];
        let got = recv(b.as_fd(), &mut buf, false, Blocking::Yes).unwrap();
        assert!(got.truncated && got.len == 4 && got.fd.is_none());
        drop(a);
        assert_eq!(recv(b.as_fd(), &mut buf, true, Blocking::Yes).unwrap().len, 0);
    }
}
