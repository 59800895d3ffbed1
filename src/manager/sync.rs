//! Synchronization objects served by a manager: [`Lock`], [`Semaphore`], [`Event`],
//! [`Barrier`].
//!
//! A lock or permit is held by the connection that acquired it; the guard keeps that
//! connection for as long as it lives. So when a holder's process dies, the kernel closes the
//! connection and the manager releases what it held, and tells the next holder.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manager::client::connection::{self, Conn};
use crate::manager::client::handle::{Handle, unexpected, wait_for};
use crate::manager::error::{
    AcquireError, AcquireTimeoutError, BarrierWaitError, BarrierWaitTimeoutError, CallError, ErrorKind, ReleaseError,
    TryAcquireError,
};
use crate::manager::protocol::{Reply, Request, WaitLimit};

/// Something acquired on a connection of its own; released (through that connection) on drop.
struct Held {
    pub(super) handle: Handle,
    conn: Option<Conn>,
    owner_died: bool,
}

impl Held {
    fn acquire(handle: &Handle, wait: WaitLimit) -> Result<Held, ErrorKind> {
        let request = Request::Acquire { id: handle.id, wait };
        let mut conn = connection::take_for(&handle.address, &request)?;
        match conn.call(&request) {
            Ok(Reply::Acquired { owner_died }) => Ok(Held { handle: handle.clone(), conn: Some(conn), owner_died }),
            Ok(other) => {
                connection::give_back(&handle.address, conn);
                Err(unexpected(other))
            }
            Err(e) => {
                if e != ErrorKind::Disconnected {
                    connection::give_back(&handle.address, conn);
                }
                Err(e)
            }
        }
    }

