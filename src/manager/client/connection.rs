//! The client's side of the manager's sockets: addresses, connections, and the per-process
//! pool of idle connections.
//!
//! A handle (a `Queue`, a `Lock`, ...) is plain data: the manager's address, its secret, and
//! an object id. Whoever holds one, in whatever process, connects on first use; idle
//! connections are kept per process and reused. A connection carries one request at a time;
//! a thread blocked in `get` holds its own connection, others take other connections.
//!
//! This module must never let a broken connection back into the pool.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::sockopt::PeerCredentials;
use nix::sys::socket::{MsgFlags, getsockopt};

use crate::deadline;
use crate::ipc::{Blocking, PerProcess, fd};
use crate::manager::auth::{self, Nonce};
use crate::manager::error::ErrorKind;
use crate::manager::protocol::{
    self, Address, ErrorCode, HANDSHAKE_FRAME, HEADER, MAX_FRAME, Reply, Request, WaitLimit,
};

/// How long the handshake of a new connection may take at most, whatever the call.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// How much later than its own deadline a timed call still waits for the server's answer
/// (the server answers at the deadline; this covers its lateness under load). Past it, the
/// client gives up on its own and closes the connection, which undoes whatever the server
/// might still do for it (lent items go back, a lock acquired late is released).
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// Why a read or a write on a connection stopped.
enum Stop {
    /// The connection is finished (closed, broken, or the peer broke the protocol).
    Closed,
    /// The deadline passed first.
    Expired,
}

/// Waits until `stream` is ready for `flags` or `deadline` passes.
fn ready(stream: &UnixStream, flags: PollFlags, deadline: Instant) -> Result<(), Stop> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Stop::Expired);
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(stream.as_fd(), flags)];
        match nix::poll::poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => return Ok(()),
            Err(_) => return Err(Stop::Closed),
        }
    }
}

/// How far past the bytes of a reply that came its buffer is reserved, at most: a whole
/// batch of lent items (at most 1 MiB) at once, never the 1 GiB a header may claim.
const AHEAD: usize = 1 << 20;

/// Writes all of `buf`, with `MSG_NOSIGNAL` (`ipc::fd::send_with_fds`: a peer that is gone is
/// an error, never a `SIGPIPE` that could kill a program which restored the default
/// disposition), giving up at `deadline` (if any).
fn send_all(stream: &UnixStream, mut buf: &[u8], deadline: Option<Instant>) -> Result<(), Stop> {
    let blocking = if deadline.is_some() { Blocking::No } else { Blocking::Yes };
    while !buf.is_empty() {
        match fd::send_with_fds(stream.as_fd(), &[IoSlice::new(buf)], &[], blocking) {
            Ok(n) => buf = &buf[n..],
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    && let Some(d) = deadline =>
            {
                ready(stream, PollFlags::POLLOUT, d)?;
            }
            Err(_) => return Err(Stop::Closed),
        }
    }
    Ok(())
}

/// Fills `buf` from `stream`, giving up at `deadline` (if any).
fn read_exact(stream: &UnixStream, mut buf: &mut [u8], deadline: Option<Instant>) -> Result<(), Stop> {
    let Some(deadline) = deadline else {
        return (&*stream).read_exact(buf).map_err(|_| Stop::Closed);
    };
    while !buf.is_empty() {
        ready(stream, PollFlags::POLLIN, deadline)?;
        match nix::sys::socket::recv(stream.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Err(Stop::Closed),
            Ok(n) => buf = &mut buf[n..],
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(_) => return Err(Stop::Closed),
        }
    }
    Ok(())
}

/// Reads what has arrived (at least one byte, at most `buf.len()`, which must not be 0) into
/// `buf`, waiting for it until `deadline` (if any). End of file is [`Stop::Closed`].
/// Descriptors attached to these bytes are closed by the kernel (no room is offered).
fn recv_some(stream: &UnixStream, buf: &mut [MaybeUninit<u8>], deadline: Option<Instant>) -> Result<usize, Stop> {
    let blocking = if deadline.is_some() { Blocking::No } else { Blocking::Yes };
    loop {
        if let Some(d) = deadline {
            ready(stream, PollFlags::POLLIN, d)?;
        }
        match fd::recv(stream.as_fd(), buf, false, blocking) {
            Ok(got) if got.len == 0 => return Err(Stop::Closed),
            Ok(got) => return Ok(got.len),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(_) => return Err(Stop::Closed),
        }
    }
}

