//! Side by side with GNU cp: the same tree made in two temporary directories, `cp` run in one
//! and `stealcp` in the other with the same options (from inside each, so that paths in
//! messages are the same), then the results compared: the trees (types, contents, modes, link
//! counts, symlink targets), the exit statuses, and the first words of every message. As root
//! and, through `setpriv`, as the unprivileged uid 65534.
//!
//! Used by the `gnu_*.rs` tests; it must never run anything outside its temporary directories.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

/// GNU cp, if this machine has it (else the side-by-side tests skip, saying so).
pub fn gnu_cp() -> Option<&'static str> {
    let out = Command::new("/usr/bin/cp").arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout).contains("GNU coreutils").then_some("/usr/bin/cp")
}

/// Who runs both commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// Whoever runs the tests.
    Me,
    /// uid/gid 65534 through `setpriv`, when the tests run as root.
    Nobody,
}

/// The users to compare as: the current one, and 65534 when root with `setpriv` (else the
/// reason it is skipped is printed).
pub fn users() -> Vec<User> {
    let root = nix::unistd::geteuid().is_root();
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    match (root, setpriv) {
        (true, true) => vec![User::Me, User::Nobody],
        (true, false) => {
            eprintln!("unprivileged run skipped: no setpriv");
            vec![User::Me]
        }
        (false, _) => {
            eprintln!("unprivileged run skipped: not root (running as this user only)");
            vec![User::Me]
        }
    }
}

/// One command's run.
#[derive(Debug)]
pub struct Run {
    pub dir: TempDir,
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// How to compare a case.
#[derive(Debug, Clone, Copy, Default)]
pub struct Compare {
    /// Compare stderr's messages (off for usage errors, which clap words differently).
    pub skip_messages: bool,
    /// Compare stdout (sorted lines, `-v`).
    pub stdout: bool,
    /// Compare times of regular files (for `-p`/`-a`).
    pub mtimes: bool,
}

fn run_one(program: &str, setup: &dyn Fn(&Path), args: &[&str], stdin: Option<&[u8]>, user: User) -> Run {
    let dir = TempDir::new().unwrap();
    setup(dir.path());
    let mut command = match user {
        User::Me => Command::new(program),
        User::Nobody => {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
            let chown = Command::new("chown").args(["-hR", "65534:65534"]).arg(dir.path()).status().unwrap();
            assert!(chown.success());
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
            c
        }
    };
    command.args(args).current_dir(dir.path()).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("start the command");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // A command that does not read its input closes the pipe: that is its business.
        let _ = pipe.write_all(input);
    }
    let out = child.wait_with_output().unwrap();
    Run {
        dir,
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The CRC and length `cksum` gives a file of more than a MiB. The tests run unoptimized, and
/// summing 65 MiB byte by byte there takes half a second, against a fiftieth for `cksum`;
/// `None` for smaller files, or if `cksum` fails (the caller then sums the bytes itself).
fn large_file_sum(path: &Path, len: u64) -> Option<String> {
    if len <= 1 << 20 {
        return None;
    }
    let out = Command::new("cksum").arg(path).stderr(Stdio::null()).output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut words = text.split_whitespace();
    let (crc, size) = (words.next()?, words.next()?);
    Some(format!("{size} bytes, cksum {crc}"))
}

/// `len` bytes with no block of zeros and no two MiB alike (a range copied to the wrong
/// place shows): one MiB of a pattern, each copy stamped with its number. Made by copying,
/// since the tests run unoptimized.
pub fn dense(len: usize) -> Vec<u8> {
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 | 1).collect();
    let mut data = block.repeat(len.div_ceil(block.len()));
    data.truncate(len);
    for (n, mib) in data.chunks_mut(block.len()).enumerate() {
        let stamp = (n as u64 + 1).to_le_bytes();
        let end = stamp.len().min(mib.len());
        mib[..end].copy_from_slice(&stamp[..end]);
    }
    data
}

/// What a tree looks like, entry by entry.
pub fn snapshot(root: &Path, mtimes: bool) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let kind = meta.file_type();
        let mode = meta.mode() & 0o7777;
        let detail = if kind.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
            format!("dir {mode:o}")
        } else if kind.is_symlink() {
            // The link count too: `cp -al` hard-links a symlink (or FIFO) rather than make one.
            format!("symlink links={} -> {:?}", meta.nlink(), fs::read_link(&path).unwrap())
        } else if kind.is_fifo() {
            format!("fifo {mode:o} links={}", meta.nlink())
        } else if kind.is_char_device() || kind.is_block_device() {
            format!("device {mode:o} {:x} links={}", meta.rdev(), meta.nlink())
        } else if kind.is_socket() {
            format!("socket {mode:o} links={}", meta.nlink())
        } else {
            let contents = match large_file_sum(&path, meta.len()) {
                Some(sum) => Ok(sum),
                None => fs::read(&path).map(|c| {
                    if c.len() <= 64 {
                        String::from_utf8_lossy(&c).into_owned()
                    } else {
                        let sum =
                            c.iter().fold(0u64, |h, &b| h.wrapping_mul(1_099_511_628_211).wrapping_add(u64::from(b)));
                        format!("{} bytes, sum {sum:x}", c.len())
                    }
                }),
            };
            let time = if mtimes { format!(" mtime={}.{}", meta.mtime(), meta.mtime_nsec()) } else { String::new() };
            format!("file {mode:o} links={} {:?}{time}", meta.nlink(), contents.unwrap_or_else(|e| e.to_string()))
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        out.insert(rel, detail);
    }
    out
}

