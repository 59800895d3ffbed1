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

use super::fork_server::EnvironmentOptions;
use super::pool::{Config, Pool};
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
    initializer: Option<Result<&'static str, &'static str>>,
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
        self.initializer = Some(fn_code::<F>());
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
            Some(Ok(name)) => Some(name),
            Some(Err(type_name)) => {
                return Err(BuildError::process(format!(
                    "the initializer `{type_name}` is not registered: add `stealpool::register_fn!(...)` next to it"
                )));
            }
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

impl fmt::Debug for ProcessPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolBuilder")
            .field("workers", &self.workers)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("task_timeout", &self.task_timeout)
            .field("initializer", &self.initializer.map(|r| r.unwrap_or_else(|t| t)))
            .field("window", &self.window)
            .field("name_prefix", &self.name_prefix)
            .field("environment", &self.environment)
            .finish()
    }
}
