//! What a forked child starts with besides the program's memory: its environment variables and
//! its current directory. The parent takes them (the caller's own, as changed by builder
//! options) when a pool is built or a [`Process`](crate::process::Process) spawned; the record
//! travels in the spawn request; the child applies it right after the fork, while it is the
//! only thread of a fresh process.
//!
//! The record is bounded: [`MAX_ENVIRONMENT_BYTES`] for the variables, `PATH_MAX` for the
//! directory, checked by the parent before it asks and again by the server before it forks.
//!
//! This module must never touch the environment of a process that may have a second thread:
//! only [`ChildEnvironment::apply`] changes it, and only in a fork server's fresh child.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::libc;
use serde::{Deserialize, Serialize};

/// The largest environment a worker or [`Process`](crate::process::Process) child can be given:
/// 1 MiB, counted as the C library stores it (each variable's name, `=`, value and a NUL byte).
/// A pool or child whose environment would be larger is refused
/// ([`BuildError`](crate::BuildError) from `build`, [`ProcessError::Spawn`](crate::ProcessError)
/// from `spawn`), rather than sent to the fork server.
pub const MAX_ENVIRONMENT_BYTES: usize = 1 << 20;

/// Changes to the caller's environment and current directory that a builder records, applied
/// to a snapshot of them when the pool is built or the child spawned (as
/// `std::process::Command` does at `spawn`).
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvironmentOptions {
    /// Start from an empty environment instead of the caller's.
    clear: bool,
    /// `Some(value)`: set; `None`: remove. Later calls for the same name win.
    vars: BTreeMap<OsString, Option<OsString>>,
    /// The child's current directory; relative paths are taken from the caller's at snapshot
    /// time. `None`: the caller's.
    cwd: Option<PathBuf>,
}

impl EnvironmentOptions {
    pub(crate) fn set(&mut self, key: &OsStr, value: &OsStr) {
        self.vars.insert(key.to_owned(), Some(value.to_owned()));
    }

    pub(crate) fn remove(&mut self, key: &OsStr) {
        if self.clear {
            self.vars.remove(key);
        } else {
            self.vars.insert(key.to_owned(), None);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.clear = true;
        self.vars.clear();
    }

    pub(crate) fn current_dir(&mut self, dir: &Path) {
        self.cwd = Some(dir.to_owned());
    }

    /// The caller's environment and current directory as they are now, with the options
    /// applied, checked against the limits.
    pub(crate) fn snapshot(&self) -> io::Result<ChildEnvironment> {
        // An inherited entry whose name `setenv` refuses (`=x=1`, which only a launcher's raw
        // `execve` can create) cannot be passed on: it is left out, not an error.
        let mut vars: BTreeMap<OsString, OsString> = if self.clear {
            BTreeMap::new()
        } else {
            std::env::vars_os().filter(|(k, _)| valid_name(k.as_bytes())).collect()
        };
        for (key, value) in &self.vars {
            match value {
                Some(v) => vars.insert(key.clone(), v.clone()),
                None => vars.remove(key),
            };
        }
        let here = std::env::current_dir()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read the current directory: {e}")))?;
        let cwd = match &self.cwd {
            Some(dir) => here.join(dir),
            None => here,
        };
        let env = ChildEnvironment {
            vars: vars.into_iter().map(|(k, v)| (k.into_vec(), v.into_vec())).collect(),
            cwd: cwd.into_os_string().into_vec(),
        };
        env.check()?;
        if !Path::new(OsStr::from_bytes(&env.cwd)).is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the current directory for the child, {}, is not a directory", cwd_display(&env.cwd)),
            ));
        }
        Ok(env)
    }
}

/// A name `setenv` accepts: non-empty, without `=` or NUL.
fn valid_name(key: &[u8]) -> bool {
    !key.is_empty() && !key.contains(&b'=') && !key.contains(&0)
}

fn cwd_display(cwd: &[u8]) -> std::path::Display<'_> {
    Path::new(OsStr::from_bytes(cwd)).display()
}

/// The record in a spawn request: every variable (name, value) and the absolute current
/// directory, as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChildEnvironment {
    vars: Vec<(Vec<u8>, Vec<u8>)>,
    cwd: Vec<u8>,
}

