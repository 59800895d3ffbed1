//! The Redis client's side of an outage, with a real `redis-server` (one per test, on a free
//! loopback port) killed and restarted under it: thousands of unresolved futures checked in
//! batches after a restart (those Redis still has resolve, those it lost fail clearly), a Redis
//! that flaps not extending the reconnect deadline, the reconnect timeout following
//! `client_ttl`; and the example reporting a failed job as a message, not a panic.
//!
//! Workers run in this process (`Worker::start`, its process pool forked from the fork server);
//! every worker, server and child process is owned by a guard that stops it, also when a test
//! fails. Skipped, with the reason printed, when `redis-server` is not installed (`.ci/run`
//! installs it).

mod common;
#[path = "common/generic.rs"]
mod generic;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::{RedisServer, unavailable};
use generic::Square;
use stealpool::distributed::{RedisConfig, RedisExecutor, RedisExecutorBuilder, Worker, WorkerHandle};
use stealpool::{Executor, Future, JobError, ProcessPoolBuilder, ReturnWhen, wait};

/// A square that takes a millisecond, so that thousands of them outlast a restart.
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(1));
    x * x
}
stealpool::register_fn!(slow_square);

/// How long a test waits for something that must happen.
const HANG: Duration = Duration::from_secs(30);

macro_rules! need_redis {
    () => {
        if let Some(reason) = unavailable() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

/// A worker in this process, stopped when dropped.
struct Serving(Option<WorkerHandle>);

impl Serving {
    fn start(server: &RedisServer) -> Serving {
        let worker = Worker::new(RedisConfig::new(server.url()))
            .pool(ProcessPoolBuilder::new().num_workers(2))
            .heartbeat(Duration::from_millis(100))
            .start()
            .unwrap();
        Serving(Some(worker))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(worker) = self.0.take() {
            worker.stop();
        }
    }
}

/// A client terminated when dropped: a failing test must not wait (in the executor's drop) for
/// jobs no worker will run.
struct Client(RedisExecutor);

impl Client {
    fn new(builder: RedisExecutorBuilder) -> Client {
        Client(builder.build().unwrap())
    }
}

impl std::ops::Deref for Client {
    type Target = RedisExecutor;
    fn deref(&self) -> &RedisExecutor {
        &self.0
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.0.terminate();
    }
}

/// The client's builder, with the default settings.
fn builder(server: &RedisServer) -> RedisExecutorBuilder {
    RedisExecutor::builder(RedisConfig::new(server.url()))
}

/// Waits (at most [`HANG`]) until every future in `futures` has resolved.
fn all_resolved<T: Send + 'static>(futures: &[Future<T>]) -> bool {
    wait(futures, ReturnWhen::AllCompleted, Some(HANG)).not_done.is_empty()
}

/// Checks that job `i` of `futures` resolved (within [`HANG`]) with `i * i`.
fn assert_squares(futures: Vec<Future<u64>>, what: &str) {
    assert!(all_resolved(&futures), "{what} did not all resolve");
    for (i, f) in (0u64..).zip(futures) {
        assert_eq!(f.result(), Ok(i * i), "job {i}");
    }
}

/// Whether the client's result reader is connected again: our own probe is one client, the
/// reader another.
fn reader_connected(server: &RedisServer) -> bool {
    let info = server.command(&[b"INFO", b"clients"]);
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .is_some_and(|n| n >= 2)
}

/// Thousands of unresolved jobs across a restart (more than one batch of the client's check):
/// those Redis came back with resolve once a worker runs them, those it came back without fail
/// with `JobError::Lost`, naming both possible causes, each exactly the ones it lost.
#[test]
fn thousands_of_pending_jobs_are_checked_after_a_restart() {
    need_redis!();
    // No AOF; an explicit SAVE is the point Redis comes back to.
    let mut server = RedisServer::start();
    let pool = Client::new(builder(&server));
    const KEPT: u64 = 2500;
    const LOST: u64 = 2600;
    let kept: Vec<_> = (0..KEPT).map(|i| pool.submit(Square(i)).unwrap()).collect();
    assert!(server.command(&[b"SAVE"]).starts_with("+OK"), "SAVE failed");
    let lost: Vec<_> = (KEPT..KEPT + LOST).map(|i| pool.submit(Square(i)).unwrap()).collect();
    server.kill();
    server.restart(); // loads the snapshot: the first KEPT jobs only
    assert!(server.command(&[b"XLEN", b"{stealpool}:jobs"]).starts_with(&format!(":{KEPT}\r")));

    assert!(all_resolved(&lost), "the lost jobs' futures still wait");
    for (i, f) in lost.into_iter().enumerate() {
        let err = f.result().unwrap_err();
        let JobError::Lost { .. } = &err else { panic!("job {i}: {err:?}") };
        let message = err.to_string();
        assert!(message.contains("came back without the job"), "{message}");
        assert!(message.contains("append-only file") && message.contains("client_ttl"), "{message}");
    }
    assert!(kept.iter().all(|f| !f.is_done()), "a job Redis still has was failed");
    // Checked in batches (of 1000), never all in one script call that would hold Redis: every
    // script call since the restart was the client's check.
    let mut redis = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut redis).unwrap();
    let succeeded = |name: &str| -> u64 {
        let Some(line) = stats.lines().find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:"))) else { return 0 };
        let field = |key: &str| -> u64 {
            line.split(',').find_map(|kv| kv.strip_prefix(&format!("{key}="))).map_or(0, |v| v.parse().unwrap())
        };
        field("calls") - field("failed_calls")
    };
    let scripts = succeeded("evalsha") + succeeded("eval");
    let batches = (KEPT + LOST).div_ceil(1000);
    assert!(scripts >= batches, "{scripts} script calls for {} jobs: {stats}", KEPT + LOST);

    let _worker = Serving::start(&server);
    assert_squares(kept, "the kept jobs");
}

