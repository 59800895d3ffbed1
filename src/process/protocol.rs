//! The wire messages between the pool (parent) and its worker processes (the fork server's
//! records live in `fork_server/mod.rs`). Only the shapes and their encoding live here; the code
//! that moves them is in `pool.rs` and `worker.rs`. See `PROTOCOL.md` for the conversation.
//!
//! Task and reply frames travel over the workers' sockets in the pool's own framing (`ipc/frame.rs`),
//! so a job's serialized input is written once, straight behind a small postcard header, and
//! read in place on the other side: no second serialization pass over a large payload. Every
//! decoder here returns an error on bytes it cannot read; none may panic.

use serde::{Deserialize, Serialize};

pub(crate) use crate::ipc::codec::append;

/// How a task's input is laid out.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputLayout {
    /// One input, one output (`submit`, `apply_async`).
    One,
    /// A chunk of a map: a list of inputs, a list of per-item outcomes.
    Many,
}

/// How a task ended in the worker. The reply's body is the serialized output for `Ok`, a
/// UTF-8 message otherwise.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The output follows.
    Ok,
    /// The job panicked; a [`PanicReport`] follows.
    Panicked,
    /// The named code is not registered in the worker; the name follows.
    Unregistered,
    /// The input did not deserialize as the code's argument type.
    BadInput,
    /// The output did not serialize.
    BadOutput,
}

/// The body of a [`Status::Panicked`] reply (and the error of a panicked item of a map chunk):
/// what the worker learned of the panic. The parent bounds the texts again when it reads one
/// ([`PanicReport::into_error`]): they come from another process and are only text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PanicReport {
    pub(crate) message: String,
    pub(crate) location: Option<String>,
    pub(crate) backtrace: Option<String>,
}

impl PanicReport {
    /// The report of a [`JobError`](crate::JobError) that [`crate::unwind::catch`] returned
    /// (a panic; anything else becomes its message).
    pub(crate) fn of(error: crate::JobError) -> Self {
        match error {
            crate::JobError::Panicked { message, details } => {
                let (location, backtrace) = details.map_or((None, None), |d| (d.location, d.backtrace));
                PanicReport { message, location, backtrace }
            }
            other => PanicReport { message: other.to_string(), location: None, backtrace: None },
        }
    }

    /// Reads a report; a body that is not one is taken as the bare message.
    pub(crate) fn decode(body: &[u8]) -> Self {
        postcard::from_bytes(body).unwrap_or_else(|_| PanicReport {
            message: String::from_utf8_lossy(body).into_owned(),
            location: None,
            backtrace: None,
        })
    }

    /// The error the job's future resolves with, the location and backtrace cut to their
    /// limits.
    pub(crate) fn into_error(self) -> crate::JobError {
        use crate::unwind::{MAX_BACKTRACE, MAX_LOCATION, bounded};
        let location = self.location.map(|l| bounded(l, MAX_LOCATION));
        let backtrace = self.backtrace.map(|b| bounded(b, MAX_BACKTRACE));
        let details = (location.is_some() || backtrace.is_some())
            .then(|| Box::new(crate::error::PanicDetails::new(location, backtrace)));
        crate::JobError::Panicked { message: self.message, details }
    }
}

impl std::fmt::Display for PanicReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{} (at {location})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The largest serialized initializer arguments ([`ProcessPoolBuilder::initializer_with`](crate::ProcessPoolBuilder::initializer_with)):
/// they travel in every spawn request, through the fork server.
pub(crate) const MAX_INITARGS: usize = 64 << 10;

/// The code a worker runs before its first task: a registered function's name and its
/// serialized arguments (empty for a function without arguments). Sent in each spawn request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Initializer {
    pub(crate) name: String,
    pub(crate) args: Vec<u8>,
}

/// Parent -> worker, over the worker's task channel. A `Task` header is followed by the input.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker<'a> {
    /// Run the code named `code` on the input that follows.
    Task { id: u64, mode: InputLayout, code: &'a str },
    /// Do not run task `id` (force-cancelled while it waited in the worker's window); answer
    /// `Skipped` when its turn comes.
    Skip { id: u64 },
    /// Several small frames in one message, each preceded by its length: the writer coalesces
    /// what queued up while it was sending, so a burst of small tasks costs one system call.
    Batch,
}

/// Worker -> parent, over the worker's reply channel. A `Done` header is followed by the body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker<'a> {
    /// The first message of every worker: started, initializer run (or failed).
    Ready { pid: u32, init_error: Option<&'a str> },
    /// A task ended; `busy_ns` is how long the code ran, which sizes the pool's window.
    Done { id: u64, status: Status, busy_ns: u64 },
    /// A task was skipped as asked.
    Skipped { id: u64 },
    /// Several `Done` / `Skipped` replies in one message, each preceded by its length (a
    /// postcard `u64`), in the order of their tasks: a worker whose pool is behind holds the
    /// replies of short tasks while it runs the next ones (see `PROTOCOL.md`). At least one,
    /// at most [`MAX_HELD_REPLIES`], nothing after the last; anything else is a violation.
    Batch,
}

