//! [`RedisExecutorBuilder`]: the client's settings, their defaults and why, and `build`, which
//! connects, announces the client and starts its result reader.
//!
//! This file must never start the reader before the client's liveness key is written (a
//! worker would take the client's first jobs for a dead client's).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::client::{RedisExecutor, Shared, Table, client_id, millis};
use super::connection::{ConnectError, RedisConfig};
use super::results;
use super::wire::Keys;

/// The settings of a [`RedisExecutor`]; see [`RedisExecutor::builder`].
#[derive(Clone, Debug)]
pub struct RedisExecutorBuilder {
    pub(super) config: RedisConfig,
    pub(crate) max_retries: u32,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) client_ttl: Duration,
    pub(crate) result_ttl: Duration,
    pub(crate) queue_ttl: Duration,
    /// `None`: the client's `client_ttl`.
    pub(crate) reconnect_timeout: Option<Duration>,
}

impl RedisExecutorBuilder {
    /// How many times a job is run again after losing the worker that held it (it died, or
    /// stopped sending heartbeats). Default 1: one lost host does not fail its jobs, and a job
    /// that brings down every worker that runs it stops after two. 0 makes a lost job fail at
    /// once (at most one run, unless a stopped worker resumes).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// A time limit for every job, enforced by the worker that runs it (its process is killed and
    /// the future fails with [`JobError::TimedOut`](crate::JobError::TimedOut)). Default: none (the worker's own default).
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// How long after this client stops (killed, or cut off from Redis) workers go on with its
    /// jobs: its liveness key lapses after this, and then workers drop its queued jobs and kill
    /// its running ones. Default 30 s; at least 1 s.
    pub fn client_ttl(mut self, ttl: Duration) -> Self {
        self.client_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long a result waits in Redis for this client to read it. Default 1 hour.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long the job stream lives after the last job was added to it (and each worker
    /// heartbeat renews it). Default 1 day.
    pub fn queue_ttl(mut self, ttl: Duration) -> Self {
        self.queue_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long the client keeps trying to reach Redis again when it is gone before it fails
    /// every unfinished future with [`JobError::Lost`](crate::JobError::Lost). An outage ends
    /// only once Redis has served the client for 5 s without a break: a Redis that flaps (up a
    /// moment, down again) does not restart the clock.
    ///
    /// Default: [`client_ttl`](Self::client_ttl) (30 s), and it may not be longer
    /// ([`build`](Self::build) refuses it): once the client has been out of reach for
    /// `client_ttl`, its liveness key has lapsed and workers drop its jobs, so a longer wait
    /// could only end in `JobError::Lost`. To ride out longer outages, raise `client_ttl`
    /// with it.
    pub fn reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = Some(timeout);
        self
    }

    /// The reconnect timeout in effect: the one set, or `client_ttl`.
    pub(crate) fn outage_limit(&self) -> Duration {
        self.reconnect_timeout.unwrap_or(self.client_ttl)
    }

    /// The settings' consistency: a message for the first rule they break.
    fn check(&self) -> Result<(), String> {
        if let Some(timeout) = self.reconnect_timeout
            && timeout > self.client_ttl
        {
            return Err(format!(
                "reconnect_timeout ({timeout:?}) is longer than client_ttl ({:?}): workers drop the jobs of a client \
                 they have not heard from for client_ttl, so waiting longer for Redis could only end in \
                 JobError::Lost; raise client_ttl with it",
                self.client_ttl
            ));
        }
        Ok(())
    }

    /// Connects and starts the client's result reader.
    ///
    /// # Errors
    /// [`ConnectError`] if the settings are inconsistent (a
    /// [`reconnect_timeout`](Self::reconnect_timeout) longer than the
    /// [`client_ttl`](Self::client_ttl); [`ConnectError::is_invalid_settings`]) or Redis cannot be
    /// reached now.
    pub fn build(self) -> Result<RedisExecutor, ConnectError> {
        self.check().map_err(|detail| ConnectError::invalid(&self.config, detail))?;
        let mut submitter = self.config.connect()?;
        let id = client_id();
        let keys = Keys::new(self.config.keys());
        let alive = redis::cmd("SET")
            .arg(keys.client(&id))
            .arg(1)
            .arg("PX")
            .arg(millis(self.client_ttl))
            .query::<redis::Value>(&mut submitter);
        alive.map_err(|source| ConnectError::new(&self.config, source))?;
        let reader_connection = self.config.connect()?;
        let shared = Arc::new(Shared {
            keys,
            id,
            options: self.clone(),
            submitter: Mutex::new(Some(submitter)),
            table: Mutex::new(Table { waiting: HashMap::new(), open: true }),
            drained: Condvar::new(),
            seq: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            config: self.config,
        });
        let reader_shared = shared.clone();
        let reader = std::thread::Builder::new()
            .name("stealpool-redis-results".to_owned())
            .spawn(move || results::run(&reader_shared, reader_connection))
            .map_err(|e| ConnectError::other(&shared.config, format!("cannot start the result reader: {e}")))?;
        Ok(RedisExecutor { shared, reader: Mutex::new(Some(reader)) })
    }
}