/// The first words of each message, without the program's name: `cannot stat 'x':` for
/// `cp: cannot stat 'x': No such file or directory`.
pub fn first_words(stderr: &str, program: &str) -> Vec<String> {
    stderr
        .lines()
        .map(|line| {
            let line = line.replace(program, "PROGRAM");
            let line = line.strip_prefix("PROGRAM: ").unwrap_or(&line);
            line.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// Runs `cp ARGS` and `stealcp ARGS` on two copies of the tree `setup` makes, as every user of
/// [`users`], and asserts that they agree. Returns stealcp's runs (for further checks), or
/// nothing if GNU cp is not here.
pub fn same_as_cp(setup: impl Fn(&Path), args: &[&str]) -> Vec<Run> {
    same_as_cp_with(setup, args, None, Compare::default())
}

/// [`same_as_cp`] with standard input and what to compare.
pub fn same_as_cp_with(setup: impl Fn(&Path), args: &[&str], stdin: Option<&[u8]>, how: Compare) -> Vec<Run> {
    let Some(cp) = gnu_cp() else {
        eprintln!("skipped: /usr/bin/cp is not GNU cp");
        return Vec::new();
    };
    let mut runs = Vec::new();
    // stealcp as it runs by default, and with worker processes (as the user who runs the tests).
    let mut with_processes = vec!["--backend", "process"];
    with_processes.extend_from_slice(args);
    let runs_of: Vec<(User, &[&str])> = users()
        .into_iter()
        .map(|user| (user, args))
        .chain(std::iter::once((User::Me, with_processes.as_slice())))
        .collect();
    for (user, our_args) in runs_of {
        let by_cp = run_one(cp, &setup, args, stdin, user);
        let by_us = run_one(env!("CARGO_BIN_EXE_stealcp"), &setup, our_args, stdin, user);
        let context = format!(
            "{our_args:?} as {user:?}\ncp: status {:?}, stderr:\n{}\nstealcp: status {:?}, stderr:\n{}",
            by_cp.status, by_cp.stderr, by_us.status, by_us.stderr
        );
        assert_eq!(by_us.status, by_cp.status, "exit status: {context}");
        if !how.skip_messages {
            assert_eq!(first_words(&by_us.stderr, "stealcp"), first_words(&by_cp.stderr, cp), "messages: {context}");
        }
        if how.stdout {
            let sorted = |s: &str| {
                let mut lines: Vec<String> = s.lines().map(str::to_owned).collect();
                lines.sort();
                lines
            };
            assert_eq!(sorted(&by_us.stdout), sorted(&by_cp.stdout), "stdout: {context}");
        }
        assert_eq!(snapshot(by_us.dir.path(), how.mtimes), snapshot(by_cp.dir.path(), how.mtimes), "tree: {context}");
        runs.push(by_us);
    }
    runs
}

/// Writes `contents` to `dir/name` with `mode`.
pub fn file(dir: &Path, name: &str, contents: &str, mode: u32) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, contents).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Makes `dir/name` a symlink to `target`.
pub fn symlink(dir: &Path, target: &str, name: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// `-v` lines filed under the destination each names (`removed 'D'`, `'S' -> 'D'`,
/// `'S' -> 'D' (backup: 'B')` and `--parents`' unquoted `S -> D` under `D`), in their order:
/// a parallel copy lists entries in another order than cp, but each destination's own lines
/// must come in cp's order.
pub fn listing_by_destination(stdout: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stdout.lines() {
        let destination = if let Some(removed) = line.strip_prefix("removed '") {
            removed.trim_end_matches('\'').to_owned()
        } else if let Some((_, to)) = line.split_once(" -> '") {
            to.split('\'').next().unwrap_or_default().to_owned()
        } else if let Some((_, to)) = line.split_once(" -> ") {
            to.to_owned()
        } else {
            String::new()
        };
        out.entry(destination).or_default().push(line.to_owned());
    }
    out
}

/// The first `-v` line (as a destination) that comes before the line of a directory above it,
/// with that directory: cp lists a directory it makes before anything in it.
pub fn listed_before_its_directory(stdout: &str) -> Option<(String, String)> {
    // The line on which each destination is first named.
    let mut first: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in stdout.lines().enumerate() {
        for destination in listing_by_destination(line).into_keys() {
            first.entry(destination).or_insert(i);
        }
    }
    first.iter().find_map(|(destination, &at)| {
        Path::new(destination)
            .ancestors()
            .skip(1)
            .map(|dir| dir.to_string_lossy().into_owned())
            .find(|dir| first.get(dir).is_some_and(|&dir_at| dir_at > at))
            .map(|dir| (dir, destination.clone()))
    })
}

/// [`same_as_cp_with`] comparing stdout too (`-v`), and then, against one more run of cp as
/// the same user, each destination's lines in their order ([`listing_by_destination`]).
pub fn same_listing_as_cp(setup: impl Fn(&Path), args: &[&str], stdin: Option<&[u8]>) -> Vec<Run> {
    let runs = same_as_cp_with(&setup, args, stdin, Compare { stdout: true, ..Compare::default() });
    let Some(cp) = gnu_cp().filter(|_| !runs.is_empty()) else { return runs };
    // The runs are as each of `users()`, then with worker processes as the current user.
    for (run, user) in runs.iter().zip(users().into_iter().chain([User::Me])) {
        let by_cp = run_one(cp, &setup, args, stdin, user);
        for (who, stdout) in [("cp", &by_cp.stdout), ("stealcp", &run.stdout)] {
            if let Some((dir, entry)) = listed_before_its_directory(stdout) {
                panic!("{args:?}: {who} listed {entry:?} before the directory {dir:?} holding it:\n{stdout}");
            }
        }
        assert_eq!(
            listing_by_destination(&run.stdout),
            listing_by_destination(&by_cp.stdout),
            "{args:?}: the lines of each destination, in order\ncp:\n{}\nstealcp:\n{}",
            by_cp.stdout,
            run.stdout
        );
    }
    runs
}

/// The messages on stderr one by one, the program's name replaced by `PROGRAM`: `-i`'s
/// questions end without a newline, so one line may hold several (`cp: overwrite 'a'? cp: ...`).
pub fn messages(stderr: &str, program: &str) -> Vec<String> {
    let text = stderr.replace(program, "PROGRAM");
    let mut out: Vec<String> = text.split("PROGRAM: ").map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
    out.sort();
    out
}

/// `-i` side by side: [`same_as_cp_with`] (tree, status, stdout; not its line by line messages),
/// then, against cp run again as the same user, every question and message, sorted: workers
/// finish in another order than cp, so the questions come in another order. `input` must
/// therefore answer every question alike (or the case ask one).
pub fn same_questions_as_cp(setup: impl Fn(&Path), args: &[&str], input: &[u8]) -> Vec<Run> {
    let how = Compare { skip_messages: true, stdout: true, ..Compare::default() };
    let runs = same_as_cp_with(&setup, args, Some(input), how);
    let Some(cp) = gnu_cp().filter(|_| !runs.is_empty()) else { return runs };
    for (run, user) in runs.iter().zip(users().into_iter().chain([User::Me])) {
        let by_cp = run_one(cp, &setup, args, Some(input), user);
        assert_eq!(
            messages(&run.stderr, "stealcp"),
            messages(&by_cp.stderr, cp),
            "{args:?} as {user:?}: questions and messages\ncp:\n{}\nstealcp:\n{}",
            by_cp.stderr,
            run.stderr
        );
    }
    runs
}

/// One case run by both commands, unchecked, for tests that compare more than [`same_as_cp`]
/// does (allocated blocks) or less (files too large to snapshot): (cp's run, stealcp's run),
/// as `user`, stealcp given `extra` options first (`--backend process`). `None` without GNU cp.
pub fn both_runs(
    setup: &dyn Fn(&Path),
    args: &[&str],
    stdin: Option<&[u8]>,
    user: User,
    extra: &[&str],
) -> Option<(Run, Run)> {
    let cp = gnu_cp()?;
    let ours: Vec<&str> = extra.iter().chain(args).copied().collect();
    Some((run_one(cp, setup, args, stdin, user), run_one(env!("CARGO_BIN_EXE_stealcp"), setup, &ours, stdin, user)))
}

/// The runs [`same_as_cp`] makes: every user of [`users`] with stealcp as it is, and the
/// current user with `--backend process`.
pub fn configurations() -> Vec<(User, &'static [&'static str])> {
    let mut out: Vec<(User, &'static [&'static str])> = users().into_iter().map(|u| (u, &[][..])).collect();
    out.push((User::Me, &["--backend", "process"]));
    out
}

/// Runs `program` in `dir` as it stands, without [`run_one`]'s chown (for cases whose owners
/// matter: root's files in a directory of 65534's), `wrap` first (`setpriv ...`, or nothing),
/// then `extra` and `args`: (status, stderr).
pub fn run_prepared<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    wrap: &[&str],
    program: &str,
    extra: &[&str],
    args: &[S],
) -> (Option<i32>, String) {
    let mut command = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    command.args(extra).args(args).current_dir(dir).stdin(Stdio::null());
    let out = command.output().expect("start the command");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// [`snapshot`] without the entry `skip` (a symlink to each run's own directory elsewhere,
/// whose targets differ between the two runs).
pub fn snapshot_but(root: &Path, skip: &str) -> BTreeMap<PathBuf, String> {
    let mut tree = snapshot(root, false);
    tree.remove(Path::new(skip));
    tree
}
