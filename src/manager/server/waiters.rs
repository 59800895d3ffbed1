//! Parking and expiry: requests that wait for their condition (an item, a slot, a permit, an
//! event, the other parties of a barrier), their deadlines, and the leases of connections
//! that hold lent items while others wait.
//!
//! A parked request lives in its connection's [`Client`](super::state::Client) entry; the
//! object's waiter list holds only a [`Waiter`] naming it, so a stale entry (the request
//! timed out, the connection closed) is recognized and skipped. This module must never touch
//! a socket: what it answers goes out through the [`Link`].

use std::time::{Duration, Instant};

use crate::deadline;
use crate::manager::protocol::{ErrorCode, Reply, WaitLimit};
use crate::manager::server::objects::Object;
use crate::manager::server::state::{Link, State};

/// A connection's place in a waiter list: the connection and the number of the request that
/// parked, so a stale entry (the request timed out, the connection closed) is recognized.
pub(super) type Waiter = (u64, u64);

/// A connection that holds lent items of a queue and has acknowledged none of them for this
/// long, while another connection waits for that queue, loses them: they go back to the
/// front of the queue and the connection is closed (`PROTOCOL.md`, "A stalled consumer").
pub(crate) const LEASE: Duration = Duration::from_millis(50);

/// A request waiting for its condition.
pub(super) struct Parked {
    pub(super) seq: u64,
    pub(super) object: u64,
    pub(super) op: Op,
    pub(super) deadline: Option<Instant>,
}

/// What a parked request asked for.
pub(super) enum Op {
    Get { max: u32, shared: bool },
    Put(Vec<u8>),
    Acquire,
    WaitEvent,
    WaitBarrier,
}

impl State {
    /// Parks `conn`'s request on object `id`.
    pub(super) fn park(&mut self, io: &mut impl Link, conn: u64, id: u64, op: Op, wait: WaitLimit) {
        let Some(c) = self.clients.get_mut(&conn) else { return };
        if c.parked.is_some() {
            // One request at a time: a client that asks again while one waits is broken.
            return io.close(conn);
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
            (Some(Object::Event(e)), Op::WaitEvent) => &mut e.waiters,
            (Some(Object::Barrier(b)), Op::WaitBarrier) => &mut b.arrived,
            _ => return io.send(conn, &Reply::Failed(ErrorCode::NoSuchObject)),
        };
        list.push_back(waiter);
        c.parked = Some(Parked { seq, object: id, op, deadline });
    }

    /// Takes the parked request of a waiter list entry, if the entry is still current.
    pub(super) fn unpark(&mut self, io: &impl Link, (conn, seq): Waiter) -> Option<Op> {
        let c = self.clients.get_mut(&conn)?;
        if io.is_closed(conn) || c.parked.as_ref()?.seq != seq {
            return None;
        }
        c.parked.take().map(|p| p.op)
    }

    /// The connections whose parked request's deadline is `now` or earlier.
    pub(super) fn due(&self, now: Instant) -> Vec<u64> {
        self.clients
            .iter()
            .filter(|(_, c)| c.parked.as_ref().and_then(|p| p.deadline).is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether `conn`'s parked request is a get (before it is told "empty", the server takes
    /// in the puts already sent: `Server::drain_others`).
    pub(super) fn parked_get(&self, conn: u64) -> bool {
        self.clients.get(&conn).and_then(|c| c.parked.as_ref()).is_some_and(|p| matches!(p.op, Op::Get { .. }))
    }

    /// The earliest deadline of a parked request.
    pub(super) fn next_parked_deadline(&self) -> Option<Instant> {
        self.clients.values().filter_map(|c| c.parked.as_ref()?.deadline).min()
    }

    /// Answers `conn`'s parked request as its deadline passed.
    pub(super) fn expire(&mut self, io: &mut impl Link, conn: u64) {
        let Some(p) = self.clients.get_mut(&conn).and_then(|c| c.parked.take()) else { return };
        // Nothing of the request stays behind in the object's waiter list.
        self.forget_waiter(p.object, (conn, p.seq));
        let reply = match p.op {
            Op::Get { .. } => Reply::Failed(ErrorCode::Empty),
            Op::Put(_) => Reply::Failed(ErrorCode::Full),
            Op::Acquire => Reply::Failed(ErrorCode::Timeout),
            Op::WaitEvent => Reply::Flag(false),
            Op::WaitBarrier => {
                // Python's rule: a wait that times out breaks the barrier for everyone.
                self.break_barrier(io, p.object);
                Reply::Failed(ErrorCode::Timeout)
            }
        };
        io.send(conn, &reply);
    }

    /// Removes a waiter from the list it is in on `object` (a request that timed out, or whose
    /// connection closed), so that waiter lists hold only requests that still wait.
    pub(super) fn forget_waiter(&mut self, object: u64, waiter: Waiter) {
        let list = match self.objects.get_mut(&object) {
            Some(Object::Queue(q)) => {
                let in_getters = q.getters.contains(&waiter);
                if in_getters { &mut q.getters } else { &mut q.putters }
            }
            Some(Object::Semaphore(s)) => &mut s.waiters,
            Some(Object::Event(e)) => &mut e.waiters,
            Some(Object::Barrier(b)) => &mut b.arrived,
            Some(Object::Map(_)) | None => return,
        };
        if let Some(i) = list.iter().position(|w| *w == waiter) {
            list.remove(i);
        }
    }

    /// The connections other than `except` that hold lent items of `queue` and made no
    /// progress within [`LEASE`] of `now`.
    pub(super) fn stale_holders(&self, queue: u64, except: u64, now: Instant) -> Vec<u64> {
        let Some(Object::Queue(q)) = self.objects.get(&queue) else { return Vec::new() };
        q.lent_by
            .keys()
            .copied()
            .filter(|h| *h != except && self.clients.get(h).is_some_and(|c| c.progress + LEASE <= now))
            .collect()
    }

    /// The moment the oldest lease on a blocked queue runs out.
    pub(super) fn next_lease_end(&self) -> Option<Instant> {
        let mut end: Option<Instant> = None;
        for id in &self.blocked {
            let Some(Object::Queue(q)) = self.objects.get(id) else { continue };
            for holder in q.lent_by.keys() {
                let at = self.clients.get(holder).map_or_else(Instant::now, |c| c.progress + LEASE);
                end = Some(end.map_or(at, |e| e.min(at)));
            }
        }
        end
    }

    /// Whether getters still wait on blocked queue `id` while others hold lent items, and if
    /// so the connection that waits first (the one kept waiting).
    pub(super) fn still_blocked(&self, id: u64) -> Option<u64> {
        match self.objects.get(&id) {
            Some(Object::Queue(q)) if !q.getters.is_empty() && !q.lent_by.is_empty() => {
                Some(q.getters.front().map_or(0, |w| w.0))
            }
            _ => None,
        }
    }

    /// Starts watching the leases on queue `id` (a getter waits there while others hold
    /// lent items).
    pub(super) fn watch_leases(&mut self, id: u64) {
        if !self.blocked.contains(&id) {
            self.blocked.push(id);
        }
    }
}
