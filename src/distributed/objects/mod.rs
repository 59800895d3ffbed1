//! Shared objects across machines: the [`manager`](crate::manager)'s queue, lock, semaphore,
//! event and map, kept in Redis, with handles that travel inside jobs to any host.
//!
//! [`Objects`] names a Redis (URL, namespace, timeouts) and makes handles: [`Queue`] (bounded or
//! not), [`Lock`], [`Semaphore`], [`Event`], [`Map`]. Objects are named: two handles made with
//! the same [`Objects`] settings and name, in any processes, are the same object. A handle is
//! plain data (serde): put it in a job's arguments and the worker that runs the job uses the
//! object. A handle carries the Redis URL whole, password included (whoever runs the job needs
//! it to connect; `Debug` and error messages show it redacted). It connects on first use; each process keeps its own idle connections (so a process
//! that uses objects from one thread holds one connection), never inherits its parent's across
//! a `fork`, and a thread blocked in a wait holds a connection of its own.
//!
//! Every operation is one atomic Redis step (a Lua script, an atomic pipeline or one command);
//! waits are that step repeated, blocking in between (`XREAD BLOCK`, at most 2 s at a time) on a
//! small stream the object's writers add to, so a put, release or set wakes the waiters at once.
//! Values travel as postcard. A key that holds what these objects did not write is an error
//! ([`ObjectError::Redis`] or [`ObjectError::Corrupt`]), never a panic.
//!
//! # Keys and their lifetime
//! Every key is `{namespace}:obj:<kind>:<name>` or that plus `:<part>` (one Redis Cluster slot
//! per namespace). Nothing accumulates: every key an object writes gets an expiry of the idle
//! expiry ([`Objects::idle_expiry`], 24 hours by default) and every write pushes it back, so an
//! object lives until nobody has written to it for that long (a queue's items, a set event, a
//! map's entries then vanish with it). Reads (`len`, `is_set`, `get` of the map) do not extend
//! it. The signal streams hold one entry each. An empty queue, a free lock and a cleared event
//! hold no key at all.
//!
//! # What is weaker than the local manager, and why
//! The local manager sees its clients' sockets close when their processes die; Redis does not
//! tell anyone that a client died (a TCP connection of a dead host may not even close), so:
//! - **Leases instead of death notice.** A [`Lock`] or [`Semaphore`] permit is held for a lease
//!   ([`Objects::lease`], 30 s by default; a guard can [`renew`](LockGuard::renew) it). A holder
//!   that dies keeps it until the lease lapses, not until its death; a holder that stalls past
//!   its lease (stopped, swapping, partitioned) loses it while alive, and another may enter:
//!   its `unlock` then reports [`ObjectError::LeaseLost`]. The next holder learns of a lapse
//!   through `previous_owner_died()`, as with the local manager, but "died" means "did not
//!   release within its lease". Leases run on the Redis server's clock, so the hosts' clocks do
//!   not matter.
//! - **At most once for a dying getter.** A [`Queue::get`] removes the item in one script; a
//!   getter that dies between that step and its return loses the item (the local manager lends
//!   items and takes them back). And a put whose reply is lost to a broken connection is sent
//!   again after reconnecting, so across a Redis failure an item may arrive twice.
//! - **Redis is the one copy.** Objects live as long as Redis keeps them: a Redis restarted
//!   without persistence (AOF or RDB) comes back empty. A blocked call survives a restart: it
//!   reconnects with backoff for up to the reconnect window ([`Objects::reconnect_window`],
//!   10 s by default), then fails with [`ObjectError::Disconnected`]; it never hangs.
//! - **Waiters are woken together.** Every getter of an empty queue wakes at each put (one takes
//!   the item); fine for a handful of waiters per object, costly for hundreds.
//! - There is no `Barrier` yet.
//!
//! This module must never write a key outside its namespace or without an expiry, never block
//! without a bound, and never panic on what it reads from Redis.

mod error;
mod event;
pub(crate) mod handle;
mod lease;
mod map;
mod queue;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

pub use self::error::ObjectError;
pub use self::event::Event;
pub use self::lease::{Lock, LockGuard, Semaphore, SemaphorePermit};
pub use self::map::Map;
pub use self::queue::Queue;

use self::handle::{Handle, Location};
use crate::distributed::connection::Namespace;

