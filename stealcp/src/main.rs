//! `stealcp`: copy files and directory trees in parallel, with GNU cp's options, naming rules and
//! messages (each failure printed as it happens), and a progress bar.
//!
//! This binary only parses options, shows progress and reports; the copying is the `stealcp`
//! library (the engine: plan, walk, copy, publish).

mod long_options;
mod progress;
mod questions;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use stealcp::{
    Backup, BackupControl, CopyDebug, CopyOptions, Displaced, EntryKind, Failure, Observer, OverwriteQuestion, Reflink,
    Sparse, Target,
};
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

As GNU cp 9: an existing destination file is written into (it keeps its inode, owner, other
names and, without -p, its mode; a symlink is written through, a FIFO or device is written
to); --remove-destination removes it first, -f removes it if it cannot be opened.
Where stealcp does better than cp: a NEW file or directory is never visible half-written. A
new directory is built as .pcp-tmp-<pid>-*-<name> beside its destination and renamed into
place once complete; a new file in an existing directory gets its name only once complete.
A later run into the same places removes the leftovers of a killed one. If a new
directory's name was taken by the time its copy is complete, the copy stays under its
temporary name, and the line after that failure says where:
  stealcp: the copied tree is at '.pcp-tmp-<pid>-<n>-<name>'
Long options may be abbreviated as GNU cp 9.1 takes them (--b is --backup, --pr --preserve,
--d --dereference); stealcp's own (--backend, --jobs, --progress, --no-progress, --verify,
--debug, --keep-directory-symlink) only where no cp option begins so (--backe, --pro, --veri).
Messages begin with the name the program was run as, without its directory (cp when
installed as cp; GNU cp keeps a directory given in its argv[0]).
Not supported: -Z/--context (SELinux contexts: this build has no SELinux support; -Z is
ignored with a warning, as cp does on a kernel without SELinux); --preserve=context (ignored);
--debug lists what -v lists, each regular file's line followed by how its bytes were
copied, in cp 9.2's words ('copy offload: yes, reflink: unsupported, sparse detection: no');
the words say what stealcp did, which differs from cp where its way differs: with
--sparse=auto a file with holes is also scanned for blocks of zeros ('copy offload: avoided,
..., SEEK_HOLE + zeros'), --reflink=never still lets the kernel copy ('copy offload: yes'),
--sparse=never never looks for holes ('sparse detection: no').
-i asks, as cp, about every existing destination it would replace, inside trees too (after
-n/-u decide); the questions come in the order the workers reach the files, not cp's, and no
progress bar is drawn unless --progress is given.
-v lists what cp -v lists, with each destination's lines in cp's order ('removed' before or
after its copy, ' (backup: ...)' at the end); entries are copied in parallel, so the order
of different entries is not cp's.
Exit status: 0 if everything was copied, 1 if anything failed or the options were wrong.";

#[derive(Debug, Parser)]
#[command(name = "stealcp", version, about = "Copy files and directory trees in parallel, like GNU cp.")]
#[command(after_help = EXAMPLES)]
// An option given again takes its last value, as in cp (`--reflink=auto --reflink=never`,
// `-rr`); lists (`--preserve`) still add up, and `-t` twice is refused as cp refuses it.
#[command(args_override_self = true)]
struct Opts {
    /// SOURCE... DEST, or SOURCE... with -t DIR.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Copy directories recursively.
    #[arg(short = 'r', short_alias = 'R', long)]
    recursive: bool,
    /// Archive: like -dR --preserve=all (recursive, symlinks as symlinks, modes, ownership,
    /// timestamps and hard links kept).
    #[arg(short = 'a', long)]
    archive: bool,
    /// Copy only the attributes, not the contents.
    #[arg(long)]
    attributes_only: bool,
    /// Back up each existing destination file (CONTROL: none/off, simple/never,
    /// existing/nil, numbered/t; default: $VERSION_CONTROL, else existing).
    #[arg(short = 'b', long, value_name = "CONTROL", num_args = 0..=1, require_equals = true,
          default_missing_value = "", action = clap::ArgAction::Append)]
    // Every -b/--backup given, in order: a bare one turns backups on and keeps the control an
    // earlier one named, as in cp (the last named control counts).
    backup: Vec<String>,
    /// The backup suffix (default: $SIMPLE_BACKUP_SUFFIX, else ~).
    #[arg(short = 'S', long, value_name = "SUFFIX")]
    suffix: Option<String>,
    /// Copy the contents of FIFOs and devices when recursive.
    #[arg(long)]
    copy_contents: bool,
    /// Same as --no-dereference --preserve=links.
    #[arg(short = 'd')]
    no_dereference_preserve_links: bool,
    /// Explain how each file is copied (lists as -v, with how each file's bytes were copied).
    #[arg(long)]
    debug: bool,
    /// If an existing destination cannot be opened, remove it and try again.
    #[arg(short = 'f', long)]
    force: bool,
    /// Ask before replacing each existing destination (inside trees too).
    #[arg(short = 'i', long, overrides_with_all = ["no_clobber"])]
    interactive: bool,
    /// Follow symlinks named on the command line.
    #[arg(short = 'H', overrides_with_all = ["dereference", "no_dereference"])]
    follow_arguments: bool,
    /// Make hard links instead of copying.
    #[arg(short = 'l', long)]
    link: bool,
    /// Always follow symlinks in the sources.
    #[arg(short = 'L', long, overrides_with_all = ["no_dereference", "follow_arguments"])]
    dereference: bool,
    /// Never overwrite an existing file.
    #[arg(short = 'n', long, overrides_with_all = ["interactive"])]
    no_clobber: bool,
    /// Never follow symlinks in the sources (the default when recursive).
    #[arg(short = 'P', long, overrides_with_all = ["dereference", "follow_arguments"])]
    no_dereference: bool,
    /// Same as --preserve=mode,ownership,timestamps.
    #[arg(short = 'p')]
    preserve_default: bool,
    /// Keep these attributes (mode, ownership, timestamps, links, xattr, context, all).
    #[arg(long, value_name = "ATTR_LIST", num_args = 0..=1, require_equals = true,
          default_missing_value = "mode,ownership,timestamps")]
    preserve: Vec<String>,
    /// Do not keep these attributes.
    #[arg(long, value_name = "ATTR_LIST")]
    no_preserve: Vec<String>,
    /// Append each source's path to the target directory (a/b/f into DIR is DIR/a/b/f).
    #[arg(long)]
    parents: bool,
    /// Reflinks: auto (default), always (fail where impossible), never.
    #[arg(long, value_name = "WHEN", num_args = 0..=1, require_equals = true,
          default_missing_value = "always", value_parser = ["auto", "always", "never"])]
    reflink: Option<String>,
    /// Remove each existing destination file before copying (instead of writing into it).
    #[arg(long)]
    remove_destination: bool,
    /// Holes: auto (default: where the source has them), always (also blocks of zeros), never.
    #[arg(long, value_name = "WHEN", value_parser = ["auto", "always", "never"])]
    sparse: Option<String>,
    /// Remove trailing slashes from each source.
    #[arg(long)]
    strip_trailing_slashes: bool,
    /// Make symlinks instead of copying.
    #[arg(short = 's', long)]
    symbolic_link: bool,
    /// Copy all sources into DIR.
    #[arg(short = 't', long, value_name = "DIR", action = clap::ArgAction::Append)]
    target_directory: Vec<PathBuf>,
    /// Treat DEST as a normal file (never copy into it as a directory).
    #[arg(short = 'T', long)]
    no_target_directory: bool,
    /// Which existing files to replace: all, none, older (-u: older).
    #[arg(long = "update", value_name = "WHEN", num_args = 0..=1, require_equals = true,
          default_missing_value = "older", value_parser = ["all", "none", "older"])]
    update_when: Option<String>,
    /// Copy only when the source is newer than the destination or the destination is missing.
    #[arg(short = 'u')]
    update: bool,
    /// Print each copy as 'SOURCE' -> 'DEST'.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Keep a symlink to a directory at the destination (copy into the directory it leads to).
    #[arg(long)]
    keep_directory_symlink: bool,
    /// Stay on this file system.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// SELinux context (not supported: ignored with a warning).
    #[arg(short = 'Z', long = "context", value_name = "CTX", num_args = 0..=1, require_equals = true,
          default_missing_value = "")]
    context: Option<String>,
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
    /// Filled after parsing: see [`preserve_order`].
    #[arg(skip)]
    preserve_order: PreserveOrder,
}

