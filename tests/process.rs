//! The process pool through its public API: jobs, maps, failures of every kind, supervision,
//! lifecycle. Every pool is dropped (shut down and joined) at the end of its test, also when
//! the test fails, so no worker outlives it; the fork server is reaped at exit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "common/generic.rs"]
mod generic;

use generic::{Square, add, square};
use serde::{Deserialize, Serialize};
use stealpool::{
    Executor, ExitStatus, Future, Job, JobError, MapOptions, ProcessPoolBuilder, ProcessPoolExecutor,
    ThreadPoolExecutor,
};

// ----- registered code -----------------------------------------------------------------------

fn my_pid(_: ()) -> u32 {
    std::process::id()
}
stealpool::register_fn!(my_pid);

fn fail_on_three(x: u32) -> u32 {
    if x == 3 {
        panic!("three is not allowed");
    }
    x
}
stealpool::register_fn!(fail_on_three);

/// Writes its pid to `path`, then sleeps for `ms`: lets a test find and kill the worker.
fn announce_and_sleep((path, ms): (PathBuf, u64)) -> u32 {
    // Written whole and then renamed into place, so a reader never sees part of a pid.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, std::process::id().to_string()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}
stealpool::register_fn!(announce_and_sleep);

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
stealpool::register_fn!(sleep_ms);

/// Creates the file at `path` (so a test can tell whether the job ran at all).
fn touch(path: PathBuf) -> bool {
    std::fs::write(path, b"ran").is_ok()
}
stealpool::register_fn!(touch);

fn die(how: String) -> u32 {
    match how.as_str() {
        "abort" => std::process::abort(),
        "exit3" => std::process::exit(3),
        "segv" => {
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGSEGV).unwrap();
            0
        }
        _ => 0,
    }
}
stealpool::register_fn!(die);

fn echo_bytes(b: serde_bytes::ByteBuf) -> (usize, u64) {
    (b.len(), b.iter().map(|&x| u64::from(x)).sum())
}
stealpool::register_fn!(echo_bytes);

static INIT_VALUE: AtomicU32 = AtomicU32::new(0);

fn init_sets_value() {
    INIT_VALUE.store(42, Ordering::SeqCst);
}
stealpool::register_fn!(init_sets_value);

fn read_init_value(_: ()) -> u32 {
    INIT_VALUE.load(Ordering::SeqCst)
}
stealpool::register_fn!(read_init_value);

fn init_panics() {
    panic!("no database here");
}
stealpool::register_fn!(init_panics);

fn print_line(i: u32) -> u32 {
    println!("job {i} prints");
    i
}
stealpool::register_fn!(print_line);

fn claims_a_name_a(x: u32) -> u32 {
    x
}
stealpool::register_fn!(claims_a_name_a, name = "tests::shared-name");

fn claims_a_name_b(x: u32) -> u32 {
    x + 1
}
stealpool::register_fn!(claims_a_name_b, name = "tests::shared-name");

/// Succeeds in the first worker that runs it, panics in every later one (a marker file, named
/// after the fork server, remembers).
fn init_once_only() {
    let marker = std::env::temp_dir().join(format!("stealpool-init-once-{}", nix::unistd::getppid()));
    if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_err() {
        panic!("the database moved away");
    }
}
stealpool::register_fn!(init_once_only);

fn crash(_: ()) -> u32 {
    std::process::abort()
}
stealpool::register_fn!(crash);

/// A job type that sleeps for its number of milliseconds.
#[derive(Debug, Serialize, Deserialize)]
struct Nap(u64);

impl Job for Nap {
    type Output = u64;
    fn run(self) -> u64 {
        std::thread::sleep(Duration::from_millis(self.0));
        self.0
    }
}
stealpool::register_job!(Nap);

/// An input whose serialization always fails.
#[derive(Debug, Deserialize)]
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses to be serialized"))
    }
}

fn takes_unserializable(_: Unserializable) -> u32 {
    1
}
stealpool::register_fn!(takes_unserializable);

fn returns_unserializable(_: ()) -> Unserializable {
    Unserializable
}
stealpool::register_fn!(returns_unserializable);

// ----- helpers -------------------------------------------------------------------------------

