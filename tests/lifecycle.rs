//! shutdown, close + join, terminate, drop, and the builder.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

use common::{Gate, HANG, holding};
use stealpool::{Executor, JobError, ThreadPoolBuilder, ThreadPoolExecutor};

/// A one-worker pool whose worker is held by a job until `gate` opens.
fn busy_pool(gate: &Gate) -> (ThreadPoolExecutor, stealpool::Future<()>) {
    let pool = ThreadPoolExecutor::new(1);
    let blocker = holding(&pool, gate, ());
    (pool, blocker)
}

#[test]
fn submit_after_shutdown_hands_the_job_back() {
    let pool = ThreadPoolExecutor::new(2);
    pool.shutdown(true, false);
    assert!(pool.is_shutdown());
    let err = pool.submit(|| 41 + 1).unwrap_err();
    assert!(err.is_shutdown());
    assert_eq!(err.to_string(), "cannot submit a job: the executor is shut down");
    assert_eq!((err.into_inner())(), 42);
    pool.shutdown(true, true); // a second call is harmless
}

#[test]
fn shutdown_with_wait_runs_everything_queued() {
    let gate = Gate::new();
    let (pool, blocker) = busy_pool(&gate);
    let counter = Arc::new(AtomicUsize::new(0));
    let queued: Vec<_> = (0..10)
        .map(|_| {
            let c = Arc::clone(&counter);
            pool.submit(move || c.fetch_add(1, Ordering::SeqCst)).unwrap()
        })
        .collect();
    let opener = {
        let gate = gate.clone();
        thread::spawn(move || gate.open())
    };
    pool.shutdown(true, false);
    opener.join().unwrap();
    assert_eq!(counter.load(Ordering::SeqCst), 10, "shutdown(wait) returned before the queue drained");
    assert!(queued.into_iter().all(|f| f.is_done()));
    assert_eq!(blocker.result(), Ok(()));
}

#[test]
fn shutdown_with_cancel_futures_cancels_what_has_not_started() {
    let gate = Gate::new();
    let (pool, blocker) = busy_pool(&gate);
    let queued: Vec<_> = (0..10).map(|i| pool.submit(move || i).unwrap()).collect();
    pool.shutdown(false, true);
    assert!(queued.iter().all(|f| f.is_cancelled()));
    assert!(!blocker.is_done(), "the running job is not interrupted");
    gate.open();
    assert_eq!(blocker.result(), Ok(()));
    pool.join().unwrap();
    for f in queued {
        assert_eq!(f.result(), Err(JobError::Cancelled));
    }
}

#[test]
fn join_is_only_valid_after_close() {
    let pool = ThreadPoolExecutor::new(2);
    assert!(pool.join().is_err());
    let futures: Vec<_> = (0..50u32).map(|i| pool.submit(move || i * 2).unwrap()).collect();
    pool.close();
    assert!(pool.submit(|| 0).is_err());
    pool.join().unwrap();
    assert!(futures.iter().all(|f| f.is_done()), "close lets queued work finish");
    let total: u32 = futures.into_iter().map(|f| f.result().unwrap()).sum();
    assert_eq!(total, 49 * 50);
}

#[test]
fn terminate_cancels_pending_and_lets_running_finish() {
    let gate = Gate::new();
    let (pool, blocker) = busy_pool(&gate);
    let queued: Vec<_> = (0..5).map(|i| pool.submit(move || i).unwrap()).collect();
    pool.terminate();
    assert!(queued.iter().all(|f| f.is_cancelled()));
    assert!(pool.submit(|| 1).is_err());
    gate.open();
    pool.join().unwrap();
    assert_eq!(blocker.result(), Ok(()), "threads cannot be killed: the running job completes");
}

