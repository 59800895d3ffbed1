//! [`Process`]: one function run once in a child process, like `multiprocessing.Process`.
//!
//! The child is forked from the fork server (never from the caller, which may have threads),
//! so it starts from a clean copy of the program. Its arguments travel through an ipc-channel
//! of their own, which lets them carry channels: a [`pipe`](crate::pipe) end, for one.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_channel::ipc;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use serde::Serialize;

use crate::deadline;
use crate::error::ExitStatus;
use crate::process::ProcessError;
use crate::process::fork_server::{self, EnvironmentOptions, ForkServer};
use crate::process::registration::{self, Outgoing, RemoteFn};

/// A function running in a child process. See [`Process::spawn`].
///
/// The child runs a registered function ([`register_fn!`](crate::register_fn)) with the given
/// arguments and exits: with code 0 if the function returned, 1 if it panicked (the message is
/// printed on stderr), 2 if its arguments could not be received. Its stdout and stderr are the
/// parent's.
///
/// Dropping a `Process` does not stop the child. By default the child dies with the parent
/// (when the parent exits or is killed, even with `SIGKILL`); see
/// [`ProcessBuilder::die_with_parent`]. Either way no zombie is left: the fork server reaps
/// it.
///
/// # Examples
/// ```
/// use stealpool::ExitStatus;
/// use stealpool::process::Process;
///
/// fn greet(name: String, times: u32) {
///     for _ in 0..times {
///         println!("hello, {name}");
///     }
/// }
/// stealpool::register_fn!(greet);
///
/// let p = Process::spawn(greet, ("bob".to_string(), 2)).unwrap();
/// assert!(p.pid() > 0);
/// assert_eq!(p.join(), ExitStatus::Exited(0));
/// assert!(!p.is_alive());
/// ```
pub struct Process {
    pid: u32,
    name: String,
    server: Arc<ForkServer>,
    status: Mutex<Option<ExitStatus>>,
}

/// Options for a [`Process`]: its name, whether it dies with its parent, its environment and
/// current directory.
///
/// # Examples
/// ```
/// use stealpool::process::Process;
///
/// fn nap() {}
/// stealpool::register_fn!(nap);
///
/// let p = Process::builder().name("napper").spawn(nap, ()).unwrap();
/// assert_eq!(p.name(), "napper");
/// assert!(p.join().success());
/// ```
#[derive(Debug, Clone)]
pub struct ProcessBuilder {
    name: Option<String>,
    die_with_parent: bool,
    environment: EnvironmentOptions,
}

impl ProcessBuilder {
    /// The process's name (as `ps` shows it; the kernel keeps the first 15 bytes). Default
    /// `stealpool-p<N>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether the child is killed when this program ends, however it ends. Default `true`.
    ///
    /// With `false` the child goes on after the program exits (it is then adopted by `init`,
    /// which reaps it), like a non-daemon process outliving a Python parent that did not join
    /// it.
    pub fn die_with_parent(mut self, die: bool) -> Self {
        self.die_with_parent = die;
        self
    }

