//! Drives the built `stealcp` on generated trees and compares with `cp -a`, byte for byte and mode
//! for mode. One test per behaviour.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

fn stealcp(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stealcp")).args(args).output().expect("run stealcp")
}

fn os<P: AsRef<OsStr> + ?Sized>(p: &P) -> &OsStr {
    p.as_ref()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What a tree looks like, entry by entry: type, mode, mtime (ns), contents or link target,
/// and which entries share an inode.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let kind = meta.file_type();
        let detail = if kind.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
            format!("dir mode={:o} mtime={}.{:09}", meta.mode() & 0o7777, meta.mtime(), meta.mtime_nsec())
        } else if kind.is_symlink() {
            format!("symlink -> {:?}", fs::read_link(&path).unwrap())
        } else if kind.is_fifo() || kind.is_socket() {
            let what = if kind.is_fifo() { "fifo" } else { "socket" };
            format!("{what} mode={:o} mtime={}.{:09}", meta.mode() & 0o7777, meta.mtime(), meta.mtime_nsec())
        } else {
            let link = if meta.nlink() > 1 {
                let first = inodes.entry(meta.ino()).or_insert_with(|| rel.clone());
                format!(" hardlink-group={first:?}")
            } else {
                String::new()
            };
            let contents = fs::read(&path).unwrap();
            format!(
                "file mode={:o} mtime={}.{:09} len={} sum={}{link}",
                meta.mode() & 0o7777,
                meta.mtime(),
                meta.mtime_nsec(),
                contents.len(),
                contents.iter().fold(0u64, |h, &b| h.wrapping_mul(1_099_511_628_211).wrapping_add(u64::from(b)))
            )
        };
        out.insert(rel, detail);
    }
    out
}

/// A tree with every kind of entry `cp -a` keeps.
fn sample_tree(root: &Path) {
    let sub = root.join("a/b/c");
    fs::create_dir_all(&sub).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join("top.txt"), "top level\n").unwrap();
    fs::write(root.join("a/empty-file"), "").unwrap();
    fs::write(sub.join("deep.txt"), "deep\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("a/big.bin"), &big).unwrap();
    for i in 0..200 {
        fs::write(root.join(format!("a/b/small-{i:03}")), format!("file {i}\n")).unwrap();
    }
    let script = root.join("a/run.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let secret = root.join("a/secret");
    fs::write(&secret, "s").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("../top.txt", root.join("a/rel-link")).unwrap();
    symlink("/nonexistent/target", root.join("a/dangling")).unwrap();
    fs::hard_link(root.join("top.txt"), root.join("a/b/top-again.txt")).unwrap();
    let odd = root.join(OsStr::from_bytes(b"caf\xe9 \xff name"));
    fs::write(&odd, "not utf-8").unwrap();
    let t = filetime::FileTime::from_unix_time(1_000_000_000, 123_456_789);
    filetime::set_file_mtime(root.join("a/big.bin"), t).unwrap();
    filetime::set_file_mtime(root.join("a/b/c"), t).unwrap();
}

#[test]
fn archive_copy_is_identical_to_cp_a() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let (by_cp, by_stealcp) = (dir.path().join("by_cp"), dir.path().join("by_stealcp"));
    assert!(Command::new("cp").arg("-a").arg(&src).arg(&by_cp).status().unwrap().success());
    // Without a bar the walk reads no file sizes (workers check links as they go); with
    // `--progress` it reads them for the totals: the same tree either way.
    for progress in [None, Some("--progress")] {
        let _ = fs::remove_dir_all(&by_stealcp);
        let mut args = vec![os("-a"), os(&src), os(&by_stealcp)];
        args.extend(progress.map(os));
        let out = stealcp(&args);
        assert!(out.status.success(), "{progress:?}: {}", stderr(&out));
        assert_eq!(snapshot(&by_stealcp), snapshot(&by_cp), "{progress:?}");
    }
}

#[test]
fn recursive_copy_without_preserve_matches_cp_r() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let (by_cp, by_stealcp) = (dir.path().join("by_cp"), dir.path().join("by_stealcp"));
    assert!(Command::new("cp").arg("-r").arg(&src).arg(&by_cp).status().unwrap().success());
    let out = stealcp(&[os("-r"), os(&src), os(&by_stealcp)]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without -p, times are the copy's own: compare everything else.
    let strip = |m: BTreeMap<PathBuf, String>| -> Vec<(PathBuf, String)> {
        m.into_iter()
            .map(|(k, v)| (k, v.split(' ').filter(|w| !w.starts_with("mtime=")).collect::<Vec<_>>().join(" ")))
            .collect()
    };
    assert_eq!(strip(snapshot(&by_stealcp)), strip(snapshot(&by_cp)));
}

