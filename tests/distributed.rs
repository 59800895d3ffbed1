//! The Redis executor with a real `redis-server` (one per test, on a free loopback port) and
//! real worker processes: this test binary started again as a worker (`worker_process`, below),
//! several of them standing in for hosts. Workers are SIGKILLed mid-job, SIGSTOPped past their
//! lease, Redis is killed and restarted; every test checks that nothing is lost and nothing
//! resolves twice. Every process a test starts is owned by a guard that kills and reaps it,
//! also when the test fails.
//!
//! Skipped, with the reason printed, when `redis-server` is not installed (`.ci/run` installs it).

mod common;
#[path = "common/generic.rs"]
mod generic;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::redis_server::{RedisServer, unavailable};
use generic::{Square, add, fail_on_three, square};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use stealpool::distributed::{RedisConfig, RedisExecutor, Worker};
use stealpool::{
    Executor, Job, JobError, MapOptions, ProcessPoolBuilder, ProcessPoolExecutor, ReturnWhen, ThreadPoolExecutor,
    as_completed, wait,
};

// ----- registered code -----------------------------------------------------------------------

/// Appends a line to `dir/runs`, writes its own pid to `dir/running`, sleeps `ms`, and returns
/// how many runs there were when it started (1 for the first run of the job, 2 for a rerun).
fn run_and_sleep((dir, ms): (PathBuf, u64)) -> usize {
    use std::io::Write;
    let mut runs = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("runs")).unwrap();
    writeln!(runs, "{}", std::process::id()).unwrap();
    drop(runs);
    let count = std::fs::read_to_string(dir.join("runs")).unwrap().lines().count();
    let tmp = dir.join(format!("running.{}", std::process::id()));
    std::fs::write(&tmp, std::process::id().to_string()).unwrap();
    std::fs::rename(&tmp, dir.join("running")).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    count
}
stealpool::register_fn!(run_and_sleep);

fn touch(path: PathBuf) -> bool {
    std::fs::write(path, b"ran").is_ok()
}
stealpool::register_fn!(touch);

#[derive(Serialize, Deserialize)]
struct Nap(u64);

impl Job for Nap {
    type Output = u64;
    fn run(self) -> u64 {
        std::thread::sleep(Duration::from_millis(self.0));
        self.0
    }
}
stealpool::register_job!(Nap);

// ----- harness -------------------------------------------------------------------------------

/// How long a test waits for something that must happen.
const HANG: Duration = Duration::from_secs(30);

/// The workers' lease in most tests: short, so that reclaiming is quick.
const LEASE_MS: u64 = 600;

/// Not a test: the body of a worker process, which this binary becomes when a test starts it
/// with `STEALPOOL_TEST_WORKER` set (`cargo test` runs it too, and then it returns at once).
#[test]
fn worker_process() {
    let Ok(url) = std::env::var("STEALPOOL_TEST_WORKER") else { return };
    let number = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let pool = ProcessPoolBuilder::new().num_workers(number("STEALPOOL_TEST_PROCESSES", 1) as usize);
    Worker::new(RedisConfig::new(url))
        .pool(pool)
        .heartbeat(Duration::from_millis(100))
        .lease(Duration::from_millis(number("STEALPOOL_TEST_LEASE_MS", LEASE_MS)))
        .prefetch(number("STEALPOOL_TEST_PREFETCH", 1) as usize)
        .poll(Duration::from_millis(50))
        .run()
        .unwrap();
}

/// Not a test: a client process that submits one long job and waits (a test kills it).
#[test]
fn client_process() {
    let Ok(url) = std::env::var("STEALPOOL_TEST_CLIENT") else { return };
    let dir = PathBuf::from(std::env::var("STEALPOOL_TEST_DIR").unwrap());
    let client = RedisExecutor::builder(RedisConfig::new(url)).client_ttl(Duration::from_secs(1)).build().unwrap();
    let _job = client.apply_async(run_and_sleep, (dir, 60_000)).unwrap();
    std::thread::sleep(HANG * 2);
}

