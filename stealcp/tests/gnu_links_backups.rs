//! GNU cp 9.1 side by side (see `gnu_harness`) on two corners of `-l` and `--backup`: a hard
//! link that cannot be made is reported naming both ends (`cannot create hard link 'D' to 'S':
//! ...`), and `cp -fb f f` backs `f` up by copying it (`f~` appears, `f` is untouched) where
//! `-b f f` without `-f` is the same-file error. As root, as uid 65534 and with worker
//! processes.

mod gnu_harness;

use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gnu_harness::{
    both_runs, configurations, file, messages, same_as_cp, same_listing_as_cp, snapshot, snapshot_but, symlink,
};

/// A source file, a tree, a read-only directory, and `shm`: a symlink to a new directory (open
/// to all) on another file system (tmpfs, `shm_dirs`) than the test's, where a hard link to `s`
/// cannot go.
fn link_tree(dir: &Path, shm_dirs: &RefCell<Vec<tempfile::TempDir>>) {
    file(dir, "s", "source\n", 0o644);
    file(dir, "t/a/f", "in a tree\n", 0o644);
    fs::create_dir(dir.join("ro")).unwrap();
    fs::set_permissions(dir.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let shm = tempfile::TempDir::new_in("/dev/shm").unwrap();
    fs::set_permissions(shm.path(), fs::Permissions::from_mode(0o777)).unwrap();
    symlink(dir, shm.path().to_str().unwrap(), "shm");
    shm_dirs.borrow_mut().push(shm);
}

/// The whole of every message is cp's (the harness compares only the first words, and these
/// differ after them).
#[test]
fn a_hard_link_that_cannot_be_made_names_its_target_as_cp() {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev());
    if dev(Path::new("/dev/shm")).ok().is_none_or(|shm| dev(&std::env::temp_dir()).ok() == Some(shm)) {
        return eprintln!("skipped: no /dev/shm on a file system of its own to link across");
    }
    // Each run's own directory on tmpfs, removed at the end.
    let shm_dirs = RefCell::new(Vec::new());
    let setup = |dir: &Path| link_tree(dir, &shm_dirs);
    // Across devices (EXDEV, also for uid 65534: checked before permissions), a file and a
    // tree; into a read-only directory (root may, uid 65534 may not).
    let cases: [&[&str]; 3] = [&["-l", "s", "shm/x"], &["-rl", "t", "shm/t"], &["-l", "s", "ro/x"]];
    for args in cases {
        for (user, extra) in configurations() {
            let Some((by_cp, by_us)) = both_runs(&setup, args, None, user, extra) else {
                return eprintln!("skipped: /usr/bin/cp is not GNU cp");
            };
            let context = format!("{extra:?} {args:?} as {user:?}\ncp:\n{}\nstealcp:\n{}", by_cp.stderr, by_us.stderr);
            assert_eq!(by_us.status, by_cp.status, "{context}");
            assert_eq!(messages(&by_us.stderr, "stealcp"), messages(&by_cp.stderr, "/usr/bin/cp"), "{context}");
            assert_eq!(snapshot_but(by_us.dir.path(), "shm"), snapshot_but(by_cp.dir.path(), "shm"), "{context}");
            let [.., cp_shm, our_shm] = &shm_dirs.borrow()[..] else { unreachable!("two runs, two directories") };
            assert_eq!(snapshot(our_shm.path(), false), snapshot(cp_shm.path(), false), "on tmpfs: {context}");
        }
    }
}

