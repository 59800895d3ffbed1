//! Models of the future's state machine (`core.rs`), checked with loom (see `crate::sync`).

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use super::*;

/// `start` and `cancel` race: exactly one wins, and the outcome says which.
#[test]
fn loom_cancel_and_start_exactly_one_wins() {
    loom::model(|| {
        let core = Arc::new(Core::<u32>::new());
        let starter = {
            let core = Arc::clone(&core);
            thread::spawn(move || {
                let started = core.try_start();
                if started {
                    core.complete(Ok(1));
                }
                started
            })
        };
        let cancelled = core.cancel();
        let started = starter.join().unwrap();
        assert!(started ^ cancelled, "started {started}, cancelled {cancelled}");
        assert!(core.wait_done(None));
        let expected = if started { Ok(1) } else { Err(JobError::Cancelled) };
        assert_eq!(core.try_take(), Some(expected));
    });
}

/// A promise's `try_finish` and a cancel race on a pending job: exactly one wins, and the
/// loser's value is handed back.
#[test]
fn loom_try_finish_and_cancel_exactly_one_wins() {
    loom::model(|| {
        let core = Arc::new(Core::<u32>::new());
        let setter = {
            let core = Arc::clone(&core);
            thread::spawn(move || core.try_finish(Ok(5)))
        };
        let cancelled = core.cancel();
        let set = setter.join().unwrap();
        assert!(set.is_ok() ^ cancelled, "set {set:?}, cancelled {cancelled}");
        if !cancelled {
            assert_eq!(core.try_take(), Some(Ok(5)));
        } else {
            assert_eq!(set, Err(Ok(5)));
            assert_eq!(core.try_take(), Some(Err(JobError::Cancelled)));
        }
    });
}

/// A callback added while the job completes runs exactly once, and sees the value.
#[test]
fn loom_complete_and_add_callback_runs_it_once() {
    loom::model(|| {
        let core = Arc::new(Core::<u32>::new());
        assert!(core.try_start());
        let calls = Arc::new(AtomicUsize::new(0));
        let adder = {
            let (core, calls) = (Arc::clone(&core), Arc::clone(&calls));
            thread::spawn(move || {
                core.add_callback(Box::new(move |r| {
                    assert_eq!(r.ok(), Some(&7));
                    calls.fetch_add(1, Ordering::SeqCst);
                }))
            })
        };
        core.complete(Ok(7));
        adder.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(core.try_take(), Some(Ok(7)));
    });
}

/// A waiter that blocks while the job completes is woken (else loom reports a deadlock),
/// and so is one that blocks while the job is cancelled.
#[test]
fn loom_complete_or_cancel_wakes_the_waiter() {
    for cancel in [false, true] {
        loom::model(move || {
            let core = Arc::new(Core::<u32>::new());
            if !cancel {
                assert!(core.try_start());
            }
            let waiter = {
                let core = Arc::clone(&core);
                thread::spawn(move || core.wait_done(None))
            };
            if cancel {
                assert!(core.cancel());
            } else {
                core.complete(Ok(3));
            }
            assert!(waiter.join().unwrap());
            assert!(core.is_done());
        });
    }
}

/// A cancel whose discard runs while another thread adds a callback and a third waits:
/// the callback runs once, with `Cancelled`, and the discard runs once, before it.
#[test]
fn loom_cancel_discard_callback_and_wait() {
    loom::model(|| {
        let core = Arc::new(Core::<u32>::new());
        let log = Arc::new(AtomicUsize::new(0));
        let adder = {
            let (core, log) = (Arc::clone(&core), Arc::clone(&log));
            thread::spawn(move || {
                core.add_callback(Box::new(move |r| {
                    assert_eq!(r.err(), Some(&JobError::Cancelled));
                    // The discard (1) came first; the callback adds 10, once.
                    assert_eq!(log.fetch_add(10, Ordering::SeqCst) % 10, 1);
                }))
            })
        };
        let discard_log = Arc::clone(&log);
        assert!(core.cancel_and(move || {
            discard_log.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(core.wait_done(None));
        adder.join().unwrap();
        assert_eq!(log.load(Ordering::SeqCst), 11);
    });
}