/// A process this test started: SIGKILLed (after a SIGCONT, should it be stopped) and reaped
/// when dropped.
struct Owned {
    child: Child,
}

impl Owned {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGKILL and reap now.
    fn kill(mut self) {
        self.reap();
    }

    fn reap(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.reap();
    }
}

/// Starts this binary as `entry` with `env`.
fn start(entry: &str, env: &[(&str, String)]) -> Owned {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([entry, "--exact", "--nocapture", "--test-threads=1"]).stdin(Stdio::null()).stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Owned { child: cmd.spawn().unwrap() }
}

/// Starts a worker process and waits until `client` sees it.
fn worker(server: &RedisServer, client: &RedisExecutor, extra: &[(&str, String)]) -> Owned {
    let mut env = vec![("STEALPOOL_TEST_WORKER", server.url())];
    env.extend(extra.iter().cloned());
    let w = start("worker_process", &env);
    let pid = format!(":{}:", w.pid());
    poll_until("the worker to announce itself", || {
        client.workers().is_ok_and(|ws| ws.iter().any(|i| i.name.contains(&pid)))
    });
    w
}

fn client(server: &RedisServer) -> RedisExecutor {
    RedisExecutor::new(&server.url()).unwrap()
}

fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid the running job wrote, once a job has started and written one not in `not`.
fn running_pid(dir: &Path, not: &[u32]) -> u32 {
    let mut pid = 0;
    poll_until("the job to start", || {
        pid = std::fs::read_to_string(dir.join("running")).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        pid != 0 && !not.contains(&pid)
    });
    pid
}

