//! [`Map`]: a key-value map in a Redis hash (field = postcard of the key, value = postcard of
//! the value). This module must never decode a field or value without reporting one that does
//! not decode as `Corrupt`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::distributed::objects::ObjectError;
use crate::distributed::objects::handle::{Handle, decode, encode};

/// A key-value map in Redis shared by processes on any hosts, like
/// [`manager::Map`](crate::manager::Map). Made by [`Objects::map`](super::Objects::map).
///
/// Keys are compared by their serialized form. Each call is atomic; a read-modify-write
/// across calls needs a [`Lock`](super::Lock). Every write pushes the whole map's expiry.
///
/// # Examples
/// ```no_run
/// # // no_run: needs a redis-server; tests/distributed_objects.rs runs the same.
/// use stealpool::distributed::objects::Objects;
///
/// let m = Objects::new("redis://127.0.0.1:6379/").map::<String, u32>("scores");
/// assert_eq!(m.insert(&"a".into(), &1).unwrap(), None);
/// assert_eq!(m.insert(&"a".into(), &2).unwrap(), Some(1));
/// assert_eq!(m.get(&"a".into()).unwrap(), Some(2));
/// assert_eq!(m.len().unwrap(), 1);
/// assert_eq!(m.remove(&"a".into()).unwrap(), Some(2));
/// assert!(m.is_empty().unwrap());
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Map<K, V> {
    handle: Handle,
    #[serde(skip)]
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Map<K, V> {
    pub(super) fn new(handle: Handle) -> Self {
        Map { handle, types: PhantomData }
    }

    /// The number of entries.
    ///
    /// # Errors
    /// `Disconnected` if Redis cannot be reached; `Redis` if the key holds something else.
    pub fn len(&self) -> Result<usize, ObjectError> {
        self.handle.call(|c| redis::cmd("HLEN").arg(&self.handle.key).query::<u64>(c)).map(|n| n as usize)
    }

    /// Whether the map has no entry.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool, ObjectError> {
        Ok(self.len()? == 0)
    }

    /// Removes every entry.
    ///
    /// # Errors
    /// `Disconnected` if Redis cannot be reached.
    pub fn clear(&self) -> Result<(), ObjectError> {
        self.handle.call(|c| redis::cmd("DEL").arg(&self.handle.key).query::<i64>(c)).map(drop)
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Map<K, V> {
    fn value(bytes: Option<Vec<u8>>) -> Result<Option<V>, ObjectError> {
        bytes.as_deref().map(decode).transpose()
    }

    /// Sets `key` to `value`, returning the value it replaced.
    ///
    /// # Errors
    /// As [`len`](Self::len), `Serialization` if the key or value does not serialize, and
    /// `Corrupt` if the value replaced does not decode as `V`.
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>, ObjectError> {
        let (field, value) = (encode(key)?, encode(value)?);
        let key = &self.handle.key;
        let old = self.handle.call(|c| {
            redis::pipe()
                .atomic()
                .hget(key, &field)
                .hset(key, &field, &value)
                .ignore()
                .pexpire(key, self.handle.ttl_ms as i64)
                .ignore()
                .query(c)
                .map(|(old,): (Option<Vec<u8>>,)| old)
        })?;
        Self::value(old)
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn get(&self, key: &K) -> Result<Option<V>, ObjectError> {
        let field = encode(key)?;
        Self::value(self.handle.call(|c| redis::cmd("HGET").arg(&self.handle.key).arg(&field).query(c))?)
    }

    /// Removes `key`, returning its value.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn remove(&self, key: &K) -> Result<Option<V>, ObjectError> {
        let field = encode(key)?;
        let key = &self.handle.key;
        let old = self.handle.call(|c| {
            redis::pipe()
                .atomic()
                .hget(key, &field)
                .hdel(key, &field)
                .ignore()
                .query(c)
                .map(|(old,): (Option<Vec<u8>>,)| old)
        })?;
        Self::value(old)
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn contains_key(&self, key: &K) -> Result<bool, ObjectError> {
        let field = encode(key)?;
        self.handle.call(|c| redis::cmd("HEXISTS").arg(&self.handle.key).arg(&field).query(c))
    }

    /// Every key (in no particular order).
    ///
    /// # Errors
    /// As [`insert`](Self::insert), and `Corrupt` if a field does not decode as `K`.
    pub fn keys(&self) -> Result<Vec<K>, ObjectError> {
        let fields: Vec<Vec<u8>> = self.handle.call(|c| redis::cmd("HKEYS").arg(&self.handle.key).query(c))?;
        fields.iter().map(|f| decode(f)).collect()
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
