//! Directories built under a temporary name beside their destination (see `run/`), and the
//! path a user should be shown for a path inside one.
//!
//! This module must never show a user a temporary path for an entry of a staged directory.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// A directory built under a temporary name (see the module docs of `run/`).
pub(super) struct Staging {
    pub(super) temp: PathBuf,
    pub(super) destination: PathBuf,
}

/// The path a user should see for `path`: inside a staging directory, the path it will have.
pub(super) fn shown<'p>(stagings: &[Staging], path: &'p Path) -> Cow<'p, Path> {
    use std::os::unix::ffi::OsStrExt;
    // Paths under a staging directory are built by joining onto it, so comparing bytes is
    // exact (and cheap: this runs for every entry).
    let bytes = path.as_os_str().as_bytes();
    for s in stagings {
        match bytes.strip_prefix(s.temp.as_os_str().as_bytes()) {
            Some([]) => return Cow::Owned(s.destination.clone()),
            Some([b'/', rest @ ..]) => {
                return Cow::Owned(crate::entry::child(&s.destination, std::ffi::OsStr::from_bytes(rest)));
            }
            _ => {}
        }
    }
    Cow::Borrowed(path)
}
