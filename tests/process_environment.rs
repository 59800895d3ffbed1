//! What a worker process sees: each pool's workers (and each `Process` child) start with the
//! parent's environment variables and current directory as they are when the pool is built
//! (the child spawned), not as they were when the fork server started, and builder options
//! change them. Its own test binary with one test, because it changes the process-wide current
//! directory and environment.

use std::path::{Path, PathBuf};

use stealpool::process::{MAX_ENVIRONMENT_BYTES, Process};
use stealpool::{ExitStatus, ProcessPoolBuilder, ProcessPoolExecutor};

const VAR: &str = "STEALPOOL_TEST_ENVIRONMENT";

/// What the worker running it sees: its current directory and `VAR`.
fn seen(_: ()) -> (PathBuf, Option<String>) {
    (std::env::current_dir().unwrap(), std::env::var(VAR).ok())
}
stealpool::register_fn!(seen);

/// Exits 0 if the child sees `cwd` and `value` of `VAR`, else panics (exit 1).
fn expect(cwd: PathBuf, value: Option<String>) {
    assert_eq!(std::env::current_dir().unwrap(), cwd);
    assert_eq!(std::env::var(VAR).ok(), value);
}
stealpool::register_fn!(expect);

/// Every variable the worker running it has.
fn all_vars(_: ()) -> Vec<(String, String)> {
    std::env::vars().collect()
}
stealpool::register_fn!(all_vars);

/// The worker's argument count and its open descriptors (number, target), but for the one
/// reading the list.
fn args_and_fds(_: ()) -> (usize, Vec<(i32, String)>) {
    let dir = std::fs::read_dir("/proc/self/fd").unwrap();
    let fds = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?.display().to_string();
            Some((e.file_name().to_str()?.parse().ok()?, target))
        })
        .filter(|(_, t): &(i32, String)| !t.starts_with("/proc/"))
        .collect();
    (std::env::args().count(), fds)
}
stealpool::register_fn!(args_and_fds);

fn view(pool: &ProcessPoolExecutor) -> (PathBuf, Option<String>) {
    use stealpool::Executor;
    pool.apply_async(seen, ()).unwrap().result().unwrap()
}

fn set(value: &str) {
    // SAFETY: this test binary has one test, and no thread of this process reads or writes the
    // environment while it runs: the pools' own threads never touch it (only their forked
    // children do, in processes of their own).
    unsafe { std::env::set_var(VAR, value) };
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap()
}

#[test]
fn each_pool_sees_the_environment_and_directory_of_its_build() {
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let chosen_dir = tempfile::tempdir().unwrap();
    let (first, second, chosen) =
        (canonical(first_dir.path()), canonical(second_dir.path()), canonical(chosen_dir.path()));

    std::env::set_current_dir(&first).unwrap();
    set("one");
    // The first pool starts the fork server: it sees what is set now.
    let early = ProcessPoolExecutor::builder().num_workers(1).build().unwrap();
    assert_eq!(view(&early), (first.clone(), Some("one".into())));

    // argv is argv[0] only; descriptors: /dev/null as stdin, the parent's stdout and stderr,
    // the worker's two sockets, nothing else (its status page is mapped, its descriptor closed).
    let (args, mut fds) = stealpool::Executor::apply_async(&early, args_and_fds, ()).unwrap().result().unwrap();
    assert_eq!(args, 1);
    fds.sort();
    assert_eq!(fds[0], (0, "/dev/null".to_string()), "{fds:?}");
    assert_eq!(fds.len(), 5, "{fds:?}");
    assert!(fds[3..].iter().all(|(_, t)| t.starts_with("socket:")), "{fds:?}");

    // Changed after the fork server started: a pool built now sees the new values (it used
    // to see the fork server's), and the first pool keeps its own.
    std::env::set_current_dir(&second).unwrap();
    set("two");
    let later = ProcessPoolExecutor::builder().num_workers(1).build().unwrap();
    assert_eq!(view(&later), (second.clone(), Some("two".into())));
    assert_eq!(view(&early), (first.clone(), Some("one".into())), "the first pool keeps its build's");

    // Builder options override; a relative directory is taken from the caller's.
    let overridden = ProcessPoolBuilder::new()
        .num_workers(1)
        .env(VAR, "three")
        .current_dir(Path::new("..").join(chosen.file_name().unwrap()))
        .build()
        .unwrap();
    assert_eq!(view(&overridden), (chosen.clone(), Some("three".into())));
    let removed = ProcessPoolBuilder::new().num_workers(1).env_remove(VAR).current_dir(&chosen).build().unwrap();
    assert_eq!(view(&removed), (chosen.clone(), None));
    let cleared = ProcessPoolBuilder::new().num_workers(1).env_clear().env("ONLY", "this").build().unwrap();
    let only: Vec<(String, String)> =
        stealpool::Executor::apply_async(&cleared, all_vars, ()).unwrap().result().unwrap();
    assert_eq!(only, [("ONLY".to_string(), "this".to_string())]);

    // A replacement worker (after max_tasks_per_child) starts with its pool's snapshot too.
    set("four");
    let recycled = ProcessPoolBuilder::new().num_workers(1).max_tasks_per_child(1).build().unwrap();
    set("five");
    for _ in 0..3 {
        assert_eq!(view(&recycled), (second.clone(), Some("four".into())));
    }

    // `Process`: at spawn time, and with the same options.
    assert_eq!(Process::spawn(expect, (second.clone(), Some("five".into()))).unwrap().join(), ExitStatus::Exited(0));
    let child =
        Process::builder().env(VAR, "six").current_dir(&chosen).spawn(expect, (chosen.clone(), Some("six".into())));
    assert_eq!(child.unwrap().join(), ExitStatus::Exited(0));
    // The check is real: a child that expects something else fails.
    let wrong = Process::builder().env_remove(VAR).spawn(expect, (second.clone(), Some("five".into())));
    assert_eq!(wrong.unwrap().join(), ExitStatus::Exited(1));

    // Refusals: a directory that is not there, an environment over the limit, a bad name.
    let missing = ProcessPoolBuilder::new().num_workers(1).current_dir(first.join("not-here")).build();
    assert!(missing.unwrap_err().to_string().contains("not a directory"));
    let big = "x".repeat(MAX_ENVIRONMENT_BYTES);
    let too_big = ProcessPoolBuilder::new().num_workers(1).env("BIG", &big).build().unwrap_err();
    assert!(too_big.to_string().contains("MAX_ENVIRONMENT_BYTES"), "{too_big}");
    let too_big = Process::builder().env("BIG", &big).spawn(expect, (second.clone(), None)).unwrap_err();
    assert!(too_big.to_string().contains("MAX_ENVIRONMENT_BYTES"), "{too_big}");
    let bad_name = ProcessPoolBuilder::new().num_workers(1).env("A=B", "1").build().unwrap_err();
    assert!(bad_name.to_string().contains("`=`"), "{bad_name}");
    assert_eq!(view(&early), (first.clone(), Some("one".into())), "refusals change nothing for others");

    drop((early, later, overridden, removed, cleared, recycled));
    std::env::set_current_dir("/").unwrap();
}
