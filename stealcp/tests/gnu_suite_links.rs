//! coreutils tests/cp, side by side with GNU cp (see `gnu_harness`): the cases about links
//! and names: symlinks reached twice in one run, hard links kept by `-d`, `--preserve=links`
//! and `-a -u`, `-al` on a symlink, `-d` onto a symlink to the source, `-dsf` across file
//! systems, names that are not UTF-8, trailing slashes, `--remove-destination` on directories
//! and self-looping symlinks, and backups of directories.
//!
//! Cases (coreutils names): abuse, cp-deref, link-preserve, preserve-link, link-symlink,
//! no-deref-link2, no-deref-link3, cross-dev-symlink, non-utf8-name, dir-slash, dir-rm-dest,
//! backup-dir. These tests never touch anything outside their temporary directories (the
//! cross-device case makes one under /dev/shm and removes it).

mod gnu_harness;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use filetime::FileTime;
use gnu_harness::{Run, configurations, file, gnu_cp, same_as_cp, snapshot, symlink};

fn inode(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).ino()
}

/// Asserts that every run has `a` and `b` as one inode (or, with `same == false`, as two).
fn linked(runs: &[Run], a: &str, b: &str, same: bool) {
    for run in runs {
        let root = run.dir.path();
        assert_eq!(inode(&root.join(a)) == inode(&root.join(b)), same, "{a} and {b} linked: expected {same}");
    }
}

#[test]
fn abuse_a_symlink_made_by_this_run_is_not_written_through() {
    // Two sources land on c/1: the first is a symlink (dangling, or to a writable file), the
    // second a file that must not be written through it.
    for target_exists in [false, true] {
        let setup = |dir: &Path| {
            for d in ["a", "b", "c"] {
                fs::create_dir(dir.join(d)).unwrap();
            }
            symlink(dir, "../t", "a/1");
            file(dir, "b/1", "payload\n", 0o644);
            if target_exists {
                file(dir, "t", "i\n", 0o644);
            }
        };
        for run in same_as_cp(setup, &["-dR", "a/1", "b/1", "c"]) {
            let t = run.dir.path().join("t");
            assert_eq!(fs::read(&t).ok(), target_exists.then(|| b"i\n".to_vec()), "t must be left alone");
        }
    }
}

#[test]
fn cp_deref_two_symlinks_to_one_directory() {
    // -RL reaches the directory c twice: two copies, never a hard link to a directory.
    let setup = |dir: &Path| {
        for d in ["a", "b", "c", "d"] {
            fs::create_dir(dir.join(d)).unwrap();
        }
        file(dir, "c/f", "f\n", 0o644);
        symlink(dir, "../c", "a/c");
        symlink(dir, "../c", "b/c");
    };
    same_as_cp(setup, &["-RL", "a", "b", "d"]);
}

#[test]
fn link_preserve_hard_links_kept_and_dropped() {
    let pair = |dir: &Path| {
        file(dir, "a", "", 0o644);
        fs::hard_link(dir.join("a"), dir.join("b")).unwrap();
        fs::create_dir(dir.join("c")).unwrap();
    };
    linked(&same_as_cp(pair, &["-d", "a", "b", "c"]), "c/a", "c/b", true);
    let to_symlink = |dir: &Path| {
        file(dir, "a", "", 0o644);
        symlink(dir, "a", "b");
        fs::create_dir(dir.join("c")).unwrap();
    };
    linked(&same_as_cp(to_symlink, &["--preserve=links", "-R", "-H", "a", "b", "c"]), "c/a", "c/b", true);
    let in_tree = |dir: &Path| {
        file(dir, "d/a", "", 0o644);
        fs::hard_link(dir.join("d/a"), dir.join("d/b")).unwrap();
    };
    linked(&same_as_cp(in_tree, &["--preserve=links", "-R", "-L", "d", "c"]), "c/a", "c/b", true);
    linked(&same_as_cp(in_tree, &["-dR", "--no-preserve=links", "d", "c"]), "c/a", "c/b", false);
}

fn file_and_symlink_to_it_in_a_tree(dir: &Path) {
    file(dir, "d/a", "", 0o644);
    symlink(dir, "a", "d/b");
}

