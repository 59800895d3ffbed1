//! The default start method is safe in a multithreaded parent: pools are built and used many
//! times while other threads keep taking and releasing locks (a mutex, stdout, the allocator).
//! Forking this process directly would, sooner or later, give a worker a copy of a lock that
//! one of those threads held at the fork, and the worker would hang on it forever; workers
//! forked from the clean fork server never do. A watchdog turns a hang into a failure.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use stealpool::{Executor, ProcessPoolExecutor};

/// Takes the locks a forked copy of a threaded parent would trip on: stdout's and stderr's,
/// and the allocator's.
fn touch_locks(i: u32) -> u32 {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b"");
    let _ = out.flush();
    drop(out);
    let _ = std::io::stderr().lock().flush();
    let v: Vec<u32> = (0..1000).collect();
    i + v[999] - 999
}
stealpool::register_fn!(touch_locks);

#[test]
fn pools_work_while_other_threads_hold_locks() {
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Mutex::new(Vec::<u64>::new()));
    let noise: Vec<_> = (0..4)
        .map(|t| {
            let stop = Arc::clone(&stop);
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut g = shared.lock().unwrap();
                    g.push(n);
                    if g.len() > 1000 {
                        g.clear();
                    }
                    drop(g);
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(b"");
                    let _ = out.flush();
                    drop(out);
                    let junk: Vec<u8> = vec![t as u8; 4096 + (n % 64) as usize];
                    n = n.wrapping_add(u64::from(junk[0]) + 1);
                }
                n
            })
        })
        .collect();

    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        for round in 0..25u32 {
            let pool = ProcessPoolExecutor::new(2);
            let out: Vec<u32> = pool.map(touch_locks, 0..16u32).unwrap().map(Result::unwrap).collect();
            assert_eq!(out, (0..16).collect::<Vec<_>>(), "round {round}");
            drop(pool);
        }
        done_tx.send(()).unwrap();
    });
    let finished = done_rx.recv_timeout(Duration::from_secs(240));
    stop.store(true, Ordering::Relaxed);
    for t in noise {
        t.join().unwrap();
    }
    assert!(finished.is_ok(), "pools hung while other threads held locks");
    worker.join().unwrap();
}
