//! What can go wrong, in words a learner can act on: each variant's text says what
//! happened to the pool or to the task, never a Rust `Debug` dump.

use std::time::Duration;

use common::process::ProcessError;
use common::timeline::fmt_duration;

/// Everything that can go wrong with a pool or one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("a pool needs at least 1 process, got 0")]
    NoProcesses,
    /// `Pool::new` could not open its channels or fork its workers.
    #[error("cannot start the pool: {0}")]
    CannotStart(String),
    #[error("chunksize must be at least 1, got 0")]
    ZeroChunksize,
    #[error("the pool is closed: it takes no new tasks (Python: ValueError: Pool not running)")]
    Closed,
    #[error("the pool was terminated")]
    Terminated,
    #[error("the pool is still running: call close() before join()")]
    StillRunning,
    #[error("the task panicked in worker pid {pid}: {message}")]
    TaskPanicked { pid: i32, message: String },
    #[error("worker pid {pid} died ({exit}) while it held this task")]
    WorkerDied { pid: i32, exit: String },
    /// The task ran, but its worker died before its result had crossed whole.
    #[error("worker pid {pid} died ({exit}) while it sent this task's result")]
    WorkerDiedSending { pid: i32, exit: String },
    /// The worker stayed stopped (SIGSTOP) too long while it held this task. The
    /// pool then starts another in its place, as for a worker that died; if it
    /// cannot, the pool is broken and says so in the errors that follow.
    #[error(
        "worker pid {pid} was stopped (SIGSTOP) for {secs} s while it held this task; \
         it was killed"
    )]
    WorkerStopped { pid: i32, secs: u64 },
    #[error("no result within {} (the task goes on running)", fmt_duration(*.0))]
    Timeout(Duration),
    /// `join_timeout` gave up: the tasks still running or queued fail with this.
    #[error(
        "join gave up after {}: {unfinished} task(s) had not finished, and the \
         workers running them were killed",
        fmt_duration(*timeout)
    )]
    JoinTimedOut {
        timeout: Duration,
        unfinished: usize,
    },
    /// Under forkserver, the task's function is not in the code the server shares
    /// with the program (see `Context`): refused when submitted.
    #[error(
        "the {method} workers cannot run this function: its code (at {addr:#x}) is \
         not in the executable the server was forked from (a library loaded later?)"
    )]
    CannotName { method: &'static str, addr: usize },
    #[error("the pool is broken: {0}")]
    Broken(String),
    #[error("could not encode or decode a task: {0}")]
    Codec(String),
    /// The pool was called from code it was running itself: a `Serialize` or
    /// `Deserialize` impl of a task's argument or result.
    #[error(
        "the pool is busy: it was called from inside one of its own calls (from a \
         Serialize or Deserialize impl); call it from outside"
    )]
    Busy,
}

impl From<ProcessError> for PoolError {
    fn from(e: ProcessError) -> Self {
        PoolError::Broken(e.to_string())
    }
}
