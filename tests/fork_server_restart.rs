//! A fork server that dies (SIGKILL by pid) is replaced: existing pools go on with workers
//! from a new server, and only the jobs that were running in workers that died with it fail.
//! A process forked from one that holds a fork-server handle does not use that handle.
//!
//! The killed server's workers die with it and are re-parented to this test, a child
//! subreaper, which reaps them by pid: the server is stopped first, so the list of its
//! children read then is complete. The tests run one at a time (one `#[test]`), because each
//! kills the fork server the others would share.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use stealpool::process::Process;
use stealpool::{Executor, ExitStatus, JobError, ProcessPoolBuilder, ResultTimeoutError};

const LONG: Duration = Duration::from_secs(60);

fn double(x: u64) -> u64 {
    x * 2
}
stealpool::register_fn!(double);

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
stealpool::register_fn!(nap);

/// Creates the file at `marker`, then naps: the test knows the job has begun (a future that
/// `is_running` has only been handed to a worker, which may not have read it yet).
fn mark_then_nap((marker, ms): (String, u64)) -> u64 {
    std::fs::write(marker, b"").unwrap();
    nap(ms)
}
stealpool::register_fn!(mark_then_nap);

/// Terminates the pool if the test fails while a long job runs, so that the failure is
/// reported at once instead of after the drop has waited for the job.
struct TerminateOnPanic<'a>(&'a stealpool::ProcessPoolExecutor);

impl Drop for TerminateOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.terminate();
        }
    }
}

/// Where the calling process's descriptors lead.
fn fd_targets(_: ()) -> Vec<String> {
    targets_of("/proc/self/fd")
}
stealpool::register_fn!(fd_targets);

