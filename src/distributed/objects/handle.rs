//! What every shared object's handle holds and how it talks to Redis: where Redis is
//! ([`Location`]), which keys are the object's ([`Handle`]), the per-process pool of idle
//! connections, and the one wait loop every blocking call goes through.
//!
//! A handle is plain data (serde): it travels inside jobs and connects on first use in
//! whatever process holds it. Connections live in a [`PerProcess`] pool, so a process forked
//! while the pool held connections never writes to its parent's sockets; a thread blocked in a
//! wait holds its own connection, others take other ones.
//!
//! Every wait is a step (a Lua script that either does the operation or answers "not now, and
//! here is the last id of the object's signal stream") and a bounded `XREAD BLOCK` on that
//! stream after that id, repeated until the deadline. `XREAD` wakes every blocked reader when
//! an entry is added, so one `XADD` in a release, put, get or set wakes all who wait on it,
//! and an entry added between the step and the `XREAD` is not missed (it is after the id).
//!
//! This module must never let a connection that failed back into the pool, never block in one
//! Redis call longer than [`SLICE`] plus the I/O timeout, and never retry a connection past the
//! reconnect window.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Connection, RedisError, Value};
use serde::{Deserialize, Serialize};

use crate::distributed::connection::RedisConfig;
use crate::distributed::objects::ObjectError;
use crate::ipc::PerProcess;

/// The longest one `XREAD BLOCK` waits; a wait longer than this is several of them. It bounds
/// how long a lost wake-up (there should be none) or a lease that lapses while nobody signals
/// can delay a waiter.
pub(crate) const SLICE: Duration = Duration::from_secs(2);

/// The longest expiry or lease given to Redis, in milliseconds (100 years): Redis refuses an
/// expiry whose deadline does not fit its clock, so "for ever" is this.
pub(crate) const MAX_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// `d` in whole milliseconds, at least 1, at most [`MAX_MS`].
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, MAX_MS as u128) as u64
}

/// How many idle connections to one Redis a process keeps.
const IDLE_PER_URL: usize = 8;

/// Where Redis is, as a handle carries it into other processes and hosts.
///
/// The URL travels whole, password included (a worker needs it to connect); `Debug` prints it
/// redacted.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Location {
    pub(crate) url: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
    /// How long a blocked call keeps reconnecting after Redis went away before it fails.
    pub(crate) reconnect_window: Duration,
}

impl Location {
    fn config(&self) -> RedisConfig {
        RedisConfig::new(self.url.as_str()).connect_timeout(self.connect_timeout).io_timeout(self.io_timeout)
    }

    pub(crate) fn redacted_url(&self) -> String {
        self.config().redacted_url()
    }

    fn disconnected(&self, source: Option<RedisError>) -> ObjectError {
        ObjectError::Disconnected { url: self.redacted_url(), source }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_url())
    }
}

/// Idle connections of this process, by URL.
static IDLE: PerProcess<HashMap<String, Vec<Connection>>> = PerProcess::new();

/// An idle connection to `location`, or a new one.
fn take(location: &Location) -> Result<Connection, ObjectError> {
    if let Some(conn) = IDLE.with(|idle| idle.get_mut(&location.url).and_then(Vec::pop)) {
        return Ok(conn);
    }
    location.config().connect().map_err(|e| {
        let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<RedisError>()).cloned();
        location.disconnected(source)
    })
}

/// Returns a connection that answered its last command to the pool.
fn give_back(location: &Location, conn: Connection) {
    IDLE.with(|idle| {
        let conns = idle.entry(location.url.clone()).or_default();
        if conns.len() < IDLE_PER_URL {
            conns.push(conn);
        }
    });
}

/// Whether `e` means the connection (or the server behind it) is gone or not ready, so that
/// reconnecting may help: I/O errors, timeouts, a server still loading its append-only file.
fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
}

/// What one step of a wait found.
pub(crate) enum Step<R> {
    /// The operation happened.
    Done(R),
    /// Not now: wait for an entry after `after` on the object's signal stream, and at most
    /// `hint` (when something will change by itself then, such as a lease lapsing).
    Wait { after: Vec<u8>, hint: Option<Duration> },
}

/// What every object handle holds: where Redis is, the object's base key, its idle expiry.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Handle {
    pub(crate) location: Arc<Location>,
    /// `{namespace}:obj:<kind>:<name>`; the object's keys are this and `this:<part>`.
    pub(crate) key: String,
    /// Every key of the object expires this many milliseconds after its last write.
    pub(crate) ttl_ms: u64,
}