#[test]
fn link_preserve_a_file_and_a_symlink_to_it_in_a_tree_under_l() {
    let runs = same_as_cp(file_and_symlink_to_it_in_a_tree, &["--preserve=links", "-R", "-L", "d", "c"]);
    linked(&runs, "c/a", "c/b", true);
}

#[test]
fn preserve_link_a_u_links_into_an_existing_tree() {
    // Whichever of the linked names the destination already has, -au makes all of them one
    // file again, also replacing an unlinked older and an unlinked newer file.
    let hour = 3600;
    let now = FileTime::now().unix_seconds();
    for present in ["f", "linkm"] {
        let setup = |dir: &Path| {
            file(dir, "s/f", "", 0o644);
            for name in ["linkm", "linke", "fileo", "fileu"] {
                fs::hard_link(dir.join("s/f"), dir.join("s").join(name)).unwrap();
            }
            let t = dir.join("t/s");
            fs::create_dir_all(&t).unwrap();
            file(dir, &format!("t/s/{present}"), "", 0o644);
            fs::hard_link(t.join(present), t.join("linke")).unwrap();
            file(dir, "t/s/fileo", "", 0o644);
            file(dir, "t/s/fileu", "", 0o644);
            filetime::set_file_mtime(t.join("fileo"), FileTime::from_unix_time(now - hour, 0)).unwrap();
            filetime::set_file_mtime(t.join("fileu"), FileTime::from_unix_time(now + hour, 0)).unwrap();
        };
        let runs = same_as_cp(setup, &["-au", "s", "t"]);
        for other in ["linkm", "linke", "fileo", "fileu"] {
            linked(&runs, "t/s/f", &format!("t/s/{other}"), true);
        }
    }
}

#[test]
fn link_symlink_al_keeps_the_symlinks_time() {
    let setup = |dir: &Path| {
        file(dir, "file", "", 0o644);
        symlink(dir, "file", "link");
        filetime::set_symlink_file_times(
            dir.join("link"),
            FileTime::from_unix_time(1_293_840_000, 0),
            FileTime::from_unix_time(1_293_840_000, 0),
        )
        .unwrap();
    };
    for run in same_as_cp(setup, &["-al", "link", "link.cp"]) {
        let meta = fs::symlink_metadata(run.dir.path().join("link.cp")).unwrap();
        assert_eq!(meta.mtime(), 1_293_840_000, "link.cp keeps the symlink's mtime");
    }
}

#[test]
fn no_deref_link_2_and_3_onto_a_symlink_to_the_source() {
    let into_dir = |dir: &Path| {
        file(dir, "a", "bar\n", 0o644);
        symlink(dir, "../a", "b/a");
    };
    same_as_cp(into_dir, &["-d", "a", "b"]);
    let beside = |dir: &Path| {
        file(dir, "a", "bar\n", 0o644);
        symlink(dir, "a", "b");
    };
    same_as_cp(beside, &["-d", "a", "b"]);
}

#[test]
fn cross_dev_symlink_dsf_onto_a_symlink_to_the_source_on_another_file_system() {
    // `mnt` leads to a directory on tmpfs, the test directory is elsewhere; `file` is a
    // symlink to mnt/path1/file, which `-dsf` is asked to symlink over it (coreutils runs in
    // a subdirectory with ../mnt; the harness runs at the top, hence one level less).
    let shm = Path::new("/dev/shm");
    let here = tempfile::TempDir::new().unwrap();
    let (Ok(a), Ok(b)) = (fs::metadata(shm), fs::metadata(here.path())) else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    if a.dev() == b.dev() {
        eprintln!("skipped: the test directory is on the same file system as /dev/shm");
        return;
    }
    // One directory for every run (none writes into it, and the trees compare equal), removed
    // when the test ends, also when it fails.
    let other = tempfile::TempDir::new_in(shm).unwrap();
    file(other.path(), "path1/file", "", 0o644);
    // The unprivileged run must reach it too.
    let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(other.path()).status().unwrap();
    assert!(chown.success());
    let setup = |dir: &Path| {
        std::os::unix::fs::symlink(other.path(), dir.join("mnt")).unwrap();
        symlink(dir, "mnt/path1/file", "file");
    };
    same_as_cp(setup, &["-dsf", "mnt/path1/file", "."]);
}

