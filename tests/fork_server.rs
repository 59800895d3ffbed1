//! The fork server's children and handles: what a newly forked child inherits (nothing of the
//! server's), timeouts of any size, and a fork server killed under working pools and processes.
//! (SIGTERM storms have a binary of their own: `fork_server_storm.rs`.)

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod children;
use children::{Reap, sleeps_forever};

use stealpool::pipe::RecvTimeoutError;
use stealpool::pipe::{self, Sender};
use stealpool::process::Process;
use stealpool::{Executor, ExitStatus, ProcessPoolBuilder};

const LONG: Duration = Duration::from_secs(60);

/// `SigBlk`, `SigCgt` and `SigIgn` of the calling process, from `/proc/self/status`.
fn signal_state() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
    };
    (field("SigBlk:"), field("SigCgt:"), field("SigIgn:"))
}

fn worker_signal_state(_: ()) -> (u64, u64, u64) {
    signal_state()
}
stealpool::register_fn!(worker_signal_state);

fn report_signal_state(out: Sender<(u64, u64, u64)>) {
    out.send(signal_state()).unwrap();
}
stealpool::register_fn!(report_signal_state);

/// Only SIGPIPE (13) is ignored, as in any Rust program.
const ONLY_SIGPIPE: u64 = 1 << (13 - 1);

/// The signals the C library keeps for itself (32 and 33 with glibc), which it manages.
fn libc_reserved() -> u64 {
    (32..nix::libc::SIGRTMIN()).fold(0, |m, s| m | 1 << (s - 1))
}

#[test]
fn a_new_child_has_default_handlers_and_nothing_blocked() {
    let pool = ProcessPoolBuilder::new().num_workers(2).max_tasks_per_child(1).build().unwrap();
    for _ in 0..4 {
        let (blocked, caught, ignored) = pool.apply_async(worker_signal_state, ()).unwrap().result().unwrap();
        assert_eq!(blocked, 0, "a worker starts with no signal blocked");
        assert_eq!(caught & !libc_reserved(), 0, "a worker runs none of the fork server's handlers");
        assert_eq!(ignored & !libc_reserved(), ONLY_SIGPIPE, "a worker ignores SIGPIPE only");
    }
    let (tx, rx) = pipe::one_way().unwrap();
    let p = Process::spawn(report_signal_state, tx).unwrap();
    let (blocked, caught, ignored) = rx.recv_timeout(LONG).unwrap();
    assert_eq!((blocked, caught & !libc_reserved(), ignored & !libc_reserved()), (0, 0, ONLY_SIGPIPE));
    assert_eq!(p.join(), ExitStatus::Exited(0));
}

fn send_later(out: Sender<u32>, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    out.send(7).unwrap();
}
stealpool::register_fn!(send_later);

#[test]
fn timeouts_of_any_size_are_accepted() {
    let (tx, rx) = pipe::one_way::<u32>().unwrap();
    let p = Process::spawn(send_later, (tx, 50)).unwrap();
    assert_eq!(rx.recv_timeout(Duration::MAX), Ok(7), "Duration::MAX waits as long as it takes");
    assert_eq!(p.join_timeout(Duration::MAX), Some(ExitStatus::Exited(0)));
    assert_eq!(rx.recv_timeout(Duration::MAX), Err(RecvTimeoutError::Disconnected));

    // A timeout shorter than ipc-channel's millisecond is still waited out in full.
    let (_tx, rx) = pipe::one_way::<u32>().unwrap();
    for wait in [Duration::from_micros(300), Duration::from_micros(1500)] {
        let start = Instant::now();
        assert_eq!(rx.recv_timeout(wait), Err(RecvTimeoutError::Timeout));
        assert!(start.elapsed() >= wait, "waited {:?} of {wait:?}", start.elapsed());
    }
    let p = Reap(Process::spawn(sleeps_forever, ()).unwrap());
    assert_eq!(p.0.join_timeout(Duration::from_millis(20)), None);
    p.0.kill();
    assert_eq!(p.0.join_timeout(Duration::MAX), Some(ExitStatus::Signaled { signal: 9 }));
}

