//! [`Worker`]: a process that takes jobs from Redis and runs them in a local
//! [`ProcessPoolExecutor`], and the one-line way to make a program one
//! ([`serve_if_requested`]).
//!
//! Two threads, each with its own connection: the *reader* blocks on the consumer group for
//! new jobs while there is room in the local pool; the *control* thread (`control.rs`) writes
//! results, sends heartbeats, takes over the jobs of lost workers, and kills jobs that were
//! force-cancelled or whose client is gone.
//!
//! This file must never run a job it could not read (a malformed entry is acknowledged and
//! deleted), never run one whose client is gone, and never hold more jobs than its room.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redis::Value;

use super::client::{client_id, is_connection_error, millis};
use super::connection::{Backoff, ConnectError, RedisConfig};
use super::control;
use super::wire::{self, Entry, GROUP, JOB_FIELD, JobHeader, Keys};
use crate::error::{BuildError, JobError};
use crate::executor::Executor;
use crate::future::Future;
use crate::process::protocol::Status;
use crate::process::{ProcessPoolBuilder, ProcessPoolExecutor};

/// How long one read of the job stream blocks (also how long a stopping worker takes to see it).
pub(crate) const BLOCK: Duration = Duration::from_millis(250);

/// The longest heartbeat and poll intervals: a worker that looked less often would leave lost
/// workers' jobs, forced cancels and dead clients' jobs unseen for longer than anyone waits (and
/// `Duration::MAX` would mean never).
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// A worker: serves the jobs of every client of one Redis namespace, in a local process pool.
///
/// # Examples
/// A worker needs a Redis server, so this is not run here (`tests/distributed.rs` runs
/// workers; `examples/distributed_squares.rs` is a whole program):
/// ```no_run
/// use std::time::Duration;
/// use stealpool::ProcessPoolBuilder;
/// use stealpool::distributed::{RedisConfig, Worker};
///
/// let pool = ProcessPoolBuilder::new().num_workers(8).max_tasks_per_child(1000);
/// let worker = Worker::new(RedisConfig::new("redis://127.0.0.1:6379/")).pool(pool).start().unwrap();
/// assert!(worker.name().contains(&format!(":{}:", std::process::id())));
/// worker.stop();
/// ```
#[derive(Debug)]
pub struct Worker {
    config: RedisConfig,
    pool: ProcessPoolBuilder,
    heartbeat: Duration,
    lease: Duration,
    prefetch: Option<usize>,
    poll: Duration,
}

impl Worker {
    /// A worker for the Redis of `config`, with a local pool of one process per CPU.
    pub fn new(config: RedisConfig) -> Worker {
        Worker {
            config,
            pool: ProcessPoolBuilder::new(),
            heartbeat: Duration::from_secs(1),
            lease: Duration::from_secs(10),
            prefetch: None,
            poll: Duration::from_millis(100),
        }
    }

    /// The local pool's settings: the number of processes, `max_tasks_per_child`, a default
    /// time limit for jobs that carry none, an initializer.
    pub fn pool(mut self, pool: ProcessPoolBuilder) -> Worker {
        self.pool = pool;
        self
    }

    /// How often the worker renews its record and looks for the jobs of lost workers (default
    /// 1 s; at least 10 ms, at most one minute).
    pub fn heartbeat(mut self, every: Duration) -> Worker {
        self.heartbeat = every.clamp(Duration::from_millis(10), MAX_INTERVAL);
        self
    }

    /// How long a worker's record lives without a heartbeat (default 10 s): a worker silent for
    /// this long counts as lost, and its jobs are taken over by the others. At least twice the
    /// heartbeat.
    pub fn lease(mut self, lease: Duration) -> Worker {
        self.lease = lease;
        self
    }

    /// How many jobs the worker holds at once, running or waiting in its pool (default four times
    /// the processes). Held jobs count as running: they cannot be cancelled without force.
    pub fn prefetch(mut self, jobs: usize) -> Worker {
        self.prefetch = Some(jobs.max(1));
        self
    }

    /// How often the worker checks its running jobs for a forced cancel or a lost client
    /// (default 100 ms; at least 10 ms, at most one minute).
    pub fn poll(mut self, every: Duration) -> Worker {
        self.poll = every.clamp(Duration::from_millis(10), MAX_INTERVAL);
        self
    }

