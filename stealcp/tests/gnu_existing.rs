//! GNU cp side by side (see `gnu_harness`): existing destinations, same-file detection, two
//! sources on one name, and one bad argument among good ones.
//!
//! coreutils tests/cp cases these follow: thru-dangling, same-file, no-deref-link1..3,
//! slink-2-slink, special-f, dir-vs-file, into-self, existing-perm-dir (write-into keeps the
//! mode), fail-perm (messages), link (-l onto itself), backup-1, backup-is-src.

mod gnu_harness;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use gnu_harness::{Compare, file, same_as_cp, same_as_cp_with, same_listing_as_cp, symlink};

/// A source `f`, a destination `g` (mode 600, with a second name `g2`), a symlink `sg` to it,
/// a dangling symlink, a symlink loop, and a directory `d`.
fn existing(dir: &Path) {
    file(dir, "f", "new contents\n", 0o644);
    file(dir, "g", "old\n", 0o600);
    fs::hard_link(dir.join("g"), dir.join("g2")).unwrap();
    symlink(dir, "g", "sg");
    symlink(dir, "no-such", "dangle");
    symlink(dir, "loop", "loop");
    fs::create_dir(dir.join("d")).unwrap();
    fs::hard_link(dir.join("f"), dir.join("hl")).unwrap();
    symlink(dir, "f", "sl");
}

#[test]
fn an_existing_file_is_written_into_keeping_its_inode_mode_and_other_names() {
    for run in same_as_cp(existing, &["f", "g"]) {
        assert_eq!(fs::read_to_string(run.dir.path().join("g2")).unwrap(), "new contents\n");
    }
    same_as_cp(existing, &["-p", "f", "g"]);
    same_as_cp(existing, &["--preserve=mode", "f", "g"]);
    same_as_cp(existing, &["-r", "f", "d"]);
}

#[test]
fn a_symlink_destination_is_written_through() {
    same_as_cp(existing, &["f", "sg"]);
    same_as_cp(existing, &["-r", "f", "sg"]);
}

#[test]
fn a_dangling_symlink_destination_is_refused_unless_removed() {
    same_as_cp(existing, &["f", "dangle"]);
    same_as_cp(existing, &["-f", "f", "dangle"]);
    same_as_cp(existing, &["--remove-destination", "f", "dangle"]);
    // A symlink loop: cannot stat it; -f removes it (coreutils' thru-dangling).
    same_as_cp(existing, &["f", "loop"]);
    same_as_cp(existing, &["-r", "f", "loop"]);
    same_as_cp(existing, &["-f", "f", "loop"]);
    same_as_cp(existing, &["-b", "f", "loop"]);
    // -n, -u and -i look through the symlink and find no file to keep or ask about; with a
    // backup, the symlink itself is what is kept.
    for options in [&["-n"][..], &["-u"], &["-i"], &["-nb"], &["-r", "-n"]] {
        let args: Vec<&str> = options.iter().copied().chain(["f", "dangle"]).collect();
        same_as_cp(existing, &args);
    }
}

#[test]
fn remove_destination_makes_a_new_file() {
    for run in same_as_cp(existing, &["--remove-destination", "f", "g"]) {
        assert_eq!(fs::read_to_string(run.dir.path().join("g2")).unwrap(), "old\n", "the other name is not touched");
    }
}

#[test]
fn force_removes_a_destination_that_cannot_be_opened() {
    let read_only = |dir: &Path| {
        existing(dir);
        fs::set_permissions(dir.join("g"), std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    };
    // As root the file opens anyway; as 65534 only -f gets past it.
    same_as_cp(read_only, &["f", "g"]);
    same_as_cp(read_only, &["-f", "f", "g"]);
}

#[test]
fn a_directory_is_never_overwritten_by_a_file_nor_a_file_by_a_directory() {
    same_as_cp(existing, &["-T", "f", "d"]);
    same_as_cp(existing, &["-R", "d", "f"]);
    let nested = |dir: &Path| {
        file(dir, "src/x", "file\n", 0o644);
        fs::create_dir_all(dir.join("dst/src/x")).unwrap();
    };
    for run in same_as_cp(nested, &["-r", "src", "dst"]) {
        let line = "stealcp: cannot overwrite directory 'dst/src/x' with non-directory\n";
        assert_eq!(run.stderr, line, "the whole message, as cp's");
    }
}

#[test]
fn a_fifo_destination_is_replaced_by_cp_r_of_a_fifo() {
    let fifo = |dir: &Path| {
        nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        file(dir, "e", "", 0o644);
    };
    same_as_cp(fifo, &["-R", "fifo", "e"]);
    same_as_cp(fifo, &["-R", "-f", "fifo", "e"]);
}

#[test]
fn a_fifo_destination_is_written_to_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "f", "through the pipe\n", 0o644);
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read_to_string(fifo).unwrap())
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .arg(dir.path().join("f"))
        .arg(&fifo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(reader.join().unwrap(), "through the pipe\n");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo_like());
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn same_file_is_refused_as_cp_refuses_it() {
    for args in [
        &["f", "f"][..],
        &["f", "hl"],
        &["f", "sl"],
        &["-f", "f", "hl"],
        &["--remove-destination", "f", "hl"],
        &["--remove-destination", "f", "f"],
        &["--remove-destination", "f", "sl"],
        &["--remove-destination", "sl", "f"],
        &["-b", "f", "hl"],
        &["-b", "f", "f"],
        &["-P", "sl", "f"],
        &["-P", "sl", "sl"],
        &["-a", "f", "hl"],
        &["-a", "sl", "hl"],
        &["-l", "f", "hl"],
    ] {
        same_as_cp(existing, args);
    }
}

