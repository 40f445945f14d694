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
//! (an `IpcReceiver` cannot be shared, PITFALLS C-13) and a clone of one result
//! channel back to the parent. A task is a *function pointer* and its serialised
//! arguments: after `fork` the worker runs the same executable at the same
//! addresses, so the parent's `fn` pointer is valid there (that is what the `fork`
//! start method buys; a spawned interpreter would need the function by name, as
//! pickle does). Arguments and results cross as postcard bytes.
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
//! A result is decoded as soon as it arrives, while other workers still compute,
//! so a big `map` does not end with the parent decoding everything on its own.
//!
//! **Failures.** A task that panics fails with the panic message; the worker goes
//! on. A worker that dies (a signal, `_exit`) is noticed within about 10 ms: the
//! tasks it held fail with [`PoolError::WorkerDied`] and a new worker is forked in
//! its place. Python's `Pool` replaces the worker too, but loses the task, and a
//! `get()` without timeout then waits forever (gh-66587). If a replacement cannot be
//! forked (for example because the process now runs threads), the pool reports
//! itself [`PoolError::Broken`] and fails everything still pending.
//!
//! **Drop.** Dropping the `Pool` terminates it, as leaving Python's `with Pool()`
//! block does: workers are killed and reaped, unfinished tasks fail with
//! [`PoolError::Terminated`]. Call `close()` then `join()` to let them finish.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::process::{Child, Joined, ProcessError};
use ipc_channel::TryRecvError;
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Everything that can go wrong with a pool or one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("a pool needs at least 1 process, got 0")]
    NoProcesses,
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
    #[error("no result within {0:?} (the task goes on running)")]
    Timeout(Duration),
    #[error("the pool is broken: {0}")]
    Broken(String),
    #[error("could not encode or decode a task: {0}")]
    Codec(String),
}

impl From<ProcessError> for PoolError {
    fn from(e: ProcessError) -> Self {
        PoolError::Broken(e.to_string())
    }
}

/// Python's default `chunksize` for `map` (CPython `Pool._map_async`):
/// `ceil(len / (4 * workers))`, and 0 items make 0 chunks.
pub fn default_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(4 * workers.max(1))
}

/// Runs in the worker: decode the arguments, call the function, encode the results.
type Call = fn(func: usize, args: &[u8]) -> Result<Vec<u8>, String>;

fn call<A: DeserializeOwned, R: Serialize>(func: usize, args: &[u8]) -> Result<Vec<u8>, String> {
    // `func` is the address of an `fn(A) -> R` taken in the parent by `Pool::submit`
    // for this very monomorphisation (the pair is sent together). The worker was
    // forked from that parent, so it maps the same executable at the same addresses.
    // SAFETY: a valid `fn(A) -> R` address, as above; no library is loaded after fork.
    let f = unsafe { std::mem::transmute::<*const (), fn(A) -> R>(func as *const ()) };
    let items: Vec<A> =
        postcard::from_bytes(args).map_err(|e| format!("decoding arguments: {e}"))?;
    let out: Vec<R> = items.into_iter().map(f).collect();
    postcard::to_allocvec(&out).map_err(|e| format!("encoding results: {e}"))
}

