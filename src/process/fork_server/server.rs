//! The fork server's own process: the constructor that runs before `main` and turns a
//! re-executed copy of the program into the server, the server's loop (fork, kill, reap,
//! report), and what a child does between the fork and its own work.
//!
//! This module must never start a thread, never allocate or take a lock in a signal handler,
//! and never run code in a fresh child, before it has dropped everything of the server's, that
//! could take a lock another thread might hold or run one of the server's signal handlers.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver};
use nix::libc;
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};

use super::{
    BOOT_FAILED, BOOT_LISTENING, ChildEnvironment, ENV_PARENT, ENV_SERVER, Hello, REPORT_LEN, Report, SPAWN_TIMEOUT,
    ServerRequest, boot_record,
};
use crate::process::protocol::Initializer;
use crate::process::{registration, worker};

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
            ServerRequest::Spawn { token, name, tasks, replies, initializer, environment } => {
                match prepare(&environment) {
                    Err(errno) => write_report(Report::SpawnFailed { token, errno: errno as i32 }),
                    Ok(dir) => match fork_named(&name) {
                        Ok(nix::unistd::ForkResult::Child) => {
                            worker_child(me, &name, tasks, replies, initializer, requests, (&environment, dir))
                        }
                        Ok(nix::unistd::ForkResult::Parent { child }) => forked(token, child, 0),
                        Err(e) => write_report(Report::SpawnFailed { token, errno: e as i32 }),
                    },
                }
                drop(tasks);
                drop(replies);
            }
            ServerRequest::Run { token, name, code, args, die_with_parent, environment } => {
                match prepare(&environment) {
                    Err(errno) => write_report(Report::SpawnFailed { token, errno: errno as i32 }),
                    Ok(dir) => match fork_named(&name) {
                        Ok(nix::unistd::ForkResult::Child) => {
                            let code = match become_child(me, &name, requests, die_with_parent, (&environment, dir)) {
                                Ok(()) => registration::start(&code, args),
                                Err(()) => 0,
                            };
                            worker::exit(code)
                        }
                        Ok(nix::unistd::ForkResult::Parent { child }) => {
                            forked(token, child, if die_with_parent { 0 } else { DETACHED })
                        }
                        Err(e) => write_report(Report::SpawnFailed { token, errno: e as i32 }),
                    },
                }
                drop(args);
            }
            ServerRequest::Kill { pid, signal: sig } => {
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
fn take_parents_hello() -> io::Result<IpcReceiver<ServerRequest>> {
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

/// In the fork server, before a fork: check the child's environment record (the parent checked
/// it too; a record this process forks with must be one the child can apply) and open its
/// directory. The `errno` becomes the spawn's failure.
fn prepare(environment: &ChildEnvironment) -> Result<OwnedFd, nix::errno::Errno> {
    environment.check().map_err(|_| nix::errno::Errno::EINVAL)?;
    environment.open_dir()
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
/// server unless `die_with_parent` is off, enter the directory `dir` and take the environment
/// the parent asked for, and only then unblock every signal. `Err` if the
/// server is already gone and the child should simply stop.
fn become_child(
    server: nix::unistd::Pid,
    name: &str,
    requests: IpcReceiver<ServerRequest>,
    die_with_parent: bool,
    (environment, dir): (&ChildEnvironment, OwnedFd),
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
    // SAFETY: this is a fresh child of the fork server, which has one thread (checked at its
    // start; it never starts another), so this process has one thread too: nothing else can
    // read or change the environment, or hold the allocator's or the C library's locks. Signals
    // are still blocked, so no handler runs in the middle.
    let applied = unsafe { environment.apply(&dir) };
    drop(dir);
    if applied.is_err() {
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
    initializer: Option<Initializer>,
    requests: IpcReceiver<ServerRequest>,
    environment: (&ChildEnvironment, OwnedFd),
) -> ! {
    if become_child(server, name, requests, true, environment).is_err() {
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
