//! Child processes for the fork-server tests: one that never ends, and a guard that kills and
//! reaps a child when a test fails half-way.

use std::time::Duration;

use stealpool::process::Process;

/// A registered function that never returns.
pub fn sleeps_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
stealpool::register_fn!(sleeps_forever);

/// Kills and reaps a child when a test fails half-way.
pub struct Reap(pub Process);

impl Drop for Reap {
    fn drop(&mut self) {
        self.0.kill();
        self.0.join_timeout(Duration::from_secs(60));
    }
}
