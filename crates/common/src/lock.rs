//! A lock that works across processes: a robust, process-shared pthread mutex that
//! lives in shared memory.
//!
//! `std::sync::Mutex` cannot do this: its futex waits are `FUTEX_PRIVATE_FLAG`, keyed
//! by this process's address space, so a waiter in another process is never woken.
//! A pthread mutex made with `PTHREAD_PROCESS_SHARED` is keyed by the physical page.
//!
//! The rules (pthread_mutexattr_setpshared(3p), pthread_mutexattr_setrobust(3)):
//! initialise it **in place** inside the shared mapping, once, before forking; never
//! move or copy it (a copy is a different mutex). It is **robust**: if a process
//! dies holding it, the next `lock` does not wait forever but returns
//! [`LockError::OwnerDied`] with the lock held; the new owner repairs the data and
//! calls [`ShmGuard::mark_consistent`]. Unlocking without that makes the mutex
//! unusable for everyone ([`LockError::NotRecoverable`]).
//!
//! **A leaked guard.** While a thread holds a robust mutex, glibc links it into that
//! thread's robust list (set_robust_list(2), get_robust_list(2)), and the links live
//! *inside* the mutex: the thread's next lock or unlock of any robust mutex writes
//! there, and the kernel reads the list when the thread exits. A guard that is
//! `mem::forget`-ed keeps the mutex on the list for good, so the kit's owners of a
//! lock ([`crate::shm::Value`], [`crate::shm::Array`], [`SharedLock`]) do not unmap
//! it while a thread of this process still holds it: they leak that one mapping
//! instead. A forked child starts with an empty list (glibc clears it in the child),
//! so there the mapping is freed as usual; a thread that exits holding it hands it
//! to the next locker as [`LockError::OwnerDied`].
//!
//! **Python.** `multiprocessing.Lock` is a binary POSIX semaphore: not recursive, and
//! *any* process may release it, even one that never acquired it. `RLock` is
//! recursive and must be released by its owner. This lock is neither exactly: like
//! `RLock` only its owner releases it (dropping the guard), like `Lock` it is not
//! recursive (locking it twice from one thread is reported as
//! [`LockError::WouldDeadlock`] rather than hanging). Neither of Python's is robust:
//! a Python process killed while holding one leaves the others waiting forever.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::errno::Errno;

use crate::shm::{Region, ShmError};

/// Whether a dead holder is reported to the next locker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Robustness {
    /// `PTHREAD_MUTEX_ROBUST`: the next locker gets [`LockError::OwnerDied`].
    Robust,
    /// `PTHREAD_MUTEX_STALLED`: the next locker waits forever (use a timed attempt).
    Stalled,
}

/// A process-shared mutex. It only makes sense inside shared memory; make one with
/// [`SharedLock::new`], or inside your own [`Region`] with [`ShmMutex::init_in_place`].
#[repr(C, align(64))] // its own cache line: no false sharing with the data it guards
pub struct ShmMutex {
    raw: UnsafeCell<libc::pthread_mutex_t>,
    robust: bool,
}

// SAFETY: a pthread mutex is made to be used from many threads (and, being
// PTHREAD_PROCESS_SHARED, many processes); all access goes through pthread calls.
unsafe impl Sync for ShmMutex {}
// SAFETY: as above; it is never moved once initialised (it lives in a mapping).
unsafe impl Send for ShmMutex {}

impl fmt::Debug for ShmMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShmMutex({:p}, robust: {})", self, self.robust)
    }
}

/// Why a lock attempt did not simply succeed.
pub enum LockError<'a> {
    /// The previous owner died holding the lock. You hold it now (the guard is
    /// here); the data it protects may be half-updated. Repair it, then call
    /// [`ShmGuard::mark_consistent`].
    OwnerDied(ShmGuard<'a>),
    /// A timed attempt ran out of time.
    TimedOut,
    /// A previous owner died and the next one unlocked without marking it
    /// consistent: the mutex is permanently unusable.
    NotRecoverable,
    /// This thread already holds it; locking again would deadlock.
    WouldDeadlock,
    /// Another error from pthreads.
    Os(Errno),
}

