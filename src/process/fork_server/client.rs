//! The parent's side of the fork server: starting it (and starting a new one when it died),
//! asking it for workers and children, and keeping what its reports say (pids, exit statuses).
//!
//! A server that dies (killed, say) is replaced on the next request: [`get`] starts a new one,
//! and [`request_spawn`] / [`PendingSpawn::wait`] retry once on the successor. Each worker keeps
//! the handle of the server that forked it, because only that one can kill or reap it. A handle
//! belongs to the process that started the server (its [`Owner`]): the current one is kept in
//! a [`PerProcess`], so in a process forked from that one [`get`] starts a server of its own,
//! and an inherited handle held elsewhere (by a worker's link, a `Process`) refuses to be used
//! before it takes any lock.
//!
//! This module must never trust the server's reports beyond their size (see `PROTOCOL.md`), and
//! never signal a process itself except the server it started and has not reaped.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcSender, OpaqueIpcReceiver};
use nix::libc;
use nix::sys::signal::{self, Signal};
use parking_lot::{Condvar, Mutex};

use super::report_table::ReportTable;
use super::{
    BOOT_FAILED, BOOT_LISTENING, ChildEnvironment, ENV_PARENT, ENV_SERVER, Hello, REPORT_LEN, Report, SPAWN_TIMEOUT,
    ServerRequest, read_boot_record,
};
use crate::deadline;
use crate::error::ExitStatus;
use crate::ipc::{Owner, PerProcess};
use crate::process::protocol::Initializer;

/// The parent's handle on one fork server.
pub(crate) struct ForkServer {
    pid: u32,
    /// The process that started the server; no other may use this handle.
    owner: Owner,
    /// `None` once the process is exiting (see [`at_exit`]).
    requests: Mutex<Option<IpcSender<ServerRequest>>>,
    table: Mutex<ReportTable>,
    cond: Condvar,
}

/// A spawn request that was sent; [`PendingSpawn::wait`] turns it into a worker.
pub(crate) struct PendingSpawn {
    server: Arc<ForkServer>,
    token: u64,
    name: String,
    initializer: Option<Initializer>,
    environment: Arc<ChildEnvironment>,
    tasks: IpcBytesSender,
    replies: IpcBytesReceiver,
}

/// A forked worker: the server that forked it (the one to ask to kill and reap it), its pid,
/// and the parent's ends of its task and reply channels.
pub(crate) struct Spawned {
    pub(crate) server: Arc<ForkServer>,
    pub(crate) pid: u32,
    pub(crate) tasks: IpcBytesSender,
    pub(crate) replies: IpcBytesReceiver,
}

/// This process's fork server, if it started one (a forked child finds none: its parent's is
/// dropped, which closes only the child's copies of its descriptors).
static CURRENT: PerProcess<Option<Arc<ForkServer>>> = PerProcess::new();

/// The process's fork server, started on first use and restarted if it died.
pub(crate) fn get() -> io::Result<Arc<ForkServer>> {
    CURRENT.with(|current| {
        if let Some(z) = current.as_ref()
            && z.is_usable()
        {
            return Ok(Arc::clone(z));
        }
        let z = start()?;
        *current = Some(Arc::clone(&z));
        Ok(z)
    })
}

/// Asks the current fork server for a worker named `name` (as `ps` shows it); returns at once.
/// The worker starts with `environment` (see [`ChildEnvironment`]). If the server turns out to
/// be dead, asks its successor.
pub(crate) fn request_spawn(
    name: &str,
    initializer: Option<&Initializer>,
    environment: &Arc<ChildEnvironment>,
) -> io::Result<PendingSpawn> {
    let z = get()?;
    match ForkServer::ask_spawn(&z, name, initializer, environment) {
        Err(_) if !z.is_usable() => ForkServer::ask_spawn(&get()?, name, initializer, environment),
        r => r,
    }
}

impl PendingSpawn {
    /// Waits for the worker's pid. If the server died before it answered, the request goes to
    /// a new server, once.
    pub(crate) fn wait(self) -> io::Result<Spawned> {
        match self.server.wait_token(self.token) {
            Ok(pid) => Ok(Spawned { server: self.server, pid, tasks: self.tasks, replies: self.replies }),
            Err(_) if !self.server.is_usable() => {
                let again = ForkServer::ask_spawn(&get()?, &self.name, self.initializer.as_ref(), &self.environment)?;
                let pid = again.server.wait_token(again.token)?;
                Ok(Spawned { server: again.server, pid, tasks: again.tasks, replies: again.replies })
            }
            Err(e) => Err(e),
        }
    }
}

