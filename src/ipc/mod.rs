//! The one plumbing layer for processes: framing, descriptor passing and fork-safe
//! per-process state, under the process pool, the fork server and the manager.
//!
//! This layer must never panic on a peer's bytes, allocate by a number a peer sent, or block
//! past a peer's death.

pub(crate) mod frame;
