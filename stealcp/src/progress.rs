//! The command's progress display and verbose listing: an [`Observer`] that draws on stderr.
//! On a terminal, a bar redrawn five times a second that fits the terminal's width (pieces are
//! dropped, least useful first, rather than wrapping); with `--progress` and stderr not a
//! terminal, a plain line every few seconds; either way one summary line at the end (files,
//! bytes, time, rate). The time estimate comes from bytes and files rates over the last
//! seconds ([`Estimator`]); the line layout is a pure function ([`layout`]).
//!
//! This module must never copy anything or decide what is copied; it only shows what the engine
//! reports.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use stealcp::{Displaced, EntryKind, Failure, Observer};

/// How often the bar is redrawn, and how often a plain line is printed without a terminal.
const REDRAW: Duration = Duration::from_millis(200);
const PLAIN_EVERY: Duration = Duration::from_secs(3);
/// The estimator's window: rates are measured over the last this many seconds.
const WINDOW: f64 = 10.0;

/// What has been done and found so far.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    bytes: u64,
    total_bytes: u64,
    files: u64,
    total_files: u64,
}

/// The time left, from the bytes and files rates over the last [`WINDOW`] seconds: whichever
/// of bytes and files is further from done decides (a tree of small files is bound by files,
/// one of large files by bytes). Times are seconds from the start, so a test drives it with a
/// simulated clock.
#[derive(Debug, Default)]
struct Estimator {
    /// (time, bytes, files), oldest first; one sample per redraw, at most a window's worth.
    samples: VecDeque<(f64, u64, u64)>,
}

impl Estimator {
    /// Records the counts at time `t`; returns the seconds left to reach the totals, once
    /// there is at least a second of history.
    fn observe(&mut self, t: f64, bytes: u64, files: u64, total_bytes: u64, total_files: u64) -> Option<f64> {
        self.samples.push_back((t, bytes, files));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|&(t0, _, _)| t - t0 > WINDOW) {
            self.samples.pop_front();
        }
        let &(t0, b0, f0) = self.samples.front()?;
        let span = t - t0;
        if span < 1.0 {
            return None;
        }
        let left = |done: u64, start: u64, total: u64| -> Option<f64> {
            let rate = (done.saturating_sub(start)) as f64 / span;
            let remaining = total.saturating_sub(done) as f64;
            if remaining == 0.0 {
                Some(0.0)
            } else if rate > 0.0 {
                Some(remaining / rate)
            } else {
                None
            }
        };
        match (left(bytes, b0, total_bytes), left(files, f0, total_files)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut n, mut unit) = (n, 0);
    while n >= 1024.0 && unit + 1 < UNITS.len() {
        n /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n:.0} {}", UNITS[0]) } else { format!("{n:.1} {}", UNITS[unit]) }
}

fn human_time(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s / 60 % 60) } else { format!("{}:{:02}", s / 60, s % 60) }
}

/// One progress line of at most `width - 2` columns (indicatif draws a blank after it, and the
/// last column stays free so that no terminal wraps the line): a bar, bytes, files, rate and time left; pieces are dropped, least
/// useful first, when they do not fit, and the bar takes what room is left.
fn layout(width: usize, c: Counts, rate: f64, eta: Option<f64>) -> String {
    let room = width.saturating_sub(2);
    let mut pieces = vec![
        format!("{}/{}", human_bytes(c.bytes as f64), human_bytes(c.total_bytes as f64)),
        format!("{}/{} files", c.files, c.total_files),
        format!("{}/s", human_bytes(rate)),
        format!("eta {}", eta.map_or_else(|| "-".to_owned(), human_time)),
    ];
    // Most useful first: bytes, time left, files, rate.
    let order = [0, 3, 1, 2];
    let line = |keep: &[usize], pieces: &[String]| -> String {
        let mut kept: Vec<usize> = keep.to_vec();
        kept.sort_unstable();
        kept.iter().map(|&i| pieces[i].as_str()).collect::<Vec<_>>().join(" ")
    };
    let mut keep: Vec<usize> = order.to_vec();
    let mut text = line(&keep, &pieces);
    while text.chars().count() > room && !keep.is_empty() {
        keep.pop();
        text = line(&keep, &pieces);
    }
    if text.chars().count() > room {
        pieces.clear();
        text = String::new();
    }
    let bar_room = room.saturating_sub(text.chars().count() + 1).min(40);
    if bar_room >= 5 {
        let inner = bar_room - 2;
        let done = if c.total_bytes > 0 { c.bytes as f64 / c.total_bytes as f64 } else { 0.0 };
        let filled = ((done.clamp(0.0, 1.0)) * inner as f64).round() as usize;
        let bar = format!("[{}{}]", "#".repeat(filled), "-".repeat(inner - filled));
        text = if text.is_empty() { bar } else { format!("{bar} {text}") };
    }
    text
}

