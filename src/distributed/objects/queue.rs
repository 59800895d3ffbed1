//! [`Queue`]: a FIFO queue in a Redis list, bounded or not, with blocking `get` and `put`.
//!
//! Keys: the list itself (`...:queue:<name>`), the stream `:put` (an entry per put, for
//! blocked getters) and, when bounded, the stream `:taken` (an entry per get, for blocked
//! putters). This module must never take an item in more than one Redis call (a pop is one
//! script), and never wait without the deadline of the caller.

use std::fmt;
use std::marker::PhantomData;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::distributed::objects::ObjectError;
use crate::distributed::objects::handle::{Handle, Step, array, bytes, decode, encode, int, not_now, script};

/// KEYS: list, put signal, taken signal. ARGV: item, maxsize (0: unbounded), ttl ms.
/// `[1]` put; `[0, last id of taken]` full.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local max = tonumber(ARGV[2])
if max > 0 and redis.call('LLEN', KEYS[1]) >= max then
  return {0, last_id(KEYS[3])}
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
signal(KEYS[2], ARGV[3])
return {1}
",
    )
});

/// KEYS: list, put signal, taken signal. ARGV: bounded (1/0), ttl ms.
/// `[1, item]` taken; `[0, last id of put]` empty.
static GET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local item = redis.call('LPOP', KEYS[1])
if not item then
  return {0, last_id(KEYS[2])}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if ARGV[1] == '1' then
  signal(KEYS[3], ARGV[2])
end
return {1, item}
",
    )
});

/// A FIFO queue of `T` in Redis, shared by processes on any hosts, like
/// [`manager::Queue`](crate::manager::Queue). Made by
/// [`Objects::queue`](super::Objects::queue) and
/// [`Objects::bounded_queue`](super::Objects::bounded_queue).
///
/// The handle is cheap to clone and serializable: send it inside a job, and the worker that
/// runs the job uses the same queue. Items travel as postcard. Blocking calls follow one
/// naming family: `put` / `try_put` / `put_timeout` and `get` / `try_get` / `get_timeout`
/// (a timeout of [`Duration::ZERO`] is the `try_` form, [`Duration::MAX`] has no deadline).
///
/// Every getter blocked on an empty queue wakes at each put and one of them takes the item (a
/// thundering herd: fine for a handful of consumers per queue). An item is removed from
/// Redis by the getter's one script call: a getter that dies between that call and its
/// return loses that one item (the local manager's queue hands it back instead; see the
/// module docs).
///
/// # Examples
/// ```no_run
/// # // no_run: needs a redis-server; tests/distributed_objects.rs runs the same.
/// use std::time::Duration;
/// use stealpool::distributed::objects::Objects;
///
/// let objects = Objects::new("redis://127.0.0.1:6379/").namespace("example");
/// let q = objects.bounded_queue::<u32>("jobs", 2);
/// q.put(&1).unwrap();
/// q.put(&2).unwrap();
/// assert!(q.put_timeout(&3, Duration::from_millis(10)).unwrap_err().is_timeout());
/// assert_eq!(q.get().unwrap(), 1);
/// assert_eq!(q.try_get().unwrap(), 2);
/// assert!(q.try_get().unwrap_err().is_empty());
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Queue<T> {
    handle: Handle,
    maxsize: Option<u64>,
    #[serde(skip)]
    item: PhantomData<fn(T) -> T>,
}

impl<T> Queue<T> {
    pub(super) fn new(handle: Handle, maxsize: Option<u64>) -> Self {
        Queue { handle, maxsize, item: PhantomData }
    }

    /// The maximum number of items, or `None` for an unbounded queue.
    pub fn maxsize(&self) -> Option<usize> {
        self.maxsize.map(|m| m as usize)
    }

    /// The number of items in the queue now (others may change it at any moment).
    ///
    /// # Errors
    /// `Disconnected` if Redis cannot be reached; `Redis` if the key holds something else.
    pub fn len(&self) -> Result<usize, ObjectError> {
        let key = &self.handle.key;
        self.handle.call(|c| redis::cmd("LLEN").arg(key).query::<u64>(c)).map(|n| n as usize)
    }

