//! The messages between the parent and a worker, and why none is bigger than a
//! piece.
//!
//! ipc-channel sends a message bigger than the socket's send buffer in fragments:
//! the first on the channel, the rest on a channel of their own, which the receiver
//! reads with a *blocking* `recv` ("we always use blocking mode for followup
//! fragments", ipc-channel `src/platform/unix/mod.rs`). A worker stopped (SIGSTOP)
//! or killed half way through a big result would leave the parent in that `recv`,
//! whatever timeout its `get` had. And a send blocks while the peer's socket is
//! full (unix(7)), so a big task sent to a stopped worker would block the parent.
//!
//! So no message here is bigger than [`piece_size`], half the socket's send buffer:
//! each is one record of the `SOCK_SEQPACKET` socket, sent in one `sendmsg` and read
//! in one `recvmsg`. A bigger message is encoded, cut into pieces and glued together
//! by the receiver. The parent sends a worker one message at a time and the next
//! only after the worker took it (it answers each piece with [`Up::Ack`]), so the
//! worker's socket is empty whenever the parent sends: the parent never blocks.
//! A worker may block sending pieces up; the parent reads them when it is called.

use std::borrow::Cow;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, getsockopt, socketpair, sockopt};
use serde::{Deserialize, Serialize};

use super::worker::Task;

/// Parent to worker: encoded by the parent itself (it keeps the batch, so a send to
/// a dead worker loses nothing) and sent as bytes.
#[derive(Serialize, Deserialize)]
pub(super) enum Down<'a> {
    /// A batch of tasks, whole.
    Run(Cow<'a, [Task]>),
    /// A piece of an encoded `Down::Run` too big for one message.
    Piece {
        last: bool,
        #[serde(borrow, with = "serde_bytes")]
        bytes: Cow<'a, [u8]>,
    },
    /// Finish: the worker's loop ends and the process exits 0.
    Stop,
}

impl Down<'_> {
    pub(super) fn encode(&self) -> Vec<u8> {
        // Encoding tasks and byte strings into a vector cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// Worker to parent, through one channel that every worker holds a sender of.
#[derive(Serialize, Deserialize)]
pub(super) enum Up {
    /// The outcomes of a batch, in the order of its tasks.
    Reply { pid: i32, done: Vec<Done> },
    /// A piece of an encoded `Up::Reply` too big for one message.
    Piece {
        pid: i32,
        last: bool,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The worker took a piece of its batch: the parent may send the next.
    Ack { pid: i32 },
}

/// A task's outcome.
#[derive(Serialize, Deserialize)]
pub(super) struct Done {
    pub id: u64,
    /// The encoded `Vec<R>`, or why the task failed.
    pub result: Result<serde_bytes::ByteBuf, Failure>,
}

impl Done {
    /// At least its encoded size: the id, a tag and a length take at most 24 bytes.
    pub(super) fn size(&self) -> usize {
        24 + match &self.result {
            Ok(bytes) => bytes.len(),
            Err(Failure::Panicked(s) | Failure::Codec(s)) => s.len(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) enum Failure {
    Panicked(String),
    Codec(String),
}

/// The largest message the pool sends: half of a `SOCK_SEQPACKET` socket's send
/// buffer (`net.core.wmem_default`, 212992 bytes on a stock Linux), so one message
/// with its header always fits an empty socket, and ipc-channel never fragments it.
pub(super) fn piece_size() -> usize {
    let sndbuf = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ok()
    .and_then(|(a, _b)| getsockopt(&a, sockopt::SndBuf).ok())
    .unwrap_or(0);
    // The kernel's floor for SO_SNDBUF is 4608 bytes (socket(7)).
    (sndbuf.max(4608) / 2).max(1024)
}
