//! `Future::pending` and its `Promise`: a future completed by hand.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::HANG;
use stealpool::{Future, JobError, ReturnWhen, ThreadPoolExecutor, as_completed, wait};

#[test]
fn set_result_wakes_a_blocked_waiter_and_runs_callbacks_once() {
    let (future, promise) = Future::pending();
    let (tx, rx) = mpsc::channel();
    future.add_done_callback(move |r| tx.send(r.copied().ok()).unwrap());
    let waiter = std::thread::spawn(move || {
        let mut future = future;
        future.result_timeout(HANG)
    });
    std::thread::sleep(Duration::from_millis(20));
    promise.set_result(7).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(7));
    assert_eq!(rx.recv().unwrap(), Some(7));
    assert!(rx.try_recv().is_err(), "the callback runs once");
}

#[test]
fn completing_twice_hands_the_value_back() {
    let (future, promise) = Future::pending();
    promise.set_result(String::from("first")).unwrap();
    let again = promise.set_result(String::from("second")).unwrap_err();
    assert_eq!(again.value(), "second");
    assert!(again.to_string().contains("already done"));
    let err = promise.set_error(JobError::Cancelled).unwrap_err();
    assert_eq!(err.into_inner(), JobError::Cancelled);
    assert!(promise.is_done());
    assert!(!promise.is_cancelled());
    assert_eq!(future.result(), Ok(String::from("first")));
}

#[test]
fn cancel_of_a_pending_promise_future_is_seen_by_the_promise() {
    let (future, promise) = Future::<u8>::pending();
    assert!(future.cancel());
    assert!(future.is_cancelled());
    assert!(promise.is_cancelled());
    assert!(!promise.set_running_or_notify_cancel());
    assert_eq!(promise.set_result(3).unwrap_err().into_inner(), 3);
    assert_eq!(future.result(), Err(JobError::Cancelled));
}

#[test]
fn a_running_promise_future_cannot_be_cancelled() {
    let (future, promise) = Future::pending();
    assert!(promise.set_running_or_notify_cancel());
    assert!(!promise.set_running_or_notify_cancel(), "only once");
    assert!(future.is_running());
    assert!(!future.cancel());
    promise.set_error(JobError::Panicked { message: "bad".into(), details: None }).unwrap();
    future.wait();
    assert_eq!(future.error(), Some(JobError::Panicked { message: "bad".into(), details: None }));
    assert_eq!(future.result(), Err::<u8, _>(JobError::Panicked { message: "bad".into(), details: None }));
}

#[test]
fn dropping_the_promise_unset_abandons_the_future() {
    let (future, promise) = Future::<u8>::pending();
    let waiter = std::thread::spawn(move || future.result());
    std::thread::sleep(Duration::from_millis(10));
    drop(promise);
    let err = waiter.join().unwrap().unwrap_err();
    assert_eq!(err, JobError::Abandoned);
    assert_eq!(err.to_string(), "the promise was dropped without setting a result");
    // Dropping a set promise changes nothing.
    let (future, promise) = Future::pending();
    promise.set_result(1).unwrap();
    drop(promise);
    assert_eq!(future.result(), Ok(1));
}

#[test]
fn promise_futures_work_with_wait_as_completed_and_await() {
    let (a, pa) = Future::pending();
    let (b, pb) = Future::pending();
    let futures = [a, b];
    pb.set_result(2).unwrap();
    let w = wait(&futures, ReturnWhen::FirstCompleted, Some(HANG));
    assert!(std::ptr::eq(w.done[0], &futures[1]));
    let mut it = as_completed(&futures, Some(Duration::from_millis(20)));
    assert!(std::ptr::eq(it.next().unwrap().unwrap(), &futures[1]));
    assert_eq!(it.next().unwrap().unwrap_err().unfinished(), 1);
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        pa.set_result(1).unwrap();
    });
    let [a, b] = futures;
    assert_eq!(pollster::block_on(a), Ok(1));
    assert_eq!(pollster::block_on(b), Ok(2));
    setter.join().unwrap();
}

#[test]
fn a_pool_job_may_wait_on_a_promise_future_set_from_outside() {
    let pool = ThreadPoolExecutor::new(1);
    let (future, promise) = Future::pending();
    let job = pool.submit(move || future.result()).unwrap();
    // The only worker blocks on the promise; other work still gets a thread.
    assert_eq!(pool.submit(|| 5).unwrap().result(), Ok(5));
    promise.set_result("set").unwrap();
    assert_eq!(job.result(), Ok(Ok("set")));
}
