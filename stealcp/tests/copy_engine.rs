//! The copy engine (`stealpool::copy`) used as a library: what happens when the tree changes
//! under it, when its executor shuts down mid-copy, and when `-L` meets a symlink loop.
#![cfg(unix)]

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use stealcp::{CopyOptions, CopyReport, EntryKind, Failure, Observer, Target};
use stealpool::ThreadPoolExecutor;

fn tree_with_files(root: &Path, n: usize) {
    fs::create_dir_all(root.join("sub")).unwrap();
    for i in 0..n {
        fs::write(root.join("sub").join(format!("f{i:03}")), format!("{i}")).unwrap();
    }
}

fn temps_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().as_bytes().starts_with(stealcp::TEMP_PREFIX.as_bytes()) {
                out.push(e.path());
            } else if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn run(src: &Path, dest: &Path, options: &CopyOptions, observer: &mut dyn Observer) -> CopyReport {
    let plan = stealcp::plan(&[src.to_path_buf()], &Target::Auto(dest.to_path_buf()), options).unwrap();
    let pool = ThreadPoolExecutor::new(2);
    stealcp::copy(&plan, options, &pool, observer).unwrap()
}

/// Deletes one file as soon as the walk reports it, before any worker can copy it.
struct Vanish {
    victim: PathBuf,
    done: bool,
}

impl Observer for Vanish {
    fn found(&mut self, files: u64, _bytes: u64) {
        if files > 0 && !self.done {
            fs::remove_file(&self.victim).unwrap();
            self.done = true;
        }
    }
}

#[test]
fn a_file_that_vanishes_after_the_walk_is_a_listed_failure_and_the_rest_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree_with_files(&src, 40);
    let victim = src.join("sub/f007");
    let dest = dir.path().join("dest");
    let mut observer = Vanish { victim: victim.clone(), done: false };
    let report = run(&src, &dest, &CopyOptions::archive(), &mut observer);
    assert!(observer.done, "the walk never reported the files");
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let failure = &report.failures[0];
    assert_eq!((failure.path.as_path(), failure.action), (victim.as_path(), "open"));
    assert_eq!(failure.error.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(report.files, 39);
    assert!(!dest.join("sub/f007").exists());
    assert_eq!(fs::read_to_string(dest.join("sub/f039")).unwrap(), "39");
    assert!(temps_under(&dest).is_empty());
}

/// Shuts the pool down as soon as the first file is found.
struct ShutDown<'a> {
    pool: &'a ThreadPoolExecutor,
}

impl Observer for ShutDown<'_> {
    fn found(&mut self, _files: u64, _bytes: u64) {
        self.pool.shutdown(true, true);
    }
}

#[test]
fn an_executor_shut_down_mid_copy_ends_the_copy_with_an_error_and_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree_with_files(&src, 300);
    let options = CopyOptions::archive();

    // A new destination was being built under a temporary name: it never appears, and its
    // staging directory is gone.
    let fresh = dir.path().join("fresh");
    let plan = stealcp::plan(std::slice::from_ref(&src), &Target::Auto(fresh.clone()), &options).unwrap();
    let pool = ThreadPoolExecutor::new(2);
    let result = stealcp::copy(&plan, &options, &pool, &mut ShutDown { pool: &pool });
    assert!(result.is_err(), "the copy went on after its executor shut down");
    assert!(!fresh.exists(), "an unfinished new tree appeared under its final name");
    assert!(temps_under(dir.path()).is_empty(), "{:?}", temps_under(dir.path()));

    // Into an existing destination: whatever did get copied is complete.
    let existing = dir.path().join("existing");
    fs::create_dir_all(existing.join("sub")).unwrap();
    let mut merge = src.clone().into_os_string();
    merge.push("/.");
    let plan = stealcp::plan(&[merge.into()], &Target::Auto(existing.clone()), &options).unwrap();
    let pool = ThreadPoolExecutor::new(2);
    assert!(stealcp::copy(&plan, &options, &pool, &mut ShutDown { pool: &pool }).is_err());
    assert!(temps_under(dir.path()).is_empty(), "{:?}", temps_under(dir.path()));
    for e in fs::read_dir(existing.join("sub")).into_iter().flatten().flatten() {
        let name = e.file_name();
        let n: usize = name.to_str().unwrap()[1..].parse().unwrap();
        assert_eq!(fs::read_to_string(e.path()).unwrap(), n.to_string());
    }
}