#[test]
fn destination_naming_follows_cp() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("f.txt");
    fs::write(&file, "data").unwrap();
    // DEST does not exist: the copy is DEST.
    let as_name = dir.path().join("renamed.txt");
    assert!(stealcp(&[os(&file), os(&as_name)]).status.success());
    assert_eq!(fs::read_to_string(&as_name).unwrap(), "data");
    // DEST is a directory: the copy goes inside.
    let into = dir.path().join("into");
    fs::create_dir(&into).unwrap();
    assert!(stealcp(&[os(&file), os(&into)]).status.success());
    assert_eq!(fs::read_to_string(into.join("f.txt")).unwrap(), "data");
    // -t DIR with several sources.
    let other = dir.path().join("g.txt");
    fs::write(&other, "more").unwrap();
    let t = dir.path().join("t");
    fs::create_dir(&t).unwrap();
    assert!(stealcp(&[os("-t"), os(&t), os(&file), os(&other)]).status.success());
    assert_eq!(fs::read_to_string(t.join("g.txt")).unwrap(), "more");
    // A directory copied onto an existing directory goes inside it, as with cp -r.
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("x"), "x").unwrap();
    assert!(stealcp(&[os("-r"), os(&tree), os(&into)]).status.success());
    assert_eq!(fs::read_to_string(into.join("tree/x")).unwrap(), "x");
    // `tree/.` onto an existing directory merges the contents, as with cp -r.
    let merged = dir.path().join("merged");
    fs::create_dir(&merged).unwrap();
    assert!(stealcp(&[os("-r"), os(&tree.join(".")), os(&merged)]).status.success());
    assert_eq!(fs::read_to_string(merged.join("x")).unwrap(), "x");
    assert!(!merged.join("tree").exists());
}

#[test]
fn no_clobber_and_update() {
    let dir = TempDir::new().unwrap();
    let (src, dst) = (dir.path().join("src.txt"), dir.path().join("dst.txt"));
    fs::write(&src, "new").unwrap();
    fs::write(&dst, "old").unwrap();
    assert!(stealcp(&[os("-n"), os(&src), os(&dst)]).status.success());
    assert_eq!(fs::read_to_string(&dst).unwrap(), "old", "-n must not overwrite");

    // -u: the destination is newer, so it stays; then the source becomes newer.
    filetime::set_file_mtime(&src, filetime::FileTime::from_unix_time(1_000, 0)).unwrap();
    filetime::set_file_mtime(&dst, filetime::FileTime::from_unix_time(2_000, 0)).unwrap();
    assert!(stealcp(&[os("-u"), os(&src), os(&dst)]).status.success());
    assert_eq!(fs::read_to_string(&dst).unwrap(), "old");
    filetime::set_file_mtime(&src, filetime::FileTime::from_unix_time(3_000, 0)).unwrap();
    assert!(stealcp(&[os("-u"), os(&src), os(&dst)]).status.success());
    assert_eq!(fs::read_to_string(&dst).unwrap(), "new");
}

#[test]
fn bad_arguments_fail_before_any_work() {
    let dir = TempDir::new().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("x"), "x").unwrap();
    let out_dir = dir.path().join("out");

    let missing = stealcp(&[os(&dir.path().join("nope")), os(&out_dir)]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("cannot stat"), "{}", stderr(&missing));
    assert!(!out_dir.exists());

    let no_r = stealcp(&[os(&tree), os(&out_dir)]);
    assert_eq!(no_r.status.code(), Some(1));
    assert!(stderr(&no_r).contains("-r not specified; omitting directory"), "{}", stderr(&no_r));
    assert!(!out_dir.exists(), "nothing may be written after a bad argument");

    let into_itself = stealcp(&[os("-r"), os(&tree), os(&tree.join("inner"))]);
    assert_eq!(into_itself.status.code(), Some(1));
    assert!(stderr(&into_itself).contains("into itself"), "{}", stderr(&into_itself));
    // As cp 9: copied up to the copy itself, never into it (tests/gnu_fs.rs compares).
    assert!(!tree.join("inner/inner").exists());

    let not_dir = stealcp(&[os(&tree.join("x")), os(&tree.join("x")), os(&dir.path().join("file-target"))]);
    assert_eq!(not_dir.status.code(), Some(1));
    assert!(stderr(&not_dir).contains("No such file or directory"), "{}", stderr(&not_dir));

    let no_dest = stealcp(&[os(&tree)]);
    assert_eq!(no_dest.status.code(), Some(1));
    assert!(stderr(&no_dest).contains("missing destination"), "{}", stderr(&no_dest));
}

