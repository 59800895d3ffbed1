//! GNU cp side by side (see `gnu_harness`): symlinks on the command line and in trees under
//! -P/-L/-H/-d/-a, FIFOs, devices and standard input read like files, contents read to the
//! end whatever their size said, and the options scripts use.
//!
//! coreutils tests/cp cases these follow: cp-HL, cp-deref, deref-slink, r-vs-symlink,
//! symlink-slash, link-deref, link-no-deref, link-symlink, proc-zero-len, proc-short-read,
//! sparse-to-pipe, src-base-dot, dir-slash, trailing-slash, keep-directory-symlink,
//! dir-rm-dest, backup-dir, cp-parents (the naming part), attr-existing.

mod gnu_harness;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use gnu_harness::{Compare, file, same_as_cp, same_as_cp_with, symlink};

/// A file, a directory with a file, symlinks to each, a dangling symlink, and a directory
/// holding symlinks (one to a file outside, one to a directory).
fn links(dir: &Path) {
    file(dir, "f", "file\n", 0o644);
    file(dir, "d/inner", "inner\n", 0o640);
    symlink(dir, "f", "sf");
    symlink(dir, "d", "sd");
    symlink(dir, "no-such", "dangle");
    file(dir, "tree/plain", "plain\n", 0o600);
    symlink(dir, "../f", "tree/to-file");
    symlink(dir, "../d", "tree/to-dir");
    symlink(dir, "tree", "stree");
    fs::create_dir(dir.join("out")).unwrap();
}

#[test]
fn symlinks_named_on_the_command_line_without_r() {
    for opt in [&[][..], &["-P"], &["-L"], &["-H"], &["-d"], &["--no-dereference"], &["--dereference"]] {
        for (src, dst) in [("sf", "copy"), ("dangle", "copy"), ("sf", "out")] {
            let mut args = opt.to_vec();
            args.extend([src, dst]);
            same_as_cp(links, &args);
        }
    }
}

#[test]
fn symlinks_with_r_and_with_a() {
    for opt in [&["-r"][..], &["-rP"], &["-rL"], &["-rH"], &["-a"], &["-aL"], &["-aH"], &["-rd"]] {
        for src in ["sd", "stree", "tree", "sf", "dangle"] {
            let mut args = opt.to_vec();
            args.extend([src, "copy"]);
            same_as_cp(links, &args);
        }
    }
    // coreutils symlink-slash: a trailing slash follows the link.
    same_as_cp(links, &["-dR", "sd/", "copy"]);
}

#[test]
fn a_l_keeps_hard_links_among_files_reached_through_symlinks() {
    let setup = |dir: &Path| {
        file(dir, "real/a", "a\n", 0o644);
        fs::hard_link(dir.join("real/a"), dir.join("real/b")).unwrap();
        symlink(dir, "../real/a", "src/la");
        symlink(dir, "../real/b", "src/lb");
    };
    same_as_cp(setup, &["-aL", "src", "copy"]);
    same_as_cp(setup, &["-rL", "src", "copy"]);
}

#[test]
fn fifos_devices_and_stdin_named_without_r_are_read_like_files() {
    let stdin = b"from standard input\n";
    let none = Compare::default();
    same_as_cp_with(|dir| file(dir, "x", "", 0o644), &["/dev/stdin", "copy"], Some(stdin), none);
    same_as_cp_with(|dir| file(dir, "x", "", 0o644), &["-", "copy"], Some(stdin), none);
    same_as_cp(|dir| file(dir, "x", "", 0o644), &["/dev/null", "copy"]);
    // A FIFO with a writer.
    for user in gnu_harness::users() {
        if user == gnu_harness::User::Nobody {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::write(fifo, "piped\n").unwrap())
        };
        let out = Command::new(env!("CARGO_BIN_EXE_stealcp")).arg(&fifo).arg(dir.path().join("copy")).output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success());
        assert_eq!(fs::read_to_string(dir.path().join("copy")).unwrap(), "piped\n");
        assert!(fs::symlink_metadata(dir.path().join("copy")).unwrap().is_file());
    }
}

#[test]
fn copy_contents_reads_devices_inside_a_tree() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: making a device node needs root");
        return;
    }
    let setup = |dir: &Path| {
        file(dir, "tree/a", "a\n", 0o644);
        let null = nix::sys::stat::makedev(1, 3);
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
        nix::sys::stat::mknod(&dir.join("tree/null"), nix::sys::stat::SFlag::S_IFCHR, mode, null).unwrap();
    };
    same_as_cp(setup, &["-r", "--copy-contents", "tree", "copy"]);
    same_as_cp(setup, &["-r", "tree", "copy"]);
}

