//! `-i`'s questions: worded as GNU cp words them, asked on stderr, answered on stdin (by the
//! coordinator only: the engine hands a worker's file back to be asked about).
//!
//! This module must never decide what is copied; it only asks and reads the answer.

use stealcp::OverwriteQuestion;

/// `-i`'s question, worded as cp words it: `overwrite 'D'? `, or for a destination this user
/// cannot write `unwritable 'D' (mode 0444, r--r--r--); try anyway? ` (`replace 'D',
/// overriding mode 0444 (r--r--r--)? ` when it would be removed anyway: `removes`).
pub(crate) fn overwrite_prompt(question: &OverwriteQuestion, removes: bool) -> String {
    let d = question.destination.display();
    if question.writable {
        return format!("{p}: overwrite '{d}'? ", p = crate::program());
    }
    let bits = question.mode & 0o7777;
    let on = |b: u32, c: char| if bits & b != 0 { c } else { '-' };
    // The execute column shows set-id and sticky bits as cp's strmode does.
    let x = |b: u32, special: u32, lower: char| match (bits & special != 0, bits & b != 0) {
        (true, true) => lower,
        (true, false) => lower.to_ascii_uppercase(),
        (false, true) => 'x',
        (false, false) => '-',
    };
    let perms: String = [
        on(0o400, 'r'),
        on(0o200, 'w'),
        x(0o100, 0o4000, 's'),
        on(0o040, 'r'),
        on(0o020, 'w'),
        x(0o010, 0o2000, 's'),
        on(0o004, 'r'),
        on(0o002, 'w'),
        x(0o001, 0o1000, 't'),
    ]
    .into_iter()
    .collect();
    if removes {
        format!("{p}: replace '{d}', overriding mode {bits:04o} ({perms})? ", p = crate::program())
    } else {
        format!("{p}: unwritable '{d}' (mode {bits:04o}, {perms}); try anyway? ", p = crate::program())
    }
}

/// Asks `prompt` on stderr and reads the answer from stdin: yes for one starting with y (at
/// the end of input: no, as cp).
pub(crate) fn confirm(prompt: &str) -> bool {
    eprint!("{prompt}");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim_start().starts_with(['y', 'Y'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_worded_as_by_cp() {
        let q = |mode, writable| OverwriteQuestion { destination: "B/A/x".into(), mode, writable };
        assert_eq!(overwrite_prompt(&q(0o100644, true), false), format!("{}: overwrite 'B/A/x'? ", crate::program()));
        assert_eq!(
            overwrite_prompt(&q(0o100444, false), false),
            format!("{}: unwritable 'B/A/x' (mode 0444, r--r--r--); try anyway? ", crate::program())
        );
        assert_eq!(
            overwrite_prompt(&q(0o106555, false), true),
            format!("{}: replace 'B/A/x', overriding mode 6555 (r-sr-sr-x)? ", crate::program())
        );
        assert_eq!(overwrite_prompt(&q(0o105000, false), true).split('(').nth(1), Some("--S-----T)? "));
    }
}
