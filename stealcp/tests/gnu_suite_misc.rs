//! coreutils tests/cp, side by side with GNU cp (see `gnu_harness`): backups under every
//! version control, `-i` with `-n`, `-f`, `-v` and `-u`, `--reflink` across file systems,
//! ACLs and file capabilities, and sparse or fragmented files (a 1 TiB hole, many extents,
//! preallocated unwritten extents).
//!
//! Cases (coreutils names): cp-mv-backup (cp's half), cp-i, reflink-auto, acl, capability,
//! sparse-perf (without --debug), sparse-2 (without --debug), sparse-extents-2 (a reduced
//! grid), sparse-extents, copy-FMR (without valgrind). They never touch anything outside their temporary directories (the
//! cross-device sources are made in one under /dev/shm, removed at the end).

mod gnu_harness;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gnu_harness::{Compare, Run, User, both_runs, configurations, file, same_as_cp, same_as_cp_with};

#[test]
fn cp_mv_backup_every_control_with_every_set_of_earlier_backups() {
    let initial: &[&[&str]] =
        &[&["x"], &["x", "y"], &["x", "y", "y~"], &["x", "y", "y.~1~"], &["x", "y", "y~", "y.~1~"]];
    for names in initial {
        let setup = |dir: &Path| {
            for name in *names {
                file(dir, name, "", 0o644);
            }
        };
        for control in ["none", "off", "numbered", "t", "existing", "nil", "simple", "never"] {
            let opt = format!("--backup={control}");
            same_as_cp(setup, &[&opt, "x", "y"]);
        }
    }
}

#[test]
fn cp_i_with_n_f_v_and_u() {
    let tree = |dir: &Path| {
        file(dir, "a/c", "", 0o644);
        fs::create_dir_all(dir.join("b/a/c")).unwrap();
        file(dir, "c", "c\n", 0o644);
        file(dir, "d", "d\n", 0o644);
        file(dir, "old", "old\n", 0o644);
        filetime::set_file_mtime(dir.join("old"), filetime::FileTime::from_unix_time(1_000_000_000, 0)).unwrap();
        file(dir, "new", "new\n", 0o644);
    };
    let with_stdout = Compare { stdout: true, ..Compare::default() };
    let cases: &[(&[&str], &[u8])] = &[
        (&["-vi", "c", "d"], b"n\n"),
        (&["-vi", "c", "d"], b"y\n"),
        (&["-vni", "c", "d"], b"y\n"),
        (&["-vin", "c", "d"], b"y\n"),
        (&["-in", "c", "d"], b"y\n"),
        (&["-vfi", "c", "d"], b"y\n"),
        (&["-vfn", "c", "d"], b"n\n"),
        (&["-vnf", "c", "d"], b"n\n"),
        (&["-vi", "-u", "new", "old"], b"n\n"),
        (&["-vi", "-u", "old", "new"], b"y\n"),
    ];
    for (args, input) in cases {
        same_as_cp_with(tree, args, Some(input), with_stdout);
    }
    // --backup with --no-clobber is a usage error (clap words it otherwise).
    same_as_cp_with(tree, &["-bn", "c", "d"], None, Compare { skip_messages: true, ..Compare::default() });
}

#[test]
fn cp_i_asks_before_refusing_a_file_over_a_directory() {
    let tree = |dir: &Path| {
        file(dir, "a/c", "", 0o644);
        fs::create_dir_all(dir.join("b/a/c")).unwrap();
    };
    let with_stdout = Compare { stdout: true, ..Compare::default() };
    for input in [b"n\n", b"y\n"] {
        same_as_cp_with(tree, &["-iR", "a", "b"], Some(input), with_stdout);
        same_as_cp_with(tree, &["-i", "a/c", "b/a"], Some(input), with_stdout);
    }
}

