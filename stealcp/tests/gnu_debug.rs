//! `--debug`: after each regular file's `-v` line, the line GNU cp (9.2 and later) prints for
//! it, `copy offload: ..., reflink: ..., sparse detection: ...`, in cp's words for what stealcp
//! did: a plain file, a sparse one, `--sparse=always`, `--reflink=never`, an empty file, a
//! `/proc` file, a device's contents (`--copy-contents`), a copy to another file system, a
//! large file copied in ranges by several workers, and none for links, directories and
//! `--attributes-only`.
//!
//! GNU cp 9.1 (this machine's) has no `--debug`, so each case runs `cp -v` beside
//! `stealcp --debug -v` (see `gnu_harness`): the same tree, exit status and messages, the same
//! `-v` lines once the debug lines are taken out; and each debug line is checked against what
//! cp's `copy.c` prints for that case. As root, as uid 65534 and with worker processes.

mod gnu_harness;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use gnu_harness::{both_runs, configurations, file, first_words, snapshot_but, symlink};

const PLAIN: &str = "copy offload: yes, reflink: unsupported, sparse detection: no";
const NEVER: &str = "copy offload: yes, reflink: no, sparse detection: no";
const ZEROS: &str = "copy offload: avoided, reflink: unsupported, sparse detection: zeros";
const HOLES: &str = "copy offload: avoided, reflink: unsupported, sparse detection: SEEK_HOLE + zeros";
const NOTHING_READ: &str = "copy offload: unknown, reflink: unsupported, sparse detection: no";
const READ_WRITE: &str = "copy offload: unsupported, reflink: unsupported, sparse detection: no";
const CLONE_FAILED: &str = "copy offload: unknown, reflink: unsupported, sparse detection: unknown";

/// A sparse file: `len` bytes, one of them data.
fn sparse(dir: &Path, name: &str, len: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::create(dir.join(name)).unwrap();
    f.set_len(len).unwrap();
    f.write_all_at(b"x", len / 3).unwrap();
}

fn tree(dir: &Path) {
    file(dir, "f", "plain\n", 0o644);
    file(dir, "empty", "", 0o644);
    file(dir, "g", "old\n", 0o644);
    sparse(dir, "holes", 1 << 20);
    file(dir, "d/a", "a\n", 0o644);
    file(dir, "d/sub/b", "b\n", 0o600);
    symlink(dir, "a", "d/link");
}

/// Whether the test directory's file system makes reflinks (btrfs, XFS): then every line says
/// `reflink: yes` and these cases do not apply.
fn reflinks_here() -> bool {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "probe", "x", 0o644);
    let probe = std::process::Command::new("/usr/bin/cp")
        .args(["--reflink=always", "probe", "clone"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .status();
    probe.is_ok_and(|s| s.success())
}

/// Runs `cp -v ARGS` and `stealcp --debug -v ARGS` in every configuration and checks them
/// (see the module docs); `expected` gives each regular file's destination (as `-v` shows it)
/// and the debug line that must follow its `-v` line.
fn debug_as_cp(setup: impl Fn(&Path), args: &[&str], expected: &[(&str, &str)]) {
    if gnu_harness::gnu_cp().is_none() {
        return eprintln!("skipped: /usr/bin/cp is not GNU cp");
    }
    if reflinks_here() {
        return eprintln!("skipped: the test directory's file system makes reflinks");
    }
    let expected: BTreeMap<&str, &str> = expected.iter().copied().collect();
    let mut cp_args = vec!["-v"];
    cp_args.extend_from_slice(args);
    for (user, extra) in configurations() {
        let ours: Vec<&str> = extra.iter().copied().chain(["--debug"]).collect();
        let (by_cp, by_us) = both_runs(&setup, &cp_args, None, user, &ours).unwrap();
        let context = format!(
            "{ours:?} {cp_args:?} as {user:?}\ncp: status {:?}\n{}{}\nstealcp: status {:?}\n{}{}",
            by_cp.status, by_cp.stdout, by_cp.stderr, by_us.status, by_us.stdout, by_us.stderr
        );
        assert_eq!(by_us.status, by_cp.status, "exit status: {context}");
        assert_eq!(first_words(&by_us.stderr, "stealcp"), first_words(&by_cp.stderr, "/usr/bin/cp"), "{context}");
        assert_eq!(snapshot_but(by_us.dir.path(), "shm"), snapshot_but(by_cp.dir.path(), "shm"), "tree: {context}");
        // Each debug line right after its file's -v line, and no other.
        let lines: Vec<&str> = by_us.stdout.lines().collect();
        let mut seen = BTreeMap::new();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("copy offload: ") {
                let before = if i == 0 { "" } else { lines[i - 1] };
                let destination = before.split(" -> '").nth(1).and_then(|d| d.split('\'').next()).unwrap_or_default();
                assert!(seen.insert(destination, *line).is_none(), "two debug lines for {destination:?}: {context}");
            }
        }
        assert_eq!(seen, expected, "debug lines by destination: {context}");
        let sorted = |text: &str| {
            let mut lines: Vec<String> =
                text.lines().filter(|l| !l.starts_with("copy offload: ")).map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&by_us.stdout), sorted(&by_cp.stdout), "the -v lines: {context}");
    }
}

