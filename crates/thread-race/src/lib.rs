//! The races of `thread-race`, as functions the lesson and its tests both call.
//!
//! # What Rust refuses to compile
//!
//! Python runs an unsynchronised shared counter without a word:
//!
//! ```python
//! counter = 0
//! def increment():
//!     global counter
//!     counter += 1          # read, add, write: three steps
//! ```
//!
//! Safe Rust does not compile the same program. Each block below is a
//! `compile_fail` doctest that names the error it must fail with; `cargo test -p
//! thread-race --doc` checks that each still fails, and for that reason.
//!
//! **1. A mutable global needs `unsafe` (E0133).** `static mut` can be written from
//! any thread with no synchronisation, so every use of it is an unsafe operation:
//!
//! ```compile_fail,E0133
//! static mut COUNTER: i64 = 0;
//! fn increment() {
//!     COUNTER += 1; // error[E0133]: use of mutable static is unsafe
//! }
//! ```
//!
//! **2. A thread may not borrow a local it could outlive (E0373).** `thread::spawn`
//! needs `'static` data: the closure borrows `counter`, which dies with `main`.
//!
//! ```compile_fail,E0373
//! fn main() {
//!     let mut counter = 0;
//!     let t = std::thread::spawn(|| counter += 1); // error[E0373]: may outlive `counter`
//!     t.join().unwrap();
//! }
//! ```
//!
//! **3. Two threads may not both hold `&mut` to the counter (E0499).** Scoped
//! threads may borrow locals, but the borrow checker still allows only one mutable
//! borrow at a time, across threads as within one:
//!
//! ```compile_fail,E0499
//! fn main() {
//!     let mut counter = 0;
//!     std::thread::scope(|s| {
//!         s.spawn(|| counter += 1);
//!         s.spawn(|| counter += 1); // error[E0499]: second mutable borrow
//!     });
//! }
//! ```
//!
//! **4. Unsynchronised shared ownership cannot cross threads (E0277).** `Rc<Cell<_>>`
//! lets many owners mutate with no lock, so it is neither `Send` nor `Sync`:
//!
//! ```compile_fail,E0277
//! use std::{cell::Cell, rc::Rc};
//! fn main() {
//!     let counter = Rc::new(Cell::new(0));
//!     let c = Rc::clone(&counter);
//!     std::thread::spawn(move || c.set(c.get() + 1)); // error[E0277]: `Rc<Cell<i32>>` cannot be sent
//! }
//! ```
//!
//! What compiles, and is right: an atomic read-modify-write (`fetch_add`), or a
//! `Mutex` held across the whole update. What compiles and is **still wrong**:
//! an atomic `load` then a separate `store` ([`load_then_store`]), and a check
//! done under one lock and the act under another ([`withdraw_twice_racy`]). Rust
//! rules out *data races* (undefined behaviour); it does not rule out *race
//! conditions* (wrong logic about order).

//!
//! # Starting threads that may not start
//!
//! Every race here starts its threads with `thread::Builder::spawn_scoped`, which
//! returns an `io::Error` when the system refuses a thread (`ulimit -u`, `ulimit
//! -v`), where `thread::spawn` would panic. The threads meet at a [`Rendezvous`]
//! rather than a `std::sync::Barrier`: if the second thread cannot start, the first
//! must not wait for it forever, and a `Barrier` cannot be called off.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

/// How long a thread waits at a [`Rendezvous`] for the others before it gives up.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Why a race could not be run to the end.
#[derive(Debug)]
pub enum RaceError {
    /// The system refused to start a thread.
    Start(io::Error),
    /// A thread panicked.
    Panicked,
    /// A thread waited longer than [`PATIENCE`] for the others.
    Late,
}

impl fmt::Display for RaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RaceError::Start(e) => write!(f, "cannot start a thread: {e}"),
            RaceError::Panicked => write!(f, "a racing thread panicked"),
            RaceError::Late => write!(
                f,
                "a thread waited {} s for the others and gave up",
                PATIENCE.as_secs()
            ),
        }
    }
}

impl std::error::Error for RaceError {}

/// Where the threads of one race meet: like `std::sync::Barrier` (used once), but
/// it can be called off, and nobody waits longer than its patience.
#[derive(Debug)]
pub struct Rendezvous {
    parties: usize,
    patience: Duration,
    state: Mutex<Arrivals>,
    all_here: Condvar,
}

#[derive(Debug)]
struct Arrivals {
    here: usize,
    called_off: bool,
}

impl Rendezvous {
    pub fn new(parties: usize, patience: Duration) -> Rendezvous {
        Rendezvous {
            parties,
            patience,
            state: Mutex::new(Arrivals {
                here: 0,
                called_off: false,
            }),
            all_here: Condvar::new(),
        }
    }

    /// Arrive and wait for the others: `true` when all are here, `false` when the
    /// meeting was called off or the patience ran out (which calls it off for all).
    pub fn wait(&self) -> bool {
        let mut s = lock(&self.state);
        s.here += 1;
        if s.here >= self.parties {
            self.all_here.notify_all();
            return !s.called_off;
        }
        let (mut s, _) = self
            .all_here
            .wait_timeout_while(s, self.patience, |s| s.here < self.parties && !s.called_off)
            .unwrap_or_else(PoisonError::into_inner);
        if s.here < self.parties {
            s.called_off = true; // late: nobody goes on
            self.all_here.notify_all();
        }
        !s.called_off
    }

