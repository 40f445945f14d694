//! A process pool with Python's vocabulary, on forked workers and `ipc-channel`.
//!
//! ```no_run
//! use pool_map::Pool;
//! fn square(x: u64) -> u64 { x * x }
//! let pool = Pool::new(3)?;
//! assert_eq!(pool.map(square, vec![1, 2, 3, 4, 5])?, vec![1, 4, 9, 16, 25]);
//! # Ok::<(), pool_map::PoolError>(())
//! ```
//!
//! **How it works.** `Pool::new(n)` forks `n` workers. Each has its own task channel
//! and a clone of one result channel back to the parent: in ipc-channel only
//! `IpcSender` implements `Clone` (its `src/ipc.rs`), so a channel has many senders
//! and one receiver, and workers cannot share one task queue. A task is a *function
//! pointer* and its serialised arguments: after `fork` the worker runs the same
//! executable at the same addresses, so the parent's `fn` pointer is valid there
//! (that is what the `fork` start method buys; a spawned interpreter would need the
//! function by name, as pickle does). Arguments and results cross as postcard bytes.
//!
//! **No background thread.** Python's `Pool` has three helper threads. This one has
//! none, because a thread in the parent would forbid forking a replacement worker
//! (see `common::process`). It makes progress whenever you call into it: submitting,
//! `get`, `ready`, `wait`, iterating `imap`. Between calls, the workers finish the
//! batch they hold.
//!
//! **Batches.** Tasks travel to an idle worker in batches (at most one batch in
//! flight per worker, so neither side ever blocks sending to the other): many small
//! ones while much is pending, down to one at a time at the end for balance. Each
//! task still runs, succeeds and fails on its own. `chunksize` is the other thing:
//! how many *items* make one task (Python's meaning, gh-68663).
//!
//! **Failures.** A task that panics fails with the panic message; the worker goes
//! on. A worker that dies (a signal, `_exit`) is noticed within about 10 ms: what it
//! sent before it died is taken in, the tasks it still held fail with
//! [`PoolError::WorkerDied`] (or [`PoolError::WorkerDiedSending`] when it died half
//! way through a result), and a new worker is forked in its place. Python's `Pool` replaces the worker too, but loses the task, and a
//! `get()` without timeout then waits forever (gh-66587). If a replacement cannot be
//! forked (for example because the process now runs threads), the pool reports
//! itself [`PoolError::Broken`] and fails everything still pending. A worker that
//! stays stopped (SIGSTOP, Ctrl-Z) for [`STOP_PATIENCE`] while it holds work is
//! killed and replaced the same way ([`PoolError::WorkerStopped`]): no call of the
//! pool can be frozen by a stopped worker. Every task gets an outcome, and once
//! reported it does not change.
//!
//! **Drop.** Dropping the `Pool` terminates it, as leaving Python's `with Pool()`
//! block does: workers are killed and reaped, unfinished tasks fail with
//! [`PoolError::Terminated`]. Call `close()` then `join()` to let them finish.
//!
//! The parts: `wire.rs` says what crosses between parent and workers, and why no
//! message is big; `worker.rs` is the worker's side (the loop that runs tasks);
//! `dispatch.rs` the parent's (handing out batches, taking results in);
//! `lifecycle.rs` the workers' lives (forking, replacing the dead, `join`);
//! `results.rs` the handles ([`AsyncResult`], [`Imap`]); `error.rs` what can go
//! wrong. This file is the API.

mod dispatch;
mod error;
mod lifecycle;
mod results;
mod start;
mod wire;
mod worker;

use std::cell::{RefCell, RefMut};
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use dispatch::{Inner, State};
pub use error::PoolError;
pub use lifecycle::STOP_PATIENCE;
pub use results::{AsyncResult, Imap};
use results::{Inbox, gather_all, gather_one};
pub use start::Context;

/// What may cross between the parent and a worker: arguments and results are
/// serialised, and the pool holds them past any borrow.
pub trait Wire: Serialize + DeserializeOwned + 'static {}
impl<T: Serialize + DeserializeOwned + 'static> Wire for T {}

