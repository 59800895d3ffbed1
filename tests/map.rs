//! `map`, `imap`, `imap_unordered`, `apply_async` on the thread pool.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{Gate, HANG};
use stealpool::{Executor, JobError, MapErrorKind, MapOptions, ShutdownError, ThreadPoolExecutor};

fn spin(n: u64) -> u64 {
    (0..n).fold(n, |acc, x| acc.wrapping_mul(6364136223846793005).wrapping_add(x))
}

#[test]
fn results_come_in_input_order() {
    let pool = ThreadPoolExecutor::new(4);
    // Earlier items are slower, so they finish last.
    let out: Vec<u64> = pool
        .map_with(|i: u64| (i, spin((200 - i) * 500)).0, 0..200, MapOptions::new().chunksize(1))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(out, (0..200).collect::<Vec<_>>());
}

#[test]
fn default_chunks_and_huge_inputs() {
    let pool = ThreadPoolExecutor::new(2);
    let sum: u64 = pool.map(|x: u64| x * 2, 0..100_000).unwrap().map(Result::unwrap).sum();
    assert_eq!(sum, 99_999 * 100_000);
}

#[test]
fn an_endless_input_is_read_lazily() {
    let pool = ThreadPoolExecutor::new(2);
    let read = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&read);
    let items = (0u64..).inspect(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let first: Vec<u64> = pool
        .map_with(|x| x + 1, items, MapOptions::new().buffersize(8).chunksize(1))
        .unwrap()
        .take(100)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, (1..=100).collect::<Vec<_>>());
    assert!(read.load(Ordering::SeqCst) <= 100 + 8, "read {} items", read.load(Ordering::SeqCst));
}

/// With the default (adaptive) chunk size the chunks grow on tiny items, but what is read
/// ahead stays within the documented bound: 8 MiB of items and results in flight.
#[test]
fn an_endless_input_with_default_chunks_reads_a_bounded_amount_ahead() {
    let pool = ThreadPoolExecutor::new(2);
    let read = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&read);
    let items = (0u64..).inspect(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let wanted = 200_000;
    let sum: u64 = pool.map(|x| x + 1, items).unwrap().take(wanted).map(Result::unwrap).sum();
    assert_eq!(sum, (1..=wanted as u64).sum::<u64>());
    let item_bytes = std::mem::size_of::<u64>() + std::mem::size_of::<Result<u64, stealpool::JobError>>();
    let ahead = read.load(Ordering::SeqCst) - wanted;
    assert!(ahead <= (8 << 20) / item_bytes, "read {ahead} items ahead");
}

#[test]
fn a_failed_item_surfaces_at_its_position_and_cancels_the_rest() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let ran_after = Arc::new(AtomicUsize::new(0));
    let (g, r) = (gate.clone(), Arc::clone(&ran_after));
    let f = move |i: u32| -> u32 {
        match i {
            0 => 0,
            1 => panic!("item one is bad"),
            _ => {
                g.wait();
                r.fetch_add(1, Ordering::SeqCst);
                i
            }
        }
    };
    let mut it = pool.map_with(f, 0..10, MapOptions::new().chunksize(1)).unwrap();
    assert_eq!(it.next().unwrap(), Ok(0));
    let err = it.next().unwrap().unwrap_err();
    assert_eq!(err.index(), 1);
    assert_eq!(err.job_error(), Some(&JobError::Panicked { message: "item one is bad".into(), details: None }));
    assert!(it.next().is_none(), "map stops at the first failure");
    gate.open();
    pool.shutdown(true, false);
    // Item 2 may have been running when the failure was seen; 3..10 were queued and cancelled.
    assert!(ran_after.load(Ordering::SeqCst) <= 1, "{} items ran after the failure", ran_after.load(Ordering::SeqCst));
}

#[test]
fn the_deadline_counts_from_the_call() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let g = gate.clone();
    let f = move |i: u32| {
        if i == 1 {
            g.wait();
        }
        i
    };
    let mut it = pool.map_with(f, 0..5, MapOptions::new().chunksize(1).timeout(Duration::from_millis(50))).unwrap();
    assert_eq!(it.next().unwrap(), Ok(0));
    let err = it.next().unwrap().unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.index(), 1);
    assert!(it.next().is_none());
    gate.open();
}

#[test]
fn dropping_the_iterator_cancels_the_rest() {
    let pool = ThreadPoolExecutor::new(1);
    let gate = Gate::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = parking_lot::Mutex::new(started_tx);
    let (g, r) = (gate.clone(), Arc::clone(&ran));
    let f = move |_: u32| {
        let _ = started_tx.lock().send(());
        g.wait();
        r.fetch_add(1, Ordering::SeqCst);
    };
    let f = Arc::new(f);
    let it = pool.map_with(move |x| f(x), 0..20, MapOptions::new().chunksize(1)).unwrap();
    started_rx.recv_timeout(HANG).unwrap();
    drop(it);
    gate.open();
    pool.shutdown(true, false);
    assert_eq!(ran.load(Ordering::SeqCst), 1, "only the item already running may finish");
}

#[test]
fn imap_goes_on_past_failures() {
    let pool = ThreadPoolExecutor::new(2);
    let out: Vec<Result<u32, usize>> = pool
        .imap(|i: u32| if i.is_multiple_of(3) { panic!("multiple of three") } else { i }, 0..9)
        .unwrap()
        .map(|r| r.map_err(|e| e.index()))
        .collect();
    assert_eq!(out, vec![Err(0), Ok(1), Ok(2), Err(3), Ok(4), Ok(5), Err(6), Ok(7), Ok(8)]);
}