    /// Whether the queue holds no item now.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool, ObjectError> {
        Ok(self.len()? == 0)
    }

    fn keys(&self) -> [String; 3] {
        [self.handle.key.clone(), self.handle.part("put"), self.handle.part("taken")]
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    fn put_with(&self, item: &T, timeout: Duration) -> Result<(), ObjectError> {
        let bytes = encode(item)?;
        let keys = self.keys();
        let max = self.maxsize.unwrap_or(0);
        let ttl = self.handle.ttl_ms;
        let step = |c: &mut redis::Connection| {
            PUT.key(&keys[0]).key(&keys[1]).key(&keys[2]).arg(&bytes[..]).arg(max).arg(ttl).invoke::<Value>(c)
        };
        let parse = |reply: Value| {
            let items = array(reply)?;
            match items.first().map(int).transpose()? {
                Some(1) => Ok(Step::Done(())),
                Some(0) => not_now(items),
                _ => Err(ObjectError::Corrupt(format!("unexpected reply to a put: {items:?}"))),
            }
        };
        // A step that found the queue full wrote nothing and is repeated; a step that put is
        // the last one, unless its reply was lost to a broken connection: then it is repeated
        // after reconnecting, and the item may be in the queue twice (see the module docs).
        self.handle.wait(timeout, &keys[2], step, parse)?.ok_or(ObjectError::Timeout)
    }

    /// Appends `item`, waiting for a free slot if the queue is bounded and full.
    ///
    /// # Errors
    /// `Disconnected` if Redis cannot be reached (also while waiting, past the reconnect
    /// window), `Serialization` if `item` does not serialize, `Redis` if the key holds
    /// something else.
    pub fn put(&self, item: &T) -> Result<(), ObjectError> {
        self.put_with(item, Duration::MAX)
    }

    /// Appends `item` if there is a free slot now.
    ///
    /// # Errors
    /// As [`put`](Self::put), and `Full` if a bounded queue has no free slot.
    pub fn try_put(&self, item: &T) -> Result<(), ObjectError> {
        self.put_with(item, Duration::ZERO).map_err(|e| if e.is_timeout() { ObjectError::Full } else { e })
    }

    /// Appends `item`, waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    /// As [`put`](Self::put), and `Timeout` if no slot came free in time.
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), ObjectError> {
        self.put_with(item, timeout)
    }

    fn get_with(&self, timeout: Duration) -> Result<T, ObjectError> {
        let keys = self.keys();
        let bounded = if self.maxsize.is_some() { 1 } else { 0 };
        let ttl = self.handle.ttl_ms;
        let step = |c: &mut redis::Connection| {
            GET.key(&keys[0]).key(&keys[1]).key(&keys[2]).arg(bounded).arg(ttl).invoke::<Value>(c)
        };
        let parse = |reply: Value| {
            let mut items = array(reply)?;
            match items.first().map(int).transpose()? {
                Some(1) => match items.get_mut(1).map(std::mem::take).map(bytes).transpose()?.flatten() {
                    Some(item) => Ok(Step::Done(item)),
                    None => Err(ObjectError::Corrupt("a get reply without its item".into())),
                },
                Some(0) => not_now(items),
                _ => Err(ObjectError::Corrupt(format!("unexpected reply to a get: {items:?}"))),
            }
        };
        let item = self.handle.wait(timeout, &keys[1], step, parse)?.ok_or(ObjectError::Timeout)?;
        decode(&item)
    }

    /// Removes and returns the oldest item, waiting for one if the queue is empty.
    ///
    /// # Errors
    /// `Disconnected` if Redis cannot be reached (also while waiting, past the reconnect
    /// window); `Corrupt` if the item does not decode as `T` (it is gone from the queue);
    /// `Redis` if the key holds something else.
    pub fn get(&self) -> Result<T, ObjectError> {
        self.get_with(Duration::MAX)
    }

    /// Removes and returns the oldest item if there is one now.
    ///
    /// # Errors
    /// As [`get`](Self::get), and `Empty` if the queue is empty.
    pub fn try_get(&self) -> Result<T, ObjectError> {
        self.get_with(Duration::ZERO).map_err(|e| if e.is_timeout() { ObjectError::Empty } else { e })
    }

    /// Removes and returns the oldest item, waiting at most `timeout` for one.
    ///
    /// # Errors
    /// As [`get`](Self::get), and `Timeout` if none came in time.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, ObjectError> {
        self.get_with(timeout)
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { handle: self.handle.clone(), maxsize: self.maxsize, item: PhantomData }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue").field("object", &self.handle).field("maxsize", &self.maxsize).finish()
    }
}
