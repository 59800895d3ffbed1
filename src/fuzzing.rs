//! What the protocol fuzz tests share (test builds only): a seeded random source and the
//! environment knobs for longer local runs.
//!
//! This module must stay a leaf: it depends on nothing else in the crate.

// The process pool's and the manager's fuzz tests each use part of it.
#![cfg_attr(not(all(feature = "process", feature = "manager")), allow(dead_code))]

/// xorshift64*: tiny, deterministic (a fixed seed gives a fixed sequence), good enough to pick
/// mutations. Not for anything that needs unpredictability.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    #[cfg(feature = "manager")]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index below `len` (0 when `len` is 0).
    #[cfg(feature = "process")]
    pub(crate) fn index(&mut self, len: usize) -> usize {
        (self.next() % len.max(1) as u64) as usize
    }

    /// `n` random bytes.
    #[cfg(feature = "manager")]
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Fewer than `max` random bytes.
    #[cfg(feature = "manager")]
    pub(crate) fn some_bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max) as usize;
        self.bytes(n)
    }
}

/// The number in environment variable `name`, or `default`.
pub(crate) fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
