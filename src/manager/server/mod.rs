//! The manager's server: one thread, one `poll` loop, every shared object's state.
//!
//! All state lives in this thread and is touched by nothing else, so there are no locks to
//! get wrong: a request is applied whole or not at all, in the order the server reads it. A
//! request that cannot be answered yet (a `get` on an empty queue, a held lock) parks its
//! connection in the object's waiter list until the condition holds, its deadline passes, or
//! the connection closes.
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IoSlice;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::sockopt::PeerCredentials;
use nix::sys::socket::{ControlMessage, MsgFlags, getsockopt};
use serde_bytes::ByteBuf;

use crate::deadline;
use crate::manager::arena::{Arena, Span};
use crate::manager::auth::{self, Nonce, Secret};
use crate::manager::client::connection;
use crate::manager::protocol::{
    self, ErrorCode, HANDSHAKE_FRAME, HEADER, ItemPayload, Kind, MAX_FRAME, Reply, Request, WaitLimit,
};

/// A connection's place in a waiter list: the connection and the number of the request that
/// parked, so a stale entry (the request timed out, the connection closed) is recognized.
type Waiter = (u64, u64);

struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    /// Replies not yet written; `output[..sent]` already went out (kept until the rest does,
    /// so a large lent batch is not shifted in memory after every partial write).
    output: Vec<u8>,
    sent: usize,
    /// How far the handshake got (`auth.rs`).
    auth: Auth,
    /// When it was accepted: the handshake must end by [`HANDSHAKE`] later.
    since: Instant,
    /// A request waiting for its condition.
    parked: Option<Parked>,
    /// Items sent to this client and not yet acknowledged (queue, item), oldest first.
    lent: VecDeque<(u64, Item)>,
    /// Numbers parked requests.
    seq: u64,
    /// When this connection last made progress with lent items (was lent some, or
    /// acknowledged one): holding them longer than [`LEASE`] while others wait loses them.
    progress: Instant,
    /// The peer is gone or broke the protocol: cleaned up by [`Server::reap`].
    dead: bool,
}

enum Auth {
    /// Waiting for the client's `Hello`.
    Hello,
    /// Sent our challenge; waiting for the client's proof.
    Proof {
        nc: Nonce,
        ns: Nonce,
    },
    Done,
}

struct Parked {
    seq: u64,
    object: u64,
    op: Op,
    deadline: Option<Instant>,
}

/// A queued item: its bytes, or where a client wrote them in the arena.
enum Item {
    Inline(Vec<u8>),
    Shared(Span),
}

enum Op {
    Get { max: u32, shared: bool },
    Put(Vec<u8>),
    Acquire,
    WaitEvent,
    WaitBarrier,
}

enum Object {
    Queue(Queue),
    /// A lock is a semaphore of one permit that only its holder may release.
    Semaphore(Semaphore),
    Event {
        set: bool,
        waiters: VecDeque<Waiter>,
    },
    Barrier(Barrier),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

struct Queue {
    items: VecDeque<Item>,
    maxsize: Option<usize>,
    /// Items sent to a getter and not yet acknowledged: they still take a slot, because they
    /// come back if the getter dies.
    lent: usize,
    /// How many of them each connection holds. Several connections may hold lent items at
    /// once; what one gives back goes to the front (`PROTOCOL.md`, "Order").
    lent_by: HashMap<u64, usize>,
    getters: VecDeque<Waiter>,
    putters: VecDeque<Waiter>,
}

impl Queue {
    fn is_full(&self) -> bool {
        self.maxsize.is_some_and(|m| self.items.len() + self.lent >= m)
    }

    /// Whether a connection other than `conn` holds lent items of this queue.
    fn lent_elsewhere(&self, conn: u64) -> bool {
        self.lent_by.keys().any(|c| *c != conn)
    }

    fn lent_to(&mut self, conn: u64, n: usize) {
        self.lent += n;
        *self.lent_by.entry(conn).or_default() += n;
    }

    /// `n` items lent to `conn` were acknowledged or given back.
    fn unlent(&mut self, conn: u64, n: usize) {
        self.lent = self.lent.saturating_sub(n);
        if let Some(held) = self.lent_by.get_mut(&conn) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                self.lent_by.remove(&conn);
            }
        }
    }
}

