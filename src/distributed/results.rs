//! The client's result reader: one thread per [`RedisExecutor`](super::RedisExecutor) that
//! blocks on the client's result stream, resolves futures, keeps the client's liveness key
//! fresh, and rides out a Redis restart.
//!
//! Reading a stream (not popping a list) is what makes a result survive a broken connection:
//! the reader asks again from the last id it handled, and deletes entries only once handled.
//! After it reconnects it asks Redis which of its jobs it still has (`scripts::missing_jobs`):
//! a job that is gone without a result can never resolve, and its future fails with
//! [`JobError::Lost`] instead of hanging. Should Redis stay unreachable past the client's
//! `reconnect_timeout`, every unresolved future fails the same way; a Redis that comes back
//! only for moments (less than [`STEADY`] each time) does not restart that clock.
//!
//! This thread must never block without a bound (every Redis call has the connection's I/O
//! timeout, every block a `BLOCK` time) and never panic on an entry: one it cannot read is
//! deleted and skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::Value;

use super::client::{Shared, after, is_connection_error, millis};
use super::connection::Backoff;
use super::scripts;
use super::wire::{self, Entry, Outcome, RESULT_FIELD, ResultHeader};
use crate::error::JobError;

/// How long one read blocks: also how long a stopped client takes to notice.
const BLOCK: Duration = Duration::from_millis(250);

/// The most results read in one go.
const COUNT: usize = 1024;

/// The most jobs one `missing_jobs` call checks (each is one `XRANGE` inside Redis, which runs
/// nothing else meanwhile).
const RECOVER_BATCH: usize = 1000;

/// Runs the reader until the executor stops and every future is resolved.
pub(crate) fn run(shared: &Arc<Shared>, first: redis::Connection) {
    let mut reader = Reader {
        shared: shared.clone(),
        key: shared.keys.results(&shared.id),
        last_id: "0-0".to_owned(),
        alive_due: Instant::now(),
    };
    let mut connection = Some(first);
    let mut outage: Option<Outage> = None;
    let mut backoff = Backoff::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) && shared.table.lock().waiting.is_empty() {
            return;
        }
        let Some(c) = connection.as_mut() else {
            // Every connection after the first is a reconnection: Redis may have come back
            // without some of our jobs, so ask it (and read the results up to its last) first.
            let result = shared.config.connect().map_err(|e| e.to_string()).and_then(|mut c| {
                reader.alive_due = Instant::now();
                reader.recover(&mut c).map(|()| c).map_err(|e| e.to_string())
            });
            match result {
                Ok(c) => {
                    backoff.reset();
                    if let Some(o) = outage.as_mut() {
                        o.back = Some(Instant::now());
                    }
                    connection = Some(c);
                }
                Err(e) => {
                    Outage::note(&mut outage, e, &reader);
                    backoff.wait_until(after(Duration::from_secs(2)));
                }
            }
            continue;
        };
        match reader.step(c) {
            Ok(()) => {
                // Back for good only once Redis has served us for a while without a break: a
                // Redis that flaps (up a moment, down again) must not restart the clock.
                if outage.as_ref().is_some_and(|o| o.back.is_some_and(|back| back.elapsed() >= STEADY)) {
                    outage = None;
                }
            }
            Err(e) if is_connection_error(&e) => {
                connection = None;
                Outage::note(&mut outage, e.to_string(), &reader);
            }
            // Refused (a key of the wrong type written by someone else, a server out of
            // memory): try again after a pause, never in a tight loop.
            Err(_) => std::thread::sleep(BLOCK),
        }
    }
}

/// How long Redis must serve the client without a break after an outage before the outage
/// counts as over (and a later one starts its own `reconnect_timeout`).
const STEADY: Duration = Duration::from_secs(5);

/// Redis has been out of reach (or has not yet stayed back for [`STEADY`]) since `since`.
struct Outage {
    since: Instant,
    /// When the client last got a connection and recovered on it, if it did since `since`.
    back: Option<Instant>,
}

impl Outage {
    /// Records a failure (`error`): starts an outage or continues the current one (which a
    /// reconnection that did not last does not end), and fails every unresolved future once it
    /// has lasted the client's `reconnect_timeout`. Then the clock starts again, for the jobs
    /// submitted later (while Redis was up for a moment): each gets its own full timeout.
    fn note(outage: &mut Option<Outage>, error: String, reader: &Reader) {
        let o = outage.get_or_insert_with(|| Outage { since: Instant::now(), back: None });
        o.back = None;
        let timeout = reader.shared.options.outage_limit();
        if o.since.elapsed() >= timeout {
            reader.fail_all(&format!(
                "Redis at {} stayed unreachable (or dropped the connection again within {STEADY:?} each time it came \
                 back) for {timeout:?} (the client's reconnect_timeout): {error}",
                reader.shared.config.redacted_url(),
            ));
            o.since = Instant::now();
        }
    }
}

