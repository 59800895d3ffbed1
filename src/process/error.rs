//! [`ProcessError`]: why a [`Process`](crate::process::Process) could not be started.
//!
//! This module must never hold errors of other modules (the pool's are the crate's core
//! errors, in `src/error.rs`).

use std::fmt;

/// Why a [`Process`](crate::process::Process) could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessError {
    /// The function is not registered with [`register_fn!`](crate::register_fn).
    Unregistered {
        /// The function's Rust type name.
        name: String,
    },
    /// The arguments do not serialize.
    Serialization {
        /// What the serializer reported.
        message: String,
    },
    /// The fork server or the fork failed.
    Spawn(std::io::Error),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Unregistered { name } => {
                write!(f, "`{name}` is not registered (use stealpool::register_fn!)")
            }
            ProcessError::Serialization { message } => write!(f, "the arguments do not serialize: {message}"),
            ProcessError::Spawn(e) => write!(f, "could not start the process: {e}"),
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}
