//! GNU cp side by side (see `gnu_harness`) on file system cases: `--sparse=WHEN` (allocated
//! blocks compared with cp's, on the test directory's file system and on tmpfs), sources that
//! cannot be split into ranges (a large standard input, a FIFO with `--copy-contents`) under
//! both backends, a directory copied into itself, and extended attributes on special files.
//!
//! coreutils tests/cp cases these follow: sparse, sparse-2, sparse-extents, fiemap-2,
//! into-self, copy-FMR (FIFOs), preserve-xattr / special-xattr.

mod gnu_harness;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gnu_harness::{Run, User, both_runs, configurations, file, first_words, snapshot};

/// `len` bytes that are never a block of zeros (xorshift), for files whose zeros are placed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&(x | 0x0101_0101_0101_0101).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Asserts that two runs agree on status and messages (and returns the context to show).
fn agree(by_cp: &Run, by_us: &Run, what: &str) -> String {
    let context = format!(
        "{what}\ncp: status {:?}, stderr:\n{}\nstealcp: status {:?}, stderr:\n{}",
        by_cp.status, by_cp.stderr, by_us.status, by_us.stderr
    );
    assert_eq!(by_us.status, by_cp.status, "exit status: {context}");
    assert_eq!(first_words(&by_us.stderr, "stealcp"), first_words(&by_cp.stderr, "/usr/bin/cp"), "messages: {context}");
    context
}

/// Blocks allocated to `path` (512-byte units), and its contents.
fn blocks_and_contents(path: &Path) -> (u64, Vec<u8>) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.blocks(), fs::read(path).unwrap())
}

/// Small files with zeros in them: an aligned 64 KiB run, an unaligned 10 000-byte run, a
/// 5 000-byte zero tail; a file of zeros only; a sparse file with a little data.
fn zeros_tree(dir: &Path) {
    fs::create_dir(dir.join("src")).unwrap();
    let mut z = noise(1 << 20, 7);
    z[65536..131072].fill(0);
    z[300_000..310_000].fill(0);
    z.extend_from_slice(&[0; 5000]);
    fs::write(dir.join("src/z"), &z).unwrap();
    fs::write(dir.join("src/zeros"), vec![0u8; 200_000]).unwrap();
    let mut sparse = fs::File::create(dir.join("src/sparse")).unwrap();
    sparse.seek(SeekFrom::Start(3 << 20)).unwrap();
    // Zeros written inside the data: cp makes holes of them too, with `auto` as well.
    sparse.write_all(&[noise(10_000, 3), vec![0; 65536], noise(5000, 4)].concat()).unwrap();
    sparse.set_len(6 << 20).unwrap();
    file(dir, "src/small", "no zeros\n", 0o644);
}

#[test]
fn sparse_when_makes_the_holes_cp_makes() {
    for mode in ["--sparse=always", "--sparse=auto", "--sparse=never"] {
        let args = ["-r", mode, "src", "out"];
        for (user, extra) in configurations() {
            let Some((by_cp, by_us)) = both_runs(&zeros_tree, &args, None, user, extra) else {
                return eprintln!("skipped: /usr/bin/cp is not GNU cp");
            };
            let context = agree(&by_cp, &by_us, &format!("{extra:?} {args:?} as {user:?}"));
            assert_eq!(snapshot(by_us.dir.path(), false), snapshot(by_cp.dir.path(), false), "tree: {context}");
            for name in ["z", "zeros", "sparse", "small"] {
                let ours = blocks_and_contents(&by_us.dir.path().join("out").join(name));
                let theirs = blocks_and_contents(&by_cp.dir.path().join("out").join(name));
                assert_eq!(ours.0, theirs.0, "blocks of {name}: {context}");
                assert!(ours.1 == theirs.1, "contents of {name}: {context}");
            }
            if mode == "--sparse=always" {
                let (blocks, _) = blocks_and_contents(&by_us.dir.path().join("out/zeros"));
                assert_eq!(blocks, 0, "a file of zeros is all hole");
            }
        }
    }
}