/// Starts a task frame: the header, to which the caller appends the input.
#[cfg(test)]
pub(crate) fn task_frame(id: u64, mode: InputLayout, code: &str, capacity: usize) -> Vec<u8> {
    task_frame_in(Vec::with_capacity(capacity + code.len() + 24), id, mode, code)
}

/// [`task_frame`] in `buf` (emptied first): a buffer kept for reuse, so that a large input is
/// serialized straight into memory that is already mapped.
pub(crate) fn task_frame_in(mut buf: Vec<u8>, id: u64, mode: InputLayout, code: &str) -> Vec<u8> {
    buf.clear();
    let header = ToWorker::Task { id, mode, code };
    // Serializing a header of integers and a string into a Vec cannot fail.
    append(&header, buf).unwrap_or_default()
}

/// A skip frame.
pub(crate) fn skip_frame(id: u64) -> Vec<u8> {
    postcard::to_stdvec(&ToWorker::Skip { id }).unwrap_or_default()
}

/// Frames at most this long are coalesced into batches; longer ones travel alone, uncopied.
pub(crate) const BATCHABLE: usize = 4 << 10;

/// Stop adding to a batch past this size.
pub(crate) const BATCH_BYTES: usize = 64 << 10;

/// Starts a batch message.
pub(crate) fn batch_start(buf: &mut Vec<u8>) {
    buf.clear();
    if let Ok(v) = append(&ToWorker::Batch, std::mem::take(buf)) {
        *buf = v;
    }
}

/// Appends one frame to a batch message.
pub(crate) fn batch_push(buf: &mut Vec<u8>, frame: &[u8]) {
    if let Ok(v) = append(&(frame.len() as u64), std::mem::take(buf)) {
        *buf = v;
    }
    buf.extend_from_slice(frame);
}

/// Appends one frame made of `parts` to a batch message.
pub(crate) fn batch_push_parts(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if let Ok(v) = append(&(len as u64), std::mem::take(buf)) {
        *buf = v;
    }
    for p in parts {
        buf.extend_from_slice(p);
    }
}

/// The frames of a batch message's body (what follows its header). Stops at the first
/// malformed length.
pub(crate) fn batch_frames(mut body: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = postcard::take_from_bytes::<u64>(body).ok()?;
        let len = usize::try_from(len).ok().filter(|&l| l <= rest.len())?;
        let (frame, rest) = rest.split_at(len);
        body = rest;
        Some(frame)
    })
}

/// A worker holds at most this many replies before it sends them.
pub(crate) const MAX_HELD_REPLIES: usize = 32;

/// A worker holds replies of at most this many bytes in all (each at most [`BATCHABLE`]).
pub(crate) const HELD_BYTES: usize = 16 << 10;

/// The replies inside a reply batch's body (what follows its `Batch` header), checked whole
/// before any is handed out: every length must decode and fit, none may be empty, there must
/// be between one and [`MAX_HELD_REPLIES`], and no byte may follow the last. `Err` says how the
/// body breaks those rules.
pub(crate) fn reply_batch(body: &[u8]) -> Result<impl Iterator<Item = &[u8]>, String> {
    let mut rest = body;
    let mut count = 0usize;
    while !rest.is_empty() {
        let (len, after) =
            postcard::take_from_bytes::<u64>(rest).map_err(|e| format!("a reply batch with a bad length ({e})"))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && l <= after.len())
            .ok_or_else(|| format!("a reply batch with a reply of {len} bytes where {} are left", after.len()))?;
        count += 1;
        if count > MAX_HELD_REPLIES {
            return Err(format!("a reply batch of more than {MAX_HELD_REPLIES} replies"));
        }
        rest = &after[len..];
    }
    if count == 0 {
        return Err("an empty reply batch".into());
    }
    // Checked: the lenient walker yields exactly the `count` replies.
    Ok(batch_frames(body))
}

/// A reply frame: the header followed by `body`.
pub(crate) fn reply_frame(header: &FromWorker<'_>, body: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    if let Ok(v) = append(header, std::mem::take(buf)) {
        *buf = v;
    }
    buf.extend_from_slice(body);
}

