//! Waiting on futures from inside the pool: no deadlock, and no unrelated job on the waiter's
//! stack (the trap of rayon issue 592).

mod common;

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Gate, HANG, holding};
use parking_lot::Mutex;
use stealpool::{Executor, ResultTimeoutError, ThreadPoolExecutor};

fn fib_seq(n: u64) -> u64 {
    if n < 2 { n } else { fib_seq(n - 1) + fib_seq(n - 2) }
}

fn fib(pool: &Arc<ThreadPoolExecutor>, n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let (p1, p2) = (Arc::clone(pool), Arc::clone(pool));
    let a = pool.submit(move || fib(&p1, n - 1)).unwrap();
    let b = pool.submit(move || fib(&p2, n - 2)).unwrap();
    a.result().unwrap() + b.result().unwrap()
}

#[test]
fn recursive_fork_join_on_one_worker() {
    let pool = Arc::new(ThreadPoolExecutor::new(1));
    let p = Arc::clone(&pool);
    let mut f = pool.submit(move || fib(&p, 20)).unwrap();
    assert_eq!(f.result_timeout(HANG), Ok(6765));
}

#[test]
fn recursive_fork_join_on_several_workers() {
    let pool = Arc::new(ThreadPoolExecutor::new(4));
    let p = Arc::clone(&pool);
    let mut f = pool.submit(move || fib(&p, 22)).unwrap();
    assert_eq!(f.result_timeout(HANG), Ok(fib_seq(22)));
}

/// A job holds a lock, submits a job that needs the lock and then the job it waits for.
/// Running "any queued job" while waiting (rayon's way) would pick the lock-taker first (the
/// deque is LIFO) and deadlock on the waiter's own stack. The awaited job must run inline.
#[test]
fn a_waiter_runs_only_the_job_it_waits_for() {
    let pool = Arc::new(ThreadPoolExecutor::new(1));
    let lock = Arc::new(Mutex::new(0u32));
    let (p, l) = (Arc::clone(&pool), Arc::clone(&lock));
    let mut outer = pool
        .submit(move || {
            let mut guard = l.lock();
            let awaited = p.submit(|| 7).unwrap();
            let l2 = Arc::clone(&l);
            let taker = p.submit(move || *l2.lock() += 1).unwrap();
            let v = awaited.result().unwrap();
            *guard += v;
            drop(guard);
            taker
        })
        .unwrap();
    let taker = outer.result_timeout(HANG).expect("the waiter deadlocked");
    assert_eq!(taker.result(), Ok(()));
    assert_eq!(*lock.lock(), 8);
}

/// The awaited job is already running elsewhere: the waiter sleeps, and the queued job that
/// the running one needs gets a spare thread. That queued job also takes the lock the waiter
/// holds, so running it on the waiter's thread would deadlock.
#[test]
fn a_blocked_waiter_is_compensated_by_a_spare_thread() {
    let pool = Arc::new(ThreadPoolExecutor::builder().num_workers(2).name_prefix("comp").build().unwrap());
    let lock = Arc::new(Mutex::new(Vec::new()));
    let release_x = Gate::new();

    // X occupies worker 1 until D opens its gate.
    let x = holding(&pool, &release_x, "x");

    // A occupies worker 2: takes the lock, then waits on X (running, so it cannot run inline).
    let (a_locked_tx, a_locked_rx) = mpsc::channel();
    let la = Arc::clone(&lock);
    let mut a = pool
        .submit(move || {
            let mut guard = la.lock();
            guard.push("a-locked");
            a_locked_tx.send(thread::current().id()).unwrap();
            let v = x.result().unwrap();
            guard.push(v);
            thread::current().id()
        })
        .unwrap();
    let a_thread = a_locked_rx.recv_timeout(HANG).unwrap();

    // D must run although both workers are taken: it releases X, then takes the lock.
    let ld = Arc::clone(&lock);
    let mut d = pool
        .submit(move || {
            release_x.open();
            ld.lock().push("d");
            (thread::current().id(), thread::current().name().map(str::to_owned))
        })
        .unwrap();

    let (d_thread, d_name) = d.result_timeout(HANG).expect("no thread ran the queued job");
    assert_eq!(a.result_timeout(HANG), Ok(a_thread));
    assert_ne!(d_thread, a_thread, "the waiter must not run unrelated jobs");
    assert!(d_name.as_deref().is_some_and(|n| n.starts_with("comp-spare-")), "{d_name:?}");
    assert_eq!(*lock.lock(), ["a-locked", "x", "d"]);
}