#[test]
fn each_regular_file_is_followed_by_how_it_was_copied() {
    debug_as_cp(tree, &["f", "f2"], &[("f2", PLAIN)]);
    debug_as_cp(tree, &["--reflink=never", "f", "f2"], &[("f2", NEVER)]);
    debug_as_cp(tree, &["--sparse=always", "f", "f2"], &[("f2", ZEROS)]);
    debug_as_cp(tree, &["holes", "h2"], &[("h2", HOLES)]);
    debug_as_cp(tree, &["--sparse=always", "holes", "h2"], &[("h2", HOLES)]);
    debug_as_cp(tree, &["empty", "e2"], &[("e2", NOTHING_READ)]);
    debug_as_cp(tree, &["/proc/version", "v"], &[("v", NOTHING_READ)]);
    // Written into, and backed up first: the same words after the line cp prints.
    debug_as_cp(tree, &["f", "g"], &[("g", PLAIN)]);
    debug_as_cp(tree, &["-b", "f", "g"], &[("g", PLAIN)]);
    // A tree: only its regular files.
    debug_as_cp(tree, &["-r", "d", "d2"], &[("d2/a", PLAIN), ("d2/sub/b", PLAIN)]);
    debug_as_cp(tree, &["-a", "d", "d2"], &[("d2/a", PLAIN), ("d2/sub/b", PLAIN)]);
}

#[test]
fn links_and_attributes_only_copy_no_data_and_print_no_debug_line() {
    debug_as_cp(tree, &["-l", "f", "f2"], &[]);
    debug_as_cp(tree, &["-s", "f", "f2"], &[]);
    debug_as_cp(tree, &["-rl", "d", "d2"], &[]);
    debug_as_cp(tree, &["--attributes-only", "f", "f2"], &[]);
}

