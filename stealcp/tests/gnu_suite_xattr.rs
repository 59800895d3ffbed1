//! coreutils tests/cp, side by side with GNU cp: extended attributes copied onto a file system
//! that has none (a ramfs mounted for the test, as root): `-a` and `--preserve=all` copy the
//! file and say nothing, an explicit `--preserve=xattr` fails with cp's message and leaves the
//! copy (a file, or a tree) in place, as cp does.
//!
//! Case (coreutils name): cp-mv-enotsup-xattr (cp's half). It skips, saying why, when not
//! root, when ramfs cannot be mounted, or when /dev/shm takes no user xattrs. The mount is
//! undone and its directory removed when the test ends, also when it fails.

mod gnu_harness;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use gnu_harness::{User, configurations, first_words, gnu_cp, run_prepared, snapshot};

/// A ramfs mounted at a directory: unmounted on drop (before the directory is removed).
struct Ramfs(PathBuf);

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn cp_mv_enotsup_xattr_onto_a_file_system_without_xattrs() {
    onto_ramfs(false);
}

#[test]
fn cp_mv_enotsup_xattr_message_word_for_word() {
    onto_ramfs(true);
}

/// The case, comparing each message's first words, or (`whole`) each line as a whole.
fn onto_ramfs(whole: bool) {
    let Some(cp) = gnu_cp() else {
        eprintln!("skipped: /usr/bin/cp is not GNU cp");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cp-mv-enotsup-xattr skipped: not root (it mounts a ramfs)");
        return;
    }
    let source_dir = tempfile::TempDir::new_in("/dev/shm").unwrap();
    let source = source_dir.path().join("a");
    fs::write(&source, "test\n").unwrap();
    if xattr::set(&source, "user.foo", b"bar").is_err() {
        eprintln!("cp-mv-enotsup-xattr skipped: /dev/shm takes no user xattrs");
        return;
    }
    let top = tempfile::TempDir::new().unwrap();
    let mount_point = top.path().join("noxattr");
    fs::create_dir(&mount_point).unwrap();
    let mounted = Command::new("mount").args(["-t", "ramfs", "ramfs"]).arg(&mount_point).output();
    if !mounted.is_ok_and(|o| o.status.success()) {
        eprintln!("cp-mv-enotsup-xattr skipped: ramfs cannot be mounted here");
        return;
    }
    let _mount = Ramfs(mount_point.clone());
    let probe = mount_point.join("probe");
    fs::write(&probe, "").unwrap();
    if xattr::set(&probe, "user.foo", b"bar").is_ok() {
        eprintln!("cp-mv-enotsup-xattr skipped: this ramfs takes user xattrs");
        return;
    }
    // A tree too: the failure inside it leaves the tree published, as cp leaves what it copied.
    fs::create_dir(source_dir.path().join("d")).unwrap();
    fs::write(source_dir.path().join("d/f"), "in a tree\n").unwrap();
    xattr::set(source_dir.path().join("d/f"), "user.foo", b"bar").unwrap();
    let tree = source_dir.path().join("d");
    let (source, tree) = (source.to_str().unwrap(), tree.to_str().unwrap());
    let mut run = 0;
    let mut in_fresh_dir = |program: &str, extra: &[&str], args: &[&str]| {
        run += 1;
        let dir = mount_point.join(run.to_string());
        fs::create_dir_all(dir.join("dst")).unwrap();
        let out = run_prepared(&dir, &[], program, extra, args);
        let copy = fs::read(dir.join("dst/a")).ok();
        (out, (copy, snapshot(&dir.join("dst"), false)))
    };
    for args in
        [&["-a", source, "dst/"][..], &["--preserve=all", source, "dst/"], &["-a", "--preserve=xattr", source, "dst/"]]
            .into_iter()
            .chain([&["-a", "--preserve=xattr", tree, "dst/"][..], &["-a", tree, "dst/"]])
    {
        let ((status, stderr), copy) = in_fresh_dir(cp, &[], args);
        for (_, extra) in configurations().into_iter().filter(|(user, _)| *user == User::Me) {
            let ((our_status, our_stderr), our_copy) = in_fresh_dir(env!("CARGO_BIN_EXE_stealcp"), extra, args);
            let context = format!("{extra:?} {args:?}\ncp: {status:?} {stderr}\nstealcp: {our_status:?} {our_stderr}");
            assert_eq!(our_status, status, "status: {context}");
            assert_eq!(first_words(&our_stderr, "stealcp"), first_words(&stderr, cp), "messages: {context}");
            if whole {
                assert_eq!(our_stderr.replace("stealcp", "PROGRAM"), stderr.replace(cp, "PROGRAM"), "{context}");
            }
            assert_eq!(our_copy, copy, "the copy: {context}");
            if status == Some(0) && args.contains(&source) {
                assert_eq!(our_copy.0.as_deref(), Some(&b"test\n"[..]), "the copy is whole: {context}");
            }
        }
    }
}
