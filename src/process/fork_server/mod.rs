//! The fork server ("zygote"): a clean, single-threaded copy of the program from which worker
//! processes are forked.
//!
//! Forking the user's process directly is unsafe once it has threads (the cargo test harness
//! does, so does any program with a thread pool): a lock another thread held at the fork stays
//! held forever in the child. So the first pool of a process starts the fork server instead:
//! it re-executes the program's own binary (`/proc/self/exe`) with an environment variable
//! set, and a constructor in this crate (run by the loader before `main`, before any thread
//! exists) sees the variable and turns the new process into the server. `main` never runs
//! there. The user writes no start-up code.
//!
//! The server forks workers on request, reaps them (it is their parent) and reports each
//! spawn and each exit status to the parent over a pipe. Only the server can kill a worker
//! safely: it alone knows whether a pid is still its unreaped child, so kills go through it
//! and a recycled pid is never signalled. See `PROTOCOL.md` for the conversation, and its
//! last section for what the server trusts and who can reach it.
//!
//! A server that dies (killed, say) is replaced on the next request: [`get`] starts a new one,
//! and [`request_spawn`] / [`Pending::wait`] retry once on the successor. Each worker keeps the
//! handle of the server that forked it, because only that one can kill or reap it. A handle
//! belongs to the process that started the server: in a process forked from it, [`get`] starts
//! a server of its own and the inherited handle refuses to be used.
//!
//! This module must never let the server start a thread, and must never run code between
//! `fork` and the child's own loop that could take a lock another thread might hold, or that
//! could run one of the server's signal handlers.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender, OpaqueIpcReceiver,
};
use nix::libc;
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::deadline;
use crate::error::ExitStatus;
use crate::process::protocol::{REPORT_LEN, Report, SPAWN_TIMEOUT, ZygoteRequest};
use crate::process::{registry, worker};

/// Set in the fork server's environment (to `1`): become the server.
const ENV_SERVER: &str = "STEALPOOL_FORK_SERVER";
/// Set alongside: the parent's pid, so a stray copy of the variable in an unrelated child
/// does not turn that child into a server.
const ENV_PARENT: &str = "STEALPOOL_FORK_SERVER_PARENT";

/// The parent's one message on the bootstrap connection: the server's end of its request
/// channel.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    requests: IpcReceiver<ZygoteRequest>,
}

/// Start-up records, written by the server on the report pipe before any [`Report`] (same
/// size, kinds that reports never use): where to connect, or that it will not serve.
const BOOT_LISTENING: u32 = 0x100;
const BOOT_FAILED: u32 = 0x101;

fn boot_record(kind: u32, value: i32) -> [u8; REPORT_LEN] {
    let mut b = [0u8; REPORT_LEN];
    b[0..4].copy_from_slice(&kind.to_le_bytes());
    b[4..8].copy_from_slice(&value.to_le_bytes());
    b
}

fn read_boot_record(b: &[u8; REPORT_LEN]) -> (u32, i32) {
    (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), i32::from_le_bytes([b[4], b[5], b[6], b[7]]))
}

// ---------------------------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------------------------

/// The parent's handle on one fork server.
pub(crate) struct Zygote {
    pid: u32,
    /// The process that started the server; no other may use this handle.
    owner: u32,
    /// `None` once the process is exiting (see [`at_exit`]).
    requests: Mutex<Option<IpcSender<ZygoteRequest>>>,
    table: Mutex<Table>,
    cond: Condvar,
}

/// What the parent knows from the server's reports. Every entry is there because the parent
/// asked for something (a token) or was told of a child it had asked for (a pid), so a server
/// cannot make it grow beyond what the parent requested; a report that fits nothing is garbage
/// and the server is treated as dead.
#[derive(Default)]
struct Table {
    alive: bool,
    next_token: u64,
    /// Tokens of requests not yet answered.
    asked: HashSet<u64>,
    spawned: HashMap<u64, Result<u32, i32>>,
    /// Children reported spawned whose exit has not been reported yet.
    children: HashSet<u32>,
    exits: HashMap<u32, ExitStatus>,
    /// Children whose exit nobody will ask about.
    unwanted: HashSet<u32>,
}

/// A spawn request that was sent; [`Pending::wait`] turns it into a worker.
pub(crate) struct Pending {
    zygote: Arc<Zygote>,
    token: u64,
    name: String,
    initializer: Option<String>,
    tasks: IpcBytesSender,
    replies: IpcBytesReceiver,
}

/// A forked worker: the server that forked it (the one to ask to kill and reap it), its pid,
/// and the parent's ends of its task and reply channels.
pub(crate) struct Spawned {
    pub(crate) zygote: Arc<Zygote>,
    pub(crate) pid: u32,
    pub(crate) tasks: IpcBytesSender,
    pub(crate) replies: IpcBytesReceiver,
}