    /// Starts the local pool and the worker's threads; returns at once.
    ///
    /// # Errors
    /// [`WorkerError`] if Redis cannot be reached or the pool cannot start.
    pub fn start(self) -> Result<WorkerHandle, WorkerError> {
        let pool = self.pool.build().map_err(WorkerError::Pool)?;
        let processes = pool.max_workers();
        let reader_connection = self.config.connect().map_err(WorkerError::Connect)?;
        let control_connection = self.config.connect().map_err(WorkerError::Connect)?;
        let host = wire::host_name();
        let (done_tx, done_rx) = mpsc::channel();
        let state = Arc::new(State {
            // `host:pid:<64 random bits>`, as a client id: a pid is no name (pid 1 in every
            // container; a restarted worker on the same host), and two workers under one name
            // would share one consumer and read each other's jobs as their own.
            name: client_id(),
            host,
            keys: Keys::new(self.config.keys()),
            processes,
            prefetch: self.prefetch.unwrap_or(4 * processes),
            heartbeat: self.heartbeat,
            lease: self.lease.max(self.heartbeat.saturating_mul(2)),
            poll: self.poll,
            config: self.config,
            pool,
            held: Mutex::new(HashMap::new()),
            room: Condvar::new(),
            done: Mutex::new(done_tx),
            jobs_done: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            clients_seen: Mutex::new(HashMap::new()),
            unwritten: Mutex::new(HashSet::new()),
        });
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(body)
                .map_err(|e| WorkerError::Connect(ConnectError::other(&state.config, format!("no thread: {e}"))))
        };
        let (s1, s2) = (state.clone(), state.clone());
        let control =
            spawn("stealpool-redis-control", Box::new(move || control::run(&s2, control_connection, done_rx)))?;
        let reader = spawn("stealpool-redis-reader", Box::new(move || read_jobs(&s1, reader_connection)))?;
        Ok(WorkerHandle { state, threads: vec![reader, control] })
    }

    /// Starts and serves until the process is killed.
    ///
    /// # Errors
    /// As [`start`](Worker::start).
    pub fn run(self) -> Result<(), WorkerError> {
        let handle = self.start()?;
        for thread in handle.threads {
            let _ = thread.join();
        }
        Ok(())
    }
}

/// The way to stop a started [`Worker`].
#[derive(Debug)]
pub struct WorkerHandle {
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerHandle {
    /// The worker's name, `host:pid:<64 random bits>` (its consumer name in Redis), as
    /// [`workers`](super::RedisExecutor::workers) lists it.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Stops taking jobs, lets those it holds finish and their results be written, removes the
    /// worker's record, and returns.
    pub fn stop(self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.room.notify_all();
        for thread in self.threads {
            let _ = thread.join();
        }
        self.state.pool.shutdown(true, false);
    }
}

/// A worker could not start.
#[derive(Debug)]
pub enum WorkerError {
    /// Redis could not be reached.
    Connect(ConnectError),
    /// The local process pool could not start.
    Pool(BuildError),
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::Connect(e) => write!(f, "the worker cannot start: {e}"),
            WorkerError::Pool(e) => write!(f, "the worker cannot start its process pool: {e}"),
        }
    }
}

impl std::error::Error for WorkerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkerError::Connect(e) => Some(e),
            WorkerError::Pool(e) => Some(e),
        }
    }
}

/// Serves as a worker if the program was started as `PROGRAM --stealpool-worker URL
/// [--processes N] [--namespace NAME]`, and then exits; returns at once otherwise. Call it
/// first thing in `main`: the same binary is then both the client and, on any host, the worker.
///
/// # Examples
/// ```no_run
/// // first thing in `main`:
/// stealpool::distributed::serve_if_requested();
/// // ... then the client: RedisExecutor::new(url) ...
/// ```
pub fn serve_if_requested() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--stealpool-worker") {
        return;
    }
    let usage = "usage: PROGRAM --stealpool-worker redis://[user:password@]host[:port][/db] [--processes N] \
                 [--namespace NAME]";
    let Some(url) = args.get(2) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mut config = RedisConfig::new(url.as_str());
    let mut pool = ProcessPoolBuilder::new();
    let mut rest = args[3..].iter();
    while let Some(flag) = rest.next() {
        match (flag.as_str(), rest.next()) {
            ("--processes", Some(n)) if n.parse::<usize>().is_ok() => pool = pool.num_workers(n.parse().unwrap_or(0)),
            ("--namespace", Some(ns)) => config = config.namespace(ns),
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
    }
    match Worker::new(config).pool(pool).run() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("stealpool worker: {e}");
            std::process::exit(1);
        }
    }
}

