//! The one plumbing layer for processes: framing, descriptor passing and fork-safe
//! per-process state, under the process pool, the fork server and the manager.
//!
//! - `frame`: the pool's length-checked frames over seqpacket sockets ([`Reader`], [`send`],
//!   [`send_parts`], [`recv_with_fd`], [`MAX_FRAME`]).
//! - `fd`: descriptor passing (`SCM_RIGHTS`) over seqpacket or stream sockets, the one
//!   `sendmsg` / `recvmsg` pair that carries a descriptor.
//! - `buffers`: [`BufferStock`], a bounded stock of reusable large frame buffers, and
//!   [`Frame`], a frame's bytes that go back to it when dropped.
//! - `codec`: postcard appended to a caller's buffer (`append`, `Extend`).
//! - `channel`: the socket inside an ipc-channel channel end ([`take_socket`]).
//! - `owner`: [`Owner`], the process that made an object (is this handle inherited?).
//! - `per_process`: [`PerProcess`], state reset in a forked child.
//!
//! `README.md` beside this file sets the three framings in use side by side (the pool's, the
//! manager's, the fork server's records) and says which adopt this layer and why the others
//! keep their own.
//!
//! Every side of every conversation reads a peer it does not trust, so this layer must never
//! panic on a peer's bytes, allocate by a number a peer sent, accept a descriptor it was not
//! asked to take, or block past a peer's death.

// `channel`, `frame` and `buffers` carry the process pool's sockets (made by ipc-channel); `codec`, `fd`,
// `owner` and `per_process` serve the manager too.
#[cfg(feature = "process")]
pub(crate) mod buffers;
#[cfg(feature = "process")]
pub(crate) mod channel;
pub(crate) mod codec;
pub(crate) mod fd;
#[cfg(feature = "process")]
pub(crate) mod frame;
pub(crate) mod owner;
pub(crate) mod per_process;

#[cfg(feature = "process")]
pub(crate) use self::buffers::{BufferStock, Frame};
#[cfg(feature = "process")]
pub(crate) use self::channel::take_socket;
#[cfg(feature = "process")]
pub(crate) use self::frame::{FrameError, MAX_FRAME, Reader, recv_with_fd, send, send_parts};
pub(crate) use self::owner::Owner;
pub(crate) use self::per_process::PerProcess;

/// Whether a socket call may wait: `No` passes `MSG_DONTWAIT`, so a call that would have to
/// wait fails with `WouldBlock` instead (the framing's reader turns that into `Ok(None)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocking {
    /// Wait until the call can proceed (or the peer is gone).
    Yes,
    /// Do not wait.
    No,
}
