//! `Future` behaviour through the thread pool: states, cancel, results, errors, callbacks,
//! async.

mod common;

use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use common::{Gate, HANG, gated, holding};
use parking_lot::Mutex;
use stealpool::{Future, JobError, ResultTimeoutError, ThreadPoolExecutor, TryResultError};

#[test]
fn states_go_pending_running_finished() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let blocker = holding(&pool, &gate, ());
    let queued = pool.submit(|| 5).unwrap();

    assert!(blocker.is_running() && !blocker.is_done() && !blocker.is_cancelled());
    assert!(!queued.is_running() && !queued.is_done(), "second job must wait for the only worker");

    gate.open();
    blocker.wait();
    assert!(blocker.is_done() && !blocker.is_running());
    let mut queued = queued;
    assert_eq!(queued.result_timeout(HANG), Ok(5));
    assert!(queued.is_done() && !queued.is_cancelled());
}

#[test]
fn cancel_succeeds_only_while_pending() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let blocker = holding(&pool, &gate, ());
    let ran = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&ran);
    let queued = pool.submit(move || *flag.lock() = true).unwrap();

    assert!(!blocker.cancel(), "a running job cannot be cancelled");
    assert!(queued.cancel());
    assert!(queued.cancel(), "cancelling twice still reports cancelled");
    assert!(queued.is_cancelled() && queued.is_done());

    gate.open();
    blocker.wait();
    assert!(!blocker.cancel(), "a finished job cannot be cancelled");
    assert!(!blocker.is_cancelled());
    pool.shutdown(true, false);
    assert!(!*ran.lock(), "a cancelled job must never run");
    assert_eq!(queued.result(), Err(JobError::Cancelled));
}

#[test]
fn result_timeout_leaves_the_job_running() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let mut f = gated(&pool, &gate, "late");
    assert_eq!(f.result_timeout(Duration::from_millis(20)), Err(ResultTimeoutError::Timeout));
    assert_eq!(f.result_deadline(Instant::now()), Err(ResultTimeoutError::Timeout));
    assert_eq!(f.try_result(), Err(TryResultError::NotReady));
    assert!(!f.is_done());
    gate.open();
    assert_eq!(f.result_timeout(HANG), Ok("late"));
}

#[test]
fn outcome_is_taken_once() {
    let pool = ThreadPoolExecutor::new(1);
    let mut f = pool.submit(|| vec![1, 2, 3]).unwrap();
    assert_eq!(f.result_timeout(HANG), Ok(vec![1, 2, 3]));
    assert_eq!(f.try_result(), Err(TryResultError::Failed(JobError::AlreadyTaken)));
    assert!(f.is_done());
}

#[test]
fn a_panic_becomes_an_error_and_the_worker_survives() {
    let pool = ThreadPoolExecutor::new(1);
    let worker_of = |f: Future<thread::ThreadId>| f.result().unwrap();
    let before = worker_of(pool.submit(|| thread::current().id()).unwrap());

    let bad = pool.submit(|| -> u8 { panic!("index {} out of range", 7) }).unwrap();
    bad.wait();
    assert_eq!(bad.error(), Some(JobError::Panicked { message: "index 7 out of range".into(), details: None }));
    assert_eq!(bad.result(), Err(JobError::Panicked { message: "index 7 out of range".into(), details: None }));

    let odd = pool.submit(|| std::panic::panic_any(42u32)).unwrap();
    assert_eq!(odd.result(), Err(JobError::Panicked { message: "<non-string panic payload>".into(), details: None }));

    let after = worker_of(pool.submit(|| thread::current().id()).unwrap());
    assert_eq!(before, after, "the single worker thread must survive the panics");
}

