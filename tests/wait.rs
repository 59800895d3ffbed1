//! `wait` and `as_completed`.

mod common;

use std::time::Duration;

use common::{Gate, HANG, gated};
use stealpool::{ReturnWhen, ThreadPoolExecutor, as_completed, wait};

#[test]
fn first_completed_returns_with_the_finished_one() {
    let pool = ThreadPoolExecutor::new(2);
    let gate = Gate::new();
    let slow = gated(&pool, &gate, 1);
    let fast = pool.submit(|| 2).unwrap();
    let w = wait(vec![slow, fast], ReturnWhen::FirstCompleted, Some(HANG));
    assert_eq!(w.done.len(), 1);
    assert_eq!(w.not_done.len(), 1);
    assert!(!w.not_done[0].is_done());
    gate.open();
    let mut done = w.done;
    assert_eq!(done.pop().unwrap().result(), Ok(2));
}

#[test]
fn first_exception_returns_on_a_failure_and_ignores_cancellation() {
    let pool = ThreadPoolExecutor::new(3);
    let gate = Gate::new();
    let slow = gated(&pool, &gate, 1);
    let cancelled = stealpool::Future::ready(Err(stealpool::JobError::Cancelled));
    let failing = pool.submit(|| -> u32 { panic!("boom") }).unwrap();
    let w = wait(vec![cancelled, slow, failing], ReturnWhen::FirstException, Some(HANG));
    assert_eq!(w.done.len(), 2, "the cancelled one and the failed one");
    assert_eq!(w.not_done.len(), 1);
    assert!(w.done.iter().any(|f| f.error().is_some_and(|e| e.is_panic())));
    gate.open();
}

#[test]
fn first_exception_without_failures_waits_for_all() {
    let pool = ThreadPoolExecutor::new(2);
    let futures: Vec<_> = (0..6u32).map(|i| pool.submit(move || i).unwrap()).collect();
    let w = wait(futures, ReturnWhen::FirstException, Some(HANG));
    assert_eq!(w.done.len(), 6);
    assert!(w.not_done.is_empty());
}

#[test]
fn a_timeout_is_not_an_error() {
    let pool = ThreadPoolExecutor::new(2);
    let gate = Gate::new();
    let blocked = gated(&pool, &gate, 1);
    let quick = pool.submit(|| 2).unwrap();
    quick.wait();
    let w = wait(vec![quick, blocked], ReturnWhen::AllCompleted, Some(Duration::from_millis(30)));
    assert_eq!(w.done.len(), 1);
    assert_eq!(w.not_done.len(), 1);
    gate.open();
    let mut rest = w.not_done;
    assert_eq!(rest.pop().unwrap().result(), Ok(1), "the timed-out wait left the job running");
}

#[test]
fn cancelled_counts_as_done() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let blocker = gated(&pool, &gate, 0);
    let queued = pool.submit(|| 1).unwrap();
    assert!(queued.cancel());
    let w = wait(vec![queued], ReturnWhen::AllCompleted, None);
    assert_eq!(w.done.len(), 1);
    gate.open();
    assert_eq!(blocker.result(), Ok(0));
}

#[test]
fn as_completed_yields_finished_first_then_in_completion_order() {
    let pool = ThreadPoolExecutor::new(3);
    let (gate_a, gate_c) = (Gate::new(), Gate::new());
    let a = gated(&pool, &gate_a, 1);
    let b = pool.submit(|| 2).unwrap();
    b.wait();
    let c = gated(&pool, &gate_c, 3);

    let mut it = as_completed(vec![a, b, c], Some(HANG));
    assert_eq!(it.next().unwrap().unwrap().result(), Ok(2), "the already finished one comes first");
    gate_c.open();
    assert_eq!(it.next().unwrap().unwrap().result(), Ok(3));
    gate_a.open();
    assert_eq!(it.next().unwrap().unwrap().result(), Ok(1));
    assert!(it.next().is_none(), "each future is yielded once");
}