struct Semaphore {
    available: u64,
    /// One entry per permit held, naming the connection that holds it.
    holders: Vec<u64>,
    lock: bool,
    /// A holder died: the next acquirer is told (once).
    owner_died: bool,
    waiters: VecDeque<Waiter>,
}

struct Barrier {
    parties: usize,
    arrived: VecDeque<Waiter>,
    broken: bool,
}

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
    /// Queues where a getter waits while another connection holds lent items: their
    /// holders' leases are watched ([`Server::reclaim_stale`]).
    blocked: Vec<u64>,
    /// Inside [`Server::reclaim_stale`] (which does not nest).
    reclaiming: bool,
    next_conn: u64,
    objects: HashMap<u64, Object>,
    next_object: u64,
    /// Inside [`Server::drain_others`] (which does not nest).
    draining: bool,
    /// The shared-memory lane for large items (`arena.rs`); `None` if it could not be made.
    arena: Option<Arena>,
}

/// A batch of lent items stops growing once it holds this many bytes.
const LEND_BYTES: usize = 1 << 20;

/// A connection that holds lent items of a queue and has acknowledged none of them for this
/// long, while another connection waits for that queue, loses them: they go back to the
/// front of the queue and the connection is closed (`PROTOCOL.md`, "A stalled consumer").
pub(crate) const LEASE: Duration = Duration::from_millis(50);

