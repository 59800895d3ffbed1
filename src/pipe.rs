//! Pipes between processes, like `multiprocessing.Pipe` (Unix only).
//!
//! [`duplex`] makes a pair of [`Connection`]s, each of which sends to and receives from the
//! other; [`one_way`] makes a [`Sender`] and a [`Receiver`]. Messages are any serde type.
//! Ends are handed to a child by passing them in the arguments of a
//! [`Process`](crate::process::Process): they travel as file descriptors (ipc-channel). When
//! the other end is gone, receiving returns [`PipeError::Eof`] instead of hanging.
//!
//! Unlike Python, the parent need not close its copy of the child's end: passing an end to a
//! `Process` moves it, and children are forked from a fork server that never held it. Ends
//! cannot travel inside process-pool jobs (whose input is plain bytes): use a manager
//! [`Queue`](crate::manager::Queue) there.
//!
//! # Examples
//! ```
//! use stealpool::process::Process;
//! use stealpool::pipe::{self, Connection};
//! use stealpool::PipeError;
//!
//! fn shout(conn: Connection<String>) {
//!     while let Ok(line) = conn.recv() {
//!         conn.send(line.to_uppercase()).unwrap();
//!     }
//! }
//! stealpool::register_fn!(shout);
//!
//! let (mine, theirs) = pipe::duplex::<String>().unwrap();
//! let child = Process::spawn(shout, theirs).unwrap();
//! mine.send("hello".into()).unwrap();
//! assert_eq!(mine.recv().unwrap(), "HELLO");
//! drop(mine); // the child's recv sees end of file and it returns
//! assert!(child.join().success());
//! ```

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::error::PipeError;

/// Makes a connected pair of duplex ends, like `multiprocessing.Pipe()`.
///
/// # Errors
/// [`PipeError::Io`] if the operating system refuses the sockets.
pub fn duplex<T: Serialize + DeserializeOwned>() -> Result<(Connection<T>, Connection<T>), PipeError> {
    let (a_tx, b_rx) = ipc::channel().map_err(io)?;
    let (b_tx, a_rx) = ipc::channel().map_err(io)?;
    Ok((
        Connection { tx: Sender { tx: a_tx }, rx: Receiver { rx: a_rx } },
        Connection { tx: Sender { tx: b_tx }, rx: Receiver { rx: b_rx } },
    ))
}

/// Makes a one-way pipe, like `multiprocessing.Pipe(duplex=False)` (whose ends come in the
/// other order: receiver first).
///
/// # Errors
/// [`PipeError::Io`] if the operating system refuses the sockets.
///
/// # Examples
/// ```
/// let (tx, rx) = stealpool::pipe::one_way::<u32>().unwrap();
/// tx.send(5).unwrap();
/// drop(tx);
/// assert_eq!(rx.recv(), Ok(5));
/// assert!(rx.recv().unwrap_err().is_eof());
/// ```
pub fn one_way<T: Serialize + DeserializeOwned>() -> Result<(Sender<T>, Receiver<T>), PipeError> {
    let (tx, rx) = ipc::channel().map_err(io)?;
    Ok((Sender { tx }, Receiver { rx }))
}

thread_local! {
    /// Set while this thread is inside an ipc-channel send that may carry pipe ends.
    static SENDING: Cell<bool> = const { Cell::new(false) };
}

/// Runs an ipc-channel send during which pipe ends may be serialized.
///
/// A pipe end serializes as a file descriptor that ipc-channel collects in per-thread state
/// and attaches to the message being sent. Serialized anywhere else (a process-pool job, say),
/// the descriptor would stay behind and ride along with the thread's next, unrelated ipc
/// message. So pipe ends refuse to serialize outside this scope.
pub(crate) fn sending<R>(send: impl FnOnce() -> R) -> R {
    let before = SENDING.replace(true);
    let result = send();
    SENDING.set(before);
    result
}

fn refuse<E: serde::ser::Error>() -> E {
    E::custom("a pipe end can only travel to a Process (as an argument) or through another pipe")
}

