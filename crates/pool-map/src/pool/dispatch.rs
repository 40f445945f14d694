//! The parent's side: queued tasks, handing batches to idle workers, taking their
//! results in, and replacing workers that died.
//!
//! Nothing here runs on its own: every public call of the pool drives it, through
//! [`Inner::pump`] (wait for something, with a deadline) or [`Inner::absorb_ready`]
//! (take what has arrived, without waiting). Each task queued here carries the
//! [`Inbox`] slot its outcome goes to.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::process::{Child, Joined};
use ipc_channel::ipc::{self, IpcBytesSender, IpcReceiver, IpcSender};
use ipc_channel::{IpcError, TryRecvError};

use super::PoolError;
use super::results::{Inbox, Outcome};
use super::wire::{Done, Down, Failure, Up, piece_size};
use super::worker::{Task, worker_loop};

/// The most tasks one message carries to a worker. One batch is in flight per
/// worker, so a worker idles for one round trip between batches: large batches
/// make that rare while thousands of tasks are pending.
const MAX_BATCH: usize = 1024;

/// How often the pool looks for dead workers while it waits.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(10);

/// Where a task's outcome goes.
struct Route {
    id: u64,
    inbox: Rc<Inbox>,
    slot: usize,
}

impl Route {
    fn deliver(self, outcome: Outcome) {
        self.inbox.put(self.slot, outcome);
    }
}

struct Worker {
    child: Child,
    tasks: IpcBytesSender,
    /// The batch it holds (empty = idle), in the order it was given.
    holding: Vec<Route>,
    /// A batch too big for one message, and how much of it was sent: the next
    /// piece goes when the worker acknowledges the last one.
    outgoing: Option<(Vec<u8>, usize)>,
    /// The pieces of a reply too big for one message, glued as they arrive.
    incoming: Vec<u8>,
    /// A send to it failed: it is dead or dying. It gets nothing until replaced.
    lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Running,
    Closed,
    Joined,
    Terminated,
}

pub(super) struct Inner {
    workers: Vec<Worker>,
    results: IpcReceiver<Up>,
    /// Kept to hand a clone to replacement workers.
    results_tx: IpcSender<Up>,
    /// The largest message, in bytes (see `wire.rs`).
    piece: usize,
    /// Tasks not yet sent.
    pending: VecDeque<(Task, Route)>,
    next_id: u64,
    pub(super) state: State,
    broken: Option<String>,
    pub(super) last_check: Instant,
    pub(super) replaced: usize,
}