/// A restart in the middle of thousands of jobs being run (with AOF): the worker writes results
/// while the client is still away, and the client, back, reads them (up to the last id Redis
/// has) before it looks for lost jobs, so none is failed and none is lost.
#[test]
fn thousands_of_jobs_running_through_a_restart_all_resolve() {
    need_redis!();
    let mut server = RedisServer::start_persistent();
    let pool = Client::new(builder(&server));
    const JOBS: u64 = 3000;
    let jobs: Vec<_> = (0..JOBS).map(|i| pool.apply_async(slow_square, i).unwrap()).collect();
    let worker = Serving::start(&server);
    // At least 1.5 s of work on two processes: Redis goes while most of it is still to do.
    let deadline = Instant::now() + HANG;
    while !jobs.iter().any(Future::is_done) {
        assert!(Instant::now() < deadline, "no job ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    server.restart();
    assert_squares(jobs, "the jobs, after the restart,");
    drop(worker);
}

/// A Redis that comes back for a moment and goes again, over and over, is still gone: the
/// futures fail once `reconnect_timeout` has passed since it first went, not never.
#[test]
fn a_flapping_redis_does_not_extend_the_reconnect_deadline() {
    need_redis!();
    let mut server = RedisServer::start_persistent();
    let timeout = Duration::from_secs(2);
    let pool = Client::new(builder(&server).reconnect_timeout(timeout));
    let jobs: Vec<_> = (0..3u64).map(|i| pool.submit(Square(i)).unwrap()).collect(); // no worker
    let went = Instant::now();
    let deadline = went + HANG;
    let mut flaps = 0;
    while !jobs.iter().all(Future::is_done) {
        assert!(Instant::now() < deadline, "the futures still wait after {flaps} flaps in {HANG:?}");
        server.kill();
        server.restart();
        // Down again as soon as the client is back: each stay is far shorter than the
        // timeout, and (with AOF) Redis has every job, so only the deadline can fail them.
        while !reader_connected(&server) && !jobs.iter().all(Future::is_done) {
            assert!(Instant::now() < deadline, "the client never reconnected");
            std::thread::sleep(Duration::from_millis(5));
        }
        flaps += 1;
    }
    let failed = went.elapsed();
    assert!(failed >= timeout, "failed after {failed:?}, before the timeout");
    assert!(flaps >= 2, "Redis flapped only {flaps} times: the test proves nothing");
    for f in jobs {
        let err = f.result().unwrap_err();
        assert!(err.to_string().contains("stayed unreachable"), "{err}");
    }
}

/// Without a `reconnect_timeout` of its own, the client gives up when workers give up on it:
/// after its `client_ttl`.
#[test]
fn the_reconnect_timeout_follows_client_ttl() {
    need_redis!();
    let mut server = RedisServer::start();
    let ttl = Duration::from_secs(2);
    let pool = Client::new(builder(&server).client_ttl(ttl));
    let mut job = pool.submit(Square(2)).unwrap();
    let went = Instant::now();
    server.kill();
    let err = match job.result_timeout(HANG) {
        Err(stealpool::ResultTimeoutError::Failed(e)) => e,
        other => panic!("{other:?}"),
    };
    assert!(went.elapsed() >= ttl, "failed after {:?}", went.elapsed());
    assert!(err.to_string().contains(&format!("for {ttl:?} (the client's reconnect_timeout)")), "{err}");

    let refused = builder(&server).client_ttl(ttl).reconnect_timeout(ttl * 2).build().unwrap_err();
    assert!(refused.is_invalid_settings(), "{refused}");
}

/// The example run as the README says, with workers of another build (this test binary, which
/// has no `collatz_len`): every job fails, and the client says why on stderr and exits with 1,
/// without a panic.
#[test]
fn the_example_reports_a_failed_job_and_exits_1() {
    need_redis!();
    let example = common::example_binary("distributed_squares", "redis");
    let server = RedisServer::start();
    let _worker = Serving::start(&server);
    let out = Command::new(&example).arg(server.url()).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("a job failed:") && stderr.contains("is not registered"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