#[test]
fn a_failure_is_listed_and_the_rest_is_copied() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("blocked")).unwrap();
    fs::write(src.join("blocked/inner.txt"), "never copied").unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("ok-{i}")), format!("{i}")).unwrap();
    }
    let dst = dir.path().join("dst");
    fs::create_dir(&dst).unwrap();
    // The destination has a file where the source has a directory: that part must fail.
    let dst_tree = dst.join("src");
    fs::create_dir(&dst_tree).unwrap();
    fs::write(dst_tree.join("blocked"), "a file in the way").unwrap();

    let out = stealcp(&[os("-r"), os(&src), os(&dst)]);
    assert_eq!(out.status.code(), Some(1), "a failure must make the exit status non-zero");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line per failure: {err}");
    assert!(lines[0].starts_with("stealcp: cannot overwrite non-directory") && lines[0].contains("blocked"), "{err}");
    for i in 0..50 {
        assert_eq!(fs::read_to_string(dst_tree.join(format!("ok-{i}"))).unwrap(), format!("{i}"));
    }
}

#[test]
fn no_temporary_files_are_left_behind() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let dst = dir.path().join("dst");
    assert!(stealcp(&[os("-a"), os("--verify"), os(&src), os(&dst)]).status.success());
    let leftovers: Vec<_> = snapshot(&dst).into_keys().filter(|p| p.file_name().is_some_and(is_temp)).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn fifos_and_sockets_are_recreated_as_by_cp_a() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("plain"), "p").unwrap();
    nix::unistd::mkfifo(&src.join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let (by_cp, by_stealcp) = (dir.path().join("by_cp"), dir.path().join("by_stealcp"));
    assert!(Command::new("cp").arg("-a").arg(&src).arg(&by_cp).status().unwrap().success());
    for backend in ["thread", "process"] {
        let _ = fs::remove_dir_all(&by_stealcp);
        let out = stealcp(&[os("--backend"), os(backend), os("-a"), os(&src), os(&by_stealcp)]);
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        assert_eq!(snapshot(&by_stealcp), snapshot(&by_cp), "{backend}");
    }
    drop(listener);
}

#[test]
fn messages_name_the_program_as_it_was_run() {
    let dir = TempDir::new().unwrap();
    // Installed as `cp` (a symlink), it names itself `cp`, as GNU cp names itself.
    let cp = dir.path().join("cp");
    symlink(env!("CARGO_BIN_EXE_stealcp"), &cp).unwrap();
    let out = Command::new(&cp).arg(dir.path().join("missing")).arg(dir.path().join("x")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("cp: cannot stat '"), "{}", stderr(&out));
    let out = Command::new(&cp).output().unwrap();
    assert_eq!(stderr(&out), "cp: missing file operand\nTry 'cp --help' for more information.\n");
    let out = stealcp(&[os(&dir.path().join("missing")), os(&dir.path().join("x"))]);
    assert!(stderr(&out).starts_with("stealcp: cannot stat '"), "{}", stderr(&out));
}

#[test]
fn posixly_correct_writes_through_a_dangling_symlink_as_cp_does() {
    let run = |program: &str| {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("f"), "hi\n").unwrap();
        symlink("no-such", dir.path().join("dangle")).unwrap();
        let out = Command::new(program)
            .current_dir(dir.path())
            .env("POSIXLY_CORRECT", "1")
            .args(["f", "dangle"])
            .output()
            .unwrap();
        let target = fs::read_to_string(dir.path().join("no-such")).ok();
        (out.status.code(), target, fs::read_link(dir.path().join("dangle")).unwrap())
    };
    let ours = run(env!("CARGO_BIN_EXE_stealcp"));
    assert_eq!(ours, (Some(0), Some("hi\n".to_owned()), PathBuf::from("no-such")), "the target made through the link");
    if Path::new("/usr/bin/cp").exists() {
        assert_eq!(ours, run("/usr/bin/cp"), "as cp");
    }
    // Without it, refused (see gnu_existing.rs).
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("f"), "hi\n").unwrap();
    symlink("no-such", dir.path().join("dangle")).unwrap();
    let out = stealcp(&[os(&dir.path().join("f")), os(&dir.path().join("dangle"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.path().join("no-such").exists());
}

#[test]
fn no_clobber_keeps_a_destination_without_opening_a_fifo_source() {
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    fs::write(dir.path().join("kept"), "kept\n").unwrap();
    for option in ["-n", "-u"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stealcp"))
            .args([OsStr::new(option), fifo.as_os_str(), dir.path().join("kept").as_os_str()])
            .spawn()
            .unwrap();
        // As cp: nothing is read, so no writer is needed. Opening the FIFO would block until
        // one came: after a bound, this test is that writer, and fails.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                drop(fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(&fifo));
                break None;
            }
            std::thread::yield_now();
        };
        let finished = status.is_some();
        let status = status.unwrap_or_else(|| child.wait().unwrap());
        assert!(finished, "{option}: the copy opened the FIFO and waited for a writer");
        assert!(status.success(), "{option}: {status:?}");
        assert_eq!(fs::read_to_string(dir.path().join("kept")).unwrap(), "kept\n", "{option}");
    }
}

