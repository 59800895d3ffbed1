//! GNU cp's abbreviations of long options (`--recur`, `--b=t`, `--no-p=mode`), resolved before
//! clap sees the arguments: an abbreviation means what it means to GNU cp 9.1, and only one
//! that no cp option starts with may mean one of stealcp's own options (`--backe` for
//! `--backend`, `--pro` for `--progress`). Clap then gets full names only.
//!
//! This module must never let one of stealcp's own long options make a cp abbreviation
//! ambiguous or change its meaning, and never rewrite an operand (anything after `--`, or an
//! option's value).

use std::ffi::OsString;

/// Whether a long option takes a value in the next argument when none is attached with `=`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Value {
    /// No value, or only one attached with `=` (an optional argument).
    Attached,
    /// A required value: `--suffix .old` as well as `--suffix=.old`.
    Required,
}

/// GNU cp 9.1's long options (`long_opts` in its `cp.c`), with the name each one means
/// (`--path` is cp's deprecated spelling of `--parents`).
const CP: &[(&str, &str, Value)] = &[
    ("archive", "archive", Value::Attached),
    ("attributes-only", "attributes-only", Value::Attached),
    ("backup", "backup", Value::Attached),
    ("copy-contents", "copy-contents", Value::Attached),
    ("dereference", "dereference", Value::Attached),
    ("force", "force", Value::Attached),
    ("interactive", "interactive", Value::Attached),
    ("link", "link", Value::Attached),
    ("no-clobber", "no-clobber", Value::Attached),
    ("no-dereference", "no-dereference", Value::Attached),
    ("no-preserve", "no-preserve", Value::Required),
    ("no-target-directory", "no-target-directory", Value::Attached),
    ("one-file-system", "one-file-system", Value::Attached),
    ("parents", "parents", Value::Attached),
    ("path", "parents", Value::Attached),
    ("preserve", "preserve", Value::Attached),
    ("recursive", "recursive", Value::Attached),
    ("remove-destination", "remove-destination", Value::Attached),
    ("sparse", "sparse", Value::Required),
    ("reflink", "reflink", Value::Attached),
    ("strip-trailing-slashes", "strip-trailing-slashes", Value::Attached),
    ("suffix", "suffix", Value::Required),
    ("symbolic-link", "symbolic-link", Value::Attached),
    ("target-directory", "target-directory", Value::Required),
    ("update", "update", Value::Attached),
    ("verbose", "verbose", Value::Attached),
    ("context", "context", Value::Attached),
    ("help", "help", Value::Attached),
    ("version", "version", Value::Attached),
];

/// stealcp's own long options (`--debug` and `--keep-directory-symlink` are later cp's).
const OURS: &[(&str, Value)] = &[
    ("debug", Value::Attached),
    ("keep-directory-symlink", Value::Attached),
    ("jobs", Value::Required),
    ("backend", Value::Required),
    ("progress", Value::Attached),
    ("no-progress", Value::Attached),
    ("verify", Value::Attached),
];

/// Short options whose value is the rest of their argument or the next argument.
const SHORT_WITH_VALUE: &[u8] = b"tSj";

/// The full name `name` stands for, and whether its value may be the next argument; `Err` with
/// cp's message if it is ambiguous; `Ok(None)` if no option starts with it (clap says so).
fn resolve(name: &str) -> Result<Option<(&'static str, Value)>, String> {
    if let Some(&(_, full, value)) = CP.iter().find(|(n, _, _)| *n == name) {
        return Ok(Some((full, value)));
    }
    if let Some(&(full, value)) = OURS.iter().find(|(n, _)| *n == name) {
        return Ok(Some((full, value)));
    }
    let mut meanings: Vec<(&'static str, Value)> = Vec::new();
    for &(n, full, value) in CP {
        if n.starts_with(name) && !meanings.iter().any(|(f, _)| *f == full) {
            meanings.push((full, value));
        }
    }
    if meanings.is_empty() {
        meanings = OURS.iter().filter(|(n, _)| n.starts_with(name)).copied().collect();
    }
    match meanings.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => {
            let names: Vec<String> = many.iter().map(|(n, _)| format!("'--{n}'")).collect();
            Err(format!("option '--{name}' is ambiguous; possibilities: {}", names.join(" ")))
        }
    }
}

