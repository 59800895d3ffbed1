//! [`RedisExecutor`]: the client. It adds jobs to the job stream, keeps a table of the futures
//! it has handed out, and a thread of its own (`results.rs`) reads its result stream and
//! resolves them.
//!
//! This file must never hold the table's lock across a Redis round trip other than the one that
//! adds a job (so that a result is never seen before its job is in the table), and never resolve
//! a future twice: a job leaves the table exactly once, and whoever removes it resolves it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};

use super::builder::RedisExecutorBuilder;
use super::connection::{ConnectError, RedisConfig};
use super::control::WorkerInfo;
use super::scripts;
use super::wire::{self, GROUP, JOB_FIELD, JobHeader, Keys};
use crate::error::{JobError, JoinError, SubmitError};
use crate::executor::Executor;
use crate::future::{Cell, Core, Ending, Future};
use crate::process::encoded::{EncodedSubmit, encoded_submit_impls};
use crate::process::protocol::{self, InputLayout, Status};
use crate::process::{RemoteJob, decode_one};

/// The largest job frame the client sends (a Redis string may hold 512 MiB; a job this large
/// belongs in shared storage, with its address in the job).
const MAX_JOB_BYTES: usize = 64 << 20;

/// The [`Executor`] over Redis: jobs go to worker processes on any host that run the same
/// binary (see the [module docs](super) for the semantics and `PROTOCOL.md` for the keys).
///
/// It runs the code the process pool runs, and only that: functions registered with
/// [`register_fn!`](crate::register_fn) (through `apply_async`, `map`, `imap`,
/// `imap_unordered`, `starmap`) and job types registered with
/// [`register_job!`](crate::register_job) (through [`submit`](RedisExecutor::submit)).
///
/// Dropping it waits for its jobs, like the pools (so, for as long as no worker runs them, or
/// until Redis has been unreachable for `reconnect_timeout`); `terminate` cancels them.
///
/// # Examples
/// Needs a Redis server and a worker, so not run here (`tests/distributed.rs` runs the same):
/// ```no_run
/// use stealpool::Executor;
/// use stealpool::distributed::RedisExecutor;
///
/// fn square(x: u64) -> u64 { x * x }
/// stealpool::register_fn!(square);
///
/// let pool = RedisExecutor::new("redis://127.0.0.1:6379/").unwrap();
/// let squares: Vec<u64> = pool.map(square, 1..=4u64).unwrap().map(Result::unwrap).collect();
/// assert_eq!(squares, [1, 4, 9, 16]);
/// ```
pub struct RedisExecutor {
    pub(super) shared: Arc<Shared>,
    pub(super) reader: Mutex<Option<JoinHandle<()>>>,
}

/// What the executor, its futures and its result reader share.
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    /// This client's id: its result stream and liveness key are named by it.
    pub(crate) id: String,
    pub(crate) options: RedisExecutorBuilder,
    /// The connection jobs are added and cancelled on (`None` after it failed).
    pub(super) submitter: Mutex<Option<redis::Connection>>,
    pub(crate) table: Mutex<Table>,
    /// Notified when the table empties.
    pub(crate) drained: Condvar,
    pub(super) seq: AtomicU64,
    /// Tells the result reader to end once the table is empty.
    pub(crate) stop: AtomicBool,
}

/// The jobs whose futures are unresolved.
pub(crate) struct Table {
    pub(crate) waiting: HashMap<u64, Waiting>,
    pub(crate) open: bool,
}

/// One unresolved job.
pub(crate) struct Waiting {
    /// Its entry id in the job stream, once Redis gave it.
    pub(crate) entry: Option<String>,
    pub(crate) sink: Arc<dyn Sink>,
}

/// The resolving side of a future, whatever its type.
pub(crate) trait Sink: Send + Sync {
    /// The code ran on a worker: decode its reply.
    fn deliver(&self, status: Status, body: &[u8]);
    /// It ended without a reply.
    fn fail(&self, error: JobError);
}

impl Shared {
    /// Takes `seq` out of the table (whoever gets it resolves it).
    pub(crate) fn take(&self, seq: u64) -> Option<Waiting> {
        let mut table = self.table.lock();
        let waiting = table.waiting.remove(&seq);
        if table.waiting.is_empty() {
            self.drained.notify_all();
        }
        waiting
    }