fn alive(pid: u32) -> bool {
    // Zombies count as gone: the job's process has ended, only its reaping is left.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

macro_rules! need_redis {
    () => {
        if let Some(reason) = unavailable() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

// ----- tests ---------------------------------------------------------------------------------

#[test]
fn the_generic_code_of_the_other_pools_runs_unchanged() {
    need_redis!();
    let server = RedisServer::start();
    let pool = client(&server);
    let _w1 =
        worker(&server, &pool, &[("STEALPOOL_TEST_PROCESSES", "2".into()), ("STEALPOOL_TEST_PREFETCH", "4".into())]);
    let _w2 = worker(&server, &pool, &[]);

    // The same generic code as tests/process.rs (tests/common/generic.rs), on all three executors.
    generic::generic_code_runs(&pool, square);
    generic::generic_code_runs(&ProcessPoolExecutor::new(1), square);
    generic::generic_code_runs(&ThreadPoolExecutor::new(2), square);

    assert_eq!(pool.apply_async(square, 12).unwrap().result(), Ok(144));
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    pool.apply_async_with(
        fail_on_three,
        3,
        move |v| tx.send(Ok(*v)).unwrap(),
        move |e| tx2.send(Err(e.to_string())).unwrap(),
    )
    .unwrap();
    let err = rx.recv_timeout(HANG).unwrap().unwrap_err();
    assert!(err.contains("three is not allowed"), "{err}");

    let squares: Vec<u64> =
        pool.map_with(square, 0..100u64, MapOptions::new().chunksize(7)).unwrap().map(Result::unwrap).collect();
    assert_eq!(squares, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    let items: Vec<bool> = pool.imap(fail_on_three, 1..=4).unwrap().map(|r| r.is_ok()).collect();
    assert_eq!(items, [true, true, false, true]);
    let mut unordered: Vec<u64> = pool.imap_unordered(square, 1..=5u64).unwrap().map(Result::unwrap).collect();
    unordered.sort_unstable();
    assert_eq!(unordered, [1, 4, 9, 16, 25]);
    let sums: Vec<u64> = pool.starmap(add, [(1, 2), (3, 4)]).unwrap().map(Result::unwrap).collect();
    assert_eq!(sums, [3, 7]);

    let fs: Vec<_> = (1..=3).map(|i| pool.submit(Square(i)).unwrap()).collect();
    let done = wait(&fs, ReturnWhen::AllCompleted, Some(HANG));
    assert_eq!(done.done.len(), 3);
    let fs: Vec<_> = (1..=3).map(|i| pool.submit(Square(i)).unwrap()).collect();
    assert_eq!(as_completed(fs, Some(HANG)).count(), 3);
    assert_eq!(pollster::block_on(pool.submit(Square(5)).unwrap()), Ok(25));

    let workers = pool.workers().unwrap();
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert_eq!(workers.iter().map(|w| w.processes).sum::<usize>(), 3);
    assert_eq!(pool.max_workers(), 3);
    for w in &workers {
        assert!(w.name.starts_with(&format!("{}:{}:", w.host, w.pid)), "{w:?}");
        assert!(SystemTime::now().duration_since(w.last_seen).unwrap_or_default() < Duration::from_secs(10));
    }
    poll_until("the jobs to be counted", || pool.workers().unwrap().iter().map(|w| w.jobs_done).sum::<u64>() >= 20);

    // Every key the backend wrote is in the namespace and expires.
    let mut redis = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis).unwrap();
    assert!(keys.len() >= 6, "{keys:?}"); // jobs, results, client, workers, worker x2
    for key in &keys {
        assert!(key.starts_with("{stealpool}:"), "{key}");
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut redis).unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }

    pool.close();
    assert!(pool.submit(Square(1)).unwrap_err().is_shutdown());
    pool.join().unwrap();
}

#[test]
fn a_worker_killed_mid_job_loses_it_to_another_until_max_retries() {
    need_redis!();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pool = client(&server);
    let a = worker(&server, &pool, &[]);
    let job = pool.apply_async(run_and_sleep, (dir.path().to_owned(), 60_000)).unwrap();
    let first = running_pid(dir.path(), &[]);
    let a_pid = a.pid();
    a.kill();
    // The job's own process goes with its worker (the process pool's death signals).
    poll_until("the killed worker's job process to end", || !alive(first));

    let b = worker(&server, &pool, &[]);
    let second = running_pid(dir.path(), &[first]);
    let b_pid = b.pid();
    b.kill();
    poll_until("the second job process to end", || !alive(second));

    // A third worker finds the job lost twice: with max_retries 1 it fails, naming both.
    let _c = worker(&server, &pool, &[]);
    let err = job.result().unwrap_err();
    let JobError::WorkersLost { workers } = &err else { panic!("{err:?}") };
    assert_eq!(workers.len(), 2, "{err}");
    assert!(workers[0].contains(&format!(":{a_pid}:")) && workers[1].contains(&format!(":{b_pid}:")), "{err}");
    assert!(err.to_string().contains(&a_pid.to_string()), "{err}");
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 2, "run by the two lost workers only");
    assert_eq!(pool.apply_async(square, 3).unwrap().result(), Ok(9));
}

#[test]
fn a_stopped_worker_loses_its_job_and_the_first_result_wins() {
    need_redis!();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pool = client(&server);
    let a = worker(&server, &pool, &[]);
    let job = pool.apply_async(run_and_sleep, (dir.path().to_owned(), 300)).unwrap();
    let resolved = Arc::new(AtomicUsize::new(0));
    let count = resolved.clone();
    job.add_done_callback(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
    });
    let first = running_pid(dir.path(), &[]);
    a.signal(Signal::SIGSTOP);
    let _b = worker(&server, &pool, &[]);
    // B takes the job once A's lease lapses and runs it again: the rerun's result (2) is first.
    assert_eq!(job.result(), Ok(2));
    assert_ne!(running_pid(dir.path(), &[first]), first);
    a.signal(Signal::SIGCONT);
    // A wakes up, writes its own (late) result of the first run: it is dropped.
    poll_until("the resumed worker to write its late result", || {
        pool.workers().unwrap().iter().any(|w| w.pid == a.pid() && w.jobs_done == 1)
    });
    assert_eq!(pool.apply_async(square, 4).unwrap().result(), Ok(16));
    assert_eq!(resolved.load(Ordering::SeqCst), 1, "resolved exactly once");
    drop(a);
}

