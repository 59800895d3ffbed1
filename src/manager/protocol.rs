//! The manager's wire messages: what a client asks and what the server answers.
//!
//! Every message is a frame: a little-endian `u32` length, then the message in postcard. A
//! connection carries one request at a time: the client writes a request and reads its reply
//! before it writes the next, except the few marked "no reply" (`PutNoReply`, `PutShared`,
//! `Ack`, `Return`). See `PROTOCOL.md` beside this file for the conversation and the ordering
//! arguments.
//!
//! This module holds message types and framing only; it must never block or touch a socket.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ipc::codec::Extend;
use crate::manager::auth::{Nonce, Proof, Secret};

/// Where a manager listens (a Linux abstract socket name, so nothing is left on disk when it
/// dies) and the secret both ends prove they know (`auth.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Address {
    pub(crate) name: String,
    pub(crate) secret: Secret,
}

impl Address {
    pub(crate) fn socket_addr(&self) -> io::Result<SocketAddr> {
        SocketAddr::from_abstract_name(self.name.as_bytes())
    }
}

/// Frames larger than this are refused (a corrupt length must not make the server allocate
/// gigabytes).
pub(crate) const MAX_FRAME: usize = 1 << 30;

/// Frames before authentication (`Hello`, `Proof`, `Challenge`) are at most this long; a
/// longer one closes the connection.
pub(crate) const HANDSHAKE_FRAME: usize = 256;

/// Bytes of the length prefix.
pub(crate) const HEADER: usize = 4;

/// How long a request may wait on the server for its condition (an item, a free slot, a
/// permit, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WaitLimit {
    /// Answer at once.
    No,
    /// Wait until the condition holds (or the manager shuts down).
    Forever,
    /// Wait at most this many microseconds.
    Micros(u64),
}

/// What a shared object is, when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Queue { maxsize: Option<u64> },
    Lock,
    Semaphore { permits: u64 },
    Event,
    Barrier { parties: u64 },
    Map,
}

/// Client -> server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// First frame on every connection: the client's challenge (`auth.rs`).
    Hello {
        nonce: Nonce,
    },
    /// Second frame: the client's answer to the server's challenge, sent once the server
    /// proved that it knows the secret.
    Proof {
        proof: Proof,
    },
    Create(Kind),
    Put {
        id: u64,
        item: ByteBuf,
        wait: WaitLimit,
    },
    /// A put to an unbounded queue, which cannot fail: no reply. Once the client's write
    /// returned, the frame is in the server's socket and will be applied, whatever happens to
    /// the client.
    PutNoReply {
        id: u64,
        item: ByteBuf,
    },
    /// A put to an unbounded queue of an item the client wrote into its arena chunk
    /// (`arena.rs`), `len` bytes at offset `at` of the arena. No reply.
    PutShared {
        id: u64,
        at: u64,
        len: u32,
    },
    /// Send this process the arena's memfd: the reply is `Done` with the fd attached
    /// (`SCM_RIGHTS`), or `Failed` if the manager has no arena.
    Arena,
    /// Give up the arena chunk `retire` (if this connection holds it) and grant another.
    Chunk {
        retire: Option<u32>,
    },
    /// Lend up to `max` items (at least one, waiting as `wait` says) to this connection.
    /// `shared`: the client has mapped the arena, so items in it may be lent by position.
    Get {
        id: u64,
        wait: WaitLimit,
        max: u32,
        shared: bool,
    },
    /// The `n` oldest items lent to this connection were handed to the program: they are
    /// gone for good. No reply.
    Ack {
        n: u32,
    },
    /// Every item lent to this connection and not acknowledged goes back to the front of its
    /// queue, in order. No reply.
    Return,
    QueueLen {
        id: u64,
    },
    Acquire {
        id: u64,
        wait: WaitLimit,
    },
    Release {
        id: u64,
    },
    SetEvent {
        id: u64,
        value: bool,
    },
    IsSet {
        id: u64,
    },
    WaitEvent {
        id: u64,
        wait: WaitLimit,
    },
    WaitBarrier {
        id: u64,
        wait: WaitLimit,
    },
    ResetBarrier {
        id: u64,
    },
    MapInsert {
        id: u64,
        key: ByteBuf,
        value: ByteBuf,
    },
    MapGet {
        id: u64,
        key: ByteBuf,
    },
    MapRemove {
        id: u64,
        key: ByteBuf,
    },
    MapLen {
        id: u64,
    },
    MapKeys {
        id: u64,
    },
    MapClear {
        id: u64,
    },
    /// Tests only: what the server holds (`Reply::Census`).
    #[cfg(test)]
    Census,
}

/// Server -> client.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Done,
    /// The answer to `Hello`: the server's challenge and its proof for the client's.
    Challenge {
        nonce: Nonce,
        proof: Proof,
    },
    Id(u64),
    Items(Vec<ItemPayload>),
    /// A granted arena chunk, or `None` while the arena is full.
    Chunk(Option<u32>),
    QueueLen {
        len: u64,
        full: bool,
    },
    /// A lock or permit is now held by the connection that asked.
    Acquired {
        owner_died: bool,
    },
    Flag(bool),
    /// Arrival order at a barrier: `0..parties`.
    Index(u64),
    Value(Option<ByteBuf>),
    Count(u64),
    Keys(Vec<ByteBuf>),
    Failed(ErrorCode),
    /// Tests only: counts of what the server holds.
    #[cfg(test)]
    Census {
        waiters: u64,
        conns: u64,
        parked: u64,
        lent_by: u64,
        refused: u64,
    },
}

/// An item lent to a client: its bytes, or where they lie in the arena.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ItemPayload {
    Inline(ByteBuf),
    Shared { at: u64, len: u32 },
}

/// Why a request did not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ErrorCode {
    Full,
    Empty,
    Timeout,
    WouldBlock,
    OverReleased,
    NotOwner,
    BrokenBarrier,
    NoSuchObject,
    BadRequest(String),
}

/// Appends `message` as one frame to `out`.
pub(crate) fn frame<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    match postcard::serialize_with_flavor(message, Extend(out)) {
        Ok(()) => {
            let len = (out.len() - start - HEADER) as u32;
            out[start..start + HEADER].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// The length of the frame whose header starts `buf`, once the header is complete.
pub(crate) fn frame_len(buf: &[u8]) -> Option<usize> {
    let header: [u8; HEADER] = buf.get(..HEADER)?.try_into().ok()?;
    Some(u32::from_le_bytes(header) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        frame(&Request::Put { id: 7, item: ByteBuf::from(vec![1, 2, 3]), wait: WaitLimit::Micros(5) }, &mut out)
            .unwrap();
        frame(&Request::Ack { n: 1 }, &mut out).unwrap();
        let first = frame_len(&out).unwrap();
        let req: Request = postcard::from_bytes(&out[HEADER..HEADER + first]).unwrap();
        assert!(
            matches!(req, Request::Put { id: 7, ref item, wait: WaitLimit::Micros(5) } if item.as_slice() == [1, 2, 3])
        );
        let rest = &out[HEADER + first..];
        let second = frame_len(rest).unwrap();
        assert!(matches!(postcard::from_bytes(&rest[HEADER..HEADER + second]).unwrap(), Request::Ack { n: 1 }));
        assert_eq!(frame_len(&[1, 0]), None);
    }
}
