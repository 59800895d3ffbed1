//! [`Event`]: a flag in a Redis string that processes on any hosts wait for.
//!
//! Keys: the flag (`...:event:<name>`, `1` while set, absent while clear) and the stream
//! `:set` (an entry per `set`, which wakes every waiter at once). This module must never
//! treat a flag key holding anything but `1` as set.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};
use serde::{Deserialize, Serialize};

use crate::distributed::objects::ObjectError;
use crate::distributed::objects::handle::{Handle, Step, array, int, not_now, script};

/// KEYS: flag, set signal. ARGV: ttl ms.
static SET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
signal(KEYS[2], ARGV[1])
return 1
",
    )
});

/// KEYS: flag, set signal. `[1]` set; `[0, last id of set]` clear; an error for a flag that
/// holds anything else.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local v = redis.call('GET', KEYS[1])
if v == '1' then
  return {1}
end
if v then
  return redis.error_reply('stealpool: the event flag holds something else than 1')
end
return {0, last_id(KEYS[2])}
",
    )
});

/// A flag that processes on any hosts can wait for, like
/// [`manager::Event`](crate::manager::Event). Made by [`Objects::event`](super::Objects::event).
///
/// A set flag stays set for the idle expiry of the objects after the last `set` (see the
/// module docs), then reads as clear.
///
/// # Examples
/// ```no_run
/// # // no_run: needs a redis-server; tests/distributed_objects.rs runs the same.
/// use std::time::Duration;
/// use stealpool::distributed::objects::Objects;
///
/// let ready = Objects::new("redis://127.0.0.1:6379/").event("ready");
/// assert_eq!(ready.wait_timeout(Duration::from_millis(5)).unwrap(), false);
/// ready.set().unwrap();
/// assert!(ready.is_set().unwrap());
/// ready.wait().unwrap();
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Event {
    handle: Handle,
}

impl Event {
    pub(super) fn new(handle: Handle) -> Self {
        Event { handle }
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// # Errors
    /// `Disconnected` if Redis cannot be reached; `Redis` if a key holds something else.
    pub fn set(&self) -> Result<(), ObjectError> {
        let signal = self.handle.part("set");
        self.handle.call(|c| SET.key(&self.handle.key).key(&signal).arg(self.handle.ttl_ms).invoke::<i64>(c)).map(drop)
    }

    /// Clears the flag.
    ///
    /// # Errors
    /// As [`set`](Self::set).
    pub fn clear(&self) -> Result<(), ObjectError> {
        self.handle.call(|c| redis::cmd("DEL").arg(&self.handle.key).query::<i64>(c)).map(drop)
    }

    /// Whether the flag is set.
    ///
    /// # Errors
    /// As [`set`](Self::set).
    pub fn is_set(&self) -> Result<bool, ObjectError> {
        self.wait_timeout(Duration::ZERO)
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    /// As [`set`](Self::set) (also while waiting, past the reconnect window).
    pub fn wait(&self) -> Result<(), ObjectError> {
        self.wait_timeout(Duration::MAX).map(drop)
    }

    /// Waits at most `timeout` for the flag; returns whether it is set, like Python's
    /// `Event.wait(timeout)`.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, ObjectError> {
        let signal = self.handle.part("set");
        let step = |c: &mut redis::Connection| CHECK.key(&self.handle.key).key(&signal).invoke::<Value>(c);
        let parse = |reply: Value| {
            let items = array(reply)?;
            match items.first().map(int).transpose()? {
                Some(1) => Ok(Step::Done(())),
                Some(0) => not_now(items),
                _ => Err(ObjectError::Corrupt(format!("unexpected reply to an event check: {items:?}"))),
            }
        };
        Ok(self.handle.wait(timeout, &signal, step, parse)?.is_some())
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("object", &self.handle).finish()
    }
}