#[test]
fn a_fifo_named_without_r_is_read_like_a_file() {
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // As cp: the FIFO's contents are copied (it blocks until a writer comes and ends).
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::write(fifo, "through the fifo\n").unwrap())
    };
    let out = stealcp(&[os(&fifo), os(&dir.path().join("copy"))]);
    writer.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let copy = fs::symlink_metadata(dir.path().join("copy")).unwrap();
    assert!(copy.is_file(), "a regular file, not a FIFO");
    assert_eq!(fs::read_to_string(dir.path().join("copy")).unwrap(), "through the fifo\n");
}

#[test]
fn the_process_backend_gives_the_same_tree_as_cp_a() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let (by_cp, by_stealcp) = (dir.path().join("by_cp"), dir.path().join("by_stealcp"));
    assert!(Command::new("cp").arg("-a").arg(&src).arg(&by_cp).status().unwrap().success());
    let out = stealcp(&[os("--backend"), os("process"), os("-j"), os("2"), os("-a"), os(&src), os(&by_stealcp)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(&by_stealcp), snapshot(&by_cp));
}

#[test]
fn a_file_with_the_longest_possible_name_is_copied() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let long = "n".repeat(255);
    fs::write(src.join(&long), "long name").unwrap();
    for backend in ["thread", "process"] {
        let dst = dir.path().join(backend);
        let out = stealcp(&[os("--backend"), os(backend), os("-a"), os(&src), os(&dst)]);
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        assert_eq!(fs::read_to_string(dst.join(&long)).unwrap(), "long name");
    }
}

#[test]
fn help_shows_examples() {
    let out = stealcp(&[os("--help")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Examples:") && text.contains("-a, --archive"), "{text}");
}

/// Bytes that do not repeat in any short period, so a range copied to the wrong offset shows.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_large_file_is_split_across_workers_and_comes_out_whole() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    // Above the engine's split size (64 MiB) and not a multiple of its range size.
    let data = pseudo_random((100 << 20) + 12_345, 7);
    fs::write(src.join("big.bin"), &data).unwrap();
    fs::write(src.join("small.txt"), "small").unwrap();
    let (by_cp, by_stealcp) = (dir.path().join("by_cp"), dir.path().join("by_stealcp"));
    assert!(Command::new("cp").arg("-a").arg(&src).arg(&by_cp).status().unwrap().success());
    for backend in ["thread", "process"] {
        let _ = fs::remove_dir_all(&by_stealcp);
        let out = stealcp(&[
            os("--backend"),
            os(backend),
            os("-j"),
            os("3"),
            os("-a"),
            os("--verify"),
            os(&src),
            os(&by_stealcp),
        ]);
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        assert_eq!(snapshot(&by_stealcp), snapshot(&by_cp), "{backend}");
    }
}

#[test]
fn sparse_files_stay_sparse() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    // One small sparse file (copied whole) and one large one (copied in ranges), each with
    // data islands, a hole at the start and a hole at the end.
    for (name, len) in [("small-sparse", 5u64 << 20), ("large-sparse", 200 << 20)] {
        let f = fs::File::create(src.join(name)).unwrap();
        for (i, at) in [len / 5, len / 2, len * 4 / 5].into_iter().enumerate() {
            std::os::unix::fs::FileExt::write_all_at(&f, &pseudo_random(70_000, i as u64 + 1), at).unwrap();
        }
        f.set_len(len).unwrap();
    }
    let allocated = fs::metadata(src.join("large-sparse")).unwrap().blocks() * 512;
    if allocated >= 1 << 20 {
        eprintln!("skipped: this file system does not keep holes ({allocated} bytes allocated)");
        return;
    }
    for backend in ["thread", "process"] {
        let dst = dir.path().join(backend);
        let out = stealcp(&[os("--backend"), os(backend), os("-j"), os("2"), os("-a"), os(&src), os(&dst)]);
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        for name in ["small-sparse", "large-sparse"] {
            let (a, b) = (src.join(name), dst.join(name));
            assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap(), "{backend}: {name} differs");
            let (sa, sb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
            assert_eq!(sa.len(), sb.len());
            assert!(
                sb.blocks() <= sa.blocks() + 64,
                "{backend}: {name}: {} blocks, source {}",
                sb.blocks(),
                sa.blocks()
            );
        }
    }
}