/// What the worker's threads share.
#[derive(Debug)]
pub(crate) struct State {
    /// `host:pid:<random>`: the worker's consumer name and record.
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    pub(crate) processes: usize,
    pub(crate) prefetch: usize,
    pub(crate) heartbeat: Duration,
    pub(crate) lease: Duration,
    pub(crate) poll: Duration,
    pub(crate) pool: ProcessPoolExecutor,
    /// The jobs this worker holds, by entry id.
    pub(crate) held: Mutex<HashMap<String, Held>>,
    /// Notified when a held job ends (there is room) or the worker stops.
    pub(crate) room: Condvar,
    /// Where a held job's end is announced (its entry id, or a job to write off).
    pub(crate) done: Mutex<mpsc::Sender<Ended>>,
    pub(crate) jobs_done: AtomicU64,
    pub(crate) stop: AtomicBool,
    /// Clients found alive, and when (entries older than `poll` are dropped at each use).
    pub(crate) clients_seen: Mutex<HashMap<String, Instant>>,
    /// Entries no longer held whose acknowledgement is not written yet (their results wait
    /// for Redis): still in this worker's pending list, and not to be taken again from there.
    pub(crate) unwritten: Mutex<HashSet<String>>,
}

/// A job the worker holds.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) client: String,
    pub(crate) seq: u64,
    pub(crate) result_ttl_ms: u64,
    /// Its future in the local pool.
    pub(crate) future: Future<(Status, Vec<u8>)>,
}

/// What the control thread is told.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The held job with this entry id has ended in the local pool.
    Ran(String),
    /// This entry is not to run: acknowledge and delete it, and answer its client with the
    /// failure if there is one (a client of `None` is a malformed entry: no one to answer).
    WrittenOff { entry: String, answer: Option<(String, u64, u64, JobError)> },
}

/// The reader thread: takes new jobs while there is room.
fn read_jobs(state: &Arc<State>, first: redis::Connection) {
    let mut connection = Some(first);
    let mut backoff = Backoff::new();
    // Jobs already delivered to this worker that it does not hold (a reply lost with a broken
    // connection, a failure after reading): they are in its pending list, and no other worker
    // takes them while this one is alive, so it reads them again (its own history, from "0") at
    // start and after every failure, `room` at a time, from the last one it read.
    let mut recover = Some(String::from("0"));
    while !state.stop.load(Ordering::SeqCst) {
        let room = {
            let mut held = state.held.lock();
            while held.len() >= state.prefetch && !state.stop.load(Ordering::SeqCst) {
                state.room.wait_for(&mut held, BLOCK);
            }
            state.prefetch.saturating_sub(held.len())
        };
        if room == 0 {
            continue;
        }
        let Some(c) = state.config.reconnect(&mut connection, &mut backoff) else { continue };
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(GROUP).arg(&state.name);
        if let Some(after) = &recover {
            read.arg("COUNT").arg(room).arg("STREAMS").arg(state.keys.jobs()).arg(after);
        } else {
            read.arg("COUNT").arg(room).arg("BLOCK").arg(millis(BLOCK)).arg("STREAMS").arg(state.keys.jobs()).arg(">");
        }
        match read.query::<Value>(c) {
            Ok(reply) => {
                let mut entries = wire::stream_entries(&reply);
                if recover.is_some() {
                    // A full page may have more behind it; a short one is the end of the list.
                    recover = entries.last().filter(|_| entries.len() >= room).map(|e| e.id.clone());
                    // An entry leaves `held` only once it is in `unwritten` (the control thread
                    // adds it there first), so no ended job is taken again between the two.
                    let held = state.held.lock();
                    let unwritten = state.unwritten.lock();
                    entries.retain(|e| !held.contains_key(&e.id) && !unwritten.contains(&e.id));
                }
                let entries = entries.into_iter().map(|e| (e, Vec::new())).collect();
                if let Err(e) = take_jobs(state, c, entries) {
                    recover = Some(String::from("0"));
                    if is_connection_error(&e) {
                        connection = None;
                    }
                }
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                // A new (or expired, or restarted-empty) stream: make the group; jobs added
                // before it count ("0").
                let _ = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(state.keys.jobs())
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .exec(c);
                let _ = redis::cmd("PEXPIRE").arg(state.keys.jobs()).arg(24 * 3600 * 1000).arg("NX").exec(c);
            }
            Err(e) if is_connection_error(&e) => {
                connection = None;
                recover = Some(String::from("0"));
            }
            Err(e) => {
                recover = Some(String::from("0"));
                eprintln!("stealpool worker {}: reading jobs: {e}", state.name);
                std::thread::sleep(BLOCK);
            }
        }
    }
}

