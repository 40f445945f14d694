//! The worker's side: the loop a forked worker runs until it is told to stop, and
//! how a task's types travel as two addresses.
//!
//! A task carries two addresses: `func`, the user's `fn(A) -> R`, and `call`, the
//! `call::<A, R>` that knows how to decode `A`, run `func` and encode `R`. The
//! worker knows neither type; it jumps to `call`, which does. This is the only
//! place where the types are erased, and `task_for` is the only place that makes
//! the pair, so they always match.

use std::cell::RefCell;

use ipc_channel::ipc::{IpcBytesReceiver, IpcSender};
use serde::{Deserialize, Serialize};

use super::Wire;
use super::wire::{Done, Down, Failure, Up};

/// Runs in the worker: decode the arguments, call the function, encode the results.
type Call = fn(func: usize, args: &[u8]) -> Result<Vec<u8>, String>;

fn call<A: Wire, R: Wire>(func: usize, args: &[u8]) -> Result<Vec<u8>, String> {
    // `func` is the address of an `fn(A) -> R` taken in the parent by `task_for`
    // for this very monomorphisation (the pair is sent together). The worker was
    // forked from that parent, so it maps the same executable at the same addresses.
    // SAFETY: a valid `fn(A) -> R` address, as above; no library is loaded after fork.
    let f = unsafe { std::mem::transmute::<*const (), fn(A) -> R>(func as *const ()) };
    let items: Vec<A> =
        postcard::from_bytes(args).map_err(|e| format!("decoding arguments: {e}"))?;
    let out: Vec<R> = items.into_iter().map(f).collect();
    postcard::to_allocvec(&out).map_err(|e| format!("encoding results: {e}"))
}

/// One task: `f` over the items encoded in `args`. Its id is set when it is queued.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Task {
    pub id: u64,
    call: usize,
    func: usize,
    /// As one byte string, not a sequence of numbers: much faster to encode.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
}

/// The task that runs `f` over the items encoded in `args`.
pub(super) fn task_for<A: Wire, R: Wire>(f: fn(A) -> R, args: Vec<u8>) -> Task {
    Task {
        id: 0,
        call: call::<A, R> as Call as usize,
        func: f as usize,
        args,
    }
}

/// The worker's whole life: run batches until told to stop.
pub(super) fn worker_loop(tasks: IpcBytesReceiver, up: IpcSender<Up>, piece: usize) -> i32 {
    // A task's panic is reported to the parent, not printed here: keep the message
    // and where it happened for catch_unwind below.
    std::panic::set_hook(Box::new(|info| {
        let msg = common::process::panic_message(info.payload());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg}{at}"));
    }));
    let pid = std::process::id() as i32;
    // `None`: Stop, or the parent is gone (its end of a channel closed).
    while let Some(batch) = receive(&tasks, &up, pid) {
        let done = batch.into_iter().map(run).collect();
        if reply(&up, pid, done, piece).is_none() {
            return 1; // the parent is gone
        }
    }
    0
}

/// The next batch: one message, or pieces glued together (each one acknowledged,
/// so that the parent sends the next only into an empty socket).
fn receive(tasks: &IpcBytesReceiver, up: &IpcSender<Up>, pid: i32) -> Option<Vec<Task>> {
    let mut glued = Vec::new();
    loop {
        let message = tasks.recv().ok()?;
        match postcard::from_bytes::<Down>(&message).ok()? {
            Down::Run(batch) => return Some(batch.into_owned()),
            Down::Piece { last: false, bytes } => {
                glued.extend_from_slice(&bytes);
                up.send(Up::Ack { pid }).ok()?;
            }
            Down::Piece { last: true, bytes } => {
                glued.extend_from_slice(&bytes);
                return match postcard::from_bytes::<Down>(&glued).ok()? {
                    Down::Run(batch) => Some(batch.into_owned()),
                    _ => None,
                };
            }
            Down::Stop => return None,
        }
    }
}

/// Send a batch's outcomes: one message, or the encoded reply in pieces.
fn reply(up: &IpcSender<Up>, pid: i32, done: Vec<Done>, piece: usize) -> Option<()> {
    if done.iter().map(Done::size).sum::<usize>() + 16 <= piece {
        return up.send(Up::Reply { pid, done }).ok();
    }
    let whole = postcard::to_allocvec(&Up::Reply { pid, done }).ok()?;
    let mut pieces = whole.chunks(piece).peekable();
    while let Some(bytes) = pieces.next() {
        let last = pieces.peek().is_none();
        let bytes = bytes.to_vec();
        up.send(Up::Piece { pid, last, bytes }).ok()?;
    }
    Some(())
}

fn run(task: Task) -> Done {
    // SAFETY: `task.call` is the address of a `call::<A, R>` (type `Call`) taken in
    // the parent by `task_for`; the executable's code sits at the same addresses in
    // this forked worker, whenever it was forked (see `call`).
    let run = unsafe { std::mem::transmute::<*const (), Call>(task.call as *const ()) };
    let result = match std::panic::catch_unwind(|| run(task.func, &task.args)) {
        Ok(Ok(bytes)) => Ok(serde_bytes::ByteBuf::from(bytes)),
        Ok(Err(codec)) => Err(Failure::Codec(codec)),
        Err(_) => Err(Failure::Panicked(LAST_PANIC.with(|p| p.take()))),
    };
    Done {
        id: task.id,
        result,
    }
}

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}
