//! Results and the handles that wait for them: [`AsyncResult`] and [`Imap`].
//!
//! Each call that submits tasks gets one [`Inbox`]: a slot per task, which the pool
//! fills with the task's encoded results (or its error) when they arrive. The pool
//! knows nothing of the result's type; the handle does, and decodes the bytes when
//! asked. A slot is filled once: an outcome, once reported, is final.
//!
//! A dropped handle marks its inbox dropped: queued tasks nobody waits for are not
//! run, and results still arriving for it are dropped with the inbox.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::dispatch::{CHECK_EVERY, Inner};
use super::{PoolError, Wire, lock};

/// A task's outcome as it arrived: its encoded `Vec<R>`, or why it failed.
pub(super) type Outcome = Result<Vec<u8>, PoolError>;

/// One task's place in an inbox.
enum Slot {
    Waiting,
    Arrived(Outcome),
    /// Read by an `Imap`, which reports each result once and frees it.
    Taken,
}

/// Where the outcomes of one submission's tasks arrive, slot `k` for task `k`.
#[derive(Default)]
pub(super) struct Inbox {
    slots: RefCell<Vec<Slot>>,
    /// How many items each task has (an `Imap` reports an error once per item).
    items: RefCell<Vec<usize>>,
    /// Filled slots, in the order they were filled (for `imap_unordered`).
    arrivals: RefCell<VecDeque<usize>>,
    filled: Cell<usize>,
    dropped: Cell<bool>,
}

impl Inbox {
    /// A slot for one more task, of `items` items; its index.
    pub(super) fn open_slot(&self, items: usize) -> usize {
        let mut slots = self.slots.borrow_mut();
        slots.push(Slot::Waiting);
        self.items.borrow_mut().push(items);
        slots.len() - 1
    }

    /// Record a task's outcome. The first one stays: a result, once reported, is final.
    pub(super) fn put(&self, slot: usize, outcome: Outcome) {
        let mut slots = self.slots.borrow_mut();
        if let Slot::Waiting = slots[slot] {
            slots[slot] = Slot::Arrived(outcome);
            self.arrivals.borrow_mut().push_back(slot);
            self.filled.set(self.filled.get() + 1);
        }
    }

    /// Fail every task still waiting.
    fn fail_waiting(&self, err: &PoolError) {
        for slot in 0..self.len() {
            self.put(slot, Err(err.clone()));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    pub(super) fn complete(&self) -> bool {
        self.filled.get() == self.len()
    }

    pub(super) fn is_filled(&self, slot: usize) -> bool {
        !matches!(self.slots.borrow()[slot], Slot::Waiting)
    }

    /// Nobody waits for these results any more.
    pub(super) fn dropped(&self) -> bool {
        self.dropped.get()
    }

    /// Its handle is gone (or was never made): queued tasks need not run.
    pub(super) fn abandon(&self) {
        self.dropped.set(true);
    }
}

fn decode<R: Wire>(bytes: &[u8]) -> Result<Vec<R>, PoolError> {
    postcard::from_bytes(bytes).map_err(|e| PoolError::Codec(e.to_string()))
}

/// Builds a handle's value from its complete inbox: `R` for `apply_async`,
/// `Vec<R>` for `map_async`.
type Gather<T> = fn(&Inbox) -> Result<T, PoolError>;

/// `map`'s result: every task's results, in task order. The first part becomes the
/// result and grows (for a big one `realloc` can move its pages instead of copying).
pub(super) fn gather_all<R: Wire>(inbox: &Inbox) -> Result<Vec<R>, PoolError> {
    let slots = inbox.slots.borrow();
    let mut out: Vec<R> = Vec::new();
    for slot in slots.iter() {
        match slot {
            Slot::Arrived(Ok(bytes)) if out.is_empty() => out = decode(bytes)?,
            Slot::Arrived(Ok(bytes)) => out.extend(decode::<R>(bytes)?),
            Slot::Arrived(Err(e)) => return Err(e.clone()),
            Slot::Waiting | Slot::Taken => {
                return Err(PoolError::Codec("a task has no result yet".into()));
            }
        }
    }
    Ok(out)
}

pub(super) fn gather_one<R: Wire>(inbox: &Inbox) -> Result<R, PoolError> {
    gather_all::<R>(inbox)?
        .pop()
        .ok_or_else(|| PoolError::Codec("no result in the reply".into()))
}

/// `AsyncResult`: the handle `apply_async` and `map_async` return.
pub struct AsyncResult<T> {
    pool: Rc<RefCell<Inner>>,
    inbox: Rc<Inbox>,
    gather: Gather<T>,
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AsyncResult({} tasks)", self.inbox.len())
    }
}

impl<T> AsyncResult<T> {
    pub(super) fn new(pool: &Rc<RefCell<Inner>>, inbox: Rc<Inbox>, gather: Gather<T>) -> Self {
        AsyncResult {
            pool: Rc::clone(pool),
            inbox,
            gather,
        }
    }

