//! What every object handle (a `Queue`, a `Lock`, ...) holds and how it calls its manager:
//! plain data (the manager's address and secret, an object id) that travels in jobs and
//! connects on first use.
//!
//! This module must never keep state of its own: connections are `connection.rs`'s.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manager::client::connection;
use crate::manager::error::ErrorKind;
use crate::manager::protocol::{Address, ErrorCode, Reply, Request, WaitLimit};

/// What every object handle holds: where the manager is and which object.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Handle {
    pub(crate) address: Arc<Address>,
    pub(crate) id: u64,
}

impl Handle {
    pub(crate) fn call(&self, request: &Request) -> Result<Reply, ErrorKind> {
        connection::call(&self.address, request)
    }

    /// A call whose only good answer is `Done`.
    pub(crate) fn call_done(&self, request: &Request) -> Result<(), ErrorKind> {
        match self.call(request)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.address.name, self.id)
    }
}

/// The error for a reply that does not answer the request.
pub(crate) fn unexpected(reply: Reply) -> ErrorKind {
    match reply {
        Reply::Failed(ErrorCode::Full) => ErrorKind::Full,
        Reply::Failed(ErrorCode::Empty) => ErrorKind::Empty,
        Reply::Failed(ErrorCode::Timeout) => ErrorKind::Timeout,
        Reply::Failed(ErrorCode::WouldBlock) => ErrorKind::WouldBlock,
        Reply::Failed(ErrorCode::OverReleased) => ErrorKind::OverReleased,
        Reply::Failed(ErrorCode::BrokenBarrier) => ErrorKind::BrokenBarrier,
        // Only a handle from a different manager, or a protocol bug, gets here.
        other => ErrorKind::Serialization(format!("unexpected reply from the manager: {other:?}")),
    }
}

/// A client-side timeout as the server's wait: one too large to be a deadline is forever.
pub(crate) fn wait_for(timeout: Duration) -> WaitLimit {
    match (crate::deadline::after(timeout), u64::try_from(timeout.as_micros())) {
        (Some(_), Ok(us)) => WaitLimit::Micros(us),
        _ => WaitLimit::Forever,
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<serde_bytes::ByteBuf, ErrorKind> {
    postcard::to_stdvec(value).map(serde_bytes::ByteBuf::from).map_err(|e| ErrorKind::Serialization(e.to_string()))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ErrorKind> {
    postcard::from_bytes(bytes).map_err(|e| ErrorKind::Serialization(e.to_string()))
}
