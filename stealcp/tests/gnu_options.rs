//! Long option abbreviations side by side with GNU cp: for every long option `cp --help` lists,
//! the shortest abbreviation cp takes does the same with stealcp (same tree, status and first
//! words of each message), and `--b` ... `--backu` stay `--backup` beside stealcp's
//! `--backend`; abbreviations cp finds ambiguous are refused by both.

mod gnu_harness;

use std::path::Path;
use std::process::Command;

use gnu_harness::{Compare, file, gnu_cp, same_as_cp, same_as_cp_with, symlink};

/// The long options `cp --help` lists, without their dashes.
fn cp_long_options(cp: &str) -> Vec<String> {
    let help = Command::new(cp).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let mut names: Vec<String> = Vec::new();
    for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if let Some(name) = word.strip_prefix("--").filter(|n| n.len() > 1)
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    }
    names
}

/// The shortest prefix of `name` that no other of `names` starts with.
fn shortest_unique(name: &str, names: &[String]) -> String {
    (1..=name.len())
        .map(|n| &name[..n])
        .find(|p| names.iter().filter(|other| other.starts_with(p)).count() == 1)
        .unwrap_or(name)
        .to_owned()
}

/// A small tree for every case: a file `s`, an existing `d`, a directory `D` with a file and a
/// symlink, and an empty directory `o`.
fn tree(dir: &Path) {
    file(dir, "s", "source\n", 0o644);
    file(dir, "d", "old destination\n", 0o600);
    file(dir, "D/f", "in D\n", 0o640);
    symlink(dir, "f", "D/l");
    std::fs::create_dir(dir.join("o")).unwrap();
}

/// What to run with the abbreviation `opt` of the long option `name`: the arguments, and what
/// to compare.
fn case(name: &str, opt: &str) -> Option<(Vec<String>, Compare)> {
    let args = |rest: &[&str]| -> Vec<String> { rest.iter().map(|s| s.replace("OPT", opt)).collect() };
    let plain = Compare::default();
    let quiet = Compare { skip_messages: true, ..Compare::default() };
    Some(match name {
        "archive" | "recursive" => (args(&["OPT", "D", "E"]), plain),
        "attributes-only" | "force" | "remove-destination" | "backup" | "update" | "no-clobber" | "link" => {
            (args(&["OPT", "s", "d"]), plain)
        }
        "interactive" => (args(&["OPT", "s", "d"]), plain),
        "symbolic-link" => (args(&["OPT", "s", "n"]), plain),
        "copy-contents" | "dereference" | "no-dereference" | "one-file-system" | "strip-trailing-slashes" => {
            (args(&["-R", "OPT", "D", "E"]), plain)
        }
        "no-preserve" => (args(&["-a", "OPT=mode", "D", "E"]), plain),
        "preserve" => (args(&["-r", "OPT=mode", "D", "E"]), plain),
        "no-target-directory" => (args(&["-r", "OPT", "D", "o"]), plain),
        "parents" => (args(&["OPT", "D/f", "o"]), plain),
        "reflink" => (args(&["OPT=never", "s", "n"]), plain),
        "sparse" => (args(&["OPT=never", "s", "n"]), plain),
        "suffix" => (args(&["-b", "OPT", ".old", "s", "d"]), plain),
        "target-directory" => (args(&["OPT", "o", "s", "D/f"]), plain),
        "verbose" => (args(&["-r", "OPT", "D", "E"]), Compare { stdout: true, ..plain }),
        // SELinux: cp on a kernel without it takes -Z silently, stealcp warns.
        "context" => (args(&["OPT", "s", "n"]), quiet),
        // Status only: the texts are the programs' own.
        "help" | "version" => (args(&["OPT"]), quiet),
        _ => return None,
    })
}

#[test]
fn the_shortest_abbreviation_cp_takes_of_each_long_option_works_as_in_cp() {
    let Some(cp) = gnu_cp() else {
        eprintln!("skipped: /usr/bin/cp is not GNU cp");
        return;
    };
    let names = cp_long_options(cp);
    assert!(names.len() > 20 && names.iter().any(|n| n == "backup"), "cp --help lists: {names:?}");
    let mut missing = Vec::new();
    for name in &names {
        let opt = format!("--{}", shortest_unique(name, &names));
        let Some((args, how)) = case(name, &opt) else {
            missing.push(name.clone());
            continue;
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let runs = same_as_cp_with(tree, &args, Some(b"n\n"), how);
        assert!(!runs.is_empty());
        if name == "help" {
            assert!(runs.iter().all(|r| r.stdout.contains("Usage")), "{opt} gives the help");
        }
    }
    assert!(missing.is_empty(), "no case for cp's long options {missing:?}: add one");
}

#[test]
fn every_abbreviation_of_backup_is_backup_beside_backend() {
    for opt in ["--b", "--ba", "--bac", "--back", "--backu"] {
        same_as_cp(tree, &[opt, "s", "d"]);
        let numbered = format!("{opt}=numbered");
        same_as_cp(tree, &[numbered.as_str(), "s", "d"]);
    }
    // And cp's other abbreviations that stealcp's own options begin alike.
    same_as_cp(tree, &["-r", "--pr=mode,timestamps", "D", "E"]);
    same_as_cp(tree, &["-a", "--no-p=mode", "D", "E"]);
    same_as_cp(tree, &["-r", "--d", "D", "E"]);
    same_as_cp(tree, &["-r", "--de", "D", "E"]);
    same_as_cp_with(tree, &["-r", "--verb", "D", "E"], None, Compare { stdout: true, ..Compare::default() });
}

#[test]
fn abbreviations_cp_finds_ambiguous_are_usage_errors_in_both() {
    for opt in ["--p", "--v", "--ve", "--ver", "--r", "--s", "--n", "--no", "--a", "--c"] {
        let runs = same_as_cp_with(tree, &[opt, "s", "d"], None, Compare { skip_messages: true, ..Compare::default() });
        for run in &runs {
            assert_eq!(run.status, Some(1));
            assert!(run.stderr.contains(&format!("option '{opt}' is ambiguous; possibilities:")), "{}", run.stderr);
        }
    }
}

#[test]
fn stealcps_own_options_take_the_abbreviations_cp_leaves_free() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_stealcp"))
        .args(["--backe", "process", "--j", "2", "--veri", "--no-pro", "-r", "D", "E"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("E/f")).unwrap(), "in D\n");
}
