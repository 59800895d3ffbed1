//! [`Map`]: a key-value map served by a manager.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::manager::client::handle::{Handle, decode, encode, unexpected};
use crate::manager::error::{CallError, ErrorKind};
use crate::manager::protocol::{Reply, Request};

/// A key-value map shared through a [`Manager`](super::Manager), like `Manager().dict()`.
/// Created by [`Manager::map`](super::Manager::map).
///
/// Keys are compared by their serialized form; [`keys`](Self::keys) lists them in that
/// order. Each call is atomic; a read-modify-write across calls needs a [`Lock`](super::Lock).
///
/// # Examples
/// ```
/// let manager = stealpool::manager::Manager::new().unwrap();
/// let m = manager.map::<String, u32>().unwrap();
/// assert_eq!(m.insert("a".into(), 1), Ok(None));
/// assert_eq!(m.insert("a".into(), 2), Ok(Some(1)));
/// assert_eq!(m.get(&"a".into()), Ok(Some(2)));
/// assert_eq!(m.len(), Ok(1));
/// assert_eq!(m.remove(&"a".into()), Ok(Some(2)));
/// assert_eq!(m.is_empty(), Ok(true));
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Map<K, V> {
    pub(super) handle: Handle,
    #[serde(skip)]
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Map<K, V> {
    pub(super) fn new(handle: Handle) -> Self {
        Map { handle, types: PhantomData }
    }

    fn count(&self) -> Result<usize, ErrorKind> {
        match self.handle.call(&Request::MapLen { id: self.handle.id })? {
            Reply::Count(n) => Ok(n as usize),
            other => Err(unexpected(other)),
        }
    }

    /// The number of entries.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] if the manager is gone.
    pub fn len(&self) -> Result<usize, CallError> {
        Ok(self.count()?)
    }

    /// Whether the map has no entry.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] if the manager is gone.
    pub fn is_empty(&self) -> Result<bool, CallError> {
        Ok(self.count()? == 0)
    }

    /// Removes every entry.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] if the manager is gone.
    pub fn clear(&self) -> Result<(), CallError> {
        Ok(self.handle.call_done(&Request::MapClear { id: self.handle.id })?)
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Map<K, V> {
    fn value(&self, request: &Request) -> Result<Option<V>, ErrorKind> {
        match self.handle.call(request)? {
            Reply::Value(None) => Ok(None),
            Reply::Value(Some(bytes)) => decode(&bytes).map(Some),
            other => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `value`, returning the value it replaced.
    ///
    /// # Errors
    /// [`Disconnected`](CallError::Disconnected) if the manager is gone,
    /// [`Serialization`](CallError::Serialization) if the key or value does not serialize.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, CallError> {
        Ok(self.value(&Request::MapInsert { id: self.handle.id, key: encode(&key)?, value: encode(&value)? })?)
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn get(&self, key: &K) -> Result<Option<V>, CallError> {
        Ok(self.value(&Request::MapGet { id: self.handle.id, key: encode(key)? })?)
    }

    /// Removes `key`, returning its value.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn remove(&self, key: &K) -> Result<Option<V>, CallError> {
        Ok(self.value(&Request::MapRemove { id: self.handle.id, key: encode(key)? })?)
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn contains_key(&self, key: &K) -> Result<bool, CallError> {
        Ok(self.get(key)?.is_some())
    }

    /// Every key, in the order of their serialized forms.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn keys(&self) -> Result<Vec<K>, CallError> {
        match self.handle.call(&Request::MapKeys { id: self.handle.id })? {
            Reply::Keys(keys) => Ok(keys.iter().map(|k| decode(k)).collect::<Result<_, _>>()?),
            other => Err(unexpected(other).into()),
        }
    }
}

impl<K, V> Clone for Map<K, V> {
    fn clone(&self) -> Self {
        Map { handle: self.handle.clone(), types: PhantomData }
    }
}

impl<K, V> fmt::Debug for Map<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map").field("object", &self.handle).finish()
    }
}
