//! The shared objects as the server holds them: queues, semaphores (and locks), events,
//! barriers and maps, with the state changes that need nothing but the object itself.
//!
//! What a request does to an object together with its waiters is in `state.rs`; who waits
//! and until when is in `waiters.rs`. This module must never touch a socket or a connection.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::manager::arena::Span;
use crate::manager::protocol::{ErrorCode, Kind};
use crate::manager::server::waiters::Waiter;

/// A queued item: its bytes, or where a client wrote them in the arena.
pub(super) enum Item {
    Inline(Vec<u8>),
    Shared(Span),
}

pub(super) enum Object {
    Queue(Queue),
    /// A lock is a semaphore of one permit that only its holder may release.
    Semaphore(Semaphore),
    Event(Event),
    Barrier(Barrier),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

impl Object {
    pub(super) fn new(kind: Kind) -> Object {
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
            Kind::Event => Object::Event(Event { set: false, waiters: VecDeque::new() }),
            Kind::Barrier { parties } => {
                Object::Barrier(Barrier { parties: parties.max(1) as usize, arrived: VecDeque::new(), broken: false })
            }
            Kind::Map => Object::Map(BTreeMap::new()),
        }
    }
}

pub(super) struct Queue {
    pub(super) items: VecDeque<Item>,
    pub(super) maxsize: Option<usize>,
    /// Items sent to a getter and not yet acknowledged: they still take a slot, because they
    /// come back if the getter dies.
    pub(super) lent: usize,
    /// How many of them each connection holds. Several connections may hold lent items at
    /// once; what one gives back goes to the front (`PROTOCOL.md`, "Order").
    pub(super) lent_by: HashMap<u64, usize>,
    pub(super) getters: VecDeque<Waiter>,
    pub(super) putters: VecDeque<Waiter>,
}

impl Queue {
    pub(super) fn is_full(&self) -> bool {
        self.maxsize.is_some_and(|m| self.items.len() + self.lent >= m)
    }

    /// Whether a put is taken at once: a free slot, and no earlier putter waiting for it.
    pub(super) fn takes_put(&self) -> bool {
        !self.is_full() && self.putters.is_empty()
    }

    /// Whether a get is served at once: an item, and no earlier getter waiting for it.
    pub(super) fn serves_get(&self) -> bool {
        !self.items.is_empty() && self.getters.is_empty()
    }

    /// Whether a connection other than `conn` holds lent items of this queue.
    pub(super) fn lent_elsewhere(&self, conn: u64) -> bool {
        self.lent_by.keys().any(|c| *c != conn)
    }

    pub(super) fn lent_to(&mut self, conn: u64, n: usize) {
        self.lent += n;
        *self.lent_by.entry(conn).or_default() += n;
    }

    /// `n` items lent to `conn` were acknowledged or given back.
    pub(super) fn unlent(&mut self, conn: u64, n: usize) {
        self.lent = self.lent.saturating_sub(n);
        if let Some(held) = self.lent_by.get_mut(&conn) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                self.lent_by.remove(&conn);
            }
        }
    }
}

pub(super) struct Semaphore {
    pub(super) available: u64,
    /// One entry per permit held.
    pub(super) holders: Vec<Holder>,
    pub(super) lock: bool,
    /// A holder died: the next acquirer is told (once).
    pub(super) owner_died: bool,
    pub(super) waiters: VecDeque<Waiter>,
}

/// A permit held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    /// The connection that holds it.
    pub(super) conn: u64,
    /// The death of its holder's process was told already (when another of its connections
    /// that held a permit closed): its own end frees it without telling anyone again.
    pub(super) death_told: bool,
}

impl Semaphore {
    /// Gives `conn` a permit if one is free; returns whether the previous owner died (told
    /// once), or `None` if none is free.
    pub(super) fn grant(&mut self, conn: u64) -> Option<bool> {
        if self.available == 0 {
            return None;
        }
        self.available -= 1;
        self.holders.push(Holder { conn, death_told: false });
        Some(std::mem::take(&mut self.owner_died))
    }

    /// Gives a permit back on behalf of `conn`: its own, or (a semaphore only) the oldest
    /// one out. A lock may be released only by its holder.
    pub(super) fn release(&mut self, conn: u64) -> Result<(), ErrorCode> {
        let mine = self.holders.iter().position(|h| h.conn == conn);
        let which = match (mine, self.lock) {
            (Some(i), _) => i,
            (None, true) => return Err(ErrorCode::NotOwner),
            // A semaphore may be released by anyone: take the oldest permit out.
            (None, false) if !self.holders.is_empty() => 0,
            (None, false) => return Err(ErrorCode::OverReleased),
        };
        self.holders.remove(which);
        self.available += 1;
        Ok(())
    }

    /// `conn`, a connection of process `pid` (if known), is gone: every permit it held is free
    /// again, and the next holder is told, once per death: a process that held permits on
    /// several connections dies with all of them, though the server may read their ends in
    /// different rounds, so its permits on other connections are marked as told at once
    /// (`pid_of`: the process of a live connection).
    pub(super) fn holder_closed(&mut self, conn: u64, pid: Option<u32>, pid_of: impl Fn(u64) -> Option<u32>) {
        let before = self.holders.len();
        let mut untold = false;
        self.holders.retain(|h| {
            untold |= h.conn == conn && !h.death_told;
            h.conn != conn
        });
        self.available += (before - self.holders.len()) as u64;
        if untold {
            self.owner_died = true;
            if let Some(pid) = pid {
                for h in &mut self.holders {
                    h.death_told |= pid_of(h.conn) == Some(pid);
                }
            }
        }
    }
}

pub(super) struct Event {
    pub(super) set: bool,
    pub(super) waiters: VecDeque<Waiter>,
}

impl Event {
    /// Sets or clears the flag; setting it wakes every waiter (returned, oldest first).
    pub(super) fn store(&mut self, value: bool) -> VecDeque<Waiter> {
        self.set = value;
        if value { std::mem::take(&mut self.waiters) } else { VecDeque::new() }
    }
}

pub(super) struct Barrier {
    pub(super) parties: usize,
    pub(super) arrived: VecDeque<Waiter>,
    pub(super) broken: bool,
}

/// What one more party arriving at a barrier does.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// The barrier is broken: the party is told so.
    Broken,
    /// Not everyone is here yet: the party waits.
    Waits,
    /// The party is the last one: everyone goes.
    Trips,
}

impl Barrier {
    pub(super) fn arrive(&self) -> Arrival {
        if self.broken {
            Arrival::Broken
        } else if self.arrived.len() + 1 < self.parties {
            Arrival::Waits
        } else {
            Arrival::Trips
        }
    }
}
