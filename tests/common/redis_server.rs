//! A real `redis-server` for one test: on a free loopback port, in its own temporary directory,
//! stopped (and waited for) when dropped, also when the test fails.
//!
//! It speaks to the server with plain RESP over a `TcpStream` (PING, SHUTDOWN), so it needs no
//! client crate and compiles into every test. It never reuses a port or a directory between
//! tests, and it never touches a server it did not start.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it was started, or to exit after SHUTDOWN.
const START_OR_STOP: Duration = Duration::from_secs(20);

/// Whether `redis-server` can be started here; tests that need one skip (with this reason) when
/// it cannot. `.ci/run` installs it, so CI never skips.
pub fn unavailable() -> Option<String> {
    match Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!("redis-server --version exited with {status}")),
        Err(e) => Some(format!("redis-server is not installed ({e}); .ci/run installs it")),
    }
}

/// A `redis-server` child process owned by the test.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    append_only: bool,
    /// `requirepass`, if the server was started with one.
    password: Option<String>,
    /// The TLS port and the directory of `server.crt`, `server.key` and `ca.crt`, if the
    /// server also listens for TLS.
    tls: Option<(u16, PathBuf)>,
}

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(false, None)
    }

    /// Starts a server that writes every write to its append-only file (`appendfsync always`),
    /// so that [`RedisServer::restart`] keeps every acknowledged write.
    pub fn start_persistent() -> RedisServer {
        RedisServer::start_with(true, None)
    }

    /// Starts a server without persistence that requires `password` (`requirepass`); stopping
    /// it is a SIGKILL (its SHUTDOWN would need the password).
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_with(false, Some(password.to_owned()))
    }

    /// Starts a server without persistence that also listens for TLS on another free port,
    /// with the certificate `server.crt`, key `server.key` and CA `ca.crt` found in `certs`
    /// (client certificates not required). The plain port stays, for the harness itself.
    pub fn start_with_tls(certs: &Path) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        let mut server = RedisServer { child: None, port: 0, dir, append_only: false, password: None, tls: None };
        for _ in 0..20 {
            server.port = free_port();
            server.tls = Some((free_port(), certs.to_owned()));
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server with TLS did not start (see {})", server.log_path().display());
    }

    /// `rediss://127.0.0.1:TLS_PORT/`, for a server started with [`RedisServer::start_with_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls.as_ref().map(|(port, _)| format!("rediss://127.0.0.1:{port}/"))
    }

    fn start_with(append_only: bool, password: Option<String>) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        let mut server = RedisServer { child: None, port: 0, dir, append_only, password, tls: None };
        // A free port can be taken by someone else between our probe and the server's bind;
        // the server then exits at once and we pick another.
        for _ in 0..20 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 20 free ports (see {})", server.log_path().display());
    }

    /// `redis://127.0.0.1:PORT/`, the URL clients and workers connect with.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (its append-only file and its log are there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends one command (binary-safe arguments: tests write garbage with it) and returns the
    /// start of the reply, as text.
    pub fn command(&self, args: &[&[u8]]) -> String {
        command_bytes(self.port, args).unwrap_or_else(|e| format!("-ERR no reply: {e}"))
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SHUTDOWN, which flushes the append-only file; SIGKILL if it does not
    /// exit in time) and waits for it.
    pub fn stop(&mut self) {
        if self.password.is_some() {
            return self.kill();
        }
        let Some(mut child) = self.child.take() else { return };
        let _ = command(self.port, &["SHUTDOWN"]);
        let deadline = Instant::now() + START_OR_STOP;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (after [`RedisServer::stop`] or
    /// [`RedisServer::kill`]); with [`RedisServer::start_persistent`] it reloads its data.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_OR_STOP;
        // The old socket may linger a moment; the port is ours, so retry it.
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts the child and waits until it answers PING; false (and no child) if it exited.
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.append_only {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        if let Some((port, certs)) = &self.tls {
            cmd.args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(certs.join("server.crt"))
                .arg("--tls-key-file")
                .arg(certs.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(certs.join("ca.crt"));
        }
        let mut child = cmd.spawn().expect("spawn redis-server");
        let deadline = Instant::now() + START_OR_STOP;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            // Up: it answers PING, or refuses it for want of the password.
            if command(self.port, &["PING"])
                .is_ok_and(|reply| reply.starts_with("+PONG") || reply.starts_with("-NOAUTH"))
            {
                self.child = Some(child);
                return true;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server on port {} did not answer PING (see {})", self.port, self.log_path().display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// Sends one RESP command and returns the first reply chunk, as text.
fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    command_bytes(port, &args)
}

/// [`command`] with binary arguments.
fn command_bytes(port: u16, args: &[&[u8]]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request)?;
    let mut reply = [0u8; 256];
    let n = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
}
