//! Extended attributes, ACLs, file capabilities and ownership, copied by the built `stealcp`
//! and by GNU `cp` side by side on tmpfs (`/dev/shm`, which has `user.*` xattrs and ACLs); each
//! test skips with a printed reason where that cannot be staged.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A tempdir on tmpfs whose file system takes `user.*` xattrs, or `None` with the reason printed.
fn xattr_dir() -> Option<TempDir> {
    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).ok()?;
    let probe = dir.path().join("probe");
    fs::write(&probe, "").ok()?;
    if let Err(e) = xattr::set(&probe, "user.probe", b"1") {
        eprintln!("skipped: no user xattrs on {}: {e}", dir.path().display());
        return None;
    }
    fs::remove_file(&probe).ok()?;
    Some(dir)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The bytes of a POSIX ACL xattr (`system.posix_acl_*`): version 2, then (tag, perm, id)
/// entries; `u32::MAX` is "no id".
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}
const NO_ID: u32 = u32::MAX;
/// user::rwx user:65534:r-x group::r-x mask::r-x other::r-x (mode 0755).
fn acl_755() -> Vec<u8> {
    acl(&[(1, 7, NO_ID), (2, 5, 65534), (4, 5, NO_ID), (0x10, 5, NO_ID), (0x20, 5, NO_ID)])
}

/// `security.capability`, revision 2: cap_net_bind_service permitted and effective.
fn capability() -> Vec<u8> {
    let mut out = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
    for word in [1u32 << 10, 0, 0, 0] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

/// Every entry: type, owner, mode, mtime, contents or target, and every xattr (name = value).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let what = if meta.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".to_owned()
        } else if meta.file_type().is_symlink() {
            format!("symlink -> {:?}", fs::read_link(&path).unwrap())
        } else {
            format!("file {:?}", fs::read(&path).unwrap())
        };
        let mut names: Vec<_> = xattr::list(&path).unwrap().collect();
        names.sort();
        let xattrs: Vec<String> = names
            .iter()
            .map(|n| format!("{}={:?}", n.to_string_lossy(), xattr::get(&path, n).unwrap().unwrap_or_default()))
            .collect();
        let mtime = if meta.file_type().is_symlink() { 0 } else { meta.mtime() };
        let line = format!(
            "{what} {}:{} mode={:o} mtime={mtime} xattrs={xattrs:?}",
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777
        );
        out.insert(path.strip_prefix(root).unwrap().to_path_buf(), line);
    }
    out
}

/// A [`snapshot`] without the modification times.
fn untimed(snapshot: BTreeMap<PathBuf, String>) -> BTreeMap<PathBuf, String> {
    snapshot
        .into_iter()
        .map(|(k, v)| {
            let cut = v.find(" mtime=").unwrap();
            let rest = &v[cut + 7..];
            (k, format!("{}{}", &v[..cut], &rest[rest.find(' ').unwrap()..]))
        })
        .collect()
}

fn run(program: &str, args: &[&str], src: &Path, dst: &Path, prefix: &[&str]) -> std::process::Output {
    let (program, mut all) = match prefix.split_first() {
        Some((first, rest)) => {
            (first.to_string(), rest.iter().map(|s| s.to_string()).chain([program.to_owned()]).collect())
        }
        None => (program.to_owned(), Vec::new()),
    };
    all.extend(args.iter().map(|s| s.to_string()));
    Command::new(program).args(all).arg(src).arg(dst).output().unwrap()
}

fn stealcp() -> &'static str {
    env!("CARGO_BIN_EXE_stealcp")
}