    /// Sets an environment variable for the child (on top of the caller's environment as it is
    /// at [`spawn`](ProcessBuilder::spawn), or none after
    /// [`env_clear`](ProcessBuilder::env_clear)), like `std::process::Command::env`.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.environment.set(key.as_ref(), value.as_ref());
        self
    }

    /// Sets several environment variables for the child, as [`env`](ProcessBuilder::env).
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.environment.set(k.as_ref(), v.as_ref());
        }
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.environment.remove(key.as_ref());
        self
    }

    /// Starts the child with an empty environment (plus what [`env`](ProcessBuilder::env) sets
    /// afterwards) instead of the caller's.
    pub fn env_clear(mut self) -> Self {
        self.environment.clear();
        self
    }

    /// The child's current directory. Default: the caller's at
    /// [`spawn`](ProcessBuilder::spawn); a relative path is taken from there too.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.environment.current_dir(dir.as_ref());
        self
    }

    /// Starts the child: it runs `f(args)` (for a function of several arguments, `args` is a
    /// tuple, as for `starmap`).
    ///
    /// # Errors
    /// [`ProcessError::Unregistered`] if `f` is not registered,
    /// [`ProcessError::Serialization`] if the arguments do not serialize,
    /// [`ProcessError::Spawn`] if the child could not be started, also if the current directory
    /// cannot be read or the one given is not a directory, or if the environment is larger than
    /// [`MAX_ENVIRONMENT_BYTES`](crate::process::MAX_ENVIRONMENT_BYTES) or holds a name or value
    /// `setenv` refuses (empty, `=` in a name, a NUL byte).
    pub fn spawn<F, M>(self, f: F, args: F::Args) -> Result<Process, ProcessError>
    where
        F: RemoteFn<M>,
        F::Args: Serialize,
    {
        let _ = f;
        let code = registration::name_of_fn::<F>()
            .ok_or_else(|| ProcessError::Unregistered { name: std::any::type_name::<F>().to_owned() })?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let name = self
            .name
            .unwrap_or_else(|| format!("stealpool-p{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let environment = Arc::new(self.environment.snapshot().map_err(ProcessError::Spawn)?);
        // A fork server found dead on the way (killed, say) is replaced, once.
        let mut retried = false;
        let (server, pid, tx) = loop {
            let server = fork_server::get().map_err(ProcessError::Spawn)?;
            let (tx, rx) = ipc::channel::<Outgoing<F::Args>>().map_err(ProcessError::Spawn)?;
            match server.run(&name, code, rx.to_opaque(), self.die_with_parent, Arc::clone(&environment)) {
                Ok(pid) => break (server, pid, tx),
                Err(_) if !retried && !server.is_usable() => retried = true,
                Err(e) => return Err(ProcessError::Spawn(e)),
            }
        };
        let process = Process { pid, name, server, status: Mutex::new(None) };
        // Not serialized before the child starts: serializing pipe ends outside an ipc-channel
        // send would leave their descriptors behind in ipc-channel's per-thread state.
        if let Err(e) = crate::pipe::sending(|| tx.send(Outgoing(args))) {
            // The child cannot get its arguments; do not leave it waiting.
            process.kill();
            process.join();
            return Err(match e {
                ipc_channel::IpcError::SerializationError(e) => ProcessError::Serialization { message: e.to_string() },
                e => ProcessError::Spawn(std::io::Error::other(format!("could not send the arguments: {e:?}"))),
            });
        }
        Ok(process)
    }
}

impl Process {
    /// Options for a process; [`Process::spawn`] uses the defaults.
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder { name: None, die_with_parent: true, environment: EnvironmentOptions::default() }
    }

    /// Starts `f(args)` in a child process with the default options.
    ///
    /// # Errors
    /// As [`ProcessBuilder::spawn`].
    pub fn spawn<F, M>(f: F, args: F::Args) -> Result<Process, ProcessError>
    where
        F: RemoteFn<M>,
        F::Args: Serialize,
    {
        Process::builder().spawn(f, args)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn status_until(&self, deadline: Option<Instant>) -> Option<ExitStatus> {
        if !self.server.is_mine() {
            // Inherited by a forked child, which never hears of the end: the status the parent
            // had already (if no thread of the parent held the lock at the fork), else Unknown.
            return Some(self.status.try_lock().and_then(|s| *s).unwrap_or(ExitStatus::Unknown));
        }
        let mut status = self.status.lock();
        if status.is_none() {
            *status = self.server.exit_status(self.pid, deadline);
        }
        *status
    }

    /// Waits for the child to end and returns how it ended.
    ///
    /// [`ExitStatus::Unknown`] only if the fork server itself was killed, which takes the
    /// child with it, or if this is called in a process forked (by `fork(2)`) from the one that
    /// started the child: only that one hears of its end, so there every `join` and
    /// `exit_status` returns at once, with the status the parent had already seen or `Unknown`.
    pub fn join(&self) -> ExitStatus {
        self.status_until(None).unwrap_or(ExitStatus::Unknown)
    }

    /// Waits at most `timeout` for the child to end; `None` if it is still running. Any
    /// timeout is accepted: one too large to add to now waits as long as [`join`](Self::join).
    pub fn join_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        self.status_until(deadline::after(timeout))
    }

    /// How the child ended, or `None` while it runs (Python's `exitcode`).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status_until(Some(Instant::now()))
    }

    /// Whether the child is still running.
    pub fn is_alive(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends `SIGTERM` (Python's `terminate`). Does nothing once the child has ended: the
    /// signal goes through the fork server, which knows the pid was not reused. Does nothing
    /// in a process forked from the one that started the child.
    pub fn terminate(&self) {
        self.server.kill(self.pid, Signal::SIGTERM);
    }

    /// Sends `SIGKILL` (Python's `kill`). Does nothing once the child has ended, nor in a
    /// process forked from the one that started the child (it is not that process's child).
    pub fn kill(&self) {
        self.server.kill(self.pid, Signal::SIGKILL);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.get_mut().is_none() {
            self.server.forget_exit(self.pid);
        }
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("name", &self.name)
            .field("status", &*self.status.lock())
            .finish()
    }
}