#[test]
fn two_names_of_one_destination_are_written_one_after_the_other() {
    let setup = |dir: &Path| {
        // Each more than one task's worth of bytes, so that they go to different workers:
        // written at once, the file could end up with a mix of both.
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::create_dir_all(dir.join("b")).unwrap();
        fs::write(dir.join("a/f"), gnu_harness::dense(20 << 20)).unwrap();
        fs::write(dir.join("b/g"), vec![b'b'; 18 << 20]).unwrap();
        fs::write(dir.join("b/f"), vec![b'b'; 18 << 20]).unwrap();
        // Two names of one file, and a directory reached through a symlink.
        file(dir, "o/f", "old\n", 0o644);
        fs::hard_link(dir.join("o/f"), dir.join("o/g")).unwrap();
        file(dir, "p/a/f", "old\n", 0o644);
        symlink(dir, "a", "p/b");
    };
    same_as_cp(setup, &["a/f", "b/g", "o"]);
    same_as_cp(setup, &["--parents", "a/f", "b/f", "p"]);
}

#[test]
fn a_link_that_cannot_be_made_leaves_the_destination_as_it_was() {
    let setup = |dir: &Path| {
        file(dir, "foo", "a\n", 0o644);
        file(dir, "d/foo", "PRECIOUS\n", 0o644);
        file(dir, "s3", "s3\n", 0o644);
        symlink(dir, "foo", "s1");
        symlink(dir, "s1", "s2");
    };
    // A relative symlink outside the current directory is refused before -f or -b touch d/foo.
    same_as_cp(setup, &["-sf", "foo", "d"]);
    same_as_cp(setup, &["-sb", "foo", "d"]);
    // -l follows s2 to foo: s1 is replaced by a hard link only once that link exists.
    same_as_cp(setup, &["-lf", "s2", "s1"]);
    same_as_cp(setup, &["-bl", "s2", "s3"]);
    same_as_cp(setup, &["-l", "--remove-destination", "s2", "s3"]);
}

/// coreutils' same-file matrix: every pairing of a file, symlinks to it and a hard link, with
/// every way of replacing, backing up, linking and symlinking (status, messages and the tree,
/// which must keep the file's contents wherever cp keeps them).
#[test]
fn same_file_matrix_as_coreutils_tests_it() {
    let pairs: [&[&str]; 6] = [
        &["foo", "symlink"],
        &["symlink", "foo"],
        &["foo", "foo"],
        &["sl1", "sl2"],
        &["foo", "hardlink"],
        &["hlsl", "sl2"],
    ];
    let options = [
        "", "-d", "-f", "-df", "--rem", "-b", "-bd", "-bf", "-bdf", "-l", "-dl", "-fl", "-dfl", "-bl", "-bdl", "-bfl",
        "-bdfl", "-s", "-sf",
    ];
    for pair in pairs {
        let setup = |dir: &Path| {
            file(dir, "foo", "XYZ\n", 0o644);
            let has = |name: &str| pair.contains(&name);
            if has("symlink") {
                symlink(dir, "foo", "symlink");
            }
            if has("hardlink") {
                fs::hard_link(dir.join("foo"), dir.join("hardlink")).unwrap();
            }
            if has("sl1") {
                symlink(dir, "foo", "sl1");
            }
            if has("sl2") {
                symlink(dir, "foo", "sl2");
            }
            if has("hlsl") {
                fs::hard_link(dir.join("sl2"), dir.join("hlsl")).unwrap();
            }
        };
        for option in options {
            let mut args: Vec<&str> = vec!["--backup=numbered"].into_iter().filter(|_| option.contains('b')).collect();
            args.extend(Some(option).filter(|o| !o.is_empty()));
            args.extend_from_slice(pair);
            same_as_cp(setup, &args);
        }
    }
}