/// The pool's state, for one call at a time. A call from inside a call (only code
/// the pool runs, such as a `Deserialize` impl, can make one) gets `Busy`, not a
/// panic. The pool runs no code of yours while it holds this, except that.
fn lock(inner: &RefCell<Inner>) -> Result<RefMut<'_, Inner>, PoolError> {
    inner.try_borrow_mut().map_err(|_| PoolError::Busy)
}

/// Python's default `chunksize` for `map` (CPython `Pool._map_async`):
/// `ceil(len / (4 * workers))`, and 0 items make 0 chunks.
pub fn default_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(workers.max(1).saturating_mul(4))
}

/// A pool of worker processes. See the module docs.
pub struct Pool {
    inner: Rc<RefCell<Inner>>,
    processes: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} workers)", self.processes())
    }
}

impl Pool {
    /// `Pool(processes)`: fork `processes` workers now (the fork start method; see
    /// [`Context`] for the others).
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Pool::start(processes, Context::fork())
    }

    fn start(processes: usize, context: Context) -> Result<Pool, PoolError> {
        if processes == 0 {
            return Err(PoolError::NoProcesses);
        }
        // ipc-channel measures the socket buffer once, on first use, and panics if it
        // cannot open a socket for that: make it happen now, as a clear error.
        common::ipc::ready().map_err(|e| PoolError::CannotStart(e.to_string()))?;
        let inner = Inner::start(processes, context).map_err(|e| match e {
            PoolError::Broken(why) if why.contains("Too many open files") => {
                PoolError::CannotStart(format!(
                    "{why}; the open-file limit may be too low (ulimit -n)"
                ))
            }
            PoolError::Broken(why) => PoolError::CannotStart(why),
            e => e,
        })?;
        Ok(Pool {
            inner: Rc::new(RefCell::new(inner)),
            processes,
        })
    }

    /// `Pool()`: one worker per CPU.
    pub fn with_cpu_count() -> Result<Pool, PoolError> {
        Pool::new(common::output::cpu_count())
    }

    /// The workers' PIDs now (a replaced worker has a new one); empty when called
    /// from inside the pool (see [`PoolError::Busy`]).
    pub fn worker_pids(&self) -> Vec<i32> {
        lock(&self.inner)
            .map(|i| i.worker_pids())
            .unwrap_or_default()
    }

    /// How many workers have died and been replaced.
    pub fn replaced(&self) -> usize {
        lock(&self.inner).map(|i| i.replaced).unwrap_or_default()
    }

    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Queue `items` as tasks of `chunksize` items each, to be answered in one inbox.
    /// Your iterator and your `Serialize` run while the pool is not locked: they may
    /// use the pool, and drop handles.
    fn submit<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Rc<Inbox>, PoolError> {
        if chunksize == 0 {
            return Err(PoolError::ZeroChunksize);
        }
        let inner = lock(&self.inner)?;
        inner.usable()?;
        // Refused here, not in a worker: the workers of a fork server could not run it.
        if !inner.context.can_run(f as usize) {
            let (method, addr) = (inner.context.method(), f as usize);
            return Err(PoolError::CannotName { method, addr });
        }
        drop(inner);
        let inbox = Rc::new(Inbox::default());
        self.queue_all(f, items, chunksize, &inbox)
            .inspect_err(|_| inbox.abandon())?;
        Ok(inbox)
    }

    fn queue_all<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
        inbox: &Rc<Inbox>,
    ) -> Result<(), PoolError> {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<A> = items.by_ref().take(chunksize).collect();
            let args =
                postcard::to_allocvec(&chunk).map_err(|e| PoolError::Codec(e.to_string()))?;
            let len = chunk.len();
            drop(chunk);
            let mut inner = lock(&self.inner)?;
            inner.usable()?; // the iterator may have closed the pool
            inner.queue(worker::task_for(f, args), len, inbox);
            // An idle worker starts on this chunk while the next one is encoded.
            if inner.has_idle_worker() {
                inner.dispatch();
            }
        }
        // Start work right away if a worker is idle; do not wait for anything.
        let mut inner = lock(&self.inner)?;
        inner.dispatch();
        inner.absorb_ready()?;
        inner.dispatch();
        Ok(())
    }

    /// `pool.apply_async(f, (a,))`: run `f(a)` in a worker; the handle gets the result.
    pub fn apply_async<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        a: A,
    ) -> Result<AsyncResult<R>, PoolError> {
        let inbox = self.submit(f, [a], 1)?;
        Ok(AsyncResult::new(&self.inner, inbox, gather_one::<R>))
    }

    /// `pool.apply(f, (a,))`: run `f(a)` in a worker and wait for it.
    pub fn apply<A: Wire, R: Wire>(&self, f: fn(A) -> R, a: A) -> Result<R, PoolError> {
        self.apply_async(f, a)?.get(None)
    }

    /// `pool.map_async(f, items, chunksize)`; `None` = Python's default chunksize.
    ///
    /// `items` is anything iterable, as in Python: a `Vec`, or `v.iter().copied()`
    /// to send a slice's items without copying the slice first. The default
    /// chunksize needs the length; like Python (`list(iterable)` when it has no
    /// `__len__`), an iterator that cannot tell it is collected first.
    pub fn map_async<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError> {
        let items = items.into_iter();
        let inbox = match (chunksize, items.size_hint()) {
            (Some(chunksize), _) => self.submit(f, items, chunksize)?,
            (None, (low, Some(high))) if low == high => {
                self.submit(f, items, default_chunksize(low, self.processes()).max(1))?
            }
            (None, _) => {
                let items: Vec<A> = items.collect();
                let chunksize = default_chunksize(items.len(), self.processes()).max(1);
                self.submit(f, items, chunksize)?
            }
        };
        Ok(AsyncResult::new(&self.inner, inbox, gather_all::<R>))
    }

    /// `pool.map(f, items)`: results in order, with the default chunksize.
    pub fn map<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError> {
        self.map_async(f, items, None)?.get(None)
    }

    /// `pool.map(f, items, chunksize)`.
    pub fn map_chunked<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError> {
        self.map_async(f, items, Some(chunksize))?.get(None)
    }

    /// `pool.imap(f, items, chunksize)`: results in order, each as soon as it and all
    /// before it are done.
    pub fn imap<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Imap<R>, PoolError> {
        let inbox = self.submit(f, items, chunksize)?;
        Ok(Imap::new(&self.inner, inbox, true))
    }

    /// `pool.imap_unordered(f, items, chunksize)`: results as tasks finish.
    pub fn imap_unordered<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Imap<R>, PoolError> {
        let inbox = self.submit(f, items, chunksize)?;
        Ok(Imap::new(&self.inner, inbox, false))
    }

    /// `pool.close()`: no new tasks; the queued ones still run. (Called from inside
    /// the pool, see [`PoolError::Busy`], it does nothing.)
    pub fn close(&self) {
        if let Ok(mut inner) = lock(&self.inner)
            && inner.state == State::Running
        {
            inner.state = State::Closed;
        }
    }

    /// `pool.join()`: after `close()`, wait for every task, then stop the workers
    /// and reap them. Like Python's, it waits as long as the tasks run: a task that
    /// never ends makes it wait forever. [`Pool::join_timeout`] is the bounded one.
    pub fn join(&self) -> Result<(), PoolError> {
        lock(&self.inner)?.join(None)
    }

    /// `join`, but at most `timeout` for the tasks: then the workers still running
    /// one are killed and reaped, the unfinished tasks (running or queued) fail with
    /// [`PoolError::JoinTimedOut`], and so does this call, saying how many.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), PoolError> {
        lock(&self.inner)?.join(Some(timeout))
    }

    /// `pool.terminate()`: kill the workers now (SIGKILL) and reap them; unfinished
    /// tasks fail with [`PoolError::Terminated`]. (Called from inside the pool, see
    /// [`PoolError::Busy`], it does nothing.)
    pub fn terminate(&self) {
        if let Ok(mut inner) = lock(&self.inner) {
            inner.terminate();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}