/// A connection must finish its handshake within this time of being accepted.
pub(crate) const HANDSHAKE: Duration = Duration::from_secs(2);
/// At most this many connections are served at once; more are closed at `accept`.
pub(crate) const MAX_CONNS: usize = 4096;
/// At most this many of them may be in their handshake.
pub(crate) const MAX_HANDSHAKING: usize = 64;
/// A client that asks without reading its replies is cut off once this many bytes of replies
/// wait unread (a well-behaved client has at most one reply in flight, and reads it whole
/// before it asks again, so it never has any when its next request is read).
pub(crate) const MAX_UNREAD: usize = 1 << 20;
/// What one round reads from a connection (beyond the frame it is in the middle of), so that
/// one fast writer neither starves the others nor fills the server's memory.
const READ_ROUND: usize = 256 << 10;
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
            blocked: Vec::new(),
            reclaiming: false,
            next_conn: 1,
            objects: HashMap::new(),
            next_object: 1,
            draining: false,
            arena: Arena::new().ok(),
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
        let parked = self.conns.values().filter_map(|c| c.parked.as_ref()?.deadline);
        parked.chain(handshakes).chain(pause).chain(self.next_lease_end()).min()
    }

    /// Takes in new connections: only from processes of our own uid, within the caps.
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accept_pause = None;
                    let same_user = getsockopt(&stream, PeerCredentials).is_ok_and(|c| c.uid() == self.uid);
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
                            parked: None,
                            lent: VecDeque::new(),
                            seq: 0,
                            progress: Instant::now(),
                            dead: false,
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
        match request {
            // The handshake is over: these are a broken client.
            Request::Hello { .. } | Request::Proof { .. } => self.broken(conn),
            #[cfg(test)]
            Request::Census => {
                let census = self.census();
                self.reply(conn, &census)
            }
            Request::Ack { n } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.progress = Instant::now();
                }
                for _ in 0..n {
                    let Some(c) = self.conns.get_mut(&conn) else { return };
                    let Some((queue, item)) = c.lent.pop_front() else { break };
                    if let (Item::Shared(span), Some(arena)) = (item, self.arena.as_mut()) {
                        arena.release(span);
                    }
                    self.returned_slot(conn, queue);
                }
            }
            Request::Return => self.give_back_lent(conn),
            Request::PutNoReply { id, item } => match self.objects.get_mut(&id) {
                Some(Object::Queue(q)) if q.maxsize.is_none() => {
                    q.items.push_back(Item::Inline(item.into_vec()));
                    self.serve_queue(id);
                }
                // Only for unbounded queues; anything else is a broken client.
                _ => self.broken(conn),
            },
            Request::PutShared { id, at, len } => {
                let unbounded = matches!(self.objects.get(&id), Some(Object::Queue(q)) if q.maxsize.is_none());
                let span = Span::from_at(at, len).filter(|_| unbounded);
                // Only for unbounded queues, in a chunk this connection holds.
                let taken = span.filter(|span| self.arena.as_mut().is_some_and(|a| a.put(conn, *span)));
                match (taken, self.objects.get_mut(&id)) {
                    (Some(span), Some(Object::Queue(q))) => {
                        q.items.push_back(Item::Shared(span));
                        self.serve_queue(id);
                    }
                    _ => self.broken(conn),
                }
            }
            Request::Arena => self.send_arena(conn),
            Request::Chunk { retire } => {
                let granted = self.arena.as_mut().and_then(|a| a.grant(conn, retire));
                self.reply(conn, &Reply::Chunk(granted));
            }
            Request::Create(kind) => {
                let id = self.next_object;
                self.next_object += 1;
                self.objects.insert(id, new_object(kind));
                self.reply(conn, &Reply::Id(id));
            }
            Request::Put { id, item, wait } => self.put(conn, id, item.into_vec(), wait),
            Request::Get { id, wait, max, shared } => {
                if wait == WaitLimit::No {
                    self.drain_others(conn);
                }
                self.get(conn, id, wait, max, shared)
            }
            Request::QueueLen { id } => {
                self.drain_others(conn);
                let reply = match self.objects.get(&id) {
                    Some(Object::Queue(q)) => Reply::QueueLen { len: q.items.len() as u64, full: q.is_full() },
                    _ => Reply::Failed(ErrorCode::NoSuchObject),
                };
                self.reply(conn, &reply);
            }
            Request::Acquire { id, wait } => self.acquire(conn, id, wait),
            Request::Release { id } => self.release(conn, id),
            Request::SetEvent { id, value } => {
                let woken = match self.objects.get_mut(&id) {
                    Some(Object::Event { set, waiters }) => {
                        *set = value;
                        if value { std::mem::take(waiters) } else { VecDeque::new() }
                    }
                    _ => return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject)),
                };
                for w in woken {
                    if self.unpark(w).is_some() {
                        self.reply(w.0, &Reply::Flag(true));
                    }
                }
                self.reply(conn, &Reply::Done);
            }
            Request::IsSet { id } => {
                let reply = match self.objects.get(&id) {
                    Some(Object::Event { set, .. }) => Reply::Flag(*set),
                    _ => Reply::Failed(ErrorCode::NoSuchObject),
                };
                self.reply(conn, &reply);
            }
            Request::WaitEvent { id, wait } => match self.objects.get(&id) {
                Some(Object::Event { set: true, .. }) => self.reply(conn, &Reply::Flag(true)),
                Some(Object::Event { .. }) if wait == WaitLimit::No => self.reply(conn, &Reply::Flag(false)),
                Some(Object::Event { .. }) => self.park(conn, id, Op::WaitEvent, wait),
                _ => self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject)),
            },
            Request::WaitBarrier { id, wait } => self.wait_barrier(conn, id, wait),
            Request::ResetBarrier { id } => {
                if !matches!(self.objects.get(&id), Some(Object::Barrier(_))) {
                    return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject));
                }
                // Like Python's `reset`: whoever is waiting is told the barrier broke.
                self.break_barrier(id);
                if let Some(Object::Barrier(b)) = self.objects.get_mut(&id) {
                    b.broken = false;
                }
                self.reply(conn, &Reply::Done);
            }
            Request::MapInsert { id, key, value } => {
                self.map(conn, id, |m| Reply::Value(m.insert(key.into_vec(), value.into_vec()).map(ByteBuf::from)))
            }
            Request::MapGet { id, key } => {
                self.map(conn, id, |m| Reply::Value(m.get(key.as_slice()).cloned().map(ByteBuf::from)))
            }
            Request::MapRemove { id, key } => {
                self.map(conn, id, |m| Reply::Value(m.remove(key.as_slice()).map(ByteBuf::from)))
            }
            Request::MapLen { id } => self.map(conn, id, |m| Reply::Count(m.len() as u64)),
            Request::MapKeys { id } => {
                self.map(conn, id, |m| Reply::Keys(m.keys().cloned().map(ByteBuf::from).collect()))
            }
            Request::MapClear { id } => self.map(conn, id, |m| {
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
                self.reply(conn, &Reply::Done);
            }
            _ => self.broken(conn),
        }
    }

    /// What the server holds on behalf of requests, for tests: every entry of every waiter
    /// list, connections, and connections that hold lent items, over all objects.
    #[cfg(test)]
    fn census(&self) -> Reply {
        let mut waiters = 0;
        let mut lent_by = 0;
        for o in self.objects.values() {
            waiters += match o {
                Object::Queue(q) => {
                    lent_by += q.lent_by.len();
                    q.getters.len() + q.putters.len()
                }
                Object::Semaphore(s) => s.waiters.len(),
                Object::Event { waiters, .. } => waiters.len(),
                Object::Barrier(b) => b.arrived.len(),
                Object::Map(_) => 0,
            };
        }
        let parked = self.conns.values().filter(|c| c.parked.is_some()).count();
        Reply::Census {
            waiters: waiters as u64,
            conns: self.conns.len() as u64,
            parked: parked as u64,
            lent_by: lent_by as u64,
            refused: self.refused,
        }
    }

    fn map(&mut self, conn: u64, id: u64, f: impl FnOnce(&mut BTreeMap<Vec<u8>, Vec<u8>>) -> Reply) {
        let reply = match self.objects.get_mut(&id) {
            Some(Object::Map(m)) => f(m),
            _ => Reply::Failed(ErrorCode::NoSuchObject),
        };
        self.reply(conn, &reply);
    }

    fn put(&mut self, conn: u64, id: u64, item: Vec<u8>, wait: WaitLimit) {
        let Some(Object::Queue(q)) = self.objects.get_mut(&id) else {
            return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        if !q.is_full() && q.putters.is_empty() {
            q.items.push_back(Item::Inline(item));
            self.reply(conn, &Reply::Done);
            self.serve_queue(id);
        } else if wait == WaitLimit::No {
            self.reply(conn, &Reply::Failed(ErrorCode::Full));
        } else {
            self.park(conn, id, Op::Put(item), wait);
        }
    }

    fn get(&mut self, conn: u64, id: u64, wait: WaitLimit, max: u32, shared: bool) {
        let Some(Object::Queue(q)) = self.objects.get_mut(&id) else {
            return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        if !q.items.is_empty() && q.getters.is_empty() {
            self.lend(conn, id, max, shared);
            self.serve_queue(id);
            return;
        }
        let lent_elsewhere = q.lent_elsewhere(conn);
        if lent_elsewhere && self.reclaim_stale(id, conn) {
            // Nothing for us but what a stalled consumer held: it is back at the front.
            self.get(conn, id, wait, max, shared);
        } else if wait == WaitLimit::No {
            self.reply(conn, &Reply::Failed(ErrorCode::Empty));
        } else {
            if lent_elsewhere && !self.blocked.contains(&id) {
                self.blocked.push(id);
            }
            self.park(conn, id, Op::Get { max, shared }, wait);
        }
    }

    /// Takes back the lent items of every connection other than `except` that holds some of
    /// `queue` and made no progress within [`LEASE`]. Returns whether it took any.
    ///
    /// Delivery stays at most once: a client hands an item to its program only once its
    /// `Ack` was written. The server first shuts the connection for reading, which makes
    /// every later write of the client fail (`EPIPE`) while what it wrote before stays
    /// readable; then it reads and applies all of that (the acknowledged items are gone for
    /// good), and only then puts the rest back and closes the connection.
    fn reclaim_stale(&mut self, queue: u64, except: u64) -> bool {
        let Some(Object::Queue(q)) = self.objects.get(&queue) else { return false };
        let now = Instant::now();
        let stale: Vec<u64> = q
            .lent_by
            .keys()
            .copied()
            .filter(|h| *h != except && self.conns.get(h).is_some_and(|c| c.progress + LEASE <= now))
            .collect();
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
            self.give_back_lent(*holder);
        }
        self.reclaiming = false;
        true
    }

    /// The moment the oldest lease on a blocked queue runs out.
    fn next_lease_end(&self) -> Option<Instant> {
        let mut end: Option<Instant> = None;
        for id in &self.blocked {
            let Some(Object::Queue(q)) = self.objects.get(id) else { continue };
            for holder in q.lent_by.keys() {
                let at = self.conns.get(holder).map_or_else(Instant::now, |c| c.progress + LEASE);
                end = Some(end.map_or(at, |e| e.min(at)));
            }
        }
        end
    }

    /// Takes back lent items whose lease ran out on queues where getters wait, and forgets
    /// queues that no longer block anyone.
    fn check_leases(&mut self) {
        let mut i = 0;
        while i < self.blocked.len() {
            let id = self.blocked[i];
            let still = match self.objects.get(&id) {
                Some(Object::Queue(q)) => !q.getters.is_empty() && !q.lent_by.is_empty(),
                _ => false,
            };
            if !still {
                self.blocked.swap_remove(i);
                continue;
            }
            // Whoever waits first is the one kept waiting.
            let first = match self.objects.get(&id) {
                Some(Object::Queue(q)) => q.getters.front().map_or(0, |w| w.0),
                _ => 0,
            };
            if self.reclaim_stale(id, first) {
                self.serve_queue(id);
            }
            i += 1;
        }
    }

    /// Sends up to `max` items of `queue` (at least one; the queue is not empty) to `conn`,
    /// and keeps each until the client acknowledges it. A batch stops at [`LEND_BYTES`].
    /// Items in the arena go by position if the client mapped it (`shared`), else as a copy.
    fn lend(&mut self, conn: u64, queue: u64, max: u32, shared: bool) {
        let Some(Object::Queue(q)) = self.objects.get_mut(&queue) else { return };
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if over_unread(c) {
            return;
        }
        let mut items = Vec::new();
        let mut bytes = 0;
        while items.len() < max.max(1) as usize && (items.is_empty() || bytes < LEND_BYTES) {
            let Some(item) = q.items.pop_front() else { break };
            items.push(match item {
                Item::Inline(item) => {
                    bytes += item.len();
                    ItemPayload::Inline(ByteBuf::from(item))
                }
                Item::Shared(span) if shared => ItemPayload::Shared { at: span.at(), len: span.len },
                Item::Shared(span) => {
                    let arena = self.arena.as_mut().expect("shared items come from the arena");
                    let copy = arena.copy(span);
                    arena.release(span);
                    bytes += copy.len();
                    ItemPayload::Inline(ByteBuf::from(copy))
                }
            });
        }
        q.lent_to(conn, items.len());
        c.progress = Instant::now();
        let reply = Reply::Items(items);
        let start = c.output.len();
        if protocol::frame(&reply, &mut c.output).is_err() {
            c.output.truncate(start);
            c.dead = true;
        }
        let Reply::Items(items) = reply else { unreachable!() };
        c.lent.extend(items.into_iter().map(|i| {
            let item = match i {
                ItemPayload::Inline(bytes) => Item::Inline(bytes.into_vec()),
                ItemPayload::Shared { at, len } => {
                    Item::Shared(Span::from_at(at, len).expect("made from a span above"))
                }
            };
            (queue, item)
        }));
        flush(c);
    }

    /// Puts every item lent to `conn` back at the front of its queue, in the order they were
    /// taken.
    fn give_back_lent(&mut self, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let lent = std::mem::take(&mut c.lent);
        let mut queues = Vec::new();
        for (queue, item) in lent.into_iter().rev() {
            if let Some(Object::Queue(q)) = self.objects.get_mut(&queue) {
                q.unlent(conn, 1);
                q.items.push_front(item);
                if !queues.contains(&queue) {
                    queues.push(queue);
                }
            }
        }
        for queue in queues {
            self.serve_queue(queue);
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

    /// An item lent from `queue` was acknowledged: its slot is free.
    fn returned_slot(&mut self, conn: u64, queue: u64) {
        if let Some(Object::Queue(q)) = self.objects.get_mut(&queue) {
            q.unlent(conn, 1);
            self.serve_queue(queue);
        }
    }

    /// Matches parked getters with items and parked putters with free slots, until neither
    /// can move.
    fn serve_queue(&mut self, id: u64) {
        loop {
            let mut moved = false;
            loop {
                let Some(Object::Queue(q)) = self.objects.get_mut(&id) else { return };
                if q.items.is_empty() {
                    break;
                }
                let Some(w) = q.getters.pop_front() else { break };
                // Several getters waiting: one item each, in turn. One alone: a batch.
                let alone = q.getters.is_empty();
                let Some(Op::Get { max, shared }) = self.unpark(w) else { continue };
                self.lend(w.0, id, if alone { max } else { 1 }, shared);
                moved = true;
            }
            loop {
                let Some(Object::Queue(q)) = self.objects.get_mut(&id) else { return };
                if q.is_full() {
                    break;
                }
                let Some(w) = q.putters.pop_front() else { break };
                let Some(Op::Put(item)) = self.unpark(w) else { continue };
                let Some(Object::Queue(q)) = self.objects.get_mut(&id) else { return };
                q.items.push_back(Item::Inline(item));
                self.reply(w.0, &Reply::Done);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        // Getters wait while others hold lent items: watch those holders' leases.
        if let Some(Object::Queue(q)) = self.objects.get(&id)
            && !q.getters.is_empty()
            && !q.lent_by.is_empty()
            && !self.blocked.contains(&id)
        {
            self.blocked.push(id);
        }
    }

    fn acquire(&mut self, conn: u64, id: u64, wait: WaitLimit) {
        let Some(Object::Semaphore(s)) = self.objects.get_mut(&id) else {
            return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        if s.available > 0 && s.waiters.is_empty() {
            s.available -= 1;
            s.holders.push(conn);
            let owner_died = std::mem::take(&mut s.owner_died);
            self.reply(conn, &Reply::Acquired { owner_died });
        } else if wait == WaitLimit::No {
            self.reply(conn, &Reply::Failed(ErrorCode::WouldBlock));
        } else {
            self.park(conn, id, Op::Acquire, wait);
        }
    }

    fn release(&mut self, conn: u64, id: u64) {
        let Some(Object::Semaphore(s)) = self.objects.get_mut(&id) else {
            return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        let mine = s.holders.iter().position(|h| *h == conn);
        let which = match (mine, s.lock) {
            (Some(i), _) => i,
            (None, true) => return self.reply(conn, &Reply::Failed(ErrorCode::NotOwner)),
            // A semaphore may be released by anyone: take the oldest permit out.
            (None, false) if !s.holders.is_empty() => 0,
            (None, false) => return self.reply(conn, &Reply::Failed(ErrorCode::OverReleased)),
        };
        s.holders.remove(which);
        s.available += 1;
        self.reply(conn, &Reply::Done);
        self.serve_semaphore(id);
    }

    fn serve_semaphore(&mut self, id: u64) {
        loop {
            let Some(Object::Semaphore(s)) = self.objects.get_mut(&id) else { return };
            if s.available == 0 {
                return;
            }
            let Some(w) = s.waiters.pop_front() else { return };
            if self.unpark(w).is_none() {
                continue;
            }
            let Some(Object::Semaphore(s)) = self.objects.get_mut(&id) else { return };
            s.available -= 1;
            s.holders.push(w.0);
            let owner_died = std::mem::take(&mut s.owner_died);
            self.reply(w.0, &Reply::Acquired { owner_died });
        }
    }

    fn wait_barrier(&mut self, conn: u64, id: u64, wait: WaitLimit) {
        let Some(Object::Barrier(b)) = self.objects.get_mut(&id) else {
            return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        if b.broken {
            return self.reply(conn, &Reply::Failed(ErrorCode::BrokenBarrier));
        }
        if b.arrived.len() + 1 < b.parties {
            if wait == WaitLimit::No {
                // Not waiting at a barrier that is not full breaks it, as a timeout does.
                self.break_barrier(id);
                return self.reply(conn, &Reply::Failed(ErrorCode::Timeout));
            }
            return self.park(conn, id, Op::WaitBarrier, wait);
        }
        let arrived = std::mem::take(&mut b.arrived);
        for (index, w) in arrived.into_iter().enumerate() {
            if self.unpark(w).is_some() {
                self.reply(w.0, &Reply::Index(index as u64));
            }
        }
        let parties = match self.objects.get(&id) {
            Some(Object::Barrier(b)) => b.parties,
            _ => return,
        };
        self.reply(conn, &Reply::Index(parties as u64 - 1));
    }

    /// Breaks a barrier: everyone waiting at it is told.
    fn break_barrier(&mut self, id: u64) {
        let Some(Object::Barrier(b)) = self.objects.get_mut(&id) else { return };
        b.broken = true;
        for w in std::mem::take(&mut b.arrived) {
            if self.unpark(w).is_some() {
                self.reply(w.0, &Reply::Failed(ErrorCode::BrokenBarrier));
            }
        }
    }

    /// Parks `conn`'s request on object `id`.
    fn park(&mut self, conn: u64, id: u64, op: Op, wait: WaitLimit) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.parked.is_some() {
            // One request at a time: a client that asks again while one waits is broken.
            return self.broken(conn);
        }
        c.seq += 1;
        let seq = c.seq;
        let deadline = match wait {
            WaitLimit::Micros(us) => deadline::after(Duration::from_micros(us)),
            _ => None,
        };
        let waiter = (conn, seq);
        let list = match (self.objects.get_mut(&id), &op) {
            (Some(Object::Queue(q)), Op::Get { .. }) => &mut q.getters,
            (Some(Object::Queue(q)), Op::Put(_)) => &mut q.putters,
            (Some(Object::Semaphore(s)), Op::Acquire) => &mut s.waiters,
            (Some(Object::Event { waiters, .. }), Op::WaitEvent) => waiters,
            (Some(Object::Barrier(b)), Op::WaitBarrier) => &mut b.arrived,
            _ => return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject)),
        };
        list.push_back(waiter);
        c.parked = Some(Parked { seq, object: id, op, deadline });
    }

    /// Takes the parked request of a waiter list entry, if the entry is still current.
    fn unpark(&mut self, (conn, seq): Waiter) -> Option<Op> {
        let c = self.conns.get_mut(&conn)?;
        if c.dead || c.parked.as_ref()?.seq != seq {
            return None;
        }
        c.parked.take().map(|p| p.op)
    }

    /// Answers every parked request whose deadline has passed, and drops connections whose
    /// handshake took too long.
    fn expire(&mut self, now: Instant) {
        for c in self.conns.values_mut() {
            if !matches!(c.auth, Auth::Done) && c.since + HANDSHAKE <= now {
                c.dead = true;
            }
        }
        let due: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.parked.as_ref().and_then(|p| p.deadline).is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for conn in due {
            if self.conns.get(&conn).and_then(|c| c.parked.as_ref()).is_some_and(|p| matches!(p.op, Op::Get { .. })) {
                // Before saying "empty", take in the puts already sent (see `drain_others`);
                // they may answer this very request.
                self.drain_others(conn);
            }
            let Some(p) = self.conns.get_mut(&conn).and_then(|c| c.parked.take()) else { continue };
            // Nothing of the request stays behind in the object's waiter list.
            self.forget_waiter(p.object, (conn, p.seq));
            let reply = match p.op {
                Op::Get { .. } => Reply::Failed(ErrorCode::Empty),
                Op::Put(_) => Reply::Failed(ErrorCode::Full),
                Op::Acquire => Reply::Failed(ErrorCode::Timeout),
                Op::WaitEvent => Reply::Flag(false),
                Op::WaitBarrier => {
                    // Python's rule: a wait that times out breaks the barrier for everyone.
                    self.break_barrier(p.object);
                    Reply::Failed(ErrorCode::Timeout)
                }
            };
            self.reply(conn, &reply);
        }
    }

    /// Removes a waiter from the list it is in on `object` (a request that timed out, or whose
    /// connection closed), so that waiter lists hold only requests that still wait.
    fn forget_waiter(&mut self, object: u64, waiter: Waiter) {
        let list = match self.objects.get_mut(&object) {
            Some(Object::Queue(q)) => {
                let in_getters = q.getters.contains(&waiter);
                if in_getters { &mut q.getters } else { &mut q.putters }
            }
            Some(Object::Semaphore(s)) => &mut s.waiters,
            Some(Object::Event { waiters, .. }) => waiters,
            Some(Object::Barrier(b)) => &mut b.arrived,
            Some(Object::Map(_)) | None => return,
        };
        if let Some(i) = list.iter().position(|w| *w == waiter) {
            list.remove(i);
        }
    }

    /// Cleans up after connections that closed: see the module docs.
    fn reap(&mut self) {
        loop {
            let Some(&id) = self.conns.iter().find(|(_, c)| c.dead).map(|(id, _)| id) else { return };
            // Sent, never handed to the program: back where they were, at the front.
            self.give_back_lent(id);
            if let Some(arena) = self.arena.as_mut() {
                arena.closed(id);
            }
            let c = self.conns.remove(&id).expect("found above");
            if !matches!(c.auth, Auth::Done) {
                self.handshaking -= 1;
            }
            if let Some(p) = c.parked {
                self.forget_waiter(p.object, (id, p.seq));
                if matches!(p.op, Op::WaitBarrier) {
                    self.break_barrier(p.object);
                }
            }
            let held: Vec<u64> = self
                .objects
                .iter()
                .filter(|(_, o)| matches!(o, Object::Semaphore(s) if s.holders.contains(&id)))
                .map(|(k, _)| *k)
                .collect();
            for object in held {
                if let Some(Object::Semaphore(s)) = self.objects.get_mut(&object) {
                    let before = s.holders.len();
                    s.holders.retain(|h| *h != id);
                    s.available += (before - s.holders.len()) as u64;
                    s.owner_died = true;
                }
                self.serve_semaphore(object);
            }
        }
    }

    /// Marks a connection that broke the protocol.
    fn broken(&mut self, conn: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.dead = true;
        }
    }

    /// Answers `Arena` with the memfd attached to the reply's first byte. If that cannot be
    /// done (no arena; earlier output still pending; the socket refuses), the reply goes
    /// without it, and the client takes the inline path.
    fn send_arena(&mut self, conn: u64) {
        let Some(arena) = self.arena.as_ref() else {
            return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let mut frame = Vec::new();
        if protocol::frame(&Reply::Done, &mut frame).is_err() || c.sent < c.output.len() {
            return self.reply(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        }
        let fds = [arena.fd().as_raw_fd()];
        let sent = loop {
            match nix::sys::socket::sendmsg::<()>(
                c.stream.as_raw_fd(),
                &[IoSlice::new(&frame)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => break 0,
                Err(_) => return self.broken(conn),
            }
        };
        c.output.extend_from_slice(&frame[sent..]);
        flush(c);
    }

    fn reply(&mut self, conn: u64, reply: &Reply) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if over_unread(c) {
            return;
        }
        if protocol::frame(reply, &mut c.output).is_err() {
            c.dead = true;
            return;
        }
        flush(c);
    }
}

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
fn read_some(c: &mut Conn) -> bool {
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
fn flush(c: &mut Conn) {
    while c.sent < c.output.len() && !c.dead {
        match connection::send(&c.stream, &c.output[c.sent..]) {
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

fn new_object(kind: Kind) -> Object {
    let semaphore = |permits: u64, lock: bool| {
        Object::Semaphore(Semaphore {
            available: permits,
            holders: Vec::new(),
            lock,
            owner_died: false,
            waiters: VecDeque::new(),
        })
    };
    match kind {
        Kind::Queue { maxsize } => Object::Queue(Queue {
            items: VecDeque::new(),
            maxsize: maxsize.map(|m| m as usize),
            lent: 0,
            lent_by: HashMap::new(),
            getters: VecDeque::new(),
            putters: VecDeque::new(),
        }),
        Kind::Lock => semaphore(1, true),
        Kind::Semaphore { permits } => semaphore(permits, false),
        Kind::Event => Object::Event { set: false, waiters: VecDeque::new() },
        Kind::Barrier { parties } => {
            Object::Barrier(Barrier { parties: parties.max(1) as usize, arrived: VecDeque::new(), broken: false })
        }
        Kind::Map => Object::Map(BTreeMap::new()),
    }
}
