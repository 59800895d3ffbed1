//! The client's result reader: one thread per [`RedisExecutor`](super::RedisExecutor) that
//! blocks on the client's result stream, resolves futures, keeps the client's liveness key
//! fresh, and rides out a Redis restart.
//!
//! Reading a stream (not popping a list) is what makes a result survive a broken connection:
//! the reader asks again from the last id it handled, and deletes entries only once handled.
//! After it reconnects it asks Redis which of its jobs it still has (`scripts::missing_jobs`):
//! a job that is gone without a result can never resolve, and its future fails with
//! [`JobError::Lost`] instead of hanging. Should Redis stay unreachable past the client's
//! `reconnect_timeout`, every unresolved future fails the same way.
//!
//! This thread must never block without a bound (every Redis call has the connection's I/O
//! timeout, every block a `BLOCK` time) and never panic on an entry: one it cannot read is
//! deleted and skipped.

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

/// Runs the reader until the executor stops and every future is resolved.
pub(crate) fn run(shared: &Arc<Shared>, first: redis::Connection) {
    let mut reader = Reader {
        shared: shared.clone(),
        key: shared.keys.results(&shared.id),
        last_id: "0-0".to_owned(),
        alive_due: Instant::now(),
    };
    let mut connection = Some(first);
    let mut down: Option<(Instant, String)> = None;
    let mut backoff = Backoff::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) && shared.table.lock().waiting.is_empty() {
            return;
        }
        let Some(c) = connection.as_mut() else {
            match shared.config.connect() {
                Ok(mut c) => {
                    if down.take().is_some() {
                        reader.alive_due = Instant::now();
                        if let Err(e) = reader.recover(&mut c) {
                            down = Some((Instant::now(), e.to_string()));
                            continue;
                        }
                    }
                    backoff.reset();
                    connection = Some(c);
                }
                Err(e) => {
                    let (since, _) = down.get_or_insert_with(|| (Instant::now(), e.to_string()));
                    if since.elapsed() >= shared.options.reconnect_timeout {
                        reader.fail_all(&format!(
                            "Redis at {} stayed unreachable for {:?} (the client's reconnect_timeout): {e}",
                            shared.config.redacted_url(),
                            shared.options.reconnect_timeout
                        ));
                    }
                    backoff.wait_until(after(Duration::from_secs(2)));
                }
            }
            continue;
        };
        match reader.step(c) {
            Ok(()) => {}
            Err(e) if is_connection_error(&e) => {
                connection = None;
                down = Some((Instant::now(), e.to_string()));
            }
            // Refused (a key of the wrong type written by someone else, a server out of
            // memory): try again after a pause, never in a tight loop.
            Err(_) => std::thread::sleep(BLOCK),
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
    fn recover(&mut self, c: &mut redis::Connection) -> redis::RedisResult<()> {
        let entries: Vec<(u64, String)> = {
            let table = self.shared.table.lock();
            table.waiting.iter().filter_map(|(seq, w)| Some((*seq, w.entry.clone()?))).collect()
        };
        let mut script = scripts::missing_jobs().key(self.shared.keys.jobs());
        script.key(&self.key);
        for (_, entry) in &entries {
            script.arg(entry);
        }
        let reply: Value = script.invoke(c)?;
        let (barrier, missing) = match wire::items(&reply) {
            [last, missing] => (
                wire::text(last).and_then(wire::entry_id).unwrap_or((0, 0)),
                wire::items(missing).iter().filter_map(wire::text).map(str::to_owned).collect::<Vec<_>>(),
            ),
            _ => return Ok(()),
        };
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
        let reason = format!(
            "Redis at {} came back without the job (was it restarted without its append-only file?)",
            self.shared.config.redacted_url()
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