/// The attribute switches in the order given: (index, list, on); see [`preserve_order`].
type PreserveOrder = Vec<(usize, String, bool)>;

/// `-a`, `-d`, `-p`, `--preserve` and `--no-preserve` in the order they were given (cp applies
/// them so: `--no-preserve=mode -a` keeps modes, `-a --no-preserve=mode` does not).
fn preserve_order(matches: &clap::ArgMatches) -> PreserveOrder {
    let mut order = Vec::new();
    let flags = [
        ("archive", "all", true),
        ("no_dereference_preserve_links", "links", true),
        ("preserve_default", "mode,ownership,timestamps", true),
    ];
    for (id, list, on) in flags {
        if matches.get_flag(id) {
            for i in matches.indices_of(id).into_iter().flatten() {
                order.push((i, list.to_owned(), on));
            }
        }
    }
    for (id, on) in [("preserve", true), ("no_preserve", false)] {
        let values = matches.get_many::<String>(id).into_iter().flatten();
        let indices = matches.indices_of(id).into_iter().flatten();
        order.extend(indices.zip(values).map(|(i, list)| (i, list.clone(), on)));
    }
    order.sort_by_key(|(i, _, _)| *i);
    order
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// A work-stealing thread pool.
    Thread,
    /// Supervised worker processes (stealpool's process pool): a crash stays in its worker.
    Process,
}

