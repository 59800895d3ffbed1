//! The object semantics of the server, without I/O: given a request from connection C, what
//! it does to the objects, what it answers, and whom it wakes.
//!
//! [`State`] holds every object, each authenticated connection's parked request and lent
//! items, and the arena. It answers through a [`Link`], which the I/O loop implements with
//! its connections' output buffers and the tests with a recorder. Everything that needs a
//! socket (reading what others already sent before answering "empty", taking back a stalled
//! consumer's items) stays in the I/O loop (`mod.rs`), which calls in here around it.
//!
//! This module must never touch a socket, block, or read the clock to decide an answer
//! beyond the deadlines and leases it records.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde_bytes::ByteBuf;

use crate::manager::arena::{Arena, Span};
use crate::manager::protocol::{ErrorCode, ItemPayload, Kind, Reply, WaitLimit};
use crate::manager::server::objects::{Arrival, Item, Object};
use crate::manager::server::waiters::{Op, Parked};

/// A batch of lent items stops growing once it holds this many bytes.
const LEND_BYTES: usize = 1 << 20;

/// Where the semantics send their answers: the connections, as the I/O loop sees them.
pub(crate) trait Link {
    /// Whether `conn` is closed or marked broken: nothing parked of it is served.
    fn is_closed(&self, conn: u64) -> bool;
    /// Whether `conn` can take another reply now; one with too many replies unread is cut off
    /// here (and is closed from then on).
    fn can_send(&mut self, conn: u64) -> bool;
    /// Queues `reply` for `conn` (nothing if it is closed or cut off).
    fn send(&mut self, conn: u64, reply: &Reply);
    /// Marks `conn` broken (it broke the protocol): the I/O loop closes it and calls
    /// [`State::disconnect`].
    fn close(&mut self, conn: u64);
}

/// What the semantics keep for one authenticated connection.
pub(super) struct Client {
    /// A request waiting for its condition.
    pub(super) parked: Option<Parked>,
    /// Items sent to this client and not yet acknowledged (queue, item), oldest first.
    pub(super) lent: VecDeque<(u64, Item)>,
    /// Numbers parked requests.
    pub(super) seq: u64,
    /// When this connection last made progress with lent items (was lent some, or
    /// acknowledged one): holding them longer than [`LEASE`](super::waiters::LEASE) while
    /// others wait loses them.
    pub(super) progress: Instant,
    /// The process at the other end (`SO_PEERCRED`), if known.
    pub(super) pid: Option<u32>,
}

/// Every object and what each connection holds of them. See the module docs.
pub(crate) struct State {
    pub(super) objects: HashMap<u64, Object>,
    next_object: u64,
    pub(super) clients: HashMap<u64, Client>,
    /// Queues where a getter waits while another connection holds lent items: their
    /// holders' leases are watched (`Server::check_leases`).
    pub(super) blocked: Vec<u64>,
    /// The shared-memory lane for large items (`arena.rs`); `None` if it could not be made.
    pub(super) arena: Option<Arena>,
}

/// How a get that could not lend at once stands (see [`State::get_now`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum GetStart {
    /// Answered: items lent, or an error sent.
    Answered,
    /// Nothing to lend now; `lent_elsewhere`: another connection holds lent items of the
    /// queue (whose lease the I/O loop may take back before [`State::get_later`]).
    Blocked { lent_elsewhere: bool },
}

impl State {
    pub(crate) fn new(arena: Option<Arena>) -> State {
        State { objects: HashMap::new(), next_object: 1, clients: HashMap::new(), blocked: Vec::new(), arena }
    }

    /// A connection of process `pid` (if known) finished its handshake.
    pub(super) fn connect(&mut self, conn: u64, pid: Option<u32>) {
        let client = Client { parked: None, lent: VecDeque::new(), seq: 0, progress: Instant::now(), pid };
        self.clients.insert(conn, client);
    }

    pub(super) fn create(&mut self, kind: Kind) -> u64 {
        let id = self.next_object;
        self.next_object += 1;
        self.objects.insert(id, Object::new(kind));
        id
    }

