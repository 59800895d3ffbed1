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
use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::sockopt::PeerCredentials;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, getsockopt, recvmsg};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::deadline;
use crate::manager::auth::{self, Nonce, Secret};
use crate::manager::error::ErrorKind;
use crate::manager::protocol::{self, ErrorCode, HANDSHAKE_FRAME, HEADER, MAX_FRAME, Reply, Request, WaitLimit};

/// Where a manager listens (a Linux abstract socket name, so nothing is left on disk when it
/// dies) and the secret both ends prove they know (`auth.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Address {
    pub(crate) name: String,
    pub(crate) secret: Secret,
}

impl Address {
    pub(crate) fn socket_addr(&self) -> io::Result<SocketAddr> {
        SocketAddr::from_abstract_name(self.name.as_bytes())
    }
}

/// How long the handshake of a new connection may take at most, whatever the call.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// How much later than its own deadline a timed call still waits for the server's answer
/// (the server answers at the deadline; this covers its lateness under load). Past it, the
/// client gives up on its own and closes the connection, which undoes whatever the server
/// might still do for it (lent items go back, a lock acquired late is released).
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// Writes with `MSG_NOSIGNAL`: a peer that is gone is an error, never a `SIGPIPE` that could
/// kill a program which restored the default disposition.
pub(crate) fn send(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    nix::sys::socket::send(stream.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
}

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

fn send_all(stream: &UnixStream, mut buf: &[u8], deadline: Option<Instant>) -> Result<(), Stop> {
    let flags = match deadline {
        None => MsgFlags::MSG_NOSIGNAL,
        Some(_) => MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    };
    while !buf.is_empty() {
        match nix::sys::socket::send(stream.as_raw_fd(), buf, flags) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) if let Some(d) = deadline => ready(stream, PollFlags::POLLOUT, d)?,
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
/// (`SCM_RIGHTS`), if any, given up at `deadline` ([`HANDSHAKE`] at a time without one).
/// Returns how many bytes came (0: the peer closed). The client's one `recvmsg`; the server's
/// one `sendmsg` is `send_with_fd` in `server/conn.rs`.
fn recv_with_fd(
    stream: &UnixStream,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<(usize, Option<OwnedFd>), Stop> {
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let (got, fd) = loop {
        if let Some(d) = deadline {
            ready(stream, PollFlags::POLLIN, d)?;
        }
        let mut iov = [IoSliceMut::new(buf)];
        let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT;
        match recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Ok(msg) => {
                let fd = msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
                    ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                });
                break (msg.bytes, fd);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) if deadline.is_none() => {
                ready(stream, PollFlags::POLLIN, Instant::now() + HANDSHAKE)?;
            }
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => return Err(Stop::Closed),
        }
    };
    // SAFETY: the kernel just installed this descriptor in our table for this message
    // (`SCM_RIGHTS`); nothing else knows of it, so we are its only owner.
    let fd = fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    Ok((got, fd))
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
        let deadline = earliest(deadline, deadline::after(HANDSHAKE));
        let result = self.call_with_fd_by(request, deadline);
        if result.is_err() {
            self.abandoned = true;
        }
        result.map_err(|_| ErrorKind::Disconnected)
    }

    fn call_with_fd_by(
        &mut self,
        request: &Request,
        deadline: Option<Instant>,
    ) -> Result<(Reply, Option<OwnedFd>), Stop> {
        self.send_by(request, deadline)?;
        let mut header = [0u8; HEADER];
        let (got, fd) = recv_with_fd(&self.stream, &mut header, deadline)?;
        if got == 0 {
            return Err(Stop::Closed);
        }
        read_exact(&self.stream, &mut header[got..], deadline)?;
        let reply = self.body(header, deadline, MAX_FRAME)?;
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
        self.buf.clear();
        self.buf.resize(len, 0);
        read_exact(&self.stream, &mut self.buf, deadline)?;
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

/// State that belongs to one process. A child forked while it was filled must not use its
/// parent's copy (sockets shared with the parent, whose frames would interleave with ours;
/// arena chunks the parent writes into): the pid recorded with the state tells, and the child
/// starts afresh. Dropping the stale copy closes nothing of the parent's.
pub(crate) struct PerProcess<T> {
    state: Mutex<Option<(u32, T)>>,
}

impl<T: Default> PerProcess<T> {
    pub(crate) const fn new() -> Self {
        PerProcess { state: Mutex::new(None) }
    }

    /// Runs `f` on this process's state (under a lock: keep it short).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let pid = std::process::id();
        let mut state = self.state.lock();
        if state.as_ref().is_none_or(|(p, _)| *p != pid) {
            *state = Some((pid, T::default()));
        }
        f(&mut state.as_mut().expect("set above").1)
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
