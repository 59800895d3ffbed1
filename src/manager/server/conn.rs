//! One accepted connection of the server: its buffers and handshake stage, reading whole
//! frames, writing replies without blocking, and passing the arena's descriptor.
//!
//! Everything here works on one socket at a time; what the bytes mean is `state.rs`'s
//! business. This module must never block: sockets are non-blocking, and what the socket does
//! not take now waits in the connection's output buffer.
//!
//! Descriptor passing (the arena's memfd, `Server::send_arena`) is `ipc::fd`'s, as is the
//! client's receiving end.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::ipc::{Blocking, fd};
use crate::manager::auth::Nonce;
use crate::manager::protocol::{self, HANDSHAKE_FRAME, HEADER, Reply};
use crate::manager::server::state::Link;

pub(super) struct Conn {
    pub(super) stream: UnixStream,
    pub(super) input: Vec<u8>,
    /// Replies not yet written; `output[..sent]` already went out (kept until the rest does,
    /// so a large lent batch is not shifted in memory after every partial write).
    pub(super) output: Vec<u8>,
    pub(super) sent: usize,
    /// How far the handshake got (`auth.rs`).
    pub(super) auth: Auth,
    /// When it was accepted: the handshake must end by [`HANDSHAKE`](super::HANDSHAKE) later.
    pub(super) since: Instant,
    /// The peer is gone or broke the protocol: cleaned up by `Server::reap`.
    pub(super) dead: bool,
    /// The process that connected (`SO_PEERCRED` at `accept`), if known: the death of a
    /// process holding permits on several connections is told once (`State::disconnect`).
    pub(super) pid: Option<u32>,
}

pub(super) enum Auth {
    /// Waiting for the client's `Hello`.
    Hello,
    /// Sent our challenge; waiting for the client's proof.
    Proof {
        nc: Nonce,
        ns: Nonce,
    },
    Done,
}

/// The connections as the object semantics see them (`state.rs`).
pub(super) struct Conns<'a>(pub(super) &'a mut HashMap<u64, Conn>);

impl Link for Conns<'_> {
    fn is_closed(&self, conn: u64) -> bool {
        self.0.get(&conn).is_none_or(|c| c.dead)
    }

    fn can_send(&mut self, conn: u64) -> bool {
        self.0.get_mut(&conn).is_some_and(|c| !over_unread(c))
    }

    fn send(&mut self, conn: u64, reply: &Reply) {
        let Some(c) = self.0.get_mut(&conn) else { return };
        if over_unread(c) {
            return;
        }
        if protocol::frame(reply, &mut c.output).is_err() {
            c.dead = true;
            return;
        }
        flush(c);
    }

    fn close(&mut self, conn: u64) {
        if let Some(c) = self.0.get_mut(&conn) {
            c.dead = true;
        }
    }
}

/// A client that asks without reading its replies is cut off once this many bytes of replies
/// wait unread (a well-behaved client has at most one reply in flight, and reads it whole
/// before it asks again, so it never has any when its next request is read).
pub(crate) const MAX_UNREAD: usize = 1 << 20;
/// What one round reads from a connection (beyond the frame it is in the middle of), so that
/// one fast writer neither starves the others nor fills the server's memory.
const READ_ROUND: usize = 256 << 10;

/// Whether `c` asked again while [`MAX_UNREAD`] bytes of replies wait unread: it is cut off
/// (marked dead, so nothing more is added to its output).
fn over_unread(c: &mut Conn) -> bool {
    if c.output.len() - c.sent > MAX_UNREAD {
        c.dead = true;
    }
    c.dead
}

/// Reads what a connection sent, up to [`READ_ROUND`] past the end of the frame it is in
/// (only a handshake frame before authentication). Returns whether the peer closed.
pub(super) fn read_some(c: &mut Conn) -> bool {
    let cap = if matches!(c.auth, Auth::Done) {
        let frame_end = protocol::frame_len(&c.input).map_or(0, |len| HEADER.saturating_add(len));
        frame_end.max(c.input.len()).saturating_add(READ_ROUND)
    } else {
        // Two handshake frames at most, and nothing past them.
        2 * (HEADER + HANDSHAKE_FRAME)
    };
    loop {
        let room = cap.saturating_sub(c.input.len());
        if room == 0 {
            return false;
        }
        // Appends what it read even when it stops at an error (`WouldBlock`).
        match (&c.stream).take(room as u64).read_to_end(&mut c.input) {
            Ok(n) if n < room => return true,
            Ok(_) => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Writes as much of the connection's pending output as the socket takes now.
pub(super) fn flush(c: &mut Conn) {
    while c.sent < c.output.len() && !c.dead {
        match fd::send_with_fds(c.stream.as_fd(), &[IoSlice::new(&c.output[c.sent..])], &[], Blocking::No) {
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => c.dead = true,
        }
    }
    if c.sent == c.output.len() {
        c.output.clear();
        c.sent = 0;
    } else if c.sent > c.output.len() / 2 {
        // Mostly written: move the rest down once, so the buffer does not grow forever
        // behind a slow reader (amortized: each byte moves at most once per halving).
        c.output.drain(..c.sent);
        c.sent = 0;
    }
}