#[test]
fn contents_are_read_to_the_end_not_to_the_size_stat_gave() {
    // coreutils proc-zero-len: /proc files say 0 bytes.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .arg("/proc/self/status")
        .arg(dir.path().join("status"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let copy = fs::read_to_string(dir.path().join("status")).unwrap();
    assert!(copy.starts_with("Name:") && copy.contains("\nPid:"), "{copy}");
    let cpuinfo = dir.path().join("cpuinfo");
    let out = Command::new(env!("CARGO_BIN_EXE_stealcp")).arg("/proc/cpuinfo").arg(&cpuinfo).output().unwrap();
    assert!(out.status.success());
    let (copied, real) = (fs::read_to_string(&cpuinfo).unwrap(), fs::read_to_string("/proc/cpuinfo").unwrap());
    assert_eq!(copied.lines().count(), real.lines().count());
    assert!(!copied.is_empty());
}

#[test]
fn a_file_that_grows_while_copied_is_copied_to_its_end() {
    // A FIFO-fed source is the deterministic form of growth: its size is 0 when opened.
    let dir = tempfile::tempdir().unwrap();
    let data: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let src = dir.path().join("growing");
    fs::write(&src, &data[..100]).unwrap();
    // The size the copier sees is 100; appending before it reads shows whether it stops there.
    let mut child = Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .arg("/dev/stdin")
        .arg(dir.path().join("copy"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut pipe, data.as_bytes()).unwrap();
    drop(pipe);
    assert!(child.wait().unwrap().success());
    assert_eq!(fs::read_to_string(dir.path().join("copy")).unwrap(), data);
}

#[test]
fn options_scripts_use() {
    let tree = |dir: &Path| {
        links(dir);
        file(dir, "g", "old g\n", 0o600);
        let mut sparse = fs::File::create(dir.join("sparse")).unwrap();
        sparse.set_len(1 << 20).unwrap();
        std::io::Write::write_all(&mut sparse, b"head").unwrap();
    };
    let cases: &[&[&str]] = &[
        &["-f", "f", "g"],
        &["-l", "f", "hard"],
        &["-l", "f", "g"],
        &["-lf", "f", "g"],
        &["-rl", "tree", "linked"],
        &["-s", "f", "soft"],
        &["-s", "f", "g"],
        &["-fs", "f", "g"],
        &["-s", "f", "out"],
        &["-T", "f", "g"],
        &["-rT", "d", "out"],
        &["-x", "-r", "tree", "copy"],
        &["--remove-destination", "f", "g"],
        &["--attributes-only", "f", "g"],
        &["--attributes-only", "f", "new"],
        &["--sparse=never", "sparse", "s1"],
        &["--sparse=always", "sparse", "s2"],
        &["--reflink=never", "f", "r1"],
        &["--reflink=auto", "f", "r2"],
        &["-r", "--strip-trailing-slashes", "d/", "stripped"],
        &["--recur", "d", "abbrev"],
        &["--parent", "d/inner", "out"],
        &["-p", "--parents", "d/inner", "out"],
        &["--no-preserve=mode", "-a", "d", "nomode"],
        &["--preserve=links,mode", "-r", "tree", "pl"],
        &["-n", "f", "g"],
        &["-u", "f", "g"],
        &["-rf", "d", "out"],
        &["-a", "--no-preserve=links", "tree", "np"],
        &["-a", "--no-preserve=all", "tree", "np2"],
        &["-r", "--no-preserve=mode", "d", "np3"],
        &["--no-preserve=mode", "f", "np4"],
        &["--no-preserve=mode", "f", "g"],
    ];
    for args in cases {
        same_as_cp(tree, args);
    }
}

#[test]
fn keep_directory_symlink() {
    let setup = |dir: &Path| {
        file(dir, "src/sub/x", "x\n", 0o644);
        fs::create_dir_all(dir.join("elsewhere")).unwrap();
        symlink(dir, "../elsewhere", "dst/sub");
    };
    same_as_cp(setup, &["-rT", "src", "dst"]);
    // cp 9.1 has no --keep-directory-symlink (later versions do): the copy goes through.
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .args(["-rT", "--keep-directory-symlink", "src", "dst"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read_to_string(dir.path().join("elsewhere/x")).unwrap(), "x\n");
    assert!(fs::symlink_metadata(dir.path().join("dst/sub")).unwrap().is_symlink());
}

#[test]
fn parents_with_p_sets_the_modes_of_the_directories_on_the_way() {
    let setup = |dir: &Path| {
        file(dir, "a/b/f", "f\n", 0o644);
        fs::set_permissions(dir.join("a"), std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
        fs::set_permissions(dir.join("a/b"), std::os::unix::fs::PermissionsExt::from_mode(0o705)).unwrap();
        fs::create_dir_all(dir.join("out/a")).unwrap();
    };
    same_as_cp(setup, &["-p", "--parents", "a/b/f", "out"]);
    same_as_cp(setup, &["--parents", "a/b/f", "out"]);
}

#[test]
fn the_readme_main_job_command_works_twice() {
    // The README's command copies a tree into a fresh destination; run again it copies into
    // the copy (as cp -a does), and with -T it refreshes the same tree.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    file(&src, "lib.rs", "fn main() {}\n", 0o644);
    file(&src, "a/b.rs", "// b\n", 0o644);
    let dst = dir.path().join("copy");
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_stealcp"))
            .args(["-a", "-T", "--progress", "--verify"])
            .arg(&src)
            .arg(&dst)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let diff = Command::new("diff").arg("-r").arg(&src).arg(&dst).status().unwrap();
        assert!(diff.success());
    }
    assert_eq!(fs::metadata(dst.join("lib.rs")).unwrap().nlink(), 1);
}

#[test]
fn standard_input_is_the_callers_also_with_worker_processes() {
    for backend in ["thread", "process"] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stealcp"))
            .args(["--backend", backend, "/dev/stdin"])
            .arg(dir.path().join("copy"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"mine\n").unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(fs::read_to_string(dir.path().join("copy")).unwrap(), "mine\n", "{backend}");
    }
}

/// A tmpfs mounted for one test and always unmounted.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn one_file_system_copies_mount_points_empty() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mounts = std::cell::RefCell::new(Vec::new());
    let setup = |dir: &Path| {
        file(dir, "tree/a", "a\n", 0o644);
        fs::create_dir(dir.join("tree/mnt")).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(dir.join("tree/mnt")).status();
        assert!(ok.is_ok_and(|s| s.success()), "mount a tmpfs");
        mounts.borrow_mut().push(Mount(dir.join("tree/mnt")));
        file(dir, "tree/mnt/inside", "other fs\n", 0o644);
    };
    same_as_cp(setup, &["-rx", "tree", "copy"]);
    same_as_cp(setup, &["-ax", "tree", "copy"]);
    same_as_cp(setup, &["-r", "tree", "copy"]);
    drop(mounts);
}

#[test]
fn attributes_only_onto_existing_files() {
    // coreutils attr-existing.
    let setup = |dir: &Path| {
        file(dir, "file1", "1", 0o640);
        file(dir, "file2", "2", 0o644);
        fs::hard_link(dir.join("file2"), dir.join("link2")).unwrap();
        symlink(dir, "file1", "sym1");
    };
    same_as_cp(setup, &["--attributes-only", "file1", "file2"]);
    same_as_cp(setup, &["-a", "--attributes-only", "file1", "file2"]);
    same_as_cp(setup, &["-a", "--attributes-only", "sym1", "file2"]);
    same_as_cp(setup, &["-a", "--remove-destination", "--attributes-only", "sym1", "file2"]);
}

#[test]
fn verbose_lists_directories_only_when_it_makes_them() {
    // coreutils src-base-dot: nothing to list when copying a directory's contents into itself.
    let setup = |dir: &Path| {
        fs::create_dir_all(dir.join("x")).unwrap();
        file(dir, "tree/sub/a", "a\n", 0o644);
        fs::create_dir_all(dir.join("d/tree")).unwrap();
    };
    let stdout = Compare { stdout: true, ..Compare::default() };
    same_as_cp_with(setup, &["-v", "-ab", "x/.", "."], None, stdout);
    same_as_cp_with(setup, &["-rv", "tree", "d"], None, stdout);
}

#[test]
fn cp_hl_and_no_dereference_cases() {
    // coreutils cp-HL, deref-slink, link-no-deref.
    let setup = |dir: &Path| {
        fs::create_dir_all(dir.join("src-dir")).unwrap();
        fs::create_dir_all(dir.join("dest-dir")).unwrap();
        file(dir, "f", "f\n", 0o644);
        symlink(dir, "f", "slink");
        symlink(dir, "no-such-file", "src-dir/slink");
        file(dir, "g", "", 0o644);
        file(dir, "slink-target", "", 0o644);
        symlink(dir, "slink-target", "slink2");
        symlink(dir, "no-such-file", "dangling-slink");
    };
    same_as_cp(setup, &["-H", "-R", "slink", "src-dir", "dest-dir"]);
    same_as_cp(setup, &["-d", "g", "slink2"]);
    same_as_cp(setup, &["--link", "--no-dereference", "dangling-slink", "d2"]);
}
