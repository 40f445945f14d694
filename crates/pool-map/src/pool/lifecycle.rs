//! The workers' lives: starting them (`start.rs` says how), noticing the dead and forking replacements,
//! and stopping them all (`join`, `join_timeout`, `terminate`).
//!
//! A dead worker is reaped by `check_workers`, which runs about every 10 ms while
//! the pool waits. Before it fails the tasks the dead worker held, it reads all
//! that worker sent before it died: a result that was delivered is never lost.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::process::Joined;
use ipc_channel::ipc::{self, IpcSender};

use super::PoolError;
use super::dispatch::{Inner, State, Worker};
use super::start::Context;
use super::wire::{Down, Up, piece_size};

/// How long a worker may stay stopped (SIGSTOP, Ctrl-Z) while it holds work before
/// the pool kills and replaces it, failing its tasks. Python's pool would wait for
/// it forever; here no call of the pool can be frozen by a stopped worker.
pub const STOP_PATIENCE: Duration = Duration::from_secs(5);

fn spawn_worker(
    context: &Context,
    results_tx: &IpcSender<Up>,
    piece: usize,
) -> Result<Worker, PoolError> {
    let (tx, rx) = ipc::bytes_channel().map_err(|e| PoolError::Broken(e.to_string()))?;
    // The worker gets the only receiving end of its tasks, and a result sender.
    let child = context.start_worker(rx, results_tx.clone(), piece)?;
    Ok(Worker {
        child,
        tasks: tx,
        holding: Vec::new(),
        outgoing: None,
        incoming: Vec::new(),
        lost: false,
        stopped_for: None,
    })
}

impl Inner {
    /// Start `processes` workers.
    pub(super) fn start(processes: usize, context: Context) -> Result<Inner, PoolError> {
        let (results_tx, results) =
            ipc::channel::<Up>().map_err(|e| PoolError::Broken(e.to_string()))?;
        let piece = piece_size();
        let mut workers = Vec::with_capacity(processes);
        for _ in 0..processes {
            workers.push(spawn_worker(&context, &results_tx, piece)?); // on error, the ones made so far are killed on drop
        }
        Ok(Inner {
            context,
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

    /// Reap dead workers, fail the tasks they held, start replacements.
    pub(super) fn check_workers(&mut self) {
        let now = Instant::now();
        // How long a worker seen stopped at the last look and at this one counts
        // as stopped: the time between the looks, but at most a second. A longer
        // gap means nobody waited on the pool, or this program was stopped too
        // (Ctrl-Z stops the whole job, and after `fg` a worker's SIGCONT may land
        // a moment after ours): it adds one second, not the whole gap. So a worker
        // stopped alone is killed after STOP_PATIENCE of looks however seldom they
        // come, and a job stop of any length is not held against a worker.
        let step = (now - self.last_check).min(Duration::from_secs(1));
        self.last_check = now;
        if matches!(self.state, State::Terminated | State::Joined) {
            return;
        }
        for i in 0..self.workers.len() {
            let w = &mut self.workers[i];
            let mut stopped_too_long = false;
            if w.child.is_alive().unwrap_or(false) {
                let busy = !w.holding.is_empty() || w.outgoing.is_some();
                if !(busy && w.child.is_stopped()) {
                    w.stopped_for = None;
                    continue;
                }
                // The first look that sees it stopped counts nothing yet.
                let stopped_for = w.stopped_for.map_or(Duration::ZERO, |d| d + step);
                w.stopped_for = Some(stopped_for);
                if stopped_for < STOP_PATIENCE {
                    continue;
                }
                // SIGKILL ends a stopped process too; then it is reaped below.
                w.child.kill();
                stopped_too_long = true;
            }
            let pid = w.child.pid();
            let exit = (w.child.join().map(|e| e.to_string())).unwrap_or_else(|e| match e {
                PoolError::Broken(why) => format!("exit code unknown: {why}"),
                e => format!("exit code unknown: {e}"),
            });
            // All it sent before it died is waiting in the socket: take it in first,
            // so a result it delivered is not reported lost.
            if self.absorb_ready().is_err() {
                return; // the pool is broken, and every task has failed
            }
            let w = &mut self.workers[i];
            w.outgoing = None;
            let err = if stopped_too_long {
                w.incoming.clear();
                PoolError::WorkerStopped {
                    pid,
                    secs: STOP_PATIENCE.as_secs(),
                }
            } else if std::mem::take(&mut w.incoming).is_empty() {
                PoolError::WorkerDied { pid, exit }
            } else {
                PoolError::WorkerDiedSending { pid, exit }
            };
            self.fail_held(i, err);
            match spawn_worker(&self.context, &self.results_tx, self.piece) {
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
                self.workers[i].child.kill();
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
        // Kill them all first, then reap: each ends at once, so no one waits on
        // another's grace.
        for w in &mut self.workers {
            w.child.kill();
        }
        for w in &mut self.workers {
            let _ = w.child.join();
            for route in std::mem::take(&mut w.holding) {
                route.deliver(Err(PoolError::Terminated));
            }
        }
        self.fail_pending(PoolError::Terminated);
        self.state = State::Terminated;
    }

    pub(super) fn break_pool(&mut self, why: String) -> PoolError {
        let err = PoolError::Broken(why.clone());
        for i in 0..self.workers.len() {
            self.fail_held(i, err.clone());
        }
        self.fail_pending(err.clone());
        self.broken = Some(why);
        err
    }
}