#[test]
fn no_dereference_onto_a_symlink_to_the_source_is_refused() {
    // coreutils no-deref-link1.
    let setup = |dir: &Path| {
        file(dir, "a/foo", "bar\n", 0o644);
        symlink(dir, "../a/foo", "b/foo");
    };
    same_as_cp(setup, &["-d", "a/foo", "b"]);
    // slink-2-slink: one symlink over another is fine.
    let links = |dir: &Path| {
        file(dir, "file", "", 0o644);
        symlink(dir, "file", "a");
        symlink(dir, "file", "b");
        symlink(dir, "no-such-file", "c");
        symlink(dir, "no-such-file", "e");
    };
    same_as_cp(links, &["--update", "--no-dereference", "a", "b"]);
    same_as_cp(links, &["--update", "--no-dereference", "c", "e"]);
}

#[test]
fn two_sources_landing_on_one_name() {
    let setup = |dir: &Path| {
        file(dir, "f", "f\n", 0o644);
        file(dir, "a/x", "a\n", 0o644);
        file(dir, "b/x", "b\n", 0o644);
        symlink(dir, "../f", "a/l");
        symlink(dir, "../f", "b/l");
        symlink(dir, "../f", "c/x");
        fs::create_dir(dir.join("dst")).unwrap();
    };
    same_as_cp(setup, &["a/x", "b/x", "dst"]);
    same_as_cp(setup, &["-r", "a/l", "b/l", "dst"]);
    same_as_cp(setup, &["-P", "c/x", "b/x", "dst"]);
    // The same source twice: a warning, copied once, status 0.
    same_as_cp(setup, &["b/x", "b/x", "dst"]);
}

/// cp meets the second of two sources landing on one name as any existing destination, and
/// only then refuses it as just created: `-n` keeps the first copy, `-u` keeps it unless it is
/// older (with `-p` it has the first source's time), `-l` of another name of the same file has
/// nothing to do, and numbered backups keep both; each with status 0.
#[test]
fn the_second_of_two_sources_on_one_name_meets_no_clobber_update_links_and_backups_as_in_cp() {
    let setup = |dir: &Path| {
        file(dir, "a/x", "a\n", 0o644);
        file(dir, "b/x", "b\n", 0o644);
        fs::create_dir(dir.join("h")).unwrap();
        fs::hard_link(dir.join("a/x"), dir.join("h/x")).unwrap();
        // a/x is the older: `-pu` copies b/x over the copy of a/x, which cp refuses.
        let day = std::time::Duration::from_secs(86_400);
        for (name, age) in [("a/x", 2 * day), ("b/x", day)] {
            let when = std::time::SystemTime::now() - age;
            fs::File::options().write(true).open(dir.join(name)).unwrap().set_modified(when).unwrap();
        }
        fs::create_dir(dir.join("dst")).unwrap();
    };
    for options in [&["-n"][..], &["-u"], &["-pu"], &["-l"], &["--backup=numbered"], &["-b"], &["-s"], &["-f"]] {
        for sources in [["a/x", "b/x"], ["a/x", "h/x"]] {
            let args: Vec<&str> =
                ["-v"].into_iter().chain(options.iter().copied()).chain(sources).chain(["dst"]).collect();
            same_listing_as_cp(setup, &args, None);
        }
    }
}

