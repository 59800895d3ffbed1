//! Models of a job cell (`job_cell.rs`), checked with loom (see `crate::sync`): the races
//! between completion, cancel, a timed wait and callback registration, and the two references
//! whose last release frees the cell.

use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use loom::thread;

use super::*;

/// Counts its drops: the job's captures, or its output.
struct Counted(StdArc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> StdArc<AtomicUsize> {
    StdArc::new(AtomicUsize::new(0))
}

/// A worker runs the job while its future cancels it: exactly one of them wins, and the
/// closure (with what it captured) is dropped exactly once, by the winner, whether it ran.
#[test]
fn loom_execute_and_cancel_drop_the_job_once() {
    loom::model(|| {
        let (drops, ran) = (counter(), counter());
        let (captured, r) = (Counted(StdArc::clone(&drops)), StdArc::clone(&ran));
        let job = move || {
            let _keep = &captured;
            r.fetch_add(1, Ordering::SeqCst);
        };
        let (queued, future, _) = JobCell::new(job, 0);
        let worker = thread::spawn(move || run_job(queued));
        let cancelled = future.cancel();
        worker.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), usize::from(!cancelled));
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the job must be gone once it ended");
        assert!(future.is_done());
        assert_eq!(future.is_cancelled(), cancelled);
    });
}

/// A timed wait (which, under loom, times out at once or finds the job done) races with the
/// completion, and then the future is dropped, possibly before the worker lets go of the cell:
/// the output is dropped exactly once, whoever releases last, and a waiter that parked is
/// woken or gone before the cell is freed.
#[test]
fn loom_complete_and_timed_wait_then_drop_free_once() {
    loom::model(|| {
        let drops = counter();
        let d = StdArc::clone(&drops);
        let (queued, mut future, _) = JobCell::new(move || Counted(d), 0);
        let worker = thread::spawn(move || run_job(queued));
        let done = future.wait_timeout(Duration::from_secs(60));
        if done {
            assert!(future.try_result().is_ok());
            assert_eq!(drops.load(Ordering::SeqCst), 1, "taken and dropped here");
        }
        drop(future);
        worker.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// An untimed wait parks until the worker completes the job (else loom reports a deadlock),
/// while another thread adds a callback: it runs exactly once, with the value, and the
/// result is still there for the waiter afterwards.
#[test]
fn loom_complete_wait_and_add_callback() {
    loom::model(|| {
        let calls = counter();
        let (queued, mut future, _) = JobCell::new(|| 7u32, 0);
        // SAFETY: the adder is joined before `future` is touched mutably or dropped, so the
        // borrow outlives its every use.
        let future_ref: &'static Future<u32> = unsafe { &*(&future as *const Future<u32>) };
        let c = StdArc::clone(&calls);
        let adder = thread::spawn(move || {
            future_ref.add_done_callback(move |r| {
                assert_eq!(r.ok(), Some(&7));
                c.fetch_add(1, Ordering::SeqCst);
            })
        });
        let worker = thread::spawn(move || run_job(queued));
        future_ref.wait_timeout(Duration::MAX);
        adder.join().unwrap();
        worker.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(future.try_result(), Ok(7));
    });
}

/// The queue cancels the job (`terminate`) while its future adds a callback and then drops:
/// the callback sees `Cancelled` exactly once and the job's captures go exactly once.
#[test]
fn loom_queue_cancel_callback_and_drop() {
    loom::model(|| {
        let (drops, calls) = (counter(), counter());
        let captured = Counted(StdArc::clone(&drops));
        let (queued, future, _) = JobCell::new(
            move || {
                let _keep = &captured;
            },
            0,
        );
        let canceller = thread::spawn(move || cancel_job(queued));
        let c = StdArc::clone(&calls);
        future.add_done_callback(move |r| {
            assert_eq!(r.err(), Some(&crate::JobError::Cancelled));
            c.fetch_add(1, Ordering::SeqCst);
        });
        drop(future);
        canceller.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// The worker runs the job while its future cancels it, another thread adds a callback and
/// the future waits with a timeout: the callback runs exactly once, with the outcome of
/// whichever of run and cancel won.
#[test]
fn loom_run_cancel_callback_and_timed_wait() {
    loom::model(|| {
        let calls = counter();
        let (queued, future, _) = JobCell::new(|| 5u32, 0);
        // SAFETY: the adder is joined before `future` is dropped.
        let future_ref: &'static Future<u32> = unsafe { &*(&future as *const Future<u32>) };
        let c = StdArc::clone(&calls);
        let adder = thread::spawn(move || {
            future_ref.add_done_callback(move |r| {
                assert!(matches!(r, Ok(&5) | Err(&crate::JobError::Cancelled)), "{r:?}");
                c.fetch_add(1, Ordering::SeqCst);
            })
        });
        let worker = thread::spawn(move || run_job(queued));
        let cancelled = future.cancel();
        let done = future.wait_timeout(Duration::from_secs(60));
        adder.join().unwrap();
        worker.join().unwrap();
        assert!(future.is_done());
        assert!(!done || future.is_done());
        assert_eq!(future.is_cancelled(), cancelled);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

/// The future is dropped (its outcome never taken) while the worker runs the job: whichever
/// of the two releases comes last frees the cell, once, and drops the output, once. The
/// handle's release may see the queue's reference already gone and free the cell after a
/// plain `Acquire` load (no read-modify-write): the drop count shows that it never frees a
/// cell the worker still uses, and never misses one.
#[test]
fn loom_drop_future_while_running_frees_once() {
    loom::model(|| {
        let drops = counter();
        let d = StdArc::clone(&drops);
        let (queued, future, _) = JobCell::new(move || Counted(d), 0);
        let worker = thread::spawn(move || run_job(queued));
        drop(future);
        worker.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}
