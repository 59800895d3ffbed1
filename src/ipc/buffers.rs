//! Reusable frame buffers: a small, bounded stock of large buffers that frames are built in and
//! given back to when the last holder drops them, so a stream of large payloads does not pay a
//! fresh allocation per frame. glibc serves an allocation of 128 KiB or more with its own
//! `mmap` (unless the program tuned it), so every fresh 1 MiB frame faulted its pages in one by
//! one and was unmapped again after its reply; a reused buffer's pages stay mapped.
//!
//! This module must never keep more than [`KEEP`] buffers, nor one larger than [`MAX_KEPT`], nor
//! one smaller than [`MIN_KEPT`] (small allocations are cheap from the allocator's own bins): the
//! memory it pins is at most `KEEP * MAX_KEPT` per stock, whatever goes through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// At most this many buffers are kept for reuse.
pub(crate) const KEEP: usize = 4;

/// Buffers with more capacity than this are freed, not kept.
pub(crate) const MAX_KEPT: usize = 16 << 20;

/// Buffers with less capacity than this are freed, not kept (and a frame begins in a kept
/// buffer only after a frame this large).
pub(crate) const MIN_KEPT: usize = 64 << 10;

/// A bounded stock of buffers for large frames (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct BufferStock {
    free: Mutex<Vec<Vec<u8>>>,
    /// Whether the last frame given back (or built) was large: only then does a new frame
    /// begin in a kept buffer, so that a stream of small frames does not take (and pin, while
    /// they wait) the large ones.
    large: AtomicBool,
}

impl BufferStock {
    /// An empty stock.
    pub(crate) fn new() -> Arc<BufferStock> {
        Arc::new(BufferStock::default())
    }

    /// An empty buffer to build a frame in: a kept one if the last frames were large and one
    /// is there, else a fresh one with `capacity`.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        if self.large.load(Ordering::Relaxed)
            && let Some(buf) = self.free.lock().pop()
        {
            return buf;
        }
        Vec::with_capacity(capacity)
    }

    /// Gives `buf` back: kept (emptied) if it is within the bounds and there is room.
    pub(crate) fn give_back(&self, mut buf: Vec<u8>) {
        let large = buf.len() >= MIN_KEPT;
        if self.large.load(Ordering::Relaxed) != large {
            self.large.store(large, Ordering::Relaxed);
        }
        if !(MIN_KEPT..=MAX_KEPT).contains(&buf.capacity()) {
            return;
        }
        let mut free = self.free.lock();
        if free.len() < KEEP {
            buf.clear();
            free.push(buf);
        }
    }

    /// How many buffers are kept now (for tests).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.free.lock().len()
    }
}

/// A frame's bytes, given back to the stock it came from (if any) when dropped.
#[derive(Debug)]
pub(crate) struct Frame {
    bytes: Vec<u8>,
    home: Option<Arc<BufferStock>>,
}

impl Frame {
    /// A frame whose buffer goes back to `home` when it is dropped.
    pub(crate) fn returning(bytes: Vec<u8>, home: &Arc<BufferStock>) -> Frame {
        Frame { bytes, home: Some(Arc::clone(home)) }
    }
}

impl From<Vec<u8>> for Frame {
    /// A frame whose buffer is simply freed.
    fn from(bytes: Vec<u8>) -> Frame {
        Frame { bytes, home: None }
    }
}

impl PartialEq for Frame {
    /// Frames are equal when their bytes are.
    fn eq(&self, other: &Frame) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Frame {}

impl std::ops::Deref for Frame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.give_back(std::mem::take(&mut self.bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_are_reused_within_the_bounds() {
        let stock = BufferStock::new();
        // Before any large frame, a fresh buffer.
        let first = stock.take(10);
        assert!(first.capacity() < MIN_KEPT);
        drop(Frame::returning(first, &stock));
        assert_eq!(stock.kept(), 0, "small buffers are not kept");

        let frames: Vec<Frame> = (0..KEEP + 2).map(|_| Frame::returning(vec![1u8; 1 << 20], &stock)).collect();
        let addrs: Vec<usize> = frames.iter().map(|f| f.as_ptr() as usize).collect();
        drop(frames);
        assert_eq!(stock.kept(), KEEP, "at most KEEP are kept");
        let again = stock.take(10);
        assert!(again.is_empty() && again.capacity() >= 1 << 20);
        assert!(addrs.contains(&(again.as_ptr() as usize)), "a kept buffer is handed out again");

        drop(Frame::returning(Vec::with_capacity(MAX_KEPT + 1), &stock));
        assert_eq!(stock.kept(), KEEP - 1, "a buffer over the cap is freed");

        // After a small frame, new frames begin in fresh buffers again.
        drop(Frame::returning(vec![0u8; 100], &stock));
        assert!(stock.take(10).capacity() < MIN_KEPT);
        drop(Frame::from(vec![0u8; 1 << 20])); // no home: just freed
        assert_eq!(stock.kept(), KEEP - 1);
    }
}