#[test]
fn two_directories_landing_on_one_name_are_merged_one_after_the_other() {
    let setup = |dir: &Path| {
        // The first `d/x` is large, the second small: copied side by side, the file would
        // end up with either, or with a mix of both.
        fs::create_dir_all(dir.join("m1/d")).unwrap();
        fs::write(dir.join("m1/d/x"), gnu_harness::dense(4 << 20)).unwrap();
        file(dir, "m1/d/only1", "1\n", 0o644);
        file(dir, "m2/d/x", "second\n", 0o600);
        file(dir, "m2/d/only2", "2\n", 0o644);
        file(dir, "m3/d", "a file\n", 0o644);
        // A hard link from the second tree to the first: `-a` links it to the first's copy,
        // which the first wave has already renamed into place.
        fs::hard_link(dir.join("m1/d/only1"), dir.join("m2/d/link")).unwrap();
        fs::create_dir_all(dir.join("dst")).unwrap();
        fs::create_dir_all(dir.join("pre/d")).unwrap();
        // Times of their own (for `-a`), which differ between the two trees.
        for (i, name) in ["m1/d/x", "m1/d/only1", "m2/d/x", "m2/d/only2", "m3/d"].into_iter().enumerate() {
            let time = filetime::FileTime::from_unix_time(1_251_486_000 + 1000 * i as i64, 0);
            filetime::set_file_mtime(dir.join(name), time).unwrap();
        }
    };
    // A new destination, then one that exists: cp merges the second tree into the first's
    // copy, the second's file replacing the first's.
    same_as_cp(setup, &["-r", "m1/d", "m2/d", "dst"]);
    same_as_cp(setup, &["-r", "m1/d", "m2/d", "pre"]);
    let times = Compare { mtimes: true, ..Compare::default() };
    same_as_cp_with(setup, &["-a", "m1/d", "m2/d", "dst"], None, times);
    // A directory and a file on one name: whichever comes second is refused.
    same_as_cp(setup, &["-r", "m1/d", "m3/d", "dst"]);
    same_as_cp(setup, &["-r", "m3/d", "m1/d", "dst"]);
    // Contents merged with `dir/.`, listed as cp lists them (`dst/./x`).
    let listing = Compare { stdout: true, ..Compare::default() };
    same_as_cp_with(setup, &["-rv", "m1/.", "m2/.", "dst"], None, listing);
    same_as_cp_with(setup, &["-rv", "m1/d/.", "m2/d/.", "dst"], None, listing);
}

#[test]
fn one_bad_argument_does_not_stop_the_others() {
    let setup = |dir: &Path| {
        file(dir, "f", "f\n", 0o644);
        file(dir, "g", "g\n", 0o644);
        fs::create_dir_all(dir.join("tree/sub")).unwrap();
        file(dir, "tree/sub/x", "x\n", 0o644);
        fs::create_dir(dir.join("d")).unwrap();
    };
    same_as_cp(setup, &["f", "missing", "g", "d"]);
    same_as_cp(setup, &["f", "tree", "g", "d"]);
    same_as_cp(setup, &["-r", "f", "missing", "tree", "d"]);
    same_as_cp(setup, &["missing", "y"]);
    same_as_cp(setup, &["tree", "y"]);
    same_as_cp(setup, &["f", "g", "f"]);
    same_as_cp(setup, &["f", "g", "missing-dir"]);
}

#[test]
fn usage_errors_exit_with_status_1() {
    let setup = |dir: &Path| file(dir, "f", "f\n", 0o644);
    for args in [&[][..], &["f"], &["f", "g", "h", "-T"], &["-t", "x", "-T", "f"]] {
        same_as_cp(setup, args);
    }
    let clap_words = Compare { skip_messages: true, ..Compare::default() };
    for args in [&["--bogus", "f", "g"][..], &["--backup=bogus", "f", "g"], &["--sparse=bogus", "f", "g"]] {
        same_as_cp_with(setup, args, None, clap_words);
    }
}

#[test]
fn unreadable_sources_and_unwritable_directories_are_worded_as_cp() {
    let setup = |dir: &Path| {
        file(dir, "f", "f\n", 0o644);
        file(dir, "secret", "s\n", 0o000);
        fs::create_dir(dir.join("locked")).unwrap();
        file(dir, "tree/a", "a\n", 0o644);
        file(dir, "tree/hidden", "h\n", 0o000);
    };
    let lock = |dir: &Path| {
        setup(dir);
        fs::set_permissions(dir.join("locked"), std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    };
    same_as_cp(setup, &["secret", "copy"]);
    same_as_cp(lock, &["f", "locked"]);
    same_as_cp(setup, &["-r", "tree", "out"]);
}

#[test]
fn verbose_lists_what_cp_lists() {
    let setup = |dir: &Path| {
        file(dir, "f", "f\n", 0o644);
        file(dir, "tree/a", "a\n", 0o644);
        symlink(dir, "a", "tree/l");
        fs::create_dir(dir.join("d")).unwrap();
    };
    let stdout = Compare { stdout: true, ..Compare::default() };
    same_as_cp_with(setup, &["-v", "f", "g"], None, stdout);
    same_as_cp_with(setup, &["-rv", "tree", "f", "d"], None, stdout);
}

#[test]
fn backups_are_named_as_cp_names_them() {
    let setup = |dir: &Path| {
        existing(dir);
        file(dir, "n.~3~", "numbered\n", 0o644);
        file(dir, "n", "n\n", 0o644);
    };
    same_as_cp(setup, &["-b", "f", "g"]);
    same_as_cp(setup, &["--backup=numbered", "f", "g"]);
    same_as_cp(setup, &["--backup=existing", "f", "n"]);
    same_as_cp(setup, &["-b", "-S", ".bak", "f", "g"]);
    same_as_cp(setup, &["--backup=simple", "f", "sg"]);
    same_as_cp(setup, &["--backup=none", "f", "g"]);
}

#[test]
fn no_clobber_and_update() {
    let setup = |dir: &Path| {
        existing(dir);
        let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        filetime::set_file_mtime(dir.join("f"), old).unwrap();
    };
    same_as_cp(setup, &["-n", "f", "g"]);
    same_as_cp(setup, &["-u", "f", "g"]);
    same_as_cp(setup, &["-u", "g", "f"]);
    // No answer on standard input: not overwritten.
    same_as_cp(setup, &["-i", "f", "g"]);
}

#[test]
fn interactive_asks_and_takes_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    existing(dir.path());
    for (answer, expect) in [("n\n", "old\n"), ("y\n", "new contents\n")] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stealcp"))
            .args(["-i", "f", "g"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), answer.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("stealcp: overwrite 'g'? "));
        assert_eq!(fs::read_to_string(dir.path().join("g")).unwrap(), expect);
    }
    assert_eq!(fs::metadata(dir.path().join("g")).unwrap().nlink(), 2, "written into, not replaced");
}

