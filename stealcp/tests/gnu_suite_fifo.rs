//! coreutils tests/cp, side by side with GNU cp: what others can see while a copy is under
//! way. Each case copies the contents of a FIFO (`--copy-contents`), so that the copy waits
//! on the test: while it waits, the permissions of every file and directory it has made so
//! far (under their final names or stealcp's temporary ones) must not let anyone else in; then
//! the FIFO is closed and the finished trees compared. And a sparse file written into a FIFO
//! destination comes out whole.
//!
//! Cases (coreutils names): file-perm-race, existing-perm-race, parent-perm-race,
//! sparse-to-pipe. Every wait here has a deadline; every command started is killed and
//! reaped, also when a test fails. Nothing outside the temporary directories is touched.

mod gnu_harness;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gnu_harness::{User, configurations, file, gnu_cp, snapshot};
use nix::sys::stat::Mode;

const DEADLINE: Duration = Duration::from_secs(10);

/// A started command, killed and reaped on drop if it is still running.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Polls `what` every few milliseconds until it is `Some` or the deadline passes.
fn poll<T>(mut what: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = what() {
            return Some(found);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

nix::ioctl_read_bad!(fionread, nix::libc::FIONREAD, nix::libc::c_int);

/// Bytes written into the FIFO and not yet read (the copy has read the line once it is 0).
fn unread(writer: &fs::File) -> i32 {
    let mut n: nix::libc::c_int = -1;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `n`, alive for the
    // call; the descriptor is open, as `writer` is borrowed.
    match unsafe { fionread(std::os::fd::AsRawFd::as_raw_fd(writer), &mut n) } {
        Ok(_) => n,
        Err(_) => -1,
    }
}

/// What one command did: its status, what `check` said while it waited on the FIFO, and the
/// finished tree.
struct Raced {
    status: Option<i32>,
    seen: Result<(), String>,
    tree: BTreeMap<PathBuf, String>,
    /// The group of each entry of the finished tree.
    groups: BTreeMap<PathBuf, u32>,
    stderr: String,
}

/// One case: `args` run under `umask` in a tree `setup` makes, with a FIFO at `fifo`; `ready`
/// says the copy has got far enough to be looked at, `check` looks.
struct Case<'a> {
    args: &'a [&'a str],
    umask: u32,
    setup: &'a dyn Fn(&Path),
    fifo: &'a str,
    ready: &'a dyn Fn(&Path) -> bool,
    check: &'a dyn Fn(&Path) -> Result<(), String>,
}

/// Runs `program` (then `extra`) on a [`Case`]: writes one line into the FIFO, waits until
/// the copy has read it and `ready` says it has got far enough, asks `check`, writes one more
/// line and closes the FIFO.
/// `groups`: run as uid 65534 through `setpriv` with these group options (the tree made
/// 65534's, its groups left as `setup` made them), or as the current user.
fn race(program: &str, extra: &[&str], case: &Case, groups: Option<&[String]>) -> Raced {
    let Case { args, umask, setup, fifo, ready, check } = *case;
    let dir = tempfile::TempDir::new().unwrap();
    setup(dir.path());
    let script = format!("umask {umask:o}; exec \"$0\" \"$@\"");
    let mut command = match groups {
        None => Command::new("sh"),
        Some(groups) => {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
            let chown = Command::new("chown").args(["-hR", "65534"]).arg(dir.path()).status().unwrap();
            assert!(chown.success());
            let mut c = Command::new("setpriv");
            c.arg("--reuid=65534").args(groups).arg("sh");
            c
        }
    };
    let child = command
        .args(["-c", &script, program])
        .args(extra)
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Started(child);
    // A FIFO opens for writing without blocking only once its reader has it open.
    let writer = poll(|| {
        fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(dir.path().join(fifo)).ok()
    });
    let seen = match writer {
        None => Err(format!("{program} never opened the FIFO")),
        Some(mut writer) => {
            writer.write_all(b"foo\n").unwrap();
            let seen = match poll(|| (unread(&writer) == 0 && ready(dir.path())).then_some(())) {
                Some(()) => check(dir.path()),
                None => Err(format!("{program}: the copy never got as far as the test waits for")),
            };
            writer.write_all(b"foo\n").unwrap();
            seen
        }
    };
    let status = poll(|| child.0.try_wait().unwrap()).and_then(|s| s.code());
    let mut stderr = String::new();
    if let Some(mut pipe) = child.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    drop(child);
    let tree = snapshot(dir.path(), false);
    let groups =
        tree.keys().map(|rel| (rel.clone(), fs::symlink_metadata(dir.path().join(rel)).unwrap().gid())).collect();
    Raced { status, seen, tree, groups, stderr }
}

