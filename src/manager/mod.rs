//! Shared objects served by a manager: queues, locks, semaphores, events, barriers and maps
//! that jobs in worker processes, threads and the parent all use (Unix only).
//!
//! The counterpart of Python's `multiprocessing.Manager()`. [`Manager::new`] starts the
//! manager inside the calling process (a thread serving a Linux abstract socket; no program
//! to run, nothing left on disk). Its methods create objects and return handles. A handle is
//! plain data: it implements `Clone`, `Serialize` and `Deserialize`, so it travels inside a
//! job to a worker process, into a `Process`, or to another thread,
//! and it works the same everywhere.
//!
//! Sturdier than Python's manager:
//! - a process that dies holding a [`Lock`] or a [`Semaphore`] permit releases it; the next
//!   holder learns of it from [`LockGuard::previous_owner_died`];
//! - a process killed in the middle of a `put` or `get` neither corrupts a [`Queue`] nor
//!   loses an item: a request is applied whole or not at all, and an item sent to a getter
//!   that dies before reading it goes back to the front of the queue;
//! - once the manager shuts down (or its process dies), every blocked and every later call
//!   returns `Disconnected` (each operation has its own error type, [`TryGetError`] and
//!   the others in `error.rs`) instead of hanging, even if another process
//!   listens at its old name;
//! - only processes of the same user can connect, and both ends prove they know the handle's
//!   secret (HMAC-SHA256 challenge-response in both directions, as Python does) before
//!   anything else is read; the endpoint's name is random;
//! - every timed call keeps its deadline on the client side too, and any `Duration` is
//!   accepted (`Duration::MAX` waits forever);
//! - many consumers of one queue are served at once (one holding read-ahead never parks the
//!   others), and one stopped while holding read-ahead items holds up the others for at most
//!   50 ms.
//!
//! `PROTOCOL.md` beside this file has the conversation and the threat model.
//!
//! Objects live as long as the manager; there is no reference counting across processes.
//!
//! # Examples
//! A writer and a reader job in a process pool, talking through a queue (the process pool is
//! the `process` feature, on by default):
#![cfg_attr(feature = "process", doc = "```")]
#![cfg_attr(not(feature = "process"), doc = "```ignore")]
//! use stealpool::manager::{Manager, Queue};
//! use stealpool::{Executor, ProcessPoolExecutor};
//!
//! fn writer(q: Queue<String>) -> usize {
//!     for word in ["to", "be", "or", "not"] {
//!         q.put(word.to_string()).unwrap();
//!     }
//!     q.put(String::new()).unwrap(); // end marker
//!     4
//! }
//! fn reader(q: Queue<String>) -> Vec<String> {
//!     std::iter::from_fn(|| Some(q.get().unwrap())).take_while(|w| !w.is_empty()).collect()
//! }
//! stealpool::register_fn!(writer);
//! stealpool::register_fn!(reader);
//!
//! let manager = Manager::new().unwrap();
//! let q = manager.queue::<String>().unwrap();
//! let pool = ProcessPoolExecutor::new(2);
//! let read = pool.apply_async(reader, q.clone()).unwrap();
//! let wrote = pool.apply_async(writer, q).unwrap();
//! assert_eq!(wrote.result(), Ok(4));
//! assert_eq!(read.result().unwrap(), ["to", "be", "or", "not"]);
//! ```
//!
//! # Why the process pool does not use these queues
//! The pool's own task queue lives in the parent and pushes tasks to each worker over that
//! worker's channel: the parent must know which worker holds which task (so that a dead
//! worker fails exactly its own job) and must bound what each worker holds. A manager queue is
//! the opposite shape: anyone with a handle pulls from it, and nobody knows who will. Sending
//! every pool task through the manager would add a round trip per task and lose that
//! bookkeeping. What the two share is the discipline: frames applied whole or not at all,
//! and the kernel's end-of-file as the sign that a peer died. See `PROTOCOL.md`.

mod arena;
mod auth;
mod client;
mod error;
mod map;
mod protocol;
mod queue;
mod server;
mod sync;

use std::fmt;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

pub use crate::manager::error::{
    AcquireError, AcquireTimeoutError, BarrierWaitError, BarrierWaitTimeoutError, CallError, GetError, GetTimeoutError,
    PutError, PutTimeoutError, ReleaseError, TryAcquireError, TryGetError, TryPutError,
};
pub use crate::manager::map::Map;
pub use crate::manager::queue::Queue;
pub use crate::manager::sync::{Barrier, Event, Lock, LockGuard, Semaphore, SemaphorePermit};

use crate::manager::client::handle::{Handle, unexpected};
use crate::manager::client::{connection, mappings};
use crate::manager::error::ErrorKind;
use crate::manager::protocol::{Address, Kind, Reply, Request};

/// A server of shared objects, running in this process. See the [module docs](self).
///
/// Dropping the manager shuts it down, like leaving Python's `with Manager() as m:` block.
pub struct Manager {
    address: Arc<Address>,
    running: Mutex<Option<(UnixStream, JoinHandle<()>)>>,
}