#[test]
fn dereferencing_a_symlink_loop_reports_it_instead_of_recursing_forever() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree_with_files(&src, 3);
    symlink("..", src.join("sub/up")).unwrap();
    let dest = dir.path().join("dest");
    let options = CopyOptions { dereference: true, ..CopyOptions::archive() };
    let report = run(&src, &dest, &options, &mut stealcp::Quiet);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(report.failures[0].path.ends_with("sub/up"), "{}", report.failures[0]);
    assert!(report.failures[0].to_string().contains("loop"), "{}", report.failures[0]);
    assert_eq!(fs::read_to_string(dest.join("sub/f002")).unwrap(), "2");
}

/// Counts what the observer is told, to check it against the report.
#[derive(Default)]
struct Tally {
    /// What `wants_totals` answers.
    totals: bool,
    found: (u64, u64),
    progressed: u64,
    /// The most bytes one `progressed` call reported.
    largest_step: u64,
    copied: Vec<EntryKind>,
    destinations: Vec<PathBuf>,
    failed: usize,
}

impl Observer for Tally {
    fn wants_totals(&self) -> bool {
        self.totals
    }
    fn found(&mut self, files: u64, bytes: u64) {
        self.found.0 += files;
        self.found.1 += bytes;
    }
    fn progressed(&mut self, bytes: u64) {
        self.progressed += bytes;
        self.largest_step = self.largest_step.max(bytes);
    }
    fn copied(&mut self, kind: EntryKind, _: &Path, destination: &Path) {
        self.copied.push(kind);
        self.destinations.push(destination.to_path_buf());
    }
    fn failed(&mut self, _: &Failure) {
        self.failed += 1;
    }
}

#[test]
fn the_observer_hears_every_entry_and_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree_with_files(&src, 10);
    fs::write(src.join("big"), vec![1u8; 3 << 20]).unwrap();
    symlink("big", src.join("link")).unwrap();
    fs::hard_link(src.join("big"), src.join("big-again")).unwrap();
    let dest = dir.path().join("dest");
    let mut tally = Tally { totals: true, ..Tally::default() };
    let report = run(&src, &dest, &CopyOptions::archive(), &mut tally);
    assert!(report.is_success(), "{:?}", report.failures);
    let count = |k| tally.copied.iter().filter(|&&c| c == k).count() as u64;
    assert_eq!((report.files, report.directories, report.symlinks, report.hard_links), (11, 2, 1, 1));
    assert_eq!(
        (count(EntryKind::File), count(EntryKind::Directory), count(EntryKind::Symlink), count(EntryKind::HardLink)),
        (11, 2, 1, 1)
    );
    let bytes = (3 << 20) + (0..10).map(|i: u64| i.to_string().len() as u64).sum::<u64>();
    assert_eq!(tally.found, (11, bytes));
    assert_eq!((tally.progressed, report.bytes), (bytes, bytes));
    assert_eq!(tally.failed, 0);
    // The new tree was built under a temporary name; the observer is told the final paths.
    for d in &tally.destinations {
        assert!(d.starts_with(&dest) && fs::symlink_metadata(d).is_ok(), "{d:?} is not a path of the copy");
    }
}

