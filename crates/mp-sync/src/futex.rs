//! The system call under [`crate::Event`], [`crate::Barrier`] and
//! [`crate::Condition`]: futex(2), shared between processes.
//!
//! `wait(word, expected, ..)` sleeps in the kernel only while `*word == expected`
//! (checked by the kernel, atomically with going to sleep), so a wake that comes
//! between our check and the call is never lost: the call returns at once. Without
//! `FUTEX_PRIVATE_FLAG`, the kernel keys the waiter by the page's physical
//! identity, not by this process's address: any process that maps the page can
//! wake it.

use std::cell::Cell;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

/// When a wait gives up. Made from a timeout with checked arithmetic: a timeout
/// too long for the clock (`Duration::MAX`) means no deadline at all.
///
/// Unlike Python's timeouts, it leaves out time this process spends stopped
/// (Ctrl-Z, then `fg`): every look at it ([`Deadline::left`]) that comes far
/// later than the wait since the last one explains moves the end on by that
/// much, as `common::process::Deadline` does. [`wait`] sleeps in slices of at
/// most [`SLICE`], so it is looked at often. A learner who pauses a lesson
/// gets no broken barrier for it; a peer that is stopped alone still does.
#[derive(Debug)]
pub struct Deadline {
    end: Cell<Option<Instant>>,
    /// When it was last looked at, and how long the wait since then was meant
    /// to take.
    seen: Cell<Instant>,
    slept: Cell<Duration>,
}

/// The longest single sleep of a [`wait`].
pub const SLICE: Duration = Duration::from_millis(100);

impl Deadline {
    pub fn after(timeout: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            end: Cell::new(now.checked_add(timeout)),
            seen: Cell::new(now),
            slept: Cell::new(Duration::ZERO),
        }
    }

    /// Time left, or `None` once the deadline has passed. A deadline that does not
    /// exist leaves a day, again and again.
    pub fn left(&self) -> Option<Duration> {
        let now = Instant::now();
        let late = (now - self.seen.get()).saturating_sub(self.slept.get());
        if late > SLICE {
            let end = self.end.get();
            self.end.set(end.map(|e| e.checked_add(late).unwrap_or(e)));
        }
        self.seen.set(now);
        self.slept.set(Duration::ZERO);
        match self.end.get() {
            None => Some(Duration::from_secs(86_400)),
            Some(at) => at.checked_duration_since(now).filter(|d| !d.is_zero()),
        }
    }

    /// The time since the last look was spent in a wait of its own (taking a
    /// lock back, bounded by itself): it does not move the end.
    pub(crate) fn excuse(&self) {
        self.seen.set(Instant::now());
        self.slept.set(Duration::ZERO);
    }

    /// The next sleep: what is left, at most [`SLICE`]; `None` once passed.
    pub(crate) fn slice(&self) -> Option<Duration> {
        let slice = self.left()?.min(SLICE);
        self.slept.set(slice);
        Some(slice)
    }
}

/// How a [`wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// Woken, or the word no longer held `expected`: look again.
    LookAgain,
    /// The deadline passed.
    TimedOut,
}

/// Sleep while `word` holds `expected`, until a [`wake`] or the deadline, in
/// slices of at most [`SLICE`]. A signal that interrupts the sleep (EINTR)
/// restarts it with the time left.
pub fn wait(word: &AtomicU32, expected: u32, deadline: &Deadline) -> Woke {
    loop {
        let Some(left) = deadline.slice() else {
            return Woke::TimedOut;
        };
        // FUTEX_WAIT's timeout is relative, measured on CLOCK_MONOTONIC (futex(2)),
        // the clock of `Instant`. Seconds beyond time_t cannot occur: `left` is at
        // most what `Instant` can hold.
        let timeout = libc::timespec {
            tv_sec: left.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // FUTEX_WAIT without FUTEX_PRIVATE_FLAG: the shared form, which works across
        // processes. `timeout` is a valid timespec (nanoseconds below 10^9).
        // SAFETY: `word` is a valid, aligned u32 for the call (we hold a reference);
        // the kernel only reads it, atomically.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &raw const timeout,
            )
        };
        if r == 0 {
            return Woke::LookAgain;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            // The slice ended: the loop looks at the deadline again.
            Some(libc::EINTR | libc::ETIMEDOUT) => continue,
            // EAGAIN: the word had changed already. Nothing else can happen for a
            // valid word; if it did, the caller looks again and its deadline holds.
            _ => return Woke::LookAgain,
        }
    }
}

/// Wake up to `n` processes (or threads) sleeping in [`wait`] on `word`; returns
/// how many were woken.
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: FUTEX_WAKE only uses the address as a key; `word` is valid.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    r.max(0) as usize
}

/// Wake every waiter on `word`.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, u32::MAX)
}
