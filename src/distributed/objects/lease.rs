//! [`Lock`] and [`Semaphore`]: permits held under a lease, in a Redis sorted set.
//!
//! Keys: the set of holders (`...:<kind>:<name>`, member = the holder's random token, score =
//! when its lease lapses, in the server's milliseconds), the counter `:lapsed` (leases that
//! lapsed without a release and were not yet reported to a new holder), and the stream
//! `:released` (an entry per release, for blocked acquirers). A lock is a semaphore of one.
//!
//! Every acquire first drops the holders whose lease has lapsed (by the server's clock, so the
//! hosts' clocks do not matter) and counts them in `:lapsed`; each new holder takes one from
//! that count and so learns that a previous holder vanished without releasing. An acquire is
//! safe to repeat with the same token (a reply lost to a broken connection is retried).
//!
//! This module must never release or renew a token it does not hold, and never wait for a
//! lapse without the deadline of the caller.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};
use serde::{Deserialize, Serialize};

use crate::distributed::objects::ObjectError;
use crate::distributed::objects::handle::{Handle, Step, array, int, millis, not_now, script};

/// KEYS: holders, lapsed, released. ARGV: token, permits, lease ms, ttl ms.
/// `[1, previous_died]` held; `[0, last id of released, ms until the next lapse]` not now.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local now = now_ms()
local ttl = tonumber(ARGV[4])
local lapsed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if lapsed > 0 then
  redis.call('INCRBY', KEYS[2], lapsed)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {1, 0}
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  local count = redis.call('GET', KEYS[2])
  local died = 0
  if count then
    local n = tonumber(count)
    if not n then return redis.error_reply('stealpool: the lapsed-lease counter is not a number') end
    if n > 0 then
      died = 1
      redis.call('DECR', KEYS[2])
    end
  end
  return {1, died}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  return {0, last_id(KEYS[3]), tonumber(first[2]) - now + 1}
end
return {0, last_id(KEYS[3])}
",
    )
});

/// KEYS: holders, released. ARGV: token, ttl ms. `1` released; `0` the token was not a holder.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  signal(KEYS[2], ARGV[2])
  return 1
end
return 0
",
    )
});

/// KEYS: holders. ARGV: token, lease ms, ttl ms. `1` renewed; `0` the token was not a holder.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now_ms() + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

/// The permits of one lock or semaphore: the handle, how many, how long a lease lasts.
#[derive(Clone, Serialize, Deserialize)]
struct Permits {
    handle: Handle,
    permits: u64,
    lease: Duration,
}

impl Permits {
    fn lease_ms(&self) -> u64 {
        millis(self.lease)
    }

    fn acquire(&self, timeout: Duration) -> Result<Option<Held>, ObjectError> {
        let token = super::token();
        let (holders, lapsed, released) = (&self.handle.key, self.handle.part("lapsed"), self.handle.part("released"));
        let (permits, lease, ttl) = (self.permits, self.lease_ms(), self.handle.ttl_ms);
        let step = |c: &mut redis::Connection| {
            ACQUIRE
                .key(holders)
                .key(&lapsed)
                .key(&released)
                .arg(&token)
                .arg(permits)
                .arg(lease)
                .arg(ttl)
                .invoke::<Value>(c)
        };
        let parse = |reply: Value| {
            let items = array(reply)?;
            match items.first().map(int).transpose()? {
                Some(1) => Ok(Step::Done(items.get(1).map(int).transpose()? == Some(1))),
                Some(0) => not_now(items),
                _ => Err(ObjectError::Corrupt(format!("unexpected reply to an acquire: {items:?}"))),
            }
        };
        let died = self.handle.wait(timeout, &released, step, parse)?;
        Ok(died.map(|previous_owner_died| Held { permits: self.clone(), token, previous_owner_died, released: false }))
    }
}

/// One permit held under a lease: the token that holds it.
struct Held {
    permits: Permits,
    token: String,
    previous_owner_died: bool,
    released: bool,
}