/// Runs `program` with OS-string `args` in a fresh copy of the tree `setup` makes, with
/// LC_ALL=`locale`: (status, stderr, tree).
fn run_os(
    program: &str,
    extra: &[&str],
    args: &[&OsStr],
    setup: &dyn Fn(&Path),
    locale: &str,
) -> (Option<i32>, String, Vec<(PathBuf, String)>) {
    let dir = tempfile::TempDir::new().unwrap();
    setup(dir.path());
    let out =
        Command::new(program).args(extra).args(args).env("LC_ALL", locale).current_dir(dir.path()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        snapshot(dir.path(), false).into_iter().collect(),
    )
}

#[test]
fn non_utf8_name_dot_contents_copied() {
    let Some(cp) = gnu_cp() else {
        eprintln!("skipped: /usr/bin/cp is not GNU cp");
        return;
    };
    let bad = OsStr::from_bytes(b"\xff\xfe-dir");
    let setup = |dir: &Path| {
        let d = dir.join(bad);
        if fs::create_dir(&d).is_err() {
            return;
        }
        for f in ["file1", "file2"] {
            fs::write(d.join(f), "").unwrap();
        }
        fs::create_dir(dir.join("target")).unwrap();
    };
    let probe = tempfile::TempDir::new().unwrap();
    if fs::create_dir(probe.path().join(bad)).is_err() {
        eprintln!("skipped: the file system refuses names that are not UTF-8");
        return;
    }
    let mut source = bad.as_bytes().to_vec();
    source.extend_from_slice(b"/.");
    let args = [OsStr::from_bytes(&source), OsStr::new("target")];
    for locale in ["C", "C.UTF-8", "fr_FR.UTF-8"] {
        let args: Vec<&OsStr> = std::iter::once(OsStr::new("-r")).chain(args).collect();
        let by_cp = run_os(cp, &[], &args, &setup, locale);
        for (_, extra) in configurations().into_iter().filter(|(user, _)| *user == gnu_harness::User::Me) {
            let by_us = run_os(env!("CARGO_BIN_EXE_stealcp"), extra, &args, &setup, locale);
            assert_eq!(by_us.0, by_cp.0, "status with {locale} {extra:?}: {}", by_us.1);
            assert_eq!(by_us.2, by_cp.2, "tree with {locale} {extra:?}");
            assert!(by_us.2.iter().any(|(p, _)| p == Path::new("target/file1")), "target/file1 copied");
        }
    }
}

#[test]
fn dir_slash_a_trailing_slash_still_copies_the_directory_into() {
    let setup = |dir: &Path| {
        file(dir, "dir1/file", "", 0o644);
        fs::create_dir(dir.join("dir2")).unwrap();
    };
    same_as_cp(setup, &["-R", "dir1/", "dir2"]);
    same_as_cp(setup, &["-R", "dir1//", "dir2/"]);
}

#[test]
fn dir_rm_dest_directories_and_a_self_looping_symlink() {
    let setup = |dir: &Path| {
        fs::create_dir_all(dir.join("d")).unwrap();
        fs::create_dir_all(dir.join("e")).unwrap();
        file(dir, "file", "x\n", 0o644);
        symlink(dir, "loop", "loop");
    };
    same_as_cp(setup, &["-R", "--remove-destination", "d", "e"]);
    let again = |dir: &Path| {
        setup(dir);
        fs::create_dir_all(dir.join("e/d")).unwrap();
    };
    same_as_cp(again, &["-R", "--remove-destination", "d", "e"]);
    same_as_cp(setup, &["--remove-destination", "file", "loop"]);
}

#[test]
fn backup_dir_directories_are_merged_not_backed_up() {
    let setup = |dir: &Path| {
        fs::create_dir_all(dir.join("x")).unwrap();
        fs::create_dir_all(dir.join("y/x")).unwrap();
        file(dir, "src/foo/bar", "new\n", 0o644);
        file(dir, "dst/foo/bar", "old\n", 0o644);
    };
    same_as_cp(setup, &["-ab", "x", "y"]);
    same_as_cp(setup, &["--recursive", "--backup", "src/foo", "dst"]);
}