static CURRENT: Mutex<Option<Arc<Zygote>>> = Mutex::new(None);

/// The process's fork server, started on first use and restarted if it died (or if the one
/// recorded belongs to the process this one was forked from).
pub(crate) fn get() -> io::Result<Arc<Zygote>> {
    let mut current = CURRENT.lock();
    if let Some(z) = current.as_ref()
        && z.is_usable()
    {
        return Ok(Arc::clone(z));
    }
    // Dropping an inherited handle closes only this process's copies of its descriptors.
    let z = start()?;
    *current = Some(Arc::clone(&z));
    Ok(z)
}

/// Asks the current fork server for a worker named `name` (as `ps` shows it); returns at once.
/// If the server turns out to be dead, asks its successor.
pub(crate) fn request_spawn(name: &str, initializer: Option<&str>) -> io::Result<Pending> {
    let z = get()?;
    match Zygote::ask_spawn(&z, name, initializer) {
        Err(_) if !z.is_usable() => Zygote::ask_spawn(&get()?, name, initializer),
        r => r,
    }
}

impl Pending {
    /// Waits for the worker's pid. If the server died before it answered, the request goes to
    /// a new server, once.
    pub(crate) fn wait(self) -> io::Result<Spawned> {
        match self.zygote.wait_token(self.token) {
            Ok(pid) => Ok(Spawned { zygote: self.zygote, pid, tasks: self.tasks, replies: self.replies }),
            Err(_) if !self.zygote.is_usable() => {
                let again = Zygote::ask_spawn(&get()?, &self.name, self.initializer.as_deref())?;
                let pid = again.zygote.wait_token(again.token)?;
                Ok(Spawned { zygote: again.zygote, pid, tasks: again.tasks, replies: again.replies })
            }
            Err(e) => Err(e),
        }
    }
}

fn start() -> io::Result<Arc<Zygote>> {
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // The very file this process runs, even if its path now names another (an upgrade
    // installed meanwhile: a server started later must know the same registered code), or none.
    let mut command = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    command
        .env(ENV_SERVER, "1")
        .env(ENV_PARENT, std::process::id().to_string())
        // The report pipe rides in as stdin; the server moves it aside at once.
        .stdin(Stdio::from(report_write));
    // Nothing else of ours rides in: a descriptor some code left open without close-on-exec
    // would otherwise live on in the server and in every worker (keeping a pipe's write end
    // open there, say, so that its reader never sees end of file).
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // system calls (close_range, getrlimit, fcntl).
    unsafe {
        command.pre_exec(|| {
            close_on_exec_from(3);
            Ok(())
        })
    };
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    // The server is spawned from a thread that lives as long as the server, because
    // PR_SET_PDEATHSIG fires when the *thread* that forked the child exits (a test thread,
    // say), not only when the process does. The thread owns the `Child`, so the server stays
    // unreaped (its pid cannot be recycled) until the thread has marked it dead.
    std::thread::Builder::new().name("stealpool-forkserver".into()).spawn(move || {
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = started_tx.send(Err(e));
                return;
            }
        };
        drop(command); // closes our copy of the pipe's write end
        let mut reports = File::from(report_read);
        let zygote = match bootstrap(&child, &mut reports) {
            Ok(z) => Arc::new(z),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = started_tx.send(Err(e));
                return;
            }
        };
        let _ = started_tx.send(Ok(Arc::clone(&zygote)));
        zygote.read_reports(&mut reports);
        // End of file (the server is gone) or garbage (it is treated as gone): make sure it
        // is, fail whoever waits on it, then reap it.
        zygote.end();
        let _ = child.wait();
    })?;
    let z = started_rx.recv().map_err(|_| io::Error::other("the fork-server thread ended"))??;
    static REGISTER_AT_EXIT: std::sync::Once = std::sync::Once::new();
    REGISTER_AT_EXIT.call_once(|| {
        // SAFETY: `at_exit` is an `extern "C" fn()` that stays valid for the life of the process.
        unsafe { libc::atexit(at_exit) };
    });
    Ok(z)
}

