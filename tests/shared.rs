//! `Future::shared` and `SharedFuture`: many handles, one outcome.

mod common;

use std::time::Duration;

use common::{Gate, HANG, gated};
use stealpool::{Future, JobError, ReturnWhen, ThreadPoolExecutor, TryResultError, as_completed, wait};

#[test]
fn every_clone_sees_the_same_outcome_on_its_own_thread() {
    let pool = ThreadPoolExecutor::new(2);
    let gate = Gate::new();
    let shared = gated(&pool, &gate, String::from("v")).shared();
    assert_eq!(shared.try_result(), Err(TryResultError::NotReady));
    assert!(shared.result_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let s = shared.clone();
            std::thread::spawn(move || s.result())
        })
        .collect();
    gate.open();
    for r in readers {
        assert_eq!(r.join().unwrap(), Ok(String::from("v")));
    }
    assert_eq!(shared.try_result(), Ok(String::from("v")));
    assert_eq!(shared.result_timeout(HANG), Ok(String::from("v")));
    assert!(shared.is_done() && !shared.is_cancelled() && shared.error().is_none());
}

#[test]
fn cancelling_through_one_clone_is_seen_by_all() {
    let pool = ThreadPoolExecutor::new(1);
    let (release, blocker) = common::occupy_worker(&pool);
    let a = pool.submit(|| 1).unwrap().shared();
    let b = a.clone();
    assert!(b.cancel());
    assert!(a.is_cancelled());
    assert_eq!(a.result(), Err(JobError::Cancelled));
    assert_eq!(b.try_result(), Err(TryResultError::Failed(JobError::Cancelled)));
    release.send(()).unwrap();
    blocker.result().unwrap();
}

#[test]
fn shared_futures_work_with_wait_and_as_completed() {
    let pool = ThreadPoolExecutor::new(2);
    let gate = Gate::new();
    let shared = [pool.submit(|| 1).unwrap().shared(), gated(&pool, &gate, 2).shared()];
    shared[0].wait();
    let w = wait(&shared, ReturnWhen::FirstCompleted, Some(HANG));
    assert_eq!(w.done.len(), 1);
    assert_eq!(w.done[0].result(), Ok(1));
    let mut it = as_completed(shared.clone(), Some(Duration::from_millis(20)));
    assert_eq!(it.next().unwrap().unwrap().result(), Ok(1));
    assert_eq!(it.next().unwrap().unwrap_err().to_string(), "1 (of 2) futures unfinished");
    gate.open();
    let total: i32 = as_completed(shared.iter().cloned(), Some(HANG)).map(|f| f.unwrap().result().unwrap()).sum();
    assert_eq!(total, 3);
}

#[test]
fn each_clone_can_be_awaited() {
    let (future, promise) = Future::pending();
    let shared = future.shared();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let s = shared.clone();
            std::thread::spawn(move || pollster::block_on(s))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    promise.set_result(vec![9u8]).unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), Ok(vec![9]));
    }
    assert_eq!(pollster::block_on(shared), Ok(vec![9]));
}

#[derive(Debug, PartialEq)]
struct CloneBomb;

impl Clone for CloneBomb {
    fn clone(&self) -> Self {
        panic!("no copies")
    }
}

#[test]
fn a_panicking_clone_fails_the_shared_outcome_without_hanging() {
    let shared = Future::ready(Ok(CloneBomb)).shared();
    assert_eq!(shared.result(), Err(JobError::Panicked { message: "no copies".into(), details: None }));
}

#[test]
fn a_pool_job_may_wait_on_a_shared_future_of_its_own_pool() {
    let pool = std::sync::Arc::new(ThreadPoolExecutor::new(1));
    let inner = std::sync::Arc::clone(&pool);
    let mut outer = pool
        .submit(move || {
            let s = inner.submit(|| 21).unwrap().shared();
            let t = s.clone();
            s.result().unwrap() + t.result().unwrap()
        })
        .unwrap();
    assert_eq!(outer.result_timeout(HANG), Ok(42));
}