/// A file large enough to be split into ranges (80 MiB, a 40 MiB run of zeros inside), and a
/// 70 MiB sparse file with data (zeros written among it) across the 32 MiB boundary of two
/// ranges and 3 bytes near its end.
fn large_tree(dir: &Path) {
    static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let big = BIG.get_or_init(|| {
        let mut big = noise(80 << 20, 11);
        big[10 << 20..50 << 20].fill(0);
        big.extend_from_slice(&[0; 3000]);
        big
    });
    fs::write(dir.join("big"), big).unwrap();
    let mut sparse = fs::File::create(dir.join("sparse")).unwrap();
    sparse.seek(SeekFrom::Start((32 << 20) - 40_000)).unwrap();
    sparse.write_all(&[noise(8192, 21), vec![0; 65536], noise(8192, 22)].concat()).unwrap();
    sparse.seek(SeekFrom::Start(66 << 20)).unwrap();
    sparse.write_all(b"abc").unwrap();
    sparse.set_len(70 << 20).unwrap();
}

/// Temporary directories on tmpfs, kept until the test ends, each open to 65534.
struct OnTmpfs(std::cell::RefCell<Vec<tempfile::TempDir>>);

impl OnTmpfs {
    fn new_dir(&self) -> Option<PathBuf> {
        let dir = tempfile::Builder::new().prefix("stealcp-gnu-fs").tempdir_in("/dev/shm").ok()?;
        let path = dir.path().to_path_buf();
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        }
        self.0.borrow_mut().push(dir);
        Some(path)
    }
}

#[test]
fn sparse_when_on_split_files_and_on_tmpfs_makes_the_holes_cp_makes() {
    let tmpfs = OnTmpfs(Default::default());
    let on_tmpfs = fs::metadata("/dev/shm").is_ok_and(|m| m.is_dir()) && tmpfs.new_dir().is_some();
    if !on_tmpfs {
        eprintln!("tmpfs cases skipped: no writable /dev/shm");
    }
    for into_tmpfs in [false, true].into_iter().filter(|&t| !t || on_tmpfs) {
        let setup = |dir: &Path| {
            large_tree(dir);
            match into_tmpfs {
                true => std::os::unix::fs::symlink(tmpfs.new_dir().unwrap(), dir.join("out")).unwrap(),
                false => fs::create_dir(dir.join("out")).unwrap(),
            }
        };
        for mode in ["--sparse=always", "--sparse=never", "--sparse=auto"] {
            let args = [mode, "big", "sparse", "out/"];
            // Each run writes some 300 MB: as 65534 only for `always` on the test directory.
            let all = mode == "--sparse=always" && !into_tmpfs;
            for (user, extra) in configurations().into_iter().filter(|&(user, _)| all || user == User::Me) {
                let Some((by_cp, by_us)) = both_runs(&setup, &args, None, user, extra) else {
                    return eprintln!("skipped: /usr/bin/cp is not GNU cp");
                };
                let context = agree(&by_cp, &by_us, &format!("{extra:?} {args:?} as {user:?}, tmpfs {into_tmpfs}"));
                for name in ["big", "sparse"] {
                    let ours = blocks_and_contents(&by_us.dir.path().join("out").join(name));
                    let theirs = blocks_and_contents(&by_cp.dir.path().join("out").join(name));
                    assert_eq!(ours.0, theirs.0, "blocks of {name}: {context}");
                    assert!(ours.1 == theirs.1, "contents of {name}: {context}");
                    assert!(
                        ours.1 == fs::read(by_us.dir.path().join(name)).unwrap(),
                        "{name} is its source: {context}"
                    );
                }
            }
        }
    }
}

/// Runs stealcp in `dir` as `user` with `stdin`, returning (status, stderr).
fn stealcp_in(dir: &Path, user: User, args: &[&str], stdin: Stdio) -> (Option<i32>, String) {
    let program = env!("CARGO_BIN_EXE_stealcp");
    let mut command = match user {
        User::Me => Command::new(program),
        User::Nobody => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
            c
        }
    };
    let out = command.args(args).current_dir(dir).stdin(stdin).stderr(Stdio::piped()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A directory for `user` to write in.
fn workdir(user: User) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if user == User::Nobody {
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    }
    dir
}