/// A tree with xattrs on files, directories and (root only) a symlink; ACLs, a default ACL
/// whose directory holds files (they must not inherit it), and (root only) a capability on a
/// set-user-ID file owned by someone else (the chown clears it; it must come back).
fn attr_tree(src: &Path) {
    fs::create_dir_all(src.join("acl-dir/inner")).unwrap();
    fs::write(src.join("plain"), "plain\n").unwrap();
    fs::write(src.join("tagged"), "tagged\n").unwrap();
    xattr::set(src.join("tagged"), "user.comment", b"hello").unwrap();
    // Larger than a first 4 KiB read buffer.
    xattr::set(src.join("tagged"), "user.big", &vec![b'x'; 6000]).unwrap();
    xattr::set(src.join("acl-dir"), "user.dir", b"d").unwrap();
    fs::write(src.join("acl-file"), "acl\n").unwrap();
    fs::set_permissions(src.join("acl-file"), fs::Permissions::from_mode(0o755)).unwrap();
    xattr::set(src.join("acl-file"), "system.posix_acl_access", &acl_755()).unwrap();
    xattr::set(src.join("acl-dir"), "system.posix_acl_access", &acl_755()).unwrap();
    xattr::set(src.join("acl-dir"), "system.posix_acl_default", &acl_755()).unwrap();
    fs::write(src.join("acl-dir/inner/f"), "inner\n").unwrap();
    symlink("plain", src.join("link")).unwrap();
    if is_root() {
        xattr::set(src.join("link"), "trusted.link", b"l").unwrap();
        let cap = src.join("cap-setuid");
        fs::write(&cap, "#!/bin/true\n").unwrap();
        std::os::unix::fs::chown(&cap, Some(1234), Some(1234)).unwrap();
        fs::set_permissions(&cap, fs::Permissions::from_mode(0o4755)).unwrap();
        xattr::set(&cap, "security.capability", &capability()).unwrap();
    }
}

