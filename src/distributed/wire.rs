//! What the distributed backend writes into Redis: the key names, the job and result frames
//! (postcard headers followed by the process pool's postcard bodies), and the readers of Redis
//! replies. See `PROTOCOL.md` beside this file for the conversation.
//!
//! Everything read here comes from a shared server that anyone may write to: every reader
//! returns `None` or an error on a reply or an entry it cannot make sense of, and none may
//! panic.

use std::time::Duration;

use redis::Value;
use serde::{Deserialize, Serialize};

use super::connection::Namespace;
use crate::error::{ExitStatus, JobError};
use crate::process::protocol::{self, InputLayout, Status};

/// The consumer group every worker reads the job stream in.
pub(crate) const GROUP: &str = "workers";

/// The stream field that holds a job frame.
pub(crate) const JOB_FIELD: &str = "t";

/// The stream field that holds a result frame.
pub(crate) const RESULT_FIELD: &str = "r";

/// The names of every key, under one namespace (see `PROTOCOL.md` for each key's expiry).
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    ns: Namespace,
}

impl Keys {
    pub(crate) fn new(ns: &Namespace) -> Keys {
        Keys { ns: ns.clone() }
    }

    /// The job stream all clients add to and all workers read.
    pub(crate) fn jobs(&self) -> String {
        self.ns.key(&["jobs"])
    }

    /// The stream of results for one client.
    pub(crate) fn results(&self, client: &str) -> String {
        self.ns.key(&["results", client])
    }

    /// A client's liveness key, refreshed while it runs.
    pub(crate) fn client(&self, client: &str) -> String {
        self.ns.key(&["client", client])
    }

    /// The prefix of the workers' records (`worker:<name>`), used by the scripts.
    pub(crate) fn worker_prefix(&self) -> String {
        self.ns.key(&["worker", ""])
    }

    /// One worker's record, a hash refreshed by its heartbeat.
    pub(crate) fn worker(&self, worker: &str) -> String {
        self.ns.key(&["worker", worker])
    }

    /// The sorted set of worker names by last heartbeat: how `workers()` finds them.
    pub(crate) fn workers(&self) -> String {
        self.ns.key(&["workers"])
    }

    /// The forced-cancel mark of one job.
    pub(crate) fn cancel(&self, client: &str, seq: u64) -> String {
        self.ns.key(&["cancel", client, &seq.to_string()])
    }

    /// The prefix of the lists of workers that lost a job (`attempts:<entry id>`).
    pub(crate) fn attempts_prefix(&self) -> String {
        self.ns.key(&["attempts", ""])
    }
}

/// The header of a job frame; the job's postcard input follows it in the same field.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JobHeader<'a> {
    /// The submitting client's id: where the result goes.
    pub(crate) client: &'a str,
    /// The job's number within its client.
    pub(crate) seq: u64,
    /// The registered name of the code.
    pub(crate) code: &'a str,
    /// One input or a chunk of a map.
    pub(crate) layout: InputLayout,
    /// The job's time limit, in milliseconds.
    pub(crate) limit_ms: Option<u64>,
    /// How many times the job may be run again after losing the worker that held it.
    pub(crate) max_retries: u32,
    /// How long its result may wait in the client's result stream, in milliseconds.
    pub(crate) result_ttl_ms: u64,
}

impl JobHeader<'_> {
    /// Starts a job frame: the header, to which the caller appends the input.
    pub(crate) fn frame(&self) -> Vec<u8> {
        // A header of integers and strings into a Vec cannot fail to serialize.
        protocol::append(self, Vec::with_capacity(64 + self.code.len())).unwrap_or_default()
    }

    /// Splits a job frame into its header and input.
    pub(crate) fn parse(frame: &[u8]) -> Option<(JobHeader<'_>, &[u8])> {
        postcard::take_from_bytes(frame).ok()
    }
}

/// The header of a result frame; for [`Outcome::Done`], the worker's reply body follows.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ResultHeader<'a> {
    pub(crate) seq: u64,
    /// The name (`host:pid:<random>`) of the worker that ran it.
    pub(crate) worker: &'a str,
    pub(crate) outcome: Outcome,
}

