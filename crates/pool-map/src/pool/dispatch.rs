//! The parent's side: queued tasks, handing batches to idle workers, and taking
//! their results in (the workers' lives are in `lifecycle.rs`).
//!
//! Nothing here runs on its own: every public call of the pool drives it, through
//! [`Inner::pump`] (wait for something, with a deadline) or [`Inner::absorb_ready`]
//! (take what has arrived, without waiting). Each task queued here carries the
//! [`Inbox`] slot its outcome goes to.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcBytesSender, IpcReceiver, IpcSender};
use ipc_channel::{IpcError, TryRecvError};

use super::PoolError;
use super::results::{Inbox, Outcome};
use super::start::{Context, Proc};
use super::wire::{Done, Down, Failure, Up};
use super::worker::Task;

/// The most tasks one message carries to a worker. One batch is in flight per
/// worker, so a worker idles for one round trip between batches: large batches
/// make that rare while thousands of tasks are pending.
const MAX_BATCH: usize = 1024;

/// How often the pool looks for dead workers while it waits.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(10);

/// Where a task's outcome goes.
pub(super) struct Route {
    id: u64,
    inbox: Rc<Inbox>,
    slot: usize,
}

impl Route {
    pub(super) fn deliver(self, outcome: Outcome) {
        self.inbox.put(self.slot, outcome);
    }
}

pub(super) struct Worker {
    pub(super) child: Proc,
    pub(super) tasks: IpcBytesSender,
    /// The batch it holds (empty = idle), in the order it was given.
    pub(super) holding: Vec<Route>,
    /// A batch too big for one message, and how much of it was sent: the next
    /// piece goes when the worker acknowledges the last one.
    pub(super) outgoing: Option<(Vec<u8>, usize)>,
    /// The pieces of a reply too big for one message, glued as they arrive.
    pub(super) incoming: Vec<u8>,
    /// A send to it failed: it is dead or dying. It gets nothing until replaced.
    pub(super) lost: bool,
    /// How long it has been seen stopped (SIGSTOP) while it held work: see
    /// `check_workers`.
    pub(super) stopped_for: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Running,
    Closed,
    Joined,
    Terminated,
}

pub(super) struct Inner {
    /// How workers are started: fork, or through a fork server.
    pub(super) context: Context,
    pub(super) workers: Vec<Worker>,
    pub(super) results: IpcReceiver<Up>,
    /// Kept to hand a clone to replacement workers.
    pub(super) results_tx: IpcSender<Up>,
    /// The largest message, in bytes (see `wire.rs`).
    pub(super) piece: usize,
    /// Tasks not yet sent.
    pub(super) pending: VecDeque<(Task, Route)>,
    pub(super) next_id: u64,
    pub(super) state: State,
    pub(super) broken: Option<String>,
    pub(super) last_check: Instant,
    pub(super) replaced: usize,
}

impl Worker {
    /// Send the next piece of the batch being sent in pieces.
    fn send_next_piece(&mut self, piece: usize) -> std::io::Result<()> {
        let Some((message, sent)) = &mut self.outgoing else {
            return Ok(());
        };
        let start = *sent;
        *sent = (start + piece).min(message.len());
        let last = *sent == message.len();
        let encoded = Down::Piece {
            last,
            bytes: message[start..*sent].into(),
        }
        .encode();
        if last {
            self.outgoing = None;
        }
        self.tasks.send(&encoded)
    }
}

impl Inner {
    pub(super) fn worker_pids(&self) -> Vec<i32> {
        self.workers.iter().map(|w| w.child.pid()).collect()
    }

    /// The workers running tasks of this inbox.
    pub(super) fn pids_holding(&self, inbox: &Rc<Inbox>) -> Vec<i32> {
        self.workers
            .iter()
            .filter(|w| w.holding.iter().any(|r| Rc::ptr_eq(&r.inbox, inbox)))
            .map(|w| w.child.pid())
            .collect()
    }

    pub(super) fn usable(&self) -> Result<(), PoolError> {
        if let Some(why) = &self.broken {
            return Err(PoolError::Broken(why.clone()));
        }
        match self.state {
            State::Running => Ok(()),
            State::Closed | State::Joined => Err(PoolError::Closed),
            State::Terminated => Err(PoolError::Terminated),
        }
    }

    /// Queue a task of `items` items whose outcome goes to a new slot of `inbox`.
    pub(super) fn queue(&mut self, mut task: Task, items: usize, inbox: &Rc<Inbox>) {
        task.id = self.next_id;
        self.next_id += 1;
        let route = Route {
            id: task.id,
            inbox: Rc::clone(inbox),
            slot: inbox.open_slot(items),
        };
        self.pending.push_back((task, route));
    }

    pub(super) fn has_idle_worker(&self) -> bool {
        self.workers.iter().any(|w| w.holding.is_empty())
    }