/// Marks every descriptor from `first` up close-on-exec. Async-signal-safe (it runs between
/// fork and exec).
fn close_on_exec_from(first: libc::c_uint) {
    // SAFETY: close_range takes plain integers and touches only this process's descriptors.
    if unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) } == 0 {
        return;
    }
    // Kernels before 5.11: one by one, up to the descriptor limit (bounded, in case it is huge).
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid out-pointer.
    let end = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20)
    } else {
        1 << 16
    };
    for fd in libc::c_int::try_from(first).unwrap_or(3)..libc::c_int::try_from(end).unwrap_or(1 << 16) {
        // SAFETY: F_SETFD on a descriptor number that may not be open just fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// The parent's half of the start-up: read where the server listens, connect there and hand
/// it its request channel.
fn bootstrap(child: &Child, reports: &mut File) -> io::Result<Zygote> {
    let pid = child.id();
    let failed = |what: &str| io::Error::other(format!("the fork server did not start: {what}"));
    let deadline = Instant::now() + SPAWN_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the fork server did not start in time"));
        }
        let ms = u16::try_from(left.as_millis().clamp(1, 1000)).unwrap_or(1000);
        let mut fds = [nix::poll::PollFd::new(reports.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let mut buf = [0u8; REPORT_LEN];
    reports.read_exact(&mut buf).map_err(|_| failed("it exited during start-up"))?;
    let fd = match read_boot_record(&buf) {
        (BOOT_LISTENING, fd) if fd >= 0 => fd,
        (BOOT_FAILED, _) => return Err(failed("it refused to serve (its reason is on stderr)")),
        _ => return Err(failed("it sent garbage")),
    };
    // The endpoint has no name in any directory: it is reachable only through the server's
    // own descriptor table, by its user (see PROTOCOL.md). `pid` is our unreaped child, so
    // it cannot name another process.
    let (requests, server_end) = ipc::channel::<ZygoteRequest>()?;
    let hello = IpcSender::<Hello>::connect(format!("/proc/{pid}/fd/{fd}"))?;
    hello.send(Hello { requests: server_end }).map_err(|e| failed(&format!("{e:?}")))?;
    Ok(Zygote {
        pid,
        owner: std::process::id(),
        requests: Mutex::new(Some(requests)),
        table: Mutex::new(Table { alive: true, ..Table::default() }),
        cond: Condvar::new(),
    })
}

/// Runs when the program exits normally: closes the request channel, so the fork server kills
/// and reaps its workers and exits, and reaps the server. Without this, the server would be
/// left to init to reap, and a container's init often does not.
extern "C" fn at_exit() {
    let Some(current) = CURRENT.try_lock_for(Duration::from_millis(100)) else { return };
    let Some(z) = current.as_ref() else { return };
    if z.owner != std::process::id() {
        return; // inherited from the process we were forked from: not ours to stop
    }
    let Some(mut requests) = z.requests.try_lock_for(Duration::from_millis(100)) else { return };
    drop(requests.take());
    let Ok(raw) = i32::try_from(z.pid) else { return };
    let pid = nix::unistd::Pid::from_raw(raw);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(1)),
            // Reaped here, or already by the fork-server thread.
            _ => return,
        }
    }
}

impl Zygote {
    /// Reads reports until end of file or the first one that makes no sense.
    fn read_reports(&self, reports: &mut File) {
        let mut buf = [0u8; REPORT_LEN];
        while reports.read_exact(&mut buf).is_ok() {
            if !Report::decode(&buf).is_some_and(|r| self.record(r)) {
                return;
            }
        }
    }

    /// Records a report; `false` if it is garbage (answers nothing that was asked).
    fn record(&self, report: Report) -> bool {
        let mut t = self.table.lock();
        let ok = match report {
            Report::Spawned { token, pid } => match u32::try_from(pid) {
                Ok(pid) if pid > 0 && t.asked.contains(&token) && !t.children.contains(&pid) => {
                    t.asked.remove(&token);
                    t.children.insert(pid);
                    t.spawned.insert(token, Ok(pid));
                    true
                }
                _ => false,
            },
            Report::SpawnFailed { token, errno } => {
                let known = t.asked.remove(&token);
                if known {
                    t.spawned.insert(token, Err(if errno > 0 { errno } else { libc::EIO }));
                }
                known
            }
            Report::Exited { pid, code } => t.exited(pid, ExitStatus::Exited(code)),
            Report::Signaled { pid, signal } => t.exited(pid, ExitStatus::Signaled { signal }),
        };
        drop(t);
        self.cond.notify_all();
        ok
    }

