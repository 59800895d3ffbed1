//! The worker's control thread: writes each result together with the acknowledgement of its
//! job (one atomic `MULTI`), sends heartbeats, takes over the jobs of lost workers, and kills
//! held jobs that were force-cancelled or whose client is gone. Also the reader of the worker
//! records, for [`RedisExecutor::workers`](super::RedisExecutor::workers).
//!
//! A result is kept in memory until Redis has acknowledged its write: a Redis restart delays
//! it, never loses it. A result Redis *refuses* (out of memory under `noeviction`, say) is tried
//! again with backoff while the job is still this worker's, then replaced by a small
//! [`JobError::ResultRefused`] answer, so that the client's future resolves. This thread must
//! never block without a bound and never panic on a reply.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use redis::Value;

use super::client::{is_connection_error, millis};
use super::connection::Backoff;
use super::scripts;
use super::wire::{self, Failure, GROUP, Keys, Outcome, RESULT_FIELD, ResultHeader};
use super::worker::{BLOCK, Ended, State, take_jobs};
use crate::error::JobError;

/// How long the list of workers (`{ns}:workers`) and the lists of lost workers live unrenewed.
const DAY_MS: u64 = 24 * 3600 * 1000;

/// At most this many results go in one `MULTI`.
const WRITE_BATCH: usize = 512;

/// How many times a write Redis refused is tried in all before its result is replaced by a
/// [`JobError::ResultRefused`] answer (and, when the worker stops, before that answer is given
/// up on), with [`REFUSED_FIRST_WAIT`] doubling between tries: about 1.5 s in all.
const REFUSED_TRIES: u32 = 5;

/// The wait after a write's first refusal.
const REFUSED_FIRST_WAIT: Duration = Duration::from_millis(100);

/// The longest wait between two tries of a refused write.
const REFUSED_LAST_WAIT: Duration = Duration::from_secs(2);

/// One write: acknowledge and delete a job entry, with its result if it has one.
struct Write {
    entry: String,
    result: Option<(String, u64, Vec<u8>)>,
    /// The job's number, while `result` is the job's own reply (not an answer of the worker's).
    seq: Option<u64>,
}

/// A write Redis refused, waiting to be tried again.
struct Refused {
    write: Write,
    /// Times refused since its result was last replaced.
    tries: u32,
    due: Instant,
    /// What Redis said the last time.
    reason: String,
}

impl Refused {
    fn new(write: Write, error: &redis::RedisError) -> Refused {
        Refused { write, tries: 1, due: Instant::now() + REFUSED_FIRST_WAIT, reason: error.to_string() }
    }
}

