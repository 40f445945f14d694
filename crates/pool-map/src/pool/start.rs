//! Start methods: how a worker process comes to be, `multiprocessing.get_context`.
//!
//! - **fork** (the default, [`Pool::new`]): the pool forks each worker from the
//!   program itself. A worker gets the program's memory as it is now, and runs the
//!   parent's `fn` pointers as they are. The kit's `fork` refuses in a process that
//!   runs threads (a lock another thread holds would stay locked in the child
//!   forever), so such a pool cannot start, nor replace a dead worker, once the
//!   program has started rayon, a logger thread or any other thread.
//! - **forkserver** ([`Context::forkserver`], Python's default on Linux since
//!   3.14, gh-84559): a server process is forked at once, while the program is
//!   still single-threaded; from then on every worker, the first ones and each
//!   replacement, is forked *by the server*, whatever threads the program runs.
//!   The server has no thread of its own, so its children inherit no held lock.
//!   The worker's two channel ends (its task channel and a sender to the result
//!   channel) cross to the server in an ipc-channel message, as file descriptors
//!   (SCM_RIGHTS); see `common::forkserver`.
//!
//! **Naming the function.** A task names its function by address. Under fork the
//! worker is a copy of the program, so every address is valid there. Under
//! forkserver the worker is a copy of the server, taken when the context was made:
//! the executable's code is at the same addresses (it is never unmapped), but a
//! library loaded later (`dlopen`) is not in the server. Such a function is
//! refused when the task is submitted ([`PoolError::CannotName`]); Python's
//! pickle refuses a lambda the same way, when it is submitted.
//!
//! **spawn** is not offered: a spawned worker is a fresh image, so each task's
//! function would need a name in a registry (as `common::spawn::Func`), and its
//! channel ends a rendezvous that ipc-channel only makes through a socket file in
//! /tmp, which a SIGKILL of the program would leave behind.

use std::rc::Rc;
use std::time::Duration;

use common::forkserver::{self, ForkServer, Served};
use common::process::{Child, Exit, Joined};
use ipc_channel::ipc::{IpcBytesReceiver, IpcSender};
use serde::{Deserialize, Serialize};

use super::wire::Up;
use super::worker::worker_loop;
use super::{Pool, PoolError};

/// `multiprocessing.get_context(method)`: how a pool's workers are started.
#[derive(Debug, Clone)]
pub struct Context {
    server: Option<Rc<ForkServer>>,
}

impl Context {
    /// `get_context("fork")`: workers forked from the program (refused once it
    /// runs other threads).
    pub fn fork() -> Context {
        Context { server: None }
    }

    /// `get_context("forkserver")`: fork the server NOW. Call it early in `main`,
    /// before any thread starts (it is a fork itself); pools made from this
    /// context later work whatever threads the program runs by then.
    pub fn forkserver() -> Result<Context, PoolError> {
        let server = forkserver::start()
            .map_err(|e| PoolError::CannotStart(format!("its fork server: {e}")))?;
        Ok(Context {
            server: Some(Rc::new(server)),
        })
    }

    /// The method's name, as Python spells it.
    pub fn method(&self) -> &'static str {
        match self.server {
            None => "fork",
            Some(_) => "forkserver",
        }
    }

    /// The fork server's PID, under forkserver.
    pub fn server_pid(&self) -> Option<i32> {
        self.server.as_ref().map(|s| s.pid())
    }

    /// Stop the fork server now and reap it. While a pool made from this context
    /// (or a handle of one: an `AsyncResult`, an `Imap`) still lives, the server
    /// serves it, and stops when the last of them is dropped.
    pub fn stop(self) -> Result<(), PoolError> {
        match self.server.map(Rc::try_unwrap) {
            Some(Ok(server)) => (server.stop().map(drop))
                .map_err(|e| PoolError::Broken(format!("the fork server did not stop: {e}"))),
            _ => Ok(()), // fork; or a pool still uses the server: it stops with it
        }
    }

    /// `ctx.Pool(processes)`.
    pub fn pool(&self, processes: usize) -> Result<Pool, PoolError> {
        Pool::start(processes, self.clone())
    }

    /// Whether a worker of this context can run the code at `addr` (module docs).
    pub(super) fn can_run(&self, addr: usize) -> bool {
        self.server.as_ref().is_none_or(|s| s.can_run(addr))
    }

    /// Start one worker that takes tasks from `tasks` and answers on `up`.
    pub(super) fn start_worker(
        &self,
        tasks: IpcBytesReceiver,
        up: IpcSender<Up>,
        piece: usize,
    ) -> Result<Proc, PoolError> {
        match &self.server {
            // Child: the closure owns `tasks` and `up`; in the parent they are
            // dropped when fork returns, so the worker holds the only receiving end.
            None => Ok(Proc::Forked(common::fork(move || {
                worker_loop(tasks, up, piece)
            })?)),
            Some(server) => {
                let boot = Boot { tasks, up, piece };
                let served = server
                    .start_with(served_worker, boot)
                    .map_err(|e| PoolError::Broken(e.to_string()))?;
                Ok(Proc::Served(served))
            }
        }
    }
}

/// What a forkserver worker is handed: its channel ends, and the message size.
#[derive(Serialize, Deserialize)]
struct Boot {
    tasks: IpcBytesReceiver,
    up: IpcSender<Up>,
    piece: usize,
}

/// Worker (a child of the fork server): the same loop as a forked worker.
fn served_worker(boot: Boot) -> i32 {
    worker_loop(boot.tasks, boot.up, boot.piece)
}

/// A worker process, whichever way it was started.
#[derive(Debug)]
pub(super) enum Proc {
    /// Our own child: we reap it.
    Forked(Child),
    /// The fork server's child: it reaps it and reports the exit code.
    Served(Served),
}

impl Proc {
    pub(super) fn pid(&self) -> i32 {
        match self {
            Proc::Forked(c) => c.pid(),
            Proc::Served(s) => s.pid(),
        }
    }

    pub(super) fn is_alive(&mut self) -> Result<bool, PoolError> {
        match self {
            Proc::Forked(c) => Ok(c.is_alive()?),
            Proc::Served(s) => s.is_alive().map_err(broken),
        }
    }

    pub(super) fn is_stopped(&self) -> bool {
        match self {
            Proc::Forked(c) => c.is_stopped(),
            Proc::Served(s) => s.is_stopped(),
        }
    }

    pub(super) fn kill(&mut self) {
        match self {
            Proc::Forked(c) => drop(c.kill()),
            Proc::Served(s) => s.kill(),
        }
    }

    /// Its exit code, once it has ended: called after it died or was killed, so
    /// the wait is short; bounded all the same.
    pub(super) fn join(&mut self) -> Result<Exit, PoolError> {
        match self.join_or_kill(common::process::KILL_GRACE)? {
            Joined::Finished(exit) | Joined::Killed(exit) => Ok(exit),
        }
    }

    pub(super) fn join_or_kill(&mut self, timeout: Duration) -> Result<Joined, PoolError> {
        match self {
            Proc::Forked(c) => Ok(c.join_or_kill(timeout)?),
            Proc::Served(s) => s.join_or_kill(timeout).map_err(broken),
        }
    }
}

fn broken(e: common::spawn::StartError) -> PoolError {
    PoolError::Broken(e.to_string())
}
