//! [`ObjectError`]: how a call on a shared object over Redis failed.
//!
//! One type for every object, because most failures are shared by all of them (Redis cannot be
//! reached, a key holds something that is not ours); the variants an operation can return are
//! listed in its `# Errors` section. This module must stay free of logic: it only names
//! failures and prints them.

use std::fmt;

/// Why a call on a [`Queue`](super::Queue), [`Lock`](super::Lock),
/// [`Semaphore`](super::Semaphore), [`Event`](super::Event) or [`Map`](super::Map) failed.
///
/// # Examples
/// ```
/// use stealpool::distributed::objects::ObjectError;
///
/// assert!(ObjectError::Timeout.is_timeout());
/// assert_eq!(ObjectError::Empty.to_string(), "the queue is empty");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ObjectError {
    /// A timed wait ran out: no item, no free slot, no permit, in time.
    Timeout,
    /// [`Queue::try_get`](super::Queue::try_get): the queue had no item.
    Empty,
    /// [`Queue::try_put`](super::Queue::try_put): a bounded queue had no free slot.
    Full,
    /// [`Lock::try_lock`](super::Lock::try_lock) or
    /// [`Semaphore::try_acquire`](super::Semaphore::try_acquire): nothing free now.
    WouldBlock,
    /// A guard's lease had lapsed and another holder took the lock or permit before this
    /// holder released or renewed it: whatever it protects may have been entered by two.
    LeaseLost,
    /// Redis could not be reached (also after reconnecting for the configured window).
    Disconnected {
        /// The URL, without its password.
        url: String,
        /// What the `redis` crate reported.
        source: Option<redis::RedisError>,
    },
    /// Redis answered with an error: a key of the object holds another type (something not
    /// written by these objects), or a script refused what it found there.
    Redis(redis::RedisError),
    /// What a key holds did not decode (not postcard of the handle's type, or a reply of the
    /// wrong shape).
    Corrupt(String),
    /// A value given to the object did not serialize.
    Serialization(String),
}

impl ObjectError {
    /// Whether this is [`Timeout`](Self::Timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ObjectError::Timeout)
    }

    /// Whether this is [`Empty`](Self::Empty).
    pub fn is_empty(&self) -> bool {
        matches!(self, ObjectError::Empty)
    }

    /// Whether this is [`Full`](Self::Full).
    pub fn is_full(&self) -> bool {
        matches!(self, ObjectError::Full)
    }

    /// Whether this is [`WouldBlock`](Self::WouldBlock).
    pub fn is_would_block(&self) -> bool {
        matches!(self, ObjectError::WouldBlock)
    }

    /// Whether this is [`LeaseLost`](Self::LeaseLost).
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, ObjectError::LeaseLost)
    }

    /// Whether this is [`Disconnected`](Self::Disconnected).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, ObjectError::Disconnected { .. })
    }

    /// Whether what Redis held or answered was not ours: [`Redis`](Self::Redis) or
    /// [`Corrupt`](Self::Corrupt).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, ObjectError::Redis(_) | ObjectError::Corrupt(_))
    }
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectError::Timeout => f.write_str("timed out"),
            ObjectError::Empty => f.write_str("the queue is empty"),
            ObjectError::Full => f.write_str("the queue is full"),
            ObjectError::WouldBlock => f.write_str("the operation would block"),
            ObjectError::LeaseLost => f.write_str("the lease had lapsed and another holder took it"),
            ObjectError::Disconnected { url, source: Some(e) } => write!(f, "cannot reach Redis at {url}: {e}"),
            ObjectError::Disconnected { url, source: None } => write!(f, "cannot reach Redis at {url}"),
            ObjectError::Redis(e) => write!(f, "Redis refused the operation: {e}"),
            ObjectError::Corrupt(m) => write!(f, "a key of the object holds what is not ours: {m}"),
            ObjectError::Serialization(m) => write!(f, "serialization failed: {m}"),
        }
    }
}

impl std::error::Error for ObjectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ObjectError::Disconnected { source: Some(e), .. } | ObjectError::Redis(e) => Some(e),
            _ => None,
        }
    }
}
