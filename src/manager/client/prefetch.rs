//! Read-ahead for queue consumers: a process that drains a queue fast gets items in batches,
//! so that it does not pay a round trip to the manager for every item.
//!
//! Each process keeps one buffer per queue, with a connection of its own. When the buffer is
//! empty, `get` asks the server for a batch; the batch grows (1, 2, 4, ... up to 64 items,
//! and at most 1 MiB) only while the program calls `get` again within [`FAST`] of the last
//! one, so a consumer that does real work per item takes one item at a time and never sits
//! on items another consumer could run.
//!
//! The items of a batch stay *lent* to the buffer's connection: the server keeps a copy. Each
//! item is acknowledged just before `get` returns it, so an item leaves the server for good
//! only when the program has it; if the process dies, what it had not yet taken goes back to
//! the front of the queue. Items left in a buffer that the program stopped draining are given
//! back by a background thread after [`IDLE`] (a reader that stopped at its end marker must
//! not keep the marker meant for another reader), on the buffer's connection, which the
//! buffer keeps: the process's next `Get` follows the `Return` on the same stream.
//!
//! Other consumers are served while a buffer holds items (`PROTOCOL.md`, "Order"): what a
//! buffer gives back goes to the front of the queue, and may reach another process after
//! later items.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::ipc::PerProcess;
use crate::manager::arena::{CHUNK, Mapping, Span};
use crate::manager::client::connection::{self, Conn};
use crate::manager::client::handle::{Handle, unexpected};
use crate::manager::client::mappings;
use crate::manager::error::ErrorKind;
use crate::manager::protocol::{ItemPayload, Reply, Request, WaitLimit};

/// A `get` that follows the previous one within this time counts as draining.
const FAST: Duration = Duration::from_micros(200);
/// Items untouched this long in a buffer go back to the queue.
const IDLE: Duration = Duration::from_millis(2);
const MAX_BATCH: u32 = 64;
/// The number of buffers at which unused ones are forgotten.
const SWEEP_AT: usize = 256;

struct Buffer {
    conn: Option<Conn>,
    items: VecDeque<ItemPayload>,
    /// This process's mapping of the manager's arena, for items lent by position; `None` if
    /// there is none (then the server sends every item inline).
    mapping: Option<Option<Arc<Mapping>>>,
    batch: u32,
    last_get: Option<Instant>,
}

/// The page size that matters for `memcpy` aliasing.
const PAGE: usize = 4096;

