//! ipc-channel, made ready before a lesson relies on it.
//!
//! ipc-channel 0.23 measures the kernel's socket send-buffer size once, lazily, on
//! the first send (`SYSTEM_SENDBUF_SIZE` in its `src/platform/unix/mod.rs`), and
//! panics if it cannot open a socket for that ("Failed to obtain a socket for
//! checking maximum send size"), for example under `ulimit -n 6` in mp-queue. [`ready`] forces
//! that measurement at a moment the lesson chooses, after checking that sockets can
//! be opened, so that a file-descriptor limit is a clear error, not a panic in the
//! middle of a send.
//!
//! [`try_recv_until`] is `try_recv_timeout` for a lesson's own bound on a peer:
//! time this process spends stopped (Ctrl-Z of the whole job) is left out.

use std::os::fd::OwnedFd;

use ipc_channel::TryRecvError;
use ipc_channel::ipc::IpcReceiver;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use serde::{Deserialize, Serialize};

use crate::process::Deadline;

/// `rx.try_recv_timeout(..)` until `deadline`, in slices of at most 100 ms, so
/// that time this process spends stopped is left out ([`Deadline`]): a value,
/// `Empty` once the deadline has passed, or the channel's error.
pub fn try_recv_until<T>(rx: &IpcReceiver<T>, deadline: &mut Deadline) -> Result<T, TryRecvError>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    loop {
        match rx.try_recv_timeout(deadline.slice()) {
            Err(TryRecvError::Empty) if !deadline.passed() => continue,
            got => return got,
        }
    }
}

/// Why ipc-channel cannot be used here.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open sockets for ipc-channel ({0}); the open-file limit may be too low \
     (ulimit -n)"
)]
pub struct IpcUnavailable(String);

/// Check that sockets can be opened, then make ipc-channel take its one-time
/// measurement now (one small message through a fresh channel). Call it first in
/// a lesson that uses ipc-channel, before forking.
pub fn ready() -> Result<(), IpcUnavailable> {
    // ipc-channel's probe opens a channel (two sockets); a send may need a few
    // more for fragments. Ask for four now, while failure is still an answer.
    let mut held: Vec<(OwnedFd, OwnedFd)> = Vec::new();
    for _ in 0..2 {
        let pair = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| IpcUnavailable(e.to_string()))?;
        held.push(pair);
    }
    drop(held);
    let (tx, rx) = ipc_channel::ipc::channel::<u8>().map_err(|e| IpcUnavailable(e.to_string()))?;
    tx.send(1).map_err(|e| IpcUnavailable(e.to_string()))?;
    rx.recv().map_err(|e| IpcUnavailable(e.to_string()))?;
    Ok(())
}
