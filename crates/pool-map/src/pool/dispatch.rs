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
use ipc_channel::TryRecvError;
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};

use super::PoolError;
use super::results::{Inbox, Outcome};
use super::worker::{Done, Failure, FromWorker, Task, ToWorker, worker_loop};

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
    tasks: IpcSender<ToWorker>,
    /// The batch it holds (empty = idle), in the order it was given.
    holding: Vec<Route>,
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
    results: IpcReceiver<FromWorker>,
    /// Kept to hand a clone to replacement workers.
    results_tx: IpcSender<FromWorker>,
    /// Tasks not yet sent.
    pending: VecDeque<(Task, Route)>,
    next_id: u64,
    pub(super) state: State,
    broken: Option<String>,
    pub(super) last_check: Instant,
    pub(super) replaced: usize,
}

fn spawn_worker(results_tx: &IpcSender<FromWorker>) -> Result<Worker, PoolError> {
    let (tx, rx) = ipc::channel::<ToWorker>().map_err(|e| PoolError::Broken(e.to_string()))?;
    let results = results_tx.clone();
    // Child: the closure owns `rx` and `results`; in the parent they are dropped
    // when fork returns, so the worker holds the only receiving end of its tasks.
    let child = common::fork(move || worker_loop(rx, results))?;
    Ok(Worker {
        child,
        tasks: tx,
        holding: Vec::new(),
    })
}

impl Inner {
    /// Fork `processes` workers.
    pub(super) fn start(processes: usize) -> Result<Inner, PoolError> {
        let (results_tx, results) =
            ipc::channel::<FromWorker>().map_err(|e| PoolError::Broken(e.to_string()))?;
        let mut workers = Vec::with_capacity(processes);
        for _ in 0..processes {
            workers.push(spawn_worker(&results_tx)?); // on error, the ones made so far are killed on drop
        }
        Ok(Inner {
            workers,
            results,
            results_tx,
            pending: VecDeque::new(),
            next_id: 0,
            state: State::Running,
            broken: None,
            last_check: Instant::now(),
            replaced: 0,
        })
    }

    pub(super) fn processes(&self) -> usize {
        self.workers.len()
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

    /// Queue a task whose outcome goes to a new slot of `inbox`.
    pub(super) fn queue(&mut self, mut task: Task, inbox: &Rc<Inbox>) {
        task.id = self.next_id;
        self.next_id += 1;
        let route = Route {
            id: task.id,
            inbox: Rc::clone(inbox),
            slot: inbox.open_slot(),
        };
        self.pending.push_back((task, route));
    }

    pub(super) fn has_idle_worker(&self) -> bool {
        self.workers.iter().any(|w| w.holding.is_empty())
    }

    /// Hand a batch to every idle worker.
    pub(super) fn dispatch(&mut self) {
        let n = self.workers.len();
        for w in &mut self.workers {
            // Tasks nobody waits for any more (their handle was dropped) do not run.
            while self.pending.front().is_some_and(|(_, r)| r.inbox.dropped()) {
                self.pending.pop_front();
            }
            if self.pending.is_empty() {
                return;
            }
            if !w.holding.is_empty() {
                continue;
            }
            // Large batches while much is pending, one task at a time near the end.
            let take = (self.pending.len() / (2 * n)).clamp(1, MAX_BATCH);
            let (batch, routes): (Vec<Task>, Vec<Route>) = self.pending.drain(..take).unzip();
            w.holding = routes;
            // A send to a dead worker fails; its tasks stay in `holding` and are
            // failed by `check_workers`, which notices the death.
            let _ = w.tasks.send(ToWorker::Run(batch));
        }
    }

    fn absorb(&mut self, msg: FromWorker) {
        let held = match self.workers.iter_mut().find(|w| w.child.pid() == msg.pid) {
            Some(w) => std::mem::take(&mut w.holding),
            None => Vec::new(),
        };
        // The worker answers in the order it was given the batch.
        for (route, Done { id, result }) in held.into_iter().zip(msg.done) {
            debug_assert_eq!(route.id, id);
            route.deliver(match result {
                Ok(bytes) => Ok(bytes.into_vec()),
                Err(Failure::Panicked(message)) => Err(PoolError::TaskPanicked {
                    pid: msg.pid,
                    message,
                }),
                Err(Failure::Codec(why)) => Err(PoolError::Codec(why)),
            });
        }
    }

    /// Take in every result already waiting, without blocking.
    pub(super) fn absorb_ready(&mut self) -> Result<(), PoolError> {
        loop {
            match self.results.try_recv() {
                Ok(msg) => {
                    self.absorb(msg);
                    self.dispatch();
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::IpcError(e)) => return Err(PoolError::Broken(e.to_string())),
            }
        }
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
                Err(TryRecvError::IpcError(e)) => return Err(PoolError::Broken(e.to_string())),
            }
            if self.last_check.elapsed() >= CHECK_EVERY {
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
            for route in std::mem::take(&mut w.holding) {
                let exit = exit.clone();
                route.deliver(Err(PoolError::WorkerDied { pid, exit }));
            }
            match spawn_worker(&self.results_tx) {
                Ok(new) => {
                    self.workers[i] = new;
                    self.replaced += 1;
                }
                Err(e) => {
                    let e = match e {
                        PoolError::Broken(inner) => inner,
                        other => other.to_string(),
                    };
                    let why = format!("worker pid {pid} died and could not be replaced: {e}");
                    self.fail_pending(PoolError::Broken(why.clone()));
                    self.broken = Some(why);
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

    /// After `close()`: wait for every task, then stop the workers and reap them.
    pub(super) fn join(&mut self) -> Result<(), PoolError> {
        match self.state {
            State::Running => return Err(PoolError::StillRunning),
            State::Joined | State::Terminated => return Ok(()),
            State::Closed => {}
        }
        self.pump(None, |i| {
            i.pending.is_empty() && i.workers.iter().all(|w| w.holding.is_empty())
        })?;
        for w in &mut self.workers {
            let _ = w.tasks.send(ToWorker::Stop);
        }
        for w in &mut self.workers {
            // A worker that ignores Stop (stuck in a task) is killed after 5 s.
            if let Joined::Killed(_) = w.child.join_or_kill(Duration::from_secs(5))? {
                eprintln!(
                    "pool: worker pid {} did not stop and was killed",
                    w.child.pid()
                );
            }
        }
        self.state = State::Joined;
        Ok(())
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