/// A usage error: printed with cp's hint, exit status 1.
struct Usage(String);

/// The attributes `--preserve` and friends name.
#[derive(Debug, Default, Clone, Copy)]
struct Preserve {
    mode: bool,
    ownership: bool,
    timestamps: bool,
    links: bool,
    /// `--preserve=xattr`, `-a`, `--preserve=all`: extended attributes kept.
    xattr: bool,
    /// `xattr` named explicitly: a failure to keep them is an error (as cp), else silent.
    xattr_required: bool,
}

impl Preserve {
    fn set(&mut self, list: &str, on: bool) -> Result<(), Usage> {
        for word in list.split(',') {
            match word {
                "mode" => self.mode = on,
                "ownership" => self.ownership = on,
                "timestamps" => self.timestamps = on,
                "links" => self.links = on,
                "xattr" => {
                    self.xattr = on;
                    self.xattr_required = on;
                }
                "context" => {}
                "all" => *self = Preserve { mode: on, ownership: on, timestamps: on, links: on, xattr: on, ..*self },
                other => {
                    return Err(Usage(format!(
                        "invalid argument '{other}' for '--{}preserve'\nValid arguments are:\n  - 'mode'\n  - \
                         'timestamps'\n  - 'ownership'\n  - 'links'\n  - 'context'\n  - 'xattr'\n  - 'all'",
                        if on { "" } else { "no-" }
                    )));
                }
            }
        }
        Ok(())
    }
}

fn backup_control(word: &str) -> Result<Option<BackupControl>, Usage> {
    Ok(Some(match word {
        "none" | "off" => return Ok(None),
        "simple" | "never" => BackupControl::Simple,
        "existing" | "nil" => BackupControl::Existing,
        "numbered" | "t" => BackupControl::Numbered,
        other => {
            return Err(Usage(format!(
                "invalid argument '{other}' for 'backup type'\nValid arguments are:\n  - 'none', 'off'\n  - 'simple', \
                 'never'\n  - 'existing', 'nil'\n  - 'numbered', 't'"
            )));
        }
    }))
}