/// Without totals the walk reads no file's size or links: the workers find out as they open
/// each file and hand back what the coordinator must decide (another name of a file already
/// copied, a file to split, the rest of a batch past its share of bytes).
#[test]
fn without_totals_hard_links_large_files_and_heavy_batches_are_still_handled() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("a/shared"), "one inode, three names").unwrap();
    fs::hard_link(src.join("a/shared"), src.join("b/again")).unwrap();
    fs::hard_link(src.join("a/shared"), src.join("b/and-again")).unwrap();
    // Above the split size (64 MiB): copied in ranges, each reported on its own.
    let big: Vec<u8> = (0..(65u32 << 20) + 7).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("big"), &big).unwrap();
    // Twelve 3 MiB files in one directory: one batch by count, past a task's share of bytes.
    for i in 0..12u8 {
        fs::write(src.join("a").join(format!("mid{i}")), vec![i; 3 << 20]).unwrap();
    }
    let dest = dir.path().join("dest");
    let mut tally = Tally::default();
    let report = run(&src, &dest, &CopyOptions::archive(), &mut tally);
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!(tally.found, (0, 0), "found is only called for an observer that wants totals");
    assert_eq!((report.files, report.hard_links), (14, 2));
    let inode = |p: &str| fs::metadata(dest.join(p)).unwrap().ino();
    assert_eq!((inode("b/again"), inode("b/and-again")), (inode("a/shared"), inode("a/shared")));
    assert_eq!(fs::read_to_string(dest.join("b/again")).unwrap(), "one inode, three names");
    assert!(fs::read(dest.join("big")).unwrap() == big, "the split file differs");
    assert!(tally.largest_step <= 32 << 20, "the large file was not split: {} bytes at once", tally.largest_step);
    for i in 0..12u8 {
        assert!(fs::read(dest.join("a").join(format!("mid{i}"))).unwrap() == vec![i; 3 << 20], "mid{i}");
    }
    assert_eq!((tally.progressed, report.bytes), (report.bytes, big.len() as u64 + 22 + 12 * (3 << 20)));
}

/// Many directories of one depth are finished by the workers together: each still ends with
/// its source's mode and times, and the tree's top gets its own after them.
#[test]
fn many_sibling_directories_each_keep_their_mode_and_times() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let stamp = |i: i64| filetime::FileTime::from_unix_time(1_600_000_000 + i * 1000, (i as u32) * 7);
    for i in 0..70i64 {
        let d = src.join(format!("d{i:02}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f"), format!("{i}")).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(if i % 2 == 0 { 0o750 } else { 0o705 })).unwrap();
        filetime::set_file_times(&d, stamp(i), stamp(i)).unwrap();
    }
    filetime::set_file_times(&src, stamp(99), stamp(99)).unwrap();
    let dest = dir.path().join("dest");
    let report = run(&src, &dest, &CopyOptions::archive(), &mut stealcp::Quiet);
    assert!(report.is_success(), "{:?}", report.failures);
    for i in 0..70i64 {
        let meta = fs::metadata(dest.join(format!("d{i:02}"))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, if i % 2 == 0 { 0o750 } else { 0o705 }, "d{i:02}");
        assert_eq!(filetime::FileTime::from_last_modification_time(&meta), stamp(i), "d{i:02}");
    }
    let top = fs::metadata(&dest).unwrap();
    assert_eq!(filetime::FileTime::from_last_modification_time(&top), stamp(99));
}

/// A file left alone (`-n`) counts as progress with its size, even when the walk read no sizes.
#[test]
fn files_left_alone_count_as_progress_without_totals() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree_with_files(&src, 5);
    fs::write(src.join("sub/larger"), vec![7u8; 100_000]).unwrap();
    let dest = dir.path().join("dest");
    assert!(run(&src, &dest, &CopyOptions::archive(), &mut stealcp::Quiet).is_success());
    let mut tally = Tally::default();
    let options = CopyOptions { no_clobber: true, ..CopyOptions::archive() };
    // `src/.`: the contents of `src` into `dest` again, as `cp -n src/. dest` would.
    let report = run(&src.join("."), &dest, &options, &mut tally);
    assert!(report.is_success(), "{:?}", report.failures);
    assert_eq!((report.files, report.unchanged), (0, 6));
    assert_eq!(tally.progressed, 100_000 + 5);
}