/// Starts the jobs of `entries` in the local pool, each with the list of workers that lost it
/// before (empty for a first delivery): writes off malformed ones, those whose client is gone,
/// and those lost more often than their `max_retries` allows.
pub(crate) fn take_jobs(
    state: &State,
    c: &mut redis::Connection,
    entries: Vec<(Entry, Vec<String>)>,
) -> redis::RedisResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut clients: Vec<String> =
        entries.iter().filter_map(|(e, _)| Some(JobHeader::parse(e.field(JOB_FIELD)?)?.0.client.to_owned())).collect();
    clients.sort();
    clients.dedup();
    // A client seen alive within the last poll interval is not asked about again: a burst of
    // small jobs costs no extra round trip per read. (One that died meanwhile has its jobs
    // killed by the next poll: the bound is `client_ttl` plus two poll intervals.)
    let now = Instant::now();
    let mut seen = state.clients_seen.lock();
    seen.retain(|_, at| now.duration_since(*at) < state.poll);
    let unknown: Vec<&String> = clients.iter().filter(|c| !seen.contains_key(*c)).collect();
    if !unknown.is_empty() {
        let mut exists = redis::pipe();
        for client in &unknown {
            exists.cmd("EXISTS").arg(state.keys.client(client));
        }
        let answers = exists.query::<Vec<bool>>(c)?;
        for (client, alive) in unknown.into_iter().zip(answers) {
            if alive {
                seen.insert(client.clone(), now);
            }
        }
    }
    let alive: Vec<bool> = clients.iter().map(|c| seen.contains_key(c)).collect();
    drop(seen);
    let done = state.done.lock().clone();
    for (entry, lost) in entries {
        let id = entry.id.clone();
        let Some((header, input)) = entry.field(JOB_FIELD).and_then(JobHeader::parse) else {
            eprintln!("stealpool worker {}: dropping malformed job entry {}", state.name, entry.id);
            let _ = done.send(Ended::WrittenOff { entry: entry.id, answer: None });
            continue;
        };
        let answer = |error| Some((header.client.to_owned(), header.seq, header.result_ttl_ms, error));
        let client_alive =
            clients.binary_search_by(|c| c.as_str().cmp(header.client)).is_ok_and(|i| alive.get(i) == Some(&true));
        if !client_alive {
            let _ = done.send(Ended::WrittenOff { entry: id, answer: None });
            continue;
        }
        if lost.len() > header.max_retries as usize {
            let error = JobError::WorkersLost { workers: lost.into() };
            let _ = done.send(Ended::WrittenOff { entry: id, answer: answer(error) });
            continue;
        }
        let limit = header.limit_ms.map(Duration::from_millis);
        match state.pool.submit_encoded(header.code, header.layout, input, limit) {
            Ok(future) => {
                let mut held = state.held.lock();
                let done = done.clone();
                let announced = id.clone();
                future.add_done_callback(move |_| {
                    let _ = done.send(Ended::Ran(announced));
                });
                let job = Held {
                    client: header.client.to_owned(),
                    seq: header.seq,
                    result_ttl_ms: header.result_ttl_ms,
                    future,
                };
                held.insert(id, job);
            }
            Err(e) => {
                let reason = e.broken_reason().unwrap_or("the worker's process pool is shut down").to_owned();
                let error = JobError::Broken { reason };
                let _ = done.send(Ended::WrittenOff { entry: id, answer: answer(error) });
            }
        }
    }
    Ok(())
}
