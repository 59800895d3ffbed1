//! The *slot*: a few bytes of memory each worker shares with the pool, saying which task it is
//! running and since when. Supervision uses it to kill exactly the task it means to.
//!
//! Without it the pool judges a worker by the replies it has read, and those lag: a task can
//! finish in time, its reply wait in the socket, the next task start, and a kill meant for the
//! first land on the second. With it, a time limit or a forced cancel is decided by one
//! compare-and-swap on the slot's word:
//!
//! - The worker stores the task's start (`CLOCK_MONOTONIC`, ns) and then its id before running
//!   it, and afterwards swaps the id for `id | ENDED`; only if that swap succeeds does it send
//!   the reply and go on.
//! - The pool condemns task `id` by swapping `id` for `id | CONDEMNED`. If that succeeds, the
//!   worker is still inside that task and will never reply to it or start another: the kill
//!   that follows hits exactly that task (a worker that finishes it first sees the mark and
//!   exits). If it fails, the task has ended (its reply is on the way) or not begun, and nobody
//!   is killed.
//!
//! The word also tells, after a worker died, whether it had begun the first task it had not
//! answered (the word names it) or not (the word names an answered task as ended, or is 0):
//! only a task that began fails with the worker; one that did not goes back to the queue.
//!
//! The memory is a sealed memfd (it cannot shrink, so the pool never faults on it), mapped by
//! both sides; the pool reads it only with atomic operations and trusts nothing in it beyond
//! the one swap: a worker that writes nonsense there only fails to be judged exactly, and the
//! pool's own clock still bounds how long any task may run, and a worker that claims an end it
//! never replies to is killed as faulty (see `pool/supervisor/limits.rs`).
//!
//! Beyond the two words the worker writes, the slot carries hints from the pool to the worker
//! (task messages sent, reply messages read, whether replies may be held) and, from the worker,
//! a copy of the replies it holds to send together, which the pool reads only once the worker
//! is gone and checks as strictly as a reply from the socket.
//!
//! This module must never read the shared memory other than through atomics.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use nix::libc;

/// The bit that marks a task id as condemned. Task ids stay below both flags (they count up
/// from 1).
pub(crate) const CONDEMNED: u64 = 1 << 63;

/// The bit that marks a task id as ended (its reply is being sent).
pub(crate) const ENDED: u64 = 1 << 62;

/// The words, then (from [`HELD_AT`]) the worker's held replies.
const LEN: usize = HELD_AT + crate::process::protocol::HELD_BYTES;

/// Where the copy of the worker's held replies begins.
const HELD_AT: usize = 4096;

/// One worker's slot, mapped in this process.
pub(crate) struct Slot {
    /// `AtomicU64`s at the start of a `LEN`-byte shared mapping, by index: written by the
    /// worker, [`WORD`] and [`SINCE`]; written by the pool, [`FRAMES_SENT`], [`REPLIES_READ`]
    /// and [`HOLD_ALLOWED`] (hints for the worker, which the pool never reads back).
    base: NonNull<AtomicU64>,
}

/// The task the worker is in, with its flags.
const WORD: usize = 0;
/// When that task began.
const SINCE: usize = 1;
/// How many task messages the pool's writer has finished sending (after the first).
const FRAMES_SENT: usize = 2;
/// How many reply messages the pool's reply reader has read (after `Ready`).
const REPLIES_READ: usize = 3;
/// Non-zero while the pool lets the worker hold replies to send them together.
const HOLD_ALLOWED: usize = 4;
/// How many bytes of held replies (a `Batch` message not yet sent) the worker keeps a copy of
/// from [`HELD_AT`] on, so that the pool can deliver them if the worker dies (0: none).
const HELD_LEN: usize = 5;

// SAFETY: the slot is only accessed through atomics, which are sound from any thread (and any
// process) at once.
unsafe impl Send for Slot {}
// SAFETY: as above.
unsafe impl Sync for Slot {}

