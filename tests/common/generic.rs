//! The generic code that runs unchanged on every executor, and the registered code it runs:
//! `tests/process.rs` runs [`generic_code_runs`] on the thread pool and the process pool,
//! `tests/distributed.rs` on those two and the Redis executor. One copy, so that the three
//! backends are checked by the very same function.
//!
//! Included with `#[path = "common/generic.rs"] mod generic;` by test crates built with the
//! `process` feature (registering code needs it); not part of `common/mod.rs`, which every test
//! crate includes, also those built without the feature. It must never start anything itself:
//! the executors are the caller's.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use stealpool::job::Batch;
use stealpool::{Executor, Job, Submit};

pub fn square(x: u64) -> u64 {
    x * x
}
stealpool::register_fn!(square);

pub fn add(a: u64, b: u64) -> u64 {
    a + b
}
stealpool::register_fn!(add);

pub fn fail_on_three(x: u32) -> u32 {
    assert!(x != 3, "three is not allowed");
    x
}
stealpool::register_fn!(fail_on_three);

/// A registered job type: the square of its number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Square(pub u64);

impl Job for Square {
    type Output = u64;
    fn run(self) -> u64 {
        self.0 * self.0
    }
}
stealpool::register_job!(Square);

/// Four [`Square`] jobs through `Submit`, summed: 1 + 4 + 9 + 16.
pub fn total<E: Executor + Submit<Square>>(e: &E) -> u64 {
    let fs: Vec<_> = (1..=4).map(|i| e.submit(Square(i)).unwrap()).collect();
    fs.into_iter().map(|f| f.result().unwrap()).sum()
}

/// The generic test: jobs through `Submit` and a map of `f` (the registered [`square`], or any
/// function computing a square) through the `Executor` trait, on whatever executor `e` is.
pub fn generic_code_runs<E, F>(e: &E, f: F)
where
    E: Executor + Submit<Square> + Submit<Batch<F, u64>>,
    F: Fn(u64) -> u64 + Clone,
{
    assert_eq!(total(e), 30);
    let squares: Vec<u64> = e.map(f, 0..20u64).unwrap().map(Result::unwrap).collect();
    assert_eq!(squares, (0..20u64).map(|x| x * x).collect::<Vec<_>>());
}