#[test]
fn parents_appends_the_source_path_under_the_target() {
    let dir = TempDir::new().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("a/b")).unwrap();
    fs::write(tree.join("a/b/f.txt"), "f").unwrap();
    fs::set_permissions(tree.join("a"), fs::Permissions::from_mode(0o751)).unwrap();
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let by_cp = dir.path().join("by_cp");
    fs::create_dir(&by_cp).unwrap();
    // Relative sources, as people type them: run both from inside `tree`.
    let cp = Command::new("cp").current_dir(&tree).args(["-a", "--parents", "a/b/f.txt"]).arg(&by_cp).status();
    assert!(cp.unwrap().success());
    let out = Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .current_dir(&tree)
        .args(["-a", "--parents", "a/b/f.txt"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(out_dir.join("a/b/f.txt")).unwrap(), "f");
    // The two targets were made at different moments; everything under them must match.
    let below = |root: &Path| {
        let mut s = snapshot(root);
        s.remove(Path::new(""));
        s
    };
    assert_eq!(below(&out_dir), below(&by_cp));

    let file_target = dir.path().join("file-target");
    fs::write(&file_target, "x").unwrap();
    let refused = stealcp(&[os("--parents"), os(&tree.join("a/b/f.txt")), os(&file_target)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("Not a directory"), "{}", stderr(&refused));
    let up = Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .current_dir(tree.join("a"))
        .args(["--parents", "../a/b/f.txt"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(up.status.code(), Some(1));
    assert!(stderr(&up).contains("outside the target"), "{}", stderr(&up));
}

fn is_temp(name: &OsStr) -> bool {
    name.as_bytes().starts_with(stealcp::TEMP_PREFIX.as_bytes())
}

/// Polls until `dir` holds an entry that `wanted` accepts, or `child` exits.
fn wait_for_entry(dir: &Path, child: &mut std::process::Child, wanted: impl Fn(&OsStr) -> bool) -> Option<PathBuf> {
    loop {
        if let Ok(entries) = fs::read_dir(dir)
            && let Some(e) = entries.flatten().find(|e| wanted(&e.file_name()))
        {
            return Some(e.path());
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::yield_now();
    }
}

fn spawn_stealcp(args: &[&OsStr]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_stealcp")).args(args).stderr(std::process::Stdio::null()).spawn().unwrap()
}

/// The pid a temporary file's name carries (its writer: stealcp, or one of its worker processes).
fn temp_writer(temp: &Path) -> i32 {
    let name = temp.file_name().unwrap().to_str().unwrap();
    name[stealcp::TEMP_PREFIX.len()..].split('-').next().unwrap().parse().unwrap()
}

#[test]
fn a_run_killed_while_splitting_a_large_file_leaves_no_partial_file_and_the_next_run_cleans_up() {
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    // Large enough to be split into ranges, written by two workers into a named temporary file.
    let data = pseudo_random(192 << 20, 3);
    fs::write(src.join("big.bin"), &data).unwrap();
    fs::write(src.join("small.txt"), "small").unwrap();
    for backend in ["thread", "process"] {
        // Both runs copy `src` into the existing directory `target`, as `target/src`, which
        // exists too: files are written beside their final names (a new directory would be
        // built under a temporary name as a whole, see the next tests).
        let target = dir.path().join(backend);
        let dst = target.join("src");
        fs::create_dir_all(&dst).unwrap();
        let mut child =
            spawn_stealcp(&[os("--backend"), os(backend), os("-j"), os("2"), os("-a"), os(&src), os(&target)]);
        let temp = wait_for_entry(&dst, &mut child, is_temp);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let temp = temp.unwrap_or_else(|| panic!("{backend}: stealcp finished before a temporary file was seen"));
        assert_eq!(status.signal(), Some(9), "{backend}");
        assert!(!dst.join("big.bin").exists(), "{backend}: a split file appeared before its ranges were in");
        // A later run must find the writer gone, as it would after a real crash.
        let pid = temp_writer(&temp);
        while Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::yield_now();
        }

        let again = stealcp(&[os("--backend"), os(backend), os("-a"), os(&src), os(&target)]);
        assert!(again.status.success(), "{backend}: {}", stderr(&again));
        let leftovers: Vec<_> = fs::read_dir(&dst).unwrap().flatten().filter(|e| is_temp(&e.file_name())).collect();
        assert!(leftovers.is_empty(), "{backend}: {leftovers:?}");
        assert!(fs::read(dst.join("big.bin")).unwrap() == data, "{backend}");
    }
}

#[test]
fn a_run_killed_among_many_files_leaves_only_complete_files_and_no_temporary_names() {
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let files: Vec<Vec<u8>> = (0..600).map(|i| pseudo_random(256 << 10, i + 1)).collect();
    for (i, f) in files.iter().enumerate() {
        fs::write(src.join(format!("f{i:03}")), f).unwrap();
    }
    for backend in ["thread", "process"] {
        // Into an existing directory (merged, as `src/.` says): each file is staged alone.
        let dst = dir.path().join(backend);
        fs::create_dir(&dst).unwrap();
        let mut merged = src.clone().into_os_string();
        merged.push("/.");
        let mut child =
            spawn_stealcp(&[os("--backend"), os(backend), os("-j"), os("1"), os("-a"), os(&merged), os(&dst)]);
        let first = wait_for_entry(&dst, &mut child, |n| !is_temp(n));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(first.is_some(), "{backend}: stealcp ended before copying anything");
        assert_eq!(status.signal(), Some(9), "{backend}: stealcp finished before it could be killed");
        // Files are written unnamed (O_TMPFILE) where the file system allows: a killed run
        // leaves only complete files under their final names.
        for e in fs::read_dir(&dst).unwrap().flatten() {
            let name = e.file_name();
            if is_temp(&name) {
                continue; // a file system without O_TMPFILE: clearly named, cleaned next run
            }
            let i: usize = name.to_str().unwrap()[1..].parse().unwrap();
            assert!(fs::read(e.path()).unwrap() == files[i], "{backend}: {name:?} is not complete");
        }
    }
}

#[test]
fn a_new_directory_appears_only_once_complete_even_if_stealcp_is_killed() {
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..400 {
        fs::write(src.join("sub").join(format!("f{i:03}")), pseudo_random(256 << 10, i + 7)).unwrap();
    }
    for backend in ["thread", "process"] {
        let parent = dir.path().join(backend);
        fs::create_dir(&parent).unwrap();
        let dst = parent.join("copy");
        let mut child = spawn_stealcp(&[os("--backend"), os(backend), os("-j"), os("1"), os("-a"), os(&src), os(&dst)]);
        // The copy is built beside its destination, under a temporary name; wait until files
        // are going into it.
        let staging = loop {
            let found = wait_for_entry(&parent, &mut child, is_temp);
            let Some(staging) = found else { panic!("{backend}: stealcp ended before a staging directory was seen") };
            if fs::read_dir(staging.join("sub")).is_ok_and(|mut d| d.next().is_some()) {
                break staging;
            }
            assert!(child.try_wait().unwrap().is_none(), "{backend}: stealcp finished before it could be killed");
            std::thread::yield_now();
        };
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(9), "{backend}: stealcp finished before it could be killed");
        assert!(!dst.exists(), "{backend}: the destination appeared before the copy was complete");
        assert!(staging.is_dir(), "{backend}: the partial copy is clearly named: {staging:?}");

        let again = stealcp(&[os("--backend"), os(backend), os("-a"), os(&src), os(&dst)]);
        assert!(again.status.success(), "{backend}: {}", stderr(&again));
        assert!(!staging.exists(), "{backend}: the killed run's staging directory was removed");
        let left: Vec<_> = fs::read_dir(&parent).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, [OsStr::new("copy")], "{backend}");
        assert_eq!(snapshot(&dst), snapshot(&src), "{backend}");
    }
}

#[test]
fn a_staged_copy_whose_name_was_taken_meanwhile_stays_under_its_temporary_name() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "f").unwrap();
    // With --copy-contents the copy reads this FIFO inside its staged tree, so it is still
    // running while another program takes the destination's name.
    let fifo = src.join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let dst = dir.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let taker = {
        let (fifo, taken) = (fifo.clone(), dst.join("src"));
        std::thread::spawn(move || {
            // Opening blocks until the copy opens the FIFO to read it.
            let mut writer = fs::OpenOptions::new().write(true).open(&fifo)?;
            fs::write(&taken, "taken meanwhile")?;
            std::io::Write::write_all(&mut writer, b"through the fifo")
        })
    };
    let out = stealcp(&[os("-r"), os("--copy-contents"), os(&src), os(&dst)]);
    // Should the copy never have opened the FIFO, this releases the thread (whose write then fails).
    drop(fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(&fifo));
    taker.join().unwrap().expect("the copy read the FIFO");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let staged = err.lines().skip_while(|l| !l.starts_with("stealcp: cannot move the copy into place")).nth(1);
    assert!(staged.is_some_and(|l| l.starts_with("stealcp: the copied tree is at '")), "{err}");
    assert_eq!(fs::read_to_string(dst.join("src")).unwrap(), "taken meanwhile", "what took the name is kept");
    let temps: Vec<_> =
        fs::read_dir(&dst).unwrap().flatten().map(|e| e.path()).filter(|p| is_temp(p.file_name().unwrap())).collect();
    assert_eq!(temps.len(), 1, "the copy is kept under its clearly named temporary name: {temps:?}");
    assert_eq!(fs::read_to_string(temps[0].join("pipe")).unwrap(), "through the fifo");
    assert_eq!(fs::read_to_string(temps[0].join("f")).unwrap(), "f");
}

