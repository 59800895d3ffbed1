//! The manager's server: one thread, one `poll` loop over the listener and every connection.
//!
//! All state lives in this thread and is touched by nothing else, so there are no locks to
//! get wrong: a request is applied whole or not at all, in the order the server reads it. This
//! file is the I/O half: accepting (same uid, within the caps), the handshake, reading whole
//! frames and writing replies, the arena's fd passing, and the two things that need sockets
//! in the middle of a request (reading what others already sent, taking back a stalled
//! consumer's items). What a request does to the objects is `state.rs` (with `objects.rs`);
//! who waits and until when is `waiters.rs`. Neither touches a socket: they answer through
//! the [`Link`] implemented here.
//!
//! Robustness rests on one fact: the kernel closes every socket of a process that dies, however
//! it dies, and the server sees the end of file. Then the server releases what the connection
//! held (locks and permits, marking the object so the next owner learns of the death), forgets
//! its parked request (a dead `get` never swallows an item), puts back an item it was sent but
//! never acknowledged, and breaks a barrier it was waiting at. A request cut off half-way is
//! never applied, because a request is only read once its whole frame has arrived.
//!
//! This module must never block on a client: sockets are non-blocking and unsent replies wait
//! in a per-connection buffer.

mod conn;
mod objects;
mod state;
mod waiters;

#[cfg(test)]
mod test;

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::getsockopt;
use nix::sys::socket::sockopt::PeerCredentials;
use serde_bytes::ByteBuf;

use crate::ipc::{Blocking, fd};
use crate::manager::arena::Arena;
use crate::manager::auth::{self, Secret};
use crate::manager::protocol::{self, ErrorCode, HANDSHAKE_FRAME, HEADER, MAX_FRAME, Reply, Request, WaitLimit};
use crate::manager::server::conn::{Auth, Conn, Conns, flush, read_some};
use crate::manager::server::state::{GetStart, Link, State};

pub(crate) struct Server {
    listener: UnixListener,
    waker: UnixStream,
    secret: Secret,
    /// Our effective uid: only peers of the same uid are accepted.
    uid: u32,
    conns: HashMap<u64, Conn>,
    /// Connections still in their handshake.
    handshaking: usize,
    /// After an `accept` failed for want of resources (`EMFILE`, ...): the listener is left
    /// alone until this moment, and the next pause after another failure.
    accept_pause: Option<(Instant, Duration)>,
    /// Connections refused at `accept` (another uid, or over a cap).
    pub(crate) refused: u64,
    /// Inside [`Server::reclaim_stale`] (which does not nest).
    reclaiming: bool,
    next_conn: u64,
    /// Inside [`Server::drain_others`] (which does not nest).
    draining: bool,
    /// The objects and what each connection holds of them.
    state: State,
}

/// A connection must finish its handshake within this time of being accepted.
pub(crate) const HANDSHAKE: Duration = Duration::from_secs(2);
/// At most this many connections are served at once; more are closed at `accept`.
pub(crate) const MAX_CONNS: usize = 4096;
/// At most this many of them may be in their handshake.
pub(crate) const MAX_HANDSHAKING: usize = 64;
/// The first and the longest pause after a failed `accept`.
const ACCEPT_PAUSE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