fn spawn_worker(results_tx: &IpcSender<Up>, piece: usize) -> Result<Worker, PoolError> {
    let (tx, rx) = ipc::bytes_channel().map_err(|e| PoolError::Broken(e.to_string()))?;
    let up = results_tx.clone();
    // Child: the closure owns `rx` and `up`; in the parent they are dropped when
    // fork returns, so the worker holds the only receiving end of its tasks.
    let child = common::fork(move || worker_loop(rx, up, piece))?;
    Ok(Worker {
        child,
        tasks: tx,
        holding: Vec::new(),
        outgoing: None,
        incoming: Vec::new(),
        lost: false,
    })
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
    /// Fork `processes` workers.
    pub(super) fn start(processes: usize) -> Result<Inner, PoolError> {
        let (results_tx, results) =
            ipc::channel::<Up>().map_err(|e| PoolError::Broken(e.to_string()))?;
        let piece = piece_size();
        let mut workers = Vec::with_capacity(processes);
        for _ in 0..processes {
            workers.push(spawn_worker(&results_tx, piece)?); // on error, the ones made so far are killed on drop
        }
        Ok(Inner {
            workers,
            results,
            results_tx,
            piece,
            pending: VecDeque::new(),
            next_id: 0,
            state: State::Running,
            broken: None,
            last_check: Instant::now(),
            replaced: 0,
        })
    }

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

    fn fail_held(&mut self, i: usize, err: PoolError) {
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

    fn break_pool(&mut self, why: String) -> PoolError {
        let err = PoolError::Broken(why.clone());
        for i in 0..self.workers.len() {
            self.fail_held(i, err.clone());
        }
        self.fail_pending(err.clone());
        self.broken = Some(why);
        err
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

    /// Reap dead workers, fail the tasks they held, fork replacements.
    pub(super) fn check_workers(&mut self) {
        self.last_check = Instant::now();
        if matches!(self.state, State::Terminated | State::Joined) {
            return;
        }
        for i in 0..self.workers.len() {
            let w = &mut self.workers[i];
            if w.child.is_alive().unwrap_or(false) {
                continue;
            }
            let pid = w.child.pid();
            let exit = w.child.join().map(|e| e.to_string()).unwrap_or_default();
            // All it sent before it died is waiting in the socket: take it in first,
            // so a result it delivered is not reported lost.
            if self.absorb_ready().is_err() {
                return; // the pool is broken, and every task has failed
            }
            let w = &mut self.workers[i];
            w.outgoing = None;
            let err = if std::mem::take(&mut w.incoming).is_empty() {
                PoolError::WorkerDied { pid, exit }
            } else {
                PoolError::WorkerDiedSending { pid, exit }
            };
            self.fail_held(i, err);
            match spawn_worker(&self.results_tx, self.piece) {
                Ok(new) => {
                    self.workers[i] = new;
                    self.replaced += 1;
                }
                Err(e) => {
                    let e = match e {
                        PoolError::Broken(inner) => inner,
                        other => other.to_string(),
                    };
                    self.break_pool(format!(
                        "worker pid {pid} died and could not be replaced: {e}"
                    ));
                    return;
                }
            }
        }
    }

    fn fail_pending(&mut self, err: PoolError) {
        for (_, route) in self.pending.drain(..) {
            route.deliver(Err(err.clone()));
        }
    }

    /// After `close()`: wait for every task (at most `timeout`), then stop the
    /// workers and reap them.
    pub(super) fn join(&mut self, timeout: Option<Duration>) -> Result<(), PoolError> {
        match self.state {
            State::Running => return Err(PoolError::StillRunning),
            State::Joined | State::Terminated => return Ok(()),
            State::Closed => {}
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let idle =
            |i: &Inner| i.pending.is_empty() && i.workers.iter().all(|w| w.holding.is_empty());
        let mut unfinished = Ok(());
        match self.pump(deadline, idle) {
            Ok(()) => {}
            Err(PoolError::Timeout(_)) => {
                unfinished = Err(self.give_up(timeout.unwrap_or_default()))
            }
            Err(e) => return Err(e),
        }
        let stop = Down::Stop.encode();
        for w in &mut self.workers {
            let _ = w.tasks.send(&stop);
        }
        // An idle worker ends at once. One that does not (stopped, or stuck after
        // its task) is killed when a shared 5 s grace has passed.
        let grace = Instant::now() + Duration::from_secs(5);
        for w in &mut self.workers {
            let left = grace.saturating_duration_since(Instant::now());
            if let Joined::Killed(_) = w.child.join_or_kill(left)? {
                eprintln!(
                    "pool: worker pid {} did not stop and was killed",
                    w.child.pid()
                );
            }
        }
        self.state = State::Joined;
        unfinished
    }

    /// `join_timeout`'s time is up: kill the workers still running tasks, and fail
    /// those tasks and the queued ones.
    fn give_up(&mut self, timeout: Duration) -> PoolError {
        let held: usize = self.workers.iter().map(|w| w.holding.len()).sum();
        let err = PoolError::JoinTimedOut {
            timeout,
            unfinished: held + self.pending.len(),
        };
        for i in 0..self.workers.len() {
            if !self.workers[i].holding.is_empty() {
                let _ = self.workers[i].child.kill();
                let _ = self.workers[i].child.join();
                self.fail_held(i, err.clone());
            }
        }
        self.fail_pending(err.clone());
        err
    }

    pub(super) fn terminate(&mut self) {
        if self.state == State::Terminated {
            return;
        }
        for w in &mut self.workers {
            let _ = w.child.kill();
            let _ = w.child.join();
            for route in std::mem::take(&mut w.holding) {
                route.deliver(Err(PoolError::Terminated));
            }
        }
        self.fail_pending(PoolError::Terminated);
        self.state = State::Terminated;
    }
}