thread_local! {
    /// Where items in the arena are copied before they are decoded.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A queue's buffer in this process, and how many of its threads are in a `get` that may wait
/// at the server for an item (holding the buffer, or queued for it).
struct Slot {
    buffer: Mutex<Buffer>,
    waiting: AtomicUsize,
}

type Shared = Arc<Slot>;

/// Counts a thread in [`Slot::waiting`] while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// This process's buffers, by (manager, queue).
static BUFFERS: PerProcess<HashMap<(String, u64), Shared>> = PerProcess::new();

fn buffer(handle: &Handle) -> Shared {
    BUFFERS.with(|by_queue| {
        if by_queue.len() >= SWEEP_AT {
            // A process that reads many queues: forget the buffers that hold nothing and that
            // nobody is using (they only remember how fast their queue was read).
            // (A connection kept after a `Return` holds nothing: it closes with its buffer.)
            by_queue.retain(|_, b| Arc::strong_count(b) > 1 || b.buffer.try_lock().is_none_or(|b| !b.items.is_empty()));
        }
        let key = (handle.address.name.clone(), handle.id);
        Arc::clone(by_queue.entry(key).or_insert_with(|| {
            let buffer = Buffer { conn: None, items: VecDeque::new(), mapping: None, batch: 1, last_get: None };
            Arc::new(Slot { buffer: Mutex::new(buffer), waiting: AtomicUsize::new(0) })
        }))
    })
}

/// Takes the next item of the queue for the program, as `decode` makes it of the item's
/// bytes.
pub(crate) fn get<T>(
    handle: &Handle,
    wait: WaitLimit,
    decode: impl Fn(&[u8]) -> Result<T, ErrorKind>,
) -> Result<T, ErrorKind> {
    let started = Instant::now();
    let shared = buffer(handle);
    // Another thread of this process may be waiting for the queue with the buffer locked; we
    // queue up behind it, within our own time limit. A `try_get` gives up at once only behind
    // a thread that may wait at the server (the queue was empty when it asked, most likely);
    // behind a short holder (the returner thread, another `try_get`) it waits its turn, within
    // the 1 s a `try_*` call may take ([`connection::GRACE`]): saying `Empty` because the
    // returner happened to be looking at the buffer would be false.
    let _waiting = (wait != WaitLimit::No).then(|| Waiting::new(&shared.waiting));
    let mut b = match wait {
        WaitLimit::Forever => shared.buffer.lock(),
        WaitLimit::No => loop {
            if let Some(b) = shared.buffer.try_lock_for(Duration::from_micros(100)) {
                break b;
            }
            if shared.waiting.load(Ordering::SeqCst) > 0 || started.elapsed() >= connection::GRACE {
                return Err(ErrorKind::Empty);
            }
        },
        WaitLimit::Micros(us) => shared.buffer.try_lock_for(Duration::from_micros(us)).ok_or(ErrorKind::Empty)?,
    };
    let item = loop {
        if b.items.is_empty() {
            let draining = b.last_get.is_some_and(|t| t.elapsed() < FAST);
            b.batch = if draining { (b.batch * 2).min(MAX_BATCH) } else { 1 };
            let wait = match wait {
                WaitLimit::Micros(us) => WaitLimit::Micros(
                    us.saturating_sub(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)),
                ),
                w => w,
            };
            let mapping = match &b.mapping {
                Some(known) => known.clone(),
                None => {
                    let mapping = mappings::mapping(&handle.address, connection::client_deadline(wait));
                    // Remember it only once the server answered (it may have been too slow).
                    if mapping.is_some() || mappings::known(&handle.address) {
                        b.mapping = Some(mapping.clone());
                    }
                    mapping
                }
            };
            let request = Request::Get { id: handle.id, wait, max: b.batch, shared: mapping.is_some() };
            let mut conn = match b.conn.take() {
                Some(c) => c,
                None => connection::take_for(&handle.address, &request)?,
            };
            match conn.call(&request) {
                Ok(Reply::Items(items)) if !items.is_empty() => {
                    b.items.extend(items);
                    b.conn = Some(conn);
                }
                Ok(other) => {
                    connection::give_back(&handle.address, conn);
                    return Err(unexpected(other));
                }
                Err(e) => {
                    if e != ErrorKind::Disconnected {
                        connection::give_back(&handle.address, conn);
                    }
                    return Err(e);
                }
            }
        }
        let item = match b.items.pop_front().expect("filled above") {
            ItemPayload::Inline(bytes) => decode(&bytes),
            // Copied out of the shared memory before it is decoded (`arena::Mapping`).
            ItemPayload::Shared { at, len } => match (Span::from_at(at, len), b.mapping.clone().flatten()) {
                (Some(span), Some(mapping)) => SCRATCH.with_borrow_mut(|scratch| {
                    if scratch.capacity() < CHUNK + PAGE {
                        // Once per thread, room for the largest item.
                        *scratch = Vec::with_capacity(CHUNK + PAGE);
                    }
                    // The copy starts half a page off the page offset the item's own
                    // allocation most likely has: a large `memcpy` whose source and
                    // destination lie at nearly the same offset in their pages (4 KiB
                    // aliasing) runs many times slower, and decoding a byte buffer is one.
                    let skew = (PAGE / 2).wrapping_sub(scratch.as_ptr() as usize) % PAGE;
                    if let Some(bytes) = mapping.read_at(span, scratch, skew) {
                        decode(bytes)
                    } else {
                        Err(ErrorKind::Serialization(format!(
                            "the manager lent an item outside its arena ({at}, {len})"
                        )))
                    }
                }),
                _ => Err(ErrorKind::Serialization(format!("the manager lent an item outside its arena ({at}, {len})"))),
            },
        };
        // Acknowledge before handing it over: from here on the item is the program's (also an
        // item that did not deserialize: it would not the next time either). If the write fails,
        // the server took our lent items back (we stalled past the lease, `PROTOCOL.md`) or is
        // gone: the item is not ours, so we start again on a new connection.
        let conn = b.conn.as_mut().expect("kept above");
        if conn.send_only(&Request::Ack { n: 1 }).is_err() {
            b.conn = None;
            b.items.clear();
            continue;
        }
        break item;
    };
    b.last_get = Some(Instant::now());
    if b.items.is_empty() {
        // Nothing lent any more: the connection goes back to the pool, so that a process
        // that reads many queues does not keep a socket per queue.
        if let Some(conn) = b.conn.take() {
            connection::give_back(&handle.address, conn);
        }
    } else {
        returner::watch(&shared);
    }
    item
}