#[test]
fn a_large_standard_input_is_copied_whole_by_both_backends() {
    // Larger than a split (64 MiB): from a file (stdin is then a regular file, which a worker
    // process cannot reopen as its own /dev/stdin) and from a pipe.
    let data = noise(70 << 20, 5);
    let source = tempfile::NamedTempFile::new().unwrap();
    fs::write(source.path(), &data).unwrap();
    fs::set_permissions(source.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for (user, extra) in configurations() {
        for (from_pipe, name) in [(false, "/dev/stdin"), (true, "/dev/stdin"), (false, "/proc/self/fd/0")] {
            if from_pipe && user == User::Nobody {
                // The pipe is made here, by root: 65534 may not open it by name (cp neither;
                // `standard_input_from_a_pipe_is_copied_as_cp_copies_it` compares that).
                continue;
            }
            let dir = workdir(user);
            let mut args: Vec<&str> = extra.to_vec();
            args.extend([name, "out"]);
            let (status, stderr) = if from_pipe {
                let mut writer = Command::new("cat").arg(source.path()).stdout(Stdio::piped()).spawn().unwrap();
                let pipe = writer.stdout.take().unwrap();
                let result = stealcp_in(dir.path(), user, &args, Stdio::from(pipe));
                writer.wait().unwrap();
                result
            } else {
                stealcp_in(dir.path(), user, &args, Stdio::from(fs::File::open(source.path()).unwrap()))
            };
            let what = format!("{args:?} as {user:?}, from a pipe: {from_pipe}");
            assert_eq!(status, Some(0), "{what}: {stderr}");
            let copy = fs::read(dir.path().join("out")).unwrap();
            assert!(copy.len() == data.len() && copy == data, "{what}: {} bytes, not the input", copy.len());
        }
    }
}

#[test]
fn standard_input_from_a_pipe_is_copied_as_cp_copies_it() {
    let input = noise(1 << 20, 9);
    let none = |_: &Path| {};
    gnu_harness::same_as_cp_with(none, &["/dev/stdin", "out"], Some(&input), Default::default());
    gnu_harness::same_as_cp_with(none, &["--sparse=never", "/dev/stdin", "out"], Some(&input), Default::default());
}

/// Writes `data` into the FIFO `path` once a reader opens it; gives up (returning false) if
/// none does within `wait`.
fn feed_fifo(path: PathBuf, data: Vec<u8>, wait: std::time::Duration) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        use std::os::unix::fs::OpenOptionsExt;
        let deadline = std::time::Instant::now() + wait;
        let fifo = loop {
            // Non-blocking: fails with ENXIO until there is a reader, so a copy that never
            // opens the FIFO cannot leave this thread blocked.
            match fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(&path) {
                Ok(f) => break f,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        };
        let flags = nix::fcntl::fcntl(&fifo, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fifo, nix::fcntl::FcntlArg::F_SETFL(blocking)).unwrap();
        (&fifo).write_all(&data).is_ok()
    })
}

#[test]
fn a_fifo_read_with_copy_contents_is_copied_whole_by_both_backends() {
    let data = noise(70 << 20, 13);
    for (user, extra) in configurations() {
        let dir = workdir(user);
        fs::create_dir(dir.path().join("tree")).unwrap();
        fs::write(dir.path().join("tree/plain"), b"plain\n").unwrap();
        nix::unistd::mkfifo(&dir.path().join("tree/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        if user == User::Nobody {
            let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(dir.path()).status().unwrap();
            assert!(chown.success());
        }
        let feeder = feed_fifo(dir.path().join("tree/fifo"), data.clone(), std::time::Duration::from_secs(60));
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["-r", "--copy-contents", "tree", "out"]);
        let (status, stderr) = stealcp_in(dir.path(), user, &args, Stdio::null());
        assert!(feeder.join().unwrap(), "{args:?} as {user:?}: the FIFO was not read to its end: {stderr}");
        assert_eq!(status, Some(0), "{args:?} as {user:?}: {stderr}");
        let copy = fs::read(dir.path().join("out/fifo")).unwrap();
        assert!(copy == data, "{args:?} as {user:?}: {} bytes, not what went into the FIFO", copy.len());
        assert_eq!(fs::read(dir.path().join("out/plain")).unwrap(), b"plain\n");
    }
}

/// A source tree `d` (files and directories at two depths).
fn self_tree(dir: &Path) {
    file(dir, "d/a", "a\n", 0o644);
    file(dir, "d/sub/b", "b\n", 0o644);
    file(dir, "d/z/q", "q\n", 0o600);
    file(dir, "d/sub/deeper/c", "c\n", 0o644);
    file(dir, "d/m", "m\n", 0o644);
}