/// The arguments (without the program's name) with every long option abbreviation written
/// out; `Err` with cp's message for an ambiguous one.
///
/// # Examples (as the tests run them)
/// `["--b=t", "--pr", "--backe", "process", "-t", "--x", "a"]` becomes
/// `["--backup=t", "--preserve", "--backend", "process", "-t", "--x", "a"]`.
pub(crate) fn expand(args: impl IntoIterator<Item = OsString>) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(args);
            break;
        }
        let takes_next = if let Some(long) = text.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            match resolve(name)? {
                Some((full, value)) => {
                    out.push(match attached {
                        Some(v) => OsString::from(format!("--{full}={v}")),
                        None => OsString::from(format!("--{full}")),
                    });
                    value == Value::Required && attached.is_none()
                }
                None => {
                    out.push(arg);
                    false
                }
            }
        } else if let Some(cluster) = text.strip_prefix('-').filter(|c| !c.is_empty()) {
            // `-vt DIR` takes the next argument, `-vtDIR` does not.
            let bytes = cluster.as_bytes();
            let last_takes_next = bytes.iter().position(|b| SHORT_WITH_VALUE.contains(b)) == Some(bytes.len() - 1);
            out.push(arg);
            last_takes_next
        } else {
            out.push(arg);
            false
        };
        if takes_next && let Some(value) = args.next() {
            out.push(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(args: &[&str]) -> Result<Vec<String>, String> {
        let out = expand(args.iter().map(OsString::from))?;
        Ok(out.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn cp_abbreviations_keep_their_meaning_beside_our_options() {
        for b in ["--b", "--ba", "--bac", "--back", "--backu", "--backup"] {
            assert_eq!(expanded(&[b, "s", "d"]).unwrap(), ["--backup", "s", "d"], "{b}");
        }
        assert_eq!(expanded(&["--b=numbered"]).unwrap(), ["--backup=numbered"]);
        assert_eq!(expanded(&["--backe", "process"]).unwrap(), ["--backend", "process"]);
        assert_eq!(
            expanded(&["--pr", "--pro", "--no-p=mode", "--no-pro"]).unwrap(),
            ["--preserve", "--progress", "--no-preserve=mode", "--no-progress"]
        );
        assert_eq!(
            expanded(&["--d", "--de", "--deb", "--k", "--veri", "--verb", "--j", "2"]).unwrap(),
            [
                "--dereference",
                "--dereference",
                "--debug",
                "--keep-directory-symlink",
                "--verify",
                "--verbose",
                "--jobs",
                "2"
            ]
        );
        assert_eq!(expanded(&["--pa", "--path"]).unwrap(), ["--parents", "--parents"]);
        assert_eq!(
            expanded(&["--p"]).unwrap_err(),
            "option '--p' is ambiguous; possibilities: '--parents' '--preserve'"
        );
        assert!(expanded(&["--v"]).unwrap_err().contains("'--verbose' '--version'"));
        assert_eq!(expanded(&["--nonsense"]).unwrap(), ["--nonsense"]);
    }

    #[test]
    fn values_and_operands_are_never_rewritten() {
        assert_eq!(
            expanded(&["-t", "--b", "--su", "--v", "--", "--p"]).unwrap(),
            ["-t", "--b", "--suffix", "--v", "--", "--p"]
        );
        assert_eq!(expanded(&["-vS", "--p", "-tdir", "--b"]).unwrap(), ["-vS", "--p", "-tdir", "--backup"]);
        assert_eq!(
            expanded(&["--target", "--x", "--s=--p"]).unwrap_err(),
            "option '--s' is ambiguous; possibilities: '--sparse' '--strip-trailing-slashes' '--suffix' '--symbolic-link'"
        );
    }
}
