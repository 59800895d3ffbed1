//! The fork server: a clean, single-threaded copy of the program from which worker processes
//! (and [`Process`](crate::process::Process) children) are forked.
//!
//! Forking the user's process directly is unsafe once it has threads (the cargo test harness
//! does, so does any program with a thread pool): a lock another thread held at the fork stays
//! held forever in the child. So the first pool of a process starts the fork server instead:
//! it re-executes the program's own binary (`/proc/self/exe`) with an environment variable
//! set, and a constructor in this crate (run by the loader before `main`, before any thread
//! exists) sees the variable and turns the new process into the server. `main` never runs
//! there. The user writes no start-up code.
//!
//! The server forks workers on request, reaps them (it is their parent) and reports each
//! spawn and each exit status to the parent over a pipe. Only the server can kill a worker
//! safely: it alone knows whether a pid is still its unreaped child, so kills go through it
//! and a recycled pid is never signalled. See `PROTOCOL.md` for the conversation, and its
//! last section for what the server trusts and who can reach it.
//!
//! The module is split by side: `client.rs` is the parent's handle ([`ForkServer`], started and
//! restarted by [`get`]), `server.rs` the server process (the constructor that runs before
//! `main`, its loop, and what a child does right after the fork), and this file the records
//! both sides share: the start-up records, the requests and the reports.
//!
//! This module must never let the server start a thread, and must never run code between
//! `fork` and the child's own loop that could take a lock another thread might hold, or that
//! could run one of the server's signal handlers.

mod client;
mod environment;
mod report_table;
mod server;

use std::sync::Arc;
use std::time::Duration;

use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender, IpcReceiver, OpaqueIpcReceiver};
use serde::{Deserialize, Serialize};

pub(crate) use self::client::{ForkServer, PendingSpawn, Spawned, get, request_spawn};
pub use self::environment::MAX_ENVIRONMENT_BYTES;
pub(crate) use self::environment::{ChildEnvironment, EnvironmentOptions};

/// Set in the fork server's environment (to `1`): become the server.
const ENV_SERVER: &str = "STEALPOOL_FORK_SERVER";
/// Set alongside: the parent's pid, so a stray copy of the variable in an unrelated child
/// does not turn that child into a server.
const ENV_PARENT: &str = "STEALPOOL_FORK_SERVER_PARENT";

/// The parent's one message on the bootstrap connection: the server's end of its request
/// channel.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    requests: IpcReceiver<ServerRequest>,
}

/// Start-up records, written by the server on the report pipe before any [`Report`] (same
/// size, kinds that reports never use): where to connect, or that it will not serve.
const BOOT_LISTENING: u32 = 0x100;
const BOOT_FAILED: u32 = 0x101;

fn boot_record(kind: u32, value: i32) -> [u8; REPORT_LEN] {
    let mut b = [0u8; REPORT_LEN];
    b[0..4].copy_from_slice(&kind.to_le_bytes());
    b[4..8].copy_from_slice(&value.to_le_bytes());
    b
}

fn read_boot_record(b: &[u8; REPORT_LEN]) -> (u32, i32) {
    (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), i32::from_le_bytes([b[4], b[5], b[6], b[7]]))
}

/// Parent -> fork server requests (typed ipc-channel messages).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ServerRequest {
    /// Fork a worker that reads tasks from `tasks` and writes replies to `replies`.
    /// The worker starts in `environment` (variables and current directory).
    Spawn {
        token: u64,
        name: String,
        tasks: IpcBytesReceiver,
        replies: IpcBytesSender,
        initializer: Option<crate::process::protocol::Initializer>,
        environment: Arc<ChildEnvironment>,
    },
    /// Fork a child that runs the function registered as `code` once, with the arguments that
    /// arrive on `args`, and exits (a [`Process`](crate::process::Process)).
    Run {
        token: u64,
        name: String,
        code: String,
        args: OpaqueIpcReceiver,
        die_with_parent: bool,
        environment: Arc<ChildEnvironment>,
    },
    /// Send `signal` to child `pid`, if it is still a live child of the fork server.
    Kill { pid: i32, signal: i32 },
}

/// Fork server -> parent reports: fixed-size records over a pipe, written from a signal handler
/// (so no allocation and no serializer): `kind`, `pid`, `value`, little-endian.
pub(crate) const REPORT_LEN: usize = 16;

/// The kinds of report records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// Worker for `token` forked as `pid`.
    Spawned { token: u64, pid: i32 },
    /// Fork for `token` failed with `errno`.
    SpawnFailed { token: u64, errno: i32 },
    /// `pid` exited with `code`.
    Exited { pid: i32, code: i32 },
    /// `pid` was killed by `signal`.
    Signaled { pid: i32, signal: i32 },
}

impl Report {
    pub(crate) fn encode(self) -> [u8; REPORT_LEN] {
        let (kind, pid, value): (u32, i32, i64) = match self {
            Report::Spawned { token, pid } => (1, pid, token as i64),
            Report::SpawnFailed { token, errno } => (2, errno, token as i64),
            Report::Exited { pid, code } => (3, pid, code as i64),
            Report::Signaled { pid, signal } => (4, pid, signal as i64),
        };
        let mut b = [0u8; REPORT_LEN];
        b[0..4].copy_from_slice(&kind.to_le_bytes());
        b[4..8].copy_from_slice(&pid.to_le_bytes());
        b[8..16].copy_from_slice(&value.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; REPORT_LEN]) -> Option<Report> {
        let kind = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let pid = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let value = i64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        Some(match kind {
            1 => Report::Spawned { token: value as u64, pid },
            2 => Report::SpawnFailed { token: value as u64, errno: pid },
            3 => Report::Exited { pid, code: value as i32 },
            4 => Report::Signaled { pid, signal: value as i32 },
            _ => return None,
        })
    }
}

/// How long the parent waits for the fork server to answer a spawn before giving up on it.
pub(crate) const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Spawned { token: u64::MAX >> 1, pid: 42 },
            Report::SpawnFailed { token: 3, errno: 11 },
            Report::Exited { pid: 7, code: -1 },
            Report::Signaled { pid: 8, signal: 9 },
        ] {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
        assert_eq!(Report::decode(&[0; REPORT_LEN]), None);
    }
}