    /// Hand a batch to every idle worker.
    pub(super) fn dispatch(&mut self) {
        for i in 0..self.workers.len() {
            if !self.workers[i].holding.is_empty() || self.workers[i].lost {
                continue;
            }
            let (batch, routes) = self.next_batch();
            if batch.is_empty() {
                return;
            }
            let message = Down::Run(batch.as_slice().into()).encode();
            let w = &mut self.workers[i];
            let sent = if message.len() <= self.piece {
                w.tasks.send(&message)
            } else {
                w.outgoing = Some((message, 0));
                w.send_next_piece(self.piece)
            };
            if sent.is_ok() {
                w.holding = routes;
                continue;
            }
            // The worker is gone, and the batch never reached it: queue it again
            // as it was, and replace the worker before it is given anything.
            w.outgoing = None;
            w.lost = true;
            for queued in batch.into_iter().zip(routes).rev() {
                self.pending.push_front(queued);
            }
            self.check_workers();
        }
    }

    /// The next batch: large while much is pending, one task at a time near the
    /// end, and within one message unless a single task is bigger.
    fn next_batch(&mut self) -> (Vec<Task>, Vec<Route>) {
        let most = (self.pending.len() / (2 * self.workers.len())).clamp(1, MAX_BATCH);
        let (mut batch, mut routes, mut size) = (Vec::new(), Vec::new(), 16);
        while let Some((task, _)) = self.pending.front() {
            let task_size = task.args.len() + 32;
            if batch.len() == most || (!batch.is_empty() && size + task_size > self.piece) {
                break;
            }
            let Some((task, route)) = self.pending.pop_front() else {
                break;
            };
            // Tasks nobody waits for any more (their handle was dropped) do not run.
            if route.inbox.dropped() {
                continue;
            }
            size += task_size;
            batch.push(task);
            routes.push(route);
        }
        (batch, routes)
    }

    /// Send worker `i` the next piece of its batch (it took the last one). A worker
    /// that died meanwhile fails its batch when `check_workers` reaps it.
    fn send_piece(&mut self, i: usize) {
        let w = &mut self.workers[i];
        if w.send_next_piece(self.piece).is_err() {
            w.lost = true;
        }
    }

    fn absorb(&mut self, msg: Up) {
        let pid = match &msg {
            Up::Reply { pid, .. } | Up::Piece { pid, .. } | Up::Ack { pid } => *pid,
        };
        // A message from a worker already replaced is dropped: its tasks have failed.
        let Some(i) = self.workers.iter().position(|w| w.child.pid() == pid) else {
            return;
        };
        match msg {
            Up::Reply { done, .. } => self.deliver(i, done),
            Up::Ack { .. } => self.send_piece(i),
            Up::Piece { last, bytes, .. } => {
                let w = &mut self.workers[i];
                w.incoming.extend_from_slice(&bytes);
                if last {
                    let whole = std::mem::take(&mut w.incoming);
                    match postcard::from_bytes::<Up>(&whole) {
                        Ok(Up::Reply { done, .. }) => self.deliver(i, done),
                        _ => self.fail_held(i, PoolError::Codec("a garbled reply".into())),
                    }
                }
            }
        }
    }

    /// Worker `i` answered its batch, in the order it was given.
    fn deliver(&mut self, i: usize, done: Vec<Done>) {
        let pid = self.workers[i].child.pid();
        let held = std::mem::take(&mut self.workers[i].holding);
        for (route, Done { id, result }) in held.into_iter().zip(done) {
            debug_assert_eq!(route.id, id);
            route.deliver(match result {
                Ok(bytes) => Ok(bytes.into_vec()),
                Err(Failure::Panicked(message)) => Err(PoolError::TaskPanicked { pid, message }),
                Err(Failure::Codec(why)) => Err(PoolError::Codec(why)),
            });
        }
    }

    pub(super) fn fail_held(&mut self, i: usize, err: PoolError) {
        for route in std::mem::take(&mut self.workers[i].holding) {
            route.deliver(Err(err.clone()));
        }
    }

    /// Take in every message already waiting, without blocking. It hands out no new
    /// batch, so the workers can add little while it reads: it ends.
    pub(super) fn absorb_ready(&mut self) -> Result<(), PoolError> {
        loop {
            match self.results.try_recv() {
                Ok(msg) => self.absorb(msg),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::IpcError(e)) => return Err(self.unreadable(e)),
            }
        }
    }

    /// The workers' channel cannot be read (it cannot close: the pool holds a
    /// sender). Nothing more will arrive: fail every task, so none waits forever.
    fn unreadable(&mut self, e: IpcError) -> PoolError {
        let why = match e {
            IpcError::SerializationError(e) => format!("a worker's message was garbled: {e}"),
            IpcError::Io(e) => format!("cannot read the workers' channel: {e}"),
            IpcError::Disconnected => "the workers' channel was closed".to_string(),
        };
        self.break_pool(why)
    }

    /// Work until `until` holds, or the deadline passes.
    pub(super) fn pump(
        &mut self,
        deadline: Option<Instant>,
        until: impl Fn(&Inner) -> bool,
    ) -> Result<(), PoolError> {
        loop {
            self.dispatch();
            if until(self) {
                return Ok(());
            }
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(PoolError::Timeout(Duration::ZERO));
                    }
                    left.min(CHECK_EVERY)
                }
                None => CHECK_EVERY,
            };
            match self.results.try_recv_timeout(slice) {
                Ok(msg) => self.absorb(msg),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::IpcError(e)) => return Err(self.unreadable(e)),
            }
            if self.last_check.elapsed() >= CHECK_EVERY || self.workers.iter().any(|w| w.lost) {
                self.check_workers();
            }
        }
    }
}
