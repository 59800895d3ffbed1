//! `-i` side by side with GNU cp 9.1, inside trees as for files named on the command line: a
//! question (`overwrite 'D'? `, `unwritable 'D' (mode 0444, r--r--r--); try anyway? `) for each
//! existing destination that would be replaced, after `-n`/`-u`/same-file checks, asked by the
//! coordinator on its own stdin (also with worker processes); "n" leaves the destination and the
//! status 0. As root, as uid 65534, and with `--backend process`.

mod gnu_harness;

use std::fs;
use std::path::Path;

use gnu_harness::{file, same_questions_as_cp, symlink};

/// An existing tree `B/A` under a source `A`: two files to replace, one new, a symlink and a
/// FIFO over files, a directory merged.
fn trees(dir: &Path) {
    file(dir, "A/x", "1\n", 0o644);
    file(dir, "A/sub/y", "1\n", 0o644);
    file(dir, "A/new", "n\n", 0o644);
    symlink(dir, "x", "A/l");
    nix::unistd::mkfifo(&dir.join("A/p"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    file(dir, "B/A/x", "2\n", 0o644);
    file(dir, "B/A/sub/y", "3\n", 0o644);
    file(dir, "B/A/l", "was a file\n", 0o644);
    file(dir, "B/A/p", "was a file\n", 0o644);
}

const NO: &[u8] = b"n\nn\nn\nn\nn\nn\n";
const YES: &[u8] = b"y\ny\ny\ny\ny\ny\n";

#[test]
fn each_existing_file_in_a_tree_is_asked_about_and_no_keeps_it() {
    for input in [NO, YES, b"" as &[u8]] {
        same_questions_as_cp(trees, &["-ri", "A", "B"], input);
        same_questions_as_cp(trees, &["-ai", "A", "B"], input);
        same_questions_as_cp(trees, &["-rvi", "A", "B"], input);
    }
}

#[test]
fn no_clobber_and_update_decide_before_asking() {
    // The last of -i and -n wins, as in cp.
    same_questions_as_cp(trees, &["-r", "-i", "-n", "A", "B"], YES);
    same_questions_as_cp(trees, &["-r", "-n", "-i", "A", "B"], YES);
    // -u: only sources newer than their destination are asked about.
    let older = |dir: &Path| {
        trees(dir);
        let old = filetime::FileTime::from_unix_time(946_684_800, 0);
        filetime::set_file_mtime(dir.join("A/x"), old).unwrap();
        filetime::set_file_mtime(dir.join("B/A/sub/y"), old).unwrap();
    };
    same_questions_as_cp(older, &["-riu", "A", "B"], YES);
    // Asked, then backed up.
    same_questions_as_cp(trees, &["-rib", "A", "B"], YES);
}

#[test]
fn one_answer_each_yes_or_no_for_a_single_question() {
    let one = |dir: &Path| {
        file(dir, "A/x", "1\n", 0o644);
        for i in 0..20 {
            file(dir, &format!("A/new{i}"), "n\n", 0o644);
        }
        file(dir, "B/A/x", "2\n", 0o644);
    };
    same_questions_as_cp(one, &["-ri", "A", "B"], b"y\n");
    same_questions_as_cp(one, &["-ri", "A", "B"], b"no\n");
}

#[test]
fn an_unwritable_destination_is_asked_about_as_cp_asks() {
    // Root may write anything; uid 65534 is asked whether to try anyway, or with -f whether to
    // replace it.
    let read_only = |dir: &Path| {
        file(dir, "s", "source\n", 0o644);
        file(dir, "d", "old\n", 0o444);
        file(dir, "A/x", "1\n", 0o644);
        file(dir, "B/A/x", "2\n", 0o4444);
    };
    for input in [NO, YES] {
        same_questions_as_cp(read_only, &["-i", "s", "d"], input);
        same_questions_as_cp(read_only, &["-if", "s", "d"], input);
        same_questions_as_cp(read_only, &["-ri", "A", "B"], input);
        same_questions_as_cp(read_only, &["-ri", "--remove-destination", "A", "B"], input);
    }
}

#[test]
fn files_symlinks_and_hard_links_named_or_found_are_asked_about() {
    let named = |dir: &Path| {
        file(dir, "s", "source\n", 0o644);
        file(dir, "d", "old\n", 0o644);
        symlink(dir, "s", "l");
        file(dir, "A/h1", "linked\n", 0o644);
        fs::hard_link(dir.join("A/h1"), dir.join("A/h2")).unwrap();
        file(dir, "B/A/h1", "2\n", 0o644);
        file(dir, "B/A/h2", "3\n", 0o644);
    };
    for input in [NO, YES] {
        same_questions_as_cp(named, &["-i", "s", "d"], input);
        same_questions_as_cp(named, &["-Pi", "l", "d"], input);
        same_questions_as_cp(named, &["-ai", "A", "B"], input);
        // The same file: an error before any question.
        same_questions_as_cp(named, &["-i", "s", "s"], input);
    }
}

/// Two sources landing on one name: cp asks about the name the first just made, then on "y"
/// refuses ("will not overwrite just-created", or "will not copy ... through just-created
/// symlink"), on "n" skips it with status 0; a third source on the name is asked about too.
#[test]
fn a_name_an_earlier_source_just_made_is_asked_about_then_refused() {
    let two = |dir: &Path| {
        file(dir, "d1/x", "1\n", 0o644);
        file(dir, "d2/x", "2\n", 0o644);
        file(dir, "d3/x", "3\n", 0o644);
        symlink(dir, "elsewhere", "d4/x");
        symlink(dir, "../d3/x", "d5/x");
        fs::create_dir(dir.join("o")).unwrap();
    };
    for input in [NO, YES, b"y\nn\n" as &[u8], b"" as &[u8]] {
        same_questions_as_cp(two, &["-i", "d1/x", "d2/x", "o"], input);
        same_questions_as_cp(two, &["-i", "d1/x", "d2/x", "d3/x", "o"], input);
        same_questions_as_cp(two, &["-iv", "d1/x", "d2/x", "o"], input);
        // The first makes a symlink, the second would write through it: asked about as the
        // file it leads to, or refused at once if it leads nowhere.
        same_questions_as_cp(two, &["-id", "d4/x", "d1/x", "o"], input);
        same_questions_as_cp(two, &["-id", "d5/x", "d1/x", "o"], input);
        // Both symlinks, copied as symlinks.
        same_questions_as_cp(two, &["-id", "d5/x", "d4/x", "o"], input);
        // Numbered backups are exempt from the rule: asked, then backed up and replaced.
        same_questions_as_cp(two, &["-i", "--backup=numbered", "d1/x", "d2/x", "o"], input);
    }
}