    /// Runs `op` on the submitting connection, connecting again once if it failed.
    fn with_connection<T>(&self, op: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T, String> {
        let mut slot = self.submitter.lock();
        let mut last = String::new();
        for _ in 0..2 {
            if slot.is_none() {
                match self.config.connect() {
                    Ok(c) => *slot = Some(c),
                    Err(e) => return Err(e.to_string()),
                }
            }
            let Some(connection) = slot.as_mut() else { continue };
            match op(connection) {
                Ok(v) => return Ok(v),
                Err(e) if is_connection_error(&e) => {
                    *slot = None;
                    last = format!("Redis at {} is unreachable: {e}", self.config.redacted_url());
                }
                Err(e) => return Err(format!("Redis at {} refused: {e}", self.config.redacted_url())),
            }
        }
        Err(last)
    }

    /// Deletes job `seq` from the stream if no worker has it yet. Returns whether it did.
    fn cancel_pending(&self, seq: u64) -> bool {
        let entry = match self.table.lock().waiting.get(&seq) {
            Some(Waiting { entry: Some(e), .. }) => e.clone(),
            _ => return false,
        };
        let script = scripts::cancel_pending();
        let deleted = self.with_connection(|c| script.key(self.keys.jobs()).arg(GROUP).arg(&entry).invoke::<i64>(c));
        deleted == Ok(1)
    }

    /// Marks job `seq` for its worker to kill.
    fn cancel_running(&self, seq: u64) {
        let key = self.keys.cancel(&self.id, seq);
        let ttl = millis(self.options.queue_ttl.min(Duration::from_secs(3600)));
        let _ = self.with_connection(|c| redis::cmd("SET").arg(&key).arg(1).arg("PX").arg(ttl).exec(c));
    }
}

impl RedisExecutor {
    /// A client of the Redis at `url` (`redis://[user:password@]host[:port][/db]`,
    /// `rediss://...` for TLS with the `redis-tls` feature), with the default settings.
    ///
    /// # Errors
    /// [`ConnectError`] if Redis cannot be reached now.
    pub fn new(url: &str) -> Result<RedisExecutor, ConnectError> {
        RedisExecutor::builder(RedisConfig::new(url)).build()
    }

    /// A builder with every setting.
    pub fn builder(config: RedisConfig) -> RedisExecutorBuilder {
        RedisExecutorBuilder {
            config,
            max_retries: 1,
            task_timeout: None,
            client_ttl: Duration::from_secs(30),
            result_ttl: Duration::from_secs(3600),
            queue_ttl: Duration::from_secs(24 * 3600),
            reconnect_timeout: None,
        }
    }

    /// This client's id (its result stream and liveness key are named by it).
    pub fn client_id(&self) -> &str {
        &self.shared.id
    }

    /// Submits a registered job type (see [`register_job!`](crate::register_job)).
    ///
    /// # Errors
    /// [`SubmitError`], handing the job back, if the executor is shut down or Redis cannot be
    /// reached (then [`broken_reason`](SubmitError::broken_reason) says why).
    pub fn submit<J: RemoteJob>(&self, job: J) -> Result<Future<J::Output>, SubmitError<J>> {
        self.submit_with_timeout(job, self.shared.options.task_timeout)
    }

    /// [`submit`](RedisExecutor::submit) with a time limit for this job (`None`: none), enforced
    /// by the worker.
    ///
    /// # Errors
    /// As [`submit`](RedisExecutor::submit).
    pub fn submit_with_timeout<J: RemoteJob>(
        &self,
        job: J,
        limit: Option<Duration>,
    ) -> Result<Future<J::Output>, SubmitError<J>> {
        self.send(job, Ok(J::NAME), InputLayout::One, |j, f| protocol::append(j, f), decode_one, limit)
    }

    /// The workers that sent a heartbeat within their lease, by name.
    ///
    /// # Errors
    /// A message if Redis cannot be reached.
    pub fn workers(&self) -> Result<Vec<WorkerInfo>, String> {
        let keys = &self.shared.keys;
        self.shared.with_connection(|c| super::control::list(c, keys))
    }

    fn stop_reader(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if self.on_reader() {
            return; // a done callback: the reader ends by itself once the table is empty
        }
        if let Some(reader) = self.reader.lock().take() {
            let _ = reader.join();
        }
    }

    /// Whether this is the result reader's thread (done callbacks run there).
    fn on_reader(&self) -> bool {
        self.reader.lock().as_ref().is_some_and(|r| r.thread().id() == std::thread::current().id())
    }