    fn release(&mut self) -> Result<(), ErrorKind> {
        let Some(mut conn) = self.conn.take() else { return Ok(()) };
        match conn.call(&Request::Release { id: self.handle.id })? {
            Reply::Done => {
                connection::give_back(&self.handle.address, conn);
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // A manager that is gone has nothing left to release.
        let _ = self.release();
    }
}

/// A mutual-exclusion lock shared through a [`Manager`](super::Manager), like
/// `Manager().Lock()`, but guard-based: [`lock`](Self::lock) returns a [`LockGuard`] that
/// unlocks when dropped. Created by [`Manager::lock`](super::Manager::lock).
///
/// If the process holding the lock dies, the manager unlocks it, and the next
/// [`LockGuard::previous_owner_died`] says so: whatever the lock protects may be half-updated.
///
/// # Examples
/// ```
/// use stealpool::manager::{Manager, TryAcquireError};
///
/// let manager = Manager::new().unwrap();
/// let lock = manager.lock().unwrap();
/// let guard = lock.lock().unwrap();
/// assert!(!guard.previous_owner_died());
/// assert_eq!(lock.try_lock().unwrap_err(), TryAcquireError::WouldBlock);
/// drop(guard);
/// assert!(lock.try_lock().is_ok());
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Lock {
    pub(super) handle: Handle,
}

impl Lock {
    pub(super) fn new(handle: Handle) -> Self {
        Lock { handle }
    }

    /// Waits for the lock and takes it.
    ///
    /// # Errors
    /// `Disconnected` if the manager is gone (also while waiting).
    pub fn lock(&self) -> Result<LockGuard, AcquireError> {
        Held::acquire(&self.handle, WaitLimit::Forever).map(LockGuard).map_err(Into::into)
    }

    /// Takes the lock if it is free now.
    ///
    /// # Errors
    /// [`WouldBlock`](TryAcquireError::WouldBlock) if it is held;
    /// [`Disconnected`](CallError::Disconnected) if the manager is gone.
    pub fn try_lock(&self) -> Result<LockGuard, TryAcquireError> {
        Held::acquire(&self.handle, WaitLimit::No).map(LockGuard).map_err(Into::into)
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// # Errors
    /// `Timeout` if it stayed held;
    /// [`Disconnected`](CallError::Disconnected) if the manager is gone.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard, AcquireTimeoutError> {
        Held::acquire(&self.handle, wait_for(timeout)).map(LockGuard).map_err(Into::into)
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock").field("object", &self.handle).finish()
    }
}

/// A held [`Lock`]; unlocks when dropped.
pub struct LockGuard(Held);

impl LockGuard {
    /// Whether the previous holder died holding the lock (it was released by the manager).
    pub fn previous_owner_died(&self) -> bool {
        self.0.owner_died
    }

    /// Unlocks now, reporting whether the manager could be told.
    ///
    /// # Errors
    /// `Disconnected` if the manager is gone (the lock is gone with it).
    pub fn unlock(mut self) -> Result<(), CallError> {
        Ok(self.0.release()?)
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").field("lock", &self.0.handle).field("owner_died", &self.0.owner_died).finish()
    }
}

/// A bounded counting semaphore shared through a [`Manager`](super::Manager), like
/// `Manager().BoundedSemaphore(n)`. Created by
/// [`Manager::semaphore`](super::Manager::semaphore).
///
/// [`acquire`](Self::acquire) returns a [`SemaphorePermit`] that gives the permit back when
/// dropped. Permits held by a process that dies come back too, and the next acquirer is told
/// ([`SemaphorePermit::previous_owner_died`]). The count never grows past the number of
/// permits the semaphore was made with: [`release`](Self::release) with no permit out is
/// [`ReleaseError::OverReleased`].
///
/// # Examples
/// ```
/// use stealpool::manager::{Manager, ReleaseError, TryAcquireError};
///
/// let manager = Manager::new().unwrap();
/// let room = manager.semaphore(2).unwrap();
/// let a = room.acquire().unwrap();
/// let b = room.acquire().unwrap();
/// assert_eq!(room.try_acquire().unwrap_err(), TryAcquireError::WouldBlock);
/// drop(a);
/// b.forget(); // keep the permit out; someone will `release` it
/// room.release().unwrap();
/// assert_eq!(room.release(), Err(ReleaseError::OverReleased));
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Semaphore {
    pub(super) handle: Handle,
}

impl Semaphore {
    pub(super) fn new(handle: Handle) -> Self {
        Semaphore { handle }
    }

    /// Waits for a permit and takes it.
    ///
    /// # Errors
    /// `Disconnected` if the manager is gone (also while waiting).
    pub fn acquire(&self) -> Result<SemaphorePermit, AcquireError> {
        Held::acquire(&self.handle, WaitLimit::Forever).map(SemaphorePermit).map_err(Into::into)
    }

    /// Takes a permit if one is free now.
    ///
    /// # Errors
    /// [`WouldBlock`](TryAcquireError::WouldBlock) if none is free;
    /// [`Disconnected`](CallError::Disconnected) if the manager is gone.
    pub fn try_acquire(&self) -> Result<SemaphorePermit, TryAcquireError> {
        Held::acquire(&self.handle, WaitLimit::No).map(SemaphorePermit).map_err(Into::into)
    }

    /// Waits at most `timeout` for a permit.
    ///
    /// # Errors
    /// `Timeout` if none came free in time;
    /// [`Disconnected`](CallError::Disconnected) if the manager is gone.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphorePermit, AcquireTimeoutError> {
        Held::acquire(&self.handle, wait_for(timeout)).map(SemaphorePermit).map_err(Into::into)
    }

    /// Gives back a permit that was taken out with [`SemaphorePermit::forget`] (here or in any
    /// other process).
    ///
    /// # Errors
    /// [`OverReleased`](ReleaseError::OverReleased) if no permit is out;
    /// [`Disconnected`](CallError::Disconnected) if the manager is gone.
    pub fn release(&self) -> Result<(), ReleaseError> {
        Ok(self.handle.call_done(&Request::Release { id: self.handle.id })?)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore").field("object", &self.handle).finish()
    }
}

/// A permit of a [`Semaphore`]; given back when dropped.
pub struct SemaphorePermit(Held);

impl SemaphorePermit {
    /// Whether a previous holder of a permit died holding it (it was given back by the
    /// manager).
    pub fn previous_owner_died(&self) -> bool {
        self.0.owner_died
    }

    /// Keeps the permit out without a guard: it comes back with [`Semaphore::release`], or
    /// when this process ends.
    pub fn forget(mut self) {
        if let Some(conn) = self.0.conn.take() {
            connection::give_back(&self.0.handle.address, conn);
        }
    }
}

impl fmt::Debug for SemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit")
            .field("semaphore", &self.0.handle)
            .field("owner_died", &self.0.owner_died)
            .finish()
    }
}

/// A flag that processes can wait for, like `Manager().Event()`. Created by
/// [`Manager::event`](super::Manager::event).
///
/// # Examples
/// ```
/// use std::time::Duration;
///
/// let manager = stealpool::manager::Manager::new().unwrap();
/// let ready = manager.event().unwrap();
/// assert_eq!(ready.wait_timeout(Duration::from_millis(5)), Ok(false));
/// let setter = ready.clone();
/// std::thread::spawn(move || setter.set().unwrap());
/// ready.wait().unwrap();
/// assert_eq!(ready.is_set(), Ok(true));
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Event {
    pub(super) handle: Handle,
}

