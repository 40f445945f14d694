//! What a forked child tells its parent, through memory both of them map rather
//! than through a pipe: that it has set its parent-death signal (a *start word*
//! the parent waits on), and, if its closure panicked, the message.
//!
//! A pipe per child costs a `pipe2`, a `write`, `read`s and two `close`s, and the
//! parent must wake up to a pipe event. A word in shared memory costs the child
//! one store (and one page fault: fork copies no page-table entries of a shared
//! mapping), and the parent one load per look. Together with the thread check
//! (process.rs), that took the kit's fork + join from 1.39-1.45x a bare fork to
//! 1.20-1.29x (`cargo bench -p start-methods`, docs/benchmarks.md).
//!
//! Each process that forks maps, once, an arena of [`SLOTS`] page-sized slots
//! with `mmap(MAP_SHARED | MAP_ANONYMOUS)` (shared, unlike `MAP_PRIVATE`: the
//! child's stores reach the parent). A child gets a free slot before the fork and
//! gives it back when it is reaped. With every slot taken (more than [`SLOTS`]
//! children alive and unjoined), or no room for an arena (`ulimit -v`), a child
//! gets a page of its own, unmapped when it is reaped. The arena is never
//! unmapped: 256 KiB of address space, of which only the pages used are ever
//! allocated.
//!
//! **Whose arena.** A forked child inherits the mapping, but it is the parent's:
//! a child that forks children of its own needs an arena of its own. The record
//! of the arena and of its free slots (a [`Book`]) lives in a private page marked
//! `MADV_WIPEONFORK`: every child, however it was forked (by the kit or by a bare
//! `fork(2)`), sees that page zeroed (madvise(2): "the child process will see the
//! memory in this range as if it had been freshly allocated"), so it knows it has
//! no arena yet. And since fork does not copy that page, it does not make it
//! copy-on-write in the parent either: the parent's next store to it costs no
//! page fault (a page the parent shares copy-on-write with a child faults on its
//! parent's first write after every fork).
//!
//! **Whose message.** Only the child itself writes a panic message: a copy the
//! child's closure forks by hand runs the kit's child code too, after its
//! closure, and by then the parent may have given the slot to another child. The
//! child notes its PID before the closure and writes only if it still has it.
//!
//! The parent spins on the start word for a moment, then sleeps on it with
//! futex(2) (`FUTEX_WAIT`, not the private variant: the word is shared between
//! processes). It sets the word to [`SLEEPING`] first, so the child knows to
//! `FUTEX_WAKE` it: a child whose parent did not sleep makes no system call.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};
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
    /// 1 once the child has written a message (perhaps an empty one).
    written: AtomicU32,
    len: AtomicU32,
    message: [AtomicU8; MESSAGE_MAX],
}

const PAGE: usize = std::mem::size_of::<Slot>();

/// This process's arena and which of its slots are taken. Lives in a page of
/// its own, wiped in every forked child (module docs).
#[repr(C)]
struct Book {
    /// The arena's first slot; null until this process maps one.
    arena: AtomicPtr<Slot>,
    /// Which slots of the arena are taken (bit i: slot i).
    used: AtomicU64,
}

/// The book's page: mapped on the first fork, and inherited as a zeroed page
/// (the pointer here is copied, the page under it wiped).
static BOOK: AtomicPtr<Book> = AtomicPtr::new(std::ptr::null_mut());

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
    /// A cleared slot for the next child of this process.
    pub(crate) fn new() -> Result<Report, nix::errno::Errno> {
        let report = match book().and_then(take_slot) {
            Some(report) => report,
            None => own_page()?,
        };
        let slot = report.slot();
        slot.word.store(NOT_YET, Ordering::Relaxed);
        slot.written.store(0, Ordering::Relaxed);
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
        slot.written.store(1, Ordering::Release);
    }

    /// In the parent, once the child has ended: its panic message, if it left
    /// one.
    pub(crate) fn message(&self) -> Option<String> {
        let slot = self.slot();
        if slot.written.load(Ordering::Acquire) != 1 {
            return None;
        }
        let len = (slot.len.load(Ordering::Acquire) as usize).min(MESSAGE_MAX);
        let bytes: Vec<u8> = slot.message[..len]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        Some(String::from_utf8_lossy(&bytes).into_owned())
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
                if let Some(book) = book_page() {
                    if book.arena.load(Ordering::Acquire) == base.as_ptr() {
                        book.used.fetch_and(!(1u64 << i), Ordering::AcqRel);
                    }
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

/// This process's book, with an arena, mapped on first use (and again in a
/// forked child, which sees its parent's book wiped). `None` if either cannot be
/// mapped (`ulimit -v`), or the kernel has no `MADV_WIPEONFORK` (before Linux
/// 4.14): every child then gets a page of its own.
fn book() -> Option<&'static Book> {
    let book = match book_page() {
        Some(book) => book,
        None => {
            let page = map(std::mem::size_of::<Book>(), libc::MAP_PRIVATE).ok()?;
            // SAFETY: madvise on a mapping we just made and own; it changes only
            // what a child inherits of it.
            if unsafe { libc::madvise(page.as_ptr().cast(), PAGE, libc::MADV_WIPEONFORK) } != 0 {
                // SAFETY: the page was mapped just above, and nothing refers to it.
                unsafe { libc::munmap(page.as_ptr().cast(), PAGE) };
                return None;
            }
            // `fork` runs only while the process has one thread, so no other
            // thread maps a book at the same time.
            BOOK.store(page.as_ptr().cast(), Ordering::Release);
            book_page()?
        }
    };
    if book.arena.load(Ordering::Acquire).is_null() {
        let arena = map(SLOTS * PAGE, libc::MAP_SHARED).ok()?;
        book.used.store(0, Ordering::Release);
        book.arena.store(arena.as_ptr(), Ordering::Release);
    }
    Some(book)
}

/// The book's page, if this process or its parent mapped one (zeroed in a
/// child: wiped on fork).
fn book_page() -> Option<&'static Book> {
    // SAFETY: BOOK is null or points at a page mapped by `book` that is never
    // unmapped (a child has it too, zeroed), and a Book is atomics only, valid
    // for any bytes.
    unsafe { BOOK.load(Ordering::Acquire).as_ref() }
}

fn take_slot(book: &Book) -> Option<Report> {
    let base = NonNull::new(book.arena.load(Ordering::Acquire))?;
    let mut used = book.used.load(Ordering::Acquire);
    loop {
        let i = (!used).trailing_zeros();
        if i as usize >= SLOTS {
            return None;
        }
        match book
            .used
            .compare_exchange(used, used | 1 << i, Ordering::AcqRel, Ordering::Acquire)
        {
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
        slot: map(PAGE, libc::MAP_SHARED)?,
        from: None,
    })
}

/// `len` bytes of zeroed memory, `MAP_SHARED` with children forked later or
/// `MAP_PRIVATE`.
fn map(len: usize, sharing: libc::c_int) -> Result<NonNull<Slot>, nix::errno::Errno> {
    // SAFETY: a fresh anonymous mapping at an address the kernel picks: it
    // aliases nothing in this process.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            sharing | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
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
