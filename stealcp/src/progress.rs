//! The command's progress bar and verbose listing: an [`Observer`] that draws on stderr.
//!
//! This module must never copy anything or decide what is copied; it only shows what the engine
//! reports.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use stealcp::{EntryKind, Failure, Observer};

/// Progress bar and verbose listing.
pub(crate) struct Report {
    bar: Option<ProgressBar>,
    verbose: bool,
    files: u64,
    total_files: u64,
}

impl Report {
    /// A report that draws a bar when `show_progress`, and lists each copy when `verbose`.
    pub(crate) fn new(show_progress: bool, verbose: bool) -> Self {
        Report { bar: show_progress.then(progress_bar), verbose, files: 0, total_files: 0 }
    }

    /// Removes the bar (call once the copy is over, before printing the summary).
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

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