impl Manager {
    /// Starts a manager in this process.
    ///
    /// # Errors
    /// An I/O error if the socket or the server thread cannot be created.
    ///
    /// # Examples
    /// ```
    /// let manager = stealpool::manager::Manager::new().unwrap();
    /// let q = manager.queue::<u32>().unwrap();
    /// q.put(7).unwrap();
    /// assert_eq!(q.get(), Ok(7));
    /// ```
    pub fn new() -> io::Result<Manager> {
        let secret = auth::random()?;
        let (listener, name) = bind_unique(|| Ok(format!("stealpool-manager-{}", hex(&auth::random::<16>()?))))?;
        let address = Address { name, secret };
        let (waker, wakee) = UnixStream::pair()?;
        let server = server::Server::new(listener, wakee, address.secret)?;
        let thread = std::thread::Builder::new().name("stealpool-manager".into()).spawn(move || server.run())?;
        Ok(Manager { address: Arc::new(address), running: Mutex::new(Some((waker, thread))) })
    }

    fn create(&self, kind: Kind) -> Result<Handle, ErrorKind> {
        let handle = Handle { address: Arc::clone(&self.address), id: 0 };
        match handle.call(&Request::Create(kind))? {
            Reply::Id(id) => Ok(Handle { id, ..handle }),
            other => Err(unexpected(other)),
        }
    }

    /// A new unbounded FIFO queue of `T`, like `Manager().Queue()`.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] after [`shutdown`](Self::shutdown).
    pub fn queue<T>(&self) -> Result<Queue<T>, CallError> {
        Ok(Queue::new(self.create(Kind::Queue { maxsize: None })?, None))
    }

    /// A new FIFO queue of `T` that holds at most `maxsize` items, like
    /// `Manager().Queue(maxsize)`. `maxsize == 0` means unbounded, as in Python.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] after [`shutdown`](Self::shutdown).
    pub fn bounded_queue<T>(&self, maxsize: usize) -> Result<Queue<T>, CallError> {
        let maxsize = (maxsize > 0).then_some(maxsize as u64);
        Ok(Queue::new(self.create(Kind::Queue { maxsize })?, maxsize))
    }

    /// A new lock, like `Manager().Lock()`.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] after [`shutdown`](Self::shutdown).
    pub fn lock(&self) -> Result<Lock, CallError> {
        Ok(Lock::new(self.create(Kind::Lock)?))
    }

    /// A new bounded semaphore with `permits` permits, like
    /// `Manager().BoundedSemaphore(permits)`.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] after [`shutdown`](Self::shutdown).
    pub fn semaphore(&self, permits: usize) -> Result<Semaphore, CallError> {
        Ok(Semaphore::new(self.create(Kind::Semaphore { permits: permits as u64 })?))
    }

    /// A new event, initially not set, like `Manager().Event()`.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] after [`shutdown`](Self::shutdown).
    pub fn event(&self) -> Result<Event, CallError> {
        Ok(Event::new(self.create(Kind::Event)?))
    }

    /// A new barrier for `parties` parties (at least one), like `Manager().Barrier(parties)`.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] after [`shutdown`](Self::shutdown).
    pub fn barrier(&self, parties: usize) -> Result<Barrier, CallError> {
        let parties = parties.max(1);
        Ok(Barrier::new(self.create(Kind::Barrier { parties: parties as u64 })?, parties))
    }

    /// A new key-value map, like `Manager().dict()`.
    ///
    /// # Errors
    /// [`CallError::Disconnected`] after [`shutdown`](Self::shutdown).
    pub fn map<K, V>(&self) -> Result<Map<K, V>, CallError> {
        Ok(Map::new(self.create(Kind::Map)?))
    }

    /// Stops the manager: every call blocked on one of its objects, in any process, returns
    /// `Disconnected`, and so does every later call. Calling it twice is
    /// harmless.
    ///
    /// # Examples
    /// ```
    /// use stealpool::manager::{GetError, Manager};
    ///
    /// let manager = Manager::new().unwrap();
    /// let q = manager.queue::<u8>().unwrap();
    /// manager.shutdown();
    /// assert_eq!(q.get(), Err(GetError::Disconnected));
    /// ```
    pub fn shutdown(&self) {
        let running = self.running.lock().take();
        if let Some((waker, thread)) = running {
            // Closing our end wakes the server's poll; it returns and drops every socket.
            drop(waker);
            let _ = thread.join();
        }
        connection::forget(&self.address);
        client::putter::forget(&self.address);
        mappings::forget(&self.address);
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("name", &self.address.name)
            .field("running", &self.running.lock().is_some())
            .finish()
    }
}

/// Binds a listener at the first free abstract name `name` makes (128 random bits each time:
/// a name taken by someone else is tried again, never fatal).
fn bind_unique(mut name: impl FnMut() -> io::Result<String>) -> io::Result<(UnixListener, String)> {
    let mut tries = 0;
    loop {
        let candidate = name()?;
        match UnixListener::bind_addr(&SocketAddr::from_abstract_name(candidate.as_bytes())?) {
            Ok(listener) => return Ok((listener, candidate)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 64 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod fuzz_test;
#[cfg(test)]
mod hardening_test;
#[cfg(test)]
mod test;
