//! The worker process's main loop: read task frames, run the named code, write reply frames.
//!
//! A worker runs tasks strictly in the order they arrive. It answers each one before it starts
//! the next, except while its pool is behind (`PROTOCOL.md`, *Held replies*): then the replies
//! of short tasks are held, a copy of them in the slot, and go together in one `Batch` message,
//! at the latest after about 500 µs (the flusher thread, the one thread a worker starts). The
//! parent relies on the order, and on the slot, to know which task a dead worker was running.
//!
//! This module must never panic on a frame it cannot read: it reports and goes on.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

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
    let out = Replies::new(replies);
    // Task messages read (after the first): while the pool's writer says it has sent more,
    // some are in the socket and a read without waiting finds them.
    let mut received: u64 = 0;
    loop {
        if waiting.is_empty() {
            // About to wait for work: nothing may stay held meanwhile.
            if out.flush().is_err() {
                return 1;
            }
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
        let mut busy_ns = 0;
        if skipped.remove(&id) {
            protocol::reply_frame(&FromWorker::Skipped { id }, &[], &mut frame);
        } else {
            // Held replies go out before a task begins, unless the pool is still behind.
            if !out.may_keep(&slot) && out.flush().is_err() {
                return 1;
            }
            body.clear();
            let started = Instant::now();
            let since = slot::now_ns();
            if let Some(mut f) = trace.as_ref() {
                let _ = f.write_all(format!("{id} {since}\n").as_bytes());
            }
            slot.begin(id, since);
            let mut status = registration::invoke(code, mode, input, &mut body);
            busy_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
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
        // Hold the reply if another task is ready to run, this one ran short, and the pool has
        // not read what was sent before: it would not read this reply any sooner.
        let hold = !waiting.is_empty() && busy_ns < HOLD_BELOW_NS;
        if out.reply(&slot, &frame, &body, hold).is_err() {
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

/// A reply is held (to travel with the next ones) only after a task that ran less than this.
const HOLD_BELOW_NS: u64 = 100_000;

/// A held reply waits at most about this long (the flusher thread's period) whatever the
/// worker runs meanwhile: a task that waits for what the parent does once it has an earlier
/// result must not wait for ever.
const FLUSH_AFTER: Duration = Duration::from_micros(500);

/// The flusher thread parks after this long with nothing held.
const FLUSHER_IDLE: Duration = Duration::from_millis(50);

/// The reply socket and the replies held to be sent together as one `Batch` message, shared
/// by the worker's main thread and its flusher thread (started at the first held reply).
struct Replies {
    shared: Arc<(Mutex<Out>, Condvar)>,
    flusher: std::cell::Cell<bool>,
}

struct Out {
    fd: OwnedFd,
    /// A `Batch` header and the held replies, each preceded by its length.
    held: Vec<u8>,
    count: usize,
    /// When the first held reply was held (`slot::now_ns`).
    since_ns: u64,
    /// Messages sent after `Ready` (a batch counts once, as the pool's reader counts).
    sent: u64,
    /// The flusher waits on the condition variable (nothing held for a while).
    parked: bool,
    /// A send failed: the parent is gone.
    failed: bool,
}

impl Out {
    fn flush(&mut self) -> std::io::Result<()> {
        if self.failed {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        if self.count == 0 {
            return Ok(());
        }
        // The copy in the slot stays until the next batch replaces it: if the parent stops
        // reading before this message (a job of this worker wrote garbage to the socket), it
        // still recovers these replies; once read, they answer nothing and are passed over.
        let sent = ipc::send(self.fd.as_fd(), &self.held);
        self.count = 0;
        self.held.clear();
        if self.held.capacity() > 2 * protocol::HELD_BYTES {
            self.held = Vec::new();
        }
        self.after_send(sent)
    }

    fn after_send(&mut self, sent: std::io::Result<()>) -> std::io::Result<()> {
        match sent {
            Ok(()) => {
                self.sent += 1;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

impl Replies {
    fn new(fd: OwnedFd) -> Replies {
        let out = Out { fd, held: Vec::new(), count: 0, since_ns: 0, sent: 0, parked: false, failed: false };
        Replies { shared: Arc::new((Mutex::new(out), Condvar::new())), flusher: std::cell::Cell::new(false) }
    }

    /// Whether what is held may stay held while another task runs: the pool allows holding
    /// (no time limits) and has not read everything sent.
    fn may_keep(&self, slot: &Slot) -> bool {
        let out = self.shared.0.lock();
        out.count == 0 || (slot.holding_allowed() && slot.replies_read() < out.sent)
    }

    /// Sends a reply (`frame`, then `body`), with whatever is held before it in the same
    /// message; or, if `hold` and the pool and the bounds allow it, holds it.
    fn reply(&self, slot: &Slot, frame: &[u8], body: &[u8], hold: bool) -> std::io::Result<()> {
        let len = frame.len() + body.len();
        let mut out = self.shared.0.lock();
        if out.failed {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let room = len <= protocol::BATCHABLE
            && out.count < protocol::MAX_HELD_REPLIES
            && out.held.len() + len + 16 <= protocol::HELD_BYTES;
        let hold = hold && room && slot.holding_allowed() && slot.replies_read() < out.sent;
        if out.count == 0 && !hold {
            let sent = ipc::send_parts(out.fd.as_fd(), &[frame, body], None);
            return out.after_send(sent);
        }
        let mut unchanged = out.held.len();
        if out.count == 0 {
            protocol::reply_frame(&FromWorker::Batch, &[], &mut out.held);
            out.since_ns = slot::now_ns();
            unchanged = 0;
        }
        protocol::batch_push_parts(&mut out.held, &[frame, body]);
        out.count += 1;
        if !hold || out.count == protocol::MAX_HELD_REPLIES {
            return out.flush();
        }
        // A copy in the slot: if this process dies before it sends them, the pool still
        // delivers what it holds.
        slot.keep_held(&out.held, unchanged);
        if out.parked {
            out.parked = false;
            self.shared.1.notify_one();
        }
        drop(out);
        if !self.flusher.get() {
            self.flusher.set(true);
            let shared = Arc::clone(&self.shared);
            // Without the thread, nothing bounds how long a reply stays held: hold no more.
            if std::thread::Builder::new().name("stealpool-flush".into()).spawn(move || flush_held(&shared)).is_err() {
                self.shared.0.lock().failed = true;
                return Err(std::io::Error::other("cannot start the reply flusher"));
            }
        }
        Ok(())
    }

    /// Sends what is held, if anything.
    fn flush(&self) -> std::io::Result<()> {
        self.shared.0.lock().flush()
    }
}

/// The flusher thread: sends held replies once they have waited [`FLUSH_AFTER`] (the main
/// thread may be inside a long task), parks when nothing has been held for a while.
fn flush_held(shared: &(Mutex<Out>, Condvar)) {
    let (lock, wake) = shared;
    let mut idle_since = Instant::now();
    loop {
        std::thread::sleep(FLUSH_AFTER);
        let mut out = lock.lock();
        if out.failed {
            return;
        }
        if out.count > 0 {
            idle_since = Instant::now();
            if slot::now_ns().saturating_sub(out.since_ns) >= FLUSH_AFTER.as_nanos() as u64 && out.flush().is_err() {
                return;
            }
        } else if idle_since.elapsed() >= FLUSHER_IDLE {
            out.parked = true;
            while out.parked && !out.failed {
                wake.wait(&mut out);
            }
            idle_since = Instant::now();
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