    /// Waits until every future of this client is resolved (not from a done callback, which
    /// runs on the thread that resolves them: there it returns at once).
    fn wait_drained(&self) {
        if self.on_reader() {
            return;
        }
        let mut table = self.shared.table.lock();
        while !table.waiting.is_empty() {
            self.shared.drained.wait_for(&mut table, Duration::from_millis(200));
        }
    }

    /// The futures still unresolved, for cancelling.
    fn unresolved(&self) -> Vec<u64> {
        self.shared.table.lock().waiting.keys().copied().collect()
    }
}

/// A job's future: its core, how to read its result, and the way back to the client for a
/// cancel.
struct RedisCell<T> {
    core: Core<T>,
    decode: fn(Status, &[u8]) -> Result<T, JobError>,
    shared: Weak<Shared>,
    seq: u64,
}

impl<T: Send> Cell<T> for RedisCell<T> {
    fn core(&self) -> &Core<T> {
        &self.core
    }

    /// A job is cancelled only if no worker has read it (then it is deleted from the stream
    /// first, so none ever will); one a worker holds counts as running, as in the process pool.
    fn cancel(&self) -> bool {
        if let Some(ending) = self.core.ending() {
            return ending == Ending::Cancelled;
        }
        let Some(shared) = self.shared.upgrade() else { return false };
        if shared.cancel_pending(self.seq) && shared.take(self.seq).is_some() {
            return self.core.cancel();
        }
        self.core.ending() == Some(Ending::Cancelled)
    }

    fn force_cancel(&self) -> bool {
        if self.cancel() {
            return true;
        }
        if let Some(shared) = self.shared.upgrade()
            && shared.take(self.seq).is_some()
        {
            shared.cancel_running(self.seq);
            return self.core.finish_if_unfinished(Err(JobError::Cancelled));
        }
        self.core.ending() == Some(Ending::Cancelled)
    }
}

impl<T: Send> Sink for RedisCell<T> {
    fn deliver(&self, status: Status, body: &[u8]) {
        // The result's `Deserialize` is user code: a panic in it fails this future only.
        let outcome = crate::unwind::catch(|| (self.decode)(status, body))
            .unwrap_or_else(|e| Err(JobError::Serialization { message: format!("reading the result panicked: {e}") }));
        self.core.finish_if_unfinished(outcome);
    }

    fn fail(&self, error: JobError) {
        self.core.finish_if_unfinished(Err(error));
    }
}

impl Executor for RedisExecutor {
    /// The processes of the workers alive now (at least 1, so that a map has a window even
    /// before the first worker starts).
    fn max_workers(&self) -> usize {
        self.workers().map_or(1, |ws| ws.iter().map(|w| w.processes).sum::<usize>().max(1))
    }

    /// With `cancel_futures`, the jobs no worker has read are deleted from the stream and their
    /// futures cancelled; the others run. With `wait`, blocks until every future is resolved.
    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.table.lock().open = false;
        if cancel_futures {
            for seq in self.unresolved() {
                if self.shared.cancel_pending(seq)
                    && let Some(w) = self.shared.take(seq)
                {
                    w.sink.fail(JobError::Cancelled);
                }
            }
        }
        if wait {
            self.wait_drained();
            self.stop_reader();
        }
    }

    fn close(&self) {
        self.shared.table.lock().open = false;
    }

    /// Waits until every job of this client has resolved, then stops its result reader.
    fn join(&self) -> Result<(), JoinError> {
        if self.shared.table.lock().open {
            return Err(JoinError);
        }
        self.wait_drained();
        self.stop_reader();
        Ok(())
    }

    /// Stops now: jobs no worker has read are deleted, and the workers running the others are
    /// told to kill them (within their poll interval); every future resolves with
    /// [`JobError::Cancelled`] at once.
    fn terminate(&self) {
        self.shutdown(false, true);
        for seq in self.unresolved() {
            if let Some(w) = self.shared.take(seq) {
                self.shared.cancel_running(seq);
                w.sink.fail(JobError::Cancelled);
            }
        }
        self.stop_reader();
    }

    fn is_shutdown(&self) -> bool {
        !self.shared.table.lock().open
    }
}

impl EncodedSubmit for RedisExecutor {
    fn default_limit(&self) -> Option<Duration> {
        self.shared.options.task_timeout
    }