#[derive(Serialize, Deserialize)]
struct Task {
    id: u64,
    call: usize,
    func: usize,
    /// As one byte string, not a sequence of numbers: much faster to encode.
    #[serde(with = "serde_bytes")]
    args: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
enum ToWorker {
    Run(Vec<Task>),
    Stop,
}

#[derive(Serialize, Deserialize)]
struct FromWorker {
    pid: i32,
    done: Vec<Done>,
}

#[derive(Serialize, Deserialize)]
struct Done {
    id: u64,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    /// Set when the task failed: `bytes` is then empty.
    error: Option<String>,
}

/// The worker's whole life: run batches until told to stop.
fn worker_loop(tasks: IpcReceiver<ToWorker>, results: IpcSender<FromWorker>) -> i32 {
    // A task's panic is reported to the parent, not printed here: keep the message
    // and where it happened for catch_unwind below.
    std::panic::set_hook(Box::new(|info| {
        let msg = panic_text(info.payload());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg}{at}"));
    }));
    let pid = std::process::id() as i32;
    while let Ok(ToWorker::Run(batch)) = tasks.recv() {
        let done = batch
            .into_iter()
            .map(|t| {
                // SAFETY: `t.call` is the address of a `call::<A, R>` (type `Call`)
                // taken in the parent; the executable's code sits at the same
                // addresses in this forked worker, whenever it was forked (see `call`).
                let run = unsafe { std::mem::transmute::<*const (), Call>(t.call as *const ()) };
                let result = std::panic::catch_unwind(|| run(t.func, &t.args))
                    .unwrap_or_else(|_| Err(format!("panic: {}", LAST_PANIC.with(|p| p.take()))));
                match result {
                    Ok(bytes) => Done {
                        id: t.id,
                        bytes,
                        error: None,
                    },
                    Err(e) => Done {
                        id: t.id,
                        bytes: Vec::new(),
                        error: Some(e),
                    },
                }
            })
            .collect();
        if results.send(FromWorker { pid, done }).is_err() {
            return 1; // the parent is gone
        }
    }
    0 // Stop, or the parent dropped our channel
}

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

struct Worker {
    child: Child,
    tasks: IpcSender<ToWorker>,
    /// The batch it holds (empty = idle): each task's id, and how to decode its result.
    holding: Vec<(u64, Decode)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Closed,
    Joined,
    Terminated,
}

struct Inner {
    workers: Vec<Worker>,
    results: IpcReceiver<FromWorker>,
    /// Kept to hand a clone to replacement workers.
    results_tx: IpcSender<FromWorker>,
    /// Tasks not yet sent, each with the decoder of its result type (known only to
    /// the `submit` call that queued it).
    pending: VecDeque<(Task, Decode)>,
    done: HashMap<u64, Result<Finished, PoolError>>,
    /// Results nobody waits for any more (their handle was dropped).
    abandoned: HashSet<u64>,
    next_id: u64,
    state: State,
    broken: Option<String>,
    last_check: Instant,
    replaced: usize,
}

/// A pool of worker processes. See the module docs.
pub struct Pool {
    inner: Rc<RefCell<Inner>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({:?})", self.worker_pids())
    }
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

