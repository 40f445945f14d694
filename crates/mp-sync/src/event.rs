//! `multiprocessing.Event`: a flag that processes wait for, set once for all of
//! them.
//!
//! The flag is one `u32` in shared memory, 0 (clear) or 1 (set), and it is also the
//! futex word: [`Event::wait`] sleeps in the kernel while it reads 0, and
//! [`Event::set`] stores 1 and wakes every sleeper with one FUTEX_WAKE.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use common::shm::{Region, ShmError};

use crate::futex::{self, Deadline, Woke};

/// A process-shared event. Make it before forking; children use it through the
/// inherited mapping.
pub struct Event {
    region: Region,
}

impl Event {
    /// A clear event (a fresh region is zero-filled: 0 is "clear").
    pub fn new() -> Result<Event, ShmError> {
        Ok(Event {
            region: Region::new(size_of::<AtomicU32>(), "Event()")?,
        })
    }

    fn flag(&self) -> &AtomicU32 {
        // SAFETY: the region is page-aligned, at least 4 bytes, zero-filled (a valid
        // AtomicU32), lives as long as `self`, and is only changed atomically.
        unsafe { &*self.region.as_ptr().cast::<AtomicU32>() }
    }

    /// `event.set()`: set the flag and wake every process waiting for it. Returns
    /// how many the kernel woke (waiters about to sleep see the flag instead).
    pub fn set(&self) -> usize {
        self.flag().store(1, SeqCst);
        futex::wake_all(self.flag())
    }

    /// `event.clear()`.
    pub fn clear(&self) {
        self.flag().store(0, SeqCst);
    }

    /// `event.is_set()`.
    pub fn is_set(&self) -> bool {
        self.flag().load(SeqCst) == 1
    }

    /// `event.wait(timeout)`: true once the flag is set, false if `timeout` passed
    /// first.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Deadline::after(timeout);
        while !self.is_set() {
            if futex::wait(self.flag(), 0, &deadline) == Woke::TimedOut {
                return self.is_set();
            }
        }
        true
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Event(set: {})", self.is_set())
    }
}