/// A directory under /dev/shm that every user may read, removed on drop; `None` (the reason
/// printed) where /dev/shm is missing or the test directories are on its file system.
fn other_file_system() -> Option<tempfile::TempDir> {
    let here = tempfile::TempDir::new().unwrap();
    let (Ok(shm), Ok(ours)) = (fs::metadata("/dev/shm"), fs::metadata(here.path())) else {
        eprintln!("skipped: no /dev/shm");
        return None;
    };
    if shm.dev() == ours.dev() {
        eprintln!("skipped: the test directories are on the file system of /dev/shm");
        return None;
    }
    let other = tempfile::TempDir::new_in("/dev/shm").unwrap();
    fs::set_permissions(other.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    Some(other)
}

#[test]
fn reflink_auto_falls_back_to_a_copy_across_file_systems() {
    let Some(other) = other_file_system() else { return };
    file(other.path(), "a", "non_zero_size\n", 0o644);
    let a = other.path().join("a");
    let a = a.to_str().unwrap();
    let none = |_: &Path| {};
    let existing = |dir: &Path| file(dir, "b", "old\n", 0o644);
    for setup in [&none as &dyn Fn(&Path), &existing] {
        same_as_cp(setup, &["--reflink=auto", a, "b"]);
        same_as_cp(setup, &["--reflink=auto", "--sparse=always", a, "b"]);
    }
}

#[test]
fn reflink_auto_then_never_the_last_one_counts() {
    let setup = |dir: &Path| file(dir, "a", "non_zero_size\n", 0o644);
    same_as_cp(setup, &["--reflink=auto", "--reflink=never", "a", "b"]);
    same_as_cp(setup, &["-rr", "-u", "-u", "--sparse=always", "--sparse=never", "a", "c"]);
}

#[test]
fn reflink_always_fails_across_file_systems_as_cp_fails() {
    let Some(other) = other_file_system() else { return };
    file(other.path(), "a", "non_zero_size\n", 0o644);
    let a = other.path().join("a");
    let a = a.to_str().unwrap();
    for args in [&["--reflink", a, "b"], &["--reflink=always", a, "b"]] {
        for (user, extra) in configurations() {
            let Some((by_cp, by_us)) = both_runs(&|_: &Path| {}, args, None, user, extra) else { return };
            let context = format!("{args:?} {extra:?} as {user:?}\ncp: {}\nstealcp: {}", by_cp.stderr, by_us.stderr);
            assert_eq!(by_us.status, by_cp.status, "{context}");
            assert_eq!(by_us.stderr, by_cp.stderr.replace("/usr/bin/cp", "stealcp"), "{context}");
            // cp 9.1 leaves an empty `b` (9.2 and later remove it); stealcp leaves nothing.
            assert!(!by_us.dir.path().join("b").exists(), "{context}");
        }
    }
}

/// `getfacl` of every regular file of a run, by name (the file's own name).
fn acls(run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    for entry in walk(run.dir.path()) {
        let text = Command::new("getfacl").arg("-cp").arg(&entry).output().unwrap();
        out.push(format!(
            "{}: {}",
            entry.strip_prefix(run.dir.path()).unwrap().display(),
            String::from_utf8_lossy(&text.stdout)
        ));
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = gnu_harness::snapshot(dir, false).into_keys().map(|rel| dir.join(rel)).collect();
    out.sort();
    out
}

#[test]
fn acl_kept_by_p_and_attributes_only_not_without_p() {
    let probe = tempfile::TempDir::new().unwrap();
    file(probe.path(), "f", "", 0o644);
    let works = Command::new("setfacl")
        .args(["-m", "user:bin:rw-"])
        .arg(probe.path().join("f"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        eprintln!("acl skipped: no setfacl, or the test directory's file system has no ACLs");
        return;
    }
    let setup = |dir: &Path| {
        file(dir, "a/file", "data\n", 0o644);
        fs::create_dir(dir.join("b")).unwrap();
        let set = Command::new("setfacl").args(["-m", "user:bin:rw-"]).arg(dir.join("a/file")).status().unwrap();
        assert!(set.success());
    };
    for args in [&["a/file", "b/"][..], &["-p", "a/file", "b/"], &["-p", "--attributes-only", "a/file", "b/"]] {
        for (user, extra) in configurations() {
            let Some((by_cp, by_us)) = both_runs(&setup, args, None, user, extra) else { return };
            assert_eq!(by_us.status, by_cp.status, "{args:?} {user:?} {extra:?}: {}", by_us.stderr);
            assert_eq!(acls(&by_us), acls(&by_cp), "{args:?} as {user:?} {extra:?}: ACLs");
            assert_eq!(gnu_harness::snapshot(by_us.dir.path(), false), gnu_harness::snapshot(by_cp.dir.path(), false));
        }
    }
}

/// The modes and ACLs `-a` gives files with ACLs (a mask as wide as the group bits, one
/// narrower, set-id bits) and files without, into a new tree and into a directory with a
/// default ACL, under umasks that take no bits, some, and all of group and other: as cp's.
#[test]
fn acl_and_mode_of_each_copy_as_cp_under_any_umask() {
    let Some(cp) = gnu_harness::gnu_cp() else {
        eprintln!("acl modes skipped: no GNU cp");
        return;
    };
    let probe = tempfile::TempDir::new().unwrap();
    file(probe.path(), "f", "", 0o644);
    let acl = |args: &[&str], path: &Path| Command::new("setfacl").args(args).arg(path).output().unwrap();
    if !Command::new("setfacl")
        .arg("-m")
        .arg("user:bin:r")
        .arg(probe.path().join("f"))
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("acl modes skipped: no setfacl, or the test directory's file system has no ACLs");
        return;
    }
    let setup = |dir: &Path| {
        fs::create_dir(dir.join("into")).unwrap();
        assert!(acl(&["-d", "-m", "user:bin:rwx,group::r-x"], &dir.join("into")).status.success());
        for mode in [0o644, 0o640, 0o600, 0o664, 0o755, 0o711, 0o2750, 0o4755] {
            for (name, set) in [("wide", Some("user:bin:rwx")), ("narrow", Some("user:bin:r,mask::r")), ("plain", None)]
            {
                let path = dir.join(format!("s/{name}-{mode:o}"));
                file(dir, &format!("s/{name}-{mode:o}"), "x", mode);
                if let Some(set) = set {
                    assert!(acl(&["-m", set], &path).status.success());
                    // setfacl may widen the group bits to the mask: the mode as wanted again.
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
                }
            }
        }
    };
    let listing = |dir: &Path| {
        let mut out = Vec::new();
        for entry in walk(dir) {
            let text = Command::new("getfacl").arg("-cp").arg(&entry).output().unwrap();
            let mode = fs::symlink_metadata(&entry).unwrap().mode() & 0o7777;
            let rel = entry.strip_prefix(dir).unwrap().display().to_string();
            out.push(format!("{rel} {mode:o}: {}", String::from_utf8_lossy(&text.stdout)));
        }
        out
    };
    for umask in ["022", "027", "077", "000"] {
        let script = format!("umask {umask} && exec \"$0\" \"$@\"");
        let wrap = ["sh", "-c", script.as_str()];
        let run = |program: &str| {
            let dir = tempfile::TempDir::new().unwrap();
            setup(dir.path());
            for args in [&["-a", "s", "new"][..], &["-a", "s", "into/s"]] {
                let (status, stderr) = gnu_harness::run_prepared(dir.path(), &wrap, program, &[], args);
                assert_eq!(status, Some(0), "{program} {args:?} under umask {umask}: {stderr}");
            }
            dir
        };
        let (by_cp, by_us) = (run(cp), run(env!("CARGO_BIN_EXE_stealcp")));
        assert_eq!(listing(by_us.path()), listing(by_cp.path()), "umask {umask}: modes and ACLs");
    }
}

#[test]
fn capability_kept_by_preserve_xattr_and_all_on_a_file_of_another_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("capability skipped: not root");
        return;
    }
    // security.capability, revision 2: cap_net_bind_service (bit 10) permitted and effective.
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    let setup = |dir: &Path| {
        file(dir, "file", "", 0o644);
        std::os::unix::fs::lchown(dir.join("file"), Some(65534), Some(65534)).unwrap();
        xattr::set(dir.join("file"), "security.capability", &cap).unwrap();
    };
    let probe = tempfile::TempDir::new().unwrap();
    if std::panic::catch_unwind(|| setup(probe.path())).is_err() {
        eprintln!("capability skipped: the file system takes no security.capability");
        return;
    }
    for (args, copy) in
        [(&["--preserve=xattr", "file", "copy1"], "copy1"), (&["--preserve=all", "file", "copy2"], "copy2")]
    {
        for (_, extra) in configurations().into_iter().filter(|(user, _)| *user == User::Me) {
            let Some((by_cp, by_us)) = both_runs(&setup, args, None, User::Me, extra) else { return };
            assert_eq!(
                (by_us.status, by_us.stderr.as_str()),
                (by_cp.status, by_cp.stderr.as_str()),
                "{args:?} {extra:?}"
            );
            let kept = |run: &Run| xattr::get(run.dir.path().join(copy), "security.capability").unwrap();
            assert_eq!(kept(&by_cp).as_deref(), Some(&cap[..]), "cp keeps the capability");
            assert_eq!(kept(&by_us), kept(&by_cp), "{args:?} {extra:?}: the capability of {copy}");
        }
    }
}

