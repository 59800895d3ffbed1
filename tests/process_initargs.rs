//! `ProcessPoolBuilder::initializer_with`: an initializer with arguments (Python's `initargs`),
//! through the public API. Every pool is dropped at the end of its test, so no worker outlives
//! it.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize};
use stealpool::{Executor, ProcessPoolBuilder};

/// What the initializer was given, in this worker process.
static SETTINGS: OnceLock<(String, u32)> = OnceLock::new();

fn store_settings(settings: (String, u32)) {
    SETTINGS.set(settings).expect("the initializer runs once per worker");
}
stealpool::register_fn!(store_settings);

fn read_settings(_: ()) -> (Option<(String, u32)>, u32) {
    (SETTINGS.get().cloned(), std::process::id())
}
stealpool::register_fn!(read_settings);

#[test]
fn every_worker_runs_the_initializer_with_the_arguments_before_its_first_job() {
    let p = ProcessPoolBuilder::new()
        .num_workers(2)
        .initializer_with(store_settings, ("db://primary".to_owned(), 7))
        .build()
        .unwrap();
    let futures: Vec<_> = (0..20).map(|_| p.apply_async(read_settings, ()).unwrap()).collect();
    for f in futures {
        let (settings, _pid) = f.result().unwrap();
        assert_eq!(settings, Some(("db://primary".to_owned(), 7)));
    }
}

#[test]
fn replacement_workers_get_the_arguments_too() {
    let p = ProcessPoolBuilder::new()
        .num_workers(1)
        .max_tasks_per_child(1)
        .initializer_with(store_settings, ("again".to_owned(), 1))
        .build()
        .unwrap();
    let mut pids = HashSet::new();
    for _ in 0..4 {
        let (settings, pid) = p.apply_async(read_settings, ()).unwrap().result().unwrap();
        assert_eq!(settings, Some(("again".to_owned(), 1)));
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 4, "each job ran in a fresh worker");
}

fn refuse_zero(n: u32) {
    assert_ne!(n, 0, "zero workers' worth of config");
}
stealpool::register_fn!(refuse_zero);

#[test]
fn an_initializer_that_panics_on_its_arguments_fails_the_build() {
    let err = ProcessPoolBuilder::new().num_workers(1).initializer_with(refuse_zero, 0).build().unwrap_err();
    assert!(err.is_initializer_failure(), "{err}");
    assert!(err.to_string().contains("zero workers' worth of config"), "{err}");
    assert!(ProcessPoolBuilder::new().num_workers(1).initializer_with(refuse_zero, 1).build().is_ok());
}

/// Serializes, but refuses to deserialize: the worker cannot read the arguments.
#[derive(Serialize)]
struct OneWay(u8);

impl<'de> Deserialize<'de> for OneWay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _ = u8::deserialize(d)?;
        Err(serde::de::Error::custom("OneWay refuses to be read"))
    }
}

fn take_one_way(_: OneWay) {}
stealpool::register_fn!(take_one_way);

#[test]
fn arguments_the_worker_cannot_read_fail_the_build() {
    let err = ProcessPoolBuilder::new().num_workers(1).initializer_with(take_one_way, OneWay(1)).build().unwrap_err();
    assert!(err.is_initializer_failure(), "{err}");
    // postcard reports a custom deserialization error without its text.
    let text = err.to_string();
    assert!(text.contains("take_one_way") && text.contains("Deserialization"), "{text}");
}

fn take_bytes(_: Vec<u8>) {}
stealpool::register_fn!(take_bytes);

#[test]
fn arguments_over_64_kib_are_refused_before_any_worker_starts() {
    let err =
        ProcessPoolBuilder::new().num_workers(1).initializer_with(take_bytes, vec![0u8; 64 << 10]).build().unwrap_err();
    assert!(!err.is_initializer_failure(), "refused by build, not by a worker: {err}");
    assert!(err.to_string().contains("more than the limit"), "{err}");
    // Just under the limit is fine.
    assert!(ProcessPoolBuilder::new().num_workers(1).initializer_with(take_bytes, vec![0u8; 60 << 10]).build().is_ok());
}

#[test]
fn an_unregistered_initializer_with_arguments_is_refused() {
    let err = ProcessPoolBuilder::new().initializer_with(|_: u8| (), 1).build().unwrap_err();
    assert!(err.to_string().contains("is not registered"), "{err}");
}