impl Event {
    pub(super) fn new(handle: Handle) -> Self {
        Event { handle }
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// # Errors
    /// `Disconnected` if the manager is gone.
    pub fn set(&self) -> Result<(), CallError> {
        Ok(self.handle.call_done(&Request::SetEvent { id: self.handle.id, value: true })?)
    }

    /// Clears the flag.
    ///
    /// # Errors
    /// `Disconnected` if the manager is gone.
    pub fn clear(&self) -> Result<(), CallError> {
        Ok(self.handle.call_done(&Request::SetEvent { id: self.handle.id, value: false })?)
    }

    /// Whether the flag is set.
    ///
    /// # Errors
    /// `Disconnected` if the manager is gone.
    pub fn is_set(&self) -> Result<bool, CallError> {
        match self.handle.call(&Request::IsSet { id: self.handle.id })? {
            Reply::Flag(set) => Ok(set),
            other => Err(unexpected(other).into()),
        }
    }

    fn wait_with(&self, wait: WaitLimit) -> Result<bool, ErrorKind> {
        match self.handle.call(&Request::WaitEvent { id: self.handle.id, wait })? {
            Reply::Flag(set) => Ok(set),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    /// `Disconnected` if the manager is gone (also while waiting).
    pub fn wait(&self) -> Result<(), CallError> {
        Ok(self.wait_with(WaitLimit::Forever).map(drop)?)
    }

    /// Waits at most `timeout` for the flag; returns whether it is set, like Python's
    /// `Event.wait(timeout)`.
    ///
    /// # Errors
    /// `Disconnected` if the manager is gone (also while waiting).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, CallError> {
        Ok(self.wait_with(wait_for(timeout))?)
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("object", &self.handle).finish()
    }
}

/// A barrier for a fixed number of parties, like `Manager().Barrier(parties)`. Created by
/// [`Manager::barrier`](super::Manager::barrier).
///
/// As in Python, a party that times out breaks the barrier for everyone waiting (and for later
/// waits, until [`reset`](Self::reset)); so does a party that dies while waiting.
///
/// # Examples
/// ```
/// let manager = stealpool::manager::Manager::new().unwrap();
/// let start = manager.barrier(2).unwrap();
/// let other = start.clone();
/// let t = std::thread::spawn(move || other.wait().unwrap());
/// let mine = start.wait().unwrap();
/// let theirs = t.join().unwrap();
/// assert_eq!(mine + theirs, 1); // arrival order: one got 0, the other 1
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Barrier {
    pub(super) handle: Handle,
    parties: usize,
}

impl Barrier {
    pub(super) fn new(handle: Handle, parties: usize) -> Self {
        Barrier { handle, parties }
    }

    /// The number of parties that must arrive.
    pub fn parties(&self) -> usize {
        self.parties
    }

    fn wait_with(&self, wait: WaitLimit) -> Result<usize, ErrorKind> {
        match self.handle.call(&Request::WaitBarrier { id: self.handle.id, wait })? {
            Reply::Index(i) => Ok(i as usize),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until all parties have arrived; returns this party's arrival index, `0` for the
    /// first to arrive up to `parties() - 1` for the last.
    ///
    /// # Errors
    /// [`Broken`](BarrierWaitError::Broken) if the barrier is or becomes broken;
    /// [`Disconnected`](CallError::Disconnected) if the manager is gone.
    pub fn wait(&self) -> Result<usize, BarrierWaitError> {
        Ok(self.wait_with(WaitLimit::Forever)?)
    }

    /// As [`wait`](Self::wait), for at most `timeout`.
    ///
    /// # Errors
    /// As [`wait`](Self::wait), and `Timeout` if the others did not
    /// arrive in time (which breaks the barrier).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, BarrierWaitTimeoutError> {
        Ok(self.wait_with(wait_for(timeout))?)
    }

    /// Returns the barrier to its first state; parties waiting now get
    /// [`Broken`](BarrierWaitError::Broken).
    ///
    /// # Errors
    /// `Disconnected` if the manager is gone.
    pub fn reset(&self) -> Result<(), CallError> {
        Ok(self.handle.call_done(&Request::ResetBarrier { id: self.handle.id })?)
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier").field("object", &self.handle).field("parties", &self.parties).finish()
    }
}
