//! The worker process's main loop: read task frames, run the named code, write reply frames.
//!
//! A worker is single-threaded unless its jobs start threads. It runs tasks strictly in the
//! order they arrive and answers each one before it starts the next; the parent relies on that
//! order to know which task a dead worker was running (the first one not yet answered).
//!
//! This module must never panic on a frame it cannot read: it reports and goes on.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

use std::os::fd::{AsFd, OwnedFd};

use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender};

use crate::process::protocol::{self, FromWorker, Initializer, InputLayout, Status, ToWorker};
use crate::process::registration;
use crate::process::slot::{self, Slot};

/// If set in the program's environment when the fork server starts, the path of a file to
/// which every worker appends `task-id start-ns` (`CLOCK_MONOTONIC`) as it begins a task,
/// *before* the pool could judge the task overdue: a witness for tests of supervision (and a
/// debugging aid). One `write` per task, to an `O_APPEND` file.
pub(crate) const TRACE_STARTS: &str = "STEALPOOL_TRACE_STARTS";
use crate::ipc::{self, Blocking, FrameError, Reader};

/// Serves tasks until the parent closes the task channel (or disappears). Returns the exit code.
pub(crate) fn serve(tasks: IpcBytesReceiver, replies: IpcBytesSender, initializer: Option<Initializer>) -> i32 {
    let pid = std::process::id();
    // A job's panic reports its location (and backtrace, when enabled) to the parent.
    crate::unwind::record_panic_details();
    let (tasks, replies) = match (ipc::take_socket(tasks), ipc::take_socket(replies)) {
        (Ok(t), Ok(r)) => (t, r),
        (Err(e), _) | (_, Err(e)) => {
            let _ = writeln!(std::io::stderr(), "stealpool worker {pid}: cannot take its sockets: {e}");
            return 1;
        }
    };
    serve_sockets(pid, Reader::new(tasks, ipc::MAX_FRAME), replies, initializer)
}

fn serve_sockets(pid: u32, mut tasks: Reader, replies: OwnedFd, initializer: Option<Initializer>) -> i32 {
    // The pool's first frame carries the slot, where this worker says which task it runs.
    let slot = match ipc::recv_with_fd(tasks.fd()) {
        Ok((_, Some(fd))) => Slot::map(&fd).map_err(|e| e.to_string()),
        Ok((_, None)) => Err("the pool's first frame carried no slot".to_owned()),
        Err(FrameError::Closed) => return 0,
        Err(e) => Err(e.to_string()),
    };
    let slot = match slot {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "stealpool worker {pid}: {e}");
            return 1;
        }
    };
    let trace = std::env::var_os(TRACE_STARTS)
        .and_then(|path| std::fs::OpenOptions::new().append(true).create(true).open(path).ok());
    let mut frame = Vec::with_capacity(256);
    let init_error = initializer.and_then(|Initializer { name, args }| {
        let mut out = Vec::new();
        match registration::invoke(&name, InputLayout::One, &args, &mut out) {
            Status::Ok => None,
            status => Some(describe(&name, status, &out)),
        }
    });
    protocol::reply_frame(&FromWorker::Ready { pid, init_error: init_error.as_deref() }, &[], &mut frame);
    if ipc::send(replies.as_fd(), &frame).is_err() || init_error.is_some() {
        return 1;
    }

    let mut waiting: VecDeque<(Rc<Vec<u8>>, Range<usize>)> = VecDeque::new();
    let mut skipped: HashSet<u64> = HashSet::new();
    let mut open = true;
    let mut body = Vec::with_capacity(256);
    // Task messages read (after the first): while the pool's writer says it has sent more,
    // some are in the socket and a read without waiting finds them.
    let mut received: u64 = 0;
    loop {
        if waiting.is_empty() {
            if !open {
                return 0;
            }
            match tasks.recv_owned(Blocking::Yes) {
                Ok(Some(f)) => {
                    received += 1;
                    sort_incoming(f, &mut waiting, &mut skipped);
                }
                Ok(None) => {}
                Err(e) => return closed(pid, &e), // the parent closed the channel: retire
            }
        }
        // Read whatever else has arrived, without blocking, so that a `Skip` sent after a task
        // is seen before that task's turn. The slot says whether anything did (the writer
        // counts what it has sent whole), so an empty socket costs no system call.
        while open && received < slot.frames_sent() {
            match tasks.recv_owned(Blocking::No) {
                Ok(Some(f)) => {
                    received += 1;
                    sort_incoming(f, &mut waiting, &mut skipped);
                }
                Ok(None) => break,
                Err(e) => {
                    closed(pid, &e);
                    open = false;
                }
            }
        }
        let Some((message, at)) = waiting.pop_front() else { continue };
        let Ok((ToWorker::Task { id, mode, code }, input)) =
            protocol::split::<ToWorker<'_>>(message.get(at).unwrap_or_default())
        else {
            let _ = writeln!(std::io::stderr(), "stealpool worker {pid}: unreadable task frame dropped");
            continue;
        };
        if skipped.remove(&id) {
            protocol::reply_frame(&FromWorker::Skipped { id }, &[], &mut frame);
        } else {
            body.clear();
            let started = Instant::now();
            let since = slot::now_ns();
            if let Some(mut f) = trace.as_ref() {
                let _ = f.write_all(format!("{id} {since}\n").as_bytes());
            }
            slot.begin(id, since);
            let mut status = registration::invoke(code, mode, input, &mut body);
            let busy_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if !slot.end(id) {
                // The pool condemned this task (time limit, forced cancel) while it ran and is
                // killing this process: no reply, and nothing else may start.
                return 2;
            }
            if body.len() > ipc::MAX_FRAME - 64 {
                status = Status::BadOutput;
                body.clear();
                let _ = write!(body, "a result of more than {} bytes cannot travel back", ipc::MAX_FRAME - 64);
            }
            protocol::reply_frame(&FromWorker::Done { id, status, busy_ns }, &[], &mut frame);
        }
        if ipc::send_parts(replies.as_fd(), &[&frame, &body], None).is_err() {
            return 1; // the parent is gone
        }
        body.clear();
        if body.capacity() > 1 << 20 {
            body = Vec::with_capacity(256); // do not pin a large buffer between tasks
        }
        if frame.capacity() > 1 << 20 {
            frame = Vec::with_capacity(256);
        }
    }
}