#[test]
fn imap_unordered_yields_in_completion_order() {
    let pool = ThreadPoolExecutor::new(2);
    let gate = Gate::new();
    let g = gate.clone();
    let f = move |i: u32| {
        if i == 0 {
            g.wait();
        }
        i
    };
    let mut it = pool.imap_unordered_with(f, 0..2, MapOptions::new().chunksize(1)).unwrap();
    assert_eq!(it.next().unwrap(), Ok(1), "item 1 finishes while item 0 is held");
    gate.open();
    assert_eq!(it.next().unwrap(), Ok(0));
    assert!(it.next().is_none());
}

#[test]
fn imap_unordered_covers_every_item_once() {
    let pool = ThreadPoolExecutor::new(3);
    let mut out: Vec<u64> = pool
        .imap_unordered_with(spin, 0..500u64, MapOptions::new().buffersize(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    out.sort_unstable();
    let mut want: Vec<u64> = (0..500).map(spin).collect();
    want.sort_unstable();
    assert_eq!(out, want);
}

#[test]
fn map_after_shutdown_is_refused() {
    let pool = ThreadPoolExecutor::new(1);
    pool.shutdown(true, false);
    assert_eq!(pool.map(|x: u8| x, 0..3).err(), Some(ShutdownError));
}

#[test]
fn a_map_cut_short_by_shutdown_reports_it() {
    let pool = ThreadPoolExecutor::new(1);
    let mut it = pool.map_with(|x: u32| x, 0..100, MapOptions::new().chunksize(1).buffersize(2)).unwrap();
    assert_eq!(it.next().unwrap(), Ok(0));
    pool.close();
    let rest: Vec<_> = it.collect();
    let last = rest.last().unwrap().as_ref().unwrap_err();
    assert_eq!(last.kind(), &MapErrorKind::Shutdown);
    assert!(rest[..rest.len() - 1].iter().all(Result::is_ok));
}

#[test]
fn apply_async_with_callbacks() {
    let pool = ThreadPoolExecutor::new(2);
    fn checked_div((a, b): (i32, i32)) -> i32 {
        if b == 0 { panic!("division by zero") } else { a / b }
    }
    let (tx, rx) = mpsc::channel();
    let (ok_tx, err_tx) = (tx.clone(), tx);
    let f =
        pool.apply_async_with(checked_div, (10, 2), move |v| ok_tx.send(Ok(*v)).unwrap(), |_| unreachable!()).unwrap();
    assert_eq!(rx.recv_timeout(HANG).unwrap(), Ok(5));
    assert_eq!(f.result(), Ok(5));
    let f = pool
        .apply_async_with(checked_div, (1, 0), |_| unreachable!(), move |e| err_tx.send(Err(e.to_string())).unwrap())
        .unwrap();
    assert_eq!(rx.recv_timeout(HANG).unwrap(), Err("job panicked: division by zero".to_string()));
    assert!(f.result().unwrap_err().is_panic());
    assert_eq!(pool.apply_async(checked_div, (9, 3)).unwrap().result(), Ok(3));
}

/// Starts a map whose function captures a sender, with every chunk queued behind a held
/// worker; then drops the iterator (`drop_it`) or lets the map stop at its deadline and keeps
/// the iterator; either way no clone of the function may outlive the stop.
fn stopping_a_map_drops_its_function_at_once(drop_it: bool) {
    let pool = ThreadPoolExecutor::new(1);
    let (release, _blocker) = common::occupy_worker(&pool);
    let (tx, rx) = mpsc::channel::<u32>();
    let f = move |i: u32| tx.send(i).is_ok();
    let options = MapOptions::new().chunksize(1).timeout(Duration::from_millis(10));
    let mut it = pool.map_with(f, 0..8, options).unwrap();
    if drop_it {
        drop(it);
        assert_eq!(rx.recv_timeout(HANG), Err(mpsc::RecvTimeoutError::Disconnected), "a clone of f is still alive");
    } else {
        assert!(it.next().unwrap().unwrap_err().is_timeout());
        assert_eq!(rx.recv_timeout(HANG), Err(mpsc::RecvTimeoutError::Disconnected), "the stopped map still holds f");
        assert!(it.next().is_none());
    }
    drop(release);
}

/// A map stopped by its deadline cancels and drops its queued chunks (and its own copy of the
/// function) at once, while the iterator is still alive.
#[test]
fn a_map_stopped_by_its_deadline_drops_its_function_at_once() {
    stopping_a_map_drops_its_function_at_once(false);
}

/// A map whose iterator is dropped does the same.
#[test]
fn a_dropped_map_drops_its_function_at_once() {
    stopping_a_map_drops_its_function_at_once(true);
}

#[test]
fn an_endless_map_timeout_means_no_deadline() {
    let pool = ThreadPoolExecutor::new(2);
    let options = MapOptions::new().timeout(Duration::MAX);
    let sum: u64 = pool.map_with(|x: u64| x, 0..100, options).unwrap().map(Result::unwrap).sum();
    assert_eq!(sum, 4950);
    let mut out: Vec<u64> = pool.imap_unordered_with(|x: u64| x, 0..10, options).unwrap().map(Result::unwrap).collect();
    out.sort();
    assert_eq!(out, (0..10).collect::<Vec<_>>());
}