/// Runs stealcp in `dir` (configuration `extra`), killed if it takes longer than `limit`:
/// (status, whether it finished in time).
fn stealcp_within(dir: &Path, extra: &[&str], args: &[&str], limit: Duration) -> (Option<i32>, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .args(extra)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), true);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sparse_perf_a_one_tebibyte_hole_is_copied_by_seeking_not_reading() {
    let dir = tempfile::TempDir::new().unwrap();
    let f = fs::File::create(dir.path().join("f")).unwrap();
    if f.set_len(1 << 40).is_err() {
        eprintln!("sparse-perf skipped: the file system takes no 1 TiB sparse file");
        return;
    }
    for (_, extra) in configurations().into_iter().filter(|(user, _)| *user == User::Me) {
        let _ = fs::remove_file(dir.path().join("f2"));
        // Not a speed check: a bound on a hang. Reading 1 TiB of zeros takes several minutes
        // at memory speed; seeking past it takes milliseconds, even on a loaded debug build.
        let (status, in_time) =
            stealcp_within(dir.path(), extra, &["--reflink=never", "f", "f2"], Duration::from_secs(60));
        assert!(in_time, "{extra:?}: 1 TiB of hole took over a minute: read, not skipped");
        assert_eq!(status, Some(0), "{extra:?}");
        let copy = fs::metadata(dir.path().join("f2")).unwrap();
        assert_eq!(copy.len(), 1 << 40, "{extra:?}: the size");
        assert!(copy.blocks() < 1024, "{extra:?}: the copy is sparse ({} blocks)", copy.blocks());
    }
    // From another file system (no reflink possible), a hole after one byte.
    let Some(other) = other_file_system() else { return };
    let k = other.path().join("k");
    let mut sparse = fs::File::create(&k).unwrap();
    sparse.write_all(b"x").unwrap();
    sparse.set_len(1 << 20).unwrap();
    same_as_cp(|_: &Path| {}, &[k.to_str().unwrap(), "k2"]);
}

