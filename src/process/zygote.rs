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
//! and a recycled pid is never signalled. See `PROTOCOL.md` for the conversation.
//!
//! This module must never let the server start a thread, and must never run code between
//! `fork` and the worker's own loop that could take a lock another thread might hold.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};
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

use crate::error::ExitStatus;
use crate::process::protocol::{REPORT_LEN, Report, SPAWN_TIMEOUT, ZygoteRequest};
use crate::process::{registry, worker};

/// Set in the fork server's environment: the name of the parent's one-shot ipc server.
const ENV_SERVER: &str = "STEALPOOL_FORK_SERVER";
/// Set alongside: the parent's pid, so a stray copy of the variable in an unrelated child
/// does not turn that child into a server.
const ENV_PARENT: &str = "STEALPOOL_FORK_SERVER_PARENT";

/// The fork server's first message to the parent.
#[derive(Debug, Serialize, Deserialize)]
enum Bootstrap {
    Ready { requests: IpcSender<ZygoteRequest> },
    Failed { reason: String },
}

// ---------------------------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------------------------

/// The parent's handle on the fork server.
pub(crate) struct Zygote {
    pid: u32,
    /// `None` once the process is exiting (see [`at_exit`]).
    requests: Mutex<Option<IpcSender<ZygoteRequest>>>,
    table: Mutex<Table>,
    cond: Condvar,
}

#[derive(Default)]
struct Table {
    alive: bool,
    next_token: u64,
    spawned: HashMap<u64, Result<u32, i32>>,
    exits: HashMap<u32, ExitStatus>,
    /// Children whose exit nobody will ask about.
    unwanted: std::collections::HashSet<u32>,
}

/// A spawn request that was sent; [`Zygote::wait_spawned`] turns it into a pid.
pub(crate) struct Pending {
    token: u64,
    pub(crate) tasks: IpcBytesSender,
    pub(crate) replies: IpcBytesReceiver,
}

static CURRENT: Mutex<Option<Arc<Zygote>>> = Mutex::new(None);

/// The process's fork server, started on first use and restarted if it died.
pub(crate) fn get() -> io::Result<Arc<Zygote>> {
    let mut current = CURRENT.lock();
    if let Some(z) = current.as_ref()
        && z.table.lock().alive
    {
        return Ok(Arc::clone(z));
    }
    let z = start()?;
    *current = Some(Arc::clone(&z));
    Ok(z)
}

fn start() -> io::Result<Arc<Zygote>> {
    let exe = std::env::current_exe()?;
    let (server, name) = IpcOneShotServer::<Bootstrap>::new()?;
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut command = Command::new(exe);
    command
        .env(ENV_SERVER, &name)
        .env(ENV_PARENT, std::process::id().to_string())
        // The report pipe rides in as stdin; the server moves it aside at once.
        .stdin(Stdio::from(report_write));
    let table = Mutex::new(Table { alive: true, ..Table::default() });
    let (spawned_tx, spawned_rx) = std::sync::mpsc::channel();
    // The server is spawned from a thread that lives as long as the process, because
    // PR_SET_PDEATHSIG fires when the *thread* that forked the child exits (a test thread,
    // say), not only when the process does.
    let zygote_slot: Arc<Mutex<Option<Arc<Zygote>>>> = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&zygote_slot);
    std::thread::Builder::new().name("stealpool-forkserver".into()).spawn(move || {
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = spawned_tx.send(Err(e));
                return;
            }
        };
        drop(command); // closes our copy of the pipe's write end
        let _ = spawned_tx.send(Ok(child.id()));
        let mut reports = File::from(report_read);
        read_reports(&mut reports, &slot);
        // End of file: the server is gone. Reap it, and fail whoever waits on it.
        let _ = child.wait();
        match slot.lock().as_ref() {
            Some(z) => z.mark_dead(),
            None => {
                // Still bootstrapping: unblock the accept below.
                if let Ok(tx) = IpcSender::<Bootstrap>::connect(name) {
                    let _ = tx.send(Bootstrap::Failed { reason: "the fork server exited during start-up".into() });
                }
            }
        }
    })?;
    let pid = spawned_rx.recv().map_err(|_| io::Error::other("fork server thread ended"))??;
    let (_, hello) = server.accept().map_err(|e| io::Error::other(format!("fork server did not start: {e:?}")))?;
    let requests = match hello {
        Bootstrap::Ready { requests } => requests,
        Bootstrap::Failed { reason } => return Err(io::Error::other(format!("fork server did not start: {reason}"))),
    };
    let z = Arc::new(Zygote { pid, requests: Mutex::new(Some(requests)), table, cond: Condvar::new() });
    *zygote_slot.lock() = Some(Arc::clone(&z));
    static REGISTER_AT_EXIT: std::sync::Once = std::sync::Once::new();
    REGISTER_AT_EXIT.call_once(|| {
        // SAFETY: `at_exit` is an `extern "C" fn()` that stays valid for the life of the process.
        unsafe { libc::atexit(at_exit) };
    });
    Ok(z)
}