#[test]
fn cancel_removes_a_pending_job_before_any_worker_runs_it() {
    need_redis!();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pool = client(&server);
    let marker = dir.path().join("ran");
    let cancelled = pool.apply_async(touch, marker.clone()).unwrap();
    let after = pool.apply_async(square, 5).unwrap();
    assert!(cancelled.cancel());
    assert_eq!(cancelled.result(), Err(JobError::Cancelled));
    let _w = worker(&server, &pool, &[]);
    // The stream is read in order: the later job's result means the cancelled one is gone.
    assert_eq!(after.result(), Ok(25));
    assert!(!marker.exists(), "a cancelled job ran");
}

#[test]
fn force_cancel_kills_the_running_job_and_a_time_limit_is_enforced() {
    need_redis!();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pool = client(&server);
    let _w = worker(&server, &pool, &[]);
    let job = pool.apply_async(run_and_sleep, (dir.path().to_owned(), 60_000)).unwrap();
    let pid = running_pid(dir.path(), &[]);
    assert!(!job.cancel(), "a running job cannot be cancelled without force");
    assert!(job.force_cancel());
    assert_eq!(job.result(), Err(JobError::Cancelled));
    poll_until("the worker to kill the job's process", || !alive(pid));

    let late = pool.submit_with_timeout(Nap(60_000), Some(Duration::from_millis(300))).unwrap();
    assert_eq!(late.result(), Err(JobError::TimedOut { limit: Duration::from_millis(300) }));
    assert_eq!(pool.submit(Nap(1)).unwrap().result(), Ok(1));
}

#[test]
fn a_dead_clients_running_job_is_killed_within_its_ttl() {
    need_redis!();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pool = client(&server);
    let _w = worker(&server, &pool, &[]);
    let c = start(
        "client_process",
        &[("STEALPOOL_TEST_CLIENT", server.url()), ("STEALPOOL_TEST_DIR", dir.path().display().to_string())],
    );
    let pid = running_pid(dir.path(), &[]);
    let killed = Instant::now();
    c.kill();
    poll_until("the job of the dead client to be killed", || !alive(pid));
    // client_ttl (1 s) + the worker's poll (50 ms), with room for a slow machine.
    assert!(killed.elapsed() < Duration::from_secs(10), "{:?}", killed.elapsed());
    assert_eq!(pool.apply_async(square, 6).unwrap().result(), Ok(36));
}

#[test]
fn redis_restarted_with_aof_mid_run_loses_nothing() {
    need_redis!();
    let mut server = RedisServer::start_persistent();
    let dir = tempfile::tempdir().unwrap();
    let pool = client(&server);
    let lease = [("STEALPOOL_TEST_LEASE_MS", "5000".to_owned()), ("STEALPOOL_TEST_PREFETCH", "2".to_owned())];
    let _w1 = worker(&server, &pool, &lease);
    let _w2 = worker(&server, &pool, &lease);
    let resolved = Arc::new(AtomicUsize::new(0));
    let jobs: Vec<_> = (0..40u64)
        .map(|i| {
            let f = pool.submit(Nap(20 + i % 3)).unwrap();
            let count = resolved.clone();
            f.add_done_callback(move |_| {
                count.fetch_add(1, Ordering::SeqCst);
            });
            f
        })
        .collect();
    poll_until("some jobs to finish", || resolved.load(Ordering::SeqCst) >= 5);
    server.kill();
    std::thread::sleep(Duration::from_millis(300)); // Redis stays down a while: a real outage
    server.restart();
    for (i, f) in jobs.into_iter().enumerate() {
        assert_eq!(f.result(), Ok(20 + i as u64 % 3), "job {i}");
    }
    assert_eq!(resolved.load(Ordering::SeqCst), 40);
    assert_eq!(pool.apply_async(square, 7).unwrap().result(), Ok(49));
    drop(dir);
}

