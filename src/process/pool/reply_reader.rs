//! A worker's reply reader (its *link* thread): reads replies until end of file, hands each
//! to the supervision rules, delivers results, and at the end reports the worker's exit.
//!
//! This module must never trust a reply (see "What the parent trusts" in `PROTOCOL.md`): a
//! frame that breaks the framing or the protocol ends reading and gets the worker killed.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::reader_mark::ReaderMark;
use super::threads::OWN_POOL;
use super::{Pool, apply_locked};
use crate::error::ExitStatus;
use crate::ipc::{self, Blocking, FrameError, Reader};
use crate::process::fork_server::ForkServer;
use crate::process::protocol::{self, FromWorker};
use crate::process::slot::Slot;

impl Pool {
    /// A worker's link thread: reads replies until end of file, then handles the exit. A reply
    /// that breaks the framing or makes no sense means the worker is not following the
    /// protocol: it is killed (and replaced, as for any death) and nothing more is read from it.
    pub(super) fn read_replies(
        self: &Arc<Self>,
        worker: u64,
        server: &ForkServer,
        pid: u32,
        replies: OwnedFd,
        mark: &ReaderMark,
        slot: &Slot,
    ) {
        OWN_POOL.with(|p| p.set(Arc::as_ptr(self) as usize));
        #[cfg(test)]
        if self.config.name_prefix == super::test::PANIC_LINK_PREFIX {
            panic!("a reply reader panic, injected by a test");
        }
        let mut replies = Reader::new(replies, ipc::MAX_FRAME);
        // Reply messages read after `Ready`, told to the worker through the slot: while it has
        // sent more than this, it may hold replies to send them together.
        let mut read: u64 = 0;
        let mut ready = false;
        loop {
            let fault = match replies.recv(Blocking::Yes) {
                Ok(Some(frame)) => {
                    mark.enter();
                    let handled = self.on_message(worker, frame);
                    mark.leave();
                    if ready {
                        read += 1;
                        slot.set_replies_read(read);
                    }
                    ready = true;
                    match handled {
                        Ok(()) => continue,
                        Err(fault) => fault,
                    }
                }
                Ok(None) => continue,
                // End of file, also inside a frame: the worker died (or closed its end), which
                // its exit status tells.
                Err(FrameError::Closed | FrameError::Truncated(_)) => break,
                Err(FrameError::Io(e)) => format!("reading its replies failed: {e}"),
                Err(FrameError::Violation(why)) => why,
            };
            // The worker broke the protocol: stop it (unless already stopped) and kill it.
            let d = self.event(|r| r.on_fault(worker, fault));
            server.kill(pid, Signal::SIGKILL);
            self.act(d);
            break;
        }
        drop(replies);
        let mut status = server.wait_exit(pid, Duration::from_secs(5));
        if status == ExitStatus::Unknown {
            // Still alive after closing its reply channel: it can no longer be served.
            server.kill(pid, Signal::SIGKILL);
            status = server.wait_exit(pid, Duration::from_secs(5));
        }
        // The worker's process is gone (and reaped).
        let usable = server.is_usable();
        let d = self.event(|r| r.on_exit(worker, status, usable, Instant::now()));
        self.act(d);
    }

    /// Handles one message: a reply, or a batch of them (checked whole first, then handled in
    /// order; each must be a `Done` or a `Skipped`). `Err` says how it breaks the protocol.
    fn on_message(self: &Arc<Self>, worker: u64, frame: &[u8]) -> Result<(), String> {
        let Ok((FromWorker::Batch, body)) = protocol::split::<FromWorker<'_>>(frame) else {
            return self.on_frame(worker, frame);
        };
        for reply in protocol::reply_batch(body)? {
            match protocol::split::<FromWorker<'_>>(reply) {
                Ok((FromWorker::Done { .. } | FromWorker::Skipped { .. }, _)) => self.on_frame(worker, reply)?,
                Ok((other, _)) => return Err(format!("a reply batch holding {other:?}")),
                Err(e) => return Err(format!("an unreadable reply header ({e}) in a reply batch")),
            }
        }
        Ok(())
    }

    /// Handles one reply. `Err` says how it breaks the protocol.
    fn on_frame(self: &Arc<Self>, worker: u64, frame: &[u8]) -> Result<(), String> {
        let (header, body) = protocol::split::<FromWorker<'_>>(frame)
            .map_err(|e| format!("an unreadable reply header ({e}) in a frame of {} bytes", frame.len()))?;
        let mut d = {
            let mut st = self.state.lock();
            let mut d = st.rules.on_reply(worker, header, Instant::now())?;
            apply_locked(&mut d);
            d
        };
        if let Some((sink, status)) = d.deliver.take() {
            sink.deliver(status, body);
        }
        self.act(d);
        Ok(())
    }
}