/// [`self_tree`] with an empty `d/x` there already.
fn self_tree_with_x(dir: &Path) {
    self_tree(dir);
    fs::create_dir(dir.join("d/x")).unwrap();
}

/// Every path under `dir`, relative to it.
fn paths_under(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    snapshot(dir, false).into_keys().collect()
}

/// What cp 9 copies of `source` into its own subdirectory `copy` (see `scan::IntoSelf`): in
/// each directory on the way from `source` to `copy`, the entries of lower inode numbers than
/// the next step, whole, and the next step (whose own copy is not copied). Read after the run,
/// from the run's directory, so it holds for cp's inode numbers and for stealcp's.
fn expected_into_self(source: &Path, copy: &Path) -> std::collections::BTreeSet<PathBuf> {
    use std::os::unix::fs::DirEntryExt;
    let steps: Vec<_> = copy.strip_prefix(source).unwrap().iter().map(PathBuf::from).collect();
    let mut out = std::collections::BTreeSet::new();
    let (mut dir, mut rel) = (source.to_path_buf(), PathBuf::new());
    for (i, step) in steps.iter().enumerate() {
        let entries: Vec<_> = fs::read_dir(&dir).unwrap().map(Result::unwrap).collect();
        let at = entries.iter().find(|e| Path::new(&e.file_name()) == step).map(|e| e.ino()).unwrap();
        for entry in entries.iter().filter(|e| e.ino() < at) {
            let name = rel.join(entry.file_name());
            out.insert(name.clone());
            out.extend(paths_under(&entry.path()).into_iter().map(|p| name.join(p)));
        }
        if i + 1 == steps.len() {
            break;
        }
        rel.push(step);
        out.insert(rel.clone());
        dir.push(step);
    }
    out
}

#[test]
fn a_directory_copied_into_itself_is_copied_as_cp_copies_it_and_never_loops() {
    type Setup = fn(&Path);
    // (tree, arguments, the source directory, where its copy is)
    let cases: [(Setup, &[&str], &str, &str); 10] = [
        (self_tree, &["-r", "d", "d/x"], "d", "d/x"),
        (self_tree, &["-r", "d/", "d/x"], "d", "d/x"),
        (self_tree, &["-a", "d", "d/x"], "d", "d/x"),
        (self_tree, &["-r", "d", "d"], "d", "d/d"),
        (self_tree, &["-r", "d", "d/"], "d", "d/d"),
        (self_tree, &["-r", "d/sub", "d/sub/x"], "d/sub", "d/sub/x"),
        (self_tree, &["-r", "d", "./d/x"], "d", "d/x"),
        (self_tree, &["-R", "d", "d/sub/deeper/x"], "d", "d/sub/deeper/x"),
        (self_tree, &["-r", "d/.", "d/x"], "d", "d/x"),
        (self_tree_with_x, &["-r", "d", "d/x"], "d", "d/x/d"),
    ];
    for (setup, args, source, copy) in cases {
        for (user, extra) in configurations() {
            let Some((by_cp, by_us)) = both_runs(&setup, args, None, user, extra) else {
                return eprintln!("skipped: /usr/bin/cp is not GNU cp");
            };
            let context = agree(&by_cp, &by_us, &format!("{extra:?} {args:?} as {user:?}"));
            for (who, run) in [("cp", &by_cp), ("stealcp", &by_us)] {
                let (source, copy) = (run.dir.path().join(source), run.dir.path().join(copy));
                let expected = expected_into_self(&source, &copy);
                assert_eq!(paths_under(&copy), expected, "what {who} copied: {context}");
                let (copied, sources) = (snapshot(&copy, false), snapshot(&source, false));
                for (path, what) in copied {
                    let like = sources.get(&path).unwrap_or_else(|| panic!("{who}: {path:?} has no source"));
                    assert_eq!(&what, like, "{who}: {path:?} is not a copy of its source: {context}");
                }
            }
        }
    }
}

#[test]
fn into_itself_where_cp_stops_before_copying() {
    // The copy's parent does not exist; the source is its own destination.
    gnu_harness::same_as_cp(self_tree, &["-r", "d", "d/x/y"]);
    gnu_harness::same_as_cp(self_tree, &["-r", "d/sub", "d"]);
    gnu_harness::same_as_cp(self_tree, &["-a", "d/sub", "d/"]);
}