fn copy_options(o: &Opts) -> Result<CopyOptions, Usage> {
    let mut c = CopyOptions::default();
    // cp applies -a, -d, -p, --preserve and --no-preserve in the order given.
    let mut keep = Preserve::default();
    let mut explicit_no_mode = false;
    for (_, list, on) in &o.preserve_order {
        keep.set(list, *on)?;
        if list.split(',').any(|w| w == "mode" || w == "all") {
            explicit_no_mode = !on;
        }
    }
    c.default_modes = explicit_no_mode && !keep.mode;
    c.preserve_mode = keep.mode;
    c.preserve_ownership = keep.ownership;
    c.preserve_timestamps = keep.timestamps;
    c.preserve_links = keep.links;
    c.preserve_xattr = keep.xattr;
    c.require_xattr = keep.xattr_required;
    c.recursive = o.recursive || o.archive;
    // -L, -H and -P override each other (clap keeps the last); -a and -d mean -P unless -L/-H.
    if o.dereference {
        c.dereference = true;
        c.follow_arguments = Some(true);
    } else if o.follow_arguments {
        c.follow_arguments = Some(true);
    } else if o.no_dereference || o.archive || o.no_dereference_preserve_links {
        c.follow_arguments = Some(false);
    } else if o.link {
        // cp: -l without -P/-d/-a follows every symlink (links go to what they lead to).
        c.dereference = true;
        c.follow_arguments = Some(true);
    }
    c.no_clobber = o.no_clobber || o.update_when.as_deref() == Some("none");
    c.update = o.update || o.update_when.as_deref() == Some("older");
    // -i and -n override each other (clap keeps the last given).
    c.interactive = o.interactive && !c.no_clobber;
    c.verify = o.verify;
    c.parents = o.parents;
    c.remove_destination = o.remove_destination;
    c.force = o.force;
    c.copy_contents = o.copy_contents;
    c.write_through_dangling = std::env::var_os("POSIXLY_CORRECT").is_some();
    c.one_file_system = o.one_file_system;
    c.hard_link = o.link;
    c.symbolic_link = o.symbolic_link;
    c.attributes_only = o.attributes_only;
    c.keep_directory_symlink = o.keep_directory_symlink;
    c.sparse = match o.sparse.as_deref() {
        Some("always") => Sparse::Always,
        Some("never") => Sparse::Never,
        _ => Sparse::Auto,
    };
    c.reflink = match o.reflink.as_deref() {
        Some("always") => Reflink::Always,
        Some("never") => Reflink::Never,
        _ => Reflink::Auto,
    };
    if !o.backup.is_empty() || o.suffix.is_some() {
        let word = match o.backup.iter().rev().find(|w| !w.is_empty()) {
            Some(w) => w.to_owned(),
            None => std::env::var("VERSION_CONTROL").unwrap_or_else(|_| "existing".to_owned()),
        };
        let suffix = o.suffix.clone().or_else(|| std::env::var("SIMPLE_BACKUP_SUFFIX").ok());
        let suffix = suffix.filter(|s| !s.is_empty() && !s.contains('/')).unwrap_or_else(|| "~".to_owned());
        c.backup = backup_control(&word)?.map(|control| Backup { control, suffix });
    }
    if c.hard_link && c.symbolic_link {
        return Err(Usage("cannot make both hard and symbolic links".to_owned()));
    }
    if !o.backup.is_empty() && o.no_clobber {
        return Err(Usage("options --backup and --no-clobber are mutually exclusive".to_owned()));
    }
    if o.reflink.as_deref() == Some("always") && o.sparse.as_deref().is_some_and(|s| s != "auto") {
        return Err(Usage("--reflink can be used only with --sparse=auto".to_owned()));
    }
    Ok(c)
}

/// Prints each failure on stderr as it happens, as cp does (through the progress bar's own
/// `failed` when there is a bar, which prints above it), asks `-i`'s questions, and passes
/// everything on.
struct Messages<'a> {
    report: &'a mut dyn Observer,
    bar: bool,
    /// `-f` or `--remove-destination`: an unwritable destination is "replaced", not "tried".
    removes: bool,
    /// `--debug`: how each regular file was copied, on stdout after its `-v` line.
    debug: bool,
}

