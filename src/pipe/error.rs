//! The pipes' errors, one small type per operation (as crossbeam-channel's): what
//! [`duplex`](super::duplex) / [`one_way`](super::one_way), `send`, `recv`, `try_recv` and
//! `recv_timeout` can fail with, and nothing else. An operating-system failure keeps its
//! [`io::Error`] (as `source()`).
//!
//! This module must never hold errors of other modules.

use std::fmt;
use std::io;

/// [`duplex`](super::duplex) or [`one_way`](super::one_way) could not make the sockets (out of
/// file descriptors, for one). The operating system's error is the `source()`.
#[derive(Debug)]
pub struct CreateError(pub(super) io::Error);

impl CreateError {
    /// The operating system's error.
    pub fn io_error(&self) -> &io::Error {
        &self.0
    }

    /// Takes the operating system's error.
    pub fn into_io_error(self) -> io::Error {
        self.0
    }
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot make a pipe: {}", self.0)
    }
}

impl std::error::Error for CreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Equality for the `Io` variants below: same kind and same OS error code (an `io::Error` has
/// no equality of its own).
fn same_io(a: &io::Error, b: &io::Error) -> bool {
    a.kind() == b.kind() && a.raw_os_error() == b.raw_os_error()
}

/// `send` failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// The receiving end is gone (dropped, or its process ended): nothing sent would be read.
    Disconnected,
    /// The message did not serialize (a pipe end inside it, sent anywhere but through a pipe or
    /// to a `Process`, for one); the text says why.
    Serialization(String),
    /// The operating system refused; the error is the `source()`.
    Io(io::Error),
}

/// `recv` failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecvError {
    /// Every sending end is gone and nothing is left to read (end of file; Python raises
    /// `EOFError` here).
    Disconnected,
    /// What arrived did not deserialize as the pipe's type; the text says why.
    Deserialization(String),
    /// The operating system refused; the error is the `source()`.
    Io(io::Error),
}

/// `try_recv` failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing has arrived yet.
    Empty,
    /// As [`RecvError::Disconnected`].
    Disconnected,
    /// As [`RecvError::Deserialization`].
    Deserialization(String),
    /// As [`RecvError::Io`].
    Io(io::Error),
}

/// `recv_timeout` failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// Nothing arrived in time.
    Timeout,
    /// As [`RecvError::Disconnected`].
    Disconnected,
    /// As [`RecvError::Deserialization`].
    Deserialization(String),
    /// As [`RecvError::Io`].
    Io(io::Error),
}

impl From<RecvError> for TryRecvError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Disconnected => TryRecvError::Disconnected,
            RecvError::Deserialization(m) => TryRecvError::Deserialization(m),
            RecvError::Io(e) => TryRecvError::Io(e),
        }
    }
}

impl From<RecvError> for RecvTimeoutError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Disconnected => RecvTimeoutError::Disconnected,
            RecvError::Deserialization(m) => RecvTimeoutError::Deserialization(m),
            RecvError::Io(e) => RecvTimeoutError::Io(e),
        }
    }
}

/// `Display`, `Error` (with the `io::Error` as `source()`), `PartialEq` (`Io` by kind and OS
/// code) and `is_disconnected` for each of the four.
macro_rules! pipe_error {
    ($ty:ident, $what:literal, { $($extra:ident => $text:literal),* }, $data:ident) => {
        impl $ty {
            /// Whether the other end is gone (end of file).
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $ty::Disconnected)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($ty::$extra => f.write_str($text),)*
                    $ty::Disconnected => f.write_str("end of file: the other end of the pipe is gone"),
                    $ty::$data(m) => write!(f, concat!($what, " failed: {}"), m),
                    $ty::Io(e) => write!(f, "pipe I/O failed: {e}"),
                }
            }
        }

        impl std::error::Error for $ty {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $ty::Io(e) => Some(e),
                    _ => None,
                }
            }
        }

        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                match (self, other) {
                    $(($ty::$extra, $ty::$extra) => true,)*
                    ($ty::Disconnected, $ty::Disconnected) => true,
                    ($ty::$data(a), $ty::$data(b)) => a == b,
                    ($ty::Io(a), $ty::Io(b)) => same_io(a, b),
                    _ => false,
                }
            }
        }
    };
}

pipe_error!(SendError, "serialization", {}, Serialization);
pipe_error!(RecvError, "deserialization", {}, Deserialization);
pipe_error!(TryRecvError, "deserialization", { Empty => "nothing has arrived yet" }, Deserialization);
pipe_error!(RecvTimeoutError, "deserialization", { Timeout => "nothing arrived in time" }, Deserialization);

impl TryRecvError {
    /// Whether nothing had arrived yet.
    pub fn is_empty(&self) -> bool {
        matches!(self, TryRecvError::Empty)
    }
}

impl RecvTimeoutError {
    /// Whether nothing arrived in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn io_errors_are_kept_as_the_source() {
        let e = RecvError::Io(io::Error::from_raw_os_error(nix::libc::EMFILE));
        let source = e.source().and_then(|s| s.downcast_ref::<io::Error>()).unwrap();
        assert_eq!(source.raw_os_error(), Some(nix::libc::EMFILE));
        let c = CreateError(io::Error::from_raw_os_error(nix::libc::ENFILE));
        assert_eq!(
            c.source().and_then(|s| s.downcast_ref::<io::Error>()).unwrap().raw_os_error(),
            Some(nix::libc::ENFILE)
        );
        assert_eq!(c.into_io_error().raw_os_error(), Some(nix::libc::ENFILE));
    }

    #[test]
    fn equality_and_predicates() {
        assert_eq!(TryRecvError::from(RecvError::Disconnected), TryRecvError::Disconnected);
        assert!(RecvTimeoutError::from(RecvError::Disconnected).is_disconnected());
        assert!(TryRecvError::Empty.is_empty() && !TryRecvError::Empty.is_disconnected());
        assert!(RecvTimeoutError::Timeout.is_timeout());
        let a = SendError::Io(io::Error::from_raw_os_error(nix::libc::EPIPE));
        assert_eq!(a, SendError::Io(io::Error::from_raw_os_error(nix::libc::EPIPE)));
        assert_ne!(a, SendError::Io(io::Error::from_raw_os_error(nix::libc::EMFILE)));
        assert_ne!(a, SendError::Disconnected);
        assert_eq!(RecvError::Disconnected.to_string(), "end of file: the other end of the pipe is gone");
    }
}