/// Runs when the program exits normally: closes the request channel, so the fork server kills
/// and reaps its workers and exits, and reaps the server. Without this, the server would be
/// left to init to reap, and a container's init often does not.
extern "C" fn at_exit() {
    let Some(current) = CURRENT.try_lock_for(Duration::from_millis(100)) else { return };
    let Some(z) = current.as_ref() else { return };
    let Some(mut requests) = z.requests.try_lock_for(Duration::from_millis(100)) else { return };
    drop(requests.take());
    let pid = nix::unistd::Pid::from_raw(z.pid as i32);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(1)),
            // Reaped here, or already by the fork-server thread.
            _ => return,
        }
    }
}

fn read_reports(reports: &mut File, slot: &Mutex<Option<Arc<Zygote>>>) {
    let mut buf = [0u8; REPORT_LEN];
    while reports.read_exact(&mut buf).is_ok() {
        let Some(report) = Report::decode(&buf) else { continue };
        // The slot is filled right after the bootstrap; nothing is reported before a spawn
        // request, and none can be sent before then.
        let z = loop {
            if let Some(z) = slot.lock().as_ref() {
                break Arc::clone(z);
            }
            std::thread::yield_now();
        };
        z.record(report);
    }
}

impl Zygote {
    fn record(&self, report: Report) {
        let mut t = self.table.lock();
        match report {
            Report::Spawned { token, pid } => {
                t.spawned.insert(token, Ok(pid as u32));
            }
            Report::SpawnFailed { token, errno } => {
                t.spawned.insert(token, Err(errno));
            }
            Report::Exited { pid, code } => {
                if !t.unwanted.remove(&(pid as u32)) {
                    t.exits.insert(pid as u32, ExitStatus::Exited(code));
                }
            }
            Report::Signaled { pid, signal } => {
                if !t.unwanted.remove(&(pid as u32)) {
                    t.exits.insert(pid as u32, ExitStatus::Signaled { signal });
                }
            }
        }
        drop(t);
        self.cond.notify_all();
    }

    fn mark_dead(&self) {
        self.table.lock().alive = false;
        self.cond.notify_all();
    }

    /// The fork server's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks for a worker named `name` (as `ps` shows it). Returns at once; the channels are the
    /// parent's ends of the worker's task and reply channels.
    pub(crate) fn request_spawn(&self, name: &str, initializer: Option<&str>) -> io::Result<Pending> {
        let (tasks_tx, tasks_rx) = ipc::bytes_channel()?;
        let (replies_tx, replies_rx) = ipc::bytes_channel()?;
        let token = self.next_token()?;
        let request = ZygoteRequest::Spawn {
            token,
            name: name.to_owned(),
            tasks: tasks_rx,
            replies: replies_tx,
            initializer: initializer.map(str::to_owned),
        };
        self.send(request)?;
        Ok(Pending { token, tasks: tasks_tx, replies: replies_rx })
    }