#[test]
fn archive_keeps_xattrs_acls_and_capabilities_as_cp_a() {
    let Some(dir) = xattr_dir() else { return };
    let src = dir.path().join("src");
    attr_tree(&src);
    let by_cp = dir.path().join("by_cp");
    assert!(run("cp", &["-a"], &src, &by_cp, &[]).status.success());
    let expected = snapshot(&by_cp);
    assert!(expected[Path::new("tagged")].contains("user.comment"), "{expected:?}");
    assert!(expected[Path::new("acl-dir")].contains("posix_acl_default"), "{expected:?}");
    for backend in ["thread", "process"] {
        let dst = dir.path().join(format!("by_stealcp_{backend}"));
        let out = run(stealcp(), &["-a", "--backend", backend], &src, &dst, &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(snapshot(&dst), expected, "{backend}");
    }
}

#[test]
fn p_keeps_acls_and_r_keeps_neither_as_cp() {
    let Some(dir) = xattr_dir() else { return };
    let src = dir.path().join("src");
    attr_tree(&src);
    for args in [&["-r", "-p"][..], &["-r"][..]] {
        let name = args.join("");
        let (by_cp, by_stealcp) = (dir.path().join(format!("cp{name}")), dir.path().join(format!("stealcp{name}")));
        assert!(run("cp", args, &src, &by_cp, &[]).status.success());
        let out = run(stealcp(), args, &src, &by_stealcp, &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (ours, theirs) = (snapshot(&by_stealcp), snapshot(&by_cp));
        // Without -p the times are the copy's own: compare everything else.
        assert_eq!(untimed(ours), untimed(theirs), "{args:?}");
    }
}

#[test]
fn preserve_xattr_alone_keeps_xattrs_but_not_acls_as_cp() {
    let Some(dir) = xattr_dir() else { return };
    let src = dir.path().join("src");
    attr_tree(&src);
    let by_cp = dir.path().join("by_cp");
    assert!(run("cp", &["-r", "--preserve=xattr"], &src, &by_cp, &[]).status.success());
    let by_stealcp = dir.path().join("by_stealcp");
    let options = stealcp::CopyOptions {
        recursive: true,
        preserve_xattr: true,
        require_xattr: true,
        ..stealcp::CopyOptions::default()
    };
    let plan = stealcp::plan(std::slice::from_ref(&src), &stealcp::Target::Auto(by_stealcp.clone()), &options).unwrap();
    let pool = stealpool::ThreadPoolExecutor::new(2);
    let report = stealcp::copy(&plan, &options, &pool, &mut stealcp::Quiet).unwrap();
    assert!(report.is_success(), "{:?}", report.failures);
    let xattrs_of = |root: &Path| -> Vec<(PathBuf, String)> {
        snapshot(root).into_iter().map(|(k, v)| (k, v[v.find("xattrs=").unwrap()..].to_owned())).collect()
    };
    let ours = xattrs_of(&by_stealcp);
    assert_eq!(ours, xattrs_of(&by_cp));
    assert!(ours.iter().all(|(_, x)| !x.contains("posix_acl")), "{ours:?}");
    assert!(ours.iter().any(|(_, x)| x.contains("user.comment")), "{ours:?}");
}

/// As an unprivileged user with a supplementary group: the group of a file it may give that
/// group is kept, the owner is not, and set-user-ID/set-group-ID bits are dropped, as by
/// `cp -a`; a capability it may not set is left out silently, as by `cp -a`.
#[test]
fn an_unprivileged_copy_keeps_the_group_it_can_and_drops_set_id_bits_as_cp() {
    let Some(dir) = xattr_dir() else { return };
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and setpriv to stage another user's files");
        return;
    }
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let file = |name: &str, uid, gid, mode| {
        let path = src.join(name);
        fs::write(&path, name).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    file("root-in-member-group-setgid", 0, 4242, 0o2755);
    file("root-setuid", 0, 0, 0o4755);
    file("own-setuid", 65534, 65534, 0o4755);
    let cap = file("own-cap", 65534, 65534, 0o755);
    xattr::set(&cap, "security.capability", &capability()).unwrap();
    fs::create_dir(src.join("sticky-dir")).unwrap();
    std::os::unix::fs::chown(src.join("sticky-dir"), Some(0), Some(4242)).unwrap();
    fs::set_permissions(src.join("sticky-dir"), fs::Permissions::from_mode(0o3777)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&src, Some(65534), Some(65534)).unwrap();
    let as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--groups=4242"];
    let by_cp = dir.path().join("by_cp");
    let out = run("cp", &["-a"], &src, &by_cp, &as_nobody);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = snapshot(&by_cp);
    assert!(expected[Path::new("root-in-member-group-setgid")].contains(" 65534:4242 mode=755"), "{expected:?}");
    let by_stealcp = dir.path().join("by_stealcp");
    let out = run(stealcp(), &["-a"], &src, &by_stealcp, &as_nobody);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshot(&by_stealcp), expected);
}

/// Copies into a directory with a default ACL, which new entries inherit: `-a` takes it away
/// again from the copies whose source has none, as `cp -a`, in a tree made new, in one that
/// existed (files written into, one file made new beside them) and for one file copied alone;
/// `-r` leaves what they inherited, as `cp -r`.
#[test]
fn copies_into_a_directory_with_a_default_acl_match_cp() {
    let Some(dir) = xattr_dir() else { return };
    let src = dir.path().join("src");
    attr_tree(&src);
    for args in [&["-a"][..], &["-r"][..]] {
        let name = args.join("");
        let parents = [dir.path().join(format!("cp{name}")), dir.path().join(format!("stealcp{name}"))];
        for parent in &parents {
            fs::create_dir(parent).unwrap();
            xattr::set(parent, "system.posix_acl_default", &acl_755()).unwrap();
        }
        let [by_cp, by_stealcp] = &parents;
        for round in ["new tree", "existing tree"] {
            for (program, parent) in [("cp", by_cp), (stealcp(), by_stealcp)] {
                if round == "existing tree" {
                    fs::remove_file(parent.join("tree/plain")).unwrap();
                }
                let tree_args: Vec<&str> = args.iter().copied().chain(["-T"]).collect();
                let out = run(program, &tree_args, &src, &parent.join("tree"), &[]);
                assert!(out.status.success(), "{program} {round}: {}", String::from_utf8_lossy(&out.stderr));
                let out = run(program, args, &src.join("plain"), &parent.join("alone"), &[]);
                assert!(out.status.success(), "{program} {round}: {}", String::from_utf8_lossy(&out.stderr));
            }
            // (The parents themselves were made by this test, at different times.)
            let contents = |parent| {
                let mut all = snapshot(parent);
                all.remove(Path::new(""));
                all
            };
            let (ours, theirs) = (contents(by_stealcp), contents(by_cp));
            assert!(theirs[Path::new("tree/plain")].contains("posix_acl_access") == (name == "-r"), "{theirs:?}");
            if name == "-a" {
                assert_eq!(ours, theirs, "{args:?} {round}");
            } else {
                // The times are the copies' own: compare everything else.
                assert_eq!(untimed(ours), untimed(theirs), "{args:?} {round}");
            }
        }
    }
}
