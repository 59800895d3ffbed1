//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The path of the example `name`, built beside this test binary (`target/<profile>/deps/<test>`
/// -> `target/<profile>/examples/<name>`); panics, saying how to build it, when it is not there
/// (`cargo test --test ...` builds no examples; `.ci/run` builds the ones tests run).
pub fn example_binary(name: &str, features: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let example = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(
        example.exists(),
        "{} is not built: `cargo build --features {features} --example {name}` (.ci/run does)",
        example.display()
    );
    example
}

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

/// Submits a job that waits for `gate`, then returns `value`.
pub fn gated<T: Send + 'static>(pool: &stealpool::ThreadPoolExecutor, gate: &Gate, value: T) -> stealpool::Future<T> {
    let gate = gate.clone();
    pool.submit(move || {
        gate.wait();
        value
    })
    .unwrap()
}

/// Like [`gated`], but returns only once the job is running, so that it holds a worker until
/// `gate` opens.
pub fn holding<T: Send + 'static>(pool: &stealpool::ThreadPoolExecutor, gate: &Gate, value: T) -> stealpool::Future<T> {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let gate = gate.clone();
    let f = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            gate.wait();
            value
        })
        .unwrap();
    started_rx.recv_timeout(HANG).expect("the holding job never started");
    f
}

/// Occupies one worker of `pool` until the returned sender is dropped (or sent to), and returns
/// once that worker is inside the job. Unlike a [`Gate`], it waits without a time limit: a gate
/// gives up after [`HANG`], which would free the worker just as a check that needs it held
/// gives up. A failing test frees the worker by dropping the sender.
pub fn occupy_worker(pool: &stealpool::ThreadPoolExecutor) -> (std::sync::mpsc::Sender<()>, stealpool::Future<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let blocker = pool
        .submit(move || {
            ready_tx.send(()).unwrap();
            let _ = held.recv();
        })
        .unwrap();
    ready_rx.recv_timeout(HANG).unwrap();
    (release, blocker)
}