impl Observer for Messages<'_> {
    fn wants_totals(&self) -> bool {
        self.report.wants_totals()
    }

    fn wants_entries(&self) -> bool {
        self.report.wants_entries()
    }

    fn found(&mut self, files: u64, bytes: u64) {
        self.report.found(files, bytes);
    }

    fn progressed(&mut self, bytes: u64) {
        self.report.progressed(bytes);
    }

    fn copied(&mut self, kind: EntryKind, source: &Path, destination: &Path) {
        self.report.copied(kind, source, destination);
    }

    fn replaced(&mut self, kind: EntryKind, source: &Path, destination: &Path, displaced: &Displaced) {
        self.report.replaced(kind, source, destination, displaced);
    }

    fn made_parent(&mut self, source: &Path, destination: &Path) {
        self.report.made_parent(source, destination);
    }

    fn wants_debug(&self) -> bool {
        self.debug
    }

    fn data_copied(&mut self, source: &Path, destination: &Path, how: &CopyDebug) {
        self.report.data_copied(source, destination, how);
        if self.debug {
            println!("{how}");
        }
    }

    fn attempted(&mut self, kind: EntryKind, source: &Path, destination: &Path) {
        self.report.attempted(kind, source, destination);
    }

    fn failed(&mut self, failure: &Failure) {
        self.report.failed(failure);
        if !self.bar {
            eprintln!("{p}: {failure}", p = crate::program());
        }
    }

    fn overwrite(&mut self, question: &OverwriteQuestion) -> bool {
        questions::confirm(&questions::overwrite_prompt(question, self.removes))
    }

    fn left_staged(&mut self, destination: &Path, temp: &Path) {
        self.report.left_staged(destination, temp);
        if !self.bar {
            eprintln!("{p}: {}", progress::left_staged_line(temp), p = crate::program());
        }
    }
}

/// The name messages begin with: the one this program was run as (`cp` when installed under
/// that name, so that scripts reading cp's messages read the same words), as GNU cp names
/// itself; `stealcp` if there is none.
pub(crate) fn program() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::args_os()
            .next()
            .and_then(|arg0| Path::new(&arg0).file_name().map(|name| name.to_string_lossy().into_owned()))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "stealcp".to_owned())
    })
}

fn main() -> ExitCode {
    // cp's abbreviations are written out first (see long_options.rs): clap sees full names.
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "stealcp".into());
    let args = match long_options::expand(args) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{p}: {message}\nTry '{p} --help' for more information.", p = crate::program());
            return ExitCode::FAILURE;
        }
    };
    // clap's own messages (usage errors, --help) name the program as it was run, too.
    let parsed = Opts::command()
        .name(program())
        .bin_name(program())
        .try_get_matches_from(std::iter::once(arg0).chain(args))
        .and_then(|m| {
            let mut opts = Opts::from_arg_matches(&m)?;
            opts.preserve_order = preserve_order(&m);
            Ok(opts)
        });
    let opts = match parsed {
        Ok(opts) => opts,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap says what was wrong and how to get help; cp's status for it is 1, not 2.
            let _ = e.print();
            return ExitCode::FAILURE;
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // Said without the hint, as cp says them.
        Err(Failed::Usage(Usage(message)))
            if message.starts_with("cannot combine") || message.starts_with("multiple target") =>
        {
            eprintln!("{p}: {message}", p = crate::program());
            ExitCode::FAILURE
        }
        Err(Failed::Usage(Usage(message))) => {
            eprintln!("{p}: {message}\nTry '{p} --help' for more information.", p = crate::program());
            ExitCode::FAILURE
        }
        Err(Failed::Other(e)) => {
            eprintln!("{p}: {e:#}", p = crate::program());
            ExitCode::FAILURE
        }
    }
}

/// Why nothing could be copied.
enum Failed {
    Usage(Usage),
    Other(anyhow::Error),
}

