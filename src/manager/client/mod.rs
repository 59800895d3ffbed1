//! The client's side of the manager: connections (and the per-process pool of idle ones),
//! the read-ahead of queue consumers, and the putter that writes to unbounded queues without
//! a round trip.
//!
//! Handles (`queue.rs`, `sync.rs`, `map.rs`) call through this module; it must never hold
//! object semantics (those live in the server).

pub(crate) mod connection;
pub(crate) mod handle;
pub(crate) mod mappings;
pub(crate) mod prefetch;
pub(crate) mod putter;