impl Slot {
    /// A new slot (the pool's side), and the memfd to hand to its worker. The memfd is sealed
    /// against shrinking, growing and further sealing before anyone else sees it.
    pub(crate) fn create() -> io::Result<(Slot, OwnedFd)> {
        // SAFETY: the name is a NUL-terminated string; the flags are valid.
        let fd = unsafe { libc::memfd_create(c"stealpool-slot".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create just returned this descriptor to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate and fcntl on our own descriptor.
        let ok = unsafe {
            libc::ftruncate(fd.as_raw_fd(), LEN as libc::off_t) == 0
                && libc::fcntl(
                    fd.as_raw_fd(),
                    libc::F_ADD_SEALS,
                    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
                ) == 0
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
        Ok((Slot::map(&fd)?, fd))
    }

    /// Maps the slot the pool handed over (the worker's side).
    pub(crate) fn map(fd: &OwnedFd) -> io::Result<Slot> {
        // SAFETY: a fresh shared mapping of `LEN` bytes of `fd`, which is at least that long
        // (and, on the pool's side, sealed so); the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast::<AtomicU64>())
            .map(|base| Slot { base })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }

    fn at(&self, index: usize) -> &AtomicU64 {
        const { assert!(HELD_LEN * 8 + 8 <= HELD_AT) };
        debug_assert!(index <= HELD_LEN);
        // SAFETY: the mapping is page-aligned, `LEN` bytes long and lives as long as `self`;
        // `index` is one of the constants above, all within it (checked at compile time); an
        // AtomicU64 may alias memory another process writes concurrently.
        unsafe { &*self.base.as_ptr().add(index.min(HELD_LEN)) }
    }

    fn word(&self) -> &AtomicU64 {
        self.at(WORD)
    }

    fn since(&self) -> &AtomicU64 {
        self.at(SINCE)
    }

    /// In the pool's writer: `count` task messages have been sent (each one whole in the
    /// socket). The worker reads the socket without waiting only while it has read fewer.
    pub(crate) fn set_frames_sent(&self, count: u64) {
        self.at(FRAMES_SENT).store(count, Ordering::Release);
    }

    /// In the worker: how many task messages the pool says it has sent. A hint.
    pub(crate) fn frames_sent(&self) -> u64 {
        self.at(FRAMES_SENT).load(Ordering::Acquire)
    }

    /// In the pool's reply reader: `count` reply messages have been read.
    pub(crate) fn set_replies_read(&self, count: u64) {
        self.at(REPLIES_READ).store(count, Ordering::Release);
    }

    /// In the worker: how many reply messages the pool says it has read. A hint.
    pub(crate) fn replies_read(&self) -> u64 {
        self.at(REPLIES_READ).load(Ordering::Acquire)
    }

    /// In the pool: whether the worker may hold replies to send several together (only while
    /// no task of the pool has a time limit; see `PROTOCOL.md`).
    pub(crate) fn allow_holding(&self, allowed: bool) {
        self.at(HOLD_ALLOWED).store(u64::from(allowed), Ordering::SeqCst);
    }

    /// The bytes of the held-replies copy, as atomics.
    fn held_bytes(&self) -> &[AtomicU8] {
        // SAFETY: `HELD_AT..LEN` lies within the mapping, which lives as long as `self`; an
        // AtomicU8 has the layout of a byte and may alias memory another process writes.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().cast::<AtomicU8>().add(HELD_AT), LEN - HELD_AT) }
    }

    /// In the worker: the held replies are now `held` (a `Batch` message), of which the first
    /// `unchanged` bytes are already copied; `held` empty: none (sent).
    pub(crate) fn keep_held(&self, held: &[u8], unchanged: usize) {
        let room = self.held_bytes();
        if held.len() > room.len() {
            self.at(HELD_LEN).store(0, Ordering::Release);
            return;
        }
        for (cell, &b) in room[unchanged.min(held.len())..].iter().zip(&held[unchanged.min(held.len())..]) {
            cell.store(b, Ordering::Relaxed);
        }
        self.at(HELD_LEN).store(held.len() as u64, Ordering::Release);
    }

    /// In the pool, once the worker is gone: the copy of the replies it held (untrusted bytes,
    /// at most the region's size).
    pub(crate) fn held_replies(&self) -> Vec<u8> {
        let room = self.held_bytes();
        let len = usize::try_from(self.at(HELD_LEN).load(Ordering::Acquire)).unwrap_or(usize::MAX).min(room.len());
        room[..len].iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// In the worker: whether it may hold replies.
    pub(crate) fn holding_allowed(&self) -> bool {
        self.at(HOLD_ALLOWED).load(Ordering::SeqCst) != 0
    }

    /// In the worker: task `id` starts; `since` is now on [`now_ns`]'s clock.
    pub(crate) fn begin(&self, id: u64, since: u64) {
        self.since().store(since, Ordering::Relaxed);
        self.word().store(id, Ordering::Release);
    }

    /// In the worker: task `id` ended. `false` if the pool condemned it meanwhile: the worker
    /// must then neither reply nor start anything else.
    pub(crate) fn end(&self, id: u64) -> bool {
        self.word().compare_exchange(id, id | ENDED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// In the pool: the task the worker says it runs (0: none) and when it started it (ns on
    /// [`now_ns`]'s clock). Untrusted.
    pub(crate) fn running(&self) -> (u64, u64) {
        let word = self.word().load(Ordering::Acquire);
        (word, self.since().load(Ordering::Relaxed))
    }

    /// In the pool: condemns task `id` if the worker is inside it right now.
    pub(crate) fn condemn(&self, id: u64) -> bool {
        id & (CONDEMNED | ENDED) == 0
            && self.word().compare_exchange(id, id | CONDEMNED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: `base` is the start of our `LEN`-byte mapping, unmapped only here.
        unsafe { libc::munmap(self.base.as_ptr().cast(), LEN) };
    }
}

/// `CLOCK_MONOTONIC` in ns: the same clock in every process of the machine.
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is valid for writes; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condemned_task_cannot_end_and_an_ended_one_cannot_be_condemned() {
        let (pool, fd) = Slot::create().unwrap();
        let worker = Slot::map(&fd).unwrap();
        assert!(!pool.condemn(5), "nothing runs yet");
        worker.begin(5, now_ns());
        assert_eq!(pool.running().0, 5);
        assert!(pool.running().1 <= now_ns());
        assert!(pool.condemn(5));
        assert_eq!(pool.running().0, 5 | CONDEMNED);
        assert!(!worker.end(5), "the worker sees it was condemned");
        worker.begin(6, now_ns());
        assert!(worker.end(6));
        assert_eq!(pool.running().0, 6 | ENDED);
        assert!(!pool.condemn(6), "ended before the decision: not killed");
        // Sealed: the worker cannot shrink it under the pool.
        // SAFETY: ftruncate on our own descriptor.
        assert_ne!(unsafe { libc::ftruncate(fd.as_raw_fd(), 0) }, 0);
    }
}