/// `-a` keeps a hard link by linking to the first copy; where that fails (a read-only
/// directory, as an unprivileged user), the message names both paths as cp's does:
/// `cannot create hard link 'D' to 'FIRST'`, word for word, on both backends. (The two names
/// are arguments, with `--parents`, so that which one is first does not hang on the order a
/// directory lists them in: cp follows that order, stealcp copies a directory's files first.)
#[test]
fn a_hard_link_that_cannot_be_made_names_both_paths_as_cp() {
    let setup = |dir: &Path| {
        file(dir, "d/a", "data\n", 0o644);
        fs::create_dir(dir.join("d/sub")).unwrap();
        fs::hard_link(dir.join("d/a"), dir.join("d/sub/b")).unwrap();
        fs::create_dir_all(dir.join("dst/d/sub")).unwrap();
        // Read-only on both sides, so that -a has no mode of its own to give it.
        for sub in ["d/sub", "dst/d/sub"] {
            fs::set_permissions(dir.join(sub), std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
        }
    };
    let args = ["-a", "--parents", "d/a", "d/sub/b", "dst"];
    let runs = same_as_cp(setup, &args);
    let Some(cp) = gnu_cp().filter(|_| !runs.is_empty()) else { return };
    for (user, extra) in configurations() {
        let Some((by_cp, by_us)) = gnu_harness::both_runs(&setup, &args, None, user, extra) else {
            return;
        };
        let (ours, theirs) =
            (gnu_harness::messages(&by_us.stderr, "stealcp"), gnu_harness::messages(&by_cp.stderr, cp));
        assert_eq!(ours, theirs, "{extra:?} as {user:?}");
        if user != gnu_harness::User::Me || !nix::unistd::geteuid().is_root() {
            assert!(theirs.iter().any(|m| m.starts_with("cannot create hard link")), "the case fails: {theirs:?}");
        }
        assert_eq!(by_us.status, by_cp.status, "{extra:?} as {user:?}");
    }
}

/// A directory with more symlinks than its scan makes itself (the rest go to other workers in
/// batches, two here), and FIFOs among them: made as cp makes them, into a new tree and over an existing
/// copy with some names taken (by files and by symlinks), with `-f`, `-n`, `-u` and numbered
/// backups, listed by `-v` as cp lists them; each symlink keeps its times with `-a`.
#[test]
fn many_symlinks_in_one_directory_as_cp() {
    let setup = |dir: &Path| {
        file(dir, "A/f", "x", 0o644);
        for i in 0..400 {
            symlink(dir, &format!("target{i}"), &format!("A/l{i}"));
        }
        for i in 0..3 {
            nix::unistd::mkfifo(&dir.join(format!("A/p{i}")), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
        }
        for i in (0..400).step_by(7) {
            file(dir, &format!("B/A/l{i}"), "old\n", 0o644);
        }
        for i in (3..400).step_by(11).filter(|i| i % 7 != 0) {
            symlink(dir, "elsewhere", &format!("B/A/l{i}"));
        }
        // Symlinks of their own times, which -a keeps.
        let old = FileTime::from_unix_time(946_684_800, 0);
        for i in (0..400).step_by(5) {
            filetime::set_symlink_file_times(dir.join(format!("A/l{i}")), old, old).unwrap();
        }
    };
    let verbose = gnu_harness::Compare { stdout: true, ..Default::default() };
    for args in [
        &["-a", "A", "C"][..],
        &["-r", "A", "C"],
        &["-a", "A", "B"],
        &["-af", "A", "B"],
        &["-an", "A", "B"],
        &["-au", "A", "B"],
        &["-a", "--backup=numbered", "A", "B"],
        &["-a", "--remove-destination", "A", "B"],
    ] {
        same_as_cp(setup, args);
    }
    // (Not `--backup=simple` onto the existing copy: cp 9.1 renames the backup of a file it
    // replaces by a symlink into the source directory, `A/l0~`, while saying `B/A/l0~`, the
    // bug 9.2 fixed for mv, "backs up d/f to f~"; stealcp keeps it where the message says.)
    for args in [&["-av", "A", "C"][..], &["-av", "A", "B"], &["-rv", "--backup=numbered", "A", "B"]] {
        gnu_harness::same_as_cp_with(setup, args, None, verbose);
    }
    for run in same_as_cp(setup, &["-a", "A", "C"]) {
        for i in 0..400 {
            let time =
                |p: &str| FileTime::from_last_modification_time(&fs::symlink_metadata(run.dir.path().join(p)).unwrap());
            assert_eq!(time(&format!("C/l{i}")), time(&format!("A/l{i}")), "l{i}: -a keeps a symlink's time");
        }
    }
}