    /// Encodes one job, puts it in the table and adds it to the job stream.
    fn send<J, T>(
        &self,
        job: J,
        code: Result<&str, &'static str>,
        layout: InputLayout,
        encode: impl FnOnce(&J, Vec<u8>) -> postcard::Result<Vec<u8>>,
        decode: fn(Status, &[u8]) -> Result<T, JobError>,
        limit: Option<Duration>,
    ) -> Result<Future<T>, SubmitError<J>>
    where
        T: Send + 'static,
    {
        let shared = &self.shared;
        if !shared.table.lock().open {
            return Err(SubmitError::shutdown(job));
        }
        let code = match code {
            Ok(name) => name,
            Err(type_name) => return Ok(Future::ready(Err(JobError::Unregistered { name: type_name.to_owned() }))),
        };
        let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
        let limit_ms = limit.map(millis);
        let header = JobHeader {
            client: &shared.id,
            seq,
            code,
            layout,
            limit_ms,
            max_retries: shared.options.max_retries,
            result_ttl_ms: millis(shared.options.result_ttl),
        };
        let frame = match encode(&job, header.frame()) {
            Ok(f) if f.len() <= MAX_JOB_BYTES => f,
            Ok(f) => {
                let message = format!("the job takes {} bytes, more than the {MAX_JOB_BYTES} a job may", f.len());
                return Ok(Future::ready(Err(JobError::Serialization { message })));
            }
            Err(e) => return Ok(Future::ready(Err(JobError::Serialization { message: e.to_string() }))),
        };
        let cell = Arc::new(RedisCell { core: Core::new(), decode, shared: Arc::downgrade(shared), seq });
        {
            let mut table = shared.table.lock();
            if !table.open {
                return Err(SubmitError::shutdown(job));
            }
            table.waiting.insert(seq, Waiting { entry: None, sink: cell.clone() });
        }
        let jobs = shared.keys.jobs();
        let ttl = millis(shared.options.queue_ttl);
        let added = shared.with_connection(|c| {
            let mut pipe = redis::pipe();
            pipe.cmd("XADD").arg(&jobs).arg("*").arg(JOB_FIELD).arg(&frame);
            pipe.cmd("PEXPIRE").arg(&jobs).arg(ttl).ignore();
            pipe.query::<(redis::Value,)>(c)
        });
        match added.map(|(id,)| wire::text(&id).map(str::to_owned)) {
            Ok(Some(entry)) => {
                if let Some(w) = shared.table.lock().waiting.get_mut(&seq) {
                    w.entry = Some(entry);
                }
                Ok(Future::from_cell(cell))
            }
            Ok(None) => {
                shared.take(seq);
                Err(SubmitError::broken(job, "Redis answered XADD with something other than an entry id".to_owned()))
            }
            Err(reason) => {
                shared.take(seq);
                Err(SubmitError::broken(job, reason))
            }
        }
    }
}

// The same `Submit` implementations as the process pool's (one per shape of job), over `send`.
encoded_submit_impls!(RedisExecutor);

impl Drop for RedisExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
        // Clean going: the liveness key and the result stream go now rather than at their expiry.
        let (client, results) = (self.shared.keys.client(&self.shared.id), self.shared.keys.results(&self.shared.id));
        let _ = self.shared.with_connection(|c| redis::cmd("DEL").arg(&client).arg(&results).exec(c));
    }
}

impl std::fmt::Debug for RedisExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisExecutor")
            .field("url", &self.shared.config.redacted_url())
            .field("client_id", &self.shared.id)
            .field("unresolved", &self.shared.table.lock().waiting.len())
            .finish()
    }
}

/// Whether `e` means the connection is gone (as opposed to a command Redis refused).
pub(crate) fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// A duration in whole milliseconds, at least 1.
pub(crate) fn millis(d: Duration) -> u64 {
    crate::distributed::objects::handle::millis(d)
}

/// A client id unlikely to be taken by any other client anywhere: host, pid, time and a random
/// number from std's randomly seeded hasher.
pub(super) fn client_id() -> String {
    use std::hash::BuildHasher;
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let random = std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()));
    format!("{}:{}:{:016x}", wire::host_name(), std::process::id(), random)
}

/// When a wait that started now would end: a century away for durations too long for the
/// clock (`Duration::MAX` means "never", and must not overflow `Instant`).
pub(crate) fn after(d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    crate::deadline::after(d.min(CENTURY)).unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
}