struct Reader {
    shared: Arc<Shared>,
    /// The result stream.
    key: String,
    /// The id of the last result handled: the next read starts after it.
    last_id: String,
    /// When the liveness key is to be renewed.
    alive_due: Instant,
}

impl Reader {
    /// Renews the liveness key when due, then reads (blocking) and handles what came.
    fn step(&mut self, c: &mut redis::Connection) -> redis::RedisResult<()> {
        if Instant::now() >= self.alive_due {
            let ttl = self.shared.options.client_ttl;
            redis::cmd("SET")
                .arg(self.shared.keys.client(&self.shared.id))
                .arg(1)
                .arg("PX")
                .arg(millis(ttl))
                .exec(c)?;
            self.alive_due = crate::distributed::client::after(ttl / 3);
        }
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(millis(BLOCK))
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&self.last_id)
            .query(c)?;
        self.handle(c, &wire::stream_entries(&reply))
    }

    /// Resolves the futures of `entries` (skipping any it cannot read, and results of jobs
    /// already resolved: a job run twice answers twice), then deletes them from the stream.
    fn handle(&mut self, c: &mut redis::Connection, entries: &[Entry]) -> redis::RedisResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            let parsed = entry.field(RESULT_FIELD).and_then(ResultHeader::parse);
            if let Some((header, body)) = parsed
                && let Some(waiting) = self.shared.take(header.seq)
            {
                match header.outcome {
                    Outcome::Done(status) => waiting.sink.deliver(status, body),
                    Outcome::Failed(failure) => waiting.sink.fail(failure.into_error()),
                }
            }
        }
        if let Some(last) = entries.iter().map(|e| e.id.as_str()).max_by_key(|id| wire::entry_id(id))
            && wire::entry_id(last) > wire::entry_id(&self.last_id)
        {
            self.last_id = last.to_owned();
        }
        let mut del = redis::cmd("XDEL");
        del.arg(&self.key);
        for entry in entries {
            del.arg(&entry.id);
        }
        del.exec(c)
    }

    /// After a reconnection: reads every result up to the last one Redis has, then fails the
    /// jobs that Redis no longer has and that got no result (it came back without them).
    ///
    /// The jobs are checked [`RECOVER_BATCH`] at a time: one script call per batch, so that a
    /// client with a million unresolved jobs never holds (single-threaded) Redis for long. Each
    /// call also returns the last id of the result stream at its instant; a job missing at that
    /// instant got its result (if any) before it, in the same `MULTI` that deleted the job, so
    /// reading up to the latest of those ids finds every result of every missing job.
    fn recover(&mut self, c: &mut redis::Connection) -> redis::RedisResult<()> {
        let entries: Vec<(u64, String)> = {
            let table = self.shared.table.lock();
            table.waiting.iter().filter_map(|(seq, w)| Some((*seq, w.entry.clone()?))).collect()
        };
        let mut barrier = (0, 0);
        let mut missing = HashSet::new();
        // At least one call, for the result stream's last id, also with no job to check.
        for batch in entries.chunks(RECOVER_BATCH).chain(entries.is_empty().then_some(&[][..])) {
            let mut script = scripts::missing_jobs().key(self.shared.keys.jobs());
            script.key(&self.key);
            for (_, entry) in batch {
                script.arg(entry);
            }
            let reply: Value = script.invoke(c)?;
            let [last, gone] = wire::items(&reply) else { return Ok(()) };
            barrier = barrier.max(wire::text(last).and_then(wire::entry_id).unwrap_or((0, 0)));
            missing.extend(wire::items(gone).iter().filter_map(wire::text).map(str::to_owned));
        }
        while wire::entry_id(&self.last_id).unwrap_or((0, 0)) < barrier {
            let reply: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(COUNT)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(&self.last_id)
                .query(c)?;
            let read = wire::stream_entries(&reply);
            if read.is_empty() {
                break;
            }
            self.handle(c, &read)?;
        }
        if missing.is_empty() {
            return Ok(());
        }
        let options = &self.shared.options;
        let reason = format!(
            "Redis at {} came back without the job and without its result: it was restarted without its \
             append-only file, or this client was cut off for longer than its keys live (after client_ttl, {:?}, \
             workers drop the jobs of a client they do not hear from; results expire after result_ttl, {:?})",
            self.shared.config.redacted_url(),
            options.client_ttl,
            options.result_ttl,
        );
        for (seq, entry) in entries {
            if missing.contains(&entry)
                && let Some(waiting) = self.shared.take(seq)
            {
                waiting.sink.fail(JobError::Lost { reason: reason.clone().into() });
            }
        }
        Ok(())
    }

    /// Fails every unresolved future with `reason`.
    fn fail_all(&self, reason: &str) {
        let waiting: Vec<_> = {
            let mut table = self.shared.table.lock();
            let all = table.waiting.drain().map(|(_, w)| w).collect();
            self.shared.drained.notify_all();
            all
        };
        for w in waiting {
            w.sink.fail(JobError::Lost { reason: reason.into() });
        }
    }
}
