//! `stealcp`: copy files and directory trees in parallel, with `cp`'s options and naming rules, a
//! progress bar, and every failure listed at the end.
//!
//! This binary only parses options, shows progress and reports; the copying is the `stealcp`
//! library (the engine: plan, walk, copy, publish).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use stealcp::{CopyOptions, EntryKind, Failure, Observer, Target};
use stealpool::{ProcessPoolBuilder, ThreadPoolBuilder};

const EXAMPLES: &str = "\
Examples:
  stealcp -a photos/ /backup/photos        copy a tree like cp -a (links, modes, times kept)
  stealcp -r src/ docs/ /tmp/out           copy two trees into an existing directory
  stealcp -t /tmp/out -v a.txt b.txt       copy files into a directory, listing each
  stealcp -a -j 16 --verify big/ /mnt/x    16 workers, re-read every copy and compare
  stealcp --parents -p src/a/f.txt /tmp/o  makes /tmp/o/src/a/f.txt (src, src/a copied as dirs)
  stealcp -a --backend process big/ /mnt/x copy in worker processes: a crash stays in its worker

A new directory is built as .pcp-tmp-<pid>-*-<name> beside its destination and renamed into
place once complete; in existing directories, files get their final names only once
complete. A later run into the same places removes the leftovers of a killed one.
FIFOs, sockets and device nodes inside a tree are recreated (devices need root), as by cp -R.
Exit status: 0 if everything was copied, 1 if anything failed (all failures are listed).";

#[derive(Debug, Parser)]
#[command(name = "stealcp", version, about = "Copy files and directory trees in parallel, like cp -r / cp -a.")]
#[command(after_help = EXAMPLES)]
struct Opts {
    /// SOURCE... DEST, or SOURCE... with -t DIR.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Copy directories recursively.
    #[arg(short = 'r', short_alias = 'R', long)]
    recursive: bool,
    /// Archive: like -dR --preserve=all (recursive, symlinks as symlinks, modes, ownership,
    /// timestamps and hard links kept).
    #[arg(short = 'a', long)]
    archive: bool,
    /// Keep modes, ownership and timestamps.
    #[arg(short = 'p')]
    preserve: bool,
    /// Never overwrite an existing file.
    #[arg(short = 'n', long)]
    no_clobber: bool,
    /// Copy only when the source is newer than the destination or the destination is missing.
    #[arg(short = 'u', long)]
    update: bool,
    /// Print each copy as 'SOURCE' -> 'DEST'.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Always follow symlinks in the sources.
    #[arg(short = 'L', long, overrides_with = "no_dereference")]
    dereference: bool,
    /// Never follow symlinks in the sources (the default when recursive).
    #[arg(short = 'P', long, overrides_with = "dereference")]
    no_dereference: bool,
    /// Copy all sources into DIR.
    #[arg(short = 't', long, value_name = "DIR")]
    target_directory: Option<PathBuf>,
    /// Worker count (0: one per CPU).
    #[arg(short = 'j', long, value_name = "N", default_value_t = 0)]
    jobs: usize,
    /// What runs the copies.
    #[arg(long, value_enum, default_value_t = Backend::Thread)]
    backend: Backend,
    /// Show a progress bar on stderr (default: when stderr is a terminal).
    #[arg(long, overrides_with = "no_progress")]
    progress: bool,
    /// Never show a progress bar.
    #[arg(long, overrides_with = "progress")]
    no_progress: bool,
    /// Re-read each copied file and compare it with its source.
    #[arg(long)]
    verify: bool,
    /// Append each source's path to the target directory (a/b/f into DIR is DIR/a/b/f).
    #[arg(long)]
    parents: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// A work-stealing thread pool.
    Thread,
    /// Supervised worker processes (stealpool's process pool): a crash stays in its worker.
    Process,
}

impl From<&Opts> for CopyOptions {
    fn from(o: &Opts) -> Self {
        let mut c = if o.archive { CopyOptions::archive() } else { CopyOptions::default() };
        if o.preserve {
            c = c.preserve();
        }
        c.recursive |= o.recursive;
        c.dereference = o.dereference && !o.no_dereference;
        c.no_clobber = o.no_clobber;
        c.update = o.update;
        c.verify = o.verify;
        c.parents = o.parents;
        c
    }
}

/// Progress bar and verbose listing.
struct Report {
    bar: Option<ProgressBar>,
    verbose: bool,
    files: u64,
    total_files: u64,
}

impl Report {
    fn show_files(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}/{} files", self.files, self.total_files));
        }
    }
}

impl Observer for Report {
    /// Totals cost a `stat` per file in the walk: only worth it when a bar shows them.
    fn wants_totals(&self) -> bool {
        self.bar.is_some()
    }

    fn found(&mut self, files: u64, bytes: u64) {
        self.total_files += files;
        if let Some(bar) = &self.bar {
            bar.inc_length(bytes);
        }
        self.show_files();
    }

    fn progressed(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn copied(&mut self, kind: EntryKind, source: &Path, destination: &Path) {
        if self.verbose {
            let line = format!("'{}' -> '{}'", source.display(), destination.display());
            match &self.bar {
                Some(bar) => bar.println(line),
                None => println!("{line}"),
            }
        }
        if kind == EntryKind::File {
            self.files += 1;
            self.show_files();
        }
    }

    fn failed(&mut self, failure: &Failure) {
        if let Some(bar) = &self.bar {
            bar.println(format!("stealcp: {failure}"));
        }
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("stealcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Copies; returns whether everything succeeded.
fn run(opts: &Opts) -> anyhow::Result<bool> {
    let options = CopyOptions::from(opts);
    let (sources, target) = match &opts.target_directory {
        Some(dir) => (opts.paths.clone(), Target::IntoDirectory(dir.clone())),
        None => match opts.paths.split_last() {
            Some((dest, sources)) if !sources.is_empty() => (sources.to_vec(), Target::Auto(dest.clone())),
            _ => anyhow::bail!("missing destination file operand after {:?}", opts.paths),
        },
    };
    let plan = stealcp::plan(&sources, &target, &options)?;
    let show_progress = opts.progress || (!opts.no_progress && std::io::stderr().is_terminal());
    let mut observer =
        Report { bar: show_progress.then(progress_bar), verbose: opts.verbose, files: 0, total_files: 0 };
    let report = match opts.backend {
        Backend::Thread => {
            let pool = ThreadPoolBuilder::new().num_workers(opts.jobs).name_prefix("stealcp").build()?;
            stealcp::copy(&plan, &options, &pool, &mut observer)?
        }
        Backend::Process => {
            let pool = ProcessPoolBuilder::new().num_workers(opts.jobs).name_prefix("stealcp-w").build()?;
            stealcp::copy(&plan, &options, &pool, &mut observer)?
        }
    };
    if let Some(bar) = &observer.bar {
        bar.finish_and_clear();
    }
    for skipped in &report.skipped {
        eprintln!("stealcp: warning: '{}': {}", skipped.path.display(), skipped.reason);
    }
    if !report.failures.is_empty() {
        eprintln!("stealcp: {} failure(s):", report.failures.len());
        for failure in &report.failures {
            eprintln!("stealcp:   {failure}");
        }
    }
    Ok(report.is_success())
}