impl Pool {
    /// `Pool(processes)`: fork `processes` workers now.
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        if processes == 0 {
            return Err(PoolError::NoProcesses);
        }
        let (results_tx, results) =
            ipc::channel::<FromWorker>().map_err(|e| PoolError::Broken(e.to_string()))?;
        let mut workers = Vec::with_capacity(processes);
        for _ in 0..processes {
            workers.push(spawn_worker(&results_tx)?); // on error, the ones made so far are killed on drop
        }
        Ok(Pool {
            inner: Rc::new(RefCell::new(Inner {
                workers,
                results,
                results_tx,
                pending: VecDeque::new(),
                done: HashMap::new(),
                abandoned: HashSet::new(),
                next_id: 0,
                state: State::Running,
                broken: None,
                last_check: Instant::now(),
                replaced: 0,
            })),
        })
    }

    /// `Pool()`: one worker per CPU.
    pub fn with_cpu_count() -> Result<Pool, PoolError> {
        Pool::new(common::output::cpu_count())
    }

    /// The workers' PIDs now (a replaced worker has a new one).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.inner
            .borrow()
            .workers
            .iter()
            .map(|w| w.child.pid())
            .collect()
    }

    /// How many workers have died and been replaced.
    pub fn replaced(&self) -> usize {
        self.inner.borrow().replaced
    }

    pub fn processes(&self) -> usize {
        self.inner.borrow().workers.len()
    }

    /// Queue `items` as tasks of `chunksize` items each; the ids in order.
    fn submit<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<u64>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        if chunksize == 0 {
            return Err(PoolError::ZeroChunksize);
        }
        let mut inner = self.inner.borrow_mut();
        inner.usable()?;
        let mut ids = Vec::new();
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<A> = items.by_ref().take(chunksize).collect();
            let args =
                postcard::to_allocvec(&chunk).map_err(|e| PoolError::Codec(e.to_string()))?;
            let id = inner.next_id;
            inner.next_id += 1;
            let task = Task {
                id,
                call: call::<A, R> as Call as usize,
                func: f as usize,
                args,
            };
            inner.pending.push_back((task, decode_part::<R>));
            ids.push(id);
            // An idle worker starts on this chunk while the next one is encoded.
            if inner.workers.iter().any(|w| w.holding.is_empty()) {
                inner.dispatch();
            }
        }
        // Start work right away if a worker is idle; do not wait for anything.
        inner.dispatch();
        inner.absorb_ready()?;
        Ok(ids)
    }

    /// `pool.apply_async(f, (a,))`: run `f(a)` in a worker; the handle gets the result.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, a: A) -> Result<AsyncResult<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        let ids = self.submit(f, vec![a], 1)?;
        Ok(AsyncResult::new(&self.inner, ids, collect_one::<R>))
    }

    /// `pool.apply(f, (a,))`: run `f(a)` in a worker and wait for it.
    pub fn apply<A, R>(&self, f: fn(A) -> R, a: A) -> Result<R, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.apply_async(f, a)?.get(None)
    }

    /// `pool.map_async(f, items, chunksize)`; `None` = Python's default chunksize.
    ///
    /// `items` is anything iterable, as in Python: a `Vec`, or `v.iter().copied()`
    /// to send a slice's items without copying the slice first. The default
    /// chunksize needs the length; like Python (`list(iterable)` when it has no
    /// `__len__`), an iterator that cannot tell it is collected first.
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        let items = items.into_iter();
        let ids = match (chunksize, items.size_hint()) {
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
        Ok(AsyncResult::new(&self.inner, ids, collect_all::<R>))
    }

    /// `pool.map(f, items)`: results in order, with the default chunksize.
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.map_async(f, items, None)?.get(None)
    }

    /// `pool.map(f, items, chunksize)`.
    pub fn map_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.map_async(f, items, Some(chunksize))?.get(None)
    }

    /// `pool.imap(f, items, chunksize)`: results in order, each as soon as it and all
    /// before it are done.
    pub fn imap<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Imap<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        Ok(Imap::new(
            &self.inner,
            self.submit(f, items, chunksize)?,
            true,
        ))
    }

    /// `pool.imap_unordered(f, items, chunksize)`: results as tasks finish.
    pub fn imap_unordered<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Imap<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        Ok(Imap::new(
            &self.inner,
            self.submit(f, items, chunksize)?,
            false,
        ))
    }

    /// `pool.close()`: no new tasks; the queued ones still run.
    pub fn close(&self) {
        let mut inner = self.inner.borrow_mut();
        if inner.state == State::Running {
            inner.state = State::Closed;
        }
    }

    /// `pool.join()`: after `close()`, wait for every task, then stop the workers
    /// and reap them.
    pub fn join(&self) -> Result<(), PoolError> {
        let mut inner = self.inner.borrow_mut();
        match inner.state {
            State::Running => return Err(PoolError::StillRunning),
            State::Joined | State::Terminated => return Ok(()),
            State::Closed => {}
        }
        inner.pump(None, |i| {
            i.pending.is_empty() && i.workers.iter().all(|w| w.holding.is_empty())
        })?;
        for w in &mut inner.workers {
            let _ = w.tasks.send(ToWorker::Stop);
        }
        for w in &mut inner.workers {
            // A worker that ignores Stop (stuck in a task) is killed after 5 s.
            if let Joined::Killed(_) = w.child.join_or_kill(Duration::from_secs(5))? {
                eprintln!(
                    "pool: worker pid {} did not stop and was killed",
                    w.child.pid()
                );
            }
        }
        inner.state = State::Joined;
        Ok(())
    }

    /// `pool.terminate()`: kill the workers now (SIGKILL) and reap them; unfinished
    /// tasks fail with [`PoolError::Terminated`].
    pub fn terminate(&self) {
        self.inner.borrow_mut().terminate();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl Inner {
    fn usable(&self) -> Result<(), PoolError> {
        if let Some(why) = &self.broken {
            return Err(PoolError::Broken(why.clone()));
        }
        match self.state {
            State::Running => Ok(()),
            State::Closed | State::Joined => Err(PoolError::Closed),
            State::Terminated => Err(PoolError::Terminated),
        }
    }

    /// Hand a batch to every idle worker.
    fn dispatch(&mut self) {
        let n = self.workers.len();
        for w in &mut self.workers {
            if self.pending.is_empty() {
                return;
            }
            if !w.holding.is_empty() {
                continue;
            }
            // Large batches while much is pending, one task at a time near the end.
            let take = (self.pending.len() / (2 * n)).clamp(1, MAX_BATCH);
            let (batch, decoders): (Vec<Task>, Vec<Decode>) = self.pending.drain(..take).unzip();
            w.holding = batch.iter().map(|t| t.id).zip(decoders).collect();
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
        for (k, Done { id, bytes, error }) in msg.done.into_iter().enumerate() {
            if self.abandoned.remove(&id) {
                continue;
            }
            // The worker answers in the order it was given the batch.
            let decode = held
                .get(k)
                .filter(|(held_id, _)| *held_id == id)
                .or_else(|| held.iter().find(|(held_id, _)| *held_id == id))
                .map(|&(_, decode)| decode);
            let result = match error {
                None => Ok(bytes),
                Some(e) => Err(e),
            };
            let result = result.map_err(|m| match m.strip_prefix("panic: ") {
                Some(message) => PoolError::TaskPanicked {
                    pid: msg.pid,
                    message: message.to_string(),
                },
                None => PoolError::Codec(m),
            });
            self.finish(id, result, decode);
        }
    }

    /// Record a task's outcome. A big result is decoded now, while the other workers
    /// are still busy, rather than all at once when someone asks: for a big `map`
    /// that takes the decoding off the end of the run, where every core waits for
    /// it. A small one is decoded by `get`, straight into the result, which is cheaper.
    fn finish(&mut self, id: u64, result: Result<Vec<u8>, PoolError>, decode: Option<Decode>) {
        let result = result.and_then(|bytes| {
            let decoded = match decode {
                Some(decode) if bytes.len() >= DECODE_ON_ARRIVAL => Some(decode(&bytes)?),
                _ => None,
            };
            Ok(Finished { bytes, decoded })
        });
        self.done.insert(id, result);
    }

    /// Take in every result already waiting, without blocking.
    fn absorb_ready(&mut self) -> Result<(), PoolError> {
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
    fn pump(
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
    fn check_workers(&mut self) {
        self.last_check = Instant::now();
        if matches!(self.state, State::Terminated | State::Joined) {
            return;
        }
        for i in 0..self.workers.len() {
            if self.workers[i].child.is_alive().unwrap_or(false) {
                continue;
            }
            let w = &mut self.workers[i];
            let (pid, exit) = (
                w.child.pid(),
                w.child.join().map(|e| e.to_string()).unwrap_or_default(),
            );
            for (id, _) in std::mem::take(&mut self.workers[i].holding) {
                if !self.abandoned.remove(&id) {
                    let exit = exit.clone();
                    self.finish(id, Err(PoolError::WorkerDied { pid, exit }), None);
                }
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

    /// Nobody will ask for these results: drop the queued tasks, and the results of
    /// those already running when they arrive.
    fn forget(&mut self, ids: &[u64]) {
        let ids: HashSet<u64> = ids.iter().copied().collect();
        self.pending.retain(|(t, _)| !ids.contains(&t.id));
        let running: HashSet<u64> = self
            .workers
            .iter()
            .flat_map(|w| w.holding.iter().map(|&(id, _)| id))
            .collect();
        for id in ids {
            if self.done.remove(&id).is_none() && running.contains(&id) {
                self.abandoned.insert(id);
            }
        }
    }

    fn fail_pending(&mut self, err: PoolError) {
        let ids: Vec<u64> = self.pending.drain(..).map(|(t, _)| t.id).collect();
        for id in ids {
            self.finish(id, Err(err.clone()), None);
        }
    }

    fn terminate(&mut self) {
        if self.state == State::Terminated {
            return;
        }
        for i in 0..self.workers.len() {
            let w = &mut self.workers[i];
            let _ = w.child.kill();
            let _ = w.child.join();
            for (id, _) in std::mem::take(&mut w.holding) {
                self.finish(id, Err(PoolError::Terminated), None);
            }
        }
        self.fail_pending(PoolError::Terminated);
        self.state = State::Terminated;
    }
}

/// The most tasks one message carries to a worker. One batch is in flight per
/// worker, so a worker idles for one round trip between batches: large batches
/// make that rare while thousands of tasks are pending.
const MAX_BATCH: usize = 1024;

/// Results at least this big (encoded) are decoded when they arrive.
const DECODE_ON_ARRIVAL: usize = 4096;

/// How often the pool looks for dead workers while it waits.
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// A finished task: the bytes its worker sent, and the `Vec<R>` decoded from them
/// on arrival until the first `get` (or `imap`) takes it. The bytes stay, so `get`
/// may be called again, as in Python.
struct Finished {
    bytes: Vec<u8>,
    decoded: Option<Part>,
}

impl Finished {
    /// The task's results: decoded on arrival, or now from the bytes.
    fn take<R: DeserializeOwned + 'static>(&mut self) -> Result<Vec<R>, PoolError> {
        match self.decoded.take() {
            Some(part) => part
                .downcast::<Vec<R>>()
                .map(|items| *items)
                .map_err(|_| PoolError::Codec("a result decoded as another type".into())),
            None => postcard::from_bytes(&self.bytes).map_err(|e| PoolError::Codec(e.to_string())),
        }
    }
}

/// One task's results, `Vec<R>`, with `R` erased: `Inner` holds tasks of many types.
type Part = Box<dyn Any>;
type Decode = fn(&[u8]) -> Result<Part, PoolError>;

fn decode_part<R: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<Part, PoolError> {
    let items: Vec<R> = postcard::from_bytes(bytes).map_err(|e| PoolError::Codec(e.to_string()))?;
    Ok(Box::new(items))
}

/// `map`'s result: every task's results, in task order. The first part becomes the
/// result and grows (for a big one `realloc` can move its pages instead of copying).
fn collect_all<R: DeserializeOwned + 'static>(
    inner: &mut Inner,
    ids: &[u64],
) -> Result<Vec<R>, PoolError> {
    let mut out: Vec<R> = Vec::new();
    for id in ids {
        // Parts taken before an error are dropped; their bytes stay for another `get`.
        let items = match inner.done.get_mut(id) {
            Some(Ok(finished)) => finished.take::<R>()?,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(PoolError::Codec(format!("no result for task {id}"))),
        };
        if out.is_empty() {
            out = items;
        } else {
            out.extend(items);
        }
    }
    Ok(out)
}

fn collect_one<R: DeserializeOwned + 'static>(
    inner: &mut Inner,
    ids: &[u64],
) -> Result<R, PoolError> {
    collect_all::<R>(inner, ids)?
        .pop()
        .ok_or_else(|| PoolError::Codec("no result in the reply".into()))
}

/// Gathers an `AsyncResult`'s value from the finished tasks.
type Collect<T> = fn(&mut Inner, &[u64]) -> Result<T, PoolError>;

/// `AsyncResult`: the handle `apply_async` and `map_async` return.
pub struct AsyncResult<T> {
    pool: Rc<RefCell<Inner>>,
    ids: Vec<u64>,
    collect: Collect<T>,
    /// How many of `ids`, from the front, are known to have finished.
    finished: Cell<usize>,
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AsyncResult({} tasks)", self.ids.len())
    }
}

impl<T> AsyncResult<T> {
    fn new(pool: &Rc<RefCell<Inner>>, ids: Vec<u64>, collect: Collect<T>) -> Self {
        AsyncResult {
            pool: Rc::clone(pool),
            ids,
            collect,
            finished: Cell::new(0),
        }
    }

    /// Every task finished? The pool asks after each message, so this resumes where
    /// it stopped (finished tasks stay finished while this handle lives): scanning
    /// all ids each time made a 100,000-task `map` quadratic.
    fn all_done(&self, inner: &Inner) -> bool {
        let mut k = self.finished.get();
        while k < self.ids.len() && inner.done.contains_key(&self.ids[k]) {
            k += 1;
        }
        self.finished.set(k);
        k == self.ids.len()
    }

    /// `res.get(timeout)`: the result, the first task error, or `Timeout` (the tasks
    /// go on; you may call `get` again). `None` waits as long as it takes, which is
    /// bounded as long as the function itself returns: a dead worker fails its task.
    pub fn get(&self, timeout: Option<Duration>) -> Result<T, PoolError> {
        let mut inner = self.pool.borrow_mut();
        let deadline = timeout.map(|t| Instant::now() + t);
        inner
            .pump(deadline, |i| self.all_done(i))
            .map_err(|e| match e {
                PoolError::Timeout(_) => PoolError::Timeout(timeout.unwrap_or_default()),
                e => e,
            })?;
        (self.collect)(&mut inner, &self.ids)
    }

    /// The PIDs of the workers running this result's tasks right now (empty while
    /// they are queued or after they finished): to show, or to kill one.
    pub fn worker_pids(&self) -> Vec<i32> {
        let inner = self.pool.borrow();
        inner
            .workers
            .iter()
            .filter(|w| w.holding.iter().any(|(id, _)| self.ids.contains(id)))
            .map(|w| w.child.pid())
            .collect()
    }

    /// `res.ready()`: finished (well or badly)?
    pub fn ready(&self) -> bool {
        let mut inner = self.pool.borrow_mut();
        let _ = inner.absorb_ready();
        if inner.last_check.elapsed() >= CHECK_EVERY {
            inner.check_workers();
        }
        self.all_done(&inner)
    }

    /// `res.wait(timeout)`: wait until ready or the timeout passes.
    pub fn wait(&self, timeout: Duration) {
        let mut inner = self.pool.borrow_mut();
        let _ = inner.pump(Some(Instant::now() + timeout), |i| self.all_done(i));
    }

    /// `res.successful()`: `None` while not ready (Python raises ValueError).
    pub fn successful(&self) -> Option<bool> {
        if !self.ready() {
            return None;
        }
        let inner = self.pool.borrow();
        Some(self.ids.iter().all(|id| inner.done[id].is_ok()))
    }
}

impl<T> Drop for AsyncResult<T> {
    fn drop(&mut self) {
        self.pool.borrow_mut().forget(&self.ids);
    }
}

/// The iterator `imap` and `imap_unordered` return.
pub struct Imap<R> {
    pool: Rc<RefCell<Inner>>,
    ids: VecDeque<u64>,
    ordered: bool,
    ready: VecDeque<R>,
    _r: PhantomData<R>,
}

impl<R> std::fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Imap({} tasks left, ordered: {})",
            self.ids.len(),
            self.ordered
        )
    }
}