impl Held {
    fn release(&mut self) -> Result<(), ObjectError> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let handle = &self.permits.handle;
        let released = handle.part("released");
        let done = handle
            .call(|c| RELEASE.key(&handle.key).key(&released).arg(&self.token).arg(handle.ttl_ms).invoke::<i64>(c))?;
        if done == 1 { Ok(()) } else { Err(ObjectError::LeaseLost) }
    }

    fn renew(&self) -> Result<(), ObjectError> {
        let p = &self.permits;
        let done = p.handle.call(|c| {
            RENEW.key(&p.handle.key).arg(&self.token).arg(p.lease_ms()).arg(p.handle.ttl_ms).invoke::<i64>(c)
        })?;
        if done == 1 { Ok(()) } else { Err(ObjectError::LeaseLost) }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Redis gone or the lease lost: there is nothing left to give back.
        let _ = self.release();
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held")
            .field("object", &self.permits.handle)
            .field("previous_owner_died", &self.previous_owner_died)
            .finish_non_exhaustive()
    }
}

/// A mutual-exclusion lock in Redis with a lease, like [`manager::Lock`](crate::manager::Lock).
/// Made by [`Objects::lock`](super::Objects::lock).
///
/// [`lock`](Self::lock) returns a [`LockGuard`] that unlocks when dropped. The lock is held
/// for at most its lease ([`Objects::lease`](super::Objects::lease), 30 s by default) unless
/// the holder [renews](LockGuard::renew) it: a holder that dies (or stalls past its lease)
/// loses it when the lease lapses, and the next holder's
/// [`LockGuard::previous_owner_died`] says so. A holder that comes back after another took
/// the lock gets [`ObjectError::LeaseLost`] from `unlock` or `renew`.
///
/// # Examples
/// ```no_run
/// # // no_run: needs a redis-server; tests/distributed_objects.rs runs the same.
/// use stealpool::distributed::objects::Objects;
///
/// let lock = Objects::new("redis://127.0.0.1:6379/").lock("accounts");
/// let guard = lock.lock().unwrap();
/// assert!(!guard.previous_owner_died());
/// assert!(lock.try_lock().unwrap_err().is_would_block());
/// guard.unlock().unwrap();
/// assert!(lock.try_lock().is_ok());
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Lock {
    permits: Permits,
}

impl Lock {
    pub(super) fn new(handle: Handle, lease: Duration) -> Self {
        Lock { permits: Permits { handle, permits: 1, lease } }
    }

    /// Waits for the lock and takes it.
    ///
    /// # Errors
    /// `Disconnected` if Redis cannot be reached (also while waiting, past the reconnect
    /// window); `Redis` if a key of the lock holds something else.
    pub fn lock(&self) -> Result<LockGuard, ObjectError> {
        self.lock_timeout(Duration::MAX)
    }

    /// Takes the lock if it is free now.
    ///
    /// # Errors
    /// As [`lock`](Self::lock), and `WouldBlock` if it is held.
    pub fn try_lock(&self) -> Result<LockGuard, ObjectError> {
        self.permits.acquire(Duration::ZERO)?.map(LockGuard).ok_or(ObjectError::WouldBlock)
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// # Errors
    /// As [`lock`](Self::lock), and `Timeout` if it stayed held.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard, ObjectError> {
        self.permits.acquire(timeout)?.map(LockGuard).ok_or(ObjectError::Timeout)
    }

    /// How long a holder keeps the lock without renewing it.
    pub fn lease(&self) -> Duration {
        self.permits.lease
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock").field("object", &self.permits.handle).field("lease", &self.permits.lease).finish()
    }
}

/// A held [`Lock`]; unlocks when dropped.
#[derive(Debug)]
pub struct LockGuard(Held);

impl LockGuard {
    /// Whether a previous holder lost the lock to its lease lapsing, without unlocking: it
    /// died, or stalled past its lease. Whatever the lock protects may be half-updated.
    pub fn previous_owner_died(&self) -> bool {
        self.0.previous_owner_died
    }

