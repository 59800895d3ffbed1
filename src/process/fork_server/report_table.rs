//! What the parent knows from its fork server's reports, as a plain table (no I/O, no locks:
//! the handle in `client.rs` holds it under its mutex): which requests wait for an answer,
//! which children live, which exit statuses wait to be collected.
//!
//! This module must never accept a report that answers nothing the parent asked: such a
//! report is garbage, and the caller then treats the server as dead.

use std::collections::{HashMap, HashSet};

use nix::libc;

use super::Report;
use crate::error::ExitStatus;

/// What the parent knows from the server's reports. Every entry is there because the parent
/// asked for something (a token) or was told of a child it had asked for (a pid), so a server
/// cannot make it grow beyond what the parent requested; a report that fits nothing is garbage
/// and the server is treated as dead.
#[derive(Default)]
pub(super) struct ReportTable {
    pub(super) alive: bool,
    pub(super) next_token: u64,
    /// Tokens of requests not yet answered.
    pub(super) asked: HashSet<u64>,
    pub(super) spawned: HashMap<u64, Result<u32, i32>>,
    /// Children reported spawned whose exit has not been reported yet.
    pub(super) children: HashSet<u32>,
    pub(super) exits: HashMap<u32, ExitStatus>,
    /// Children whose exit nobody will ask about.
    pub(super) unwanted: HashSet<u32>,
}

impl ReportTable {
    /// Records a report; `false` if it is garbage (answers nothing that was asked).
    pub(super) fn record(&mut self, report: Report) -> bool {
        match report {
            Report::Spawned { token, pid } => match u32::try_from(pid) {
                Ok(pid) if pid > 0 && self.asked.contains(&token) && !self.children.contains(&pid) => {
                    self.asked.remove(&token);
                    self.children.insert(pid);
                    self.spawned.insert(token, Ok(pid));
                    true
                }
                _ => false,
            },
            Report::SpawnFailed { token, errno } => {
                let known = self.asked.remove(&token);
                if known {
                    self.spawned.insert(token, Err(if errno > 0 { errno } else { libc::EIO }));
                }
                known
            }
            Report::Exited { pid, code } => self.exited(pid, ExitStatus::Exited(code)),
            Report::Signaled { pid, signal } => self.exited(pid, ExitStatus::Signaled { signal }),
        }
    }

    /// Records the exit of child `pid`; `false` if `pid` is not a child we were told of.
    pub(super) fn exited(&mut self, pid: i32, status: ExitStatus) -> bool {
        let Ok(pid) = u32::try_from(pid) else { return false };
        if !self.children.remove(&pid) {
            return false;
        }
        if !self.unwanted.remove(&pid) {
            self.exits.insert(pid, status);
        }
        true
    }
}