impl Handle {
    /// The object's key `base:part`.
    pub(crate) fn part(&self, part: &str) -> String {
        format!("{}:{part}", self.key)
    }

    /// Runs `f` on a connection of this process; no retry (what `f` does may not be
    /// repeatable).
    pub(crate) fn call<R>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<R>) -> Result<R, ObjectError> {
        let mut conn = take(&self.location)?;
        match f(&mut conn) {
            Ok(r) => {
                give_back(&self.location, conn);
                Ok(r)
            }
            Err(e) if is_transient(&e) => Err(self.location.disconnected(Some(e))),
            Err(e) => {
                give_back(&self.location, conn);
                Err(ObjectError::Redis(e))
            }
        }
    }

    /// Repeats `step` (which must be safe to repeat: a step whose reply was lost is run again)
    /// until it is `Done` or `timeout` has passed (`Ok(None)`: timed out; the last step runs at
    /// or after the deadline, so something that came just in time is taken). Between steps it
    /// blocks on the stream `signal`. A connection that breaks is replaced, with backoff, for
    /// up to the reconnect window (and never past the deadline); then the wait fails with
    /// `Disconnected`.
    pub(crate) fn wait<R>(
        &self,
        timeout: Duration,
        signal: &str,
        mut step: impl FnMut(&mut Connection) -> redis::RedisResult<Value>,
        mut parse: impl FnMut(Value) -> Result<Step<R>, ObjectError>,
    ) -> Result<Option<R>, ObjectError> {
        let deadline = crate::deadline::after(timeout);
        let location = &*self.location;
        let mut conn = take(location)?;
        loop {
            match wait_once(&mut conn, location.io_timeout, deadline, signal, &mut step, &mut parse) {
                Ok(Some(outcome)) => {
                    give_back(location, conn);
                    return outcome;
                }
                Ok(None) => {}
                Err(e) if is_transient(&e) => {
                    let until = crate::distributed::client::after(location.reconnect_window);
                    let until = deadline.map_or(until, |d| d.min(until));
                    conn = location.config().connect_until(until).map_err(|_| location.disconnected(Some(e)))?;
                }
                Err(e) => {
                    give_back(location, conn);
                    return Err(ObjectError::Redis(e));
                }
            }
        }
    }
}

/// The outcome of a whole wait.
type Outcome<R> = Result<Option<R>, ObjectError>;

/// One step and, if it must wait and time is left, one block: `Some` when the wait is over.
fn wait_once<R>(
    conn: &mut Connection,
    io_timeout: Duration,
    deadline: Option<Instant>,
    signal: &str,
    step: &mut impl FnMut(&mut Connection) -> redis::RedisResult<Value>,
    parse: &mut impl FnMut(Value) -> Result<Step<R>, ObjectError>,
) -> redis::RedisResult<Option<Outcome<R>>> {
    let reply = step(conn)?;
    let (after, hint) = match parse(reply) {
        Ok(Step::Done(r)) => return Ok(Some(Ok(Some(r)))),
        Ok(Step::Wait { after, hint }) => (after, hint),
        Err(e) => return Ok(Some(Err(e))),
    };
    let left = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()));
    if left.is_zero() {
        return Ok(Some(Ok(None)));
    }
    block_on(conn, signal, &after, left.min(SLICE).min(hint.unwrap_or(SLICE)), io_timeout)?;
    Ok(None)
}

/// `XREAD BLOCK` on `signal` for an entry after `after`, for at most `block`, with the read
/// timeout of the connection raised to cover the block.
fn block_on(
    conn: &mut Connection,
    signal: &str,
    after: &[u8],
    block: Duration,
    io: Duration,
) -> redis::RedisResult<()> {
    conn.set_read_timeout(Some(block.saturating_add(io)))?;
    let ms = block.as_millis().clamp(1, u64::MAX as u128) as u64;
    let read = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(ms)
        .arg("STREAMS")
        .arg(signal)
        .arg(after)
        .query::<Value>(conn);
    conn.set_read_timeout(Some(io))?;
    read.map(drop)
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.location, self.key)
    }
}