    /// `res.get(timeout)`: the result, the first task error, or `Timeout` (the tasks
    /// go on; you may call `get` again). `None` waits as long as it takes, as
    /// Python's does: bounded while the function returns and its worker runs (a dead
    /// worker fails its task; a stopped one, SIGSTOP, holds it until continued).
    pub fn get(&self, timeout: Option<Duration>) -> Result<T, PoolError> {
        let mut inner = lock(&self.pool)?;
        // A timeout too long for the clock (Duration::MAX) is no timeout.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        inner
            .pump(deadline, |_| self.inbox.complete())
            .map_err(|e| match e {
                PoolError::Timeout(_) => PoolError::Timeout(timeout.unwrap_or_default()),
                e => e,
            })?;
        (self.gather)(&self.inbox)
    }

    /// The PIDs of the workers running this result's tasks right now (empty while
    /// they are queued or after they finished): to show, or to kill one.
    pub fn worker_pids(&self) -> Vec<i32> {
        lock(&self.pool)
            .map(|i| i.pids_holding(&self.inbox))
            .unwrap_or_default()
    }

    /// `res.ready()`: finished (well or badly)?
    pub fn ready(&self) -> bool {
        let Ok(mut inner) = lock(&self.pool) else {
            return self.inbox.complete();
        };
        let _ = inner.absorb_ready();
        inner.dispatch();
        if inner.last_check.elapsed() >= CHECK_EVERY {
            inner.check_workers();
        }
        self.inbox.complete()
    }

    /// `res.wait(timeout)`: wait until ready or the timeout passes.
    pub fn wait(&self, timeout: Duration) {
        if let Ok(mut inner) = lock(&self.pool) {
            let deadline = Instant::now().checked_add(timeout);
            let _ = inner.pump(deadline, |_| self.inbox.complete());
        }
    }

    /// `res.successful()`: `None` while not ready (Python raises ValueError).
    pub fn successful(&self) -> Option<bool> {
        if !self.ready() {
            return None;
        }
        let slots = self.inbox.slots.borrow();
        Some(slots.iter().all(|s| matches!(s, Slot::Arrived(Ok(_)))))
    }
}

impl<T> Drop for AsyncResult<T> {
    fn drop(&mut self) {
        self.inbox.abandon();
    }
}

/// The iterator `imap` and `imap_unordered` return.
pub struct Imap<R> {
    pool: Rc<RefCell<Inner>>,
    inbox: Rc<Inbox>,
    ordered: bool,
    /// The next slot to report, in order (`imap`).
    next_slot: usize,
    /// How many slots were reported.
    reported: usize,
    /// Items of the last slot read, not yet returned.
    ready: VecDeque<Result<R, PoolError>>,
    _r: PhantomData<R>,
}

impl<R> std::fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let left = self.inbox.len() - self.reported;
        write!(f, "Imap({left} tasks left, ordered: {})", self.ordered)
    }
}

impl<R> Imap<R> {
    pub(super) fn new(pool: &Rc<RefCell<Inner>>, inbox: Rc<Inbox>, ordered: bool) -> Self {
        Imap {
            pool: Rc::clone(pool),
            inbox,
            ordered,
            next_slot: 0,
            reported: 0,
            ready: VecDeque::new(),
            _r: PhantomData,
        }
    }

    /// The slot to report next, once it has arrived.
    fn arrived(&self) -> Option<usize> {
        if self.ordered {
            let k = self.next_slot;
            (k < self.inbox.len() && self.inbox.is_filled(k)).then_some(k)
        } else {
            self.inbox.arrivals.borrow().front().copied()
        }
    }
}

impl<R: Wire> Iterator for Imap<R> {
    type Item = Result<R, PoolError>;

    /// Every item gives a value or an error: a task that failed gives its error
    /// once for each of its items.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.reported == self.inbox.len() {
                return None;
            }
            let pumped = match lock(&self.pool) {
                Ok(mut inner) => inner.pump(None, |_| self.arrived().is_some()),
                Err(busy) => return Some(Err(busy)),
            };
            if let (Err(e), None) = (pumped, self.arrived()) {
                // A pool that breaks fails every task, so this cannot happen; if it
                // did, every item left would still get an error, and none be lost.
                self.inbox.fail_waiting(&e);
            }
            let Some(k) = self.arrived() else { continue };
            if self.ordered {
                self.next_slot += 1;
            } else {
                self.inbox.arrivals.borrow_mut().pop_front();
            }
            self.reported += 1;
            // Taken out: an imap reports each result once, and frees it as it goes.
            let slot = std::mem::replace(&mut self.inbox.slots.borrow_mut()[k], Slot::Taken);
            let items = self.inbox.items.borrow()[k];
            let outcome = match slot {
                Slot::Arrived(outcome) => outcome,
                Slot::Waiting | Slot::Taken => {
                    Err(PoolError::Codec("a result went missing".into()))
                }
            };
            match outcome.and_then(|bytes| decode::<R>(&bytes)) {
                Ok(values) => self.ready.extend(values.into_iter().map(Ok)),
                Err(e) => self.ready.extend(std::iter::repeat_n(e, items).map(Err)),
            }
        }
    }
}

impl<R> Drop for Imap<R> {
    fn drop(&mut self) {
        self.inbox.abandon();
    }
}