/// `segments` times: a hole of `n` bytes, then `n` bytes of one value (as the coreutils case
/// writes them), at `path`.
fn holes_and_data(path: &Path, n: usize, segments: usize) {
    let mut f = fs::File::create(path).unwrap();
    for s in 1..=segments {
        f.seek(SeekFrom::Current(n as i64)).unwrap();
        f.write_all(&vec![s as u8; n]).unwrap();
    }
}

#[test]
fn sparse_extents_2_many_extents_copied_with_sparse_always() {
    for i in [1, 11, 21] {
        for j in [1, 2, 31, 100] {
            let setup = move |dir: &Path| holes_and_data(&dir.join("j1"), i * 1024, j);
            same_as_cp(setup, &["--reflink=never", "--sparse=always", "j1", "j2"]);
        }
    }
}

#[test]
fn sparse_2_a_hole_at_the_end_and_a_file_of_zeros() {
    // One byte, then a hole to 128 KiB (and with one more byte after it); then one byte and
    // 255 KiB of written zeros. (Its --debug lines are not compared: see gnu_debug.)
    for append in [false, true] {
        let setup = move |dir: &Path| {
            let mut k = fs::File::create(dir.join("k")).unwrap();
            k.write_all(b"x").unwrap();
            k.set_len(128 << 10).unwrap();
            if append {
                k.seek(SeekFrom::End(0)).unwrap();
                k.write_all(b"y").unwrap();
            }
        };
        for sparse in ["--sparse=always", "--sparse=never"] {
            same_as_cp(setup, &["--reflink=never", sparse, "k", "k2"]);
        }
    }
    let zeros = |dir: &Path| {
        let mut k = fs::File::create(dir.join("k")).unwrap();
        k.write_all(b"x").unwrap();
        k.write_all(&[0; 255 << 10]).unwrap();
    };
    for run in same_as_cp(zeros, &["--reflink=never", "--sparse=always", "k", "k2"]) {
        let (k, k2) =
            (fs::metadata(run.dir.path().join("k")).unwrap(), fs::metadata(run.dir.path().join("k2")).unwrap());
        assert!(
            k2.blocks() < k.blocks(),
            "--sparse=always makes holes of the zeros ({} < {} blocks)",
            k2.blocks(),
            k.blocks()
        );
    }
    same_as_cp(zeros, &["--sparse=never", "k", "k2"]);
}