#[test]
fn dropping_the_pool_waits_for_submitted_work() {
    let counter = Arc::new(AtomicUsize::new(0));
    {
        let pool = ThreadPoolExecutor::new(2);
        for _ in 0..100 {
            let c = Arc::clone(&counter);
            pool.submit(move || {
                thread::yield_now();
                c.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
    }
    assert_eq!(counter.load(Ordering::SeqCst), 100);
}

#[test]
fn dropping_the_last_handle_inside_a_job_does_not_deadlock() {
    let pool = Arc::new(ThreadPoolExecutor::new(2));
    let inner = Arc::clone(&pool);
    let f = pool.submit(move || drop(inner)).unwrap();
    drop(pool); // the job may now hold the last handle: its drop must not join its own thread
    f.wait();
    assert!(f.is_done());
}

#[test]
fn builder_settings_apply_to_every_worker() {
    let inits = Arc::new(AtomicUsize::new(0));
    let i = Arc::clone(&inits);
    let pool = ThreadPoolBuilder::new()
        .num_workers(3)
        .name_prefix("tester")
        .stack_size(512 * 1024)
        .initializer(move || {
            i.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    assert_eq!(pool.max_workers(), 3);
    assert_eq!(inits.load(Ordering::SeqCst), 3);
    let name = pool.submit(|| thread::current().name().unwrap().to_owned()).unwrap().result().unwrap();
    assert!(name.starts_with("tester-"), "{name}");
    assert!(format!("{:?}", ThreadPoolBuilder::new()).contains("num_workers"));
}

#[test]
fn zero_workers_means_one_per_cpu() {
    assert_eq!(ThreadPoolExecutor::new(0).max_workers(), num_cpus_here());
    assert_eq!(ThreadPoolBuilder::new().build().unwrap().max_workers(), num_cpus_here());
}

fn num_cpus_here() -> usize {
    num_cpus::get()
}

#[test]
fn a_panicking_initializer_fails_the_build() {
    let err = ThreadPoolBuilder::new().num_workers(2).initializer(|| panic!("no database")).build().unwrap_err();
    assert!(err.is_initializer_failure());
    assert!(err.to_string().contains("no database"), "{err}");
}

/// Queues jobs that capture a sender behind a held worker, stops the pool with `stop`, and
/// checks that every sender is gone while the futures are still alive.
fn stopping_drops_captures_at_once(stop: impl FnOnce(&ThreadPoolExecutor)) {
    let pool = ThreadPoolExecutor::new(1);
    let (release, blocker) = common::occupy_worker(&pool);
    let (tx, rx) = mpsc::channel::<u32>();
    let queued: Vec<_> = (0..5)
        .map(|i| {
            let tx = tx.clone();
            pool.submit(move || tx.send(i).is_ok()).unwrap()
        })
        .collect();
    drop(tx);
    stop(&pool);
    assert_eq!(
        rx.recv_timeout(HANG),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "a cancelled job still holds its sender"
    );
    assert!(queued.iter().all(|f| f.is_cancelled()));
    drop(release);
    assert_eq!(blocker.result(), Ok(()));
    pool.join().unwrap();
}

#[test]
fn shutdown_cancel_futures_drops_the_cancelled_jobs_at_once() {
    stopping_drops_captures_at_once(|pool| pool.shutdown(false, true));
}

#[test]
fn terminate_drops_the_cancelled_jobs_at_once() {
    stopping_drops_captures_at_once(|pool| pool.terminate());
}

/// Submissions from inside the pool racing with `terminate` are cancelled or refused, never
/// left queued with a future that cannot resolve.
#[test]
fn inside_submissions_racing_terminate_never_strand_a_job() {
    for _ in 0..50 {
        let pool = std::sync::Arc::new(ThreadPoolExecutor::new(2));
        let (tx, rx) = mpsc::channel();
        for _ in 0..2 {
            let (p, tx) = (std::sync::Arc::clone(&pool), tx.clone());
            pool.submit(move || {
                for i in 0..200u32 {
                    match p.submit(move || i) {
                        Ok(f) => tx.send(f).unwrap(),
                        Err(_) => break,
                    }
                }
            })
            .unwrap();
        }
        drop(tx);
        pool.terminate();
        for mut f in rx.iter() {
            assert!(f.result_timeout(HANG).is_ok() || f.is_cancelled(), "a future never resolved");
        }
        pool.join().unwrap();
    }
}

/// A builder value the system cannot honour is an error, not a panic.
#[test]
fn an_impossible_stack_size_fails_the_build() {
    let built = ThreadPoolBuilder::new().num_workers(1).stack_size(usize::MAX).build();
    assert!(built.is_err());
    let err = ThreadPoolBuilder::new().num_workers(usize::MAX).build().unwrap_err();
    assert!(err.to_string().contains("at most 32768"), "{err}");
    let err = ThreadPoolBuilder::new().num_workers(ThreadPoolBuilder::MAX_WORKERS + 1).build().unwrap_err();
    assert!(!err.is_initializer_failure());
}

/// The names of the worker threads of `pool` (each of its `n` workers reports its own: every
/// job waits at a barrier until all `n` run, so no worker can take two).
fn worker_names(pool: &ThreadPoolExecutor, n: usize) -> Vec<String> {
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let futures: Vec<_> = (0..n)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            pool.submit(move || {
                barrier.wait();
                thread::current().name().unwrap_or_default().to_owned()
            })
            .unwrap()
        })
        .collect();
    let mut names: Vec<String> = futures.into_iter().map(|f| f.result().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn default_thread_names_tell_pools_apart_and_a_prefix_replaces_them() {
    let (a, b) = (ThreadPoolExecutor::new(2), ThreadPoolExecutor::new(2));
    let (a, b) = (worker_names(&a, 2), worker_names(&b, 2));
    let pool_number = |names: &[String]| {
        let n: Vec<&str> = names.iter().map(|s| s.rsplit_once('-').unwrap().0).collect();
        assert!(n.iter().all(|p| p == &n[0] && p.starts_with("stealpool-")), "{names:?}");
        n[0].to_owned()
    };
    assert_ne!(pool_number(&a), pool_number(&b), "two default pools share a name: {a:?} {b:?}");
    assert!(a[0].ends_with("-0") && a[1].ends_with("-1"), "workers are numbered from 0: {a:?}");
    let named = ThreadPoolBuilder::new().num_workers(2).name_prefix("crunch").build().unwrap();
    assert_eq!(worker_names(&named, 2), ["crunch-0", "crunch-1"]);
}