impl<R> Imap<R> {
    fn new(pool: &Rc<RefCell<Inner>>, ids: Vec<u64>, ordered: bool) -> Self {
        Imap {
            pool: Rc::clone(pool),
            ids: ids.into(),
            ordered,
            ready: VecDeque::new(),
            _r: PhantomData,
        }
    }
}

impl<R: DeserializeOwned + 'static> Iterator for Imap<R> {
    type Item = Result<R, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(r) = self.ready.pop_front() {
            return Some(Ok(r));
        }
        if self.ids.is_empty() {
            return None;
        }
        let mut inner = self.pool.borrow_mut();
        let ids = &self.ids;
        let ordered = self.ordered;
        let found = |i: &Inner| {
            if ordered {
                i.done.contains_key(&ids[0])
            } else {
                ids.iter().any(|id| i.done.contains_key(id))
            }
        };
        if let Err(e) = inner.pump(None, found) {
            self.ids.clear();
            return Some(Err(e));
        }
        let pos = if ordered {
            0
        } else {
            self.ids.iter().position(|id| inner.done.contains_key(id))?
        };
        let id = self.ids.remove(pos)?;
        match inner.done.remove(&id)?.and_then(|mut f| f.take::<R>()) {
            Ok(items) => self.ready.extend(items),
            Err(e) => return Some(Err(e)),
        }
        drop(inner);
        self.next()
    }
}

impl<R> Drop for Imap<R> {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.ids.iter().copied().collect();
        self.pool.borrow_mut().forget(&ids);
    }
}
