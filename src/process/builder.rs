//! [`ProcessPoolBuilder`]: the settings of a [`ProcessPoolExecutor`], and `build`, which takes
//! the environment snapshot the workers start with and starts the pool.
//!
//! This module must never start processes itself: `build` hands a finished configuration to
//! the pool.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::fork_server::EnvironmentOptions;
use super::pool::{Config, Pool};
use super::protocol::{Initializer, MAX_INITARGS};
use super::{ProcessPoolExecutor, fn_code};
use crate::error::BuildError;
#[cfg(doc)]
use crate::error::JobError;

/// Settings for a [`ProcessPoolExecutor`], with by-value setters and a fallible
/// [`build`](ProcessPoolBuilder::build).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use stealpool::ProcessPoolBuilder;
///
/// fn setup() {}
/// stealpool::register_fn!(setup);
///
/// let pool = ProcessPoolBuilder::new()
///     .num_workers(2)
///     .max_tasks_per_child(1000)
///     .task_timeout(Duration::from_secs(60))
///     .initializer(setup)
///     .build()
///     .unwrap();
/// assert_eq!(pool.worker_pids().len(), 2);
/// ```
#[derive(Clone)]
pub struct ProcessPoolBuilder {
    workers: usize,
    max_tasks_per_child: Option<u64>,
    task_timeout: Option<Duration>,
    /// The initializer, or why `build` must refuse it.
    initializer: Option<Result<Initializer, String>>,
    terminate_grace: Duration,
    window: usize,
    name_prefix: String,
    environment: EnvironmentOptions,
}

impl ProcessPoolBuilder {
    /// Default settings: one worker per CPU, no task limit, no time limit, no initializer.
    pub fn new() -> Self {
        ProcessPoolBuilder {
            workers: 0,
            max_tasks_per_child: None,
            task_timeout: None,
            initializer: None,
            terminate_grace: Duration::from_secs(1),
            window: 16,
            name_prefix: "stealpool-w".into(),
            environment: EnvironmentOptions::default(),
        }
    }

    /// Number of worker processes; 0 (the default) means the number of CPUs.
    pub fn num_workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Replace a worker after it has run this many tasks (Python's `maxtasksperchild`).
    /// Default: never. A chunk of a `map` counts as one task.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = (n > 0).then_some(n);
        self
    }