fn targets_of(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

fn sleeps_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
stealpool::register_fn!(sleeps_forever);

/// SIGKILLs fork server `server` (our child, not yet reaped by its thread: we ask while the
/// pool still reports it as current) and reaps its workers, which die with it and come to us.
fn kill_fork_server(server: u32) {
    let pid = Pid::from_raw(server as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    // Stopped, it forks nothing more: this list is complete.
    let workers: Vec<i32> = std::fs::read_to_string(format!("/proc/{server}/task/{server}/children"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    kill(pid, Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + LONG;
    for w in workers {
        loop {
            match waitpid(Pid::from_raw(w), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    assert!(Instant::now() < deadline, "worker {w} outlived its fork server");
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Reaped; or not (yet) re-parented to us: wait for that.
                Ok(_) => break,
                Err(nix::errno::Errno::ECHILD) => {
                    assert!(Instant::now() < deadline, "worker {w} never came to the subreaper");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("waitpid({w}): {e}"),
            }
        }
    }
}

#[test]
fn fork_server_deaths_and_forks() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    a_pool_outlives_its_fork_server();
    a_recycling_pool_loses_only_the_running_jobs();
    a_forked_process_does_not_use_the_parents_handle();
}

fn a_pool_outlives_its_fork_server() {
    let pool = ProcessPoolBuilder::new().num_workers(2).build().unwrap();
    let _terminate = TerminateOnPanic(&pool);
    assert_eq!(pool.apply_async(double, 21).unwrap().result(), Ok(42));
    let tmp = tempfile::tempdir().unwrap();
    let began = tmp.path().join("began");
    let mut running = pool.apply_async(mark_then_nap, (began.display().to_string(), 600_000)).unwrap();
    let deadline = Instant::now() + LONG;
    while !began.exists() {
        assert!(Instant::now() < deadline, "the long job never began");
        std::thread::sleep(Duration::from_millis(1));
    }
    let sleeper = Process::spawn(sleeps_forever, ()).unwrap();
    let old = pool.fork_server_pid();
    let old_workers = pool.worker_pids();
    // A descriptor left open without close-on-exec when the next server starts: neither it nor
    // its workers may inherit it.
    let leaked_path = tmp.path().join("leaked");
    std::fs::write(&leaked_path, b"").unwrap();
    let leaked_c = std::ffi::CString::new(leaked_path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; the descriptor is closed below.
    let leaked = unsafe { nix::libc::open(leaked_c.as_ptr(), nix::libc::O_RDONLY) };
    assert!(leaked >= 0);
    kill_fork_server(old);

    match running.result_timeout(LONG) {
        Err(ResultTimeoutError::Failed(JobError::WorkerDied { .. })) => {}
        other => panic!("the job running when the server died ended with {other:?}"),
    }
    assert_eq!(sleeper.join_timeout(LONG), Some(ExitStatus::Unknown), "died with its server");
    // A job handed to the idle worker before the pool has seen it die would fail like any job
    // in a dying worker's window (it counts as running there): wait until the pool has
    // replaced both, then nothing may fail.
    let deadline = Instant::now() + LONG;
    while pool.worker_pids().iter().any(|p| old_workers.contains(p)) || pool.worker_pids().len() < 2 {
        assert!(Instant::now() < deadline, "the pool never replaced the workers that died with the server");
        std::thread::sleep(Duration::from_millis(1));
    }
    let out: Vec<u64> = pool.map(double, 0..50u64).unwrap().map(Result::unwrap).collect();
    assert_eq!(out, (0..50).map(|x| x * 2).collect::<Vec<_>>(), "the pool goes on");
    let new = pool.fork_server_pid();
    assert_ne!(new, old, "on a new fork server");
    let leaked_name = leaked_path.display().to_string();
    assert!(!targets_of(&format!("/proc/{new}/fd")).contains(&leaked_name), "the new server inherited a stray fd");
    let in_worker = pool.apply_async(fd_targets, ()).unwrap().result().unwrap();
    assert!(!in_worker.contains(&leaked_name), "a worker inherited a stray fd: {in_worker:?}");
    // SAFETY: ours, opened above.
    unsafe { nix::libc::close(leaked) };
    let p = Process::spawn(nap, 1).unwrap();
    assert_eq!(p.join_timeout(LONG), Some(ExitStatus::Exited(0)), "processes start from the new server too");
}

fn a_recycling_pool_loses_only_the_running_jobs() {
    const WORKERS: usize = 3;
    let pool = ProcessPoolBuilder::new().num_workers(WORKERS).max_tasks_per_child(1).build().unwrap();
    let mut futures: Vec<_> = (0..300u64).map(|i| pool.apply_async(double, i).unwrap()).collect();
    // Kill the server half-way through.
    while futures.iter().filter(|f| f.is_done()).count() < 100 {
        std::thread::sleep(Duration::from_micros(200));
    }
    kill_fork_server(pool.fork_server_pid());
    let mut died = 0;
    for (i, f) in futures.iter_mut().enumerate() {
        match f.result_timeout(LONG) {
            Ok(v) => assert_eq!(v, i as u64 * 2),
            // With one task per worker, at most one job runs in each worker.
            Err(ResultTimeoutError::Failed(JobError::WorkerDied { .. })) => died += 1,
            other => panic!("job {i} ended with {other:?}"),
        }
    }
    eprintln!("{died} of 300 jobs died with the fork server");
    assert!(died <= WORKERS, "{died} jobs failed; only the {WORKERS} running at the kill may");
    assert_eq!(pool.apply_async(double, 5).unwrap().result(), Ok(10), "the pool is not broken");
}

fn a_forked_process_does_not_use_the_parents_handle() {
    let sleeper = Process::spawn(sleeps_forever, ()).unwrap();
    let server = ProcessPoolBuilder::new().num_workers(1).build().unwrap().fork_server_pid();
    // SAFETY: the test's other threads (the harness's, the fork-server reader) hold no lock the
    // child needs: it uses only stealpool's own handles, which it must refuse or replace, and
    // the allocator (fork-safe in glibc).
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            // The parent's child is not ours: killing it must do nothing.
            sleeper.kill();
            let unknown = sleeper.join_timeout(Duration::from_secs(5)) == Some(ExitStatus::Unknown);
            // A process of our own comes from a server of our own.
            let ours = Process::spawn(double, 1).map(|p| p.join_timeout(LONG));
            let pool = ProcessPoolBuilder::new().num_workers(1).build();
            let own_server = pool.as_ref().map(|p| p.fork_server_pid()).unwrap_or(server);
            let code = match (unknown, ours, own_server != server) {
                (true, Ok(Some(ExitStatus::Exited(0))), true) => 0,
                (false, ..) => 10,
                (_, _, false) => 11,
                _ => 12,
            };
            drop(pool);
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = waitpid(child, None).unwrap();
            assert_eq!(status, WaitStatus::Exited(child, 0), "10: used our child, 11: used our server, 12: no spawn");
            assert!(sleeper.is_alive(), "the forked process's kill did not reach our child");
            sleeper.kill();
            assert_eq!(sleeper.join_timeout(LONG), Some(ExitStatus::Signaled { signal: 9 }));
        }
    }
}