    /// Extends the lease to a whole lease from now.
    ///
    /// # Errors
    /// `LeaseLost` if the lease had lapsed and another holder took the lock;
    /// `Disconnected` if Redis cannot be reached.
    pub fn renew(&self) -> Result<(), ObjectError> {
        self.0.renew()
    }

    /// Unlocks now, reporting what Redis said.
    ///
    /// # Errors
    /// `LeaseLost` if the lease had lapsed and another holder took the lock meanwhile;
    /// `Disconnected` if Redis cannot be reached (the lease then lapses on its own).
    pub fn unlock(mut self) -> Result<(), ObjectError> {
        self.0.release()
    }
}

/// A counting semaphore in Redis whose permits are held under a lease, like
/// [`manager::Semaphore`](crate::manager::Semaphore). Made by
/// [`Objects::semaphore`](super::Objects::semaphore).
///
/// [`acquire`](Self::acquire) returns a [`SemaphorePermit`] that gives the permit back when
/// dropped. Permits held by a process that dies come back when their lease lapses, and the
/// next acquirer is told ([`SemaphorePermit::previous_owner_died`]). The number of permits is
/// the handle's: every handle of one name should be made with the same number.
///
/// # Examples
/// ```no_run
/// # // no_run: needs a redis-server; tests/distributed_objects.rs runs the same.
/// use stealpool::distributed::objects::Objects;
///
/// let room = Objects::new("redis://127.0.0.1:6379/").semaphore("room", 2);
/// let a = room.acquire().unwrap();
/// let _b = room.acquire().unwrap();
/// assert!(room.try_acquire().unwrap_err().is_would_block());
/// drop(a);
/// assert!(room.try_acquire().is_ok());
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Semaphore {
    permits: Permits,
}

impl Semaphore {
    pub(super) fn new(handle: Handle, permits: u64, lease: Duration) -> Self {
        Semaphore { permits: Permits { handle, permits, lease } }
    }

    /// Waits for a permit and takes it.
    ///
    /// # Errors
    /// As [`Lock::lock`].
    pub fn acquire(&self) -> Result<SemaphorePermit, ObjectError> {
        self.acquire_timeout(Duration::MAX)
    }

    /// Takes a permit if one is free now.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), and `WouldBlock` if none is free.
    pub fn try_acquire(&self) -> Result<SemaphorePermit, ObjectError> {
        self.permits.acquire(Duration::ZERO)?.map(SemaphorePermit).ok_or(ObjectError::WouldBlock)
    }

    /// Waits at most `timeout` for a permit.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), and `Timeout` if none came free in time.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphorePermit, ObjectError> {
        self.permits.acquire(timeout)?.map(SemaphorePermit).ok_or(ObjectError::Timeout)
    }

    /// The number of permits.
    pub fn permits(&self) -> usize {
        self.permits.permits as usize
    }

    /// How long a holder keeps a permit without renewing it.
    pub fn lease(&self) -> Duration {
        self.permits.lease
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("object", &self.permits.handle)
            .field("permits", &self.permits.permits)
            .field("lease", &self.permits.lease)
            .finish()
    }
}

/// A permit of a [`Semaphore`]; given back when dropped.
#[derive(Debug)]
pub struct SemaphorePermit(Held);

impl SemaphorePermit {
    /// Whether a previous holder of a permit lost it to its lease lapsing, without giving it
    /// back (it died, or stalled past its lease).
    pub fn previous_owner_died(&self) -> bool {
        self.0.previous_owner_died
    }

    /// Extends the lease to a whole lease from now.
    ///
    /// # Errors
    /// As [`LockGuard::renew`].
    pub fn renew(&self) -> Result<(), ObjectError> {
        self.0.renew()
    }

    /// Gives the permit back now, reporting what Redis said.
    ///
    /// # Errors
    /// As [`LockGuard::unlock`].
    pub fn release(mut self) -> Result<(), ObjectError> {
        self.0.release()
    }
}