fn start() -> io::Result<Arc<ForkServer>> {
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
        let server = match bootstrap(&child, &mut reports) {
            Ok(z) => Arc::new(z),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = started_tx.send(Err(e));
                return;
            }
        };
        let _ = started_tx.send(Ok(Arc::clone(&server)));
        server.read_reports(&mut reports);
        // End of file (the server is gone) or garbage (it is treated as gone): make sure it
        // is, fail whoever waits on it, then reap it.
        server.end();
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
fn bootstrap(child: &Child, reports: &mut File) -> io::Result<ForkServer> {
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
    let (requests, server_end) = ipc::channel::<ServerRequest>()?;
    let hello = IpcSender::<Hello>::connect(format!("/proc/{pid}/fd/{fd}"))?;
    hello.send(Hello { requests: server_end }).map_err(|e| failed(&format!("{e:?}")))?;
    Ok(ForkServer {
        pid,
        owner: Owner::current(),
        requests: Mutex::new(Some(requests)),
        table: Mutex::new(ReportTable { alive: true, ..ReportTable::default() }),
        cond: Condvar::new(),
    })
}

/// Runs when the program exits normally: closes the request channel, so the fork server kills
/// and reaps its workers and exits, and reaps the server. Without this, the server would be
/// left to init to reap, and a container's init often does not. In a process forked from the
/// one that started the server, `CURRENT` holds none (the parent's is not ours to stop). Every
/// lock is taken with a bound: a thread may hold one as the process exits (or held it at the
/// fork), and exit must not wait for it.
extern "C" fn at_exit() {
    CURRENT.try_with_for(Duration::from_millis(100), |current| {
        if let Some(z) = current.as_ref() {
            z.stop_and_reap();
        }
    });
}

impl ForkServer {
    /// [`at_exit`]'s work on this process's server: close the request channel, then wait (at
    /// most 2 s) until the server has exited and reap it.
    fn stop_and_reap(&self) {
        if !self.is_mine() {
            return;
        }
        let Some(mut requests) = self.requests.try_lock_for(Duration::from_millis(100)) else { return };
        drop(requests.take());
        let Ok(raw) = i32::try_from(self.pid) else { return };
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
        let ok = t.record(report);
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

    /// Whether this process started the server. Asked before any lock is taken: in a forked
    /// child, a lock of this handle may have been held by a thread of the parent at the fork.
    pub(crate) fn is_mine(&self) -> bool {
        self.owner.is_current()
    }

    /// The fork server's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks `z` for a worker named `name`. Returns at once with the parent's ends of the
    /// worker's task and reply channels.
    fn ask_spawn(
        z: &Arc<ForkServer>,
        name: &str,
        initializer: Option<&Initializer>,
        environment: &Arc<ChildEnvironment>,
    ) -> io::Result<PendingSpawn> {
        let (tasks_tx, tasks_rx) = ipc::bytes_channel()?;
        let (replies_tx, replies_rx) = ipc::bytes_channel()?;
        let token = z.next_token()?;
        let request = ServerRequest::Spawn {
            token,
            name: name.to_owned(),
            tasks: tasks_rx,
            replies: replies_tx,
            initializer: initializer.cloned(),
            environment: Arc::clone(environment),
        };
        z.send(token, request)?;
        Ok(PendingSpawn {
            server: Arc::clone(z),
            token,
            name: name.to_owned(),
            initializer: initializer.cloned(),
            environment: Arc::clone(environment),
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

    fn send(&self, token: u64, request: ServerRequest) -> io::Result<()> {
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
    /// the caller then sends on the other end of `args`, in `environment`; returns its pid.
    pub(crate) fn run(
        &self,
        name: &str,
        code: &str,
        args: OpaqueIpcReceiver,
        die_with_parent: bool,
        environment: Arc<ChildEnvironment>,
    ) -> io::Result<u32> {
        let token = self.next_token()?;
        let request = ServerRequest::Run {
            token,
            name: name.to_owned(),
            code: code.to_owned(),
            args,
            die_with_parent,
            environment,
        };
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
            let _ = tx.send(ServerRequest::Kill { pid: raw, signal: signal as i32 });
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
        if !self.is_mine() {
            return; // the parent's table: nothing of ours to forget
        }
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

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
