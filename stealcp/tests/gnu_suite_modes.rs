//! coreutils tests/cp, side by side with GNU cp (see `gnu_harness`): the cases about modes,
//! owners and times: modes under several umasks for new and existing destinations, `-p` and
//! `--no-preserve=mode`, modes applied to existing parents by `-p --parents`, read-only
//! directories, setuid/setgid bits when the owner cannot be kept, groups kept or not as root
//! and as a user of two groups, and the times of symlinks and of `--reflink` copies.
//!
//! Cases (coreutils names): perm (a reduced grid), preserve-mode, preserve-2, parent-perm,
//! readonly-dir, special-bits, preserve-gid, reflink-perm, preserve-slink-time, and the umask
//! part of link-preserve. The umask is the process's: every test here takes [`UMASK`] so that
//! none runs while another has changed it. They never touch anything outside their
//! temporary directories.

mod gnu_harness;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use filetime::FileTime;
use gnu_harness::{
    Compare, User, configurations, file, first_words, gnu_cp, run_prepared, same_as_cp, same_as_cp_with, snapshot,
    symlink,
};
use nix::sys::stat::{Mode, umask};

/// Held by every test of this file: the umask is process-wide.
static UMASK: Mutex<()> = Mutex::new(());

/// Runs `f` with the umask `mask` (restored after, also if `f` panics).
fn with_umask(mask: u32, f: impl FnOnce()) {
    let _guard = UMASK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    struct Restore(Mode);
    impl Drop for Restore {
        fn drop(&mut self) {
            umask(self.0);
        }
    }
    let _restore = Restore(umask(Mode::from_bits_truncate(mask)));
    f();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

/// `rwx` letters (any of them) as the bits of one class.
fn bits(letters: &str) -> u32 {
    letters
        .chars()
        .map(|c| match c {
            'r' => 4,
            'w' => 2,
            'x' => 1,
            _ => 0,
        })
        .sum()
}

#[test]
fn perm_new_and_existing_destinations_under_three_umasks() {
    // A source u=r,g=rx,o=; existing destinations u=rw with every group/other permission the
    // coreutils grid uses (each a name of its own, so that one run covers them), and names
    // that do not exist yet. An existing file keeps its mode (without -p); a new one gets the
    // source's less the umask.
    let perms = ["r", "w", "x", "rw", "wx", "xr", "rwx"];
    let setup = |dir: &Path| {
        fs::create_dir(dir.join("D")).unwrap();
        for (i, g) in perms.iter().enumerate() {
            for (j, o) in perms.iter().enumerate() {
                let name = format!("s{i}{j}");
                file(dir, &name, "src\n", 0o450);
                file(dir, &format!("D/{name}"), "", 0o600 | bits(g) << 3 | bits(o));
            }
            file(dir, &format!("new{i}"), "src\n", 0o450);
        }
    };
    let mut args: Vec<String> = Vec::new();
    for (i, _) in perms.iter().enumerate() {
        args.extend((0..perms.len()).map(|j| format!("s{i}{j}")));
        args.push(format!("new{i}"));
    }
    args.push("D".into());
    for mask in [0o031, 0o037, 0o002] {
        with_umask(mask, || {
            for cmd in [&["-p"][..], &[]] {
                for force in [&["-f"][..], &[]] {
                    let mut all: Vec<&str> = cmd.iter().chain(force).copied().collect();
                    all.extend(args.iter().map(String::as_str));
                    same_as_cp(setup, &all);
                }
            }
        });
    }
}

#[test]
fn preserve_mode_no_preserve_and_preserve_all_and_ownership() {
    with_umask(0o022, || {
        let setup = |dir: &Path| {
            file(dir, "a", "", 0o644);
            file(dir, "b", "", 0o600);
            file(dir, "c", "", 0o600);
            file(dir, "g", "", 0o660);
            fs::create_dir(dir.join("d1")).unwrap();
            fs::create_dir(dir.join("d2")).unwrap();
            fs::set_permissions(dir.join("d2"), fs::Permissions::from_mode(0o705)).unwrap();
            nix::unistd::mkfifo(&dir.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        };
        same_as_cp(setup, &["--no-preserve=mode", "b", "new"]);
        same_as_cp(setup, &["--no-preserve=mode", "a", "c"]);
        same_as_cp(setup, &["--no-preserve=mode", "-r", "d2", "d3"]);
        same_as_cp(setup, &["--no-preserve=mode", "--preserve=all", "b", "new"]);
        same_as_cp(setup, &["-a", "--no-preserve=mode", "fifo", "fifo_copy"]);
        same_as_cp(setup, &["--preserve=ownership", "g", "new"]);
        // preserve-2: two attributes named at once.
        same_as_cp(setup, &["--preserve=mode,links", "a", "new"]);
    });
    with_umask(0o077, || {
        // link-preserve's last part: --no-preserve=mode gives a new file 0666 less the umask.
        let setup = |dir: &Path| file(dir, "a", "", 0o731);
        for run in same_as_cp(setup, &["-a", "--no-preserve=mode", "a", "b"]) {
            assert_eq!(mode(&run.dir.path().join("b")), 0o600);
        }
    });
}

#[test]
fn parent_perm_p_parents_sets_modes_of_existing_parents() {
    with_umask(0o022, || {
        // As after `cp -p --parents a/b/c/foo e` and `chmod g-rx e/a e/a/b`.
        let setup = |dir: &Path| {
            file(dir, "a/b/c/foo", "", 0o644);
            file(dir, "a/b/d/foo", "", 0o644);
            file(dir, "e/a/b/c/foo", "", 0o644);
            for d in ["e/a", "e/a/b"] {
                fs::set_permissions(dir.join(d), fs::Permissions::from_mode(0o705)).unwrap();
            }
        };
        for run in same_as_cp(setup, &["-p", "--parent", "a/b/d/foo", "e"]) {
            for d in ["a", "a/b", "a/b/d"] {
                assert_eq!(mode(&run.dir.path().join("e").join(d)), mode(&run.dir.path().join(d)), "e/{d}");
            }
        }
    });
}

/// The other half of cp's rule: where every directory on the way exists already, `-p
/// --parents` uses them as they are (cp gives them attributes only when it makes one of them).
#[test]
fn parent_perm_p_parents_leaves_existing_parents_when_none_is_made() {
    with_umask(0o022, || {
        let setup = |dir: &Path| {
            file(dir, "d/a", "x\n", 0o644);
            file(dir, "d/sub/b", "y\n", 0o644);
            fs::create_dir_all(dir.join("dst/d/sub")).unwrap();
            fs::set_permissions(dir.join("dst/d/sub"), fs::Permissions::from_mode(0o555)).unwrap();
            fs::set_permissions(dir.join("dst/d"), fs::Permissions::from_mode(0o700)).unwrap();
        };
        for args in [&["-a", "--parents", "d/a", "d/sub/b", "dst"][..], &["-p", "--parents", "d/sub/b", "dst"]] {
            for run in same_as_cp(setup, args) {
                assert_eq!(mode(&run.dir.path().join("dst/d")), 0o700, "{args:?}");
                assert_eq!(mode(&run.dir.path().join("dst/d/sub")), 0o555, "{args:?}");
            }
        }
    });
}

#[test]
fn readonly_dir_modes_kept_by_r_and_a() {
    with_umask(0o022, || {
        let setup = |dir: &Path| {
            file(dir, "a/b/c/d/bar.txt", "test content\n", 0o444);
            for d in ["a", "a/b", "a/b/c", "a/b/c/d"] {
                fs::set_permissions(dir.join(d), fs::Permissions::from_mode(0o555)).unwrap();
            }
        };
        for args in [&["-r", "a", "b"][..], &["-a", "a", "c"]] {
            for run in same_as_cp(setup, args) {
                let top = run.dir.path().join(args[2]);
                assert_eq!(mode(&top), 0o555, "{args:?}");
                // Let the temporary directory be removed.
                let _ = std::process::Command::new("chmod").args(["-R", "u+w"]).arg(run.dir.path()).status();
            }
        }
    });
}

/// Owner, group and mode of each entry.
fn owners(root: &Path) -> BTreeMap<PathBuf, (u32, u32, u32)> {
    snapshot(root, false)
        .into_keys()
        .map(|rel| {
            let meta = fs::symlink_metadata(root.join(&rel)).unwrap();
            (rel, (meta.uid(), meta.gid(), meta.mode() & 0o7777))
        })
        .collect()
}

/// Runs cp and stealcp (each configuration of [`configurations`] as the current user) in two
/// trees `setup` makes, through `wrap` (a `setpriv` line, or nothing), and compares status,
/// first words, trees and owners. Returns the owners of stealcp's trees.
fn same_owners_as_cp(setup: &dyn Fn(&Path), wrap: &[&str], args: &[&str]) -> Vec<BTreeMap<PathBuf, (u32, u32, u32)>> {
    let Some(cp) = gnu_cp() else {
        eprintln!("skipped: /usr/bin/cp is not GNU cp");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (_, extra) in configurations().into_iter().filter(|(user, _)| *user == User::Me) {
        let (ours, theirs) = (tempfile::TempDir::new().unwrap(), tempfile::TempDir::new().unwrap());
        setup(ours.path());
        setup(theirs.path());
        let by_cp = run_prepared(theirs.path(), wrap, cp, &[], args);
        let by_us = run_prepared(ours.path(), wrap, env!("CARGO_BIN_EXE_stealcp"), extra, args);
        let context = format!("{wrap:?} {extra:?} {args:?}\ncp: {by_cp:?}\nstealcp: {by_us:?}");
        assert_eq!(by_us.0, by_cp.0, "status: {context}");
        assert_eq!(first_words(&by_us.1, "stealcp"), first_words(&by_cp.1, cp), "messages: {context}");
        assert_eq!(snapshot(ours.path(), false), snapshot(theirs.path(), false), "tree: {context}");
        assert_eq!(owners(ours.path()), owners(theirs.path()), "owners: {context}");
        out.push(owners(ours.path()));
    }
    out
}

/// Whether this is root with `setpriv` (else the reason to skip is printed).
fn root_with_setpriv(case: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("{case} skipped: not root");
        return false;
    }
    if !std::process::Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("{case} skipped: no setpriv");
        return false;
    }
    true
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

#[test]
fn special_bits_kept_by_root_dropped_when_the_owner_cannot_be_kept() {
    if !root_with_setpriv("special-bits") {
        return;
    }
    with_umask(0o022, || {
        let setup = |dir: &Path| {
            file(dir, "a", "", 0o4700);
            file(dir, "b", "", 0o2710);
            file(dir, "c", "", 0o6554);
            chown(dir, 65534, 65534);
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        };
        same_owners_as_cp(&setup, &[], &["-p", "a", "a2"]);
        same_owners_as_cp(&setup, &[], &["-p", "b", "b2"]);
        let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
        for tree in same_owners_as_cp(&setup, &nobody, &["-p", "c", "c2"]) {
            assert_eq!(tree[Path::new("c2")], (65534, 65534, 0o554), "c2: setuid and setgid dropped");
        }
    });
}

#[test]
fn preserve_gid_as_root_and_as_a_user_of_two_groups() {
    if !root_with_setpriv("preserve-gid") {
        return;
    }
    // uids and gids no account has here (the coreutils case looks for nameless ones too).
    let (uid, g1, g2) = (61_001, 61_002, 61_003);
    if nix::unistd::User::from_uid(uid.into()).ok().flatten().is_some()
        || [g1, g2].iter().any(|&g| nix::unistd::Group::from_gid(g.into()).ok().flatten().is_some())
    {
        eprintln!("preserve-gid skipped: uid {uid} or gid {g1}/{g2} has a name here");
        return;
    }
    with_umask(0o022, || {
        let setup = |dir: &Path| {
            for (name, u, g) in [("a0", 0, 0), ("b0", uid, g1), ("b1", uid, g2), ("c0", 0, g1), ("c1", 0, g2)] {
                file(dir, name, &format!("{name}\n"), 0o644);
                chown(&dir.join(name), u, g);
            }
            chown(dir, uid, 0);
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        };
        let (reuid, regid, groups) = (format!("--reuid={uid}"), format!("--regid={g1}"), format!("--groups={g1},{g2}"));
        let user = ["setpriv", &reuid, &regid, &groups];
        for name in ["a0", "b0", "b1", "c0", "c1"] {
            for p in [&[][..], &["-p"]] {
                let mut args = p.to_vec();
                args.extend([name, "b"]);
                same_owners_as_cp(&setup, &[], &args);
                let expected_gid = if !p.is_empty() && name.ends_with('1') { g2 } else { g1 };
                for tree in same_owners_as_cp(&setup, &user, &args) {
                    assert_eq!(tree[Path::new("b")].1, expected_gid, "{args:?} as {uid}: the group of b");
                }
            }
        }
    });
}

#[test]
fn reflink_perm_preserve_and_attributes_only() {
    with_umask(0o077, || {
        let setup = |dir: &Path| {
            file(dir, "file", "", 0o777);
            filetime::set_file_mtime(dir.join("file"), FileTime::from_unix_time(1_251_486_000, 0)).unwrap();
            file(dir, "file2", "\n", 0o644);
            filetime::set_file_mtime(dir.join("file2"), FileTime::from_unix_time(1_251_486_000, 0)).unwrap();
        };
        let times = Compare { mtimes: true, ..Compare::default() };
        for run in same_as_cp_with(setup, &["--reflink=auto", "--preserve", "file", "copy"], None, times) {
            assert_eq!(mode(&run.dir.path().join("copy")), 0o777);
        }
        for reflink in ["--reflink=auto", "--reflink=always"] {
            for run in same_as_cp(setup, &[reflink, "--preserve", "--attributes-only", "file2", "empty_copy"]) {
                assert_eq!(fs::read(run.dir.path().join("empty_copy")).unwrap(), b"");
            }
        }
    });
}

#[test]
fn preserve_slink_time_p_keeps_a_dangling_symlinks_time() {
    with_umask(0o022, || {
        let stamp = FileTime::from_unix_time(1_000_000_000, 123_456_789);
        let setup = |dir: &Path| {
            symlink(dir, "no-such", "dangle");
            filetime::set_symlink_file_times(dir.join("dangle"), stamp, stamp).unwrap();
        };
        for run in same_as_cp(setup, &["-Pp", "dangle", "d2"]) {
            let meta = fs::symlink_metadata(run.dir.path().join("d2")).unwrap();
            assert_eq!(FileTime::from_last_modification_time(&meta), stamp, "d2's mtime");
        }
    });
}

#[test]
fn a_new_directory_keeps_the_setgid_bit_its_parent_gives_it() {
    // parent-perm-race's destination is setgid: a directory made in it gets the bit from the
    // kernel, and cp keeps it, with or without -p (a setgid source keeps its own with -p).
    with_umask(0o022, || {
        let setup = |dir: &Path| {
            fs::create_dir(dir.join("d")).unwrap();
            fs::set_permissions(dir.join("d"), fs::Permissions::from_mode(0o2775)).unwrap();
            file(dir, "s/f", "f\n", 0o644);
            file(dir, "g/f", "g\n", 0o644);
            fs::set_permissions(dir.join("g"), fs::Permissions::from_mode(0o2750)).unwrap();
        };
        for opts in [&["-r"][..], &["-pr"], &["--preserve=mode", "-r"], &["-a"], &["--preserve=ownership", "-r"]] {
            for (src, dst) in [("s", "d"), ("g", "d"), ("g", "new")] {
                let mut args = opts.to_vec();
                args.extend([src, dst]);
                same_as_cp(setup, &args);
            }
        }
    });
}

#[test]
fn p_gives_an_existing_destination_the_sources_owner_and_group() {
    // existing-perm-race's end state, without the FIFO: -p onto a file written into.
    if !root_with_setpriv("existing destination owner") {
        return;
    }
    let (g1, g2) = (61_022, 61_023);
    with_umask(0o022, || {
        let setup = |dir: &Path| {
            file(dir, "s", "new\n", 0o640);
            file(dir, "d", "old\n", 0o660);
            chown(&dir.join("s"), 65534, g1);
            chown(&dir.join("d"), 65534, g2);
            chown(dir, 65534, 65534);
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        };
        same_owners_as_cp(&setup, &[], &["-p", "s", "d"]);
        let (regid, groups) = (format!("--regid={g2}"), format!("--groups={g1},{g2}"));
        for tree in same_owners_as_cp(&setup, &["setpriv", "--reuid=65534", &regid, &groups], &["-p", "s", "d"]) {
            assert_eq!(tree[Path::new("d")], (65534, g1, 0o640), "d: the source's group and mode");
        }
        let root_owned = |dir: &Path| {
            setup(dir);
            chown(&dir.join("s"), 0, 0);
        };
        for tree in same_owners_as_cp(&root_owned, &[], &["-p", "s", "d"]) {
            assert_eq!(tree[Path::new("d")], (0, 0, 0o640), "d: root's, as the source");
        }
    });
}
