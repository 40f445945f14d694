//! What a forked child tells its parent, through memory both of them map rather
//! than through a pipe: that it has set its parent-death signal (a *start word*
//! the parent waits on), and, if its closure panicked, the message.
//!
//! A pipe per child costs a `pipe2`, a `write`, `read`s and two `close`s, and the
//! parent must wake up to a pipe event: about 20 us of a 130 us start
//! (`cargo bench -p start-methods`). A word in shared memory costs the child one
//! store, and the parent one load per look.
//!
//! Each process that forks maps, once, an arena of [`SLOTS`] page-sized slots
//! with `mmap(MAP_SHARED | MAP_ANONYMOUS)` (shared, unlike `MAP_PRIVATE`: the
//! child's stores reach the parent). A child gets a free slot before the fork and
//! gives it back when it is reaped. With every slot taken (more than [`SLOTS`]
//! children alive and unjoined), a child gets a page of its own, unmapped when it
//! is reaped. The arena is never unmapped: 256 KiB of address space, of which
//! only the pages used are ever allocated.
//!
//! A forked child inherits the mapping, but it is the parent's: a child that forks
//! children of its own maps an arena of its own (the arena records the PID that
//! made it).
//!
//! The parent spins on the start word for a moment, then sleeps on it with
//! futex(2) (`FUTEX_WAIT`, not the private variant: the word is shared between
//! processes). It sets the word to [`SLEEPING`] first, so the child knows to
//! `FUTEX_WAKE` it: a child whose parent did not sleep makes no system call.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How many slots the arena has: one bit each in [`USED`].
pub(crate) const SLOTS: usize = 64;

/// The longest panic message that comes back (longer ones are cut).
pub(crate) const MESSAGE_MAX: usize = 4000;

/// The start word: the child has not said it started...
const NOT_YET: u32 = 0;
/// ...and its parent sleeps on the word (it must be woken)...
const SLEEPING: u32 = 1;
/// ...or the child has set its parent-death signal.
const STARTED: u32 = 2;

/// One child's page. Only atomics: two processes use it at once.
#[repr(C, align(4096))]
struct Slot {
    word: AtomicU32,
    /// The PID of the process that wrote the message: a message is taken only
    /// from the child itself, never from a copy the child forked by hand.
    writer: AtomicI32,
    len: AtomicU32,
    message: [AtomicU8; MESSAGE_MAX],
}

const PAGE: usize = std::mem::size_of::<Slot>();

/// The arena of this process: its first slot, and the PID that mapped it.
static ARENA: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());
static OWNER: AtomicI32 = AtomicI32::new(0);
/// Which slots of the arena are taken (bit i: slot i).
static USED: AtomicU64 = AtomicU64::new(0);

/// A child's slot, held by its parent's [`crate::process::Child`].
#[derive(Debug)]
pub(crate) struct Report {
    slot: NonNull<Slot>,
    /// The arena and index it came from, or `None` for a page of its own.
    from: Option<(NonNull<Slot>, u32)>,
}

// SAFETY: the slot is only touched through atomics, and stays mapped as long as
// the `Report` lives (an arena is never unmapped; an own page is unmapped only
// by the `Report`'s drop). So any thread may hold and use it.
unsafe impl Send for Report {}
// SAFETY: as above: shared access is through atomics only.
unsafe impl Sync for Report {}

impl Report {
    /// A cleared slot for the next child of process `me` (the caller's PID).
    pub(crate) fn new(me: i32) -> Result<Report, nix::errno::Errno> {
        let report = match arena(me)?.and_then(take_slot) {
            Some(report) => report,
            None => own_page()?,
        };
        let slot = report.slot();
        slot.word.store(NOT_YET, Ordering::Relaxed);
        slot.writer.store(0, Ordering::Relaxed);
        slot.len.store(0, Ordering::Release);
        Ok(report)
    }

    fn slot(&self) -> &Slot {
        // SAFETY: the slot is mapped while `self` lives (see `Send` above), and
        // all of its fields are atomics, valid for any bytes (a fresh mapping is
        // zeroed).
        unsafe { self.slot.as_ref() }
    }

    /// In the child: say that the parent-death signal is set.
    pub(crate) fn say_started(&self) {
        let word = &self.slot().word;
        if word.swap(STARTED, Ordering::Release) == SLEEPING {
            futex_wake(word);
        }
    }