/// Splits a frame into its header and the bytes that follow it.
pub(crate) fn split<'a, H: Deserialize<'a>>(frame: &'a [u8]) -> Result<(H, &'a [u8]), postcard::Error> {
    postcard::take_from_bytes(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_frame_round_trip() {
        let mut frame = task_frame(7, InputLayout::Many, "a::b", 8);
        frame = append(&(1u8, 2u16), frame).unwrap();
        let (h, rest): (ToWorker<'_>, &[u8]) = split(&frame).unwrap();
        match h {
            ToWorker::Task { id, mode, code } => {
                assert_eq!((id, mode, code), (7, InputLayout::Many, "a::b"));
            }
            other => panic!("unexpected header {other:?}"),
        }
        assert_eq!(postcard::from_bytes::<(u8, u16)>(rest).unwrap(), (1, 2));
    }

    #[test]
    fn batch_round_trip() {
        let a = task_frame(1, InputLayout::One, "x", 0);
        let b = skip_frame(2);
        let mut batch = Vec::new();
        batch_start(&mut batch);
        batch_push(&mut batch, &a);
        batch_push(&mut batch, &b);
        let (h, body): (ToWorker<'_>, &[u8]) = split(&batch).unwrap();
        assert!(matches!(h, ToWorker::Batch));
        let frames: Vec<&[u8]> = batch_frames(body).collect();
        assert_eq!(frames, [&a[..], &b[..]]);
        // A truncated batch yields the whole frames only.
        assert_eq!(batch_frames(&body[..body.len() - 1]).count(), 1);
    }

    #[test]
    fn reply_frame_round_trip() {
        let mut buf = Vec::new();
        reply_frame(&FromWorker::Done { id: 3, status: Status::Panicked, busy_ns: 9 }, b"boom", &mut buf);
        let (h, body): (FromWorker<'_>, &[u8]) = split(&buf).unwrap();
        assert!(matches!(h, FromWorker::Done { id: 3, status: Status::Panicked, busy_ns: 9 }));
        assert_eq!(body, b"boom");
    }

    #[test]
    fn reply_batches_are_checked_whole() {
        let mut a = Vec::new();
        reply_frame(&FromWorker::Done { id: 1, status: Status::Ok, busy_ns: 2 }, b"x", &mut a);
        let mut b = Vec::new();
        reply_frame(&FromWorker::Skipped { id: 2 }, &[], &mut b);
        let mut batch = Vec::new();
        reply_frame(&FromWorker::Batch, &[], &mut batch);
        batch_push(&mut batch, &a);
        batch_push(&mut batch, &b);
        let (h, body): (FromWorker<'_>, &[u8]) = split(&batch).unwrap();
        assert!(matches!(h, FromWorker::Batch));
        assert_eq!(reply_batch(body).unwrap().collect::<Vec<_>>(), [&a[..], &b[..]]);
        // Cut anywhere, or with a byte more, or empty: refused whole.
        for cut in 0..body.len() {
            // Cut right after the first reply, it is a batch of one.
            assert_eq!(reply_batch(&body[..cut]).is_ok(), cut == 1 + a.len(), "cut at {cut}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(reply_batch(&longer).is_err(), "an empty reply at the end");
        longer.pop();
        longer.extend_from_slice(&[0xff; 11]);
        assert!(reply_batch(&longer).is_err(), "a length that does not decode");
        let mut many = Vec::new();
        for _ in 0..=MAX_HELD_REPLIES {
            batch_push(&mut many, &b);
        }
        assert!(reply_batch(&many).is_err(), "too many replies");
        let huge = postcard::to_stdvec(&u64::MAX).unwrap();
        assert!(reply_batch(&huge).is_err());
    }

    #[test]
    fn panic_report_round_trip_and_bounds() {
        let report = PanicReport {
            message: "boom".into(),
            location: Some("x".repeat(crate::unwind::MAX_LOCATION + 1)),
            backtrace: Some("é".repeat(crate::unwind::MAX_BACKTRACE)),
        };
        let mut body = Vec::new();
        body = append(&report, body).unwrap();
        assert_eq!(PanicReport::decode(&body), report);
        let error = PanicReport::decode(&body).into_error();
        let location = error.panic_location().unwrap();
        assert!(location.len() <= crate::unwind::MAX_LOCATION + 6 && location.ends_with("[cut]"));
        let backtrace = error.panic_backtrace().unwrap();
        assert!(backtrace.len() <= crate::unwind::MAX_BACKTRACE + 6 && backtrace.ends_with("[cut]"));
        // A body that is not a report (a hostile or broken worker) is just the message.
        let bare = PanicReport::decode(&[0xff, 0xfe, b'!']);
        assert_eq!((bare.location, bare.backtrace), (None, None));
        assert_eq!(bare.message, String::from_utf8_lossy(&[0xff, 0xfe, b'!']));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(split::<ToWorker<'_>>(&[0xff, 0xff, 0xff]).is_err());
        assert!(split::<FromWorker<'_>>(&[]).is_err());
    }
}