/// Where the shared objects live (a Redis URL and a namespace) and how they behave (timeouts,
/// idle expiry, lease); makes their handles. See the module docs.
///
/// Making a handle touches no network: the first operation connects.
///
/// # Examples
/// ```no_run
/// # // no_run: needs a redis-server; tests/distributed_objects.rs runs the same.
/// use std::time::Duration;
/// use stealpool::distributed::objects::Objects;
///
/// let objects = Objects::new("redis://127.0.0.1:6379/")
///     .namespace("myapp")
///     .lease(Duration::from_secs(5));
/// let results = objects.queue::<(u32, String)>("results");
/// results.put(&(1, "one".to_string())).unwrap();
/// assert_eq!(results.get().unwrap(), (1, "one".to_string()));
/// ```
#[derive(Clone, Debug)]
pub struct Objects {
    location: Location,
    namespace: Namespace,
    idle_expiry: Duration,
    lease: Duration,
}

impl Objects {
    /// The objects in the Redis at `url` (`redis://[user:password@]host:port/db`,
    /// `rediss://...` for TLS, `redis+unix:///path`), namespace `"stealpool"`, a 5 s connect
    /// timeout, a 30 s timeout on each read and write, a 10 s reconnect window, a 24 h idle
    /// expiry and a 30 s lease.
    pub fn new(url: impl Into<String>) -> Objects {
        Objects {
            location: Location {
                url: url.into(),
                connect_timeout: Duration::from_secs(5),
                io_timeout: Duration::from_secs(30),
                reconnect_window: Duration::from_secs(10),
            },
            namespace: Namespace::new("stealpool"),
            idle_expiry: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(30),
        }
    }

    /// Puts every key under `namespace` (several applications can share one Redis).
    pub fn namespace(mut self, namespace: &str) -> Objects {
        self.namespace = Namespace::new(namespace);
        self
    }

    /// How long one connection attempt may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Objects {
        self.location.connect_timeout = timeout;
        self
    }

    /// How long one read or write may take (a blocking wait adds its block time to it).
    pub fn io_timeout(mut self, timeout: Duration) -> Objects {
        self.location.io_timeout = timeout;
        self
    }

    /// How long a blocked call keeps reconnecting after its connection broke before it fails
    /// with [`ObjectError::Disconnected`].
    pub fn reconnect_window(mut self, window: Duration) -> Objects {
        self.location.reconnect_window = window;
        self
    }

    /// How long after its last write an object's keys expire (at least 1 ms, at most 100
    /// years; kept at least twice the lease, so that a held lock never expires under its
    /// holder).
    pub fn idle_expiry(mut self, expiry: Duration) -> Objects {
        self.idle_expiry = expiry;
        self
    }

    /// How long a [`Lock`] or [`Semaphore`] permit stays held without a renewal (at least
    /// 1 ms, at most 100 years).
    pub fn lease(mut self, lease: Duration) -> Objects {
        self.lease = lease.max(Duration::from_millis(1));
        self
    }

    fn handle(&self, kind: &str, name: &str) -> Handle {
        let ttl = self.idle_expiry.max(self.lease.saturating_mul(2)).max(Duration::from_millis(1));
        Handle {
            location: Arc::new(self.location.clone()),
            key: self.namespace.key(&["obj", kind, name]),
            ttl_ms: handle::millis(ttl),
        }
    }

    /// The unbounded queue `name`.
    pub fn queue<T>(&self, name: &str) -> Queue<T> {
        Queue::new(self.handle("queue", name), None)
    }

    /// The queue `name`, holding at most `maxsize` items (at least 1).
    pub fn bounded_queue<T>(&self, name: &str, maxsize: usize) -> Queue<T> {
        Queue::new(self.handle("queue", name), Some(maxsize.max(1) as u64))
    }

    /// The lock `name`.
    pub fn lock(&self, name: &str) -> Lock {
        Lock::new(self.handle("lock", name), self.lease)
    }

    /// The semaphore `name` with `permits` permits.
    pub fn semaphore(&self, name: &str, permits: usize) -> Semaphore {
        Semaphore::new(self.handle("semaphore", name), permits as u64, self.lease)
    }

    /// The event `name`.
    pub fn event(&self, name: &str) -> Event {
        Event::new(self.handle("event", name))
    }

    /// The map `name`.
    pub fn map<K, V>(&self, name: &str) -> Map<K, V> {
        Map::new(self.handle("map", name))
    }
}

/// A token for one holder of a lease, unique across processes and hosts: 128 bits from std's
/// randomly keyed hasher (seeded from the OS once per process), over the pid, the time and a
/// counter, so that two holders never share one.
fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let seed = (std::process::id(), nanos, n);
    let (a, b) = (RandomState::new().hash_one(seed), RandomState::new().hash_one((seed, 1u8)));
    format!("{a:016x}{b:016x}")
}
