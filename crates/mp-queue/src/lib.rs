//! The plumbing of the mp-queue lesson, kept out of `main.rs` so that the lesson
//! reads as a story: waits that always have a bound, a large payload sent in
//! pieces, and threads that may fail to start.
//!
//! Why pieces: ipc-channel sends a message bigger than its socket buffer as a first
//! fragment plus the rest through a dedicated socket, and its receiver reads that
//! rest with blocking reads that no timeout covers ("we always use blocking mode
//! for followup fragments" in its `src/platform/unix/mod.rs`). A sender stopped
//! half way (SIGSTOP) would leave `try_recv_timeout` waiting forever. Pieces of
//! [`PIECE`] bytes each fit in one fragment, so every wait for one honours its
//! timeout.

use std::time::Duration;

use anyhow::{anyhow, bail};
use common::fork;
use common::process::Child;
use common::shm::Gate;
use ipc_channel::ipc::{IpcReceiver, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The size of one piece of a large payload: well under ipc-channel's fragment
/// size (the socket's send buffer, about 200 KB on Linux), so never fragmented.
pub const PIECE: usize = 64 * 1024;

/// One value, or `None` when every sender is gone; an error if nothing came for
/// `patience` (a hang, caught).
pub fn recv_or_end<T>(rx: &IpcReceiver<T>, patience: Duration) -> anyhow::Result<Option<T>>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    // Time this process spends stopped (Ctrl-Z) is left out: see `Deadline`.
    let mut deadline = common::process::Deadline::after(patience);
    match common::ipc::try_recv_until(rx, &mut deadline) {
        Ok(v) => Ok(Some(v)),
        Err(TryRecvError::IpcError(IpcError::Disconnected)) => Ok(None),
        Err(TryRecvError::Empty) => bail!(
            "nothing arrived for {} s: a sender is stopped or stuck, or open somewhere",
            patience.as_secs_f64()
        ),
        Err(TryRecvError::IpcError(e)) => bail!("receive failed: {e}"),
    }
}

/// Every value until every sender is gone, each wait bounded by `patience`.
pub fn recv_all<T>(rx: &IpcReceiver<T>, patience: Duration) -> anyhow::Result<Vec<T>>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    let mut all = Vec::new();
    while let Some(v) = recv_or_end(rx, patience)? {
        all.push(v);
    }
    Ok(all)
}

/// Send `len` bytes of `b'X'` (Python's `'X' * len`) in pieces of [`PIECE`].
/// Blocks whenever the socket buffer is full, until the receiver reads.
pub fn send_big(tx: &IpcSender<ByteBuf>, len: usize) -> anyhow::Result<()> {
    let piece = vec![b'X'; PIECE.min(len)];
    let mut left = len;
    while left > 0 {
        let n = left.min(PIECE);
        tx.send(ByteBuf::from(&piece[..n]))?;
        left -= n;
    }
    Ok(())
}

/// Fork a child that sends `len` bytes with [`send_big`]; the receiving end.
pub fn fork_big_sender(len: usize) -> anyhow::Result<(Child, IpcReceiver<ByteBuf>)> {
    let (tx, rx) = ipc_channel::ipc::channel()?;
    // Child: q.put('X' * len), in pieces. `move`: the parent keeps no sender.
    let child = fork(move || send_big(&tx, len))?;
    Ok((child, rx))
}

/// Receive pieces until every sender is gone; the number of bytes. An error if
/// the whole transfer takes longer than `patience`, however far it got.
pub fn recv_big(rx: &IpcReceiver<ByteBuf>, patience: Duration) -> anyhow::Result<usize> {
    // Time the lesson spends stopped (Ctrl-Z) is left out: see `Deadline`.
    let mut deadline = common::process::Deadline::after(patience);
    let mut got = 0;
    loop {
        match common::ipc::try_recv_until(rx, &mut deadline) {
            Ok(piece) if piece.iter().all(|&b| b == b'X') => got += piece.len(),
            Ok(_) => bail!("a piece arrived damaged"),
            Err(TryRecvError::IpcError(IpcError::Disconnected)) => return Ok(got),
            Err(TryRecvError::Empty) => bail!(
                "{got} bytes arrived, then nothing until the {} s bound",
                patience.as_secs_f64()
            ),
            Err(TryRecvError::IpcError(e)) => bail!("receive failed: {e}"),
        }
    }
}

/// An error caused by the open-file limit (EMFILE, "Too many open files") gets a
/// word on what to do about it.
pub fn explain(e: anyhow::Error) -> anyhow::Error {
    if e.chain()
        .any(|c| c.to_string().contains("Too many open files"))
    {
        e.context("the open-file limit (ulimit -n) is too low for this lesson")
    } else {
        e
    }
}

/// Start a named thread; a thread the system refuses (`ulimit -u`, `ulimit -v`)
/// is a clear error, not a panic.
pub fn spawn_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| anyhow!("cannot start a thread: {e}"))
}

/// Fork a child that does "some work" (waits until `go` opens), then puts each of
/// `values` on `tx`, then the sentinel `None` if asked to.
pub fn fork_slow_sender(
    go: &Gate,
    values: &[i64],
    tx: IpcSender<Option<i64>>,
    sentinel: bool,
) -> anyhow::Result<Child> {
    let values = values.to_vec();
    Ok(fork(move || -> anyhow::Result<()> {
        // Child: q.put() each value once told to go, then maybe q.put(None).
        if !go.wait(Duration::from_secs(10)) {
            bail!("never told to go");
        }
        for v in values {
            tx.send(Some(v))?;
        }
        if sentinel {
            tx.send(None)?;
        }
        Ok(())
    })?)
}

/// How the items of several producers arrived: `(producer, seq)` in arrival order.
#[derive(Debug)]
pub struct Arrival {
    /// `A0 B0 A1 ...`: producer letter and sequence number, in arrival order.
    pub names: Vec<String>,
    /// Every producer's `0..per_producer` arrived, each exactly once.
    pub exactly_once: bool,
    /// Each producer's items arrived in the order it sent them.
    pub in_order: bool,
    /// How often consecutive items came from different producers.
    pub switches: usize,
}

impl Arrival {
    pub fn of(items: &[(u8, u32)], producers: u8, per_producer: u32) -> Arrival {
        let mut sorted = items.to_vec();
        sorted.sort();
        let expected: Vec<(u8, u32)> = (0..producers)
            .flat_map(|p| (0..per_producer).map(move |s| (p, s)))
            .collect();
        let in_order = (0..producers).all(|p| {
            let seqs: Vec<u32> = items.iter().filter(|i| i.0 == p).map(|i| i.1).collect();
            seqs.windows(2).all(|w| w[0] < w[1])
        });
        Arrival {
            names: items
                .iter()
                .map(|(p, s)| format!("{}{s}", char::from(b'A' + p)))
                .collect(),
            exactly_once: sorted == expected,
            in_order,
            switches: items.windows(2).filter(|w| w[0].0 != w[1].0).count(),
        }
    }
}