impl ChildEnvironment {
    /// Checks the record against the limits and what `setenv`/`chdir` accept: names
    /// non-empty, without `=` or NUL; values without NUL; an absolute directory without NUL, at
    /// most `PATH_MAX` bytes. Both sides call it: the parent to refuse with a clear error, the
    /// server because a record it forks with must be one the child can apply.
    pub(crate) fn check(&self) -> io::Result<()> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let mut total = 0usize;
        for (key, value) in &self.vars {
            total = total.saturating_add(key.len()).saturating_add(value.len()).saturating_add(2);
            if !valid_name(key) {
                return Err(invalid(format!(
                    "the environment variable name {:?} is empty or holds `=` or a NUL byte",
                    String::from_utf8_lossy(key)
                )));
            }
            if value.contains(&0) {
                return Err(invalid(format!(
                    "the value of the environment variable {} holds a NUL byte",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        if total > MAX_ENVIRONMENT_BYTES {
            return Err(invalid(format!(
                "the environment for the child is {total} bytes, more than the limit of {MAX_ENVIRONMENT_BYTES} \
                 (stealpool::process::MAX_ENVIRONMENT_BYTES)"
            )));
        }
        if self.cwd.first() != Some(&b'/') || self.cwd.contains(&0) || self.cwd.len() >= libc::PATH_MAX as usize {
            return Err(invalid(format!(
                "the current directory for the child, {}, is not an absolute path of at most PATH_MAX bytes",
                cwd_display(&self.cwd)
            )));
        }
        Ok(())
    }

    /// In the fork server, before the fork: the child's directory, opened (`O_PATH`), so that a
    /// directory that is gone fails the spawn with its `errno` instead of a child that starts
    /// and dies.
    pub(crate) fn open_dir(&self) -> nix::Result<OwnedFd> {
        nix::fcntl::open(
            OsStr::from_bytes(&self.cwd),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
    }

    /// In the fork server's fresh child: enter `dir` (from [`open_dir`](Self::open_dir)) and
    /// replace the whole environment with the record's. The record was [`check`](Self::check)ed
    /// by the server, so no `setenv` can refuse it.
    ///
    /// # Safety
    /// The calling process must have exactly one thread (no other thread may read or write the
    /// environment meanwhile, nor hold the allocator's or the C library's locks).
    pub(crate) unsafe fn apply(&self, dir: &OwnedFd) -> nix::Result<()> {
        // SAFETY: `dir` is an open descriptor; fchdir only changes this process's directory.
        if unsafe { libc::fchdir(dir.as_raw_fd()) } != 0 {
            return Err(nix::errno::Errno::last());
        }
        // Not `remove_var` for each inherited name: one that `unsetenv` refuses (an entry such
        // as `=x=1`, which a launcher may have put there) would make it panic.
        // SAFETY: the caller guarantees this is the process's only thread, so nothing reads the
        // environment while it is emptied.
        if unsafe { libc::clearenv() } != 0 {
            return Err(nix::errno::Errno::last());
        }
        for (key, value) in &self.vars {
            // SAFETY: as above; `check` ruled out the names and values `setenv` would refuse
            // (so `set_var` cannot panic).
            unsafe { std::env::set_var(OsStr::from_bytes(key), OsStr::from_bytes(value)) };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(vars: &[(&str, &str)], cwd: &str) -> ChildEnvironment {
        ChildEnvironment {
            vars: vars.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
            cwd: cwd.as_bytes().to_vec(),
        }
    }

    #[test]
    fn check_refuses_what_setenv_and_chdir_would() {
        assert!(record(&[("A", "1"), ("PATH", "/bin")], "/").check().is_ok());
        for bad in [
            record(&[("", "1")], "/"),
            record(&[("A=B", "1")], "/"),
            record(&[("A\0", "1")], "/"),
            record(&[("A", "1\0")], "/"),
            record(&[], "relative"),
            record(&[], ""),
            record(&[], "/a\0b"),
        ] {
            assert_eq!(bad.check().unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        let long = "/".repeat(libc::PATH_MAX as usize);
        assert!(record(&[], &long).check().is_err());
    }

    #[test]
    fn the_size_limit_counts_names_values_and_separators() {
        let fits = "x".repeat(MAX_ENVIRONMENT_BYTES - 3);
        assert!(record(&[("A", &fits)], "/").check().is_ok(), "A=<value>\\0 is exactly the limit");
        let over = "x".repeat(MAX_ENVIRONMENT_BYTES - 2);
        let e = record(&[("A", &over)], "/").check().unwrap_err();
        assert!(e.to_string().contains("MAX_ENVIRONMENT_BYTES"), "{e}");
    }

    #[test]
    fn options_apply_to_the_snapshot_in_order() {
        let mut o = EnvironmentOptions::default();
        o.clear();
        o.set(OsStr::new("KEEP"), OsStr::new("1"));
        o.set(OsStr::new("GONE"), OsStr::new("1"));
        o.remove(OsStr::new("GONE"));
        o.current_dir(Path::new("/"));
        let env = o.snapshot().unwrap();
        assert_eq!(env, record(&[("KEEP", "1")], "/"));
        let mut o = EnvironmentOptions::default();
        o.current_dir(Path::new("/definitely/not/here"));
        assert_eq!(o.snapshot().unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