fn io(e: std::io::Error) -> PipeError {
    PipeError::Io(e.to_string())
}

fn ipc_error(e: IpcError) -> PipeError {
    match e {
        IpcError::Disconnected => PipeError::Eof,
        IpcError::SerializationError(e) => PipeError::Serialization(e.to_string()),
        IpcError::Io(e) => match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => PipeError::Eof,
            _ => PipeError::Io(e.to_string()),
        },
    }
}

/// The sending end of a pipe.
#[derive(Deserialize)]
#[serde(bound = "")]
pub struct Sender<T> {
    tx: IpcSender<T>,
}

impl<T> Serialize for Sender<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !SENDING.get() {
            return Err(refuse());
        }
        self.tx.serialize(s)
    }
}

impl<T: Serialize + DeserializeOwned> Sender<T> {
    /// Sends a message. It may block while the pipe's buffer is full and the reader is alive.
    ///
    /// # Errors
    /// [`PipeError::Eof`] if the receiving end is gone; [`PipeError::Serialization`] if the
    /// message does not serialize.
    pub fn send(&self, message: T) -> Result<(), PipeError> {
        sending(|| self.tx.send(message)).map_err(ipc_error)
    }
}

/// The receiving end of a pipe.
#[derive(Deserialize)]
#[serde(bound = "")]
pub struct Receiver<T> {
    rx: IpcReceiver<T>,
}

impl<T> Serialize for Receiver<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !SENDING.get() {
            return Err(refuse());
        }
        self.rx.serialize(s)
    }
}

impl<T: Serialize + DeserializeOwned> Receiver<T> {
    /// Waits for the next message.
    ///
    /// # Errors
    /// [`PipeError::Eof`] once every sending end is gone and nothing is left to read;
    /// [`PipeError::Serialization`] if a message does not deserialize.
    pub fn recv(&self) -> Result<T, PipeError> {
        self.rx.recv().map_err(ipc_error)
    }

    /// The next message if one has arrived.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`PipeError::Empty`] if nothing has arrived.
    pub fn try_recv(&self) -> Result<T, PipeError> {
        self.rx.try_recv().map_err(|e| match e {
            TryRecvError::Empty => PipeError::Empty,
            TryRecvError::IpcError(e) => ipc_error(e),
        })
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`PipeError::Timeout`] if nothing arrived in time.
    ///
    /// Any timeout is accepted: one too large to add to now waits as long as it takes, like
    /// [`recv`](Self::recv). The wait is never cut short: ipc-channel polls in whole
    /// milliseconds, so the remaining time is rounded up and the deadline checked again.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, PipeError> {
        let Some(deadline) = crate::deadline::after(timeout) else { return self.recv() };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = Duration::from_millis(u64::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX));
            match self.rx.try_recv_timeout(ms) {
                Ok(message) => return Ok(message),
                Err(TryRecvError::Empty) if Instant::now() >= deadline => return Err(PipeError::Timeout),
                Err(TryRecvError::Empty) => continue,
                // A signal handler ran during the wait: wait again for what is left.
                Err(TryRecvError::IpcError(IpcError::Io(e))) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(TryRecvError::IpcError(e)) => return Err(ipc_error(e)),
            }
        }
    }
}

/// One end of a duplex pipe: sends to the other end and receives from it.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Connection<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends a message to the other end.
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub fn send(&self, message: T) -> Result<(), PipeError> {
        self.tx.send(message)
    }

    /// Waits for the next message from the other end.
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn recv(&self) -> Result<T, PipeError> {
        self.rx.recv()
    }

    /// The next message if one has arrived.
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn try_recv(&self) -> Result<T, PipeError> {
        self.rx.try_recv()
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, PipeError> {
        self.rx.recv_timeout(timeout)
    }

    /// Splits the connection into its sending and receiving halves.
    pub fn split(self) -> (Sender<T>, Receiver<T>) {
        (self.tx, self.rx)
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sender { .. }")
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receiver { .. }")
    }
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connection { .. }")
    }
}