/// The client-side deadline of a request that waits, and the reply that stands for "nothing
/// came in time" if the server has not answered by then. `None`: the request waits as long
/// as it takes (no wait, or `WaitLimit::Forever`).
fn patience(request: &Request) -> Option<(Instant, Reply)> {
    let (wait, expired) = match request {
        Request::Get { wait, .. } => (*wait, Reply::Failed(ErrorCode::Empty)),
        Request::Put { wait, .. } => (*wait, Reply::Failed(ErrorCode::Full)),
        Request::Acquire { wait: WaitLimit::No, .. } => (WaitLimit::No, Reply::Failed(ErrorCode::WouldBlock)),
        Request::Acquire { wait, .. } | Request::WaitBarrier { wait, .. } => (*wait, Reply::Failed(ErrorCode::Timeout)),
        Request::WaitEvent { wait, .. } => (*wait, Reply::Flag(false)),
        _ => return None,
    };
    Some((client_deadline(wait)?, expired))
}

/// When a client stops waiting for the answer to a request that waits as `wait` says:
/// [`GRACE`] after the server should have answered. `None`: never.
pub(crate) fn client_deadline(wait: WaitLimit) -> Option<Instant> {
    match wait {
        WaitLimit::Forever => None,
        WaitLimit::No => deadline::after(GRACE),
        WaitLimit::Micros(us) => deadline::after(Duration::from_micros(us))?.checked_add(GRACE),
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads the first bytes of a message into `buf`, with the descriptor attached to them
/// (`SCM_RIGHTS`), if any, given up at `deadline`. Returns how many bytes came (0: the peer
/// closed). The receiving is `ipc::fd::recv_into`, which owns every descriptor the kernel
/// installs and closes all but the first, so a hostile server cannot leak descriptors into
/// this process; descriptors beyond the room offered (the kernel closed them) are a broken
/// peer. The server's sending end is `Server::send_arena`, over `ipc::fd::send_with_fds`.
fn recv_with_fd(stream: &UnixStream, buf: &mut [u8], deadline: Instant) -> Result<(usize, Option<OwnedFd>), Stop> {
    loop {
        ready(stream, PollFlags::POLLIN, deadline)?;
        match fd::recv_into(stream.as_fd(), buf, true, Blocking::No) {
            Ok(got) if got.truncated || got.fds_refused => return Err(Stop::Closed),
            Ok(got) => return Ok((got.len, got.fd)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(_) => return Err(Stop::Closed),
        }
    }
}

/// One connection to a manager.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// A call gave up waiting: a late reply may still come, so the connection must not be
    /// used again (nor go back to the pool).
    abandoned: bool,
}

impl Conn {
    /// Connects and authenticates (`auth.rs`), within `deadline` and [`HANDSHAKE`].
    fn open(address: &Address, deadline: Option<Instant>) -> Result<Conn, ErrorKind> {
        let addr = address.socket_addr().map_err(|_| ErrorKind::Disconnected)?;
        let stream = UnixStream::connect_addr(&addr).map_err(|_| ErrorKind::Disconnected)?;
        // Only a manager of our own user can be ours (another user may have taken the name of
        // one that is gone); the proof below is what settles it.
        let uid = getsockopt(&stream, PeerCredentials).map_err(|_| ErrorKind::Disconnected)?.uid();
        if uid != nix::unistd::geteuid().as_raw() {
            return Err(ErrorKind::Disconnected);
        }
        let deadline = earliest(deadline, deadline::after(HANDSHAKE));
        let mut conn = Conn { stream, buf: Vec::with_capacity(256), abandoned: false };
        let nc: Nonce = auth::random().map_err(|_| ErrorKind::Disconnected)?;
        let closed = |_| ErrorKind::Disconnected;
        conn.send_by(&Request::Hello { nonce: nc }, deadline).map_err(closed)?;
        let Reply::Challenge { nonce: ns, proof } = conn.reply_by(deadline, HANDSHAKE_FRAME).map_err(closed)? else {
            return Err(ErrorKind::Disconnected);
        };
        if !auth::check_server(&address.secret, &nc, &ns, &proof) {
            // Not our manager: it gets nothing more from us.
            return Err(ErrorKind::Disconnected);
        }
        conn.send_by(&Request::Proof { proof: auth::client_proof(&address.secret, &ns, &nc) }, deadline)
            .map_err(closed)?;
        match conn.reply_by(deadline, HANDSHAKE_FRAME).map_err(closed)? {
            Reply::Done => Ok(conn),
            _ => Err(ErrorKind::Disconnected),
        }
    }

    /// Sends a request and reads its reply. `Err(Disconnected)` means this connection is
    /// finished; any other error leaves it usable. A request that waits on the server keeps
    /// its deadline here too ([`GRACE`] later): a server that does not answer by then gets
    /// the connection closed, and the call the answer "nothing came in time".
    pub(crate) fn call(&mut self, request: &Request) -> Result<Reply, ErrorKind> {
        let (deadline, expired) = patience(request).unzip();
        let result = match self.send_by(request, deadline) {
            Ok(()) => self.reply_by(deadline, MAX_FRAME),
            Err(e) => Err(e),
        };
        match (result, expired) {
            (Ok(reply), _) => Ok(reply),
            (Err(Stop::Expired), Some(expired)) => {
                self.abandoned = true;
                Ok(expired)
            }
            (Err(_), _) => Err(ErrorKind::Disconnected),
        }
    }

    /// As [`call`](Self::call), for a reply that may carry a file descriptor (`SCM_RIGHTS`),
    /// given up at `deadline` or [`HANDSHAKE`] from now, whichever comes first (the
    /// connection is then abandoned).
    pub(crate) fn call_with_fd(
        &mut self,
        request: &Request,
        deadline: Option<Instant>,
    ) -> Result<(Reply, Option<OwnedFd>), ErrorKind> {
        let deadline = earliest(deadline, deadline::after(HANDSHAKE)).unwrap_or_else(Instant::now);
        let result = self.call_with_fd_by(request, deadline);
        if result.is_err() {
            self.abandoned = true;
        }
        result.map_err(|_| ErrorKind::Disconnected)
    }

    fn call_with_fd_by(&mut self, request: &Request, deadline: Instant) -> Result<(Reply, Option<OwnedFd>), Stop> {
        self.send_by(request, Some(deadline))?;
        let mut header = [0u8; HEADER];
        let (got, fd) = recv_with_fd(&self.stream, &mut header, deadline)?;
        if got == 0 {
            return Err(Stop::Closed);
        }
        read_exact(&self.stream, &mut header[got..], Some(deadline))?;
        let reply = self.body(header, Some(deadline), MAX_FRAME)?;
        Ok((reply, fd))
    }

    /// Reads a reply of at most `limit` bytes.
    fn reply_by(&mut self, deadline: Option<Instant>, limit: usize) -> Result<Reply, Stop> {
        let mut header = [0u8; HEADER];
        read_exact(&self.stream, &mut header, deadline)?;
        self.body(header, deadline, limit)
    }

    /// Reads the rest of a reply whose header was read.
    fn body(&mut self, header: [u8; HEADER], deadline: Option<Instant>, limit: usize) -> Result<Reply, Stop> {
        let len = u32::from_le_bytes(header) as usize;
        if len > limit {
            return Err(Stop::Closed);
        }
        // Memory follows the bytes that came, not the length the server claimed: at most
        // [`AHEAD`] is reserved past them (fallibly), and bytes go into the reserve unzeroed.
        self.buf.clear();
        while self.buf.len() < len {
            let want = (len - self.buf.len()).min(AHEAD);
            self.buf.try_reserve(want).map_err(|_| Stop::Closed)?;
            let n = recv_some(&self.stream, &mut self.buf.spare_capacity_mut()[..want], deadline)?;
            // SAFETY: `recv_some` initialized the first `n` bytes of the spare capacity (`n` is
            // at most `want`, which `try_reserve` made room for).
            unsafe { self.buf.set_len(self.buf.len() + n) };
        }
        let reply: Reply = postcard::from_bytes(&self.buf).map_err(|_| Stop::Closed)?;
        self.trim();
        Ok(reply)
    }

    /// Sends a request that has no reply.
    pub(crate) fn send_only(&mut self, request: &Request) -> Result<(), ErrorKind> {
        self.buf.clear();
        protocol::frame(request, &mut self.buf).map_err(|e| ErrorKind::Serialization(e.to_string()))?;
        send_all(&self.stream, &self.buf, None).map_err(|_| ErrorKind::Disconnected)?;
        self.trim();
        Ok(())
    }

    fn send_by(&mut self, request: &Request, deadline: Option<Instant>) -> Result<(), Stop> {
        self.buf.clear();
        protocol::frame(request, &mut self.buf).map_err(|_| Stop::Closed)?;
        send_all(&self.stream, &self.buf, deadline)?;
        self.trim();
        Ok(())
    }

    /// Does not keep a large buffer between requests.
    fn trim(&mut self) {
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::with_capacity(256);
        }
    }
}

/// Idle connections of this process, by manager name.
static IDLE: PerProcess<HashMap<String, Vec<Conn>>> = PerProcess::new();

/// At most this many idle connections are kept per manager.
const MAX_IDLE: usize = 64;

/// An idle connection to `address`, or a new one.
pub(crate) fn take(address: &Address) -> Result<Conn, ErrorKind> {
    take_by(address, None)
}

/// An idle connection to `address`, or a new one whose handshake ends by `request`'s
/// client-side deadline (see [`Conn::call`]).
pub(crate) fn take_for(address: &Address, request: &Request) -> Result<Conn, ErrorKind> {
    take_by(address, patience(request).map(|(d, _)| d))
}

pub(crate) fn take_by(address: &Address, deadline: Option<Instant>) -> Result<Conn, ErrorKind> {
    match IDLE.with(|idle| idle.get_mut(&address.name).and_then(Vec::pop)) {
        Some(c) => Ok(c),
        None => Conn::open(address, deadline),
    }
}

/// Returns a healthy connection to the pool (one whose call gave up waiting is closed).
pub(crate) fn give_back(address: &Address, conn: Conn) {
    if conn.abandoned {
        return;
    }
    IDLE.with(|idle| {
        let list = idle.entry(address.name.clone()).or_default();
        if list.len() < MAX_IDLE {
            list.push(conn);
        }
    });
}

/// Closes this process's idle connections to a manager that is shutting down.
pub(crate) fn forget(address: &Address) {
    IDLE.with(|idle| idle.remove(&address.name));
}

/// Runs one request on a pooled connection.
pub(crate) fn call(address: &Arc<Address>, request: &Request) -> Result<Reply, ErrorKind> {
    let mut conn = take_for(address, request)?;
    let reply = conn.call(request);
    if !matches!(reply, Err(ErrorKind::Disconnected)) {
        give_back(address, conn);
    }
    reply
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use serde_bytes::ByteBuf;

    use super::*;
    use crate::manager::protocol::ItemPayload;

    #[test]
    fn a_reply_that_claims_a_gigabyte_costs_only_the_bytes_that_came() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let mut conn = Conn { stream: client, buf: Vec::new(), abandoned: false };
        server.write_all(&[7; 1000]).unwrap();
        let header = (MAX_FRAME as u32).to_le_bytes();
        let got = conn.body(header, deadline::after(Duration::from_millis(50)), MAX_FRAME);
        assert!(matches!(got, Err(Stop::Expired)), "the rest never came");
        assert_eq!(conn.buf.len(), 1000);
        assert!(conn.buf.capacity() <= 2 * AHEAD, "reserved {} for 1000 bytes", conn.buf.capacity());
        drop(server);
        assert!(matches!(conn.body(header, None, MAX_FRAME), Err(Stop::Closed)), "end of file half-way");
    }

    #[test]
    fn a_reply_larger_than_the_reserve_arrives_in_pieces() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let mut conn = Conn { stream: client, buf: Vec::new(), abandoned: false };
        let items = || (0..5u8).map(|i| ItemPayload::Inline(ByteBuf::from(vec![i; AHEAD - 3]))).collect();
        let mut frames = Vec::new();
        protocol::frame(&Reply::Items(items()), &mut frames).unwrap();
        protocol::frame(&Reply::Items(items()), &mut frames).unwrap();
        let writer = std::thread::spawn(move || {
            for piece in frames.chunks(300_001) {
                server.write_all(piece).unwrap();
            }
            server
        });
        // Once blocking, once with a deadline.
        for wait in [None, deadline::after(Duration::from_secs(30))] {
            let Ok(Reply::Items(got)) = conn.reply_by(wait, MAX_FRAME) else { panic!("no reply") };
            assert_eq!(got.len(), 5);
            for (i, item) in got.iter().enumerate() {
                assert!(
                    matches!(item, ItemPayload::Inline(b) if b.len() == AHEAD - 3 && b.iter().all(|&x| x == i as u8))
                );
            }
        }
        drop(writer.join().unwrap());
    }
}