/// Lua shared by the objects' scripts: `signal(key, ttl)` adds an entry to a signal stream
/// (keeping one), `last_id(key)` is the id of its newest entry (`0-0` for none), `now_ms()` is
/// the server's clock (one clock for every host).
pub(crate) const LUA_PRELUDE: &str = r"
local function signal(key, ttl)
  redis.call('XADD', key, 'MAXLEN', '1', '*', 's', '1')
  redis.call('PEXPIRE', key, ttl)
end
local function last_id(key)
  local e = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if e[1] then return e[1][1] end
  return '0-0'
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// A script: the prelude, then `body`.
pub(crate) fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{LUA_PRELUDE}\n{body}"))
}

/// The elements of an array reply.
pub(crate) fn array(value: Value) -> Result<Vec<Value>, ObjectError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(ObjectError::Corrupt(format!("expected an array reply, got {other:?}"))),
    }
}

/// An integer element.
pub(crate) fn int(value: &Value) -> Result<i64, ObjectError> {
    match value {
        Value::Int(i) => Ok(*i),
        other => Err(ObjectError::Corrupt(format!("expected an integer, got {other:?}"))),
    }
}

/// A byte-string element (`Nil` is none).
pub(crate) fn bytes(value: Value) -> Result<Option<Vec<u8>>, ObjectError> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(b) => Ok(Some(b)),
        Value::SimpleString(s) => Ok(Some(s.into_bytes())),
        other => Err(ObjectError::Corrupt(format!("expected a string, got {other:?}"))),
    }
}

/// `[0, last_id, hint_ms?]`, the shape of every "not now" reply, as a [`Step::Wait`].
pub(crate) fn not_now<R>(mut items: Vec<Value>) -> Result<Step<R>, ObjectError> {
    let hint = match items.get(2) {
        Some(v) => Some(Duration::from_millis(int(v)?.max(1) as u64)),
        None => None,
    };
    let after = match items.get_mut(1).map(std::mem::take) {
        Some(v) => bytes(v)?.ok_or_else(|| ObjectError::Corrupt("a wait reply without a stream id".into()))?,
        None => return Err(ObjectError::Corrupt("a wait reply without a stream id".into())),
    };
    Ok(Step::Wait { after, hint })
}

/// Serializes a value given to an object (postcard).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ObjectError> {
    postcard::to_stdvec(value).map_err(|e| ObjectError::Serialization(e.to_string()))
}

/// Deserializes what a key held (postcard); anything else is `Corrupt`.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ObjectError> {
    postcard::from_bytes(bytes).map_err(|e| ObjectError::Corrupt(format!("does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_any_shape_parse_to_a_value_or_an_error() {
        let id = || Value::BulkString(b"5-0".to_vec());
        match not_now::<()>(vec![Value::Int(0), id(), Value::Int(-7)]) {
            Ok(Step::Wait { after, hint }) => {
                assert_eq!(after, b"5-0");
                assert_eq!(hint, Some(Duration::from_millis(1)), "a hint in the past is the shortest wait");
            }
            _ => panic!("a well-formed wait reply"),
        }
        assert!(matches!(not_now::<()>(vec![Value::Int(0), id()]), Ok(Step::Wait { hint: None, .. })));
        for bad in [
            vec![Value::Int(0)],
            vec![Value::Int(0), Value::Nil],
            vec![Value::Int(0), Value::Int(3)],
            vec![Value::Int(0), id(), Value::BulkString(b"soon".to_vec())],
        ] {
            assert!(matches!(not_now::<()>(bad), Err(ObjectError::Corrupt(_))));
        }
        assert!(array(Value::Okay).is_err());
        assert!(int(&Value::Double(1.0)).is_err());
        assert_eq!(bytes(Value::Nil).unwrap(), None);
        assert!(bytes(Value::Array(vec![])).is_err());
        assert!(decode::<(u64, String)>(&[0xff; 12]).unwrap_err().is_corrupt());
    }

    #[test]
    fn durations_become_milliseconds_redis_accepts() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
        assert_eq!(millis(Duration::MAX), MAX_MS);
    }

    #[test]
    fn messages_never_show_the_password() {
        let location = Location {
            url: "redis://user:secret@127.0.0.1:1/".into(),
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(1),
            reconnect_window: Duration::from_secs(1),
        };
        assert_eq!(format!("{location:?}"), "redis://user:***@127.0.0.1:1/");
        assert!(!location.disconnected(None).to_string().contains("secret"));
    }
}
