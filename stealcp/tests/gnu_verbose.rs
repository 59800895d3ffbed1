//! `-v` side by side with GNU cp 9.1: the same lines (`'S' -> 'D'`, `removed 'D'`,
//! `'S' -> 'D' (backup: 'B')`, `--parents`' `S -> D`), each destination's in cp's order, for
//! every way an existing destination is replaced (removed first, removed after a failed open,
//! backed up, replaced by a symlink, FIFO or hard link), and entries cp lists before failing.
//! As root, as uid 65534, and with worker processes.

mod gnu_harness;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gnu_harness::{file, same_listing_as_cp, symlink};

fn s_and_d(dir: &Path) {
    file(dir, "s", "source\n", 0o644);
    file(dir, "d", "old\n", 0o644);
}

fn trees(dir: &Path) {
    file(dir, "A/x", "1\n", 0o644);
    file(dir, "A/sub/y", "1\n", 0o644);
    file(dir, "A/new", "n\n", 0o644);
    file(dir, "B/A/x", "2\n", 0o644);
    file(dir, "B/A/sub/y", "3\n", 0o644);
}

#[test]
fn a_removed_destination_is_listed_before_its_copy() {
    same_listing_as_cp(s_and_d, &["-v", "--remove-destination", "s", "d"], None);
    same_listing_as_cp(trees, &["-rv", "--remove-destination", "A", "B"], None);
    // A symlink destination is removed, not written through.
    let through = |dir: &Path| {
        file(dir, "s", "source\n", 0o644);
        file(dir, "t", "target\n", 0o644);
        symlink(dir, "t", "d");
        symlink(dir, "nowhere", "dangling");
    };
    same_listing_as_cp(through, &["-v", "--remove-destination", "s", "d"], None);
    same_listing_as_cp(through, &["-v", "--remove-destination", "s", "dangling"], None);
}

#[test]
fn backups_are_named_at_the_end_of_the_line() {
    same_listing_as_cp(s_and_d, &["-v", "-b", "s", "d"], None);
    same_listing_as_cp(s_and_d, &["-v", "--backup=numbered", "s", "d"], None);
    same_listing_as_cp(s_and_d, &["-v", "-b", "-S", ".old", "s", "d"], None);
    same_listing_as_cp(s_and_d, &["-v", "-bf", "--remove-destination", "s", "d"], None);
    let numbered = |dir: &Path| {
        s_and_d(dir);
        file(dir, "d.~1~", "older\n", 0o644);
    };
    same_listing_as_cp(numbered, &["-v", "--backup=existing", "s", "d"], None);
    same_listing_as_cp(trees, &["-rv", "-b", "A", "B"], None);
    same_listing_as_cp(trees, &["-av", "--backup=t", "A", "B"], None);
}

#[test]
fn a_large_file_split_across_workers_is_listed_as_cp_lists_it() {
    let large = |dir: &Path| {
        // Past the size from which a file is copied in ranges (64 MiB); sparse, so cheap.
        let f = fs::File::create(dir.join("big")).unwrap();
        f.set_len(65 << 20).unwrap();
        file(dir, "d", "old\n", 0o644);
        file(dir, "o/big", "old\n", 0o644);
    };
    same_listing_as_cp(large, &["-v", "-b", "big", "d"], None);
    same_listing_as_cp(large, &["-v", "--remove-destination", "big", "o"], None);
    // Unreadable to uid 65534: listed, then the failure, as cp.
    let unreadable = |dir: &Path| {
        large(dir);
        fs::set_permissions(dir.join("big"), fs::Permissions::from_mode(0o000)).unwrap();
    };
    same_listing_as_cp(unreadable, &["-v", "big", "n"], None);
}

