//! The worker's control thread: writes each result together with the acknowledgement of its
//! job (one atomic `MULTI`), sends heartbeats, takes over the jobs of lost workers, and kills
//! held jobs that were force-cancelled or whose client is gone. Also the reader of the worker
//! records, for [`RedisExecutor::workers`](super::RedisExecutor::workers).
//!
//! A result is kept in memory until Redis has acknowledged its write: a Redis restart delays
//! it, never loses it. This thread must never block without a bound and never panic on a
//! reply.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use redis::Value;

use super::client::{is_connection_error, millis};
use super::connection::Backoff;
use super::scripts;
use super::wire::{self, Failure, GROUP, Keys, Outcome, RESULT_FIELD, ResultHeader};
use super::worker::{Ended, State, take_jobs};
use crate::error::JobError;

/// How long the list of workers (`{ns}:workers`) and the lists of lost workers live unrenewed.
const DAY_MS: u64 = 24 * 3600 * 1000;

/// At most this many results go in one `MULTI`.
const WRITE_BATCH: usize = 512;

/// One write: acknowledge and delete a job entry, with its result if it has one.
struct Write {
    entry: String,
    result: Option<(String, u64, Vec<u8>)>,
}

/// Runs the control thread until the worker stops and every held job's result is written.
pub(crate) fn run(state: &Arc<State>, first: redis::Connection, ended: Receiver<Ended>) {
    let mut connection = Some(first);
    let mut writes: Vec<Write> = Vec::new();
    let mut heartbeat_due = Instant::now();
    let mut poll_due = Instant::now();
    let mut backoff = Backoff::new();
    let tick = state.poll.min(state.heartbeat);
    loop {
        if writes.len() < WRITE_BATCH {
            match ended.recv_timeout(tick) {
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
        if stopping && writes.is_empty() && state.held.lock().is_empty() {
            if let Some(c) = connection.as_mut() {
                deregister(state, c);
            }
            return;
        }
        let Some(c) = state.config.reconnect(&mut connection, &mut backoff) else { continue };
        let step = (|| {
            if !writes.is_empty() {
                write(state, c, &writes)?;
                writes.clear();
            }
            if Instant::now() >= heartbeat_due {
                heartbeat(state, c)?;
                if !stopping {
                    reclaim(state, c)?;
                }
                heartbeat_due = crate::distributed::client::after(state.heartbeat);
            }
            if Instant::now() >= poll_due {
                kill_abandoned(state, c)?;
                poll_due = crate::distributed::client::after(state.poll);
            }
            Ok::<(), redis::RedisError>(())
        })();
        match step {
            Ok(()) => {}
            Err(e) if is_connection_error(&e) => connection = None,
            Err(e) => {
                // Refused (a key of ours overwritten with another type, say): say so, drop the
                // writes Redis will not take rather than retry them forever, and go on.
                eprintln!("stealpool worker {}: Redis refused: {e}", state.name);
                writes.clear();
                std::thread::sleep(tick);
            }
        }
    }
}

/// Turns what the reader or the pool announced into a write.
fn prepare(state: &State, ended: Ended) -> Write {
    match ended {
        Ended::Ran(entry) => {
            let held = state.held.lock().remove(&entry);
            state.room.notify_all();
            let Some(held) = held else { return Write { entry, result: None } };
            // Done: the callback that sent this runs just before the outcome is stored.
            let frame = match held.future.result() {
                Ok((status, body)) => {
                    ResultHeader { seq: held.seq, worker: &state.name, outcome: Outcome::Done(status) }.frame(&body)
                }
                Err(e) => ResultHeader { seq: held.seq, worker: &state.name, outcome: Outcome::Failed(Failure::of(e)) }
                    .frame(&[]),
            };
            Write { entry, result: Some((held.client, held.result_ttl_ms, frame)) }
        }
        Ended::WrittenOff { entry, answer } => {
            let result = answer.map(|(client, seq, ttl, error): (String, u64, u64, JobError)| {
                let header = ResultHeader { seq, worker: &state.name, outcome: Outcome::Failed(Failure::of(error)) };
                (client, ttl, header.frame(&[]))
            });
            Write { entry, result }
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
    /// `host:pid`, the worker's name in the consumer group.
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

/// A clean stop: the worker's record and consumer go now.
fn deregister(state: &State, c: &mut redis::Connection) {
    let _ = redis::cmd("DEL").arg(state.keys.worker(&state.name)).exec(c);
    let _ = redis::cmd("ZREM").arg(state.keys.workers()).arg(&state.name).exec(c);
    let _ = redis::cmd("XGROUP").arg("DELCONSUMER").arg(state.keys.jobs()).arg(GROUP).arg(&state.name).exec(c);
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