#[test]
fn callbacks_run_once_in_order_on_the_completing_thread() {
    let pool = ThreadPoolExecutor::builder().num_workers(1).name_prefix("cb").build().unwrap();
    let gate = Gate::new();
    let f = gated(&pool, &gate, 10);
    let log = Arc::new(Mutex::new(Vec::new()));
    for i in 0..5 {
        let log = Arc::clone(&log);
        f.add_done_callback(move |r| {
            let name = thread::current().name().map(str::to_owned);
            log.lock().push((i, *r.unwrap(), name));
        });
    }
    gate.open();
    let mut f = f;
    assert_eq!(f.result_timeout(HANG), Ok(10));
    let log = log.lock();
    assert_eq!(log.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(log.iter().all(|e| e.1 == 10 && e.2.as_deref() == Some("cb-0")));
}

#[test]
fn a_callback_added_when_done_runs_at_once_on_the_caller() {
    let pool = ThreadPoolExecutor::new(1);
    let f = pool.submit(|| 3).unwrap();
    f.wait();
    let seen = Arc::new(Mutex::new(None));
    let s = Arc::clone(&seen);
    f.add_done_callback(move |r| *s.lock() = Some((*r.unwrap(), thread::current().id())));
    assert_eq!(*seen.lock(), Some((3, thread::current().id())));
    // The late callback only borrowed the outcome: it is still there to take.
    assert_eq!(f.result(), Ok(3));
}

#[test]
fn a_panicking_callback_poisons_nothing() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let f = gated(&pool, &gate, 1);
    let calls = Arc::new(Mutex::new(0));
    let c = Arc::clone(&calls);
    f.add_done_callback(|_| panic!("callback bug"));
    f.add_done_callback(move |_| *c.lock() += 1);
    gate.open();
    f.wait();
    let c = Arc::clone(&calls);
    f.add_done_callback(|_| panic!("late callback bug"));
    f.add_done_callback(move |_| *c.lock() += 1);
    assert_eq!(*calls.lock(), 2);
    assert_eq!(f.result(), Ok(1));
    assert_eq!(pool.submit(|| 2).unwrap().result(), Ok(2), "the worker that ran the callback is fine");
}

#[test]
fn callbacks_see_cancellation() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let _blocker = holding(&pool, &gate, ());
    let queued = pool.submit(|| 1).unwrap();
    let (tx, rx) = mpsc::channel();
    queued.add_done_callback(move |r| tx.send(r.err().cloned()).unwrap());
    assert!(queued.cancel());
    assert_eq!(rx.recv_timeout(HANG).unwrap(), Some(JobError::Cancelled));
    gate.open();
}

#[test]
fn a_future_can_be_awaited() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let mut f = gated(&pool, &gate, "awaited");
    // First poll: not ready, the waker is registered.
    let mut cx = Context::from_waker(Waker::noop());
    assert!(std::pin::Pin::new(&mut f).poll(&mut cx).is_pending());
    let opener = thread::spawn(move || gate.open());
    assert_eq!(pollster::block_on(f), Ok("awaited"));
    opener.join().unwrap();

    let ready = pool.submit(|| 9).unwrap();
    ready.wait();
    assert_eq!(pollster::block_on(ready), Ok(9));
}

#[test]
fn ready_futures_and_errors_without_taking() {
    let f: Future<u8> = Future::ready(Err(JobError::Cancelled));
    assert!(f.is_done() && f.is_cancelled());
    assert_eq!(f.error(), Some(JobError::Cancelled));
    assert_eq!(f.result(), Err(JobError::Cancelled));
    let ok = Future::ready(Ok(1));
    assert_eq!(ok.error(), None);
    assert!(matches!(std::pin::pin!(ok).poll(&mut Context::from_waker(Waker::noop())), Poll::Ready(Ok(1))));
}

use std::future::Future as _;