/// The background thread that gives back what buffers stopped using.
mod returner {
    use super::*;

    struct Watch {
        pid: u32,
        buffers: Vec<Weak<Slot>>,
        running: bool,
    }

    static WATCH: Mutex<Option<Watch>> = Mutex::new(None);
    static WAKE: Condvar = Condvar::new();

    /// Makes sure a buffer that holds items is looked at.
    pub(crate) fn watch(buffer: &Shared) {
        let pid = std::process::id();
        let mut w = WATCH.lock();
        if w.as_ref().is_none_or(|w| w.pid != pid) {
            *w = Some(Watch { pid, buffers: Vec::new(), running: false });
        }
        let w = w.as_mut().expect("set above");
        if !w.buffers.iter().any(|b| b.as_ptr() == Arc::as_ptr(buffer)) {
            w.buffers.push(Arc::downgrade(buffer));
        }
        if !w.running {
            w.running = std::thread::Builder::new().name("stealpool-readahead".into()).spawn(run).is_ok();
        }
        WAKE.notify_one();
    }

    /// Sleeps while no buffer holds items; otherwise looks every [`IDLE`] and gives back the
    /// items of buffers untouched for that long.
    fn run() {
        let mut w = WATCH.lock();
        loop {
            let Some(watch) = w.as_mut() else { return };
            if watch.buffers.is_empty() {
                WAKE.wait(&mut w);
                continue;
            }
            drop(w);
            std::thread::sleep(IDLE);
            w = WATCH.lock();
            let Some(watch) = w.as_mut() else { return };
            watch.buffers.retain(|weak| {
                let Some(shared) = weak.upgrade() else { return false };
                // Busy (a `get` in progress): it is in use, look again later.
                let Some(mut b) = shared.buffer.try_lock() else { return true };
                if b.items.is_empty() {
                    return false;
                }
                if b.last_get.is_some_and(|t| t.elapsed() < IDLE) {
                    return true;
                }
                b.items.clear();
                b.batch = 1;
                // The buffer keeps the connection: this process's next `Get` goes out behind
                // the `Return`, so the server takes the items back before it serves this
                // process again, and the threads of one process never see read-ahead they
                // returned come back after later items.
                if let Some(conn) = b.conn.as_mut()
                    && conn.send_only(&Request::Return).is_err()
                {
                    b.conn = None;
                }
                false
            });
        }
    }
}

/// How many read-ahead buffers this process keeps (for tests).
#[cfg(test)]
pub(crate) fn buffer_count() -> usize {
    BUFFERS.with(|by_queue| by_queue.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::{Manager, TryGetError};

    /// The returner thread locks every watched buffer every [`IDLE`] to see whether it is
    /// idle; under load it may be put aside holding the lock. A `try_get` then must wait its
    /// turn, not say `Empty` of a queue that has items (a test draining a queue with
    /// `try_get` lost hundreds of items that way).
    #[test]
    fn a_try_get_waits_for_a_short_holder_of_the_buffer_and_not_for_a_waiting_get() {
        let manager = Manager::new().unwrap();
        let q = manager.queue::<u32>().unwrap();
        q.put(7).unwrap();
        let slot = buffer(&q.handle);
        let held = slot.buffer.lock();
        let getter = std::thread::spawn({
            let q = q.clone();
            move || q.try_get()
        });
        // Held while the `try_get` starts (if it starts later, it finds the buffer free).
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert_eq!(getter.join().unwrap(), Ok(7), "the item, not Empty");

        // Behind a thread that waits at the server for an item, it says `Empty` as before.
        let waiter = std::thread::spawn({
            let q = q.clone();
            move || q.get()
        });
        while slot.waiting.load(Ordering::SeqCst) == 0 || slot.buffer.try_lock().is_some() {
            std::thread::yield_now();
        }
        assert_eq!(q.try_get(), Err(TryGetError::Empty));
        q.put(8).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(8));
    }
}