#[test]
fn futures_fail_clearly_when_redis_is_gone_or_came_back_empty() {
    need_redis!();
    // Came back without its data (no AOF): the job is gone, its future says so.
    let mut server = RedisServer::start();
    let pool = RedisExecutor::builder(RedisConfig::new(server.url()))
        .reconnect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let lost = pool.submit(Square(2)).unwrap();
    server.restart();
    let err = lost.result().unwrap_err();
    assert!(matches!(&err, JobError::Lost { .. }) && err.to_string().contains("came back without the job"), "{err}");

    // Gone for good: after reconnect_timeout the future fails, and submit says why.
    let waiting = pool.submit(Square(3)).unwrap();
    server.kill();
    let err = waiting.result().unwrap_err();
    assert!(err.to_string().contains("stayed unreachable"), "{err}");
    let refused = pool.submit(Square(4)).unwrap_err();
    let reason = refused.broken_reason().unwrap();
    assert!(reason.contains(&format!("127.0.0.1:{}", server.port())), "{reason}");
    pool.terminate();

    let err = RedisExecutor::new(&server.url()).unwrap_err();
    assert!(err.to_string().starts_with("cannot connect to Redis at redis://127.0.0.1:"), "{err}");
}

#[test]
fn garbage_in_redis_is_skipped_without_a_panic() {
    need_redis!();
    let server = RedisServer::start();
    let pool = client(&server);
    let jobs = b"{stealpool}:jobs";
    let results = format!("{{stealpool}}:results:{}", pool.client_id());
    for garbage in [&b"\xff\xfe\x00garbage"[..], b"", &[0u8; 300]] {
        assert!(server.command(&[b"XADD", jobs, b"*", b"t", garbage]).starts_with('$'));
        assert!(server.command(&[b"XADD", results.as_bytes(), b"*", b"r", garbage]).starts_with('$'));
    }
    assert!(server.command(&[b"XADD", jobs, b"*", b"other", b"field"]).starts_with('$'));
    server.command(&[b"ZADD", b"{stealpool}:workers", b"1", b"nobody:1"]);
    server.command(&[b"HSET", b"{stealpool}:worker:nobody:1", b"pid", b"not a number"]);
    server.command(&[b"PEXPIRE", b"{stealpool}:worker:nobody:1", b"60000"]);
    let _w = worker(&server, &pool, &[]);
    assert_eq!(pool.apply_async(square, 8).unwrap().result(), Ok(64));
    assert_eq!(pool.workers().unwrap().len(), 1, "the malformed record is left out");
    poll_until("the garbage jobs to be deleted", || server.command(&[b"XLEN", jobs]).starts_with(":0"));
}