#[test]
fn waiting_with_wait_and_as_completed_inside_a_worker() {
    let pool = Arc::new(ThreadPoolExecutor::new(1));
    let p = Arc::clone(&pool);
    let mut f = pool
        .submit(move || {
            let fs: Vec<_> = (0..10u32).map(|i| p.submit(move || i).unwrap()).collect();
            // Nothing can run inline here, so the lone worker relies on a spare thread.
            let w = stealpool::wait(fs, stealpool::ReturnWhen::AllCompleted, Some(HANG));
            w.done.into_iter().map(|f| f.result().unwrap()).sum::<u32>()
        })
        .unwrap();
    assert_eq!(f.result_timeout(HANG), Ok(45));
}

#[test]
fn map_inside_a_worker() {
    let pool = Arc::new(ThreadPoolExecutor::new(1));
    let p = Arc::clone(&pool);
    let mut f = pool.submit(move || p.map(|x: u64| x * x, 0..100).unwrap().map(Result::unwrap).sum::<u64>()).unwrap();
    assert_eq!(f.result_timeout(HANG), Ok((0..100).map(|x| x * x).sum()));
}

#[test]
fn jobs_running_at_shutdown_may_still_fork() {
    let pool = Arc::new(ThreadPoolExecutor::new(2));
    let gate = Gate::new();
    let (p, g) = (Arc::clone(&pool), gate.clone());
    let f = pool
        .submit(move || {
            g.wait();
            fib(&p, 15)
        })
        .unwrap();
    pool.close();
    gate.open();
    assert_eq!(f.result(), Ok(610));
    pool.join().unwrap();
}

/// A timed wait inside a worker does not run the queued child inline (it could not return
/// before the child does): it blocks, compensated, and times out while the child waits.
#[test]
fn result_timeout_inside_a_worker_honours_its_timeout() {
    let pool = Arc::new(ThreadPoolExecutor::new(1));
    let p = Arc::clone(&pool);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let mut outer = pool
        .submit(move || {
            let mut child = p.submit(move || release_rx.recv().is_ok()).unwrap();
            let first = child.result_timeout(Duration::from_millis(10));
            (first, child.is_done(), child)
        })
        .unwrap();
    let (first, child_done, mut child) = outer.result_timeout(HANG).expect("the timed wait did not return");
    assert_eq!(first, Err(ResultTimeoutError::Timeout));
    assert!(!child_done, "the child cannot have finished: it waits for the test");
    release_tx.send(()).unwrap();
    assert_eq!(child.result_timeout(HANG), Ok(true));
}

#[test]
fn wait_timeout_inside_a_worker_honours_its_timeout() {
    let pool = Arc::new(ThreadPoolExecutor::new(1));
    let p = Arc::clone(&pool);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let mut outer = pool
        .submit(move || {
            let child = p.submit(move || release_rx.recv().is_ok()).unwrap();
            let done = child.wait_timeout(Duration::from_millis(10));
            (done, child)
        })
        .unwrap();
    let (done, child) = outer.result_timeout(HANG).expect("the timed wait did not return");
    assert!(!done);
    assert!(!child.is_done());
    release_tx.send(()).unwrap();
    assert!(child.wait_timeout(HANG));
    assert_eq!(child.result(), Ok(true));
}

fn fib_timed(pool: &Arc<ThreadPoolExecutor>, n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let (p1, p2) = (Arc::clone(pool), Arc::clone(pool));
    let mut a = pool.submit(move || fib_timed(&p1, n - 1)).unwrap();
    let mut b = pool.submit(move || fib_timed(&p2, n - 2)).unwrap();
    a.result_timeout(HANG).unwrap() + b.result_timeout(HANG).unwrap()
}

/// Timed waits block instead of running inline, so fork-join with them leans on spare threads;
/// it must still finish on a pool of one worker.
#[test]
fn fork_join_with_timed_waits_on_one_worker() {
    let pool = Arc::new(ThreadPoolExecutor::new(1));
    let p = Arc::clone(&pool);
    let mut f = pool.submit(move || fib_timed(&p, 10)).unwrap();
    assert_eq!(f.result_timeout(HANG), Ok(55));
}

/// `Duration::MAX` is no deadline: inside a worker it runs a queued child inline like
/// `result()` (the waiter's lock is taken by the other queued job, which must not run here).
#[test]
fn an_endless_timeout_inside_a_worker_runs_the_child_inline() {
    let pool = Arc::new(ThreadPoolExecutor::new(1));
    let p = Arc::clone(&pool);
    let mut outer = pool
        .submit(move || {
            let me = thread::current().id();
            let mut child = p.submit(move || thread::current().id() == me).unwrap();
            let inline = child.result_timeout(Duration::MAX).unwrap();
            let other = p.submit(|| 5).unwrap();
            (inline, other.wait_timeout(Duration::MAX), other)
        })
        .unwrap();
    let (inline, done, other) = outer.result_timeout(HANG).unwrap();
    assert!(inline, "the child ran on the waiting thread");
    assert!(done);
    assert_eq!(other.result(), Ok(5));
}
