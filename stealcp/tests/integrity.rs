//! Fault injection: a worker process of the built `stealcp` is killed (`SIGKILL`) in the middle
//! of a copy into a new tree; no file may then be under its final name with contents other
//! than its source's, and a rerun with `-u` must complete the copy.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills and reaps the child on drop, so a failing test leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Every file under `dst` has its source's contents; returns how many there are.
fn every_published_file_is_whole(src: &Path, dst: &Path) -> usize {
    if !dst.exists() {
        return 0;
    }
    let copies = files(dst);
    for copy in &copies {
        let rel = copy.strip_prefix(dst).unwrap();
        let name = rel.file_name().unwrap().to_string_lossy();
        assert!(!name.starts_with(stealcp::TEMP_PREFIX), "a temporary name was published: {rel:?}");
        assert!(fs::read(copy).unwrap() == fs::read(src.join(rel)).unwrap(), "{rel:?} differs from its source");
    }
    copies.len()
}

#[test]
fn a_worker_killed_mid_copy_never_leaves_a_partial_file_under_its_final_name() {
    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let mut total = 0;
    for d in 0..4 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for i in 0..100 {
            // 1 MiB, above the preallocation threshold: a partial copy would be zero-filled.
            let byte = (d * 100 + i) as u8 | 1;
            fs::write(src.join(format!("d{d}/f{i}")), vec![byte; 1 << 20]).unwrap();
            total += 1;
        }
    }
    let child = Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .args(["-a", "--backend", "process", "-j", "2"])
        .arg(&src)
        .arg(&dst)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let pid = guard.0.id();
    // Workers are the fork server's children. Kill one once copying has started in the
    // staging directory (whose files have their own names).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed = None;
    while killed.is_none() && Instant::now() < deadline && guard.0.try_wait().unwrap().is_none() {
        let started = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(stealcp::TEMP_PREFIX) && files(&e.path()).len() > 8);
        let workers: Vec<u32> = children(pid).into_iter().flat_map(children).collect();
        if started && let Some(&worker) = workers.first() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker as i32), nix::sys::signal::SIGKILL);
            killed = Some(worker);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = guard.0.wait_with_output_ref();
    let Some(worker) = killed else {
        eprintln!("skipped: the copy ended before a worker could be killed");
        return;
    };
    let published = every_published_file_is_whole(&src, &dst);
    if out.status.success() {
        // On a loaded machine the kill can land once the worker has no task left (the
        // coordinator is still finishing directories): nothing failed, and every file is
        // whole (checked above), which is all this test is about.
        assert_eq!(published, total, "a successful copy has every file");
        eprintln!("worker {worker} held no task when it was killed: nothing failed, every file is whole");
        return;
    }
    assert!(out.stderr.contains("copy job"), "{}", out.stderr);
    assert!(published < total, "killed worker {worker}, yet all {total} files are there");
    // The rerun keeps what is whole and copies the rest.
    let rerun = Command::new(env!("CARGO_BIN_EXE_stealcp")).args(["-a", "-u"]).arg(&src).arg(&dst).output().unwrap();
    assert!(rerun.status.success(), "{}", String::from_utf8_lossy(&rerun.stderr));
    // Into the published tree (as dst/src) if the first run published one, else as dst.
    let target = if dst.join("src").exists() { dst.join("src") } else { dst.clone() };
    assert_eq!(every_published_file_is_whole(&src, &target), total);
}

/// `wait_with_output` for a child held by a [`Guard`].
trait WaitRef {
    fn wait_with_output_ref(&mut self) -> Finished;
}

struct Finished {
    status: std::process::ExitStatus,
    stderr: String,
}

impl WaitRef for Child {
    fn wait_with_output_ref(&mut self) -> Finished {
        use std::io::Read;
        let mut stderr = String::new();
        if let Some(mut pipe) = self.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        Finished { status: self.wait().unwrap(), stderr }
    }
}

/// Visible text of terminal output: escape sequences removed, split at `\r` and `\n`.
fn screen_lines(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // CSI: ESC [ params final-byte.
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            '\r' | '\n' => out.push(std::mem::take(&mut line)),
            c if !c.is_control() => line.push(c),
            _ => {}
        }
    }
    out.push(line);
    out.retain(|l| !l.trim().is_empty());
    out
}

/// Under a 60-column terminal (a pty made by `script`), no progress line is wider than the
/// terminal, and the run ends with one summary line; without a terminal, `--progress` still
/// ends with it.
#[test]
fn progress_fits_a_60_column_terminal_and_ends_with_a_summary_line() {
    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..600 {
        fs::write(src.join(format!("f{i}")), vec![7u8; 256 << 10]).unwrap();
    }
    let piped = Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .args(["-a", "--progress"])
        .arg(&src)
        .arg(dir.path().join("piped"))
        .output()
        .unwrap();
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("stealcp: 600 files, 150.0 MiB in "), "{stderr}");
    if Command::new("script").arg("--version").output().is_err() {
        return eprintln!("skipped: no `script` to run under a pty");
    }
    let command = format!(
        "stty cols 60 rows 20; {} -a --progress {} {}",
        env!("CARGO_BIN_EXE_stealcp"),
        src.display(),
        dir.path().join("tty").display()
    );
    let out = Command::new("script").args(["-qec", &command, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = screen_lines(&String::from_utf8_lossy(&out.stdout));
    for line in &lines {
        // indicatif pads with blanks up to the width, never past it.
        let text = line.trim_end().chars().count();
        assert!(text < 60 && line.chars().count() <= 60, "wider than the terminal: {line:?}");
    }
    let summaries = lines.iter().filter(|l| l.contains(" files, ") && l.contains(" in ")).count();
    assert_eq!(summaries, 1, "{lines:?}");
}