/// Runs the control thread until the worker stops and every held job's result is written.
pub(crate) fn run(state: &Arc<State>, first: redis::Connection, ended: Receiver<Ended>) {
    let mut connection = Some(first);
    let mut writes: Vec<Write> = Vec::new();
    let mut refused: Vec<Refused> = Vec::new();
    let mut said = Refusals::default();
    // Entries left un-acknowledged in this worker's pending list (their answers refused until
    // it stopped): its consumer must stay for another worker to reclaim them.
    let mut left_pending = false;
    let mut heartbeat_due = Instant::now();
    let mut poll_due = Instant::now();
    let mut backoff = Backoff::new();
    // At most BLOCK: a stop is seen that soon, whatever the intervals.
    let tick = state.poll.min(state.heartbeat).min(BLOCK);
    loop {
        if writes.len() < WRITE_BATCH {
            let next_retry = refused.iter().map(|r| r.due.saturating_duration_since(Instant::now())).min();
            match ended.recv_timeout(next_retry.map_or(tick, |wait| wait.min(tick))) {
                Ok(m) => writes.push(prepare(state, m)),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
            while writes.len() < WRITE_BATCH
                && let Ok(m) = ended.try_recv()
            {
                writes.push(prepare(state, m));
            }
        }
        let stopping = state.stop.load(Ordering::SeqCst);
        if stopping && writes.is_empty() && refused.is_empty() && state.held.lock().is_empty() {
            if let Some(c) = connection.as_mut() {
                deregister(state, c, left_pending);
            }
            return;
        }
        let Some(c) = state.config.reconnect(&mut connection, &mut backoff) else { continue };
        let step = (|| {
            if !writes.is_empty() {
                write_all(state, c, &mut writes, &mut refused)?;
            }
            if refused.iter().any(|r| r.due <= Instant::now()) {
                left_pending |= retry_refused(state, c, &mut refused, stopping)?;
            }
            // A step Redis refused is due again after its interval (a refusal is said once per
            // interval, not in a loop); one cut short by a broken connection, at once.
            if Instant::now() >= heartbeat_due {
                refused_or(state, &mut said, "a heartbeat", heartbeat(state, c))?;
                if !stopping {
                    refused_or(state, &mut said, "the reclaim of lost workers' jobs", reclaim(state, c))?;
                }
                heartbeat_due = crate::distributed::client::after(state.heartbeat);
            }
            if Instant::now() >= poll_due {
                refused_or(state, &mut said, "the check for cancelled jobs", kill_abandoned(state, c))?;
                poll_due = crate::distributed::client::after(state.poll);
            }
            Ok::<(), redis::RedisError>(())
        })();
        if step.is_err() {
            // Broken: every unwritten result is kept, and written after reconnecting.
            connection = None;
        }
    }
}

/// A connection error, or `Ok` after saying on stderr what Redis refused (through `said`).
fn refused_or(state: &State, said: &mut Refusals, what: &str, step: redis::RedisResult<()>) -> redis::RedisResult<()> {
    match step {
        Err(e) if !is_connection_error(&e) => {
            if let Some(unsaid) = said.say(Instant::now()) {
                let more =
                    if unsaid > 0 { format!(" ({unsaid} more refusals since the last said)") } else { String::new() };
                eprintln!("stealpool worker {}: Redis refused {what}: {e}{more}", state.name);
            }
            Ok(())
        }
        other => other,
    }
}

/// How often refusals of the control thread's steps reach stderr: the first at once, then at
/// most one per [`Refusals::EVERY`], with a count of those not said. A Redis out of memory
/// refuses every heartbeat; a week of that must not be a line per heartbeat.
#[derive(Debug, Default)]
struct Refusals {
    last: Option<Instant>,
    unsaid: u64,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(60);

    /// `Some(refusals not said since the last one said)` if this one, at `now`, is to be said.
    fn say(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now.saturating_duration_since(last) < Self::EVERY) {
            self.unsaid += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

/// Writes `writes` in one `MULTI`, or, if Redis refuses that, one by one, so that a result
/// Redis will not take (too big for its memory, say) holds up no other; the refused ones go to
/// `refused`. On a connection error the writes not done stay in `writes`.
fn write_all(
    state: &State,
    c: &mut redis::Connection,
    writes: &mut Vec<Write>,
    refused: &mut Vec<Refused>,
) -> redis::RedisResult<()> {
    match write(state, c, writes) {
        Ok(()) => {
            writes.clear();
            return Ok(());
        }
        Err(e) if is_connection_error(&e) => return Err(e),
        Err(e) if writes.len() == 1 => {
            refused.extend(writes.pop().map(|w| Refused::new(w, &e)));
            return Ok(());
        }
        Err(_) => {}
    }
    while let Some(w) = writes.pop() {
        match write(state, c, std::slice::from_ref(&w)) {
            Ok(()) => {}
            Err(e) if is_connection_error(&e) => {
                writes.push(w);
                return Err(e);
            }
            Err(e) => refused.push(Refused::new(w, &e)),
        }
    }
    Ok(())
}

/// Tries the refused writes that are due again, while their jobs are still this worker's.
/// After [`REFUSED_TRIES`] a job's result is replaced by a small [`JobError::ResultRefused`]
/// answer; that answer is tried as long as the worker runs (a Redis that refuses even it is
/// out of memory for everyone: the answer waits, as through an outage). A stopping worker gives
/// an answer up after as many tries and leaves the job in its pending list, for another worker
/// to reclaim (the loss counted); returns whether it did.
fn retry_refused(
    state: &State,
    c: &mut redis::Connection,
    refused: &mut Vec<Refused>,
    stopping: bool,
) -> redis::RedisResult<bool> {
    let mut left_pending = false;
    let now = Instant::now();
    let mut i = 0;
    while i < refused.len() {
        if refused[i].due > now {
            i += 1;
            continue;
        }
        if !still_ours(state, c, &refused[i].write.entry)? {
            // Reclaimed by another worker (this one's record lapsed), or gone: its answer is not
            // this worker's to give.
            state.unwritten.lock().remove(&refused[i].write.entry);
            refused.swap_remove(i);
            continue;
        }
        let r = &mut refused[i];
        match write(state, c, std::slice::from_ref(&r.write)) {
            Ok(()) => {
                refused.swap_remove(i);
                continue;
            }
            Err(e) if is_connection_error(&e) => return Err(e),
            Err(e) => r.reason = e.to_string(),
        }
        r.tries += 1;
        if r.tries >= REFUSED_TRIES {
            match (r.write.seq.take(), &mut r.write.result) {
                (Some(seq), Some((_, _, frame))) => {
                    eprintln!(
                        "stealpool worker {}: Redis refused the result of job {} ({} bytes) {} times ({}); \
                         answering with the refusal instead",
                        state.name,
                        r.write.entry,
                        frame.len(),
                        r.tries,
                        r.reason
                    );
                    let error = JobError::ResultRefused {
                        bytes: frame.len() as u64,
                        reason: format!("worker {}: {}", state.name, r.reason).into(),
                    };
                    *frame = ResultHeader { seq, worker: &state.name, outcome: Outcome::Failed(Failure::of(error)) }
                        .frame(&[]);
                    r.tries = 0;
                }
                _ if stopping => {
                    eprintln!(
                        "stealpool worker {}: stopping with job {} unanswered (Redis refused: {}); another \
                         worker will reclaim it",
                        state.name, r.write.entry, r.reason
                    );
                    refused.swap_remove(i);
                    left_pending = true;
                    continue;
                }
                _ => {}
            }
        }
        let wait = REFUSED_FIRST_WAIT.saturating_mul(1 << r.tries.saturating_sub(1).min(5)).min(REFUSED_LAST_WAIT);
        r.due = Instant::now() + wait;
        i += 1;
    }
    Ok(left_pending)
}

/// Whether this worker still holds `entry` (in its pending list); not if Redis cannot say (the
/// stream is no stream).
fn still_ours(state: &State, c: &mut redis::Connection, entry: &str) -> redis::RedisResult<bool> {
    let reply = redis::cmd("XPENDING").arg(state.keys.jobs()).arg(GROUP).arg(entry).arg(entry).arg(1).query(c);
    let reply: Value = match reply {
        Err(e) if is_connection_error(&e) => return Err(e),
        Err(_) => return Ok(false),
        Ok(reply) => reply,
    };
    Ok(wire::items(&reply)
        .first()
        .and_then(|p| wire::items(p).get(1))
        .and_then(wire::text)
        .is_some_and(|owner| owner == state.name))
}

/// Turns what the reader or the pool announced into a write.
fn prepare(state: &State, ended: Ended) -> Write {
    match ended {
        Ended::Ran(entry) => {
            // In `unwritten` before it leaves `held`: the reader's recovery read never sees it
            // in neither (and runs it again) while its result waits.
            state.unwritten.lock().insert(entry.clone());
            let held = state.held.lock().remove(&entry);
            state.room.notify_all();
            let Some(held) = held else { return Write { entry, result: None, seq: None } };
            // Done: the callback that sent this runs just before the outcome is stored.
            let frame = match held.future.result() {
                Ok((status, body)) => {
                    ResultHeader { seq: held.seq, worker: &state.name, outcome: Outcome::Done(status) }.frame(&body)
                }
                Err(e) => ResultHeader { seq: held.seq, worker: &state.name, outcome: Outcome::Failed(Failure::of(e)) }
                    .frame(&[]),
            };
            Write { entry, result: Some((held.client, held.result_ttl_ms, frame)), seq: Some(held.seq) }
        }
        Ended::WrittenOff { entry, answer } => {
            let result = answer.map(|(client, seq, ttl, error): (String, u64, u64, JobError)| {
                let header = ResultHeader { seq, worker: &state.name, outcome: Outcome::Failed(Failure::of(error)) };
                (client, ttl, header.frame(&[]))
            });
            // An answer of its own is small already: never replaced.
            Write { entry, result, seq: None }
        }
    }
}

/// Writes results and acknowledges their jobs, all or nothing.
fn write(state: &State, c: &mut redis::Connection, writes: &[Write]) -> redis::RedisResult<()> {
    let jobs = state.keys.jobs();
    let attempts = state.keys.attempts_prefix();
    let mut pipe = redis::pipe();
    pipe.atomic();
    let mut results = 0;
    for w in writes {
        if let Some((client, ttl, frame)) = &w.result {
            let key = state.keys.results(client);
            pipe.cmd("XADD").arg(&key).arg("*").arg(RESULT_FIELD).arg(frame).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(*ttl).ignore();
            results += 1;
        }
        pipe.cmd("XACK").arg(&jobs).arg(GROUP).arg(&w.entry).ignore();
        pipe.cmd("XDEL").arg(&jobs).arg(&w.entry).ignore();
        pipe.cmd("DEL").arg(format!("{attempts}{}", w.entry)).ignore();
    }
    pipe.exec(c)?;
    let mut unwritten = state.unwritten.lock();
    for w in writes {
        unwritten.remove(&w.entry);
    }
    drop(unwritten);
    state.jobs_done.fetch_add(results, Ordering::Relaxed);
    Ok(())
}

/// Renews the worker's record and its place in the list of workers.
fn heartbeat(state: &State, c: &mut redis::Connection) -> redis::RedisResult<()> {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, millis);
    let record = state.keys.worker(&state.name);
    let workers = state.keys.workers();
    let mut pipe = redis::pipe();
    pipe.cmd("HSET")
        .arg(&record)
        .arg("host")
        .arg(&state.host)
        .arg("pid")
        .arg(std::process::id())
        .arg("processes")
        .arg(state.processes)
        .arg("done")
        .arg(state.jobs_done.load(Ordering::Relaxed))
        .arg("seen")
        .arg(now)
        .ignore();
    pipe.cmd("PEXPIRE").arg(&record).arg(millis(state.lease)).ignore();
    pipe.cmd("ZADD").arg(&workers).arg(now).arg(&state.name).ignore();
    pipe.cmd("PEXPIRE").arg(&workers).arg(DAY_MS).ignore();
    pipe.cmd("ZREMRANGEBYSCORE").arg(&workers).arg("-inf").arg(now.saturating_sub(DAY_MS)).ignore();
    pipe.exec(c)
}

/// Takes over what lost workers held, as far as there is room.
fn reclaim(state: &State, c: &mut redis::Connection) -> redis::RedisResult<()> {
    let room = state.prefetch.saturating_sub(state.held.lock().len());
    if room == 0 {
        return Ok(());
    }
    let reply: Value = scripts::reclaim()
        .key(state.keys.jobs())
        .arg(GROUP)
        .arg(&state.name)
        .arg(millis(state.lease))
        .arg(room)
        .arg(state.keys.worker_prefix())
        .arg(state.keys.attempts_prefix())
        .arg(DAY_MS)
        .invoke(c)?;
    let taken = wire::items(&reply)
        .iter()
        .filter_map(|item| match wire::items(item) {
            [id, fields, lost] => Some((
                wire::entry_parts(id, fields)?,
                wire::items(lost).iter().filter_map(wire::text).map(str::to_owned).collect(),
            )),
            _ => None,
        })
        .collect();
    take_jobs(state, c, taken)
}

/// Force-cancels the held jobs whose client asked for it or is gone.
fn kill_abandoned(state: &State, c: &mut redis::Connection) -> redis::RedisResult<()> {
    let jobs: Vec<(String, String, u64)> =
        state.held.lock().iter().map(|(entry, h)| (entry.clone(), h.client.clone(), h.seq)).collect();
    if jobs.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (_, client, seq) in &jobs {
        pipe.cmd("EXISTS").arg(state.keys.cancel(client, *seq));
        pipe.cmd("EXISTS").arg(state.keys.client(client));
    }
    let marks: Vec<bool> = pipe.query(c)?;
    let held = state.held.lock();
    for ((entry, _, _), mark) in jobs.iter().zip(marks.chunks_exact(2)) {
        let (cancelled, client_alive) = (mark[0], mark[1]);
        if (cancelled || !client_alive)
            && let Some(h) = held.get(entry)
        {
            h.future.force_cancel();
        }
    }
    Ok(())
}

/// One worker as its heartbeat describes it (see [`RedisExecutor::workers`](super::RedisExecutor::workers)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// `host:pid:<64 random bits>`, the worker's name in the consumer group (a pid alone is
    /// no name: pid 1 in every container, and a restarted worker may get its predecessor's).
    pub name: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// The processes of its local pool.
    pub processes: usize,
    /// Jobs it has finished (results written).
    pub jobs_done: u64,
    /// When it last sent a heartbeat.
    pub last_seen: SystemTime,
}

/// A clean stop: the worker's record and consumer go now; the consumer stays if it still has
/// jobs pending (deleting it would delete them), for another worker to reclaim them.
fn deregister(state: &State, c: &mut redis::Connection, left_pending: bool) {
    let _ = redis::cmd("DEL").arg(state.keys.worker(&state.name)).exec(c);
    let _ = redis::cmd("ZREM").arg(state.keys.workers()).arg(&state.name).exec(c);
    if !left_pending {
        let _ = redis::cmd("XGROUP").arg("DELCONSUMER").arg(state.keys.jobs()).arg(GROUP).arg(&state.name).exec(c);
    }
}

/// The workers whose record is alive, by name; records that do not read are left out.
pub(crate) fn list(c: &mut redis::Connection, keys: &Keys) -> redis::RedisResult<Vec<WorkerInfo>> {
    let names: Value = redis::cmd("ZRANGE").arg(keys.workers()).arg(0).arg(-1).query(c)?;
    let names: Vec<String> = wire::items(&names).iter().filter_map(wire::text).map(str::to_owned).collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for name in &names {
        pipe.cmd("HGETALL").arg(keys.worker(name));
    }
    let records: Vec<Value> = pipe.query(c)?;
    let mut out: Vec<WorkerInfo> =
        names.into_iter().zip(&records).filter_map(|(name, record)| worker_info(name, record)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn worker_info(name: String, record: &Value) -> Option<WorkerInfo> {
    let pairs: Vec<(&str, &str)> = match record {
        Value::Map(pairs) => pairs.iter().filter_map(|(k, v)| Some((wire::text(k)?, wire::text(v)?))).collect(),
        other => wire::items(other)
            .chunks_exact(2)
            .filter_map(|kv| Some((wire::text(&kv[0])?, wire::text(&kv[1])?)))
            .collect(),
    };
    let get = |field: &str| pairs.iter().find(|(k, _)| *k == field).map(|(_, v)| *v);
    let seen: u64 = get("seen")?.parse().ok()?;
    Some(WorkerInfo {
        name,
        host: get("host")?.to_owned(),
        pid: get("pid")?.parse().ok()?,
        processes: get("processes")?.parse().ok()?,
        jobs_done: get("done")?.parse().ok()?,
        last_seen: SystemTime::UNIX_EPOCH + Duration::from_millis(seen),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_said_at_most_once_a_minute_with_a_count_of_the_rest() {
        let mut said = Refusals::default();
        let start = Instant::now();
        assert_eq!(said.say(start), Some(0), "the first is said at once");
        for s in 1..60 {
            assert_eq!(said.say(start + Duration::from_secs(s)), None, "{s} s later");
        }
        assert_eq!(said.say(start + Duration::from_secs(60)), Some(59));
        assert_eq!(said.say(start + Duration::from_secs(61)), None);
        assert_eq!(said.say(start + Duration::from_secs(200)), Some(1));
    }
}