impl fmt::Display for LockError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => {
                write!(f, "the previous owner died holding the lock (EOWNERDEAD)")
            }
            LockError::TimedOut => write!(f, "timed out waiting for the lock (ETIMEDOUT)"),
            LockError::NotRecoverable => write!(f, "the lock is not recoverable (ENOTRECOVERABLE)"),
            LockError::WouldDeadlock => write!(f, "this thread already holds the lock (EDEADLK)"),
            LockError::Os(e) => write!(f, "pthread mutex error: {e}"),
        }
    }
}

impl fmt::Debug for LockError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for LockError<'_> {}

impl ShmMutex {
    /// Initialise a mutex at `this`, in place.
    ///
    /// # Safety
    /// `this` must be valid for writes of `size_of::<ShmMutex>()` bytes, aligned to
    /// 64, inside memory that stays mapped at this address for as long as the mutex
    /// is used (by any process), and not be an initialised mutex in use. For use
    /// across processes the memory must be `MAP_SHARED` and this call must happen
    /// before the fork. A robust mutex that a thread of this process holds, even
    /// through a leaked guard, is in use: its memory must not be unmapped (module
    /// docs).
    pub unsafe fn init_in_place(this: *mut ShmMutex, robustness: Robustness) -> Result<(), Errno> {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let robust = robustness == Robustness::Robust;
        // SAFETY: attr is initialised by pthread_mutexattr_init before any other use
        // and destroyed at the end; `this` is valid for writes (caller's contract).
        unsafe {
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let a = attr.as_mut_ptr();
            let result = (|| {
                check(libc::pthread_mutexattr_setpshared(
                    a,
                    libc::PTHREAD_PROCESS_SHARED,
                ))?;
                // Error-checking: a second lock from the owning thread says EDEADLK
                // instead of hanging; an unlock by a non-owner says EPERM.
                check(libc::pthread_mutexattr_settype(
                    a,
                    libc::PTHREAD_MUTEX_ERRORCHECK,
                ))?;
                let r = if robust {
                    libc::PTHREAD_MUTEX_ROBUST
                } else {
                    libc::PTHREAD_MUTEX_STALLED
                };
                check(libc::pthread_mutexattr_setrobust(a, r))?;
                (&raw mut (*this).robust).write(robust);
                check(libc::pthread_mutex_init(
                    UnsafeCell::raw_get(&raw const (*this).raw),
                    a,
                ))
            })();
            libc::pthread_mutexattr_destroy(a);
            result
        }
    }

    /// Lock, waiting as long as it takes (but see [`LockError::OwnerDied`]): also as
    /// long as a holder that is stopped (SIGSTOP) stays stopped. For a bound, use
    /// [`ShmMutex::try_lock_for`].
    pub fn lock(&self) -> Result<ShmGuard<'_>, LockError<'_>> {
        // SAFETY: self.raw was initialised by init_in_place and never moved.
        let r = unsafe { libc::pthread_mutex_lock(self.raw.get()) };
        self.outcome(r)
    }

    /// Lock without waiting: `Err(TimedOut)` if another holder has it.
    pub fn try_lock(&self) -> Result<ShmGuard<'_>, LockError<'_>> {
        // SAFETY: as in `lock`.
        let r = unsafe { libc::pthread_mutex_trylock(self.raw.get()) };
        self.outcome(if r == libc::EBUSY { libc::ETIMEDOUT } else { r })
    }