    /// A time limit for every task: a task still running after `limit` has its worker killed
    /// (and replaced), and its future fails with [`JobError::TimedOut`]. Default: none.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// A registered function (see [`register_fn!`](crate::register_fn)) that every worker runs
    /// once before its first task. If it panics, [`build`](ProcessPoolBuilder::build) fails (or,
    /// for a replacement worker, the pool stops with [`JobError::Broken`]) rather than
    /// respawning workers forever.
    pub fn initializer<F: Fn() + 'static>(mut self, f: F) -> Self {
        let _ = f;
        self.initializer = Some(initializer_of::<F>(Vec::new()));
        self
    }

    /// Like [`initializer`](ProcessPoolBuilder::initializer), for a registered function of one
    /// argument: every worker (also each replacement) runs `f(args)` once before its first
    /// task, as Python's `initializer=f, initargs=args`. The arguments are serialized here,
    /// once, travel to every new worker (at most 64 KiB serialized) and are deserialized there
    /// before the first task; several arguments are a tuple.
    ///
    /// # Errors
    /// [`build`](ProcessPoolBuilder::build) fails if `args` does not serialize or is larger
    /// than 64 KiB serialized, and, as for any initializer, if `f` is not registered, if the
    /// arguments do not deserialize in the worker, or if `f` panics there
    /// ([`BuildError::is_initializer_failure`] for the last two).
    ///
    /// # Examples
    /// ```
    /// use std::sync::OnceLock;
    /// use stealpool::{Executor, ProcessPoolBuilder};
    ///
    /// static GREETING: OnceLock<String> = OnceLock::new();
    ///
    /// fn set_greeting((word, times): (String, usize)) {
    ///     GREETING.set(word.repeat(times)).unwrap();
    /// }
    /// stealpool::register_fn!(set_greeting);
    ///
    /// fn greet(name: String) -> String {
    ///     format!("{} {name}", GREETING.get().map_or("(unset)", String::as_str))
    /// }
    /// stealpool::register_fn!(greet);
    ///
    /// let pool = ProcessPoolBuilder::new()
    ///     .num_workers(2)
    ///     .initializer_with(set_greeting, ("hi".to_owned(), 2))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pool.apply_async(greet, "Ada".to_owned()).unwrap().result().unwrap(), "hihi Ada");
    /// ```
    pub fn initializer_with<F, A>(mut self, f: F, args: A) -> Self
    where
        F: Fn(A) + 'static,
        A: Serialize,
    {
        let _ = f;
        self.initializer = Some(match postcard::to_stdvec(&args) {
            Ok(bytes) if bytes.len() <= MAX_INITARGS => initializer_of::<F>(bytes),
            Ok(bytes) => Err(format!(
                "the initializer's arguments are {} bytes serialized, more than the limit of {MAX_INITARGS}",
                bytes.len()
            )),
            Err(e) => Err(format!("the initializer's arguments do not serialize: {e}")),
        });
        self
    }

    /// How long [`terminate`](crate::Executor::terminate) lets workers end on `SIGTERM` (a
    /// job's handler for it runs) before it sends `SIGKILL` to those still there. Default 1 s;
    /// [`Duration::ZERO`] sends `SIGKILL` at once, as
    /// [`ProcessPoolExecutor::kill`] always does.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use stealpool::{Executor, ProcessPoolBuilder};
    ///
    /// let pool = ProcessPoolBuilder::new().num_workers(1).terminate_grace(Duration::from_millis(200)).build().unwrap();
    /// let pid = pool.worker_pids()[0];
    /// pool.terminate(); // SIGTERM: an idle worker ends at once
    /// pool.join().unwrap();
    /// assert!(!pool.worker_pids().contains(&pid));
    /// ```
    pub fn terminate_grace(mut self, grace: Duration) -> Self {
        self.terminate_grace = grace;
        self
    }

    /// The most tasks sent ahead to one worker (default 16; the pool uses fewer when tasks are
    /// long). 1 disables sending ahead.
    pub fn window(mut self, tasks: usize) -> Self {
        self.window = tasks.max(1);
        self
    }

    /// The process name prefix of the workers, shown by `ps` and `top` (default
    /// `"stealpool-w"`; Linux keeps 15 bytes of a process name).
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Sets an environment variable for the workers (on top of the environment they start
    /// with: the caller's as it is at [`build`](ProcessPoolBuilder::build), or none after
    /// [`env_clear`](ProcessPoolBuilder::env_clear)), like `std::process::Command::env`.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.environment.set(key.as_ref(), value.as_ref());
        self
    }

    /// Sets several environment variables for the workers, as [`env`](ProcessPoolBuilder::env).
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

    /// Removes an environment variable from the workers' environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.environment.remove(key.as_ref());
        self
    }

    /// Starts the workers with an empty environment (plus what [`env`](ProcessPoolBuilder::env)
    /// sets afterwards) instead of the caller's.
    pub fn env_clear(mut self) -> Self {
        self.environment.clear();
        self
    }

    /// The workers' current directory. Default: the caller's at
    /// [`build`](ProcessPoolBuilder::build); a relative path is taken from there too.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.environment.current_dir(dir.as_ref());
        self
    }

    /// Starts the fork server (once per process) and the workers, and waits until every worker
    /// is ready (its initializer has run).
    ///
    /// The workers start with the caller's environment variables and current directory as
    /// they are now, changed by [`env`](ProcessPoolBuilder::env) and its relatives (see the
    /// [module docs](crate::process#what-a-worker-process-sees)).
    ///
    /// # Errors
    /// [`BuildError`] if the initializer is not registered or fails, if processes cannot be
    /// started, if the current directory cannot be read or the one given is not a directory,
    /// or if the environment is larger than
    /// [`MAX_ENVIRONMENT_BYTES`](crate::process::MAX_ENVIRONMENT_BYTES) or holds a name or
    /// value `setenv` refuses (empty, `=` in a name, a NUL byte).
    pub fn build(self) -> Result<ProcessPoolExecutor, BuildError> {
        let initializer = match self.initializer {
            None => None,
            Some(Ok(initializer)) => Some(initializer),
            Some(Err(reason)) => return Err(BuildError::process(reason)),
        };
        let environment = self
            .environment
            .snapshot()
            .map_err(|e| BuildError::process(format!("cannot set up the workers' environment: {e}")))?;
        let config = Config {
            workers: if self.workers == 0 { num_cpus::get().max(1) } else { self.workers },
            max_tasks_per_child: self.max_tasks_per_child,
            task_timeout: self.task_timeout,
            initializer,
            terminate_grace: self.terminate_grace,
            max_window: self.window,
            name_prefix: self.name_prefix,
            environment: Arc::new(environment),
        };
        Ok(ProcessPoolExecutor { pool: Pool::start(config)? })
    }
}

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The initializer `F` with its serialized arguments, or why `build` must refuse it.
fn initializer_of<F: 'static>(args: Vec<u8>) -> Result<Initializer, String> {
    match fn_code::<F>() {
        Ok(name) => Ok(Initializer { name: name.to_owned(), args }),
        Err(type_name) => Err(format!(
            "the initializer `{type_name}` is not registered: add `stealpool::register_fn!(...)` next to it"
        )),
    }
}

impl fmt::Debug for ProcessPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolBuilder")
            .field("workers", &self.workers)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("task_timeout", &self.task_timeout)
            .field(
                "initializer",
                &self.initializer.as_ref().map(|r| r.as_ref().map_or_else(|e| e.as_str(), |i| &i.name)),
            )
            .field("terminate_grace", &self.terminate_grace)
            .field("window", &self.window)
            .field("name_prefix", &self.name_prefix)
            .field("environment", &self.environment)
            .finish()
    }
}