#[test]
fn stale_temporary_files_are_removed_and_live_ones_kept() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "f").unwrap();
    let dst = dir.path().join("dst");
    fs::create_dir_all(dst.join("src")).unwrap();
    // A process that has exited and been reaped: its pid names a dead writer.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let temp = |pid: u32| dst.join("src").join(format!("{}{pid}-0-f", stealcp::TEMP_PREFIX));
    fs::write(temp(dead_pid), "left by a killed run").unwrap();
    // This test process is alive: a file named as if it were being written by it must stay.
    fs::write(temp(std::process::id()), "in progress elsewhere").unwrap();
    let out = stealcp(&[os("-a"), os(&src), os(&dst)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!temp(dead_pid).exists(), "a dead run's temporary file was left");
    assert!(temp(std::process::id()).exists(), "a live writer's temporary file was removed");
    assert_eq!(fs::read_to_string(dst.join("src/f")).unwrap(), "f");
}

#[test]
fn a_file_of_the_source_named_like_a_stale_temporary_file_is_the_users() {
    let dir = TempDir::new().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let name = format!("{}{dead_pid}-0-f", stealcp::TEMP_PREFIX);
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    fs::write(src.join(&name), "the source's").unwrap();
    fs::write(dst.join(&name), "the destination's").unwrap();
    // As cp: -n keeps what is there (it is not a leftover: the source has that name too) ...
    let out = stealcp(&[os("-rn"), os(&src.join(".")), os(&dst)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(dst.join(&name)).unwrap(), "the destination's");
    // ... and without -n the source's copy replaces it.
    let out = stealcp(&[os("-r"), os(&src.join(".")), os(&dst)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(dst.join(&name)).unwrap(), "the source's");
}

/// Runs stealcp as an unprivileged user: as `nobody` through `setpriv` when the tests run as
/// root (root reads and writes through any mode bits), directly otherwise. `None` (with the
/// reason printed) if that is impossible here.
fn stealcp_unprivileged(args: &[&OsStr], root: &Path) -> Option<Output> {
    let me = fs::metadata(root).unwrap().uid();
    if me != 0 {
        return Some(stealcp(args));
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: running as root without setpriv; permission denial cannot be staged");
        return None;
    }
    // Let `nobody` reach the tree: the temporary directory is private to root.
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_stealcp")])
        .args(args)
        .output()
        .unwrap();
    Some(out)
}

#[test]
fn permission_errors_on_either_side_are_listed_and_the_rest_is_copied() {
    let dir = TempDir::new().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("closed-dir")).unwrap();
    fs::create_dir_all(src.join("open-dir")).unwrap();
    fs::write(src.join("closed-dir/inside"), "i").unwrap();
    fs::write(src.join("locked-file"), "l").unwrap();
    fs::write(src.join("open-dir/fine"), "f").unwrap();
    fs::write(src.join("fine"), "f").unwrap();
    for p in ["", "open-dir", "open-dir/fine", "fine", "closed-dir/inside"] {
        let mode = if p.ends_with("fine") || p.ends_with("inside") { 0o644 } else { 0o755 };
        fs::set_permissions(src.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(src.join("locked-file"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("closed-dir"), fs::Permissions::from_mode(0o000)).unwrap();
    // The destination already has `open-dir`, read-only: nothing can be created in it.
    let target = dir.path().join("target");
    fs::create_dir_all(target.join("src/open-dir")).unwrap();
    for p in [&target, &target.join("src")] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
    }
    fs::set_permissions(target.join("src/open-dir"), fs::Permissions::from_mode(0o555)).unwrap();
    for backend in ["thread", "process"] {
        let Some(out) =
            stealcp_unprivileged(&[os("--backend"), os(backend), os("-r"), os(&src), os(&target)], dir.path())
        else {
            return;
        };
        assert_eq!(out.status.code(), Some(1), "{backend}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 3, "one line per failure: {backend}: {err}");
        for (path, action) in [
            ("locked-file", "cannot open"),
            ("closed-dir", "cannot access"),
            ("open-dir/fine", "cannot create regular file"),
        ] {
            let line = err.lines().find(|l| l.contains(path) && l.starts_with(&format!("stealcp: {action} ")));
            let worded = line.is_some_and(|l| l.ends_with(": Permission denied"));
            assert!(worded, "{backend}: no '{action} ...{path}...: Permission denied' in {err}");
        }
        assert_eq!(fs::read_to_string(target.join("src/fine")).unwrap(), "f", "{backend}");
        assert!(!target.join("src/locked-file").exists() && !target.join("src/open-dir/fine").exists());
        fs::remove_file(target.join("src/fine")).unwrap();
    }
}

/// A small tmpfs, mounted for one test and always unmounted.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: PathBuf, size: &str) -> Option<SmallDisk> {
        fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(SmallDisk(path))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_files_that_do_not_fit_and_leaves_no_partial_files() {
    let dir = TempDir::new().unwrap();
    let Some(disk) = SmallDisk::mount(dir.path().join("disk"), "2m") else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root); a full disk cannot be staged");
        return;
    };
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let big = pseudo_random(3 << 20, 5);
    fs::write(src.join("too-big.bin"), &big).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("small-{i:02}")), format!("{i}")).unwrap();
    }
    for backend in ["thread", "process"] {
        let target = disk.0.join(backend);
        let out = stealcp(&[os("--backend"), os(backend), os("-a"), os(&src), os(&target)]);
        assert_eq!(out.status.code(), Some(1), "{backend}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("too-big.bin") && err.contains("No space left on device"), "{backend}: {err}");
        assert!(!target.join("too-big.bin").exists(), "{backend}: a partial file under its final name");
        for i in 0..20 {
            assert_eq!(fs::read_to_string(target.join(format!("small-{i:02}"))).unwrap(), i.to_string());
        }
        let temps: Vec<_> = fs::read_dir(&target).unwrap().flatten().filter(|e| is_temp(&e.file_name())).collect();
        assert!(temps.is_empty(), "{backend}: {temps:?}");
        fs::remove_dir_all(&target).unwrap();
    }
    drop(disk);
}

