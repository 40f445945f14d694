//! `multiprocessing.Barrier(parties)`: each process waits until all `parties` have
//! arrived; then all go on together, into the next phase.
//!
//! The whole state is one `u32`, which is also the futex word:
//!
//! ```text
//! bit 31: broken    bits 16..31: generation (phase)    bits 0..16: arrived
//! ```
//!
//! An arrival is one compare-and-swap on that word. The last arrival sets
//! `arrived` to 0 and bumps the generation in the same swap, then wakes everyone;
//! a waiter leaves when it sees the generation change. One word means no moment
//! where the count is reset but the phase is not, which a late arrival could
//! mistake for its own phase being over.
//!
//! **Broken.** A wait that times out breaks the barrier, as Python's does: every
//! waiter, and every later `wait`, gets [`BrokenBarrier`] (Python's
//! `BrokenBarrierError`). That is how the others learn that a party died: it never
//! arrives, one of them times out, and all of them are told.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use common::shm::{Region, ShmError};

use crate::futex::{self, Deadline, Woke};

const BROKEN: u32 = 1 << 31;
const COUNT: u32 = 0xffff;
const GENERATIONS: u32 = 0x7fff;

fn generation(word: u32) -> u32 {
    (word >> 16) & GENERATIONS
}

/// Why a [`Barrier::wait`] did not pass: Python's `BrokenBarrierError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenBarrier {
    /// This wait timed out, and broke the barrier for everyone.
    TimedOut,
    /// Another party broke it (its wait timed out, or [`Barrier::abort`]).
    Broken,
}

impl fmt::Display for BrokenBarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokenBarrier::TimedOut => write!(f, "BrokenBarrierError (my wait timed out)"),
            BrokenBarrier::Broken => write!(f, "BrokenBarrierError (broken by another)"),
        }
    }
}

impl std::error::Error for BrokenBarrier {}

/// A process-shared barrier for up to 65 535 parties. Make it before forking.
pub struct Barrier {
    region: Region,
    parties: u32,
}

impl Barrier {
    /// A barrier for `parties` processes (1 to 65 535).
    pub fn new(parties: u32) -> Result<Barrier, ShmError> {
        if parties == 0 || parties > COUNT {
            return Err(ShmError::TooLarge {
                what: format!("Barrier({parties})"),
                reason: "a barrier has 1 to 65535 parties".into(),
            });
        }
        Ok(Barrier {
            region: Region::new(size_of::<AtomicU32>(), "Barrier()")?,
            parties,
        })
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: the region is page-aligned, at least 4 bytes, zero-filled (phase
        // 0, nobody arrived, not broken), lives as long as `self`, and is only
        // changed atomically.
        unsafe { &*self.region.as_ptr().cast::<AtomicU32>() }
    }

    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// `barrier.wait(timeout)`: arrive, and wait until all parties have. Returns
    /// this process's arrival index in the phase (0 for the first, as Python's).
    pub fn wait(&self, timeout: Duration) -> Result<u32, BrokenBarrier> {
        let deadline = Deadline::after(timeout);
        let word = self.word();
        let mut seen = word.load(SeqCst);
        // Arrive: one compare-and-swap.
        let (phase, index) = loop {
            if seen & BROKEN != 0 {
                return Err(BrokenBarrier::Broken);
            }
            let (phase, arrived) = (generation(seen), seen & COUNT);
            let last = arrived + 1 == self.parties;
            let next = match last {
                true => ((phase + 1) & GENERATIONS) << 16, // next phase, nobody in it
                false => seen + 1,
            };
            match word.compare_exchange(seen, next, SeqCst, SeqCst) {
                Ok(_) if last => {
                    futex::wake_all(word);
                    return Ok(arrived);
                }
                Ok(_) => break (phase, arrived),
                Err(now) => seen = now,
            }
        };
        // Wait for the phase to end, or for the barrier to break.
        loop {
            let now = word.load(SeqCst);
            if generation(now) != phase {
                return Ok(index);
            }
            if now & BROKEN != 0 {
                return Err(BrokenBarrier::Broken);
            }
            if futex::wait(word, now, &deadline) == Woke::TimedOut {
                return self.break_phase(phase).map(|()| index);
            }
        }
    }

    /// Our wait timed out in `phase`: break the barrier, unless the phase ended
    /// meanwhile (then we passed, just late).
    fn break_phase(&self, phase: u32) -> Result<(), BrokenBarrier> {
        let word = self.word();
        let mut now = word.load(SeqCst);
        loop {
            if generation(now) != phase {
                return Ok(());
            }
            if now & BROKEN != 0 {
                return Err(BrokenBarrier::Broken);
            }
            match word.compare_exchange(now, now | BROKEN, SeqCst, SeqCst) {
                Ok(_) => {
                    futex::wake_all(word);
                    return Err(BrokenBarrier::TimedOut);
                }
                Err(changed) => now = changed,
            }
        }
    }

    /// `barrier.abort()`: break it now; every waiter gets [`BrokenBarrier::Broken`].
    pub fn abort(&self) {
        self.word().fetch_or(BROKEN, SeqCst);
        futex::wake_all(self.word());
    }

    /// `barrier.broken`.
    pub fn is_broken(&self) -> bool {
        self.word().load(SeqCst) & BROKEN != 0
    }

    /// `barrier.n_waiting`: how many have arrived in the current phase.
    pub fn n_waiting(&self) -> u32 {
        self.word().load(SeqCst) & COUNT
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.word().load(SeqCst);
        write!(f, "Barrier(parties: {}, word: {w:#x})", self.parties)
    }
}