impl From<Usage> for Failed {
    fn from(u: Usage) -> Self {
        Failed::Usage(u)
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failed {
    fn from(e: E) -> Self {
        Failed::Other(e.into())
    }
}

/// The sources and where they go, from the operands, `-t` and `-T`.
fn operands(opts: &Opts) -> Result<(Vec<PathBuf>, Target), Usage> {
    let mut paths = opts.paths.clone();
    if opts.strip_trailing_slashes {
        for path in &mut paths {
            *path = strip_trailing_slashes(path);
        }
    }
    let quoted = |p: &Path| format!("'{}'", p.display());
    if opts.target_directory.len() > 1 {
        return Err(Usage("multiple target directories specified".to_owned()));
    }
    match (opts.target_directory.first(), opts.no_target_directory) {
        (Some(_), true) => {
            Err(Usage("cannot combine --target-directory (-t) and --no-target-directory (-T)".to_owned()))
        }
        (Some(dir), false) if paths.is_empty() => Err(Usage(format!("missing file operand after {}", quoted(dir)))),
        (Some(dir), false) => Ok((paths, Target::IntoDirectory(dir.clone()))),
        (None, _) if paths.is_empty() => Err(Usage("missing file operand".to_owned())),
        (None, _) if paths.len() == 1 => {
            Err(Usage(format!("missing destination file operand after {}", quoted(&paths[0]))))
        }
        (None, true) if paths.len() > 2 => Err(Usage(format!("extra operand {}", quoted(&paths[2])))),
        (None, true) => Ok((vec![paths[0].clone()], Target::Exactly(paths[1].clone()))),
        (None, false) => {
            let dest = paths.pop().expect("two or more operands");
            Ok((paths, Target::Auto(dest)))
        }
    }
}

/// `cp -fb f f`: as cp does, the backup is the copy. cp turns `--force --backup` with one
/// source named exactly as its destination, an existing regular file (followed), into a copy to
/// the backup's name with backups off (`cp -f f f~`: an existing `f~` is written into); `f`
/// itself is untouched. Without `-f`, or with other names for the same file (`./f f`), the
/// plan refuses it as the same file.
fn backup_copy_of_itself(sources: &[PathBuf], target: &mut Target, options: &mut CopyOptions) {
    let (Some(backup), [source]) = (&options.backup, sources) else { return };
    let (Target::Auto(dest) | Target::Exactly(dest)) = &*target else { return };
    if options.force && source.as_os_str() == dest.as_os_str() && std::fs::metadata(dest).is_ok_and(|m| m.is_file()) {
        *target = Target::Exactly(backup.name_for(dest));
        options.backup = None;
    }
}

fn strip_trailing_slashes(path: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = path.as_os_str().as_bytes();
    while bytes.len() > 1 && bytes.ends_with(b"/") {
        bytes = &bytes[..bytes.len() - 1];
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

/// Copies; returns whether everything succeeded.
fn run(opts: &Opts) -> Result<bool, Failed> {
    let mut options = copy_options(opts)?;
    let (sources, mut target) = operands(opts)?;
    backup_copy_of_itself(&sources, &mut target, &mut options);
    if opts.context.is_some() {
        eprintln!("{p}: warning: ignoring --context; SELinux contexts are not supported", p = crate::program());
    }
    let (plan, errors) = stealcp::plan_each(&sources, &target, &options)?;
    let mut ok = true;
    for error in &errors {
        eprintln!("{p}: {error}", p = crate::program());
        ok &= error.is_warning();
    }
    if plan.is_empty() {
        return Ok(ok);
    }
    // -i's questions are asked on stderr, --debug's lines go between -v's: no bar unless asked for.
    let quiet_terminal = !options.interactive && !opts.debug && std::io::stderr().is_terminal();
    let show_progress = opts.progress || (!opts.no_progress && quiet_terminal);
    // --debug lists each copy as -v does, each regular file's line followed by how it was copied.
    let mut shown = Report::new(show_progress, opts.verbose || opts.debug);
    // The report prints failures above its bar when it draws one (on a terminal); otherwise
    // Messages prints them.
    let bar = show_progress && std::io::stderr().is_terminal();
    let removes = options.force || options.remove_destination;
    let mut observer = Messages { report: &mut shown, bar, removes, debug: opts.debug };
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
    shown.finish();
    for skipped in &report.skipped {
        eprintln!("{p}: warning: '{}': {}", skipped.path.display(), skipped.reason, p = crate::program());
    }
    // Each failure was printed as it happened (Messages::failed).
    Ok(ok && report.is_success())
}