/// [`race`] with cp and with stealcp (each configuration as the current user, and as uid
/// 65534 with the group options `groups` when root with setpriv): each must pass `check`, and
/// they must agree on status and the finished tree.
fn same_race_as_cp(case: &Case, groups: &[String]) {
    let args = case.args;
    let Some(cp) = gnu_cp() else {
        eprintln!("skipped: /usr/bin/cp is not GNU cp");
        return;
    };
    let runs = configurations().into_iter().map(|(user, extra)| (user == User::Nobody, extra));
    for (nobody, extra) in runs {
        let as_user = nobody.then_some(groups);
        let by_cp = race(cp, &[], case, as_user);
        assert_eq!(by_cp.seen, Ok(()), "cp itself: {args:?} as 65534: {nobody}: {}", by_cp.stderr);
        let by_us = race(env!("CARGO_BIN_EXE_stealcp"), extra, case, as_user);
        let context = format!(
            "{extra:?} {args:?} as 65534: {nobody}\ncp: {:?} {}\nstealcp: {:?} {}",
            by_cp.status, by_cp.stderr, by_us.status, by_us.stderr
        );
        assert_eq!(by_us.seen, Ok(()), "while copying: {context}");
        assert_eq!(by_us.status, by_cp.status, "status: {context}");
        assert_eq!(by_us.tree, by_cp.tree, "finished tree: {context}");
        assert_eq!(by_us.groups, by_cp.groups, "finished groups: {context}");
    }
}

/// Group options for a run as 65534 in no other group.
fn no_groups() -> Vec<String> {
    vec!["--regid=65534".into(), "--clear-groups".into()]
}

fn mkfifo(path: &Path, mode: u32) {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(mode)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every entry under `dir` but `except`, with its metadata.
fn made(dir: &Path, except: &[&str]) -> Vec<(PathBuf, fs::Metadata)> {
    snapshot(dir, false)
        .into_keys()
        .filter(|rel| !except.iter().any(|e| rel == Path::new(e)))
        .map(|rel| {
            let meta = fs::symlink_metadata(dir.join(&rel)).unwrap();
            (rel, meta)
        })
        .collect()
}

#[test]
fn file_perm_race_a_new_copy_is_private_while_written() {
    let setup = |dir: &Path| mkfifo(&dir.join("fifo"), 0o644);
    // cp makes fifo-copy before it reads; stealcp may make an unnamed file (nothing to see).
    let ready = |_: &Path| true;
    let check = |dir: &Path| {
        for (name, meta) in made(dir, &["fifo"]) {
            if meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "{} is mode {:o} while its contents are copied",
                    name.display(),
                    meta.mode() & 0o7777
                ));
            }
        }
        Ok(())
    };
    let args = ["-p", "--copy-contents", "fifo", "fifo-copy"];
    same_race_as_cp(
        &Case { args: &args, umask: 0o022, setup: &setup, fifo: "fifo", ready: &ready, check: &check },
        &no_groups(),
    );
}

