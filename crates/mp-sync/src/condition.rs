//! `multiprocessing.Condition`: wait, with a lock held, until a predicate on
//! shared state holds; whoever changes that state notifies.
//!
//! The lock is the course's process-shared pthread mutex (`common::lock::ShmMutex`,
//! here not robust: Python's is not either). Beside it sits a sequence number, the
//! futex word: [`CondGuard::notify_all`] bumps it and wakes the sleepers. A waiter
//! reads the number *while it holds the lock*, unlocks, and sleeps only while the
//! number is unchanged, so a notify that comes between the unlock and the sleep
//! is not lost: the futex call sees the new number and returns at once.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use common::lock::{Robustness, ShmGuard, ShmMutex};
use common::shm::{Region, ShmError};

use crate::futex::{self, Deadline, Woke};

/// The layout in the region: the lock (64-byte aligned), then the sequence number.
#[repr(C)]
struct Slot {
    lock: ShmMutex,
    seq: AtomicU32,
}

/// A process-shared condition variable with its own lock. Make it before forking.
pub struct Condition {
    region: Region,
}

/// Why the condition's lock could not be taken (or taken back after a wait).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError(pub String);

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "condition's lock: {}", self.0)
    }
}

impl std::error::Error for ConditionError {}

impl Condition {
    pub fn new() -> Result<Condition, ShmError> {
        let region = Region::new(size_of::<Slot>(), "Condition()")?;
        let slot = region.as_ptr().cast::<Slot>();
        // A fresh, page-aligned (so 64-aligned) MAP_SHARED region big enough for a
        // Slot, not yet shared: the mutex is made in place before any fork and never
        // moves. Not robust: no robust list ever points into the region, so
        // unmapping it with `self` is always fine; `seq` is zero, a valid AtomicU32.
        // SAFETY: as above.
        unsafe { ShmMutex::init_in_place(&raw mut (*slot).lock, Robustness::Stalled) }.map_err(
            |e| ShmError::Os {
                call: "pthread_mutex_init",
                what: "Condition()".into(),
                error: e.into(),
            },
        )?;
        Ok(Condition { region })
    }

    fn slot(&self) -> &Slot {
        // SAFETY: the region holds a Slot initialised in `new`; both fields change
        // only through their own interior mutability (pthread calls, atomics).
        unsafe { &*self.region.as_ptr().cast::<Slot>() }
    }

    /// `with cond:` — take the lock, waiting at most `timeout`.
    pub fn acquire(&self, timeout: Duration) -> Result<CondGuard<'_>, ConditionError> {
        let guard = self.lock_within(timeout)?;
        Ok(CondGuard {
            cond: self,
            guard: Some(guard),
        })
    }

    fn lock_within(&self, timeout: Duration) -> Result<ShmGuard<'_>, ConditionError> {
        self.slot()
            .lock
            .try_lock_for(timeout)
            .map_err(|e| ConditionError(e.to_string()))
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition(seq: {})", self.slot().seq.load(SeqCst))
    }
}

/// The condition's lock, held. Dropping it releases the lock.
pub struct CondGuard<'a> {
    cond: &'a Condition,
    /// `None` only after a failed re-lock (then there is nothing to unlock).
    guard: Option<ShmGuard<'a>>,
}

impl CondGuard<'_> {
    /// `cond.wait_for(predicate, timeout)`: true once `predicate` holds (checked
    /// with the lock held), false if `timeout` passed first. Between checks the
    /// lock is released and the process sleeps until a notify. Taking the lock back
    /// is bounded too, by what is left of `timeout` and at least `relock`: an
    /// error then (a holder that is stopped or died), never a hang.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        relock: Duration,
        mut predicate: impl FnMut() -> bool,
    ) -> Result<bool, ConditionError> {
        let deadline = Deadline::after(timeout);
        let seq = &self.cond.slot().seq;
        loop {
            if self.guard.is_none() {
                return Err(ConditionError("not held".into()));
            }
            if predicate() {
                return Ok(true);
            }
            let seen = seq.load(SeqCst); // read while holding the lock
            self.guard = None; // unlock
            let woke = futex::wait(seq, seen, &deadline);
            let bound = deadline.left().unwrap_or_default().max(relock);
            self.guard = Some(self.cond.lock_within(bound)?);
            // A notifier that holds the lock a while is no stop of ours.
            deadline.excuse();
            if woke == Woke::TimedOut {
                return Ok(predicate());
            }
        }
    }

    /// `cond.notify_all()`: wake every process waiting on this condition.
    pub fn notify_all(&self) -> usize {
        let seq = &self.cond.slot().seq;
        seq.fetch_add(1, SeqCst);
        futex::wake_all(seq)
    }

    /// `cond.notify()`: wake one waiter.
    pub fn notify(&self) -> usize {
        let seq = &self.cond.slot().seq;
        seq.fetch_add(1, SeqCst);
        futex::wake(seq, 1)
    }
}

impl fmt::Debug for CondGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CondGuard(held: {})", self.guard.is_some())
    }
}