impl Server {
    pub(crate) fn new(listener: UnixListener, waker: UnixStream, secret: Secret) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        waker.set_nonblocking(true)?;
        Ok(Server {
            listener,
            waker,
            secret,
            uid: nix::unistd::geteuid().as_raw(),
            conns: HashMap::new(),
            handshaking: 0,
            accept_pause: None,
            refused: 0,
            reclaiming: false,
            next_conn: 1,
            draining: false,
            state: State::new(Arena::new().ok()),
        })
    }

    /// Serves until the waker is written to or closed. Dropping the server then closes every
    /// connection, which every client sees as the manager's end.
    pub(crate) fn run(mut self) {
        let mut ids: Vec<u64> = Vec::new();
        loop {
            let timeout = match self.next_deadline() {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Round up, so we never wake a hair early and spin.
                    let ms = left.as_micros().div_ceil(1000);
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
                }
            };
            ids.clear();
            ids.extend(self.conns.keys().copied());
            let (ready_listener, ready_waker, ready) = {
                let mut fds = Vec::with_capacity(ids.len() + 2);
                let listen = match self.accept_pause {
                    Some((until, _)) if until > Instant::now() => PollFlags::empty(),
                    _ => PollFlags::POLLIN,
                };
                fds.push(PollFd::new(self.listener.as_fd(), listen));
                fds.push(PollFd::new(self.waker.as_fd(), PollFlags::POLLIN));
                for id in &ids {
                    let c = &self.conns[id];
                    let mut flags = PollFlags::POLLIN;
                    if c.sent < c.output.len() {
                        flags |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(c.stream.as_fd(), flags));
                }
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
                let is = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                let ready: Vec<bool> = fds[2..].iter().map(is).collect();
                (is(&fds[0]), is(&fds[1]), ready)
            };
            if ready_waker {
                return;
            }
            for (i, id) in ids.iter().enumerate() {
                if ready[i] {
                    self.service(*id);
                }
            }
            if ready_listener {
                self.accept();
            }
            self.expire(Instant::now());
            self.check_leases();
            self.reap();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let handshakes = self.conns.values().filter(|c| !matches!(c.auth, Auth::Done)).map(|c| c.since + HANDSHAKE);
        let pause = self.accept_pause.map(|(until, _)| until);
        let parked = self.state.next_parked_deadline();
        parked.into_iter().chain(handshakes).chain(pause).chain(self.state.next_lease_end()).min()
    }

    /// Takes in new connections: only from processes of our own uid, within the caps.
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accept_pause = None;
                    let peer = getsockopt(&stream, PeerCredentials).ok();
                    let same_user = peer.is_some_and(|c| c.uid() == self.uid);
                    if !same_user || self.conns.len() >= MAX_CONNS {
                        // Closed without a word.
                        self.refused += 1;
                        continue;
                    }
                    if self.handshaking >= MAX_HANDSHAKING {
                        // Too many silent newcomers: the oldest makes room, so that a client
                        // that does its handshake at once always gets in.
                        self.drop_oldest_handshake();
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let id = self.next_conn;
                    self.next_conn += 1;
                    self.handshaking += 1;
                    self.conns.insert(
                        id,
                        Conn {
                            stream,
                            input: Vec::new(),
                            output: Vec::new(),
                            sent: 0,
                            auth: Auth::Hello,
                            since: Instant::now(),
                            dead: false,
                            // 0: the peer is in a pid namespace this one cannot see.
                            pid: peer.map(|c| c.pid() as u32).filter(|&pid| pid != 0),
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Out of descriptors or memory: the connection stays in the backlog and the
                // listener stays readable, so polling it again at once would spin. Leave it
                // alone for a while, longer after each failure in a row.
                Err(_) => {
                    let pause = self.accept_pause.map_or(ACCEPT_PAUSE.0, |(_, p)| (p * 2).min(ACCEPT_PAUSE.1));
                    self.accept_pause = Some((Instant::now() + pause, pause));
                    return;
                }
            }
        }
    }

    /// Closes the connection that has been in its handshake longest.
    fn drop_oldest_handshake(&mut self) {
        let oldest = self.conns.iter().filter(|(_, c)| !matches!(c.auth, Auth::Done)).min_by_key(|(_, c)| c.since);
        if let Some((&id, _)) = oldest {
            self.refused += 1;
            let c = self.conns.remove(&id).expect("found above");
            drop(c);
            self.handshaking -= 1;
        }
    }

    /// Reads what a connection sent, serves each complete request, and writes what is owed.
    fn service(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if c.dead {
            return;
        }
        let eof = read_some(c);
        let mut consumed = 0;
        loop {
            let Some(c) = self.conns.get_mut(&id) else { return };
            let buf = &c.input[consumed..];
            let Some(len) = protocol::frame_len(buf) else { break };
            let limit = if matches!(c.auth, Auth::Done) { MAX_FRAME } else { HANDSHAKE_FRAME };
            if len > limit {
                c.dead = true;
                break;
            }
            if buf.len() < HEADER + len {
                break;
            }
            let request = postcard::from_bytes::<Request>(&buf[HEADER..HEADER + len]);
            consumed += HEADER + len;
            match request {
                Ok(r) => self.handle(id, r),
                Err(_) => {
                    c.dead = true;
                    break;
                }
            }
            if self.conns.get(&id).is_none_or(|c| c.dead) {
                break;
            }
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.input.drain(..consumed);
            if eof {
                // What is left is a request cut off by the client's death: never applied.
                c.dead = true;
            } else {
                flush(c);
            }
        }
    }

    fn handle(&mut self, conn: u64, request: Request) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if !matches!(c.auth, Auth::Done) {
            return self.handshake(conn, request);
        }
        let (state, io) = (&mut self.state, &mut Conns(&mut self.conns));
        match request {
            // The handshake is over: these are a broken client.
            Request::Hello { .. } | Request::Proof { .. } => io.close(conn),
            #[cfg(test)]
            Request::Census => {
                let (waiters, parked, lent_by) = state.census();
                let conns = io.0.len() as u64;
                io.send(conn, &Reply::Census { waiters, conns, parked, lent_by, refused: self.refused })
            }
            Request::Ack { n } => state.ack(io, conn, n),
            Request::Return => state.give_back_lent(io, conn),
            Request::PutNoReply { id, item } => state.put_no_reply(io, conn, id, item.into_vec()),
            Request::PutShared { id, at, len } => state.put_shared(io, conn, id, at, len),
            Request::Arena => self.send_arena(conn),
            Request::Chunk { retire } => state.chunk(io, conn, retire),
            Request::Create(kind) => {
                let id = state.create(kind);
                io.send(conn, &Reply::Id(id));
            }
            Request::Put { id, item, wait } => state.put(io, conn, id, item.into_vec(), wait),
            Request::Get { id, wait, max, shared } => {
                if wait == WaitLimit::No {
                    self.drain_others(conn);
                }
                self.get(conn, id, wait, max, shared)
            }
            Request::QueueLen { id } => {
                self.drain_others(conn);
                self.state.queue_len(&mut Conns(&mut self.conns), conn, id);
            }
            Request::Acquire { id, wait } => state.acquire(io, conn, id, wait),
            Request::Release { id } => state.release(io, conn, id),
            Request::SetEvent { id, value } => state.set_event(io, conn, id, value),
            Request::IsSet { id } => state.is_set(io, conn, id),
            Request::WaitEvent { id, wait } => state.wait_event(io, conn, id, wait),
            Request::WaitBarrier { id, wait } => state.wait_barrier(io, conn, id, wait),
            Request::ResetBarrier { id } => state.reset_barrier(io, conn, id),
            Request::MapInsert { id, key, value } => {
                state.map(io, conn, id, |m| Reply::Value(m.insert(key.into_vec(), value.into_vec()).map(ByteBuf::from)))
            }
            Request::MapGet { id, key } => {
                state.map(io, conn, id, |m| Reply::Value(m.get(key.as_slice()).cloned().map(ByteBuf::from)))
            }
            Request::MapRemove { id, key } => {
                state.map(io, conn, id, |m| Reply::Value(m.remove(key.as_slice()).map(ByteBuf::from)))
            }
            Request::MapLen { id } => state.map(io, conn, id, |m| Reply::Count(m.len() as u64)),
            Request::MapKeys { id } => {
                state.map(io, conn, id, |m| Reply::Keys(m.keys().cloned().map(ByteBuf::from).collect()))
            }
            Request::MapClear { id } => state.map(io, conn, id, |m| {
                m.clear();
                Reply::Done
            }),
        }
    }

    /// One step of the handshake (`auth.rs`); anything out of turn closes the connection.
    fn handshake(&mut self, conn: u64, request: Request) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        match (&c.auth, request) {
            (Auth::Hello, Request::Hello { nonce: nc }) => {
                let Ok(ns) = auth::random::<32>() else { return self.broken(conn) };
                c.auth = Auth::Proof { nc, ns };
                let proof = auth::server_proof(&self.secret, &nc, &ns);
                self.reply(conn, &Reply::Challenge { nonce: ns, proof });
            }
            (Auth::Proof { nc, ns }, Request::Proof { proof }) if auth::check_client(&self.secret, ns, nc, &proof) => {
                c.auth = Auth::Done;
                self.handshaking -= 1;
                let pid = c.pid;
                self.state.connect(conn, pid);
                self.reply(conn, &Reply::Done);
            }
            _ => self.broken(conn),
        }
    }

    /// A get: lent at once, or (nothing to lend) after taking back what stalled consumers
    /// hold, or "empty", or parked.
    fn get(&mut self, conn: u64, id: u64, wait: WaitLimit, max: u32, shared: bool) {
        let GetStart::Blocked { lent_elsewhere } =
            self.state.get_now(&mut Conns(&mut self.conns), conn, id, max, shared)
        else {
            return;
        };
        if lent_elsewhere && self.reclaim_stale(id, conn) {
            // Nothing for us but what a stalled consumer held: it is back at the front.
            self.get(conn, id, wait, max, shared);
        } else {
            self.state.get_later(&mut Conns(&mut self.conns), conn, id, wait, max, shared, lent_elsewhere);
        }
    }

    /// Takes back the lent items of every connection other than `except` that holds some of
    /// `queue` and made no progress within [`LEASE`](waiters::LEASE). Returns whether it
    /// took any.
    ///
    /// Delivery stays at most once: a client hands an item to its program only once its
    /// `Ack` was written. The server first shuts the connection for reading, which makes
    /// every later write of the client fail (`EPIPE`) while what it wrote before stays
    /// readable; then it reads and applies all of that (the acknowledged items are gone for
    /// good), and only then puts the rest back and closes the connection.
    fn reclaim_stale(&mut self, queue: u64, except: u64) -> bool {
        let stale = self.state.stale_holders(queue, except, Instant::now());
        if stale.is_empty() || self.reclaiming {
            return false;
        }
        self.reclaiming = true;
        for holder in &stale {
            let Some(c) = self.conns.get_mut(holder) else { continue };
            if nix::sys::socket::shutdown(c.stream.as_raw_fd(), nix::sys::socket::Shutdown::Read).is_ok() {
                // Until the end of what it wrote before the shutdown (`service` marks it
                // dead at end of file; each round reads a bounded amount).
                for _ in 0..1 << 16 {
                    if self.conns.get(holder).is_none_or(|c| c.dead) {
                        break;
                    }
                    self.service(*holder);
                }
            }
            self.broken(*holder);
            self.state.give_back_lent(&mut Conns(&mut self.conns), *holder);
        }
        self.reclaiming = false;
        true
    }

    /// Takes back lent items whose lease ran out on queues where getters wait, and forgets
    /// queues that no longer block anyone.
    fn check_leases(&mut self) {
        let mut i = 0;
        while i < self.state.blocked.len() {
            let id = self.state.blocked[i];
            // Whoever waits first is the one kept waiting.
            let Some(first) = self.state.still_blocked(id) else {
                self.state.blocked.swap_remove(i);
                continue;
            };
            if self.reclaim_stale(id, first) {
                self.state.serve_queue(&mut Conns(&mut self.conns), id);
            }
            i += 1;
        }
    }

    /// Reads and serves what every other connection has already sent, before `conn`'s request
    /// observes a queue (its length, or that it is empty). A put is sent without waiting for
    /// an answer; this makes every put whose write returned before the observer sent its
    /// request visible to it, whichever connection or process it came from.
    fn drain_others(&mut self, conn: u64) {
        if self.draining {
            return;
        }
        self.draining = true;
        let others: Vec<u64> = self.conns.keys().copied().filter(|id| *id != conn).collect();
        for id in others {
            self.service(id);
        }
        self.draining = false;
    }

    /// Answers every parked request whose deadline has passed, and drops connections whose
    /// handshake took too long.
    fn expire(&mut self, now: Instant) {
        for c in self.conns.values_mut() {
            if !matches!(c.auth, Auth::Done) && c.since + HANDSHAKE <= now {
                c.dead = true;
            }
        }
        for conn in self.state.due(now) {
            if self.state.parked_get(conn) {
                // Before saying "empty", take in the puts already sent (see `drain_others`);
                // they may answer this very request.
                self.drain_others(conn);
            }
            self.state.expire(&mut Conns(&mut self.conns), conn);
        }
    }

    /// Cleans up after connections that closed: see the module docs.
    fn reap(&mut self) {
        loop {
            let Some(&id) = self.conns.iter().find(|(_, c)| c.dead).map(|(id, _)| id) else { return };
            // Sent, never handed to the program: back where they were, at the front.
            self.state.give_back_lent(&mut Conns(&mut self.conns), id);
            if let Some(arena) = self.state.arena.as_mut() {
                arena.closed(id);
            }
            let c = self.conns.remove(&id).expect("found above");
            if !matches!(c.auth, Auth::Done) {
                self.handshaking -= 1;
            }
            self.state.disconnect(&mut Conns(&mut self.conns), id);
        }
    }

    /// Marks a connection that broke the protocol.
    fn broken(&mut self, conn: u64) {
        Conns(&mut self.conns).close(conn);
    }

    /// Answers `Arena` with the memfd attached to the reply's first byte. If that cannot be
    /// done (no arena; earlier output still pending; the socket refuses), the reply goes
    /// without it, and the client takes the inline path.
    fn send_arena(&mut self, conn: u64) {
        let Some(arena) = self.state.arena.as_ref() else {
            return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let mut frame = Vec::new();
        if protocol::frame(&Reply::Done, &mut frame).is_err() || c.sent < c.output.len() {
            return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        }
        // The descriptor travels with the first byte; a full socket takes neither (the reply
        // then goes without it, from the output buffer).
        let sent = match fd::send_with_fds(c.stream.as_fd(), &[IoSlice::new(&frame)], &[arena.fd()], Blocking::No) {
            Ok(sent) => sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return self.broken(conn),
        };
        c.output.extend_from_slice(&frame[sent..]);
        flush(c);
    }

    fn reply(&mut self, conn: u64, reply: &Reply) {
        Conns(&mut self.conns).send(conn, reply);
    }
}
