//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How long a test waits for something that must happen before calling it a hang.
pub const HANG: Duration = Duration::from_secs(30);

/// A one-way gate: jobs wait on it until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn new() -> Self {
        Gate::default()
    }

    pub fn open(&self) {
        *self.0.0.lock() = true;
        self.0.1.notify_all();
    }

    /// Blocks until opened; panics (failing the job) if that takes longer than `HANG`.
    pub fn wait(&self) {
        let mut open = self.0.0.lock();
        while !*open {
            assert!(!self.0.1.wait_for(&mut open, HANG).timed_out(), "gate never opened");
        }
    }

    pub fn is_open(&self) -> bool {
        *self.0.0.lock()
    }
}