#[test]
fn symlinks_fifos_and_hard_links_replacing_files_are_listed_as_cp_lists_them() {
    let kinds = |dir: &Path| {
        symlink(dir, "t", "A/l");
        symlink(dir, "t", "top");
        nix::unistd::mkfifo(&dir.join("A/p"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        file(dir, "A/h1", "linked\n", 0o644);
        fs::hard_link(dir.join("A/h1"), dir.join("A/h2")).unwrap();
        file(dir, "B/A/l", "was a file\n", 0o644);
        symlink(dir, "u", "B/A/p");
        file(dir, "B/A/h1", "2\n", 0o644);
        file(dir, "B/A/h2", "3\n", 0o644);
        file(dir, "d", "old\n", 0o644);
    };
    same_listing_as_cp(kinds, &["-rv", "A", "B"], None);
    same_listing_as_cp(kinds, &["-av", "A", "B"], None);
    same_listing_as_cp(kinds, &["-av", "-b", "A", "B"], None);
    same_listing_as_cp(kinds, &["-Pv", "top", "d"], None);
    same_listing_as_cp(kinds, &["-Pv", "-b", "top", "d"], None);
}

#[test]
fn a_destination_with_other_names_is_replaced_under_a_and_written_into_under_r() {
    let linked = |dir: &Path| {
        file(dir, "A/x", "1\n", 0o644);
        file(dir, "B/A/x", "2\n", 0o644);
        fs::hard_link(dir.join("B/A/x"), dir.join("B/other-name")).unwrap();
    };
    same_listing_as_cp(linked, &["-av", "A", "B"], None);
    same_listing_as_cp(linked, &["-rv", "A", "B"], None);
}

#[test]
fn a_destination_that_cannot_be_opened_is_removed_after_its_line_with_f() {
    // Root opens it anyway; uid 65534 cannot, and -f removes it.
    let read_only = |dir: &Path| {
        file(dir, "s", "source\n", 0o644);
        file(dir, "d", "old\n", 0o444);
        file(dir, "A/x", "1\n", 0o644);
        file(dir, "B/A/x", "2\n", 0o444);
    };
    same_listing_as_cp(read_only, &["-vf", "s", "d"], None);
    same_listing_as_cp(read_only, &["-rvf", "A", "B"], None);
    // Without -f it fails, and cp has listed it first.
    same_listing_as_cp(read_only, &["-v", "s", "d"], None);
}

#[test]
fn entries_cp_lists_before_failing_are_listed() {
    let cases = |dir: &Path| {
        file(dir, "s", "source\n", 0o644);
        file(dir, "d", "old\n", 0o644);
        file(dir, "unreadable", "secret\n", 0o000);
        symlink(dir, "nowhere", "dangling");
        fs::create_dir(dir.join("ro")).unwrap();
        fs::set_permissions(dir.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    };
    same_listing_as_cp(cases, &["-lv", "s", "d"], None);
    same_listing_as_cp(cases, &["-sv", "s", "d"], None);
    same_listing_as_cp(cases, &["-vf", "s", "dangling"], None);
    same_listing_as_cp(cases, &["-v", "unreadable", "n"], None);
    same_listing_as_cp(cases, &["-v", "s", "ro/n"], None);
    // Checks that come before the listing: nothing is listed.
    same_listing_as_cp(cases, &["-v", "s", "s"], None);
}

#[test]
fn links_instead_of_copies_list_removals_only_for_remove_destination() {
    same_listing_as_cp(s_and_d, &["-lfv", "s", "d"], None);
    same_listing_as_cp(s_and_d, &["-lbv", "s", "d"], None);
    same_listing_as_cp(s_and_d, &["-sfv", "s", "d"], None);
    same_listing_as_cp(s_and_d, &["-sbv", "s", "d"], None);
    same_listing_as_cp(s_and_d, &["-sv", "--remove-destination", "s", "d"], None);
    same_listing_as_cp(s_and_d, &["-lv", "--remove-destination", "s", "d"], None);
}

#[test]
fn new_trees_parents_and_skipped_files() {
    same_listing_as_cp(trees, &["-rv", "A", "N"], None);
    same_listing_as_cp(trees, &["-rv", "A", "B"], None);
    same_listing_as_cp(trees, &["-rvn", "A", "B"], None);
    let parents = |dir: &Path| {
        file(dir, "a/b/f", "f\n", 0o644);
        fs::create_dir_all(dir.join("o")).unwrap();
        fs::create_dir_all(dir.join("p/a")).unwrap();
    };
    same_listing_as_cp(parents, &["-v", "--parents", "a/b/f", "o"], None);
    same_listing_as_cp(parents, &["-v", "--parents", "a/b/f", "p"], None);
    let older = |dir: &Path| {
        s_and_d(dir);
        filetime::set_file_mtime(dir.join("s"), filetime::FileTime::from_unix_time(946_684_800, 0)).unwrap();
    };
    same_listing_as_cp(older, &["-vu", "s", "d"], None);
    // A new directory's line comes before its symlinks' (made by the scan that lists it).
    let with_symlinks = |dir: &Path| {
        trees(dir);
        symlink(dir, "x", "A/l");
        symlink(dir, "y", "A/sub/l");
        symlink(dir, "sub", "A/ls");
    };
    same_listing_as_cp(with_symlinks, &["-rv", "A", "N"], None);
    same_listing_as_cp(with_symlinks, &["-av", "A", "B"], None);
}
