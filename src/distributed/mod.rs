//! The same [`Executor`](crate::Executor) on Redis, with workers on any number of hosts.
//!
//! Unix only, behind the `redis` feature (off by default). A client submits registered functions
//! and job types (the names and postcard frames of the process pool) to a Redis instance; worker
//! processes on any host take them and run them in a local
//! [`ProcessPoolExecutor`](crate::ProcessPoolExecutor), so crashes, time limits and worker
//! replacement are the process pool's supervision.
//!
//! This module must never block without a bound, never panic on what it reads from Redis, and
//! never write a key without the namespace prefix and an expiry.
//!
//! Work in progress (issue 16): [`connection`] holds what every part shares: the URL and
//! namespace, connecting with a timeout, and reconnecting with backoff.

pub mod connection;
pub mod objects;

pub use connection::{ConnectError, Namespace, RedisConfig};
pub use objects::Objects;
