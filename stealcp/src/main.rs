//! `stealcp`: copy files and directory trees in parallel, with `cp`'s options and naming rules, a
//! progress bar, and every failure listed at the end.
//!
//! This binary only parses options, shows progress and reports; the copying is the `stealcp`
//! library (the engine: plan, walk, copy, publish).

mod progress;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use stealcp::{CopyOptions, Target};
use stealpool::{ProcessPoolBuilder, ThreadPoolBuilder};

use crate::progress::Report;

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
    let mut observer = Report::new(show_progress, opts.verbose);
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
    observer.finish();
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
