//! The manager's errors, one small type per operation family, in the style of
//! crossbeam-channel's `err.rs`: a caller matches on exactly the failures that operation can
//! have (`Queue::try_get` can be `Empty`, never `OverReleased`).
//!
//! Every type has `Disconnected` (the manager shut down or its process died: a blocked or
//! later call returns it instead of hanging) and `Serialization` (a value did not serialize,
//! what arrived did not deserialize as the handle's type, or the reply did not answer the
//! request, which only a handle of another manager or a protocol bug can cause).
//!
//! Inside the client, calls fail with the crate-private [`ErrorKind`]; each public method
//! turns it into its own type with `From`, and a kind the operation cannot have becomes
//! `Serialization` ("unexpected reply"). This module must stay free of logic: it only names
//! failures and prints them.

use std::fmt;

/// How a call to the manager failed, before the public method narrows it to its own type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Full,
    Empty,
    Timeout,
    WouldBlock,
    Disconnected,
    OverReleased,
    BrokenBarrier,
    Serialization(String),
}

const DISCONNECTED: &str = "the manager is gone (shut down or its process died)";

/// One error type without an item: its own variants (each made from one [`ErrorKind`]), then
/// `Disconnected` and `Serialization`.
macro_rules! call_error {
    (
        $(#[$doc:meta])*
        pub enum $name:ident {
            $( $(#[$vdoc:meta])* $variant:ident from $kind:ident, $is:ident, $msg:literal; )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )*
            /// The manager shut down or its process died, or the connection to it broke.
            Disconnected,
            /// A value could not be serialized, what arrived did not deserialize as the
            /// handle's type, or the reply did not answer the request.
            Serialization(String),
        }

        impl $name {
            $(
                #[doc = concat!("Whether this is [`", stringify!($variant), "`](Self::", stringify!($variant), ").")]
                pub fn $is(&self) -> bool {
                    matches!(self, $name::$variant)
                }
            )*

            /// Whether the manager is gone.
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( $name::$variant => f.write_str($msg), )*
                    $name::Disconnected => f.write_str(DISCONNECTED),
                    $name::Serialization(m) => write!(f, "serialization failed: {m}"),
                }
            }
        }

        impl std::error::Error for $name {}

        impl From<ErrorKind> for $name {
            fn from(kind: ErrorKind) -> Self {
                match kind {
                    $( ErrorKind::$kind => $name::$variant, )*
                    ErrorKind::Disconnected => $name::Disconnected,
                    ErrorKind::Serialization(m) => $name::Serialization(m),
                    #[allow(unreachable_patterns)]
                    other => $name::Serialization(format!("unexpected reply from the manager: {other:?}")),
                }
            }
        }
    };
}

call_error! {
    /// Why a call that does not wait failed: creating an object, `Queue::len`, `Event::set`,
    /// `Event::wait`, `Barrier::reset`, every `Map` call, `LockGuard::unlock`.
    ///
    /// # Examples
    /// ```
    /// use stealpool::manager::{CallError, Manager};
    ///
    /// let manager = Manager::new().unwrap();
    /// manager.shutdown();
    /// assert_eq!(manager.event().unwrap_err(), CallError::Disconnected);
    /// ```
    pub enum CallError {}
}

call_error! {
    /// Why [`Queue::get`](super::Queue::get) failed.
    pub enum GetError {}
}

call_error! {
    /// Why [`Queue::try_get`](super::Queue::try_get) failed.
    ///
    /// # Examples
    /// ```
    /// use stealpool::manager::{Manager, TryGetError};
    ///
    /// let manager = Manager::new().unwrap();
    /// let q = manager.queue::<u8>().unwrap();
    /// assert_eq!(q.try_get(), Err(TryGetError::Empty));
    /// ```
    pub enum TryGetError {
        /// The queue had no item, like Python's `queue.Empty`.
        Empty from Empty, is_empty, "the queue is empty";
    }
}

call_error! {
    /// Why [`Queue::get_timeout`](super::Queue::get_timeout) failed.
    pub enum GetTimeoutError {
        /// No item came in time, like Python's `queue.Empty` after `get(timeout=...)`.
        Timeout from Empty, is_timeout, "no item came in time";
    }
}

call_error! {
    /// Why [`Lock::lock`](super::Lock::lock) or [`Semaphore::acquire`](super::Semaphore::acquire)
    /// failed.
    pub enum AcquireError {}
}

call_error! {
    /// Why [`Lock::try_lock`](super::Lock::try_lock) or
    /// [`Semaphore::try_acquire`](super::Semaphore::try_acquire) failed.
    pub enum TryAcquireError {
        /// The lock is held, or no permit is free: it would have had to wait.
        WouldBlock from WouldBlock, is_would_block, "the operation would block";
    }
}

call_error! {
    /// Why [`Lock::lock_timeout`](super::Lock::lock_timeout) or
    /// [`Semaphore::acquire_timeout`](super::Semaphore::acquire_timeout) failed.
    pub enum AcquireTimeoutError {
        /// The lock or a permit did not come free in time.
        Timeout from Timeout, is_timeout, "timed out";
    }
}

call_error! {
    /// Why [`Semaphore::release`](super::Semaphore::release) failed.
    ///
    /// # Examples
    /// ```
    /// use stealpool::manager::{Manager, ReleaseError};
    ///
    /// let manager = Manager::new().unwrap();
    /// let s = manager.semaphore(1).unwrap();
    /// assert_eq!(s.release(), Err(ReleaseError::OverReleased));
    /// ```
    pub enum ReleaseError {
        /// No permit was held: a semaphore never grows past the number of permits it was
        /// made with.
        OverReleased from OverReleased, is_over_released, "semaphore released more times than it was acquired";
    }
}

call_error! {
    /// Why [`Barrier::wait`](super::Barrier::wait) failed.
    pub enum BarrierWaitError {
        /// The barrier was broken (a party timed out or died while waiting, or it was reset).
        Broken from BrokenBarrier, is_broken, "the barrier is broken";
    }
}

call_error! {
    /// Why [`Barrier::wait_timeout`](super::Barrier::wait_timeout) failed.
    pub enum BarrierWaitTimeoutError {
        /// Not every party came in time; the barrier is now broken for everyone, as in Python.
        Timeout from Timeout, is_timeout, "timed out";
        /// The barrier was broken (a party timed out or died while waiting, or it was reset).
        Broken from BrokenBarrier, is_broken, "the barrier is broken";
    }
}

/// One error type of the put family: it hands the item back (`into_inner`).
macro_rules! put_error {
    (
        $(#[$doc:meta])*
        pub enum $name:ident<T> {
            $( $(#[$vdoc:meta])* $variant:ident from $kind:ident, $is:ident, $msg:literal; )*
        }
    ) => {
        $(#[$doc])*
        #[non_exhaustive]
        pub enum $name<T> {
            $( $(#[$vdoc])* $variant(T), )*
            /// The manager shut down or its process died, or the connection to it broke.
            Disconnected(T),
            /// The item could not be serialized, or the reply did not answer the request.
            Serialization(T, String),
        }

        impl<T> $name<T> {
            pub(crate) fn new(item: T, kind: ErrorKind) -> Self {
                match kind {
                    $( ErrorKind::$kind => $name::$variant(item), )*
                    ErrorKind::Disconnected => $name::Disconnected(item),
                    ErrorKind::Serialization(m) => $name::Serialization(item, m),
                    other => $name::Serialization(item, format!("unexpected reply from the manager: {other:?}")),
                }
            }

            /// The item that was not put.
            pub fn into_inner(self) -> T {
                match self {
                    $( $name::$variant(item) )|* | $name::Disconnected(item) | $name::Serialization(item, _) => item,
                }
            }

            $(
                #[doc = concat!("Whether this is [`", stringify!($variant), "`](Self::", stringify!($variant), ").")]
                pub fn $is(&self) -> bool {
                    matches!(self, $name::$variant(_))
                }
            )*

            /// Whether the manager is gone.
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected(_))
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( $name::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")), )*
                    $name::Disconnected(_) => f.write_str("Disconnected(..)"),
                    $name::Serialization(_, m) => write!(f, "Serialization(.., {m:?})"),
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( $name::$variant(_) => write!(f, "put failed: {}", $msg), )*
                    $name::Disconnected(_) => write!(f, "put failed: {DISCONNECTED}"),
                    $name::Serialization(_, m) => write!(f, "put failed: serialization failed: {m}"),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
}

put_error! {
    /// Why [`Queue::put`](super::Queue::put) failed; the item is handed back.
    pub enum PutError<T> {}
}

put_error! {
    /// Why [`Queue::try_put`](super::Queue::try_put) failed; the item is handed back.
    ///
    /// # Examples
    /// ```
    /// use stealpool::manager::Manager;
    ///
    /// let manager = Manager::new().unwrap();
    /// let q = manager.bounded_queue::<String>(1).unwrap();
    /// q.put("first".to_string()).unwrap();
    /// let err = q.try_put("second".to_string()).unwrap_err();
    /// assert!(err.is_full());
    /// assert_eq!(err.into_inner(), "second");
    /// ```
    pub enum TryPutError<T> {
        /// A bounded queue had no free slot, like Python's `queue.Full`.
        Full from Full, is_full, "the queue is full";
    }
}

put_error! {
    /// Why [`Queue::put_timeout`](super::Queue::put_timeout) failed; the item is handed back.
    pub enum PutTimeoutError<T> {
        /// No slot came free in time, like Python's `queue.Full` after `put(timeout=...)`.
        Timeout from Full, is_timeout, "no slot came free in time";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_an_operation_cannot_have_are_unexpected_replies() {
        assert_eq!(TryGetError::from(ErrorKind::Empty), TryGetError::Empty);
        assert_eq!(GetTimeoutError::from(ErrorKind::Empty), GetTimeoutError::Timeout);
        assert!(
            matches!(TryGetError::from(ErrorKind::OverReleased), TryGetError::Serialization(m) if m.contains("unexpected"))
        );
        assert!(ReleaseError::from(ErrorKind::OverReleased).is_over_released());
        assert!(BarrierWaitTimeoutError::from(ErrorKind::BrokenBarrier).is_broken());
        assert!(CallError::from(ErrorKind::Disconnected).is_disconnected());
        let e = TryPutError::new(7, ErrorKind::Full);
        assert!(e.is_full() && !e.is_disconnected());
        assert_eq!(e.into_inner(), 7);
        let e = PutTimeoutError::new("x", ErrorKind::Full);
        assert!(e.is_timeout());
        assert_eq!(format!("{e:?}"), "Timeout(..)");
        assert_eq!(PutError::new(1, ErrorKind::Timeout).into_inner(), 1);
    }
}
