//! The same [`Executor`](crate::Executor) on Redis, with workers on any number of hosts.
//!
//! Unix only, behind the `redis` feature (off by default). A client, [`RedisExecutor`],
//! submits registered functions and job types (the names and postcard frames of the process
//! pool) to a Redis instance; [`Worker`]s on any host take them and run them in a local
//! [`ProcessPoolExecutor`](crate::ProcessPoolExecutor), so crashes, time limits, memory leaks
//! (`max_tasks_per_child`) and worker replacement are the process pool's supervision. Going
//! from one machine to many is one line in the client and one command per worker host:
//!
//! ```text
//! let pool = ProcessPoolExecutor::new(8);                    // one machine
//! let pool = RedisExecutor::new("redis://queue-host:6379/")?; // any number
//!
//! myapp --stealpool-worker redis://queue-host:6379/ --processes 8   # on each worker host
//! ```
//!
//! (the worker command needs [`serve_if_requested`] as the first line of `main`; or start a
//! [`Worker`] yourself). The worker is the program's own binary: it knows the same registered
//! code by the same names. Hosts must run the same build of the program (the input and output
//! of a job travel as postcard, which is not self-describing).
//!
//! # Semantics
//! `src/distributed/PROTOCOL.md` has the keys, the commands and the argument for each choice;
//! in short:
//!
//! - **Delivery: at least once**, through a Redis Stream read by a consumer group. A job is
//!   acknowledged and deleted in the same atomic `MULTI` that writes its result. A worker whose
//!   record has lapsed (no heartbeat for its lease, default 10 s; it died or was stopped) loses
//!   its jobs to the next worker that looks (every heartbeat, default 1 s), which runs them
//!   again. Each future resolves once, with the first result; later ones are dropped. A job
//!   lost this way more than [`max_retries`](RedisExecutorBuilder::max_retries) times (one, by
//!   default) fails with [`JobError::WorkersLost`](crate::JobError::WorkersLost), naming each
//!   `host:pid` that held it. A job that crashes *its process* in the worker's pool is not
//!   retried: it fails with [`JobError::WorkerDied`](crate::JobError::WorkerDied), as in the
//!   process pool.
//! - **Cancel**: [`Future::cancel`](crate::Future::cancel) deletes a job that no worker has
//!   read yet (atomically, so none ever will) and fails otherwise (a job a worker holds counts
//!   as running, as a job in a process-pool worker's window does);
//!   [`Future::force_cancel`](crate::Future::force_cancel) also marks a held job, and its worker
//!   kills the job's process within its poll interval (default 100 ms). The future resolves
//!   with `Cancelled` at once.
//! - **Time limits** ([`RedisExecutorBuilder::task_timeout`],
//!   [`RedisExecutor::submit_with_timeout`]) travel with the job and are enforced by the worker's
//!   pool: the process is killed and the future fails with
//!   [`JobError::TimedOut`](crate::JobError::TimedOut).
//! - **A client that dies** stops renewing its liveness key; once it lapses
//!   ([`client_ttl`](RedisExecutorBuilder::client_ttl), default 30 s) workers drop its queued
//!   jobs when they read them and kill its running ones within their poll interval: no work
//!   runs for nobody later than `client_ttl` plus two poll intervals after the client's last
//!   renewal. Its results expire after [`result_ttl`](RedisExecutorBuilder::result_ttl).
//! - **Redis unavailable**: building a client or a worker fails with [`ConnectError`];
//!   `submit` fails with a [`SubmitError`](crate::SubmitError) whose
//!   [`broken_reason`](crate::SubmitError::broken_reason) names the URL and the error. When
//!   Redis goes away mid-run, clients and workers reconnect with backoff (10 ms doubling to
//!   2 s). Results not yet written stay in the worker's memory until written; with Redis's
//!   append-only file (`appendfsync always`) nothing acknowledged is lost. A client that comes
//!   back to a Redis without some of its jobs (restarted without persistence) fails those
//!   futures with [`JobError::Lost`](crate::JobError::Lost) (so does one cut off for longer
//!   than its keys live); one that cannot reach Redis for
//!   [`reconnect_timeout`](RedisExecutorBuilder::reconnect_timeout) (default and at most its
//!   `client_ttl`, 30 s: workers give up on a silent client's jobs then) fails all its
//!   unresolved futures the same way, counting a Redis that flaps as still gone. Nothing hangs
//!   for longer.
//! - **Keys**: every key is under the [`Namespace`] (`{stealpool}` by default, a Redis Cluster
//!   hash tag) and has an expiry; nothing accumulates when clients and workers go.
//! - **Authentication and TLS** come from the URL: `redis://user:password@host:6379/0`,
//!   `redis://:password@host` (the `requirepass` form), `rediss://host` for TLS (with the
//!   `redis-tls` feature). Passwords never appear in messages ([`RedisConfig::redacted_url`]).
//!
//! # Shared objects
//! [`Objects`] makes the manager's objects in Redis, with handles that travel inside jobs to
//! any host: a queue (bounded or not), a lock and a semaphore with leases, an event and a map.
//! The [`objects`] module docs say what is weaker than the local manager (leases instead of
//! death notice) and why.
//!
//! What is weaker than the process pool: [`Future::is_running`](crate::Future::is_running)
//! stays `false` (the client does not learn when a worker starts a job), and a job can run more
//! than once (after a lost worker, and when a stopped worker resumes); write jobs whose second
//! run does no harm, or set `max_retries(0)`.
//!
//! This module must never block without a bound, never panic on what it reads from Redis, and
//! never write a key without the namespace prefix and an expiry.

mod builder;
mod client;
pub mod connection;
mod control;
pub mod objects;
mod results;
mod scripts;
mod wire;
mod worker;

pub use builder::RedisExecutorBuilder;
pub use client::RedisExecutor;
pub use connection::{ConnectError, Namespace, RedisConfig};
pub use control::WorkerInfo;
pub use objects::Objects;
pub use worker::{Worker, WorkerError, WorkerHandle, serve_if_requested};