/// A FIFO in the source tree holds the copy open (`--copy-contents` reads it until its writer
/// closes it): the test takes the destination's name meanwhile, so renaming the staged tree
/// into place fails at the end, every time. The failure comes first, then where the tree is.
#[test]
fn a_new_tree_whose_name_was_taken_before_its_publish_says_where_it_is() {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let root = nix::unistd::geteuid().is_root();
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    let mut runs = vec![("thread", false), ("process", false)];
    if root && setpriv {
        runs.push(("thread", true));
    } else {
        eprintln!("unprivileged run skipped: {}", if root { "no setpriv" } else { "not root" });
    }
    for (backend, unprivileged) in runs {
        let dir = TempDir::new().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), "f\n").unwrap();
        nix::unistd::mkfifo(&src.join("p"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let parent = dir.path().join("out");
        fs::create_dir(&parent).unwrap();
        let dst = parent.join("copy");
        let args = [os("--backend"), os(backend), os("-r"), os("--copy-contents"), os(&src), os(&dst)];
        let mut command = if unprivileged {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
            let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(dir.path()).status().unwrap();
            assert!(chown.success());
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_stealcp")]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_stealcp"))
        };
        let child =
            command.args(args).stdin(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        // Killed and reaped if the test fails before it ends (it would wait on the FIFO forever).
        let mut child = Reaped(Some(child));
        let running = child.0.as_mut().unwrap();
        let staging = wait_for_entry(&parent, running, is_temp);
        let staging = staging.unwrap_or_else(|| panic!("{backend}: stealcp ended before staging its copy"));
        fs::create_dir(&dst).unwrap();
        // The copy reads the FIFO until it is closed: open it once a reader has it open
        // (no reader: ENXIO), write, close.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut fifo = loop {
            match fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(src.join("p")) {
                Ok(fifo) => break fifo,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => {
                    assert!(running.try_wait().unwrap().is_none(), "{backend}: stealcp ended without reading the FIFO");
                    assert!(std::time::Instant::now() < deadline, "{backend}: the FIFO was not opened within 60 s");
                    std::thread::yield_now();
                }
                Err(e) => panic!("{backend}: open the FIFO: {e}"),
            }
        };
        fifo.write_all(b"through the fifo\n").unwrap();
        drop(fifo);
        let out = child.0.take().unwrap().wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{backend}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines,
            [
                format!("stealcp: cannot move the copy into place at '{}': File exists", dst.display()).as_str(),
                format!("stealcp: the copied tree is at '{}'", staging.display()).as_str(),
            ],
            "{backend}, unprivileged: {unprivileged}"
        );
        assert_eq!(fs::read_to_string(staging.join("p")).unwrap(), "through the fifo\n", "{backend}");
        assert_eq!(fs::read_to_string(staging.join("sub/f")).unwrap(), "f\n", "{backend}");
        assert_eq!(fs::read_dir(&dst).unwrap().count(), 0, "{backend}: what took the name is left alone");
    }
}

/// A child killed and reaped when dropped, unless taken out (a failing test leaves no process).
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