/// The summary line: files, bytes, time, rate.
fn summary(c: Counts, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "{} files, {} in {:.2} s ({}/s)",
        c.files,
        human_bytes(c.bytes as f64),
        secs,
        human_bytes(c.bytes as f64 / secs)
    )
}

/// Progress display and verbose listing.
pub(crate) struct Report {
    bar: Option<ProgressBar>,
    shown: bool,
    verbose: bool,
    counts: Arc<Mutex<Counts>>,
    started: Instant,
    ticker: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Report {
    /// A report that shows progress when `show_progress` (a bar on a terminal, plain lines
    /// otherwise), and lists each copy when `verbose`.
    pub(crate) fn new(show_progress: bool, verbose: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (show_progress && terminal).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
            bar
        });
        let counts = Arc::new(Mutex::new(Counts::default()));
        let started = Instant::now();
        let ticker = show_progress.then(|| {
            let (stop, stopped) = bounded::<()>(1);
            let (bar, counts) = (bar.clone(), Arc::clone(&counts));
            let handle = std::thread::spawn(move || {
                let mut estimator = Estimator::default();
                let mut last_plain = Instant::now();
                let every = if bar.is_some() { REDRAW } else { PLAIN_EVERY };
                // Ends when told to (or when the Report is gone): a bounded wait each round.
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let c = *counts.lock();
                    let t = started.elapsed().as_secs_f64();
                    let eta = estimator.observe(t, c.bytes, c.files, c.total_bytes, c.total_files);
                    let rate = c.bytes as f64 / t.max(1e-3);
                    match &bar {
                        Some(bar) => {
                            let width = console::Term::stderr().size_checked().map_or(80, |(_, w)| usize::from(w));
                            bar.set_message(layout(width, c, rate, eta));
                        }
                        None if last_plain.elapsed() >= PLAIN_EVERY => {
                            last_plain = Instant::now();
                            eprintln!("{p}: {}", layout(usize::MAX, c, rate, eta), p = crate::program());
                        }
                        None => {}
                    }
                }
            });
            (stop, handle)
        });
        Report { bar, shown: show_progress, verbose, counts, started, ticker }
    }

    /// Ends the display (call once the copy is over, before the failures are listed): clears
    /// the bar and prints the summary line.
    pub(crate) fn finish(&mut self) {
        if let Some((stop, handle)) = self.ticker.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.shown {
            eprintln!("{p}: {}", summary(*self.counts.lock(), self.started.elapsed()), p = crate::program());
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.ticker.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
    }
}

impl Observer for Report {
    /// Totals cost a `stat` per file in the walk: only worth it when progress is shown.
    fn wants_totals(&self) -> bool {
        self.shown
    }

    /// Each file is counted for the summary line (shown with progress) or listed (`-v`).
    fn wants_entries(&self) -> bool {
        self.shown || self.verbose
    }

    fn found(&mut self, files: u64, bytes: u64) {
        let mut c = self.counts.lock();
        c.total_files += files;
        c.total_bytes += bytes;
    }

    fn progressed(&mut self, bytes: u64) {
        self.counts.lock().bytes += bytes;
    }

    fn copied(&mut self, kind: EntryKind, source: &Path, destination: &Path) {
        self.listed(kind, || verbose_line(source, destination, None));
    }

    fn replaced(&mut self, kind: EntryKind, source: &Path, destination: &Path, displaced: &Displaced) {
        self.listed(kind, || verbose_line(source, destination, Some(displaced)));
    }

    fn attempted(&mut self, _kind: EntryKind, source: &Path, destination: &Path) {
        // Listed, not counted: its failure follows.
        if self.verbose {
            self.print(verbose_line(source, destination, None));
        }
    }

    fn made_parent(&mut self, source: &Path, destination: &Path) {
        // cp -v --parents lists the directories it makes unquoted.
        self.listed(EntryKind::Directory, || format!("{} -> {}", source.display(), destination.display()));
    }

    fn failed(&mut self, failure: &Failure) {
        if let Some(bar) = &self.bar {
            bar.println(format!("{p}: {failure}", p = crate::program()));
        }
    }

    fn left_staged(&mut self, _destination: &Path, temp: &Path) {
        if let Some(bar) = &self.bar {
            bar.println(format!("{p}: {}", left_staged_line(temp), p = crate::program()));
        }
    }
}

impl Report {
    /// Counts an entry and, with `-v`, prints its lines (only then made: this runs for every
    /// entry).
    fn listed(&mut self, kind: EntryKind, lines: impl FnOnce() -> String) {
        if self.verbose {
            self.print(lines());
        }
        if kind == EntryKind::File {
            self.counts.lock().files += 1;
        }
    }
}

