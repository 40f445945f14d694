//! The system call under [`crate::Event`], [`crate::Barrier`] and
//! [`crate::Condition`]: futex(2), shared between processes.
//!
//! `wait(word, expected, ..)` sleeps in the kernel only while `*word == expected`
//! (checked by the kernel, atomically with going to sleep), so a wake that comes
//! between our check and the call is never lost: the call returns at once. Without
//! `FUTEX_PRIVATE_FLAG`, the kernel keys the waiter by the page's physical
//! identity, not by this process's address: any process that maps the page can
//! wake it.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

/// When a wait gives up. Made from a timeout with checked arithmetic: a timeout
/// too long for the clock (`Duration::MAX`) means no deadline at all.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(timeout))
    }

    /// Time left, or `None` once the deadline has passed. A deadline that does not
    /// exist leaves a day, again and again.
    pub fn left(&self) -> Option<Duration> {
        match self.0 {
            None => Some(Duration::from_secs(86_400)),
            Some(at) => at
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero()),
        }
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

/// Sleep while `word` holds `expected`, until a [`wake`] or the deadline. A signal
/// that interrupts the sleep (EINTR) restarts it with the time left.
pub fn wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> Woke {
    loop {
        let Some(left) = deadline.left() else {
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
            Some(libc::EINTR) => continue,
            Some(libc::ETIMEDOUT) => return Woke::TimedOut,
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
