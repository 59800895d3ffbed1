//! The copy engine (the `stealcp` library, what the `stealcp` binary runs) on both pools,
//! against a plain sequential copy in Rust (`std::fs::copy` over a walk, modes and times kept).
//!
//! - `small_files`: 2,000 files of 4 KiB in 40 directories.
//! - `large_file`: one 128 MiB file (the engine splits it into ranges across workers).
//!
//! Every iteration copies into a fresh directory; the copies are removed only when the group
//! ends, because on ext4 without a journal, creating files right after deleting many others
//! costs far more (freed inodes are skipped for a while) and would measure the deletion.
//! The whole-tree comparison against the command-line copiers is `stealcp/benches/compare/run.sh`.
//!
//! Run with `cargo bench -p stealcp --bench copy_engine` (about a minute).

#[cfg(unix)]
mod bench {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use criterion::{Criterion, SamplingMode, Throughput};
    use stealcp::{Assignment, CopyOptions, CopyReport, Quiet, Target};
    use stealpool::{ProcessPoolExecutor, ThreadPoolExecutor};

    fn small_tree(root: &Path) -> u64 {
        let mut bytes = 0;
        for d in 0..40 {
            let dir = root.join(format!("dir-{d:02}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..50 {
                let body = vec![(d * 50 + f) as u8; 4096];
                fs::write(dir.join(format!("file-{f:02}.txt")), &body).unwrap();
                bytes += body.len() as u64;
            }
        }
        bytes
    }

    fn large_tree(root: &Path) -> u64 {
        fs::create_dir_all(root).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..128 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(root.join("large.bin"), &data).unwrap();
        data.len() as u64
    }

    /// `cp -a` in a few lines of sequential Rust: the baseline the engine must beat.
    fn sequential(src: &Path, dst: &Path) {
        fs::create_dir(dst).unwrap();
        for entry in fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            let (from, to) = (entry.path(), dst.join(entry.file_name()));
            if entry.file_type().unwrap().is_dir() {
                sequential(&from, &to);
            } else {
                fs::copy(&from, &to).unwrap();
                let meta = fs::metadata(&from).unwrap();
                let times = fs::FileTimes::new().set_modified(meta.modified().unwrap());
                fs::File::options().write(true).open(&to).unwrap().set_times(times).unwrap();
            }
        }
    }

    struct Outputs {
        root: tempfile::TempDir,
        next: AtomicUsize,
    }

    impl Outputs {
        fn fresh(&self) -> PathBuf {
            self.root.path().join(format!("out-{}", self.next.fetch_add(1, Ordering::Relaxed)))
        }
    }

    fn group(c: &mut Criterion, name: &str, make: fn(&Path) -> u64) {
        let src_dir = tempfile::tempdir().unwrap();
        let src = src_dir.path().join("src");
        let bytes = make(&src);
        let outputs = Outputs { root: tempfile::tempdir_in(src_dir.path()).unwrap(), next: AtomicUsize::new(0) };
        let options = CopyOptions::archive();
        let workers = num_cpus::get().max(2);

        let mut group = c.benchmark_group(name);
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(4));
        group.throughput(Throughput::Bytes(bytes));

        group.bench_function("sequential-std", |b| b.iter(|| sequential(&src, &outputs.fresh())));
        let run = |pool: &dyn Fn(&[Assignment]) -> CopyReport| {
            let plan = stealcp::plan(std::slice::from_ref(&src), &Target::Auto(outputs.fresh()), &options).unwrap();
            let report = pool(&plan);
            assert!(report.is_success(), "{:?}", report.failures);
        };
        {
            let pool = ThreadPoolExecutor::new(workers);
            let copy_on = |plan: &[Assignment]| stealcp::copy(plan, &options, &pool, &mut Quiet).unwrap();
            group.bench_function("stealpool-thread", |b| b.iter(|| run(&copy_on)));
        }
        {
            let pool = ProcessPoolExecutor::new(workers);
            let copy_on = |plan: &[Assignment]| stealcp::copy(plan, &options, &pool, &mut Quiet).unwrap();
            group.bench_function("stealpool-process", |b| b.iter(|| run(&copy_on)));
        }
        group.finish();
    }

    pub fn small_files(c: &mut Criterion) {
        group(c, "small_files", small_tree);
    }

    pub fn large_file(c: &mut Criterion) {
        group(c, "large_file", large_tree);
    }
}

#[cfg(unix)]
criterion::criterion_group!(benches, bench::small_files, bench::large_file);
#[cfg(unix)]
criterion::criterion_main!(benches);

#[cfg(not(unix))]
fn main() {}
