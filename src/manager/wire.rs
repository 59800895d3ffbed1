//! The client's side of the manager's sockets: addresses, connections, and the per-process
//! pool of idle connections.
//!
//! A handle (a `Queue`, a `Lock`, ...) is plain data: the manager's address, a secret token,
//! and an object id. Whoever holds one, in whatever process, connects on first use; idle
//! connections are kept per process and reused. A connection carries one request at a time;
//! a thread blocked in `get` holds its own connection, others take other connections.
//!
//! This module must never let a broken connection back into the pool.

use std::collections::HashMap;
use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::Arc;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::ManagerError;
use crate::manager::protocol::{self, HEADER, MAX_FRAME, Reply, Request};

/// Where a manager listens (a Linux abstract socket name, so nothing is left on disk when it
/// dies) and the token a client must show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Address {
    pub(crate) name: String,
    pub(crate) token: [u8; 16],
}

impl Address {
    pub(crate) fn socket_addr(&self) -> io::Result<SocketAddr> {
        SocketAddr::from_abstract_name(self.name.as_bytes())
    }
}

/// Writes with `MSG_NOSIGNAL`: a peer that is gone is an error, never a `SIGPIPE` that could
/// kill a program which restored the default disposition.
pub(crate) fn send(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    nix::sys::socket::send(stream.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
}

fn send_all(stream: &UnixStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match send(stream, buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Compares tokens without stopping at the first difference.
pub(crate) fn same_token(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 16 bytes from the kernel's random source.
pub(crate) fn random_token() -> io::Result<[u8; 16]> {
    let mut token = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut token)?;
    Ok(token)
}

/// One connection to a manager.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(address: &Address) -> Result<Conn, ManagerError> {
        let addr = address.socket_addr().map_err(|_| ManagerError::Disconnected)?;
        let stream = UnixStream::connect_addr(&addr).map_err(|_| ManagerError::Disconnected)?;
        let mut conn = Conn { stream, buf: Vec::with_capacity(256) };
        match conn.call(&Request::Hello { token: address.token })? {
            Reply::Done => Ok(conn),
            _ => Err(ManagerError::Disconnected),
        }
    }

    /// Sends a request and reads its reply. `Err(Disconnected)` means this connection is
    /// finished; any other error leaves it usable.
    pub(crate) fn call(&mut self, request: &Request) -> Result<Reply, ManagerError> {
        self.send_only(request)?;
        let mut header = [0u8; HEADER];
        (&self.stream).read_exact(&mut header).map_err(|_| ManagerError::Disconnected)?;
        self.read_reply(header)
    }

    /// As [`call`](Self::call), for a reply that may carry a file descriptor (`SCM_RIGHTS`).
    pub(crate) fn call_with_fd(&mut self, request: &Request) -> Result<(Reply, Option<OwnedFd>), ManagerError> {
        self.send_only(request)?;
        let mut header = [0u8; HEADER];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let (got, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut header)];
            match recvmsg::<()>(self.stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(msg) => {
                    let fd = msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
                        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                        _ => None,
                    });
                    break (msg.bytes, fd);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return Err(ManagerError::Disconnected),
            }
        };
        // SAFETY: the kernel just installed this descriptor in our table for this message
        // (`SCM_RIGHTS`); nothing else knows of it, so we are its only owner.
        let fd = fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        if got == 0 {
            return Err(ManagerError::Disconnected);
        }
        (&self.stream).read_exact(&mut header[got..]).map_err(|_| ManagerError::Disconnected)?;
        Ok((self.read_reply(header)?, fd))
    }

    /// Reads the rest of a reply whose header was read.
    fn read_reply(&mut self, header: [u8; HEADER]) -> Result<Reply, ManagerError> {
        let len = u32::from_le_bytes(header) as usize;
        if len > MAX_FRAME {
            return Err(ManagerError::Disconnected);
        }
        self.buf.clear();
        self.buf.resize(len, 0);
        (&self.stream).read_exact(&mut self.buf).map_err(|_| ManagerError::Disconnected)?;
        let reply: Reply = postcard::from_bytes(&self.buf).map_err(|_| ManagerError::Disconnected)?;
        self.trim();
        Ok(reply)
    }

    /// Sends a request that has no reply.
    pub(crate) fn send_only(&mut self, request: &Request) -> Result<(), ManagerError> {
        self.buf.clear();
        protocol::frame(request, &mut self.buf).map_err(|e| ManagerError::Serialization(e.to_string()))?;
        send_all(&self.stream, &self.buf).map_err(|_| ManagerError::Disconnected)?;
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
pub(crate) fn take(address: &Address) -> Result<Conn, ManagerError> {
    match IDLE.with(|idle| idle.get_mut(&address.name).and_then(Vec::pop)) {
        Some(c) => Ok(c),
        None => Conn::open(address),
    }
}

/// Returns a healthy connection to the pool.
pub(crate) fn give_back(address: &Address, conn: Conn) {
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
pub(crate) fn call(address: &Arc<Address>, request: &Request) -> Result<Reply, ManagerError> {
    let mut conn = take(address)?;
    let reply = conn.call(request);
    if !matches!(reply, Err(ManagerError::Disconnected)) {
        give_back(address, conn);
    }
    reply
}