    pub(super) fn put(&mut self, io: &mut impl Link, conn: u64, id: u64, item: Vec<u8>, wait: WaitLimit) {
        let Some(Object::Queue(q)) = self.objects.get_mut(&id) else {
            return io.send(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        if q.takes_put() {
            q.items.push_back(Item::Inline(item));
            io.send(conn, &Reply::Done);
            self.serve_queue(io, id);
        } else if wait == WaitLimit::No {
            io.send(conn, &Reply::Failed(ErrorCode::Full));
        } else {
            self.park(io, conn, id, Op::Put(item), wait);
        }
    }

    /// A put without a reply (unbounded queues only; anything else is a broken client).
    pub(super) fn put_no_reply(&mut self, io: &mut impl Link, conn: u64, id: u64, item: Vec<u8>) {
        match self.objects.get_mut(&id) {
            Some(Object::Queue(q)) if q.maxsize.is_none() => {
                q.items.push_back(Item::Inline(item));
                self.serve_queue(io, id);
            }
            _ => io.close(conn),
        }
    }

    /// A put of an item `conn` wrote into its arena chunk (unbounded queues only, in a chunk
    /// this connection holds; anything else is a broken client).
    pub(super) fn put_shared(&mut self, io: &mut impl Link, conn: u64, id: u64, at: u64, len: u32) {
        let unbounded = matches!(self.objects.get(&id), Some(Object::Queue(q)) if q.maxsize.is_none());
        let span = Span::from_at(at, len).filter(|_| unbounded);
        let taken = span.filter(|span| self.arena.as_mut().is_some_and(|a| a.put(conn, *span)));
        match (taken, self.objects.get_mut(&id)) {
            (Some(span), Some(Object::Queue(q))) => {
                q.items.push_back(Item::Shared(span));
                self.serve_queue(io, id);
            }
            _ => io.close(conn),
        }
    }

    pub(super) fn chunk(&mut self, io: &mut impl Link, conn: u64, retire: Option<u32>) {
        let granted = self.arena.as_mut().and_then(|a| a.grant(conn, retire));
        io.send(conn, &Reply::Chunk(granted));
    }

    /// The first half of a get: lends at once if the queue has items and no one waits first.
    pub(super) fn get_now(&mut self, io: &mut impl Link, conn: u64, id: u64, max: u32, shared: bool) -> GetStart {
        let Some(Object::Queue(q)) = self.objects.get_mut(&id) else {
            io.send(conn, &Reply::Failed(ErrorCode::NoSuchObject));
            return GetStart::Answered;
        };
        if q.serves_get() {
            self.lend(io, conn, id, max, shared);
            self.serve_queue(io, id);
            return GetStart::Answered;
        }
        GetStart::Blocked { lent_elsewhere: q.lent_elsewhere(conn) }
    }

    /// The second half of a get that found nothing: "empty" at once, or it parks.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn get_later(
        &mut self,
        io: &mut impl Link,
        conn: u64,
        id: u64,
        wait: WaitLimit,
        max: u32,
        shared: bool,
        lent_elsewhere: bool,
    ) {
        if wait == WaitLimit::No {
            io.send(conn, &Reply::Failed(ErrorCode::Empty));
        } else {
            if lent_elsewhere {
                self.watch_leases(id);
            }
            self.park(io, conn, id, Op::Get { max, shared }, wait);
        }
    }

    pub(super) fn queue_len(&mut self, io: &mut impl Link, conn: u64, id: u64) {
        let reply = match self.objects.get(&id) {
            Some(Object::Queue(q)) => Reply::QueueLen { len: q.items.len() as u64, full: q.is_full() },
            _ => Reply::Failed(ErrorCode::NoSuchObject),
        };
        io.send(conn, &reply);
    }

    /// The `n` oldest items lent to `conn` were handed to its program: gone for good.
    pub(super) fn ack(&mut self, io: &mut impl Link, conn: u64, n: u32) {
        if let Some(c) = self.clients.get_mut(&conn) {
            c.progress = Instant::now();
        }
        for _ in 0..n {
            let Some(c) = self.clients.get_mut(&conn) else { return };
            let Some((queue, item)) = c.lent.pop_front() else { break };
            if let (Item::Shared(span), Some(arena)) = (item, self.arena.as_mut()) {
                arena.release(span);
            }
            // Its slot is free.
            if let Some(Object::Queue(q)) = self.objects.get_mut(&queue) {
                q.unlent(conn, 1);
                self.serve_queue(io, queue);
            }
        }
    }

    /// Sends up to `max` items of `queue` (at least one; the queue is not empty) to `conn`,
    /// and keeps each until the client acknowledges it. A batch stops at [`LEND_BYTES`].
    /// Items in the arena go by position if the client mapped it (`shared`), else as a copy.
    fn lend(&mut self, io: &mut impl Link, conn: u64, queue: u64, max: u32, shared: bool) {
        let Some(Object::Queue(q)) = self.objects.get_mut(&queue) else { return };
        let Some(c) = self.clients.get_mut(&conn) else { return };
        if !io.can_send(conn) {
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
        io.send(conn, &reply);
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
    }

    /// Puts every item lent to `conn` back at the front of its queue, in the order they were
    /// taken.
    pub(super) fn give_back_lent(&mut self, io: &mut impl Link, conn: u64) {
        let Some(c) = self.clients.get_mut(&conn) else { return };
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
            self.serve_queue(io, queue);
        }
    }

    /// Matches parked getters with items and parked putters with free slots, until neither
    /// can move.
    pub(super) fn serve_queue(&mut self, io: &mut impl Link, id: u64) {
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
                let Some(Op::Get { max, shared }) = self.unpark(io, w) else { continue };
                self.lend(io, w.0, id, if alone { max } else { 1 }, shared);
                moved = true;
            }
            loop {
                let Some(Object::Queue(q)) = self.objects.get_mut(&id) else { return };
                if q.is_full() {
                    break;
                }
                let Some(w) = q.putters.pop_front() else { break };
                let Some(Op::Put(item)) = self.unpark(io, w) else { continue };
                let Some(Object::Queue(q)) = self.objects.get_mut(&id) else { return };
                q.items.push_back(Item::Inline(item));
                io.send(w.0, &Reply::Done);
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
        {
            self.watch_leases(id);
        }
    }

    pub(super) fn acquire(&mut self, io: &mut impl Link, conn: u64, id: u64, wait: WaitLimit) {
        let Some(Object::Semaphore(s)) = self.objects.get_mut(&id) else {
            return io.send(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        if s.waiters.is_empty()
            && let Some(owner_died) = s.grant(conn)
        {
            io.send(conn, &Reply::Acquired { owner_died });
        } else if wait == WaitLimit::No {
            io.send(conn, &Reply::Failed(ErrorCode::WouldBlock));
        } else {
            self.park(io, conn, id, Op::Acquire, wait);
        }
    }

    pub(super) fn release(&mut self, io: &mut impl Link, conn: u64, id: u64) {
        let Some(Object::Semaphore(s)) = self.objects.get_mut(&id) else {
            return io.send(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        match s.release(conn) {
            Ok(()) => {
                io.send(conn, &Reply::Done);
                self.serve_semaphore(io, id);
            }
            Err(code) => io.send(conn, &Reply::Failed(code)),
        }
    }

    fn serve_semaphore(&mut self, io: &mut impl Link, id: u64) {
        loop {
            let Some(Object::Semaphore(s)) = self.objects.get_mut(&id) else { return };
            if s.available == 0 {
                return;
            }
            let Some(w) = s.waiters.pop_front() else { return };
            if self.unpark(io, w).is_none() {
                continue;
            }
            let Some(Object::Semaphore(s)) = self.objects.get_mut(&id) else { return };
            let Some(owner_died) = s.grant(w.0) else { return };
            io.send(w.0, &Reply::Acquired { owner_died });
        }
    }

    pub(super) fn set_event(&mut self, io: &mut impl Link, conn: u64, id: u64, value: bool) {
        let woken = match self.objects.get_mut(&id) {
            Some(Object::Event(e)) => e.store(value),
            _ => return io.send(conn, &Reply::Failed(ErrorCode::NoSuchObject)),
        };
        for w in woken {
            if self.unpark(io, w).is_some() {
                io.send(w.0, &Reply::Flag(true));
            }
        }
        io.send(conn, &Reply::Done);
    }

    pub(super) fn is_set(&mut self, io: &mut impl Link, conn: u64, id: u64) {
        let reply = match self.objects.get(&id) {
            Some(Object::Event(e)) => Reply::Flag(e.set),
            _ => Reply::Failed(ErrorCode::NoSuchObject),
        };
        io.send(conn, &reply);
    }

    pub(super) fn wait_event(&mut self, io: &mut impl Link, conn: u64, id: u64, wait: WaitLimit) {
        match self.objects.get(&id) {
            Some(Object::Event(e)) if e.set => io.send(conn, &Reply::Flag(true)),
            Some(Object::Event(_)) if wait == WaitLimit::No => io.send(conn, &Reply::Flag(false)),
            Some(Object::Event(_)) => self.park(io, conn, id, Op::WaitEvent, wait),
            _ => io.send(conn, &Reply::Failed(ErrorCode::NoSuchObject)),
        }
    }

    pub(super) fn wait_barrier(&mut self, io: &mut impl Link, conn: u64, id: u64, wait: WaitLimit) {
        let Some(Object::Barrier(b)) = self.objects.get_mut(&id) else {
            return io.send(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        };
        match b.arrive() {
            Arrival::Broken => io.send(conn, &Reply::Failed(ErrorCode::BrokenBarrier)),
            Arrival::Waits if wait == WaitLimit::No => {
                // Not waiting at a barrier that is not full breaks it, as a timeout does.
                self.break_barrier(io, id);
                io.send(conn, &Reply::Failed(ErrorCode::Timeout));
            }
            Arrival::Waits => self.park(io, conn, id, Op::WaitBarrier, wait),
            Arrival::Trips => {
                let parties = b.parties;
                let arrived = std::mem::take(&mut b.arrived);
                for (index, w) in arrived.into_iter().enumerate() {
                    if self.unpark(io, w).is_some() {
                        io.send(w.0, &Reply::Index(index as u64));
                    }
                }
                io.send(conn, &Reply::Index(parties as u64 - 1));
            }
        }
    }

    /// Like Python's `reset`: whoever is waiting is told the barrier broke; then it is whole.
    pub(super) fn reset_barrier(&mut self, io: &mut impl Link, conn: u64, id: u64) {
        if !matches!(self.objects.get(&id), Some(Object::Barrier(_))) {
            return io.send(conn, &Reply::Failed(ErrorCode::NoSuchObject));
        }
        self.break_barrier(io, id);
        if let Some(Object::Barrier(b)) = self.objects.get_mut(&id) {
            b.broken = false;
        }
        io.send(conn, &Reply::Done);
    }

    /// Breaks a barrier: everyone waiting at it is told.
    pub(super) fn break_barrier(&mut self, io: &mut impl Link, id: u64) {
        let Some(Object::Barrier(b)) = self.objects.get_mut(&id) else { return };
        b.broken = true;
        for w in std::mem::take(&mut b.arrived) {
            if self.unpark(io, w).is_some() {
                io.send(w.0, &Reply::Failed(ErrorCode::BrokenBarrier));
            }
        }
    }

    /// Applies `f` to map `id` and sends what it answers.
    pub(super) fn map(
        &mut self,
        io: &mut impl Link,
        conn: u64,
        id: u64,
        f: impl FnOnce(&mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>) -> Reply,
    ) {
        let reply = match self.objects.get_mut(&id) {
            Some(Object::Map(m)) => f(m),
            _ => Reply::Failed(ErrorCode::NoSuchObject),
        };
        io.send(conn, &reply);
    }

    /// `conn` is gone (its lent items were given back first, [`give_back_lent`](Self::give_back_lent)):
    /// its parked request is forgotten (a barrier it waited at breaks), and what it held is
    /// released, the next holder told: once per process, however many of its connections
    /// held permits and in whichever rounds their ends are read (a process dies as a whole,
    /// and the first to get one of its permits is told).
    pub(super) fn disconnect(&mut self, io: &mut impl Link, conn: u64) {
        let Some(c) = self.clients.remove(&conn) else { return };
        if let Some(p) = c.parked {
            self.forget_waiter(p.object, (conn, p.seq));
            if matches!(p.op, Op::WaitBarrier) {
                self.break_barrier(io, p.object);
            }
        }
        let held: Vec<u64> = self
            .objects
            .iter()
            .filter(|(_, o)| matches!(o, Object::Semaphore(s) if s.holders.iter().any(|h| h.conn == conn)))
            .map(|(k, _)| *k)
            .collect();
        for object in held {
            if let Some(Object::Semaphore(s)) = self.objects.get_mut(&object) {
                let clients = &self.clients;
                s.holder_closed(conn, c.pid, |h| clients.get(&h).and_then(|c| c.pid));
            }
            self.serve_semaphore(io, object);
        }
    }

    /// What the server holds on behalf of requests, for tests: every entry of every waiter
    /// list, parked requests, and connections that hold lent items, over all objects.
    #[cfg(test)]
    pub(super) fn census(&self) -> (u64, u64, u64) {
        let mut waiters = 0;
        let mut lent_by = 0;
        for o in self.objects.values() {
            waiters += match o {
                Object::Queue(q) => {
                    lent_by += q.lent_by.len();
                    q.getters.len() + q.putters.len()
                }
                Object::Semaphore(s) => s.waiters.len(),
                Object::Event(e) => e.waiters.len(),
                Object::Barrier(b) => b.arrived.len(),
                Object::Map(_) => 0,
            };
        }
        let parked = self.clients.values().filter(|c| c.parked.is_some()).count();
        (waiters as u64, parked as u64, lent_by as u64)
    }
}