    /// Marks the server dead, killing it first if it still runs (it is unreaped until the
    /// fork-server thread has called this, so its pid is still its own), and wakes everyone
    /// who waits on it.
    fn end(&self) {
        let mut t = self.table.lock();
        if t.alive
            && let Ok(pid) = i32::try_from(self.pid)
        {
            let _ = signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        t.alive = false;
        drop(t);
        self.cond.notify_all();
    }

    /// Whether this handle can still be used: the server runs, and this is the process that
    /// started it.
    pub(crate) fn is_usable(&self) -> bool {
        self.is_mine() && self.table.lock().alive
    }

    fn is_mine(&self) -> bool {
        self.owner == std::process::id()
    }

    /// The fork server's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks `z` for a worker named `name`. Returns at once with the parent's ends of the
    /// worker's task and reply channels.
    fn ask_spawn(z: &Arc<Zygote>, name: &str, initializer: Option<&str>) -> io::Result<Pending> {
        let (tasks_tx, tasks_rx) = ipc::bytes_channel()?;
        let (replies_tx, replies_rx) = ipc::bytes_channel()?;
        let token = z.next_token()?;
        let request = ZygoteRequest::Spawn {
            token,
            name: name.to_owned(),
            tasks: tasks_rx,
            replies: replies_tx,
            initializer: initializer.map(str::to_owned),
        };
        z.send(token, request)?;
        Ok(Pending {
            zygote: Arc::clone(z),
            token,
            name: name.to_owned(),
            initializer: initializer.map(str::to_owned),
            tasks: tasks_tx,
            replies: replies_rx,
        })
    }

    fn next_token(&self) -> io::Result<u64> {
        if !self.is_mine() {
            return Err(io::Error::other("the fork server belongs to the process this one was forked from"));
        }
        let mut t = self.table.lock();
        if !t.alive {
            return Err(io::Error::other("the fork server has exited"));
        }
        t.next_token = t.next_token.wrapping_add(1);
        let token = t.next_token;
        t.asked.insert(token);
        Ok(token)
    }

    fn send(&self, token: u64, request: ZygoteRequest) -> io::Result<()> {
        let sent = match self.requests.lock().as_ref() {
            Some(tx) => tx.send(request).map_err(|e| io::Error::other(format!("fork server unreachable: {e:?}"))),
            None => Err(io::Error::other("the process is exiting")),
        };
        if sent.is_err() {
            self.table.lock().asked.remove(&token);
            // Its end of the channel is closed: the server is gone or going, even if its
            // report pipe has not ended yet. Say so now, so that callers move on to a new one.
            self.end();
        }
        sent
    }

    /// Asks for a child that runs the function registered as `code` once, with arguments that
    /// the caller then sends on the other end of `args`; returns its pid.
    pub(crate) fn run(
        &self,
        name: &str,
        code: &str,
        args: OpaqueIpcReceiver,
        die_with_parent: bool,
    ) -> io::Result<u32> {
        let token = self.next_token()?;
        let request = ZygoteRequest::Run { token, name: name.to_owned(), code: code.to_owned(), args, die_with_parent };
        self.send(token, request)?;
        self.wait_token(token)
    }

    /// Waits for the answer to request `token`. A server that does not answer in
    /// [`SPAWN_TIMEOUT`] is killed and treated as dead.
    fn wait_token(&self, token: u64) -> io::Result<u32> {
        let deadline = Instant::now() + SPAWN_TIMEOUT;
        let mut t = self.table.lock();
        loop {
            if let Some(r) = t.spawned.remove(&token) {
                return r.map_err(io::Error::from_raw_os_error);
            }
            if !t.alive {
                t.asked.remove(&token);
                return Err(io::Error::other("the fork server has exited"));
            }
            if self.cond.wait_until(&mut t, deadline).timed_out() && !t.spawned.contains_key(&token) {
                drop(t);
                self.end();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the fork server did not answer"));
            }
        }
    }

    /// Has the server send `signal` to `pid`, if `pid` is still its unreaped child.
    pub(crate) fn kill(&self, pid: u32, signal: Signal) {
        if !self.is_mine() || !self.table.lock().children.contains(&pid) {
            return;
        }
        let Ok(raw) = i32::try_from(pid) else { return };
        if let Some(tx) = self.requests.lock().as_ref() {
            let _ = tx.send(ZygoteRequest::Kill { pid: raw, signal: signal as i32 });
        }
    }

    /// The exit status of child `pid`, waiting until `deadline` (`None`: as long as it takes).
    /// `None` if it is still running at the deadline; [`ExitStatus::Unknown`] if the fork
    /// server died first (it reaps nothing more: its workers die with it, by
    /// `PR_SET_PDEATHSIG`, and are reaped by init) or `pid` is not a child it told of. The
    /// status is handed out once: the caller keeps it.
    pub(crate) fn exit_status(&self, pid: u32, deadline: Option<Instant>) -> Option<ExitStatus> {
        if !self.is_mine() {
            return Some(ExitStatus::Unknown);
        }
        let mut t = self.table.lock();
        loop {
            if let Some(s) = t.exits.remove(&pid) {
                return Some(s);
            }
            if !t.alive || !t.children.contains(&pid) {
                return Some(ExitStatus::Unknown);
            }
            match deadline {
                None => self.cond.wait(&mut t),
                Some(d) => {
                    if self.cond.wait_until(&mut t, d).timed_out() {
                        return t.exits.remove(&pid);
                    }
                }
            }
        }
    }

    /// Stops keeping the exit status of `pid` (its `Process` is gone): drops it now if it is
    /// recorded, or when it arrives.
    pub(crate) fn forget_exit(&self, pid: u32) {
        let mut t = self.table.lock();
        if t.exits.remove(&pid).is_none() && t.children.contains(&pid) {
            t.unwanted.insert(pid);
        }
    }

    /// Waits (at most `timeout`, any value) for the exit status of worker `pid`, which the
    /// server reports once it has reaped it; [`ExitStatus::Unknown`] at the deadline.
    pub(crate) fn wait_exit(&self, pid: u32, timeout: Duration) -> ExitStatus {
        self.exit_status(pid, deadline::after(timeout)).unwrap_or(ExitStatus::Unknown)
    }
}

impl Table {
    /// Records the exit of child `pid`; `false` if `pid` is not a child we were told of.
    fn exited(&mut self, pid: i32, status: ExitStatus) -> bool {
        let Ok(pid) = u32::try_from(pid) else { return false };
        if !self.children.remove(&pid) {
            return false;
        }
        if !self.unwanted.remove(&pid) {
            self.exits.insert(pid, status);
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// Runs before `main` in every binary that links this crate. In an ordinary start it only
/// looks at one environment variable and returns.
#[ctor::ctor(unsafe)]
fn become_fork_server_if_asked() {
    if std::env::var_os(ENV_SERVER).is_none() {
        return;
    }
    let Some(parent) = std::env::var(ENV_PARENT).ok().and_then(|p| p.parse::<i32>().ok()) else {
        return; // a stray copy of the variable: this is not our fork server
    };
    if parent != nix::unistd::getppid().as_raw() {
        // The parent died before we got here (we were re-parented): nobody wants a server,
        // and running `main` instead would start the user's program a second time.
        std::process::exit(0);
    }
    // SAFETY: this runs in a constructor before `main`; the process has one thread, so no
    // other thread can be reading the environment while we change it.
    unsafe {
        std::env::remove_var(ENV_SERVER);
        std::env::remove_var(ENV_PARENT);
    }
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stealpool fork server: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// The fd the server writes reports to (its former stdin).
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

/// The server's live children. Touched by the main loop only while every signal is blocked,
/// and by the `SIGCHLD` handler otherwise, so the two never interleave; atomics keep each slot
/// whole. A fixed array, because the handler may not allocate. A child that must outlive the
/// server is marked with [`DETACHED`] (pids stay below 2^22 on Linux).
static LIVE: [AtomicI32; MAX_LIVE] = [const { AtomicI32::new(0) }; MAX_LIVE];
const MAX_LIVE: usize = 4096;
const DETACHED: i32 = 1 << 30;

fn live_insert(entry: i32) -> bool {
    LIVE.iter().any(|slot| slot.compare_exchange(0, entry, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

/// Removes `pid`; `false` if it was not a live child.
fn live_remove(pid: i32) -> bool {
    match LIVE.iter().find(|s| s.load(Ordering::SeqCst) & !DETACHED == pid) {
        Some(slot) => {
            slot.store(0, Ordering::SeqCst);
            true
        }
        None => false,
    }
}

fn live_contains(pid: i32) -> bool {
    pid > 0 && LIVE.iter().any(|s| s.load(Ordering::SeqCst) & !DETACHED == pid)
}

fn serve() -> io::Result<()> {
    // Move the report pipe off fd 0 and give fd 0 /dev/null, so workers do not inherit it
    // as their stdin (multiprocessing does the same).
    let report = nix::fcntl::fcntl(std::io::stdin(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    REPORT_FD.store(report, Ordering::SeqCst);
    let devnull = File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&devnull)?;
    drop(devnull);

    // `main` never runs here, so neither does the runtime set-up that ignores SIGPIPE: do it,
    // or writing a report to a parent that just died would kill us before we clean up.
    // SAFETY: ignoring a signal is always sound.
    unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) }?;
    let term = signal::SigAction::new(SigHandler::Handler(on_sigterm), signal::SaFlags::empty(), SigSet::all());
    // SAFETY: `on_sigterm` only calls async-signal-safe functions (kill, waitpid, _exit) and
    // reads atomics.
    unsafe { signal::sigaction(Signal::SIGTERM, &term) }?;

    let ppid = nix::unistd::getppid();
    // If the parent dies, we get SIGTERM and take our workers with us (on_sigterm); its end
    // of the request channel closing does the same (below).
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    if nix::unistd::getppid() != ppid {
        return Ok(());
    }
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1);
    if threads != 1 {
        write_record(&boot_record(BOOT_FAILED, 0));
        return Err(io::Error::other(format!(
            "the program starts {threads} threads before main (in a constructor); forking workers from it \
             would not be safe"
        )));
    }
    let requests = take_parents_hello()?;

    let action = signal::SigAction::new(
        SigHandler::Handler(on_sigchld),
        signal::SaFlags::SA_RESTART | signal::SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: `on_sigchld` only calls async-signal-safe functions (waitpid, write, errno
    // access) and touches only atomics.
    unsafe { signal::sigaction(Signal::SIGCHLD, &action) }?;

    let me = nix::unistd::getpid();
    // Started as `/proc/self/exe`, the kernel named us `exe`: take the program's name back.
    if let Some(name) = std::env::args_os().next().as_deref().map(Path::new).and_then(Path::file_name)
        && let Ok(name) = CString::new(name.as_encoded_bytes().iter().copied().take(15).collect::<Vec<u8>>())
    {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let own_name = nix::sys::prctl::get_name().ok();
    // The child's name is set by the server before the fork (and put back after), so the child
    // has it from its first instant: whoever learns the pid from the spawn report sees it.
    let fork_named = |name: &str| {
        if let Ok(comm) = CString::new(name) {
            let _ = nix::sys::prctl::set_name(&comm);
        }
        // SAFETY: this process has exactly one thread (checked above, and the server never
        // starts one), so no lock can be held by another thread at the fork.
        let fork = unsafe { nix::unistd::fork() };
        if !matches!(fork, Ok(nix::unistd::ForkResult::Child))
            && let Some(own) = &own_name
        {
            let _ = nix::sys::prctl::set_name(own);
        }
        fork
    };
    let all = SigSet::all();
    loop {
        let request = match requests.recv() {
            Ok(r) => r,
            // The parent is gone or exiting (or sent garbage, which only a broken parent
            // would): stop, and take the workers along.
            Err(_) => {
                let _ = block(&all);
                end_workers_and_exit();
            }
        };
        // Every signal stays blocked from here to the end of the request: in the server, so
        // that the SIGCHLD handler cannot reap a child between the fork and its report, or
        // between the live-set check and a kill; and in a new child until it has dropped
        // everything of the server's (a SIGTERM there would otherwise run the server's
        // handler, which kills every worker it knows of: the child's siblings).
        let old = block(&all)?;
        match request {
            ZygoteRequest::Spawn { token, name, tasks, replies, initializer } => {
                match fork_named(&name) {
                    Ok(nix::unistd::ForkResult::Child) => {
                        worker_child(me, &name, tasks, replies, initializer, requests)
                    }
                    Ok(nix::unistd::ForkResult::Parent { child }) => forked(token, child, 0),
                    Err(e) => write_report(Report::SpawnFailed { token, errno: e as i32 }),
                }
                drop(tasks);
                drop(replies);
            }
            ZygoteRequest::Run { token, name, code, args, die_with_parent } => {
                match fork_named(&name) {
                    Ok(nix::unistd::ForkResult::Child) => {
                        let code = match become_child(me, &name, requests, die_with_parent) {
                            Ok(()) => registry::start(&code, args),
                            Err(()) => 0,
                        };
                        worker::exit(code)
                    }
                    Ok(nix::unistd::ForkResult::Parent { child }) => {
                        forked(token, child, if die_with_parent { 0 } else { DETACHED })
                    }
                    Err(e) => write_report(Report::SpawnFailed { token, errno: e as i32 }),
                }
                drop(args);
            }
            ZygoteRequest::Kill { pid, signal: sig } => {
                // With SIGCHLD blocked the handler cannot reap `pid` between the check and the
                // kill, so the pid is still our child and cannot have been recycled.
                if live_contains(pid)
                    && let Ok(sig) = Signal::try_from(sig)
                {
                    let _ = signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                }
            }
        }
        signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    }
}

/// Opens the start-up endpoint, tells the parent where it is, and takes the parent's hello:
/// the server's end of its request channel.
///
/// The endpoint is an ipc-channel one-shot server, which binds a Unix socket in a fresh
/// directory under the temporary directory. Made with umask 077, both are 0700 whatever the
/// program's umask. With every signal blocked, the socket is opened with `O_PATH` and its name
/// and directory removed at once: from then on it can be reached only through
/// `/proc/<server>/fd/<n>`, which only its user (and root) may resolve, and nothing is left in
/// any directory if either process dies later. Only a `SIGKILL` of the server during those few
/// system calls could leave the empty directory behind.
fn take_parents_hello() -> io::Result<IpcReceiver<ZygoteRequest>> {
    let old = block(&SigSet::all())?;
    let endpoint = open_endpoint();
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    let (server, path_fd) = endpoint?;
    write_record(&boot_record(BOOT_LISTENING, path_fd.as_raw_fd()));
    // A watchdog: if the parent never connects (it is stuck, or killed without our death
    // signal reaching us), SIGALRM's default action ends this process.
    let secs = u32::try_from(SPAWN_TIMEOUT.as_secs()).unwrap_or(u32::MAX).max(1);
    // SAFETY: alarm only arms a timer; SIGALRM has its default disposition here.
    unsafe { libc::alarm(secs) };
    let accepted = server.accept();
    // SAFETY: as above; 0 disarms it.
    unsafe { libc::alarm(0) };
    drop(path_fd);
    let (_connection, hello) = accepted.map_err(|e| io::Error::other(format!("no hello from the parent: {e:?}")))?;
    Ok(hello.requests)
}

/// The listening one-shot server and an `O_PATH` descriptor of its socket, whose name is gone.
fn open_endpoint() -> io::Result<(IpcOneShotServer<Hello>, OwnedFd)> {
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let made = IpcOneShotServer::<Hello>::new();
    nix::sys::stat::umask(umask);
    let (server, name) = made?;
    let path = Path::new(&name);
    let opened =
        nix::fcntl::open(path, nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty());
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    let fd = opened?;
    // What was opened must be our own socket: in a temporary directory without the sticky
    // bit, another user could have renamed our directory away and put a socket of theirs at
    // the same path before the open.
    let st = nix::sys::stat::fstat(&fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK || st.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::other("the start-up socket was replaced by someone else's"));
    }
    Ok((server, fd))
}

/// In the fork server, after a fork: record the child (with `flags`) and report it.
fn forked(token: u64, child: nix::unistd::Pid, flags: i32) {
    let report = if live_insert(child.as_raw() | flags) {
        Report::Spawned { token, pid: child.as_raw() }
    } else {
        // Too many children to track: do not keep one we could not reap safely later. Its
        // exit is not reported (it is not in the live set).
        let _ = signal::kill(child, Signal::SIGKILL);
        Report::SpawnFailed { token, errno: libc::EAGAIN }
    };
    write_report(report);
}

/// In the fork server's child, with every signal blocked: undo the server's arrangements
/// (every signal handler, its channels, its table of children), take the name, die with the
/// server unless `die_with_parent` is off, and only then unblock every signal. `Err` if the
/// server is already gone and the child should simply stop.
fn become_child(
    server: nix::unistd::Pid,
    name: &str,
    requests: IpcReceiver<ZygoteRequest>,
    die_with_parent: bool,
) -> Result<(), ()> {
    reset_signal_dispositions();
    drop(requests);
    let report = REPORT_FD.swap(-1, Ordering::SeqCst);
    if report >= 0 {
        // SAFETY: the fd was ours (dup'ed in `serve`) and nothing else owns it in this process.
        drop(unsafe { OwnedFd::from_raw_fd(report) });
    }
    // The server's children are not ours: forget them, so nothing here can signal them.
    // Only the slots in use are written: a store to every slot would copy all of the table's
    // pages into this fresh process (copy-on-write) for nothing.
    for slot in LIVE.iter() {
        if slot.load(Ordering::Relaxed) != 0 {
            slot.store(0, Ordering::SeqCst);
        }
    }
    if let Ok(comm) = CString::new(name) {
        let _ = nix::sys::prctl::set_name(&comm);
    }
    // Die with the server (which dies with the pool's process); if it is already gone, stop.
    if die_with_parent && (nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || nix::unistd::getppid() != server)
    {
        return Err(());
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    Ok(())
}

/// Gives every signal its default disposition, except that `SIGPIPE` is ignored, as in any
/// Rust program after `main`'s set-up.
fn reset_signal_dispositions() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let disposition = if sig == libc::SIGPIPE { libc::SIG_IGN } else { libc::SIG_DFL };
        // SAFETY: setting a default or ignored disposition runs no code of ours; the numbers
        // the C library keeps for itself (32, 33) just fail with EINVAL.
        unsafe { libc::signal(sig, disposition) };
    }
}

/// In the fork server's child: become a worker. Never returns.
fn worker_child(
    server: nix::unistd::Pid,
    name: &str,
    tasks: IpcBytesReceiver,
    replies: IpcBytesSender,
    initializer: Option<String>,
    requests: IpcReceiver<ZygoteRequest>,
) -> ! {
    if become_child(server, name, requests, true).is_err() {
        std::process::exit(0);
    }
    // A worker receives and drops a buffer per task; by default glibc serves large ones with
    // fresh mmaps and trims freed memory at once, so every large payload would be faulted in
    // page by page again. Keep up to 64 MiB of freed memory for reuse instead.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tunables; nothing else runs in this process yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    let code = worker::serve(tasks, replies, initializer);
    worker::exit(code)
}

/// Blocks `set`, returning the mask to restore.
fn block(set: &SigSet) -> nix::Result<SigSet> {
    let mut old = SigSet::empty();
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(set), Some(&mut old))?;
    Ok(old)
}

fn write_report(report: Report) {
    write_record(&report.encode());
}

/// Writes one record whole to the report pipe (async-signal-safe: the `SIGCHLD` handler
/// calls it).
fn write_record(bytes: &[u8; REPORT_LEN]) {
    let fd: RawFd = REPORT_FD.load(Ordering::SeqCst);
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: `fd` is the server's report pipe, open for the server's lifetime; the buffer
        // is valid for the length passed.
        let n = unsafe { libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done) };
        if n > 0 {
            done += n.unsigned_abs();
        } else if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        } else {
            return;
        }
    }
}

extern "C" fn on_sigterm(_: libc::c_int) {
    end_workers_and_exit();
}

/// Kills every live worker, reaps them all, and exits. Async-signal-safe: it runs from the
/// `SIGTERM` handler too.
fn end_workers_and_exit() -> ! {
    for slot in LIVE.iter() {
        let pid = slot.load(Ordering::SeqCst);
        if pid & DETACHED != 0 {
            // Asked to outlive us: leave it running, to be reaped by init (or a subreaper).
            slot.store(0, Ordering::SeqCst);
        } else if pid > 0 {
            // SAFETY: kill is async-signal-safe; `pid` is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for slot in LIVE.iter() {
        let pid = slot.swap(0, Ordering::SeqCst);
        if pid > 0 {
            let mut status = 0;
            // SAFETY: waitpid is async-signal-safe; `status` is a valid out-pointer.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
    // SAFETY: _exit is async-signal-safe and ends the process without running anything else.
    unsafe { libc::_exit(0) }
}

extern "C" fn on_sigchld(_: libc::c_int) {
    let saved = nix::errno::Errno::last_raw();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid is async-signal-safe; `status` is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        if !live_remove(pid) {
            continue; // a child we never reported (see `forked`)
        }
        let report = if libc::WIFEXITED(status) {
            Report::Exited { pid, code: libc::WEXITSTATUS(status) }
        } else if libc::WIFSIGNALED(status) {
            Report::Signaled { pid, signal: libc::WTERMSIG(status) }
        } else {
            continue;
        };
        write_report(report);
    }
    nix::errno::Errno::set_raw(saved);
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// A handle on a stand-in "server": a process of our own that `end` may kill.
    fn stand_in() -> (Child, Zygote) {
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        let z = Zygote {
            pid: child.id(),
            owner: std::process::id(),
            requests: Mutex::new(None),
            table: Mutex::new(Table { alive: true, ..Table::default() }),
            cond: Condvar::new(),
        };
        (child, z)
    }

    #[test]
    fn reports_that_answer_nothing_asked_are_garbage() {
        let (mut child, z) = stand_in();
        let token = z.next_token().unwrap();
        assert!(!z.record(Report::Spawned { token: token + 1, pid: 100 }), "a token never asked");
        assert!(!z.record(Report::Spawned { token, pid: -5 }), "a negative pid");
        assert!(!z.record(Report::Spawned { token, pid: 0 }), "pid 0");
        assert!(!z.record(Report::Exited { pid: 100, code: 0 }), "the exit of a child never reported");
        assert!(z.record(Report::Spawned { token, pid: 100 }));
        assert!(!z.record(Report::Spawned { token, pid: 101 }), "a token answered twice");
        let again = z.next_token().unwrap();
        assert!(!z.record(Report::Spawned { token: again, pid: 100 }), "a pid reported twice");
        assert!(z.record(Report::SpawnFailed { token: again, errno: i32::MIN }));
        assert_eq!(z.wait_token(again).unwrap_err().raw_os_error(), Some(libc::EIO), "a nonsense errno is EIO");
        assert!(z.record(Report::Signaled { pid: 100, signal: i32::MAX }));
        assert!(!z.record(Report::Exited { pid: 100, code: 0 }), "an exit reported twice");
        assert_eq!(z.wait_exit(100, Duration::MAX), ExitStatus::Signaled { signal: i32::MAX });
        assert_eq!(z.wait_exit(100, Duration::MAX), ExitStatus::Unknown, "handed out once; no wait");
        z.end();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }

    #[test]
    fn a_server_that_sends_garbage_is_dead_and_nobody_hangs() {
        for garbage in [
            Report::Spawned { token: 999, pid: 7 }.encode(),
            [0xff; REPORT_LEN],
            [0; REPORT_LEN],
            Report::Exited { pid: i32::MIN, code: 1 }.encode(),
        ] {
            let (mut child, z) = stand_in();
            let z = Arc::new(z);
            let token = z.next_token().unwrap();
            let waiter = {
                let z = Arc::clone(&z);
                std::thread::spawn(move || z.wait_token(token))
            };
            let (read, write) = nix::unistd::pipe().unwrap();
            let mut write = File::from(write);
            write.write_all(&garbage).unwrap();
            write.write_all(&Report::Spawned { token, pid: 8 }.encode()).unwrap();
            z.read_reports(&mut File::from(read));
            z.end();
            assert!(waiter.join().unwrap().is_err(), "the request behind the garbage fails, at once");
            assert!(!z.is_usable());
            assert_eq!(z.wait_exit(8, Duration::MAX), ExitStatus::Unknown);
            assert_eq!(child.wait().unwrap().signal(), Some(9), "the server is killed");
        }
    }

    #[test]
    fn a_truncated_report_is_the_end() {
        let (mut child, z) = stand_in();
        let (read, write) = nix::unistd::pipe().unwrap();
        File::from(write).write_all(&Report::Exited { pid: 3, code: 0 }.encode()[..7]).unwrap();
        z.read_reports(&mut File::from(read));
        z.end();
        assert!(z.next_token().is_err());
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }
}
