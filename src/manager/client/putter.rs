//! Puts to unbounded queues: one connection per process and manager, and the arena for large
//! items.
//!
//! A put to an unbounded queue is not answered (`PROTOCOL.md`), so two puts sent on two
//! connections may be read by the server in either order. Every such put of a process
//! therefore goes out on the process's one *put connection*: puts that follow each other in
//! the process (in one thread, or in threads that synchronize) reach their queue in that
//! order, whether they travel inline or through the arena. The same connection holds the
//! process's arena chunk, so the server also sees every put into a chunk before the chunk is
//! given up (`arena.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::ipc::PerProcess;
use crate::manager::arena::{CHUNK, Mapping, SHARED_MIN, Span};
use crate::manager::client::connection::{self, Conn};
use crate::manager::client::mappings;
use crate::manager::error::ErrorKind;
use crate::manager::protocol::Address;
use crate::manager::protocol::{Reply, Request};

/// Items start at multiples of this in a chunk, so two items never share a cache line.
const ALIGN: usize = 64;
/// After the server refused a chunk (the arena is full), large items go inline this long
/// before the putter asks again.
const REFUSED_PAUSE: Duration = Duration::from_millis(1);

/// A process's put connection to one manager.
struct Putter {
    conn: Conn,
    /// The arena, if this process could map it.
    mapping: Option<Arc<Mapping>>,
    /// The chunk held and how many of its bytes are used.
    chunk: Option<(u32, usize)>,
    refused: Option<Instant>,
}

/// This process's putters, by manager name.
static PUTTERS: PerProcess<HashMap<String, Arc<Mutex<Putter>>>> = PerProcess::new();

fn putter(address: &Address) -> Result<Arc<Mutex<Putter>>, ErrorKind> {
    if let Some(p) = PUTTERS.with(|putters| putters.get(&address.name).cloned()) {
        return Ok(p);
    }
    let mapping = mappings::mapping(address, None);
    let conn = connection::take(address)?;
    let made = Arc::new(Mutex::new(Putter { conn, mapping, chunk: None, refused: None }));
    Ok(PUTTERS.with(|putters| Arc::clone(putters.entry(address.name.clone()).or_insert(made))))
}

/// Forgets this process's putter for a manager (its connection broke, or the manager shut
/// down).
pub(crate) fn forget(address: &Address) {
    PUTTERS.with(|putters| putters.remove(&address.name));
}

/// Puts `item` into unbounded queue `queue`. Returns once the request is in the manager's
/// socket: it will be applied even if this process dies at once.
pub(crate) fn put<T: Serialize>(address: &Address, queue: u64, item: &T) -> Result<(), ErrorKind> {
    let size = postcard::experimental::serialized_size(item).map_err(|e| ErrorKind::Serialization(e.to_string()))?;
    let shared = putter(address)?;
    let mut p = shared.lock();
    let result = p.put(queue, item, size);
    if matches!(result, Err(ErrorKind::Disconnected)) {
        drop(p);
        forget(address);
    }
    result
}

impl Putter {
    fn put<T: Serialize>(&mut self, queue: u64, item: &T, size: usize) -> Result<(), ErrorKind> {
        if (SHARED_MIN..=CHUNK).contains(&size)
            && let Some((chunk, used)) = self.room(size)?
        {
            // This process holds `chunk` (granted on this putter's connection, and given up
            // only through it), and `used` is past every item whose position it sent: by the
            // protocol, nobody else touches these bytes until we send their position below.
            let room = Span { chunk, offset: used as u32, len: size as u32 };
            let mapping = self.mapping.as_ref().expect("a chunk is only asked for with a mapping");
            let written = mapping
                .write(room, item)
                .ok_or_else(|| ErrorKind::Serialization("the item did not serialize into its room".into()))?;
            self.chunk = Some((chunk, (used + written).next_multiple_of(ALIGN)));
            let at = Span { len: written as u32, ..room }.at();
            return self.conn.send_only(&Request::PutShared { id: queue, at, len: written as u32 });
        }
        let bytes = postcard::to_stdvec(item).map_err(|e| ErrorKind::Serialization(e.to_string()))?;
        self.conn.send_only(&Request::PutNoReply { id: queue, item: bytes.into() })
    }

    /// Where in the arena an item of `size` bytes can go: the held chunk if it has room, else
    /// a new one. `None`: inline (no mapping, or the arena is full).
    fn room(&mut self, size: usize) -> Result<Option<(u32, usize)>, ErrorKind> {
        if self.mapping.is_none() {
            return Ok(None);
        }
        match self.chunk {
            Some((chunk, used)) if used + size <= CHUNK => return Ok(Some((chunk, used))),
            _ if self.refused.is_some_and(|t| t.elapsed() < REFUSED_PAUSE) => return Ok(None),
            _ => {}
        }
        let retire = self.chunk.take().map(|(chunk, _)| chunk);
        match self.conn.call(&Request::Chunk { retire })? {
            Reply::Chunk(Some(chunk)) => {
                self.refused = None;
                self.chunk = Some((chunk, 0));
                Ok(Some((chunk, 0)))
            }
            _ => {
                self.refused = Some(Instant::now());
                Ok(None)
            }
        }
    }
}