#[test]
fn the_error_is_visible_as_soon_as_the_future_is_done() {
    // A done callback that blocks keeps the future in its "callbacks running" window; `is_done`
    // is already true there, so `error()` must already report the failure (`wait` relies on it).
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let start = Gate::new();
    let (entered_tx, entered_rx) = mpsc::channel();
    let held = gate.clone();
    let go = start.clone();
    let f = pool
        .submit(move || -> u32 {
            go.wait();
            panic!("late")
        })
        .unwrap();
    // Added while the job is held, so the callback runs on the worker, not here.
    f.add_done_callback(move |_| {
        entered_tx.send(()).unwrap();
        held.wait();
    });
    start.open();
    entered_rx.recv_timeout(HANG).expect("the callback runs");
    assert!(f.is_done());
    assert_eq!(f.error(), Some(JobError::Panicked { message: "late".into(), details: None }));
    gate.open();
    f.wait();
    assert_eq!(f.error(), Some(JobError::Panicked { message: "late".into(), details: None }));
}

/// A cancelled job is dropped at once, with what it captured: a consumer waiting for every
/// sender of a channel to go away is not kept waiting by a future that is still alive.
#[test]
fn cancel_drops_the_job_and_its_captures_at_once() {
    let pool = ThreadPoolExecutor::new(1);
    let (release, _blocker) = common::occupy_worker(&pool);
    let (tx, rx) = mpsc::channel::<u32>();
    let queued = pool.submit(move || tx.send(1).is_ok()).unwrap();
    assert!(queued.cancel());
    assert_eq!(rx.recv_timeout(HANG), Err(mpsc::RecvTimeoutError::Disconnected), "the captured sender is still alive");
    assert!(queued.is_cancelled(), "the future is still here");
    drop(release);
    assert_eq!(queued.result(), Err(JobError::Cancelled));
}

/// Drops that panic: a job's output dropped on the worker, a panic payload, the captures of a
/// cancelled job, and a waker that panics. All are user code: the pool carries on.
#[test]
fn panicking_drops_and_wakers_do_not_hurt_the_pool() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("bomb");
        }
    }
    let pool = ThreadPoolExecutor::new(1);
    let worker = pool.submit(|| thread::current().id()).unwrap().result().unwrap();

    // The output: the future goes first, so the worker drops the last reference to it.
    let gate = Gate::new();
    let g = gate.clone();
    drop(pool.submit(move || {
        g.wait();
        Bomb
    }));
    gate.open();

    // A payload whose drop panics.
    let f = pool.submit(|| std::panic::panic_any(Bomb)).unwrap();
    assert_eq!(f.result(), Err(JobError::Panicked { message: "<non-string panic payload>".into(), details: None }));

    // The captures of a cancelled job.
    let gate = Gate::new();
    let blocker = holding(&pool, &gate, ());
    let bomb = Bomb;
    let queued = pool.submit(move || drop(bomb)).unwrap();
    assert!(queued.cancel());
    gate.open();
    blocker.wait();

    // A waker that panics when the job completes on the worker.
    struct PanicWaker;
    impl std::task::Wake for PanicWaker {
        fn wake(self: Arc<Self>) {
            panic!("waker");
        }
    }
    let gate = Gate::new();
    let mut f = gated(&pool, &gate, 1);
    let waker = Waker::from(Arc::new(PanicWaker));
    assert!(std::pin::Pin::new(&mut f).poll(&mut Context::from_waker(&waker)).is_pending());
    gate.open();
    assert_eq!(f.result_timeout(HANG), Ok(1));

    let mut after = pool.submit(|| thread::current().id()).unwrap();
    assert_eq!(after.result_timeout(HANG), Ok(worker), "the single worker survives every drop");
}

/// `Duration::MAX` (and any timeout too large to add to now) means no deadline: nothing panics.
#[test]
fn endless_timeouts_mean_no_deadline() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let mut f = gated(&pool, &gate, 7);
    let opener = {
        let gate = gate.clone();
        thread::spawn(move || gate.open())
    };
    assert!(f.wait_timeout(Duration::MAX));
    assert_eq!(f.result_timeout(Duration::MAX), Ok(7));
    opener.join().unwrap();
    let mut g = pool.submit(|| 8).unwrap();
    assert_eq!(g.result_timeout(Duration::new(u64::MAX, 999_999_999)), Ok(8));
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut h = pool.submit(|| 9).unwrap();
    assert_eq!(h.result_deadline(far), Ok(9));
}