    fn next_token(&self) -> io::Result<u64> {
        let mut t = self.table.lock();
        if !t.alive {
            return Err(io::Error::other("the fork server has exited"));
        }
        t.next_token += 1;
        Ok(t.next_token)
    }

    fn send(&self, request: ZygoteRequest) -> io::Result<()> {
        match self.requests.lock().as_ref() {
            Some(tx) => tx.send(request).map_err(|e| io::Error::other(format!("fork server unreachable: {e:?}"))),
            None => Err(io::Error::other("the process is exiting")),
        }
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
        self.send(ZygoteRequest::Run { token, name: name.to_owned(), code: code.to_owned(), args, die_with_parent })?;
        self.wait_token(token)
    }

    /// Waits for the pid of a requested worker.
    pub(crate) fn wait_spawned(&self, pending: &Pending) -> io::Result<u32> {
        self.wait_token(pending.token)
    }

    fn wait_token(&self, token: u64) -> io::Result<u32> {
        let deadline = Instant::now() + SPAWN_TIMEOUT;
        let mut t = self.table.lock();
        loop {
            if let Some(r) = t.spawned.remove(&token) {
                return r.map_err(io::Error::from_raw_os_error);
            }
            if !t.alive {
                return Err(io::Error::other("the fork server has exited"));
            }
            if self.cond.wait_until(&mut t, deadline).timed_out() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the fork server did not answer"));
            }
        }
    }

    /// Has the server send `signal` to `pid`, if `pid` is still its unreaped child.
    pub(crate) fn kill(&self, pid: u32, signal: Signal) {
        if let Some(tx) = self.requests.lock().as_ref() {
            let _ = tx.send(ZygoteRequest::Kill { pid: pid as i32, signal: signal as i32 });
        }
    }

    /// The exit status of child `pid`, waiting until `deadline` (`None`: as long as it takes).
    /// `None` if it is still running at the deadline; [`ExitStatus::Unknown`] if the fork
    /// server died first (it reaps nothing more). Unlike [`wait_exit`](Self::wait_exit), the
    /// status stays recorded, so asking twice gives the same answer.
    pub(crate) fn exit_status(&self, pid: u32, deadline: Option<Instant>) -> Option<ExitStatus> {
        let mut t = self.table.lock();
        loop {
            if let Some(s) = t.exits.get(&pid) {
                return Some(*s);
            }
            if !t.alive {
                return Some(ExitStatus::Unknown);
            }
            match deadline {
                None => self.cond.wait(&mut t),
                Some(d) => {
                    if self.cond.wait_until(&mut t, d).timed_out() {
                        return t.exits.get(&pid).copied();
                    }
                }
            }
        }
    }

    /// Stops keeping the exit status of `pid` (its `Process` is gone): drops it now if it is
    /// recorded, or when it arrives.
    pub(crate) fn forget_exit(&self, pid: u32) {
        let mut t = self.table.lock();
        if t.exits.remove(&pid).is_none() {
            t.unwanted.insert(pid);
        }
    }

    /// Waits (at most `timeout`) for the exit status of worker `pid`, which the server reports
    /// once it has reaped it.
    pub(crate) fn wait_exit(&self, pid: u32, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let mut t = self.table.lock();
        loop {
            if let Some(s) = t.exits.remove(&pid) {
                return s;
            }
            // A dead server reaps nothing more; its workers die with it (PR_SET_PDEATHSIG)
            // and are reaped by init.
            if !t.alive || self.cond.wait_until(&mut t, deadline).timed_out() {
                return t.exits.remove(&pid).unwrap_or(ExitStatus::Unknown);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// Runs before `main` in every binary that links this crate. In an ordinary start it only
/// looks at one environment variable and returns.
#[ctor::ctor(unsafe)]
fn become_fork_server_if_asked() {
    let Some(name) = std::env::var_os(ENV_SERVER) else { return };
    let parent = std::env::var(ENV_PARENT).ok().and_then(|p| p.parse::<i32>().ok());
    if parent != Some(nix::unistd::getppid().as_raw()) {
        return; // a stray copy of the variable: this is not our fork server
    }
    // SAFETY: this runs in a constructor before `main`; the process has one thread, so no
    // other thread can be reading the environment while we change it.
    unsafe {
        std::env::remove_var(ENV_SERVER);
        std::env::remove_var(ENV_PARENT);
    }
    let code = match serve(name.to_string_lossy().into_owned()) {
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

/// The server's live children. Touched by the main loop only while `SIGCHLD` is blocked, and
/// by the `SIGCHLD` handler otherwise, so the two never interleave; atomics keep each slot
/// whole. A fixed array, because the handler may not allocate. A child that must outlive the
/// server is marked with [`DETACHED`] (pids stay below 2^22 on Linux).
static LIVE: [AtomicI32; MAX_LIVE] = [const { AtomicI32::new(0) }; MAX_LIVE];
const MAX_LIVE: usize = 4096;
const DETACHED: i32 = 1 << 30;

fn live_insert(entry: i32) -> bool {
    LIVE.iter().any(|slot| slot.compare_exchange(0, entry, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

fn live_remove(pid: i32) {
    if let Some(slot) = LIVE.iter().find(|s| s.load(Ordering::SeqCst) & !DETACHED == pid) {
        slot.store(0, Ordering::SeqCst);
    }
}

fn live_contains(pid: i32) -> bool {
    pid > 0 && LIVE.iter().any(|s| s.load(Ordering::SeqCst) & !DETACHED == pid)
}

fn serve(server_name: String) -> io::Result<()> {
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

    let bootstrap = IpcSender::<Bootstrap>::connect(server_name)?;
    let ppid = nix::unistd::getppid();
    // If the parent dies, we get SIGTERM and take our workers with us (on_sigterm); its end
    // of the request channel closing does the same (below).
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    if nix::unistd::getppid() != ppid {
        return Ok(());
    }
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1);
    if threads != 1 {
        let reason = format!(
            "the program starts {threads} threads before main (in a constructor); forking workers from it \
             would not be safe"
        );
        let _ = bootstrap.send(Bootstrap::Failed { reason: reason.clone() });
        return Err(io::Error::other(reason));
    }
    let (requests_tx, requests) = ipc::channel::<ZygoteRequest>()?;
    bootstrap.send(Bootstrap::Ready { requests: requests_tx }).map_err(|e| io::Error::other(format!("{e:?}")))?;
    drop(bootstrap);

    let chld = SigSet::from(Signal::SIGCHLD);
    let action = signal::SigAction::new(
        SigHandler::Handler(on_sigchld),
        signal::SaFlags::SA_RESTART | signal::SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: `on_sigchld` only calls async-signal-safe functions (waitpid, write, errno
    // access) and touches only atomics.
    unsafe { signal::sigaction(Signal::SIGCHLD, &action) }?;

    let me = nix::unistd::getpid();
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
    loop {
        let request = match requests.recv() {
            Ok(r) => r,
            // The parent is gone or exiting (or sent garbage, which only a broken parent
            // would): stop, and take the workers along.
            Err(_) => {
                let _ = block(&SigSet::all());
                end_workers_and_exit();
            }
        };
        match request {
            ZygoteRequest::Spawn { token, name, tasks, replies, initializer } => {
                let old = block(&chld)?;
                match fork_named(&name) {
                    Ok(nix::unistd::ForkResult::Child) => {
                        worker_child(me, &name, tasks, replies, initializer, requests, &old)
                    }
                    Ok(nix::unistd::ForkResult::Parent { child }) => forked(token, child, 0),
                    Err(e) => write_report(Report::SpawnFailed { token, errno: e as i32 }),
                }
                drop(tasks);
                drop(replies);
                signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
            }
            ZygoteRequest::Run { token, name, code, args, die_with_parent } => {
                let old = block(&chld)?;
                match fork_named(&name) {
                    Ok(nix::unistd::ForkResult::Child) => {
                        let code = match become_child(me, &name, requests, &old, die_with_parent) {
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
                signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
            }
            ZygoteRequest::Kill { pid, signal: sig } => {
                let old = block(&chld)?;
                // With SIGCHLD blocked the handler cannot reap `pid` between the check and the
                // kill, so the pid is still our child and cannot have been recycled.
                if live_contains(pid)
                    && let Ok(sig) = Signal::try_from(sig)
                {
                    let _ = signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                }
                signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
            }
        }
    }
}

/// In the fork server, after a fork: record the child (with `flags`) and report it.
fn forked(token: u64, child: nix::unistd::Pid, flags: i32) {
    let report = if live_insert(child.as_raw() | flags) {
        Report::Spawned { token, pid: child.as_raw() }
    } else {
        // Too many children to track: do not keep one we could not reap safely later.
        let _ = signal::kill(child, Signal::SIGKILL);
        Report::SpawnFailed { token, errno: libc::EAGAIN }
    };
    write_report(report);
}

/// In the fork server's child: undo the server's arrangements (its SIGCHLD handler, its signal
/// mask, its channels), take the name, and die with the server unless `die_with_parent` is
/// off. `Err` if the server is already gone and the child should simply stop.
fn become_child(
    server: nix::unistd::Pid,
    name: &str,
    requests: IpcReceiver<ZygoteRequest>,
    old_mask: &SigSet,
    die_with_parent: bool,
) -> Result<(), ()> {
    // SAFETY: restoring the default disposition is always sound.
    let _ = unsafe { signal::signal(Signal::SIGCHLD, SigHandler::SigDfl) };
    // The server ignores SIGPIPE and handles SIGTERM; a child gets the defaults back, except
    // that Rust programs ignore SIGPIPE (as `main` would have arranged).
    // SAFETY: restoring the default disposition is always sound.
    let _ = unsafe { signal::signal(Signal::SIGTERM, SigHandler::SigDfl) };
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);
    drop(requests);
    let report = REPORT_FD.swap(-1, Ordering::SeqCst);
    if report >= 0 {
        // SAFETY: the fd was ours (dup'ed in `serve`) and nothing else owns it in this process.
        drop(unsafe { OwnedFd::from_raw_fd(report) });
    }
    // Die with the server (which dies with the pool's process); if it is already gone, stop.
    if die_with_parent && (nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || nix::unistd::getppid() != server)
    {
        return Err(());
    }
    // Leave the server's SIGCHLD-blocking and its LIVE table to the server: the child starts
    // with no children of its own.
    for slot in LIVE.iter() {
        slot.store(0, Ordering::SeqCst);
    }
    if let Ok(comm) = CString::new(name) {
        let _ = nix::sys::prctl::set_name(&comm);
    }
    Ok(())
}

/// In the fork server's child: become a worker. Never returns.
fn worker_child(
    server: nix::unistd::Pid,
    name: &str,
    tasks: IpcBytesReceiver,
    replies: IpcBytesSender,
    initializer: Option<String>,
    requests: IpcReceiver<ZygoteRequest>,
    old_mask: &SigSet,
) -> ! {
    if become_child(server, name, requests, old_mask, true).is_err() {
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
    let fd: RawFd = REPORT_FD.load(Ordering::SeqCst);
    let bytes = report.encode();
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: `fd` is the server's report pipe, open for the server's lifetime; the buffer
        // is valid for the length passed.
        let n = unsafe { libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done) };
        if n > 0 {
            done += n as usize;
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
        live_remove(pid);
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
