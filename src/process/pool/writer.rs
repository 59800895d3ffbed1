//! A worker's writer thread: moves frames from the worker's outbox into its task socket.
//!
//! A `send` blocks when the worker lags, so the writer is a thread of its own and nobody else
//! ever blocks on the socket; it fails at once (`EPIPE`) when the worker dies.
//!
//! When it ends it shuts the socket down for writing (`shutdown(2)`), so that the worker reads
//! end of file even if another process holds a copy of the descriptor (a child the program
//! forked, which inherits every descriptor of the parent's).
//!
//! This module must never take the pool's lock or decide anything about a task: it only moves
//! bytes, in the order the outbox gives them.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::ipc;
use crate::process::protocol;
use crate::process::slot::Slot;

/// A worker's writer thread: frames from the outbox into the task channel, until the outbox
/// closes (the worker then reads end of file) or the worker is gone. Small frames that queued
/// up meanwhile go together in one batch message; large ones go alone, without a copy.
pub(super) fn write_frames(outbox: Receiver<Arc<ipc::Frame>>, tasks: OwnedFd, slot_fd: OwnedFd, slot: &Slot) {
    write_until_closed(&outbox, &tasks, slot_fd, slot);
    // Closing our descriptor alone would not end the stream while a forked copy of it lives.
    let _ = nix::sys::socket::shutdown(tasks.as_raw_fd(), nix::sys::socket::Shutdown::Write);
}

fn write_until_closed(outbox: &Receiver<Arc<ipc::Frame>>, tasks: &OwnedFd, slot_fd: OwnedFd, slot: &Slot) {
    // The first frame, empty, carries the worker's slot.
    if ipc::send_parts(tasks.as_fd(), &[], Some(slot_fd.as_fd())).is_err() {
        return;
    }
    drop(slot_fd);
    // Messages sent whole, told to the worker through the slot after each: it reads its
    // socket without waiting only while it has read fewer (no empty read per task).
    let mut count_sent: u64 = 0;
    let mut batch = Vec::new();
    let mut carried: Option<Arc<ipc::Frame>> = None;
    loop {
        let first = match carried.take() {
            Some(f) => f,
            None => match outbox.recv() {
                Ok(f) => f,
                Err(_) => return,
            },
        };
        let mut count = 1;
        if first.len() <= protocol::BATCHABLE {
            while batch.len() < protocol::BATCH_BYTES {
                match outbox.try_recv() {
                    Ok(next) if next.len() <= protocol::BATCHABLE => {
                        if count == 1 {
                            protocol::batch_start(&mut batch);
                            protocol::batch_push(&mut batch, &first);
                        }
                        protocol::batch_push(&mut batch, &next);
                        count += 1;
                    }
                    Ok(large) => {
                        carried = Some(large);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let sent = ipc::send(tasks.as_fd(), if count == 1 { &first } else { &batch });
        batch.clear();
        if sent.is_err() {
            return;
        }
        count_sent += 1;
        slot.set_frames_sent(count_sent);
    }
}
