//! [`Queue`]: a FIFO queue served by a manager.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::manager::client::handle::{Handle, decode, encode, unexpected, wait_for};
use crate::manager::client::prefetch;
use crate::manager::client::putter;
use crate::manager::error::{
    CallError, ErrorKind, GetError, GetTimeoutError, PutError, PutTimeoutError, TryGetError, TryPutError,
};
use crate::manager::protocol::{Reply, Request, WaitLimit};

/// A FIFO queue of `T` shared through a [`Manager`](super::Manager): many producers and
/// consumers, in any processes and threads. Created by
/// [`Manager::queue`](super::Manager::queue) and
/// [`Manager::bounded_queue`](super::Manager::bounded_queue).
///
/// The handle is cheap to clone and serializable; items travel serialized (postcard), so `T`
/// implements `Serialize` and `Deserialize`. Blocking calls follow one naming family:
/// `put` / `try_put` / `put_timeout` and `get` / `try_get` / `get_timeout`.
///
/// Items are handed out in the order they were put, to every consumer, with one exception:
/// an item that another consumer had read ahead and gave back unused (or lost by dying or
/// stalling) goes back to the front and is delivered next, so it may reach a consumer after
/// later items. A process that calls `get` in a tight loop reads ahead in batches
/// (acknowledging each item as it returns it, so an item it never returned goes back to the
/// queue if it dies); other consumers are served meanwhile from the rest of the queue, and
/// unused read-ahead is given back 2 ms after the process stops calling `get`. A `put` to
/// an unbounded queue returns without a round trip to the manager; the item is visible to
/// every later `get`, `try_get` or `len`, from any process. Such an item of 4 KiB to 1 MiB
/// (serialized) is written straight into memory the manager shares with every process that
/// uses it, and read straight out of it by the getter; only its position goes through the
/// manager. Puts to bounded queues, and other sizes, travel through the manager's socket.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use stealpool::manager::{Manager, TryGetError};
///
/// let manager = Manager::new().unwrap();
/// let q = manager.bounded_queue::<u32>(2).unwrap();
/// q.put(1).unwrap();
/// q.put(2).unwrap();
/// assert!(q.is_full().unwrap());
/// assert!(q.put_timeout(3, Duration::from_millis(10)).unwrap_err().is_timeout());
/// assert_eq!(q.get(), Ok(1));
/// assert_eq!(q.try_get(), Ok(2));
/// assert_eq!(q.try_get(), Err(TryGetError::Empty));
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Queue<T> {
    pub(super) handle: Handle,
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

    fn state(&self) -> Result<(u64, bool), ErrorKind> {
        match self.handle.call(&Request::QueueLen { id: self.handle.id })? {
            Reply::QueueLen { len, full } => Ok((len, full)),
            other => Err(unexpected(other)),
        }
    }

    /// The number of items in the queue now (others may change it at any moment). Items
    /// another process has read ahead are not counted.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] if the manager is gone.
    pub fn len(&self) -> Result<usize, CallError> {
        Ok(self.state()?.0 as usize)
    }

    /// Whether the queue holds no item now.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] if the manager is gone.
    pub fn is_empty(&self) -> Result<bool, CallError> {
        Ok(self.state()?.0 == 0)
    }

    /// Whether a bounded queue has no free slot now. An item handed to a getter that has not
    /// yet confirmed receiving it still takes its slot (it comes back if the getter dies).
    ///
    /// # Errors
    /// [`CallError::Disconnected`] if the manager is gone.
    pub fn is_full(&self) -> Result<bool, CallError> {
        Ok(self.state()?.1)
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Puts `item`; a failure hands it back with its kind, for the caller's own error type.
    fn put_with(&self, item: T, wait: WaitLimit) -> Result<(), (T, ErrorKind)> {
        if self.maxsize.is_none() {
            // An unbounded queue always takes the item: do not wait for the server to say so.
            return putter::put(&self.handle.address, self.handle.id, &item).map_err(|kind| (item, kind));
        }
        let bytes = match encode(&item) {
            Ok(b) => b,
            Err(kind) => return Err((item, kind)),
        };
        match self.handle.call(&Request::Put { id: self.handle.id, item: bytes, wait }) {
            Ok(Reply::Done) => Ok(()),
            Ok(other) => Err((item, unexpected(other))),
            Err(kind) => Err((item, kind)),
        }
    }

    /// Appends `item`, waiting for a free slot if the queue is bounded and full. Once it
    /// returns `Ok`, the item is in the queue: it survives the death of the putter.
    ///
    /// # Errors
    /// [`Disconnected`](PutError::Disconnected) if the manager is gone (also while
    /// waiting), [`Serialization`](PutError::Serialization) if `item` does not serialize.
    /// The item is handed back in the [`PutError`].
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, WaitLimit::Forever).map_err(|(item, kind)| PutError::new(item, kind))
    }

    /// Appends `item` if there is a free slot now.
    ///
    /// # Errors
    /// As [`put`](Self::put), and [`Full`](TryPutError::Full) if there is no free slot.
    pub fn try_put(&self, item: T) -> Result<(), TryPutError<T>> {
        self.put_with(item, WaitLimit::No).map_err(|(item, kind)| TryPutError::new(item, kind))
    }

    /// Appends `item`, waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    /// As [`put`](Self::put), and [`Timeout`](PutTimeoutError::Timeout) if no slot freed up
    /// in time.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
        self.put_with(item, wait_for(timeout)).map_err(|(item, kind)| PutTimeoutError::new(item, kind))
    }

    fn get_with(&self, wait: WaitLimit) -> Result<T, ErrorKind> {
        prefetch::get(&self.handle, wait, decode)
    }

    /// Removes and returns the oldest item, waiting for one if the queue is empty.
    ///
    /// # Errors
    /// [`Disconnected`](GetError::Disconnected) if the manager is gone (also while
    /// waiting); [`Serialization`](GetError::Serialization) if the item does not
    /// deserialize as `T`.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_with(WaitLimit::Forever).map_err(GetError::from)
    }

    /// Removes and returns the oldest item if there is one now.
    ///
    /// # Errors
    /// As [`get`](Self::get), and [`Empty`](TryGetError::Empty) if the queue is empty.
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.get_with(WaitLimit::No).map_err(TryGetError::from)
    }

    /// Removes and returns the oldest item, waiting at most `timeout` for one.
    ///
    /// # Errors
    /// As [`get`](Self::get), and [`Timeout`](GetTimeoutError::Timeout) if none came in time.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_with(wait_for(timeout)).map_err(GetTimeoutError::from)
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