#[test]
fn copy_fmr_six_hundred_small_extents() {
    // 600 times: a 4 KiB hole, then 1 KiB of 'a'.
    let setup = |dir: &Path| {
        let mut f = fs::File::create(dir.join("j")).unwrap();
        for _ in 0..600 {
            f.seek(SeekFrom::Current(4096)).unwrap();
            f.write_all(&[b'a'; 1024]).unwrap();
        }
    };
    same_as_cp(setup, &["--reflink=never", "j", "j2"]);
}

#[test]
fn sparse_extents_unwritten_preallocated_extents_with_data() {
    let probe = tempfile::TempDir::new().unwrap();
    fs::File::create(probe.path().join("p")).unwrap();
    let fallocate = |path: &Path, len: i64, offset: i64| {
        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
        nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE, offset, len)
    };
    if fallocate(&probe.path().join("p"), 1, 1).is_err() {
        eprintln!("sparse-extents skipped: the file system has no fallocate");
        return;
    }
    let data: Vec<u8> = (0..5120u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for sparse in ["always", "auto", "never"] {
        for (len, offset) in [(4 << 20, 0), (1 << 20, 4 << 20), (1, 0)] {
            let setup = |dir: &Path| {
                let path = dir.join("unwritten.withdata");
                fs::write(&path, &data).unwrap();
                fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(2 << 20).unwrap();
                fallocate(&path, len, offset).unwrap();
            };
            let opt = format!("--sparse={sparse}");
            same_as_cp(setup, &["--reflink=never", &opt, "unwritten.withdata", "cp.test"]);
        }
    }
}

/// A bare `-b`/`--backup` after `--backup=numbered` keeps the control named, as in cp.
#[test]
fn a_bare_backup_after_a_named_control_keeps_it() {
    let setup = |dir: &Path| {
        file(dir, "f", "new\n", 0o644);
        file(dir, "g", "old\n", 0o644);
    };
    for args in [
        &["--backup=numbered", "-b", "f", "g"][..],
        &["--backup=numbered", "--backup", "f", "g"],
        &["-b", "--backup=numbered", "f", "g"],
    ] {
        for run in same_as_cp(setup, args) {
            assert!(run.dir.path().join("g.~1~").exists(), "{args:?}: a numbered backup");
        }
    }
}

/// A file over a directory: `-n` keeps the directory silently, as does `-u` when the directory
/// is newer (also with `-i`, which then asks nothing); cp's status 0, no message.
#[test]
fn a_file_over_a_directory_is_kept_silently_by_n_and_u() {
    let setup = |dir: &Path| {
        file(dir, "f", "f\n", 0o644);
        filetime::set_file_mtime(dir.join("f"), filetime::FileTime::from_unix_time(946_684_800, 0)).unwrap();
        fs::create_dir_all(dir.join("t/f")).unwrap();
        fs::create_dir(dir.join("d")).unwrap();
        file(dir, "s/f", "f\n", 0o644);
        filetime::set_file_mtime(dir.join("s/f"), filetime::FileTime::from_unix_time(946_684_800, 0)).unwrap();
        fs::create_dir_all(dir.join("o/s/f")).unwrap();
    };
    for args in [
        &["-n", "f", "t"][..],
        &["-n", "-T", "f", "d"],
        &["-u", "f", "t"],
        &["-u", "-T", "f", "d"],
        &["-rn", "s", "o"],
        &["-ru", "s", "o"],
        &["-in", "f", "t"],
        &["-iu", "f", "t"],
    ] {
        for run in same_as_cp_with(setup, args, Some(b"y\n"), Compare { stdout: true, ..Compare::default() }) {
            assert_eq!(run.status, Some(0), "{args:?}: {}", run.stderr);
            assert!(run.dir.path().join("t/f").is_dir(), "{args:?}");
        }
    }
}
