//! A directory merged into an existing directory inside itself (`cp -rT d d/x` with `d/x`
//! there, `cp -r d/. d/x`, `cp -r d d/x` with `d/x/d` there), side by side with GNU cp 9.1
//! (see `gnu_harness`): cp copies up to the first directory it makes, then says "cannot copy
//! a directory, 'd', into itself, 'd/x'" and exits with status 1; stealcp copies the same
//! tree (see `run/into_self.rs`), never looping. As root, as uid 65534 and with worker
//! processes. (The new-destination case, `cp -r d d/x`, is in `gnu_fs.rs`.)

mod gnu_harness;

use std::fs;
use std::path::Path;

use gnu_harness::{file, same_as_cp, same_listing_as_cp};

/// Files only beside the existing `x`: its copy of itself holds what was copied into it before.
fn files_beside(dir: &Path) {
    file(dir, "d/a", "a\n", 0o644);
    file(dir, "d/x/inx", "x\n", 0o644);
    file(dir, "d/m", "m\n", 0o600);
}

/// Directories and files at two depths, and an existing `x` with a file.
fn tree_with_x(dir: &Path) {
    file(dir, "d/a", "a\n", 0o644);
    file(dir, "d/sub/b", "b\n", 0o644);
    file(dir, "d/z/q", "q\n", 0o600);
    file(dir, "d/sub/deeper/c", "c\n", 0o644);
    file(dir, "d/m", "m\n", 0o644);
    file(dir, "d/x/inx", "x\n", 0o644);
}

/// `x` holds an existing `sub` as the source does: merged, not made, so the first directory
/// made is further on.
fn merged_sub(dir: &Path) {
    file(dir, "d/sub/b", "b\n", 0o644);
    fs::create_dir(dir.join("d/sub/deep")).unwrap();
    file(dir, "d/x/sub/inx", "x\n", 0o644);
}

/// `cp -r d d/x` where `d/x/d` exists already.
fn copy_there(dir: &Path) {
    tree_with_x(dir);
    file(dir, "d/x/d/old", "old\n", 0o644);
}

/// A file where the walk's way into the existing destination goes (`d/y1/y1`): cp refuses
/// that step, never meets the directory it makes as a source, and copies everything else
/// with no into-itself stop.
fn blocked(dir: &Path) {
    fs::create_dir_all(dir.join("d/y1")).unwrap();
    file(dir, "d/b2/f", "1\n", 0o644);
    file(dir, "d/x0", "2\n", 0o644);
    file(dir, "d/y1/y1", "3\n", 0o644);
}

/// Hard links among the files cp copies before its first directory (`d/a`, `d/h`), and one
/// of them in a directory copied later (`d/z/l`): kept as links under `-a`, as cp keeps them.
fn linked_beside(dir: &Path) {
    file(dir, "d/a", "a\n", 0o644);
    fs::hard_link(dir.join("d/a"), dir.join("d/h")).unwrap();
    file(dir, "d/x/inx", "x\n", 0o644);
    fs::create_dir(dir.join("d/z")).unwrap();
    fs::hard_link(dir.join("d/a"), dir.join("d/z/l")).unwrap();
}

/// A symlink to a directory, made before `x` (`d/ln` to `d/far`, made after it), and one to a
/// file (`d/lf`): under `-L`, the first directory cp's walk makes is `ln`'s copy (without it,
/// `x`'s), and the second symlink is a file it copies.
fn symlinked(dir: &Path) {
    fs::create_dir(dir.join("d")).unwrap();
    std::os::unix::fs::symlink("far", dir.join("d/ln")).unwrap();
    file(dir, "d/f", "f\n", 0o644);
    std::os::unix::fs::symlink("f", dir.join("d/lf")).unwrap();
    file(dir, "d/x/inx", "x\n", 0o644);
    file(dir, "d/far/b", "b\n", 0o644);
}

/// The cases, on tmpfs (see [`on_tmpfs`]).
#[test]
fn merged_into_an_existing_directory_inside_itself_as_cp() {
    if !on_tmpfs() {
        return eprintln!("skipped: no /dev/shm (tmpfs) for trees whose inode numbers follow their making");
    }
    for setup in [files_beside as fn(&Path), tree_with_x, merged_sub] {
        for args in [
            &["-rT", "d", "d/x"][..],
            &["-r", "d/.", "d/x"],
            &["-aT", "d", "d/x"],
            &["-r", "d/", "d/x/."],
            &["-rT", "d", "./d/x"],
            // Each file cp copies before its first directory is copied once: no backup of it.
            &["-rbT", "d", "d/x"],
            &["-rnT", "d", "d/x"],
        ] {
            same_as_cp(setup, args);
        }
        // -v lists what cp lists, each destination's lines in cp's order.
        same_listing_as_cp(setup, &["-rvT", "d", "d/x"], None);
    }
    for args in [&["-aT", "d", "d/x"][..], &["-rT", "d", "d/x"]] {
        same_as_cp(linked_beside, args);
    }
    // (Not without -L: cp's copy of `x` would hold the symlinks it made before it, which
    // stealcp's does not: see `run/into_self.rs`.)
    for args in [&["-rLT", "d", "d/x"][..], &["-aLT", "d", "d/x"]] {
        same_as_cp(symlinked, args);
    }
    same_as_cp(blocked, &["-rT", "d", "d/y1"]);
    same_listing_as_cp(blocked, &["-rvT", "d", "d/y1"], None);
    same_as_cp(copy_there, &["-r", "d", "d/x"]);
    same_as_cp(copy_there, &["-a", "d", "d/x/"]);

    // Another source is copied, and the status is 1 (as cp); never into the copy of the copy,
    // where cp puts it only if its inode number is lower than the copy's, stealcp never (a
    // tree this run makes is never a source).
    let two = |dir: &Path| {
        tree_with_x(dir);
        file(dir, "other/o", "o\n", 0o644);
    };
    same_as_cp(two, &["-r", "d", "other", "d/x"]);
    let merged = |dir: &Path| {
        two(dir);
        file(dir, "d/x/d/old", "old\n", 0o644);
    };
    same_as_cp(merged, &["-r", "d", "other", "d/x"]);

    // An earlier source makes `d/x/x`; the second, `d/x` itself, lands on the same name, is
    // merged into it, and its walk stops at that copy (cp remembers the first directory made
    // for each source): no `d/x/x/x`.
    let earlier = |dir: &Path| {
        file(dir, "y/x/f", "f\n", 0o644);
        file(dir, "d/x/g", "g\n", 0o644);
    };
    same_as_cp(earlier, &["-r", "y/x", "d/x", "d/x"]);
    same_as_cp(earlier, &["-a", "y/x", "d/x", "d/x/"]);
}

/// What cp copies depends on inode numbers (it lists each directory in their order), which on
/// ext4 follow no order between two trees made alike; on tmpfs they follow the order of making,
/// so cp's tree and stealcp's can be compared whole. Points the harness's temporary
/// directories there (`TMPDIR`); false if there is no tmpfs at `/dev/shm`.
fn on_tmpfs() -> bool {
    let tmpfs =
        nix::sys::statfs::statfs("/dev/shm").is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if tmpfs {
        // SAFETY: this binary's only test sets it first, before it starts any thread or
        // process; nothing else in the process reads or writes the environment meanwhile.
        unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    }
    tmpfs
}