    /// Let everyone waiting go, with `false` (a party will never come).
    pub fn call_off(&self) {
        lock(&self.state).called_off = true;
        self.all_here.notify_all();
    }
}

/// A poisoned lock (a thread panicked holding it) still holds a usable value here:
/// the panic itself is reported by the join.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Start `threads` threads running `body`, all meeting at one [`Rendezvous`], and
/// collect what each returns. `body` returns `None` when the meeting was called off.
/// If a thread cannot start, the ones already started are let go and joined.
fn race<T: Send>(
    threads: usize,
    body: impl Fn(&Rendezvous) -> Option<T> + Sync,
) -> Result<Vec<T>, RaceError> {
    let meeting = Rendezvous::new(threads, PATIENCE);
    let (body, meeting) = (&body, &meeting);
    thread::scope(|s| {
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let started = thread::Builder::new()
                .name(format!("racer-{i}"))
                .spawn_scoped(s, move || body(meeting));
            match started {
                Ok(h) => handles.push(h),
                Err(e) => {
                    meeting.call_off(); // the scope joins those already started
                    return Err(RaceError::Start(e));
                }
            }
        }
        // Join every thread by hand (a scope panics over an unjoined panicked one).
        let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        joined
            .into_iter()
            .map(|r| r.map_err(|_| RaceError::Panicked)?.ok_or(RaceError::Late))
            .collect()
    })
}

/// The counter that should reach 2 but reaches 1: two threads each read it, meet
/// (so both have read before either writes), then each writes what it read plus
/// one. Deterministic: always 1.
pub fn both_read_then_both_write() -> Result<i64, RaceError> {
    let counter = AtomicI64::new(0);
    race(2, |both_read| {
        let seen = counter.load(SeqCst);
        both_read.wait().then(|| counter.store(seen + 1, SeqCst))
    })?;
    Ok(counter.load(SeqCst))
}

/// Start `threads` threads together and have each run `op` `n` times.
fn hammer(threads: usize, n: u64, op: impl Fn() + Sync) -> Result<(), RaceError> {
    race(threads, |start| {
        start.wait().then(|| (0..n).for_each(|_| op()))
    })?;
    Ok(())
}

/// `threads` threads each add 1, `n` times, with an atomic `load` and a separate
/// atomic `store`: no undefined behaviour, and still lost updates. Returns the total.
pub fn load_then_store(threads: usize, n: u64) -> Result<i64, RaceError> {
    let counter = AtomicI64::new(0);
    hammer(threads, n, || {
        let v = counter.load(SeqCst);
        counter.store(v + 1, SeqCst);
    })?;
    Ok(counter.load(SeqCst))
}

/// The same with one indivisible `fetch_add`: no update lost.
pub fn fetch_add(threads: usize, n: u64) -> Result<i64, RaceError> {
    let counter = AtomicI64::new(0);
    hammer(threads, n, || {
        counter.fetch_add(1, SeqCst);
    })?;
    Ok(counter.load(SeqCst))
}

/// The same with a `Mutex<i64>`: the critical section is the whole `+= 1`.
pub fn mutex(threads: usize, n: u64) -> Result<i64, RaceError> {
    let counter = Mutex::new(0i64);
    hammer(threads, n, || *lock(&counter) += 1)?;
    Ok(*lock(&counter))
}

/// How two withdrawals from one account ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withdrawals {
    pub balance: i64,
    /// Withdrawals that passed the balance check and took the money.
    pub paid: usize,
    /// Withdrawals refused for lack of funds.
    pub refused: usize,
}

/// Check-then-act, wrong: an account of `balance`, two threads each withdraw
/// `amount`. Each checks the balance under the lock, lets go, and takes the money
/// under the lock again: both can pass the check. Meeting in between makes sure
/// they do.
pub fn withdraw_twice_racy(balance: i64, amount: i64) -> Result<Withdrawals, RaceError> {
    two_withdrawals(balance, |account, both_checked| {
        let ok = *lock(account) >= amount; // check...
        if !both_checked.wait() {
            return None;
        }
        if ok {
            *lock(account) -= amount; // ...then act
        }
        Some(ok)
    })
}

/// Check-then-act, right: one guard held across the check and the update.
pub fn withdraw_twice_locked(balance: i64, amount: i64) -> Result<Withdrawals, RaceError> {
    two_withdrawals(balance, |account, start| {
        if !start.wait() {
            return None;
        }
        let mut b = lock(account);
        let ok = *b >= amount;
        if ok {
            *b -= amount;
        }
        Some(ok)
    })
}

/// Two threads run `withdraw` on one account; each says whether it took the money.
fn two_withdrawals(
    balance: i64,
    withdraw: impl Fn(&Mutex<i64>, &Rendezvous) -> Option<bool> + Sync,
) -> Result<Withdrawals, RaceError> {
    let account = Mutex::new(balance);
    let results = race(2, |meeting| withdraw(&account, meeting))?;
    let paid = results.iter().filter(|&&ok| ok).count();
    Ok(Withdrawals {
        balance: *lock(&account),
        paid,
        refused: results.len() - paid,
    })
}