fn pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::new(workers)
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether `pid` exists at all (alive or zombie).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits for a file to hold a pid (written by `announce_and_sleep`).
fn read_pid(path: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the job never announced its pid");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the pool has `n` workers again (a replacement starts in the background).
fn wait_for_workers(p: &ProcessPoolExecutor, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pids = p.worker_pids();
        if pids.len() == n {
            return pids;
        }
        assert!(Instant::now() < deadline, "the pool never got back to {n} workers: {pids:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn kill(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

// ----- jobs ----------------------------------------------------------------------------------

#[test]
fn apply_async_submit_and_generic_code() {
    let p = pool(2);
    assert_eq!(p.apply_async(square, 12).unwrap().result(), Ok(144));
    assert_eq!(p.submit(Square(9)).unwrap().result(), Ok(81));

    // The same generic code (tests/common/generic.rs) runs on either backend (and on Redis, in
    // tests/distributed.rs).
    generic::generic_code_runs(&p, square);
    generic::generic_code_runs(&ThreadPoolExecutor::new(2), square);
}

#[test]
fn jobs_run_in_other_processes() {
    let p = pool(2);
    let pid = p.apply_async(my_pid, ()).unwrap().result().unwrap();
    assert_ne!(pid, std::process::id());
    assert!(p.worker_pids().contains(&pid));
}

#[test]
fn workers_are_named_for_ps() {
    let p = pool(2);
    let mut names: Vec<String> = p
        .worker_pids()
        .iter()
        .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["stealpool-w0", "stealpool-w1"]);
}

#[test]
fn map_keeps_order_with_default_and_explicit_chunks() {
    let p = pool(2);
    let v: Vec<u64> = p.map(square, 0..1000u64).unwrap().map(Result::unwrap).collect();
    assert_eq!(v, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    let opts = MapOptions::new().chunksize(7);
    let v: Vec<u64> = p.map_with(square, 0..50u64, opts).unwrap().map(Result::unwrap).collect();
    assert_eq!(v, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
}

#[test]
fn starmap_unpacks_tuples_in_order() {
    let p = pool(2);
    let pairs: Vec<(u64, u64)> = (0..100).map(|i| (i, 2 * i)).collect();
    let v: Vec<u64> = p.starmap(add, pairs.clone()).unwrap().map(Result::unwrap).collect();
    assert_eq!(v, pairs.iter().map(|(a, b)| a + b).collect::<Vec<_>>());
    // The same call on the thread pool.
    let t = ThreadPoolExecutor::new(2);
    let w: Vec<u64> = t.starmap(add, pairs).unwrap().map(Result::unwrap).collect();
    assert_eq!(v, w);
}

#[test]
fn imap_unordered_yields_every_result_once() {
    let p = pool(2);
    let mut v: Vec<u64> = p.imap_unordered(square, 0..200u64).unwrap().map(Result::unwrap).collect();
    v.sort_unstable();
    assert_eq!(v, (0..200u64).map(|x| x * x).collect::<Vec<_>>());
}

#[test]
fn map_over_an_endless_input_reads_only_a_window() {
    let p = pool(2);
    let firsts: Vec<u64> = p.map(square, 0u64..).unwrap().take(20).map(Result::unwrap).collect();
    assert_eq!(firsts[19], 361);
}

#[test]
fn a_panic_fails_its_job_only_and_the_worker_survives() {
    let p = pool(1);
    let before = p.worker_pids();
    let err = p.apply_async(fail_on_three, 3).unwrap().result().unwrap_err();
    assert!(matches!(&err, JobError::Panicked { message, .. } if message == "three is not allowed"), "{err:?}");
    assert_eq!(err.panic_location(), Some(concat!(file!(), ":29:9")), "the panic! in fail_on_three");
    assert_eq!(p.apply_async(fail_on_three, 4).unwrap().result(), Ok(4));
    assert_eq!(p.worker_pids(), before, "a panic must not cost the worker");

    // map: the error at its position, then the map stops; imap goes on past it.
    let out: Vec<Result<u32, _>> =
        p.map_with(fail_on_three, 0..6u32, MapOptions::new().chunksize(2)).unwrap().collect();
    assert_eq!(out.len(), 4);
    assert_eq!(out[3].as_ref().unwrap_err().index(), 3);
    let ok: Vec<bool> = p.imap(fail_on_three, 0..6u32).unwrap().map(|r| r.is_ok()).collect();
    assert_eq!(ok, [true, true, true, false, true, true]);
}

#[test]
fn callbacks_and_await_work_as_on_the_thread_pool() {
    let p = pool(1);
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    p.apply_async_with(square, 7, move |v| tx.send(Ok(*v)).unwrap(), move |e| tx2.send(Err(e.clone())).unwrap())
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), Ok(49));
    let f = p.apply_async(square, 5).unwrap();
    assert_eq!(pollster::block_on(f), Ok(25));
}

#[test]
fn unregistered_code_is_a_clear_error() {
    let p = pool(1);
    let err = p.apply_async(|x: u32| x + 1, 1).unwrap().result().unwrap_err();
    match &err {
        JobError::Unregistered { name } => assert!(name.contains("closure"), "{name}"),
        other => panic!("expected Unregistered, got {other:?}"),
    }
    assert!(err.to_string().contains("register_fn!"));
}

#[test]
fn a_name_claimed_by_two_functions_is_refused_not_guessed() {
    let p = pool(1);
    for err in [
        p.apply_async(claims_a_name_a, 1).unwrap().result().unwrap_err(),
        p.apply_async(claims_a_name_b, 1).unwrap().result().unwrap_err(),
    ] {
        assert!(matches!(&err, JobError::Unregistered { name } if name.contains("two different")), "{err:?}");
    }
}

#[test]
fn serialization_failures_are_errors_on_the_future() {
    let p = pool(1);
    // postcard does not keep a custom serializer message, only that serialization failed.
    let err = p.apply_async(takes_unserializable, Unserializable).unwrap().result().unwrap_err();
    assert!(matches!(&err, JobError::Serialization { .. }), "{err:?}");
    let err = p.apply_async(returns_unserializable, ()).unwrap().result().unwrap_err();
    assert!(matches!(&err, JobError::Serialization { message } if message.contains("writing the result")), "{err:?}");
    assert_eq!(p.apply_async(square, 3).unwrap().result(), Ok(9), "the pool goes on");
}

#[test]
fn a_large_byte_payload_arrives_whole() {
    let p = pool(1);
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let expected = data.iter().map(|&x| u64::from(x)).sum();
    let r = p.apply_async(echo_bytes, serde_bytes::ByteBuf::from(data)).unwrap().result();
    assert_eq!(r, Ok((1 << 20, expected)));
}

// ----- supervision ---------------------------------------------------------------------------

/// Runs a job that announces its pid and sleeps, kills that worker with `signal`, and returns
/// the job's error and the victim's pid.
fn kill_running_job(p: &ProcessPoolExecutor, signal: nix::sys::signal::Signal) -> (JobError, u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pid");
    let f = p.apply_async(announce_and_sleep, (path.clone(), 60_000)).unwrap();
    let victim = read_pid(&path);
    kill(victim, signal);
    (f.result().unwrap_err(), victim)
}

#[test]
fn sigterm_to_one_worker_ends_that_worker_only() {
    // Regression: workers used to inherit the fork server's SIGTERM handler, which kills every
    // child the server knew of at the fork: the victim's siblings.
    let p = pool(3);
    let before = wait_for_workers(&p, 3);
    let (err, victim) = kill_running_job(&p, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(err, JobError::WorkerDied { pid: victim, status: ExitStatus::Signaled { signal: 15 } });
    for pid in before.iter().filter(|pid| **pid != victim) {
        assert!(alive(*pid), "sibling {pid} of the terminated worker {victim} must live on");
    }
    let after = wait_for_workers(&p, 3);
    assert_eq!(after.iter().filter(|pid| before.contains(pid)).count(), 2, "{before:?} -> {after:?}");
}

#[test]
fn a_killed_worker_fails_only_its_job_and_is_replaced() {
    let p = pool(2);
    let others: Vec<Future<u64>> = (0..20).map(|i| p.apply_async(sleep_ms, i % 3).unwrap()).collect();
    let (err, victim) = kill_running_job(&p, nix::sys::signal::Signal::SIGKILL);
    assert_eq!(err, JobError::WorkerDied { pid: victim, status: ExitStatus::Signaled { signal: 9 } });
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    for (i, f) in others.into_iter().enumerate() {
        assert_eq!(f.result(), Ok(i as u64 % 3), "other jobs are not lost");
    }
    let pids = wait_for_workers(&p, 2);
    assert!(!pids.contains(&victim));
    assert!(!exists(victim), "the dead worker was reaped");
    assert_eq!(p.apply_async(square, 4).unwrap().result(), Ok(16));
}

#[test]
fn abort_segfault_and_exit_are_reported_with_their_cause() {
    let p = pool(1);
    let err = p.apply_async(die, "abort".to_string()).unwrap().result().unwrap_err();
    assert!(matches!(err, JobError::WorkerDied { status: ExitStatus::Signaled { signal: 6 }, .. }), "{err:?}");
    let err = p.apply_async(die, "segv".to_string()).unwrap().result().unwrap_err();
    assert!(matches!(err, JobError::WorkerDied { status: ExitStatus::Signaled { signal: 11 }, .. }), "{err:?}");
    let err = p.apply_async(die, "exit3".to_string()).unwrap().result().unwrap_err();
    assert!(matches!(err, JobError::WorkerDied { status: ExitStatus::Exited(3), .. }), "{err:?}");
    assert_eq!(p.apply_async(square, 5).unwrap().result(), Ok(25), "the pool is not broken");
}

#[test]
fn an_overdue_job_is_killed_and_its_worker_replaced() {
    let p = ProcessPoolBuilder::new().num_workers(1).task_timeout(Duration::from_millis(300)).build().unwrap();
    let before = p.worker_pids();
    let started = Instant::now();
    let err = p.apply_async(sleep_ms, 60_000).unwrap().result().unwrap_err();
    assert_eq!(err, JobError::TimedOut { limit: Duration::from_millis(300) });
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(p.apply_async(sleep_ms, 1).unwrap().result(), Ok(1));
    assert_ne!(p.worker_pids(), before, "the overdue worker was replaced");
    assert!(!exists(before[0]));
}

#[test]
fn a_per_job_limit_overrides_the_default() {
    // No limit for this job, although the pool's default would kill it...
    let p = ProcessPoolBuilder::new().num_workers(1).task_timeout(Duration::from_millis(100)).build().unwrap();
    assert_eq!(p.submit_with_timeout(Nap(400), None).unwrap().result(), Ok(400));
    // ...and a limit for this one, on a pool without a default.
    let p = pool(1);
    let limit = Some(Duration::from_millis(100));
    assert_eq!(
        p.submit_with_timeout(Nap(60_000), limit).unwrap().result(),
        Err(JobError::TimedOut { limit: Duration::from_millis(100) })
    );
    assert_eq!(p.submit(Nap(1)).unwrap().result(), Ok(1), "the pool goes on");
}

#[test]
fn force_cancel_stops_a_running_job_and_cancel_does_not() {
    let p = pool(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pid");
    let f = p.apply_async(announce_and_sleep, (path.clone(), 60_000)).unwrap();
    let victim = read_pid(&path);
    assert!(!f.cancel(), "a plain cancel leaves a running job alone");
    assert!(f.force_cancel());
    assert!(f.is_cancelled());
    assert_eq!(f.result(), Err(JobError::Cancelled));
    let deadline = Instant::now() + Duration::from_secs(10);
    while exists(victim) {
        assert!(Instant::now() < deadline, "the worker of a force-cancelled job was not killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(p.apply_async(square, 6).unwrap().result(), Ok(36));
}

#[test]
fn force_cancel_of_a_job_waiting_in_a_window_skips_it() {
    let p = ProcessPoolBuilder::new().num_workers(1).window(4).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pid_path = dir.path().join("pid");
    let marker = dir.path().join("marker");
    let running = p.apply_async(announce_and_sleep, (pid_path.clone(), 300)).unwrap();
    let waiting = p.apply_async(touch, marker.clone()).unwrap();
    let after = p.apply_async(square, 2).unwrap();
    let worker = read_pid(&pid_path);
    assert!(waiting.force_cancel());
    assert_eq!(running.result(), Ok(worker), "the running job is not disturbed");
    assert_eq!(after.result(), Ok(4));
    assert!(!marker.exists(), "a skipped job must not run");
    assert_eq!(p.worker_pids(), [worker], "skipping does not cost the worker");
}

#[test]
fn max_tasks_per_child_replaces_workers() {
    let p = ProcessPoolBuilder::new().num_workers(1).max_tasks_per_child(2).build().unwrap();
    let pids: Vec<u32> = (0..6).map(|_| p.apply_async(my_pid, ()).unwrap().result().unwrap()).collect();
    assert_eq!(pids[0], pids[1]);
    assert_ne!(pids[1], pids[2]);
    assert_eq!(pids[2], pids[3]);
    assert_ne!(pids[3], pids[4]);
    let mut distinct = pids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3);
}

#[test]
fn the_initializer_runs_in_every_worker() {
    let p = ProcessPoolBuilder::new().num_workers(2).initializer(init_sets_value).build().unwrap();
    for _ in 0..4 {
        assert_eq!(p.apply_async(read_init_value, ()).unwrap().result(), Ok(42));
    }
}

#[test]
fn a_failing_initializer_fails_the_build_without_respawning() {
    let err = ProcessPoolBuilder::new().num_workers(2).initializer(init_panics).build().unwrap_err();
    assert!(err.is_initializer_failure(), "{err}");
    assert!(err.to_string().contains("no database here"), "{err}");
    let err = ProcessPoolBuilder::new().initializer(|| ()).build().unwrap_err();
    assert!(err.to_string().contains("register_fn!"), "{err}");
}

#[test]
fn a_replacement_whose_initializer_fails_breaks_the_pool_instead_of_looping() {
    let p = ProcessPoolBuilder::new().num_workers(1).initializer(init_once_only).build().unwrap();
    let marker = std::env::temp_dir().join(format!("stealpool-init-once-{}", p.fork_server_pid()));
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(marker);
    let crashed = p.apply_async(crash, ()).unwrap();
    let queued = p.apply_async(square, 3).unwrap();
    assert!(crashed.result().unwrap_err().is_worker_died());
    let err = queued.result().unwrap_err();
    assert!(matches!(&err, JobError::Broken { reason } if reason.contains("database moved away")), "{err:?}");
    assert!(p.is_shutdown());
    assert!(p.submit(Square(1)).is_err(), "a broken pool refuses work");
}

// ----- lifecycle -----------------------------------------------------------------------------

#[test]
fn shutdown_waits_for_queued_jobs_then_refuses_work() {
    let p = pool(2);
    let fs: Vec<_> = (0..10).map(|_| p.apply_async(sleep_ms, 20).unwrap()).collect();
    let pids = p.worker_pids();
    p.shutdown(true, false);
    assert!(fs.iter().all(Future::is_done));
    assert!(fs.into_iter().all(|f| f.result() == Ok(20)));
    assert!(pids.iter().all(|&pid| !exists(pid)), "workers exited and were reaped");
    let err = p.submit(Square(2)).unwrap_err();
    assert_eq!(err.into_inner().0, 2, "the refused job is handed back");
    p.shutdown(true, false); // twice is harmless
}

#[test]
fn shutdown_with_cancel_futures_cancels_what_has_not_started() {
    let p = ProcessPoolBuilder::new().num_workers(1).window(1).build().unwrap();
    let running = p.apply_async(sleep_ms, 200).unwrap();
    let queued: Vec<_> = (0..5).map(|_| p.apply_async(sleep_ms, 1).unwrap()).collect();
    p.shutdown(true, true);
    assert_eq!(running.result(), Ok(200), "running jobs finish");
    assert!(queued.iter().all(Future::is_cancelled));
}

#[test]
fn close_then_join_and_join_before_close() {
    let p = pool(2);
    assert!(p.join().is_err(), "join before close is an error");
    let fs: Vec<_> = (0..6).map(|i| p.apply_async(square, i).unwrap()).collect();
    p.close();
    assert!(p.is_shutdown());
    p.join().unwrap();
    let v: Vec<u64> = fs.into_iter().map(|f| f.result().unwrap()).collect();
    assert_eq!(v, [0, 1, 4, 9, 16, 25]);
}

#[test]
fn terminate_stops_running_and_queued_jobs_at_once() {
    let p = pool(2);
    let fs: Vec<_> = (0..6).map(|_| p.apply_async(sleep_ms, 60_000).unwrap()).collect();
    let pids = p.worker_pids();
    let started = Instant::now();
    p.terminate();
    p.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    for f in fs {
        assert_eq!(f.result(), Err(JobError::Cancelled));
    }
    assert!(pids.iter().all(|&pid| !alive(pid) && !exists(pid)), "workers killed and reaped");
}

#[test]
fn shutdown_from_a_done_callback_does_not_wait_for_itself() {
    let p = std::sync::Arc::new(pool(1));
    let inner = std::sync::Arc::clone(&p);
    let (tx, rx) = mpsc::channel();
    p.apply_async_with(
        square,
        2,
        move |_| {
            inner.shutdown(true, false);
            tx.send(()).unwrap();
        },
        |_| {},
    )
    .unwrap();
    rx.recv_timeout(Duration::from_secs(30)).expect("shutdown(wait) inside a callback returned");
    assert!(p.is_shutdown());
    p.join().unwrap(); // from outside, join really waits
    assert!(p.worker_pids().is_empty());
}

#[test]
fn jobs_that_print_do_not_disturb_the_pool() {
    let p = pool(2);
    let v: Vec<u32> = p.map(print_line, 0..20u32).unwrap().map(Result::unwrap).collect();
    assert_eq!(v, (0..20).collect::<Vec<_>>());
}