/// Every entry's extended attributes (not followed), by path.
fn xattrs_under(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<(String, Vec<u8>)>> {
    let mut out = std::collections::BTreeMap::new();
    for rel in paths_under(root) {
        let path = root.join(&rel);
        let mut names: Vec<_> = xattr::list(&path).map(|n| n.collect()).unwrap_or_else(|_| Vec::new());
        names.sort();
        let values = names
            .iter()
            .filter_map(|n| Some((n.to_string_lossy().into_owned(), xattr::get(&path, n).ok()??)))
            .collect();
        out.insert(rel, values);
    }
    out
}

/// The bytes of a POSIX access ACL: user::rw- user:65534:r-- group::r-- mask::r-- other::r--.
fn acl_644() -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(1u16, 6u16, u32::MAX), (2, 4, 65534), (4, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 4, u32::MAX)]
    {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// Special files with extended attributes, where this run may make them: a FIFO and (as root)
/// a character device with a `trusted.*` attribute (root only) and an ACL, a symlink with a
/// `trusted.*` attribute, a file with a `user.*` one. Returns what could not be made.
fn special_xattr_tree(dir: &Path) -> Vec<String> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let mut missing = Vec::new();
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    file(dir, "src/f", "f\n", 0o644);
    nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    let root = nix::unistd::geteuid().is_root();
    if root {
        mknod(&src.join("null"), SFlag::S_IFCHR, Mode::from_bits_truncate(0o644), makedev(1, 3)).unwrap();
    } else {
        missing.push("a device (not root)".to_owned());
    }
    std::os::unix::fs::symlink("f", src.join("link")).unwrap();
    let mut set = |name: &str, key: &str, value: &[u8]| {
        if let Err(e) = xattr::set(src.join(name), key, value) {
            missing.push(format!("{key} on {name}: {e}"));
        }
    };
    set("f", "user.u", b"file");
    for special in ["fifo", "null"].into_iter().filter(|&n| n == "fifo" || root) {
        set(special, "trusted.t", b"special");
        set(special, "system.posix_acl_access", &acl_644());
    }
    set("link", "trusted.l", b"link");
    missing
}

#[test]
fn extended_attributes_of_fifos_devices_and_symlinks_are_kept_as_cp_keeps_them() {
    let probe = tempfile::tempdir().unwrap();
    let missing = special_xattr_tree(probe.path());
    if !missing.is_empty() {
        eprintln!("partly skipped, this file system or user cannot have: {}", missing.join("; "));
    }
    let setup = |dir: &Path| {
        special_xattr_tree(dir);
    };
    let cases: [&[&str]; 5] = [
        &["-a", "src", "out"],
        &["-r", "--preserve=xattr", "src", "out"],
        &["-r", "--preserve=mode", "src", "out"],
        &["-r", "src", "out"],
        &["-a", "src/fifo", "src/null", "src/link", "."],
    ];
    for args in cases {
        for (user, extra) in configurations() {
            let args: Vec<&str> = match args.last() {
                // Named specials are copied beside the tree, as copies of their own.
                Some(&".") if user == User::Me => vec!["-a", "src/fifo", "src/link", "src/null", "out"],
                Some(&".") => vec!["-a", "src/fifo", "src/link", "out"],
                _ => args.to_vec(),
            };
            let named = args.len() > 4;
            let setup = |dir: &Path| {
                setup(dir);
                if named {
                    fs::create_dir(dir.join("out")).unwrap();
                }
            };
            let Some((by_cp, by_us)) = both_runs(&setup, &args, None, user, extra) else {
                return eprintln!("skipped: /usr/bin/cp is not GNU cp");
            };
            let context = agree(&by_cp, &by_us, &format!("{extra:?} {args:?} as {user:?}"));
            assert_eq!(snapshot(by_us.dir.path(), false), snapshot(by_cp.dir.path(), false), "tree: {context}");
            let (ours, theirs) =
                (xattrs_under(&by_us.dir.path().join("out")), xattrs_under(&by_cp.dir.path().join("out")));
            assert_eq!(ours, theirs, "xattrs: {context}");
            if user == User::Me && args[0] == "-a" && missing.is_empty() {
                let fifo = &ours[Path::new("fifo")];
                assert!(fifo.iter().any(|(n, _)| n == "trusted.t"), "the FIFO's own attribute is kept: {fifo:?}");
            }
        }
    }
}
