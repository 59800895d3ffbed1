//! Pipes between processes, like `multiprocessing.Pipe` (Unix only).
//!
//! [`duplex`] makes a pair of [`Connection`]s, each of which sends to and receives from the
//! other; [`one_way`] makes a [`Sender`] and a [`Receiver`]. Messages are any serde type.
//! Ends are handed to a child by passing them in the arguments of a
//! [`Process`](crate::process::Process): they travel as file descriptors (ipc-channel). When
//! the other end is gone, receiving returns [`RecvError::Disconnected`] (end of file) instead
//! of hanging. Each operation has its own small error type ([`SendError`], [`RecvError`],
//! [`TryRecvError`], [`RecvTimeoutError`], [`CreateError`]), as in crossbeam-channel.
//!
//! Unlike Python, the parent need not close its copy of the child's end: passing an end to a
//! `Process` moves it, and children are forked from a fork server that never held it. Ends
//! cannot travel inside process-pool jobs (whose input is plain bytes): use a manager
//! `manager::Queue` there.
//!
//! # Examples
//! ```
//! use stealpool::process::Process;
//! use stealpool::pipe::{self, Connection};
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

use ipc_channel::IpcError;
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod error;

pub use self::error::{CreateError, RecvError, RecvTimeoutError, SendError, TryRecvError};

/// Makes a connected pair of duplex ends, like `multiprocessing.Pipe()`.
///
/// # Errors
/// [`CreateError`] if the operating system refuses the sockets.
pub fn duplex<T: Serialize + DeserializeOwned>() -> Result<(Connection<T>, Connection<T>), CreateError> {
    let (a_tx, b_rx) = ipc::channel().map_err(CreateError)?;
    let (b_tx, a_rx) = ipc::channel().map_err(CreateError)?;
    Ok((
        Connection { tx: Sender { tx: a_tx }, rx: Receiver { rx: a_rx } },
        Connection { tx: Sender { tx: b_tx }, rx: Receiver { rx: b_rx } },
    ))
}

/// Makes a one-way pipe, like `multiprocessing.Pipe(duplex=False)` (whose ends come in the
/// other order: receiver first).
///
/// # Errors
/// [`CreateError`] if the operating system refuses the sockets.
///
/// # Examples
/// ```
/// let (tx, rx) = stealpool::pipe::one_way::<u32>().unwrap();
/// tx.send(5).unwrap();
/// drop(tx);
/// assert_eq!(rx.recv(), Ok(5));
/// assert!(rx.recv().unwrap_err().is_disconnected());
/// ```
pub fn one_way<T: Serialize + DeserializeOwned>() -> Result<(Sender<T>, Receiver<T>), CreateError> {
    let (tx, rx) = ipc::channel().map_err(CreateError)?;
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

/// A peer that is gone shows as a broken or reset socket: that is end of file, not an I/O
/// failure.
fn is_gone(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
}

fn send_error(e: IpcError) -> SendError {
    match e {
        IpcError::Disconnected => SendError::Disconnected,
        IpcError::SerializationError(e) => SendError::Serialization(e.to_string()),
        IpcError::Io(e) if is_gone(&e) => SendError::Disconnected,
        IpcError::Io(e) => SendError::Io(e),
    }
}

fn recv_error(e: IpcError) -> RecvError {
    match e {
        IpcError::Disconnected => RecvError::Disconnected,
        IpcError::SerializationError(e) => RecvError::Deserialization(e.to_string()),
        IpcError::Io(e) if is_gone(&e) => RecvError::Disconnected,
        IpcError::Io(e) => RecvError::Io(e),
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
    /// [`SendError::Disconnected`] if the receiving end is gone; [`SendError::Serialization`]
    /// if the message does not serialize; [`SendError::Io`] if the operating system refuses.
    pub fn send(&self, message: T) -> Result<(), SendError> {
        sending(|| self.tx.send(message)).map_err(send_error)
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
    /// [`RecvError::Disconnected`] once every sending end is gone and nothing is left to read;
    /// [`RecvError::Deserialization`] if a message does not deserialize; [`RecvError::Io`] if
    /// the operating system refuses.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.rx.recv().map_err(recv_error)
    }

    /// The next message if one has arrived.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`TryRecvError::Empty`] if nothing has arrived.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv().map_err(|e| match e {
            ipc_channel::TryRecvError::Empty => TryRecvError::Empty,
            ipc_channel::TryRecvError::IpcError(e) => recv_error(e).into(),
        })
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`RecvTimeoutError::Timeout`] if nothing arrived in time.
    ///
    /// Any timeout is accepted: one too large to add to now waits as long as it takes, like
    /// [`recv`](Self::recv). The wait is never cut short: ipc-channel polls in whole
    /// milliseconds, so the remaining time is rounded up and the deadline checked again.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let Some(deadline) = crate::deadline::after(timeout) else { return self.recv().map_err(Into::into) };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = Duration::from_millis(u64::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX));
            match self.rx.try_recv_timeout(ms) {
                Ok(message) => return Ok(message),
                Err(ipc_channel::TryRecvError::Empty) if Instant::now() >= deadline => {
                    return Err(RecvTimeoutError::Timeout);
                }
                Err(ipc_channel::TryRecvError::Empty) => continue,
                // A signal handler ran during the wait: wait again for what is left.
                Err(ipc_channel::TryRecvError::IpcError(IpcError::Io(e)))
                    if e.kind() == std::io::ErrorKind::Interrupted =>
                {
                    continue;
                }
                Err(ipc_channel::TryRecvError::IpcError(e)) => return Err(recv_error(e).into()),
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
    pub fn send(&self, message: T) -> Result<(), SendError> {
        self.tx.send(message)
    }

    /// Waits for the next message from the other end.
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn recv(&self) -> Result<T, RecvError> {
        self.rx.recv()
    }

    /// The next message if one has arrived.
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
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