#[test]
fn the_example_runs_as_the_readme_says() {
    need_redis!();
    // target/<profile>/deps/distributed-<hash> -> target/<profile>/examples/distributed_squares
    let exe = std::env::current_exe().unwrap();
    let example = exe.parent().unwrap().parent().unwrap().join("examples").join("distributed_squares");
    assert!(
        example.exists(),
        "{} is not built: `cargo build --features redis --example distributed_squares` (.ci/run does)",
        example.display()
    );
    let server = RedisServer::start();
    let url = server.url();
    let start_worker = || Owned {
        child: Command::new(&example)
            .args(["--stealpool-worker", &url, "--processes", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let (_host1, _host2) = (start_worker(), start_worker());
    let out = Command::new(&example).arg(&url).stderr(Stdio::inherit()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("the longest chain starts at 6171 (261 steps)"), "{stdout}");
}

#[test]
fn a_job_delivered_but_never_seen_is_read_again_after_a_reconnection() {
    need_redis!();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pool = client(&server);
    let a = worker(&server, &pool, &[]); // prefetch 1: busy with `long`, it reads nothing more
    let long = pool.apply_async(run_and_sleep, (dir.path().to_owned(), 60_000)).unwrap();
    running_pid(dir.path(), &[]);
    let mut job = pool.apply_async(square, 9).unwrap();
    let name = pool.workers().unwrap().into_iter().find(|w| w.pid == a.pid()).unwrap().name;
    // Deliver it to A's pending list behind A's back, as a reply lost with a connection would.
    let reply = server.command(&[
        b"XREADGROUP",
        b"GROUP",
        b"workers",
        name.as_bytes(),
        b"COUNT",
        b"1",
        b"STREAMS",
        b"{stealpool}:jobs",
        b">",
    ]);
    assert!(reply.starts_with("*1"), "{reply}");
    // Every connection breaks; A, alive, holds a job it never saw: no other worker would take
    // it, so A must find it in its own pending list when it reconnects.
    assert!(server.command(&[b"CLIENT", b"KILL", b"TYPE", b"normal"]).starts_with(':'));
    assert!(long.force_cancel());
    assert_eq!(job.result_timeout(HANG), Ok(81));
}

#[test]
fn a_password_goes_in_the_url_and_never_into_messages() {
    need_redis!();
    let server = RedisServer::start_with_password("s3cret-pw");
    let port = server.port();
    let err = RedisExecutor::new(&format!("redis://127.0.0.1:{port}/")).unwrap_err().to_string();
    assert!(err.contains("NOAUTH") || err.to_lowercase().contains("auth"), "{err}");
    let err = RedisExecutor::new(&format!("redis://:wrong@127.0.0.1:{port}/")).unwrap_err().to_string();
    assert!(err.contains("redis://:***@127.0.0.1") && !err.contains("wrong"), "{err}");

    let url = format!("redis://:s3cret-pw@127.0.0.1:{port}/");
    let pool = RedisExecutor::new(&url).unwrap();
    let w = start("worker_process", &[("STEALPOOL_TEST_WORKER", url)]);
    poll_until("the worker to announce itself", || pool.workers().is_ok_and(|ws| ws.iter().any(|i| i.pid == w.pid())));
    assert_eq!(pool.apply_async(square, 11).unwrap().result(), Ok(121));
    assert!(!format!("{pool:?}").contains("s3cret"));
}

/// Not a test: a process that runs a worker and a client over `rediss://` and exits 0 if a job
/// comes back (a process of its own, so that `SSL_CERT_FILE`, which makes it trust the test's
/// CA, is set from its start).
#[cfg(feature = "redis-tls")]
#[test]
fn tls_process() {
    let Ok(url) = std::env::var("STEALPOOL_TEST_TLS") else { return };
    let worker = Worker::new(RedisConfig::new(url.as_str()))
        .pool(ProcessPoolBuilder::new().num_workers(1))
        .heartbeat(Duration::from_millis(100))
        .start()
        .unwrap();
    let pool = RedisExecutor::new(&url).unwrap();
    assert_eq!(pool.apply_async(square, 13).unwrap().result(), Ok(169));
    drop(pool);
    worker.stop();
}

#[cfg(feature = "redis-tls")]
#[test]
fn rediss_urls_speak_tls() {
    need_redis!();
    let certs = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(certs.path()).output();
        match out {
            Ok(o) if o.status.success() => true,
            Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => {
                eprintln!("skipped: no openssl to make certificates ({e})");
                false
            }
        }
    };
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    if !made {
        return;
    }
    std::fs::write(certs.path().join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
    let server = RedisServer::start_with_tls(certs.path());
    let url = server.tls_url().unwrap();
    // Without trusting the CA, the certificate is refused.
    let err = RedisExecutor::new(&url).unwrap_err().to_string();
    assert!(err.starts_with("cannot connect to Redis at rediss://127.0.0.1:"), "{err}");
    let mut child = start(
        "tls_process",
        &[("STEALPOOL_TEST_TLS", url), ("SSL_CERT_FILE", certs.path().join("ca.crt").display().to_string())],
    );
    let deadline = Instant::now() + HANG;
    let status = loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the TLS client did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the job over TLS failed: {status}");
    drop(child);
}

/// `Duration::MAX` means "never" in the client's settings and the worker's lease: no overflow,
/// no panic in a driver thread. (A worker's heartbeat and poll intervals are capped at a minute:
/// see `a_worker_with_duration_max_intervals_serves_and_stops`.)
#[test]
fn duration_max_settings_mean_never_and_panic_nowhere() {
    need_redis!();
    let server = RedisServer::start();
    let pool = RedisExecutor::builder(RedisConfig::new(server.url()))
        .client_ttl(Duration::MAX)
        .result_ttl(Duration::MAX)
        .queue_ttl(Duration::MAX)
        .reconnect_timeout(Duration::MAX)
        .build()
        .unwrap();
    let worker = Worker::new(RedisConfig::new(server.url()))
        .pool(ProcessPoolBuilder::new().num_workers(1))
        .lease(Duration::MAX)
        .start()
        .unwrap();
    assert_eq!(pool.apply_async(square, 9).unwrap().result(), Ok(81));
    assert_eq!(pool.map(square, 1..=3u64).unwrap().map(Result::unwrap).sum::<u64>(), 14);
    worker.stop();
}

// ----- worker-side defects found in review (issue 16) ----------------------------------------

/// Runs once as `run_and_sleep` does without sleeping, and then, on its first run only, sleeps a
/// minute: how many runs there were when it started.
fn hang_on_first_run(dir: PathBuf) -> usize {
    let runs = run_and_sleep((dir, 0));
    if runs == 1 {
        std::thread::sleep(Duration::from_secs(60));
    }
    runs
}
stealpool::register_fn!(hang_on_first_run);

fn bytes_of(n: usize) -> Vec<u8> {
    vec![7; n]
}
stealpool::register_fn!(bytes_of);

/// Counts how many times `future` resolves.
fn count_resolutions<T: Send + 'static>(future: &stealpool::Future<T>) -> Arc<AtomicUsize> {
    let resolved = Arc::new(AtomicUsize::new(0));
    let count = resolved.clone();
    future.add_done_callback(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
    });
    resolved
}

#[test]
fn a_lost_workers_job_behind_a_live_workers_long_job_is_reclaimed() {
    need_redis!();
    let server = RedisServer::start();
    let (ahead, behind) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pool = client(&server);
    // A, alive, holds a job that runs far longer than the lease: first in the pending list.
    let _a = worker(&server, &pool, &[]);
    let long = pool.apply_async(run_and_sleep, (ahead.path().to_owned(), 60_000)).unwrap();
    running_pid(ahead.path(), &[]);
    // B takes the next job and is killed while it runs it.
    let b = worker(&server, &pool, &[]);
    let job = pool.apply_async(hang_on_first_run, behind.path().to_owned()).unwrap();
    let resolved = count_resolutions(&job);
    let first = running_pid(behind.path(), &[]);
    b.kill();
    poll_until("the killed worker's job process to end", || !alive(first));
    // C has room for one job: it must look past A's (idle for more than the lease, but A is
    // alive) to B's.
    let _c = worker(&server, &pool, &[]);
    let mut job = job;
    assert_eq!(job.result_timeout(HANG), Ok(2), "the lost worker's job was not run again");
    poll_until("the future's callback", || resolved.load(Ordering::SeqCst) == 1);
    assert!(long.force_cancel());
    assert_eq!(pool.apply_async(square, 3).unwrap().result(), Ok(9));
    assert_eq!(resolved.load(Ordering::SeqCst), 1, "resolved exactly once");
    assert_eq!(std::fs::read_to_string(behind.path().join("runs")).unwrap().lines().count(), 2);
}

#[test]
fn a_worker_named_like_a_lost_one_inherits_its_jobs_only_through_reclaim() {
    need_redis!();
    let server = RedisServer::start();
    let pool = RedisExecutor::builder(RedisConfig::new(server.url())).max_retries(0).build().unwrap();
    // Two workers on this host have names of their own, with the host and pid in them.
    let (_a, _b) = (worker(&server, &pool, &[]), worker(&server, &pool, &[]));
    let workers = pool.workers().unwrap();
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert_ne!(workers[0].name, workers[1].name);
    for w in &workers {
        assert!(w.name.starts_with(&format!("{}:{}:", w.host, w.pid)) && w.name.len() > w.host.len() + 10, "{w:?}");
    }
    drop((_a, _b));

    // A worker of this process, dead, left a job in its pending list under the name a worker
    // would get from its host and pid alone (pid 1 in every container; a restart on a host).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    let namesake = format!("{host}:{}", std::process::id());
    let job = pool.apply_async(square, 5).unwrap();
    let jobs = b"{stealpool}:jobs";
    let made = server.command(&[b"XGROUP", b"CREATE", jobs, b"workers", b"0", b"MKSTREAM"]);
    assert!(made.starts_with("+OK") || made.contains("BUSYGROUP"), "{made}");
    let reply = server.command(&[
        b"XREADGROUP",
        b"GROUP",
        b"workers",
        namesake.as_bytes(),
        b"COUNT",
        b"1",
        b"STREAMS",
        jobs,
        b">",
    ]);
    assert!(reply.starts_with("*1"), "{reply}");
    // A worker started in this process now does not read that job as its own: it reclaims it,
    // counting the loss, so with max_retries 0 the job fails naming the lost worker.
    let worker = Worker::new(RedisConfig::new(server.url()))
        .pool(ProcessPoolBuilder::new().num_workers(1))
        .heartbeat(Duration::from_millis(100))
        .lease(Duration::from_millis(LEASE_MS))
        .start()
        .unwrap();
    assert_ne!(worker.name(), namesake);
    let mut job = job;
    let err = job.result_timeout(HANG).unwrap_err();
    assert!(
        matches!(&err, stealpool::ResultTimeoutError::Failed(JobError::WorkersLost { workers }) if **workers == [namesake.clone()]),
        "{err:?}"
    );
    worker.stop();
}

#[test]
fn a_result_redis_refuses_fails_its_future_instead_of_hanging() {
    need_redis!();
    let server = RedisServer::start();
    let pool = client(&server);
    let w = worker(&server, &pool, &[]);
    assert_eq!(pool.apply_async(bytes_of, 3).unwrap().result(), Ok(vec![7; 3]));
    // Redis takes no write once it holds 8 MiB, and evicts nothing: a 16 MiB result never fits.
    for (key, value) in [("maxmemory", "8mb"), ("maxmemory-policy", "noeviction")] {
        let set = server.command(&[b"CONFIG", b"SET", key.as_bytes(), value.as_bytes()]);
        assert!(set.starts_with("+OK"), "{set}");
    }
    let mut big = pool.apply_async(bytes_of, 16 << 20).unwrap();
    let resolved = count_resolutions(&big);
    let err = big.result_timeout(HANG).unwrap_err();
    let stealpool::ResultTimeoutError::Failed(JobError::ResultRefused { bytes, reason }) = &err else {
        panic!("{err:?}")
    };
    let named = format!("worker {}:{}:", std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(), w.pid());
    assert!(*bytes > 16 << 20 && reason.starts_with(&named) && reason.contains("OOM"), "{err:?}");
    // The worker goes on serving, and the refused job is acknowledged, not left to be rerun.
    assert_eq!(pool.apply_async(bytes_of, 2).unwrap().result(), Ok(vec![7; 2]));
    poll_until("the refused job to be acknowledged", || {
        server.command(&[b"XPENDING", b"{stealpool}:jobs", b"workers"]).starts_with("*4\r\n:0\r\n")
    });
    assert_eq!(resolved.load(Ordering::SeqCst), 1);
}

#[test]
fn a_worker_with_duration_max_intervals_serves_and_stops() {
    need_redis!();
    let server = RedisServer::start();
    let pool = client(&server);
    let worker = Worker::new(RedisConfig::new(server.url()))
        .pool(ProcessPoolBuilder::new().num_workers(1))
        .heartbeat(Duration::MAX)
        .poll(Duration::MAX)
        .start()
        .unwrap();
    let name = worker.name().to_owned();
    poll_until("the worker to announce itself", || pool.workers().is_ok_and(|ws| ws.iter().any(|w| w.name == name)));
    assert_eq!(pool.apply_async(square, 6).unwrap().result(), Ok(36));
    // Stopping waits for the control thread, which must not sleep for ever between looks.
    let (stopped, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        worker.stop();
        let _ = stopped.send(());
    });
    wait.recv_timeout(HANG).expect("the worker did not stop");
    poll_until("the stopped worker's record to go", || pool.workers().is_ok_and(|ws| ws.is_empty()));
}