impl Report {
    /// Prints `-v` lines on stdout, above the bar if there is one.
    fn print(&self, lines: String) {
        match &self.bar {
            Some(bar) => bar.println(lines),
            None => println!("{lines}"),
        }
    }
}

/// What `cp -v` prints for one entry, in its order: `'SOURCE' -> 'DEST'`, with
/// `removed 'DEST'` before or after it when it replaced an existing destination, or
/// ` (backup: 'NAME')` at its end when that was backed up.
fn verbose_line(source: &Path, destination: &Path, displaced: Option<&Displaced>) -> String {
    let (source, destination) = (source.display(), destination.display());
    match displaced {
        None => format!("'{source}' -> '{destination}'"),
        Some(Displaced::Removed) => format!("removed '{destination}'\n'{source}' -> '{destination}'"),
        Some(Displaced::Replaced) => format!("'{source}' -> '{destination}'\nremoved '{destination}'"),
        Some(Displaced::BackedUp(backup)) => {
            format!("'{source}' -> '{destination}' (backup: '{}')", backup.display())
        }
    }
}

/// The line after the failure of a new directory that could not be renamed into place.
pub(crate) fn left_staged_line(temp: &Path) -> String {
    format!("the copied tree is at '{}'", temp.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_fits_every_width_and_keeps_the_bytes_as_long_as_it_can() {
        let c = Counts { bytes: 123 << 30, total_bytes: 456 << 30, files: 1_234_567, total_files: 9_876_543 };
        for width in [10, 20, 40, 60, 80, 200] {
            let line = layout(width, c, 987.6 * 1048576.0, Some(3725.0));
            assert!(line.chars().count() <= width - 2, "{width}: {line:?}");
            if width >= 40 {
                assert!(line.contains("123.0 GiB/456.0 GiB"), "{width}: {line:?}");
            }
        }
        let wide = layout(200, c, 1048576.0, Some(3725.0));
        assert!(
            wide.contains("files") && wide.contains("eta 1h02m") && wide.contains("MiB/s") && wide.starts_with('[')
        );
        let narrow = layout(60, c, 1048576.0, Some(3725.0));
        assert!(narrow.contains("eta 1h02m"), "{narrow:?}");
    }

    /// A uniform tree (equal files) copied at a steady rate that a scheduler makes bursty
    /// (whole batches complete at once), with the walk still finding files for the first
    /// second: after 3 s the estimate is within 25% of the truth, on a simulated clock.
    #[test]
    fn the_estimate_is_within_a_quarter_of_the_truth_after_a_few_seconds() {
        let (files, size) = (20_000u64, 64 << 10);
        let per_sec = 500u64; // files per second: 40 s in all
        let truth_total = files as f64 / per_sec as f64;
        let mut e = Estimator::default();
        let mut checked = 0;
        for tick in 1..(truth_total / 0.2) as u64 {
            let t = tick as f64 * 0.2;
            // Batches of 64 files land whole.
            let done = ((t * per_sec as f64) as u64 / 64 * 64).min(files);
            let found = if t < 1.0 { files / 4 } else { files };
            let eta = e.observe(t, done * size, done, found * size, found);
            if t >= 3.0 && done < files {
                let truth = truth_total - t;
                let eta = eta.expect("an estimate after 3 s");
                assert!((eta - truth).abs() <= 0.25 * truth.max(1.0), "t={t}: eta {eta} vs {truth}");
                checked += 1;
            }
        }
        assert!(checked > 100);
    }

    #[test]
    fn verbose_lines_are_worded_and_ordered_as_by_cp() {
        let (s, d) = (Path::new("A/x"), Path::new("B/A/x"));
        assert_eq!(verbose_line(s, d, None), "'A/x' -> 'B/A/x'");
        assert_eq!(verbose_line(s, d, Some(&Displaced::Removed)), "removed 'B/A/x'\n'A/x' -> 'B/A/x'");
        assert_eq!(verbose_line(s, d, Some(&Displaced::Replaced)), "'A/x' -> 'B/A/x'\nremoved 'B/A/x'");
        let backup = Displaced::BackedUp("B/A/x.~2~".into());
        assert_eq!(verbose_line(s, d, Some(&backup)), "'A/x' -> 'B/A/x' (backup: 'B/A/x.~2~')");
    }

    #[test]
    fn the_summary_has_files_bytes_time_and_rate() {
        let c = Counts { bytes: 10 << 20, total_bytes: 10 << 20, files: 42, total_files: 42 };
        assert_eq!(summary(c, Duration::from_secs(2)), "42 files, 10.0 MiB in 2.00 s (5.0 MiB/s)");
    }
}