    /// Lock, or give up after `timeout` (`lock.acquire(timeout=...)` in Python).
    /// The deadline is on the wall clock (pthread_mutex_timedlock(3p) takes a
    /// CLOCK_REALTIME time), so a clock set back during the wait lengthens it.
    pub fn try_lock_for(&self, timeout: Duration) -> Result<ShmGuard<'_>, LockError<'_>> {
        // pthread_mutex_timedlock takes an absolute CLOCK_REALTIME deadline.
        let mut now = MaybeUninit::<libc::timespec>::uninit();
        // SAFETY: clock_gettime writes one timespec into valid memory.
        let now = unsafe {
            libc::clock_gettime(libc::CLOCK_REALTIME, now.as_mut_ptr());
            now.assume_init()
        };
        let nanos = now.tv_nsec as u128 + timeout.subsec_nanos() as u128;
        let deadline = libc::timespec {
            tv_sec: now.tv_sec.saturating_add(
                timeout.as_secs().min(i32::MAX as u64) as libc::time_t
                    + (nanos / 1_000_000_000) as libc::time_t,
            ),
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: as in `lock`; `deadline` is a valid timespec.
        let r = unsafe { libc::pthread_mutex_timedlock(self.raw.get(), &deadline) };
        self.outcome(r)
    }

    pub fn is_robust(&self) -> bool {
        self.robust
    }

    /// Whether a thread of this process holds this robust mutex, also through a
    /// leaked guard: then the mutex is on that thread's robust list and its memory
    /// must stay mapped (module docs). Exact for the kit's locks: nothing can lock
    /// or unlock it while its owner is being dropped.
    pub(crate) fn held_in_this_process(&self) -> bool {
        if !self.robust {
            return false; // only robust mutexes are put on the robust list
        }
        // The futex word of a robust mutex holds its owner's thread ID (futex(2),
        // "Robust futexes"): glibc's `__lock` is the first int of pthread_mutex_t,
        // musl's `_m_lock` the second.
        const WORD: usize = if cfg!(target_env = "musl") { 1 } else { 0 };
        const FUTEX_TID_MASK: i32 = 0x3fff_ffff;
        // SAFETY: pthread_mutex_t is larger than two ints and int-aligned; pthreads
        // and the kernel change the word only atomically, so we read it atomically.
        let word = unsafe { AtomicI32::from_ptr(self.raw.get().cast::<i32>().add(WORD)) };
        let owner = word.load(Ordering::SeqCst) & FUTEX_TID_MASK;
        // tgkill(2) with signal 0 sends nothing; it succeeds only if `owner` is a
        // thread of this process (a thread of another process that happens to have
        // the same number fails it, or at worst makes us keep the mapping).
        // SAFETY: tgkill takes two IDs and a signal number and touches no memory.
        owner != 0 && unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), owner, 0) } == 0
    }

    fn outcome(&self, r: i32) -> Result<ShmGuard<'_>, LockError<'_>> {
        let guard = || ShmGuard {
            mutex: self,
            _not_send: PhantomData,
        };
        match r {
            0 => Ok(guard()),
            libc::EOWNERDEAD => Err(LockError::OwnerDied(guard())),
            libc::ETIMEDOUT => Err(LockError::TimedOut),
            libc::ENOTRECOVERABLE => Err(LockError::NotRecoverable),
            libc::EDEADLK => Err(LockError::WouldDeadlock),
            e => Err(LockError::Os(Errno::from_raw(e))),
        }
    }
}

fn check(r: i32) -> Result<(), Errno> {
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(r))
    }
}

/// Proof that you hold a [`ShmMutex`]; dropping it unlocks. Not `Send`: a pthread
/// mutex must be unlocked by the thread that locked it.
pub struct ShmGuard<'a> {
    mutex: &'a ShmMutex,
    _not_send: PhantomData<*const ()>,
}

impl ShmGuard<'_> {
    /// After [`LockError::OwnerDied`] and repairing the data: declare the state
    /// consistent again (`pthread_mutex_consistent`), so the lock stays usable.
    pub fn mark_consistent(&mut self) -> Result<(), Errno> {
        // SAFETY: we hold the mutex (this guard exists), as the call requires.
        check(unsafe { libc::pthread_mutex_consistent(self.mutex.raw.get()) })
    }
}

impl fmt::Debug for ShmGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShmGuard({:?})", self.mutex)
    }
}

impl Drop for ShmGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread holds the mutex (the guard is not Send).
        unsafe { libc::pthread_mutex_unlock(self.mutex.raw.get()) };
    }
}

/// `multiprocessing.Lock()`: a standalone [`ShmMutex`] in its own shared region.
/// Make it before forking; children use it through the inherited mapping.
pub struct SharedLock {
    region: Region,
}

impl fmt::Debug for SharedLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl SharedLock {
    pub fn new(robustness: Robustness) -> Result<SharedLock, ShmError> {
        let region = Region::with_lock(std::mem::size_of::<ShmMutex>(), "Lock()", robustness)?;
        Ok(SharedLock { region })
    }
}

impl Deref for SharedLock {
    type Target = ShmMutex;
    fn deref(&self) -> &ShmMutex {
        self.region.lock()
    }
}
