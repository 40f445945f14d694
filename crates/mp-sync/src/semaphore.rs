//! `multiprocessing.Semaphore`, `BoundedSemaphore` and `Lock`: a POSIX unnamed
//! semaphore, `sem_init(sem, pshared = 1, value)`, in shared memory.
//!
//! CPython's are the same kernel object, named: `class Lock(SemLock)` is
//! `SemLock(SEMAPHORE, 1, 1)` (Lib/multiprocessing/synchronize.py), a semaphore of
//! one. So **any** process may release a `Lock`, also one that never acquired it,
//! and nobody is told when its holder dies: the count stays 0 for good. Compare the
//! course's robust mutex (`common::lock`): only its owner unlocks it, and the next
//! locker learns of a dead owner (EOWNERDEAD).
//!
//! `sem_timedwait` takes an absolute deadline on CLOCK_REALTIME (sem_timedwait(3)),
//! so a wall clock set back during a wait lengthens it.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

use common::shm::{Region, ShmError};

/// A process-shared counting semaphore. Make it before forking.
pub struct Semaphore {
    region: Region,
    /// `release` refuses to raise the count to this or past it (CPython's
    /// `maxvalue`: 1 for `Lock`, the start value for `BoundedSemaphore`).
    max: u32,
}

/// `ValueError: semaphore or lock released too many times`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleasedTooManyTimes;

impl fmt::Display for ReleasedTooManyTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueError: semaphore or lock released too many times")
    }
}

impl std::error::Error for ReleasedTooManyTimes {}

impl Semaphore {
    /// `Semaphore(value)`: no bound but the system's (SEM_VALUE_MAX).
    pub fn new(value: u32) -> Result<Semaphore, ShmError> {
        Semaphore::make(value, i32::MAX as u32, "Semaphore()")
    }

    /// `BoundedSemaphore(value)`: releasing past `value` is an error.
    pub fn bounded(value: u32) -> Result<Semaphore, ShmError> {
        Semaphore::make(value, value, "BoundedSemaphore()")
    }

    /// `Lock()`: a bounded semaphore of one. Not recursive, not robust, and any
    /// process may release it.
    pub fn lock() -> Result<Semaphore, ShmError> {
        Semaphore::make(1, 1, "Lock()")
    }

    fn make(value: u32, max: u32, what: &str) -> Result<Semaphore, ShmError> {
        let region = Region::new(size_of::<libc::sem_t>(), what)?;
        // pshared = 1: processes forked later use it. It never moves (the region
        // does not), and lives until the region is unmapped.
        // SAFETY: a fresh, page-aligned MAP_SHARED region of at least
        // size_of::<sem_t>() bytes, not yet seen by any other process.
        let r = unsafe { libc::sem_init(region.as_ptr().cast(), 1, value) };
        if r != 0 {
            return Err(ShmError::Os {
                call: "sem_init",
                what: what.to_string(),
                error: io::Error::last_os_error(),
            });
        }
        // glibc's sem_destroy does nothing for an unnamed semaphore, so dropping
        // the region (unmapping it) is all the clean-up there is.
        Ok(Semaphore { region, max })
    }

    fn sem(&self) -> *mut libc::sem_t {
        self.region.as_ptr().cast()
    }

    /// `acquire(timeout=...)`: true once a unit was taken, false if `timeout`
    /// passed first. It waits in slices of at most 100 ms, so that time this
    /// process spends stopped is left out (see [`crate::Deadline`]); a signal
    /// (EINTR) just ends a slice.
    pub fn acquire(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = crate::Deadline::after(timeout);
        loop {
            let Some(slice) = deadline.slice() else {
                // One last try, as CPython's acquire(timeout=0) makes its only one.
                return Ok(self.try_acquire());
            };
            let until = realtime_deadline(slice);
            // SAFETY: the semaphore was initialised in `make` and never moves;
            // `until` is a valid timespec.
            if unsafe { libc::sem_timedwait(self.sem(), &until) } == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR | libc::ETIMEDOUT) => continue,
                _ => return Err(e),
            }
        }
    }

    /// `acquire(block=False)`.
    pub fn try_acquire(&self) -> bool {
        // SAFETY: as in `acquire`.
        unsafe { libc::sem_trywait(self.sem()) == 0 }
    }

    /// `release()`, from any process. Refused when the count is already at its
    /// bound; like CPython's check (sem_getvalue, then sem_post), it is not atomic.
    pub fn release(&self) -> Result<(), ReleasedTooManyTimes> {
        // A count that cannot be read is not below the bound: refuse.
        if !self.value().is_ok_and(|v| v < self.max) {
            return Err(ReleasedTooManyTimes);
        }
        // SAFETY: as in `acquire`. sem_post fails only past SEM_VALUE_MAX (EOVERFLOW).
        match unsafe { libc::sem_post(self.sem()) } {
            0 => Ok(()),
            _ => Err(ReleasedTooManyTimes),
        }
    }

    /// The count now (`sem_getvalue`): units left.
    pub fn value(&self) -> io::Result<u32> {
        let mut v = MaybeUninit::<libc::c_int>::uninit();
        // SAFETY: as in `acquire`; `v` is valid for the write.
        if unsafe { libc::sem_getvalue(self.sem(), v.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sem_getvalue returned 0, so it wrote the count into `v`.
        let v = unsafe { v.assume_init() };
        Ok(v.max(0) as u32)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value() {
            Ok(v) => write!(f, "Semaphore(value: {v}, max: {})", self.max),
            Err(e) => write!(f, "Semaphore(value: unreadable ({e}), max: {})", self.max),
        }
    }
}

/// Now plus `timeout` on CLOCK_REALTIME, as `sem_timedwait` wants it. A timeout
/// longer than a century is a century (no wait needs more, and the sum stays far
/// from `time_t`'s end); the sum is checked all the same.
fn realtime_deadline(timeout: Duration) -> libc::timespec {
    let timeout = timeout.min(Duration::from_secs(100 * 365 * 86_400));
    let mut now = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: clock_gettime writes one timespec into valid memory; CLOCK_REALTIME
    // always exists, so it cannot fail.
    let now = unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, now.as_mut_ptr());
        now.assume_init()
    };
    let nanos = now.tv_nsec as u32 + timeout.subsec_nanos(); // < 2 * 10^9: fits
    let secs = libc::time_t::try_from(timeout.as_secs())
        .ok()
        .and_then(|s| s.checked_add(now.tv_sec))
        .and_then(|s| s.checked_add((nanos / 1_000_000_000) as libc::time_t));
    match secs {
        Some(tv_sec) => libc::timespec {
            tv_sec,
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        },
        None => libc::timespec {
            tv_sec: libc::time_t::MAX,
            tv_nsec: 0,
        },
    }
}