/// `s`, another name `h` of it, a symlink `l` to it, a FIFO `p`, and an older backup `s~`.
fn same_tree(dir: &Path) {
    file(dir, "s", "source\n", 0o600);
    fs::hard_link(dir.join("s"), dir.join("h")).unwrap();
    symlink(dir, "s", "l");
    nix::unistd::mkfifo(&dir.join("p"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

fn same_tree_with_backup(dir: &Path) {
    same_tree(dir);
    file(dir, "s~", "an older backup, written into\n", 0o644);
}

#[test]
fn force_and_backup_onto_the_same_name_copies_to_the_backup_as_cp() {
    for setup in [same_tree as fn(&Path), same_tree_with_backup] {
        for args in [
            &["-fb", "s", "s"][..],
            &["-fbT", "s", "s"],
            &["-f", "--backup=numbered", "s", "s"],
            &["-fb", "--backup=numbered", "s", "s"],
            &["-fbp", "s", "s"],
            &["-fbS", ".old", "s", "s"],
            &["-fb", "--remove-destination", "s", "s"],
            // Through a symlink named twice: the file it leads to is backed up, as cp.
            &["-fb", "l", "l"],
            // Not the same name: the same-file error, as without -f.
            &["-fb", "./s", "s"],
            &["-fb", "s", "./s"],
            // Not a regular file.
            &["-fb", "p", "p"],
            // -l and -s make the backup a link.
            &["-fbl", "s", "s"],
            &["-fbs", "s", "s"],
            // -u: the backup is newer, left alone.
            &["-fbu", "s", "s"],
        ] {
            same_as_cp(setup, args);
        }
        // -v lists the copy to the backup.
        same_listing_as_cp(setup, &["-fbv", "s", "s"], None);
        same_listing_as_cp(setup, &["-fv", "--backup=t", "s", "s"], None);
    }
}

#[test]
fn backup_onto_the_same_file_without_force_is_refused_and_another_name_is_backed_up() {
    for args in [
        &["-b", "s", "s"][..],
        &["--backup=numbered", "s", "s"],
        &["-b", "l", "s"],
        // Another name of s: it is moved to its backup name and s copied, with -f or not.
        &["-b", "s", "h"],
        &["-fb", "s", "h"],
        &["-f", "--backup=numbered", "s", "h"],
        &["-b", "--backup=numbered", "-f", "s", "h"],
    ] {
        same_as_cp(same_tree_with_backup, args);
    }
    same_listing_as_cp(same_tree, &["-fbv", "s", "h"], None);
}

/// `t`: a file, a symlink to it, a dangling symlink, a FIFO and a subdirectory with a symlink.
fn tree_with_symlinks(dir: &Path) {
    file(dir, "t/f", "linked\n", 0o644);
    symlink(dir, "f", "t/l");
    symlink(dir, "nowhere", "t/d");
    file(dir, "t/a/g", "deeper\n", 0o600);
    symlink(dir, "g", "t/a/m");
    nix::unistd::mkfifo(&dir.join("t/p"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// Under `-l` or `-s`, cp links every entry that is not a directory, symlinks and FIFOs too:
/// `cp -al` hard-links a symlink itself (`-P`, `-d`, `-a`), `cp -rl` follows it (and fails on a
/// dangling one), and `cp -s` makes a symlink to the symlink's own name. The harness compares
/// link counts, so a symlink made anew instead of linked is a difference.
#[test]
fn links_of_symlinks_and_fifos_are_made_as_cp_makes_them() {
    let cases: [&[&str]; 11] = [
        &["-al", "t", "o"],
        &["-rl", "t", "o"],
        &["-rlP", "t", "o"],
        &["-rlH", "t", "o"],
        &["-dl", "t/l", "x"],
        &["-lP", "t/d", "x"],
        &["-l", "t/l", "x"],
        &["-lP", "t/p", "x"],
        &["-rs", "t", "o"],
        &["-s", "t/l", "x"],
        &["-sP", "t/d", "x"],
    ];
    for args in cases {
        for (user, extra) in configurations() {
            let Some((by_cp, by_us)) = both_runs(&tree_with_symlinks, args, None, user, extra) else {
                return eprintln!("skipped: /usr/bin/cp is not GNU cp");
            };
            let context = format!("{extra:?} {args:?} as {user:?}\ncp:\n{}\nstealcp:\n{}", by_cp.stderr, by_us.stderr);
            assert_eq!(by_us.status, by_cp.status, "{context}");
            // `-rs t o` fails once per entry: in the order the workers meet them.
            let sorted = |mut m: Vec<String>| {
                m.sort();
                m
            };
            let (ours, theirs) = (messages(&by_us.stderr, "stealcp"), messages(&by_cp.stderr, "/usr/bin/cp"));
            assert_eq!(sorted(ours), sorted(theirs), "{context}");
            assert_eq!(snapshot(by_us.dir.path(), false), snapshot(by_cp.dir.path(), false), "{context}");
        }
        let verbose: Vec<&str> = std::iter::once("-v").chain(args.iter().copied()).collect();
        if !args.contains(&"-rs") {
            same_listing_as_cp(tree_with_symlinks, &verbose, None);
        }
    }
}