#[test]
fn existing_perm_race_an_existing_copy_is_not_opened_to_the_sources_group() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("existing-perm-race skipped: not root (it needs files of two groups)");
        return;
    }
    let (g1, g2) = (61_012, 61_013);
    let setup = |dir: &Path| {
        mkfifo(&dir.join("fifo"), 0o600);
        file(dir, "fifo-copy", "", 0o640);
        std::os::unix::fs::lchown(dir.join("fifo"), None, Some(g1)).unwrap();
        std::os::unix::fs::lchown(dir.join("fifo-copy"), None, Some(g2)).unwrap();
    };
    let ready = |dir: &Path| fs::metadata(dir.join("fifo-copy")).is_ok_and(|m| m.len() > 0);
    let check = |dir: &Path| {
        let meta = fs::metadata(dir.join("fifo-copy")).unwrap();
        match meta.mode() & 0o777 {
            0o600 => Ok(()),
            0o640 if meta.gid() != g1 => Ok(()),
            mode => Err(format!("fifo-copy is mode {mode:o}, group {}, while written", meta.gid())),
        }
    };
    let args = ["-p", "--copy-contents", "fifo", "fifo-copy"];
    // As 65534, a member of both groups (as the coreutils case needs of its user).
    let groups = [format!("--regid={g1}"), format!("--groups={g1},{g2}")];
    same_race_as_cp(
        &Case { args: &args, umask: 0o077, setup: &setup, fifo: "fifo", ready: &ready, check: &check },
        &groups,
    );
}

#[test]
fn parent_perm_race_directories_made_by_parents_are_closed_while_filled() {
    for (attr, private) in [("mode", 0o022), ("ownership", 0o077)] {
        let setup = |dir: &Path| {
            fs::create_dir(dir.join(attr)).unwrap();
            fs::set_permissions(dir.join(attr), fs::Permissions::from_mode(0o775)).unwrap();
            fs::create_dir(dir.join("d")).unwrap();
            // The case holds with or without a setgid destination; make it one where we may.
            let _ = fs::set_permissions(dir.join("d"), fs::Permissions::from_mode(0o2775));
            mkfifo(&dir.join(attr).join("fifo"), 0o664);
        };
        let ready = |dir: &Path| made(&dir.join("d"), &[]).iter().any(|(_, m)| m.is_dir());
        let check = |dir: &Path| {
            for (name, meta) in made(&dir.join("d"), &[]).iter().filter(|(_, m)| m.is_dir()) {
                if meta.mode() & private != 0 {
                    return Err(format!("d/{} is mode {:o} while filled", name.display(), meta.mode() & 0o7777));
                }
            }
            Ok(())
        };
        let preserve = format!("--preserve={attr}");
        let (args, fifo) =
            ([preserve.as_str(), "-R", "--copy-contents", "--parents", attr, "d"], format!("{attr}/fifo"));
        same_race_as_cp(
            &Case { args: &args, umask: 0o002, setup: &setup, fifo: &fifo, ready: &ready, check: &check },
            &no_groups(),
        );
    }
}

#[test]
fn sparse_to_pipe_a_sparse_file_written_into_a_fifo_comes_out_whole() {
    for (_, extra) in configurations().into_iter().filter(|(user, _)| *user == User::Me) {
        let dir = tempfile::TempDir::new().unwrap();
        let sparse = dir.path().join("sparse");
        fs::File::create(&sparse).unwrap().set_len(1 << 20).unwrap();
        let pipe = dir.path().join("pipe");
        mkfifo(&pipe, 0o644);
        let reader = {
            let pipe = pipe.clone();
            std::thread::spawn(move || fs::read(pipe).unwrap())
        };
        let child = Command::new(env!("CARGO_BIN_EXE_stealcp"))
            .args(extra)
            .arg(&sparse)
            .arg(&pipe)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = Started(child);
        let status = poll(|| child.0.try_wait().unwrap());
        // If the copy never opened the FIFO, the reader still waits: let it see an end.
        let _ = fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(&pipe);
        let read = reader.join().unwrap();
        drop(child);
        assert!(status.is_some_and(|s| s.success()), "{extra:?}: {status:?}");
        assert_eq!(read.len(), 1 << 20, "{extra:?}: bytes through the pipe");
        assert!(read.iter().all(|&b| b == 0), "{extra:?}: zeros");
        assert!(fs::symlink_metadata(&pipe).unwrap().file_type().is_fifo(), "{extra:?}: still a FIFO");
    }
}
