//! Python's process-shared synchronisation primitives, rebuilt on Linux: the
//! mechanism behind the `mp-sync` lesson.
//!
//! | Python (`multiprocessing`) | here | waits in |
//! |---|---|---|
//! | `Event()` | [`Event`] | futex(2) on a flag |
//! | `Semaphore(n)`, `BoundedSemaphore(n)` | [`Semaphore`] | `sem_timedwait` |
//! | `Lock()` = `SemLock(SEMAPHORE, 1, 1)` | [`Semaphore::lock`] | `sem_timedwait` |
//! | `Barrier(parties)` | [`Barrier`] | futex(2) on count + generation |
//! | `Condition()` | [`Condition`] | futex(2) on a sequence number |
//!
//! Each one lives in its own shared region (`common::shm::Region`: a memfd mapped
//! `MAP_SHARED`), initialised in place when the handle is made, which must be
//! **before** the fork: the child inherits the mapping at the same address, so a
//! closure that borrows the handle works in the child too. The handle owns the
//! region; moving the handle moves a pointer, never the primitive.
//!
//! Waiting is done by the kernel, never by spinning or sleeping in a loop. A futex
//! made *without* `FUTEX_PRIVATE_FLAG` is keyed by the physical page, so a waiter
//! in one process is woken by a wake in another (futex(2)); `std::sync` uses the
//! private flag and cannot do this. The semaphore is a POSIX unnamed semaphore made
//! with `sem_init(sem, pshared = 1, value)` (sem_overview(7)), as CPython's
//! `SemLock` is (a named one, there). Every wait takes a timeout, so a peer that
//! dies or is stopped is reported instead of hanging the waiter.

pub mod barrier;
pub mod condition;
pub mod event;
pub mod futex;
pub mod procs;
pub mod rounds;
pub mod semaphore;

pub use barrier::{Barrier, BrokenBarrier};
pub use condition::{CondGuard, Condition, ConditionError};
pub use event::Event;
pub use futex::Deadline;
pub use procs::{join_all, ns_since};
pub use semaphore::{ReleasedTooManyTimes, Semaphore};