/// Where the attacker role (run as another user) tries to connect, separated by `:`.
const ATTACK_ENV: &str = "STEALPOOL_TEST_ATTACK_PATHS";

/// Connects a `SOCK_SEQPACKET` Unix socket (what ipc-channel listens with) to `path`.
fn connect_seqpacket(path: &Path) -> nix::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
    connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(fd)
}

#[test]
#[ignore = "run as another user by start_up_has_no_named_endpoint_and_refuses_other_users"]
fn attacker_connects_where_it_can() {
    let Some(paths) = std::env::var_os(ATTACK_ENV) else { return };
    let reached: Vec<String> = std::env::split_paths(&paths)
        .filter(|p| connect_seqpacket(p).is_ok())
        .map(|p| p.display().to_string())
        .collect();
    println!("REACHED [{}]", reached.join(" "));
}

/// A fork server started by hand (as `start` in `src/process/fork_server/client.rs` does), killed and reaped on drop.
struct HandStarted(std::process::Child);

impl Drop for HandStarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn start_up_has_no_named_endpoint_and_refuses_other_users() {
    // A temporary directory anyone may write to, and umask 0: neither may open the endpoint
    // to anyone else.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (read, write) = nix::unistd::pipe().unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env("STEALPOOL_FORK_SERVER", "1")
        .env("STEALPOOL_FORK_SERVER_PARENT", std::process::id().to_string())
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::from(write))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: umask is async-signal-safe and touches nothing but the new process's mask.
    unsafe {
        command.pre_exec(|| {
            nix::libc::umask(0);
            Ok(())
        })
    };
    let server = HandStarted(command.spawn().unwrap());
    drop(command);
    let pid = server.0.id();

    // The server's first record: it listens, and where (a descriptor of its own).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut record = [0u8; 16];
        let _ = tx.send(std::fs::File::from(read).read_exact(&mut record).map(|()| record));
    });
    let record = rx.recv_timeout(LONG).expect("the server announces itself").unwrap();
    assert_eq!(u32::from_le_bytes(record[0..4].try_into().unwrap()), 0x100, "a listening record: {record:?}");
    let fd = i32::from_le_bytes(record[4..8].try_into().unwrap());
    let endpoint = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));

    // While it waits for its parent, its endpoint has no name in any directory.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "the start-up left names behind: {left:?}");

    // Another user reaches nothing of it, not even through /proc.
    let setpriv = Path::new("/usr/bin/setpriv");
    if !nix::unistd::geteuid().is_root() || !setpriv.exists() {
        eprintln!("skipped the other-user check: needs root and {}", setpriv.display());
    } else {
        // A control: a socket anyone may connect to, as ipc-channel's named one-shot socket
        // was under umask 0. The attacker must reach that one, and only that one.
        use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket};
        let control_path = tmp.path().join("control");
        let control = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
        bind(control.as_raw_fd(), &UnixAddr::new(&control_path).unwrap()).unwrap();
        listen(&control, Backlog::new(4).unwrap()).unwrap();
        std::fs::set_permissions(&control_path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut targets = vec![control_path.clone(), endpoint.clone()];
        targets.extend((0..32).map(|n| PathBuf::from(format!("/proc/{pid}/fd/{n}"))));
        let out = Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "attacker_connects_where_it_can", "--include-ignored", "--nocapture"])
            .env(ATTACK_ENV, std::env::join_paths(&targets).unwrap())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let reached = stdout.lines().find_map(|l| l.find("REACHED ").map(|at| l[at..].to_owned()));
        let expected = format!("REACHED [{}]", control_path.display());
        assert_eq!(reached, Some(expected), "attacker output: {stdout}");
        drop(control);
        std::fs::remove_file(&control_path).unwrap();
    }

    // Its own user does reach it (so the refusal above is real). A connection that sends no
    // hello ends the server, and it leaves nothing behind either.
    let conn = connect_seqpacket(&endpoint).expect("the server's own user connects");
    drop(conn);
    let mut server = server;
    let deadline = Instant::now() + LONG;
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server outlived a connection without hello");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
}