#[test]
fn device_contents_and_another_file_system_are_read_and_written() {
    debug_as_cp(tree, &["/dev/null", "n"], &[("n", READ_WRITE)]);
    if nix::unistd::geteuid().is_root() {
        // A device inside a tree (made as root, before the harness hands the tree to 65534).
        let with_device = |dir: &Path| {
            tree(dir);
            let null = nix::sys::stat::makedev(1, 3);
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
            nix::sys::stat::mknod(&dir.join("d/null"), nix::sys::stat::SFlag::S_IFCHR, mode, null).unwrap();
        };
        debug_as_cp(
            with_device,
            &["-r", "--copy-contents", "d", "d2"],
            &[("d2/a", PLAIN), ("d2/sub/b", PLAIN), ("d2/null", READ_WRITE)],
        );
    } else {
        eprintln!("device case skipped: not root (mknod)");
    }
    // tmpfs from the test's file system: copy_file_range is refused across file systems.
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    if dev(Path::new("/dev/shm")).is_none_or(|shm| dev(&std::env::temp_dir()) == Some(shm)) {
        return eprintln!("cross-device case skipped: no /dev/shm on a file system of its own");
    }
    let shm_dirs = std::cell::RefCell::new(Vec::new());
    let to_shm = |dir: &Path| {
        tree(dir);
        let shm = tempfile::TempDir::new_in("/dev/shm").unwrap();
        fs::set_permissions(shm.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        symlink(dir, shm.path().to_str().unwrap(), "shm");
        shm_dirs.borrow_mut().push(shm);
    };
    debug_as_cp(to_shm, &["f", "shm/x"], &[("shm/x", READ_WRITE)]);
}

/// Past the size from which a file is copied in ranges by several workers (64 MiB): one line,
/// after the file's, for the whole file.
#[test]
fn a_large_file_copied_in_ranges_has_one_line() {
    let with_holes = |dir: &Path| sparse(dir, "big", 65 << 20);
    // 65 MiB of data (no block of zeros): copied by copy_file_range, range by range.
    let data = gnu_harness::dense(65 << 20);
    let dense = |dir: &Path| fs::write(dir.join("big"), &data).unwrap();
    debug_as_cp(with_holes, &["big", "b1"], &[("b1", HOLES)]);
    debug_as_cp(dense, &["big", "b2"], &[("b2", PLAIN)]);
}

/// `--reflink=always` where the file system has none: cp fails each file (an empty one and a
/// device's contents too), and prints its debug line after the failure. cp 9.1 leaves an empty
/// destination behind (9.2 and later remove it); stealcp leaves none, so the trees are not
/// compared here, only the lines.
#[test]
fn reflink_always_without_reflinks_fails_each_file_as_cp() {
    if reflinks_here() {
        return eprintln!("skipped: the test directory's file system makes reflinks");
    }
    for (user, extra) in configurations() {
        for (args, reason) in [
            (&["f", "f2"], "Operation not supported"),
            (&["empty", "f2"], "Operation not supported"),
            (&["/dev/null", "f2"], "Invalid cross-device link"),
        ] {
            let mut all = vec!["--reflink=always"];
            all.extend_from_slice(args);
            let ours: Vec<&str> = extra.iter().copied().chain(["--debug"]).collect();
            let Some((by_cp, by_us)) = both_runs(&tree, &all, None, user, &ours) else {
                return eprintln!("skipped: /usr/bin/cp is not GNU cp");
            };
            let context = format!(
                "{ours:?} {all:?} as {user:?}\ncp: {}\nstealcp: {}{}",
                by_cp.stderr, by_us.stdout, by_us.stderr
            );
            assert_eq!(by_us.status, by_cp.status, "{context}");
            let cp_line = by_cp.stderr.replace("/usr/bin/cp", "stealcp");
            assert_eq!(by_us.stderr, cp_line, "{context}");
            assert!(cp_line.ends_with(&format!("{reason}\n")), "{context}");
            let expected = format!("'{}' -> 'f2'\n{CLONE_FAILED}\n", args[0]);
            assert_eq!(by_us.stdout, expected, "{context}");
            assert!(!by_us.dir.path().join("f2").exists(), "no copy is left: {context}");
        }
    }
}

/// A file large enough to be copied in ranges fails `--reflink=always` as a small one does,
/// worded as cp words it, and leaves nothing under its name or a temporary one.
#[test]
fn reflink_always_fails_a_split_file_as_cp() {
    if reflinks_here() {
        return eprintln!("skipped: the test directory's file system makes reflinks");
    }
    let setup = |dir: &Path| sparse(dir, "big", 65 << 20);
    for (user, extra) in configurations() {
        let Some((by_cp, by_us)) = both_runs(&setup, &["--reflink=always", "big", "out"], None, user, extra) else {
            return eprintln!("skipped: /usr/bin/cp is not GNU cp");
        };
        let context = format!("{extra:?} as {user:?}\ncp: {}\nstealcp: {}", by_cp.stderr, by_us.stderr);
        assert_eq!(by_us.status, by_cp.status, "{context}");
        assert_eq!(by_us.stderr, by_cp.stderr.replace("/usr/bin/cp", "stealcp"), "{context}");
        let left: Vec<_> = fs::read_dir(by_us.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["big"], "{context}");
    }
}
