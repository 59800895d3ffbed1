//! What every part of the distributed backend shares: where Redis is ([`RedisConfig`]), which
//! keys are ours ([`Namespace`]), connecting with a timeout, and retrying with backoff.
//!
//! Authentication and TLS come from the URL, as the `redis` crate parses it:
//! `redis://user:password@host:port/db`, `rediss://host` (TLS), `redis+unix:///path`.
//!
//! This file must never hold a connection across a fork (callers keep connections in
//! per-process state) and never retry without a deadline.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// Where the backend's Redis is and how long to wait for it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    url: String,
    namespace: Namespace,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl RedisConfig {
    /// The Redis at `url` (see the module docs for its forms), with the namespace `"stealpool"`,
    /// a 5 s connect timeout and a 30 s timeout on every read and write.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            namespace: Namespace::new("stealpool"),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
        }
    }

    /// Puts every key under `namespace` (so that several applications share one Redis).
    pub fn namespace(mut self, namespace: &str) -> RedisConfig {
        self.namespace = Namespace::new(namespace);
        self
    }

    /// How long one connection attempt may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisConfig {
        self.connect_timeout = timeout;
        self
    }

    /// How long one read or write on a connection may take (blocking commands add their own
    /// block time to it).
    pub fn io_timeout(mut self, timeout: Duration) -> RedisConfig {
        self.io_timeout = timeout;
        self
    }

    /// The URL, with any password replaced by `***` (for messages and logs).
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The key namespace.
    pub fn keys(&self) -> &Namespace {
        &self.namespace
    }

    /// The timeout on one read or write.
    pub fn io_timeout_value(&self) -> Duration {
        self.io_timeout
    }

    /// Opens one connection, with the configured timeouts.
    pub fn connect(&self) -> Result<::redis::Connection, ConnectError> {
        let fail = |source: ::redis::RedisError| ConnectError::new(self, source);
        let client = ::redis::Client::open(self.url.as_str()).map_err(fail)?;
        let connection = client.get_connection_with_timeout(self.connect_timeout).map_err(fail)?;
        connection.set_read_timeout(Some(self.io_timeout)).map_err(fail)?;
        connection.set_write_timeout(Some(self.io_timeout)).map_err(fail)?;
        Ok(connection)
    }

    /// Connects, retrying with [`Backoff`] until `deadline`; the last error if none succeeded.
    pub fn connect_until(&self, deadline: Instant) -> Result<::redis::Connection, ConnectError> {
        let mut backoff = Backoff::new();
        loop {
            match self.connect() {
                Ok(connection) => return Ok(connection),
                Err(e) if !backoff.wait_until(deadline) => return Err(e),
                Err(_) => {}
            }
        }
    }
}

impl RedisConfig {
    /// The connection in `slot`; if there is none, one attempt to connect, and on failure a
    /// wait of the backoff's next step (at most 2 s) and `None`: the loop of a thread that must
    /// outlive outages, one bounded step at a time.
    pub(crate) fn reconnect<'a>(
        &self,
        slot: &'a mut Option<::redis::Connection>,
        backoff: &mut Backoff,
    ) -> Option<&'a mut ::redis::Connection> {
        if slot.is_none() {
            match self.connect() {
                Ok(c) => {
                    *slot = Some(c);
                    backoff.reset();
                }
                Err(_) => {
                    backoff.wait_until(Instant::now() + Backoff::MAX);
                    return None;
                }
            }
        }
        slot.as_mut()
    }
}

/// A connection to Redis could not be made.
#[derive(Debug)]
pub struct ConnectError {
    url: String,
    source: Option<::redis::RedisError>,
    detail: Option<String>,
    /// The settings were refused before any connection was tried.
    invalid: bool,
}

impl ConnectError {
    /// The connection to `config` failed with `source`.
    pub(crate) fn new(config: &RedisConfig, source: ::redis::RedisError) -> ConnectError {
        ConnectError { url: config.redacted_url(), source: Some(source), detail: None, invalid: false }
    }

    /// Setting up the client of `config` failed for a reason that is no Redis error.
    pub(crate) fn other(config: &RedisConfig, detail: String) -> ConnectError {
        ConnectError { url: config.redacted_url(), source: None, detail: Some(detail), invalid: false }
    }

    /// The settings of a client of `config` are inconsistent (`detail` says how).
    pub(crate) fn invalid(config: &RedisConfig, detail: String) -> ConnectError {
        ConnectError { url: config.redacted_url(), source: None, detail: Some(detail), invalid: true }
    }

    /// Whether the settings were refused (nothing was tried): retrying cannot help.
    ///
    /// # Examples
    /// The settings are checked before any connection is tried, so this needs no Redis:
    /// ```
    /// use std::time::Duration;
    /// use stealpool::distributed::{RedisConfig, RedisExecutor};
    ///
    /// let err = RedisExecutor::builder(RedisConfig::new("redis://127.0.0.1:1/"))
    ///     .client_ttl(Duration::from_secs(10))
    ///     .reconnect_timeout(Duration::from_secs(60))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.is_invalid_settings());
    /// assert!(err.to_string().contains("reconnect_timeout (60s) is longer than client_ttl (10s)"), "{err}");
    /// ```
    pub fn is_invalid_settings(&self) -> bool {
        self.invalid
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.invalid {
            write!(f, "invalid settings for the Redis client of {}", self.url)?;
        } else {
            write!(f, "cannot connect to Redis at {}", self.url)?;
        }
        match (&self.source, &self.detail) {
            (Some(source), _) => write!(f, ": {source}"),
            (None, Some(detail)) => write!(f, ": {detail}"),
            (None, None) => Ok(()),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// The prefix of every key the backend writes: `{namespace}:...`.
///
/// The namespace is wrapped in a Redis Cluster hash tag (`{...}`), so that every key of one
/// namespace lands on one cluster slot and multi-key commands and scripts stay valid there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
}

impl Namespace {
    /// The namespace `name`.
    pub fn new(name: &str) -> Namespace {
        Namespace { prefix: format!("{{{name}}}") }
    }

    /// The key `{name}:part1:part2...`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }
}

/// Exponential backoff with jitter between reconnection attempts: 10 ms doubling to 2 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(2);

    /// A backoff at its first, shortest step.
    pub fn new() -> Backoff {
        Backoff { next: Backoff::FIRST }
    }

    /// Sleeps for the next step, cut short at `deadline`; false if the deadline had passed.
    pub fn wait_until(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Up to 1 ms of jitter from std's randomly seeded hasher: enough to keep many clients
        // from retrying in step.
        let jitter = Duration::from_nanos(RandomState::new().hash_one(self.next) % 1_000_000);
        std::thread::sleep((self.next + jitter).min(deadline - now));
        self.next = (self.next * 2).min(Backoff::MAX);
        true
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

/// `scheme://user:***@host...` for `scheme://user:password@host...`; other URLs unchanged.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    let user = rest[..at].split_once(':').map_or(&rest[..0], |(user, _)| user);
    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("rediss://:secret@h"), "rediss://:***@h");
        assert_eq!(redact("redis://h:6379/"), "redis://h:6379/");
        assert_eq!(redact("redis+unix:///tmp/r.sock"), "redis+unix:///tmp/r.sock");
    }

    #[test]
    fn keys_share_one_cluster_slot() {
        assert_eq!(Namespace::new("app").key(&["jobs", "q1"]), "{app}:jobs:q1");
    }
}