impl ResultHeader<'_> {
    /// A whole result frame: the header, then `body`.
    pub(crate) fn frame(&self, body: &[u8]) -> Vec<u8> {
        let mut frame = protocol::append(self, Vec::with_capacity(48 + body.len())).unwrap_or_default();
        frame.extend_from_slice(body);
        frame
    }

    /// Splits a result frame into its header and body.
    pub(crate) fn parse(frame: &[u8]) -> Option<(ResultHeader<'_>, &[u8])> {
        postcard::take_from_bytes(frame).ok()
    }
}

/// How a job ended on its worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The code ran; its status and body are the process pool's (a value, a panic report...).
    Done(Status),
    /// It did not produce a reply of its own.
    Failed(Failure),
}

/// A [`JobError`] that is not a reply of the code itself, as it travels.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Failure {
    Cancelled,
    TimedOut { limit_ms: u64 },
    WorkerDied { pid: u32, code: Option<i32>, signal: Option<i32> },
    ProtocolViolation { pid: u32, reason: String },
    Serialization { message: String },
    Unregistered { name: String },
    WorkersLost { workers: Vec<String> },
    ResultRefused { bytes: u64, reason: String },
    Other { message: String },
}

impl Failure {
    /// The travelling form of an error of the worker's local pool.
    pub(crate) fn of(error: JobError) -> Failure {
        match error {
            JobError::Cancelled => Failure::Cancelled,
            JobError::TimedOut { limit } => {
                Failure::TimedOut { limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX) }
            }
            JobError::WorkerDied { pid, status } => {
                let (code, signal) = match status {
                    ExitStatus::Exited(c) => (Some(c), None),
                    ExitStatus::Signaled { signal } => (None, Some(signal)),
                    _ => (None, None),
                };
                Failure::WorkerDied { pid, code, signal }
            }
            JobError::ProtocolViolation { pid, reason } => Failure::ProtocolViolation { pid, reason: reason.into() },
            JobError::Serialization { message } => Failure::Serialization { message },
            JobError::Unregistered { name } => Failure::Unregistered { name },
            JobError::WorkersLost { workers } => Failure::WorkersLost { workers: workers.into() },
            JobError::ResultRefused { bytes, reason } => Failure::ResultRefused { bytes, reason: reason.into() },
            other => Failure::Other { message: other.to_string() },
        }
    }

    /// The error the client's future resolves with.
    pub(crate) fn into_error(self) -> JobError {
        match self {
            Failure::Cancelled => JobError::Cancelled,
            Failure::TimedOut { limit_ms } => JobError::TimedOut { limit: Duration::from_millis(limit_ms) },
            Failure::WorkerDied { pid, code, signal } => {
                let status = match (code, signal) {
                    (Some(c), _) => ExitStatus::Exited(c),
                    (None, Some(signal)) => ExitStatus::Signaled { signal },
                    (None, None) => ExitStatus::Unknown,
                };
                JobError::WorkerDied { pid, status }
            }
            Failure::ProtocolViolation { pid, reason } => JobError::ProtocolViolation { pid, reason: reason.into() },
            Failure::Serialization { message } => JobError::Serialization { message },
            Failure::Unregistered { name } => JobError::Unregistered { name },
            Failure::WorkersLost { workers } => JobError::WorkersLost { workers: workers.into() },
            Failure::ResultRefused { bytes, reason } => JobError::ResultRefused { bytes, reason: reason.into() },
            Failure::Other { message } => JobError::Lost { reason: message.into() },
        }
    }
}

/// One stream entry: its id and its fields (empty for an entry deleted since it was read).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The value of the field `name`, if the entry has it.
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.as_slice())
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// A string reply as text.
pub(crate) fn text(v: &Value) -> Option<&str> {
    bytes(v).and_then(|b| std::str::from_utf8(b).ok())
}