#[test]
fn an_unreadable_directory_is_worded_as_cp() {
    let setup = |dir: &Path| {
        file(dir, "tree/a", "a\n", 0o644);
        file(dir, "tree/closed/inside", "i\n", 0o644);
        fs::set_permissions(dir.join("tree/closed"), std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    };
    same_as_cp(setup, &["-r", "tree", "out"]);
}

#[test]
fn a_directory_onto_a_file_inside_a_tree_is_worded_as_cp() {
    let setup = |dir: &Path| {
        file(dir, "src/x/inner", "i\n", 0o644);
        file(dir, "src/y", "y\n", 0o644);
        file(dir, "dst/src/x", "a file in the way\n", 0o644);
    };
    for run in same_as_cp(setup, &["-r", "src", "dst"]) {
        let line = "stealcp: cannot overwrite non-directory 'dst/src/x' with directory 'src/x'\n";
        assert_eq!(run.stderr, line, "the whole message, as cp's");
    }
}

#[test]
fn a_backup_that_would_replace_the_source_is_refused() {
    // coreutils backup-is-src.
    let setup = |dir: &Path| {
        file(dir, "a", "a\n", 0o644);
        file(dir, "a~", "a-tilde\n", 0o644);
    };
    same_as_cp(setup, &["--backup=simple", "a~", "a"]);
    same_as_cp(setup, &["--backup=numbered", "a~", "a"]);
}

#[test]
fn a_large_file_split_across_workers_is_written_into_an_existing_destination() {
    let dir = tempfile::tempdir().unwrap();
    // 65 MiB: over the size from which a file is copied in ranges by several workers.
    let data = gnu_harness::dense(65 << 20);
    fs::write(dir.path().join("big"), &data).unwrap();
    file(dir.path(), "dst", "old\n", 0o600);
    fs::hard_link(dir.path().join("dst"), dir.path().join("dst2")).unwrap();
    let inode = fs::metadata(dir.path().join("dst")).unwrap().ino();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .args(["-j", "4", "big", "dst"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta = fs::metadata(dir.path().join("dst2")).unwrap();
    assert_eq!((meta.ino(), meta.mode() & 0o777), (inode, 0o600), "written into: same inode, same mode");
    assert!(fs::read(dir.path().join("dst2")).unwrap() == data);
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "no temporary file left: {names:?}");
}

/// `-l -u` and `-s -u` keep a destination at least as new as the source, and link over an
/// older one only with `-f`, as cp (which compares the destination itself, not what a symlink
/// there names).
#[test]
fn update_with_links_keeps_a_destination_at_least_as_new() {
    let setup = |dir: &Path| {
        file(dir, "f", "source\n", 0o644);
        file(dir, "new", "newer\n", 0o644);
        file(dir, "old", "older\n", 0o644);
        let day = std::time::Duration::from_secs(86_400);
        for (name, when) in [("new", std::time::SystemTime::now() + day), ("old", std::time::SystemTime::now() - day)] {
            fs::File::options().write(true).open(dir.join(name)).unwrap().set_modified(when).unwrap();
        }
    };
    for options in [&["-lu"][..], &["-lfu"], &["-su"], &["-sfu"]] {
        for dest in ["new", "old"] {
            let args: Vec<&str> = options.iter().copied().chain(["f", dest]).collect();
            same_as_cp(setup, &args);
        }
    }
}