#[test]
fn as_completed_times_out_once_then_ends() {
    let pool = ThreadPoolExecutor::new(2);
    let gate = Gate::new();
    let blocked = gated(&pool, &gate, 1);
    let quick = pool.submit(|| 2).unwrap();
    let mut it = as_completed(vec![blocked, quick], Some(Duration::from_millis(50)));
    assert_eq!(it.next().unwrap().unwrap().result(), Ok(2));
    assert!(it.next().unwrap().is_err());
    assert!(it.next().is_none());
    gate.open();
}

#[test]
fn wait_and_as_completed_on_many_futures() {
    let pool = ThreadPoolExecutor::new(4);
    let futures: Vec<_> = (0..2000u64).map(|i| pool.submit(move || i).unwrap()).collect();
    let total: u64 = as_completed(futures, Some(HANG)).map(|f| f.unwrap().result().unwrap()).sum();
    assert_eq!(total, 1999 * 2000 / 2);
}

#[test]
fn endless_timeouts_mean_no_deadline() {
    let pool = ThreadPoolExecutor::new(2);
    let gate = Gate::new();
    let futures: Vec<_> = (0..3).map(|i| gated(&pool, &gate, i)).collect();
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || gate.open())
    };
    let w = wait(futures, ReturnWhen::AllCompleted, Some(Duration::MAX));
    assert_eq!(w.done.len(), 3);
    opener.join().unwrap();
    let futures: Vec<_> = (0..3).map(|i| pool.submit(move || i).unwrap()).collect();
    let total: i32 = as_completed(futures, Some(Duration::MAX)).map(|f| f.unwrap().result().unwrap()).sum();
    assert_eq!(total, 3);
}

#[test]
fn wait_on_borrowed_futures_keeps_them_with_the_caller() {
    let pool = ThreadPoolExecutor::new(2);
    let gate = Gate::new();
    let futures = vec![pool.submit(|| 1).unwrap(), gated(&pool, &gate, 2)];
    futures[0].wait();
    let w = wait(&futures, ReturnWhen::FirstCompleted, Some(HANG));
    assert_eq!(w.done.len(), 1);
    assert!(std::ptr::eq(w.done[0], &futures[0]), "the halves hold the borrows given");
    assert!(std::ptr::eq(w.not_done[0], &futures[1]));
    gate.open();
    let w = wait(futures.iter(), ReturnWhen::AllCompleted, Some(HANG));
    assert_eq!(w.done.len(), 2);
    let values: Vec<_> = futures.into_iter().map(|f| f.result().unwrap()).collect();
    assert_eq!(values, [1, 2]);
}

#[test]
fn as_completed_timeout_leaves_the_borrowed_futures_to_wait_on_or_cancel() {
    let pool = ThreadPoolExecutor::new(1);
    let (release, blocker) = common::occupy_worker(&pool);
    // Queued behind the blocker: unfinished when the time runs out.
    let futures: Vec<_> = (0..3).map(|i| pool.submit(move || i).unwrap()).collect();
    let mut all = vec![stealpool::Future::ready(Ok(10))];
    all.extend(futures);
    let mut it = as_completed(&all, Some(Duration::from_millis(30)));
    assert_eq!(it.next().unwrap().unwrap().error(), None);
    let err = it.next().unwrap().unwrap_err();
    assert_eq!((err.unfinished(), err.total()), (3, 4));
    assert_eq!(err.to_string(), "3 (of 4) futures unfinished");
    assert!(err.waited() >= Duration::from_millis(30));
    assert!(it.next().is_none());
    // The caller still holds all four: cancel one, wait on the others.
    assert!(all[1].cancel());
    release.send(()).unwrap();
    blocker.result().unwrap();
    let done: Vec<_> = as_completed(&all[2..], Some(HANG)).map(|f| f.unwrap().is_done()).collect();
    assert_eq!(done, [true, true]);
    let outcomes: Vec<_> = all.into_iter().map(|f| f.result()).collect();
    assert_eq!(outcomes, [Ok(10), Err(stealpool::JobError::Cancelled), Ok(1), Ok(2)]);
}
