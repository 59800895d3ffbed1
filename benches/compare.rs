//! The comparison behind the README's table: every scenario's contenders run in interleaved
//! rounds (A, B, C, A, B, C, ...), so that all of them see the same phases of a shared, noisy
//! machine, and each ratio is the median of the per-round ratios.
//!
//! Run with `cargo bench --bench compare` (about a minute); it prints a Markdown table.
//! `COMPARE_QUICK=1` runs one round of each, which is what `cargo test --benches` would want;
//! `COMPARE_PROFILE=stealpool` (or `rayon`, `threadpool`) runs one contender's tiny jobs only,
//! for profilers (see `profile_tiny`).

mod workloads;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use workloads::*;

/// One contender of a scenario: a name and one timed run returning a checksum.
type Contender<'a> = (&'static str, Box<dyn Fn() -> u64 + 'a>);

/// Runs `rounds` interleaved rounds; returns each contender's times.
fn interleave(rounds: usize, expected: u64, contenders: &[Contender<'_>]) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::with_capacity(rounds); contenders.len()];
    for _ in 0..rounds {
        for (i, (name, run)) in contenders.iter().enumerate() {
            let started = Instant::now();
            let checksum = run();
            times[i].push(started.elapsed());
            assert_eq!(checksum, expected, "{name} computed the wrong result");
        }
    }
    times
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Prints one table row per contender from index `from` on: median time, and the median over
/// rounds of (its time / the first contender's time).
fn report(scenario: &str, contenders: &[Contender<'_>], times: &[Vec<Duration>], from: usize) {
    let base = &times[0];
    for ((name, _), t) in contenders.iter().zip(times).skip(from) {
        let ms = median(t.iter().map(|d| d.as_secs_f64() * 1e3).collect());
        let ratio = median(t.iter().zip(base).map(|(x, b)| x.as_secs_f64() / b.as_secs_f64()).collect());
        println!("| {scenario} | {name} | {ms:.2} ms | {ratio:.2} |");
    }
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned())
}

/// A busy process (a shell loop) taking a share of a core while it lives; killed and reaped
/// on drop.
struct Burner(std::process::Child);

impl Drop for Burner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `map` with default options against `submit` (tiny jobs over an input of unknown length)
/// and against rayon's `par_iter` (CPU-bound, sized and unsized input): speedups over the
/// sequential run, as medians of per-round ratios.
fn map_rows(cpus: usize, rounds: usize) {
    let _burner = std::env::var_os("COMPARE_BURN").map(|_| {
        Burner(Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("start the busy process"))
    });
    let burn = if _burner.is_some() { ", a busy process sharing the cores" } else { "" };
    let ours = stealpool_pool(cpus);
    let rayon = rayon_pool(cpus);
    let map = |jobs: u64, f: fn(u64) -> u64, sized: bool| -> u64 {
        let results = if sized {
            stealpool::Executor::map(&ours, f, 0..jobs).expect("map")
        } else {
            stealpool::Executor::map(&ours, f, (0..jobs).filter(|_| true)).expect("map")
        };
        results.map(|r| r.expect("item failed")).fold(0, u64::wrapping_add)
    };
    let tiny: Vec<Contender<'_>> = vec![
        ("stealpool submit+result", Box::new(|| run_stealpool(&ours, TINY_JOBS, tiny_job))),
        ("stealpool map, unsized input, defaults", Box::new(|| map(TINY_JOBS, tiny_job, false))),
        ("stealpool map, sized input, defaults", Box::new(|| map(TINY_JOBS, tiny_job, true))),
    ];
    let times = interleave(rounds * 2, run_sequential(TINY_JOBS, tiny_job), &tiny);
    report(&format!("100k tiny jobs{burn}"), &tiny, &times, 0);
    let cpu: Vec<Contender<'_>> = vec![
        ("sequential", Box::new(|| run_sequential(CPU_JOBS, cpu_job))),
        ("rayon par_iter", Box::new(|| run_rayon(&rayon, CPU_JOBS, cpu_job))),
        ("stealpool map, sized input, defaults", Box::new(|| map(CPU_JOBS, cpu_job, true))),
        ("stealpool map, unsized input, defaults", Box::new(|| map(CPU_JOBS, cpu_job, false))),
        ("stealpool submit+result", Box::new(|| run_stealpool(&ours, CPU_JOBS, cpu_job))),
    ];
    let times = interleave(rounds, run_sequential(CPU_JOBS, cpu_job), &cpu);
    let speedups: Vec<Vec<f64>> = times
        .iter()
        .map(|t| t.iter().zip(&times[0]).map(|(p, s)| s.as_secs_f64() / p.as_secs_f64()).collect())
        .collect();
    for (k, (name, _)) in cpu.iter().enumerate().skip(1) {
        let vs_rayon = median(speedups[k].iter().zip(&speedups[1]).map(|(a, b)| a / b).collect());
        println!(
            "| CPU-bound 64 x 15 ms{burn} | {name} | speedup {:.2} | {vs_rayon:.2} x rayon par_iter's (median of {rounds} rounds) |",
            median(speedups[k].clone())
        );
    }
}