/// The items of an array reply (a set too); nothing for anything else.
pub(crate) fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// One `[id, [field, value, ...]]` entry; `None` if it is not one.
pub(crate) fn entry(v: &Value) -> Option<Entry> {
    let [id, fields] = items(v) else { return None };
    entry_parts(id, fields)
}

/// An entry from its id and its fields' reply.
pub(crate) fn entry_parts(id: &Value, fields: &Value) -> Option<Entry> {
    let id = text(id)?.to_owned();
    let fields = match fields {
        Value::Map(pairs) => pairs.iter().filter_map(|(k, v)| Some((bytes(k)?.to_vec(), bytes(v)?.to_vec()))).collect(),
        other => items(other)
            .chunks_exact(2)
            .filter_map(|kv| Some((bytes(&kv[0])?.to_vec(), bytes(&kv[1])?.to_vec())))
            .collect(),
    };
    Some(Entry { id, fields })
}

/// The entries of an `XREAD` / `XREADGROUP` reply, over all its streams (RESP2 arrays or RESP3
/// maps); a nil reply (the block timed out) has none.
pub(crate) fn stream_entries(reply: &Value) -> Vec<Entry> {
    let per_stream: Vec<&Value> = match reply {
        Value::Map(pairs) => pairs.iter().map(|(_, entries)| entries).collect(),
        other => items(other)
            .iter()
            .filter_map(|stream| match items(stream) {
                [_, entries] => Some(entries),
                _ => None,
            })
            .collect(),
    };
    per_stream.into_iter().flat_map(|entries| items(entries).iter().filter_map(entry)).collect()
}

/// A stream entry id as numbers, for ordering (`None` if it is not `ms-seq`).
pub(crate) fn entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// `host` of this machine, for worker names and messages.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn job_and_result_frames_round_trip() {
        let header = JobHeader {
            client: "c1",
            seq: 7,
            code: "a::b",
            layout: InputLayout::Many,
            limit_ms: Some(5),
            max_retries: 1,
            result_ttl_ms: 9,
        };
        let frame = protocol::append(&(1u8, 2u16), header.frame()).unwrap();
        let (h, input) = JobHeader::parse(&frame).unwrap();
        assert_eq!((h.client, h.seq, h.code, h.limit_ms, h.max_retries), ("c1", 7, "a::b", Some(5), 1));
        assert_eq!(postcard::from_bytes::<(u8, u16)>(input).unwrap(), (1, 2));

        let frame = ResultHeader { seq: 9, worker: "h:1", outcome: Outcome::Done(Status::Ok) }.frame(b"xyz");
        let (h, body) = ResultHeader::parse(&frame).unwrap();
        assert!(matches!(h.outcome, Outcome::Done(Status::Ok)));
        assert_eq!((h.seq, h.worker, body), (9, "h:1", &b"xyz"[..]));
    }

    #[test]
    fn errors_travel() {
        let lost = JobError::WorkersLost { workers: vec!["a:1".to_owned(), "b:2".to_owned()].into() };
        assert_eq!(Failure::of(lost.clone()).into_error(), lost);
        let died = JobError::WorkerDied { pid: 3, status: ExitStatus::Signaled { signal: 9 } };
        assert_eq!(Failure::of(died.clone()).into_error(), died);
        let late = JobError::TimedOut { limit: Duration::from_millis(250) };
        assert_eq!(Failure::of(late.clone()).into_error(), late);
        let refused = JobError::ResultRefused { bytes: 9, reason: "worker h:1:ab: OOM".into() };
        assert_eq!(Failure::of(refused.clone()).into_error(), refused);
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert!(JobHeader::parse(&[0xff; 5]).is_none());
        assert!(ResultHeader::parse(&[]).is_none());
        assert!(entry(&Value::Int(3)).is_none());
        assert!(stream_entries(&Value::Nil).is_empty());
        let odd = Value::Array(vec![Value::Array(vec![Value::Int(1)]), Value::Okay]);
        assert!(stream_entries(&odd).is_empty());
        assert_eq!(entry_id("12-3"), Some((12, 3)));
        assert_eq!(entry_id("x"), None);
    }
}
