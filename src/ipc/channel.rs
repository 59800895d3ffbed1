//! The socket inside an ipc-channel channel end: ipc-channel creates the pool's sockets and
//! carries them through the fork server, and [`take_socket`] hands the raw socket to our own
//! framing (`frame.rs`; why not ipc-channel's: `README.md` beside this file).
//!
//! ipc-channel is pinned to `=0.23.1` in `Cargo.toml` because of this module: 0.23 offers no
//! accessor for the descriptor, so it is read from the end's `Debug` output.
//!
//! This module must never return a descriptor it has not checked to be an open Unix
//! `SOCK_SEQPACKET` socket, nor one the caller does not own.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::libc;

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

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::ipc::Blocking;
    use crate::ipc::frame::{FrameError, MAX_FRAME, Reader, send};

    #[test]
    fn both_ends_of_an_ipc_bytes_channel_are_found() {
        let (tx, rx) = ipc_channel::ipc::bytes_channel().unwrap();
        let (tx2, rx2) = ipc_channel::ipc::bytes_channel().unwrap();
        // Our framing one way, ipc-channel's the other: the sockets found are the right ones.
        let txs = take_socket(tx).unwrap();
        let mut r = Reader::new(take_socket(rx).unwrap(), MAX_FRAME);
        send(txs.as_fd(), b"hello").unwrap();
        assert_eq!(r.recv(Blocking::Yes).unwrap().unwrap(), b"hello");
        drop(txs);
        assert!(matches!(r.recv(Blocking::Yes), Err(FrameError::Closed)));
        let raw_tx = take_socket(tx2.clone()).unwrap();
        drop(raw_tx);
        tx2.send(b"via ipc").unwrap();
        assert_eq!(rx2.recv().unwrap(), b"via ipc");
        assert!(take_socket("no descriptor here").is_err());
        assert!(take_socket("fd: 0").is_err(), "stdin is not a seqpacket socket");
    }
}