/// One job at a time: each submitted once the previous one's result is back (a job's latency).
fn run_stealpool_serial(pool: &stealpool::ThreadPoolExecutor, jobs: u64, f: fn(u64) -> u64) -> u64 {
    (0..jobs)
        .map(|i| pool.submit(move || f(i)).expect("submit").result().expect("job failed"))
        .fold(0, u64::wrapping_add)
}

/// `COMPARE_PROFILE=stealpool|rayon|threadpool` (and `COMPARE_WORKERS`, default 1): only that
/// contender's tiny-job run, `rounds` times, for `perf stat` or callgrind to count one pool at a
/// time (the pool is built before the rounds, so its start is a small fixed part). A comma list
/// (`stealpool,threadpool`) interleaves those contenders, each with its own pool.
/// `stealpool-serial` waits for each job before it submits the next: the latency of one job.
fn profile_tiny(which: &str, rounds: usize) {
    let workers = std::env::var("COMPARE_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(1);
    let contenders: Vec<Contender<'_>> = which
        .split(',')
        .map(|name| -> Contender<'_> {
            match name {
                "stealpool" => {
                    let pool = stealpool_pool(workers);
                    ("stealpool", Box::new(move || run_stealpool(&pool, TINY_JOBS, tiny_job)))
                }
                "stealpool-serial" => {
                    let pool = stealpool_pool(workers);
                    ("stealpool-serial", Box::new(move || run_stealpool_serial(&pool, TINY_JOBS, tiny_job)))
                }
                "rayon" => {
                    let pool = rayon_pool(workers);
                    ("rayon", Box::new(move || run_rayon_spawn(&pool, TINY_JOBS, tiny_job)))
                }
                "threadpool" => {
                    let pool = threadpool::ThreadPool::new(workers);
                    ("threadpool", Box::new(move || run_threadpool(&pool, TINY_JOBS, tiny_job)))
                }
                other => panic!("COMPARE_PROFILE={other}: expected stealpool, stealpool-serial, rayon or threadpool"),
            }
        })
        .collect();
    let times = interleave(rounds, run_sequential(TINY_JOBS, tiny_job), &contenders);
    report(&format!("100k tiny jobs, {workers} worker(s), {rounds} rounds"), &contenders, &times, 0);
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (such as `cargo test --benches`) gets one
    // quick round so the harness stays fast.
    let quick = std::env::var_os("COMPARE_QUICK").is_some() || !std::env::args().any(|a| a == "--bench");
    let rounds = |full: usize| if quick { 1 } else { full };
    let cpus = num_cpus::get();
    if let Ok(which) = std::env::var("COMPARE_PROFILE") {
        return profile_tiny(&which, rounds(40));
    }

    println!("Interleaved comparison, {cpus} CPUs, {}", command_output("rustc", &["--version"]));
    println!(
        "date {}, commit {}",
        command_output("date", &["-u", "+%Y-%m-%d"]),
        command_output("git", &["rev-parse", "--short", "HEAD"])
    );
    println!();
    println!("| scenario | contender | median time | time / stealpool (median of rounds) |");
    println!("|---|---|---|---|");

    let ours = stealpool_pool(cpus);
    let rayon = rayon_pool(cpus);
    let tp = threadpool::ThreadPool::new(cpus);
    // Tiny jobs with one worker too: the per-job cost without any parallelism to hide it.
    for workers in [1, cpus] {
        let (ours, rayon, tp) = (stealpool_pool(workers), rayon_pool(workers), threadpool::ThreadPool::new(workers));
        let tiny: Vec<Contender<'_>> = vec![
            ("stealpool submit+result", Box::new(|| run_stealpool(&ours, TINY_JOBS, tiny_job))),
            ("rayon spawn+channel", Box::new(|| run_rayon_spawn(&rayon, TINY_JOBS, tiny_job))),
            ("threadpool execute+channel", Box::new(|| run_threadpool(&tp, TINY_JOBS, tiny_job))),
        ];
        let times = interleave(rounds(40), run_sequential(TINY_JOBS, tiny_job), &tiny);
        report(&format!("100k tiny jobs, {workers} worker(s)"), &tiny, &times, 0);
    }
    // `COMPARE_ONLY=tiny`: just the tiny-job rows (the per-job cost), for quick re-measuring;
    // `COMPARE_ONLY=map`: the map rows (`COMPARE_BURN=1`: with a busy process sharing a core).
    match std::env::var("COMPARE_ONLY").as_deref() {
        Ok("tiny") => return,
        Ok("map") => return map_rows(cpus, rounds(15)),
        _ => map_rows(cpus, rounds(15)),
    }

    let ours_arc = Arc::new(stealpool_pool(cpus));
    let fib_runs: Vec<Contender<'_>> = vec![
        ("stealpool nested submit+result", Box::new(|| fib_stealpool(&ours_arc))),
        ("rayon::join", Box::new(|| rayon.install(|| fib_join(FIB_N)))),
    ];
    let times = interleave(rounds(60), FIB_EXPECTED, &fib_runs);
    report("nested fib(32)", &fib_runs, &times, 0);

    let cpu: Vec<Contender<'_>> = vec![
        ("stealpool", Box::new(|| run_stealpool(&ours, CPU_JOBS, cpu_job))),
        ("sequential", Box::new(|| run_sequential(CPU_JOBS, cpu_job))),
        ("rayon", Box::new(|| run_rayon(&rayon, CPU_JOBS, cpu_job))),
        ("threadpool", Box::new(|| run_threadpool(&tp, CPU_JOBS, cpu_job))),
    ];
    let times = interleave(rounds(5), run_sequential(CPU_JOBS, cpu_job), &cpu);
    report("CPU-bound 64 x 15 ms", &cpu, &times, 0);
    let speedup = median(times[1].iter().zip(&times[0]).map(|(s, p)| s.as_secs_f64() / p.as_secs_f64()).collect());
    println!(
        "| CPU-bound 64 x 15 ms | stealpool speedup over sequential | | {speedup:.2} ({:.2} x {cpus} cores) |",
        speedup / cpus as f64
    );

    let io_ours = stealpool_pool(IO_THREADS);
    let io_rayon = rayon_pool(IO_THREADS);
    let io_tp = threadpool::ThreadPool::new(IO_THREADS);
    let io: Vec<Contender<'_>> = vec![
        ("stealpool", Box::new(|| run_stealpool(&io_ours, IO_JOBS, io_job))),
        ("rayon", Box::new(|| run_rayon(&io_rayon, IO_JOBS, io_job))),
        ("threadpool", Box::new(|| run_threadpool(&io_tp, IO_JOBS, io_job))),
    ];
    let times = interleave(rounds(10), (0..IO_JOBS).fold(0, u64::wrapping_add), &io);
    report("IO-bound 512 x 10 ms, 64 threads", &io, &times, 0);
    // The sequential baseline blocks for 5.12 s per run: a few rounds, against stealpool.
    let io_seq: Vec<Contender<'_>> = vec![
        ("stealpool", Box::new(|| run_stealpool(&io_ours, IO_JOBS, io_job))),
        ("sequential", Box::new(|| run_sequential(IO_JOBS, io_job))),
    ];
    let seq_times = interleave(rounds(3), (0..IO_JOBS).fold(0, u64::wrapping_add), &io_seq);
    report("IO-bound 512 x 10 ms, 64 threads", &io_seq, &seq_times, 1);
    let ideal = IO_JOBS as f64 * IO_SLEEP.as_secs_f64() / IO_THREADS as f64;
    let ours_io = median(times[0].iter().map(Duration::as_secs_f64).collect());
    println!(
        "| IO-bound 512 x 10 ms, 64 threads | stealpool vs ideal {:.0} ms | | {:.3} |",
        ideal * 1e3,
        ours_io / ideal
    );
}