/// Sorts an incoming message: a skip request is remembered, a batch is unpacked (its frames
/// stay where they arrived: the queue holds their places in the one message), anything else
/// waits its turn.
fn sort_incoming(
    (frame, start): (Vec<u8>, usize),
    waiting: &mut VecDeque<(Rc<Vec<u8>>, Range<usize>)>,
    skipped: &mut HashSet<u64>,
) {
    let message = Rc::new(frame);
    let whole = start..message.len();
    match protocol::split::<ToWorker<'_>>(message.get(whole.clone()).unwrap_or_default()) {
        Ok((ToWorker::Skip { id }, _)) => {
            skipped.insert(id);
        }
        Ok((ToWorker::Batch, body)) => {
            let base = message.as_ptr() as usize;
            for inner in protocol::batch_frames(body) {
                match protocol::split::<ToWorker<'_>>(inner) {
                    Ok((ToWorker::Skip { id }, _)) => {
                        skipped.insert(id);
                    }
                    _ => {
                        // `inner` lies inside `message`: its place is its offset there.
                        let at = inner.as_ptr() as usize - base;
                        waiting.push_back((Rc::clone(&message), at..at + inner.len()));
                    }
                }
            }
        }
        _ => waiting.push_back((Rc::clone(&message), whole)),
    }
}

/// Sorts `frame` as the worker would and decodes what it queued (for the protocol fuzzer).
#[cfg(test)]
pub(crate) fn sort_for_fuzzing(frame: &[u8]) {
    let (mut waiting, mut skipped) = (VecDeque::new(), HashSet::new());
    sort_incoming((frame.to_vec(), 0), &mut waiting, &mut skipped);
    for (message, at) in waiting {
        let _ = protocol::split::<ToWorker<'_>>(message.get(at).unwrap_or_default());
    }
}

/// The task channel ended: the parent closed it (retire, exit code 0), died while sending, or
/// broke the framing, which only a broken parent would (said on stderr). Returns the exit code.
fn closed(pid: u32, e: &FrameError) -> i32 {
    match e {
        FrameError::Closed => 0,
        other => {
            let _ = writeln!(std::io::stderr(), "stealpool worker {pid}: task channel: {other}");
            1
        }
    }
}

fn describe(name: &str, status: Status, out: &[u8]) -> String {
    if status == Status::Panicked {
        return format!("initializer `{name}` panicked: {}", protocol::PanicReport::decode(out));
    }
    let text = String::from_utf8_lossy(out);
    match status {
        Status::Unregistered => format!("initializer `{text}` is not registered"),
        _ => format!("initializer `{name}` failed: {text}"),
    }
}

/// Ends the worker process: flushes what jobs printed, then exits with `code`.
pub(crate) fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}