    /// In the parent: has the child said it started?
    pub(crate) fn started(&self) -> bool {
        self.slot().word.load(Ordering::Acquire) == STARTED
    }

    /// In the parent: sleep until the child says it started, or `timeout` passes
    /// (or a signal arrives); the caller looks again.
    pub(crate) fn sleep_until_started(&self, timeout: Duration) {
        let word = &self.slot().word;
        let asleep = word.compare_exchange(NOT_YET, SLEEPING, Ordering::Acquire, Ordering::Acquire);
        if matches!(asleep, Ok(_) | Err(SLEEPING)) {
            futex_wait(word, SLEEPING, timeout);
        }
    }

    /// In the child: leave the panic message for the parent (cut to
    /// [`MESSAGE_MAX`] bytes, perhaps inside a character).
    pub(crate) fn write_message(&self, message: &str) {
        let slot = self.slot();
        let bytes = &message.as_bytes()[..message.len().min(MESSAGE_MAX)];
        for (to, from) in slot.message.iter().zip(bytes) {
            to.store(*from, Ordering::Relaxed);
        }
        slot.len.store(bytes.len() as u32, Ordering::Release);
        slot.writer
            .store(std::process::id() as i32, Ordering::Release);
    }

    /// In the parent, once child `pid` has ended: its panic message, if it left
    /// one.
    pub(crate) fn message(&self, pid: i32) -> Option<String> {
        let slot = self.slot();
        if slot.writer.load(Ordering::Acquire) != pid {
            return None;
        }
        let len = (slot.len.load(Ordering::Acquire) as usize).min(MESSAGE_MAX);
        let bytes: Vec<u8> = slot.message[..len]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Drop for Report {
    /// Give the slot back (the caller drops a `Report` only once its child is
    /// reaped: no process writes to it any more), or unmap the own page.
    fn drop(&mut self) {
        match self.from {
            // Only into the arena it came from: a forked copy of the parent that
            // made an arena of its own must not free that arena's slot i.
            Some((base, i)) => {
                if ARENA.load(Ordering::Acquire) == base.as_ptr() {
                    USED.fetch_and(!(1u64 << i), Ordering::AcqRel);
                }
            }
            // SAFETY: the page was mapped by `own_page` for this `Report` alone,
            // and nothing refers to it once the `Report` is gone.
            None => unsafe {
                libc::munmap(self.slot.as_ptr().cast(), PAGE);
            },
        }
    }
}

/// This process's arena, mapped on first use (and again in a forked child, whose
/// inherited arena is its parent's). `None` if it cannot be mapped.
fn arena(me: i32) -> Result<Option<NonNull<Slot>>, nix::errno::Errno> {
    if OWNER.load(Ordering::Acquire) == me {
        return Ok(NonNull::new(ARENA.load(Ordering::Acquire)));
    }
    let base = map(SLOTS * PAGE)?;
    // `fork` runs only while the process has one thread, so no other thread
    // maps an arena at the same time.
    USED.store(0, Ordering::Release);
    ARENA.store(base.as_ptr(), Ordering::Release);
    OWNER.store(me, Ordering::Release);
    Ok(Some(base))
}

fn take_slot(base: NonNull<Slot>) -> Option<Report> {
    let mut used = USED.load(Ordering::Acquire);
    loop {
        let i = (!used).trailing_zeros();
        if i as usize >= SLOTS {
            return None;
        }
        match USED.compare_exchange(used, used | 1 << i, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // SAFETY: i < SLOTS, so the slot lies inside the arena.
                let slot = unsafe { base.add(i as usize) };
                return Some(Report {
                    slot,
                    from: Some((base, i)),
                });
            }
            Err(now) => used = now,
        }
    }
}

fn own_page() -> Result<Report, nix::errno::Errno> {
    Ok(Report {
        slot: map(PAGE)?,
        from: None,
    })
}

/// `len` bytes of zeroed memory shared with children forked later.
fn map(len: usize) -> Result<NonNull<Slot>, nix::errno::Errno> {
    // SAFETY: a fresh anonymous mapping at an address the kernel picks: it
    // aliases nothing in this process.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(nix::errno::Errno::last());
    }
    NonNull::new(p.cast()).ok_or(nix::errno::Errno::ENOMEM)
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(3600) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the u32 at a valid address and sleeps while it
    // equals `expected`, at most `ts`; it writes no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE takes the word's address and a count; it touches no
    // memory.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}
